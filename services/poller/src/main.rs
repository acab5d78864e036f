//! problemsolver-poller.

fn main() {}
