//! psctl entry point.

fn main() {}
