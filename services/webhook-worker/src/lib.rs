//! problemsolver-webhook-worker: delivers signed webhooks (Standard Webhooks) from the Postgres
//! `webhook_queue` to merchants, with leases, retries, circuit breakers, rate limits and an SSRF
//! guard. The binary (`main.rs`) only reads configuration and wires these modules together.

pub mod backoff;
pub mod breaker;
pub mod client;
pub mod config;
pub mod metrics;
pub mod queue;
pub mod ratelimit;
pub mod secrets;
pub mod signing;
pub mod ssrf;
pub mod worker;
