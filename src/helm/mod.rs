//! Helm: the driver that runs the Helm CLI from argv values, and Helm's release storage.

pub mod storage;
