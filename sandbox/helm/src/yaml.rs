//! The one YAML library of this crate.
//!
//! Every other file uses the names re-exported here and never names the library itself.
//! `serde_yaml` is archived; a maintained fork with the same API replaces it by changing the
//! `use` below and the dependency in Cargo.toml.

// tests/charts.rs includes this file too; each side uses part of it.
#![allow(unused_imports)]

pub use serde_yaml::{Deserializer, Value, from_str, to_string};
