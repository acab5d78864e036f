//! problemsolver-webhook-worker.

fn main() {}
