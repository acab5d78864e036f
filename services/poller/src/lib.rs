//! problemsolver-poller: polls Binance's deposit history (signed requests, overlapping windows,
//! offset paging), stores raw deposits idempotently, and matches successful deposits to pending
//! invoices, writing invoice→paid, payment, ledger credit and webhook_queue row in one
//! transaction. One leader at a time through a Postgres advisory lock.

pub mod binance;
pub mod config;
pub mod leader;
pub mod metrics;
pub mod service;
pub mod store;
pub mod window;
