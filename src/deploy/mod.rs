//! `psctl deploy` as a library: the pure plan (`plan`), the checks before anything changes
//! (`preflight`), the executor over a backend trait with its one cluster implementation
//! (`execute`), and the typed outcome with the exit-1-versus-4 decision (`outcome`). The
//! command (`commands::deploy`) only wires them together.

pub mod execute;
pub mod outcome;
pub mod plan;
pub mod preflight;
