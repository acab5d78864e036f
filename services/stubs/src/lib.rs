//! Stub servers that stand in for the outside world in tests and in the sandbox: Binance's
//! deposit-history API (`binance`) and a merchant webhook receiver (`merchant`). Nothing here is
//! used by production code.

pub mod binance;
pub mod merchant;
