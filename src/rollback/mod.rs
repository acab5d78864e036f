//! `psctl rollback`'s library: `plan.rs` (the three kinds of plan, the report, the audit note
//! and the exit decision: pure) and `execute.rs` (the cluster read that plans are made from,
//! and the loop over the `RollbackBackend` trait with its one cluster implementation
//! `KubeRollback`). What is verified after the rollout lives in `crate::recovery`.

pub mod execute;
pub mod plan;
