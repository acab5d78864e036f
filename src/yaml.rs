//! The one YAML library of psctl.
//!
//! Every YAML read or written by psctl (`psctl.yaml`, playbooks, values files, `-o yaml`, the
//! Helm values file, rendered manifests) goes through the names re-exported here, and no other
//! file names the library. `serde_yaml` is archived; a maintained fork with the same API
//! replaces it by changing the `use` below and the dependency in Cargo.toml.

pub use serde_yaml::{Deserializer, Error, Mapping, Value, from_str, from_value, to_string};
