//! cluster: being built.
