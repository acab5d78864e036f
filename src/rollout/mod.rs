//! Rollout tracking: a pure diagnosis over recorded cluster states, and the tracker that feeds
//! it from kube-rs watches.

pub mod diagnosis;
pub mod track;
