//! psctl-sandbox.

fn main() {}
