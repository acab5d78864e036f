//! The sandbox's control loops as ordinary kube-rs clients of the sandbox API server: the
//! Deployment, ReplicaSet and Endpoints controllers, the garbage collector, and a kubelet that
//! runs pods as real Docker containers.
//!
//! Decisions live in pure modules (`deployment`, `replicaset`, `endpoints`, `gc`, `kubelet::*`
//! planners) tested without a cluster; `controllers` and `kubelet` do the I/O.

pub mod controllers;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod kubelet;
pub mod replicaset;
pub mod selector;

pub use controllers::{Controllers, ControllersConfig, ControllersHandle};
pub use kubelet::{DockerLogs, EvictError, Evictor, Kubelet, KubeletConfig, KubeletHandle};
