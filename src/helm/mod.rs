//! Helm: the driver that runs the Helm CLI from argv values, Helm's release storage, and the
//! pure choice of rollback targets.

pub mod driver;
pub mod revision;
pub mod storage;
