//! Shared pieces of the problemsolver services.
