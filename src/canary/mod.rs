//! Canary analysis and promotion: the statistics (`stats`) and the pure gate decisions (`gate`)
//! that judge a canary track against the stable one, the PromQL that measures both (`queries`),
//! the run's plan (`plan`), persisted state (`state`), run loop (`runner`) and report
//! (`report`). All of that is pure or sits behind the runner's `Backend` trait, so every
//! decision can be replayed and tested from recorded data; `kube` is the one implementation of
//! the trait over the cluster, Prometheus and Helm, and the command (`commands::canary`) only
//! wires them together.

pub mod gate;
pub mod kube;
pub mod plan;
pub mod queries;
pub mod report;
pub mod runner;
pub mod state;
pub mod stats;
