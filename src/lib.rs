//! psctl: the operator CLI library.
