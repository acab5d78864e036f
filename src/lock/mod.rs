//! lock: being built.
