//! problemsolver-webhook-worker binary.

fn main() {}
