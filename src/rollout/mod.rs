//! Rollout tracking: a pure diagnosis over recorded cluster states, and the tracker that feeds
//! it from kube-rs watches, and how an outcome is reported.

pub mod diagnosis;
pub mod report;
pub mod track;
