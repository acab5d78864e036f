//! The one YAML library of this crate.
//!
//! Every other file uses the names re-exported here and never names the library itself.
//! `serde_yaml` is archived; a maintained fork with the same API replaces it by changing the
//! `use` below and the dependency in Cargo.toml.

pub use serde_yaml::from_slice;
