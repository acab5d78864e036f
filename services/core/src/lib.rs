//! Shared pieces of the problemsolver services (poller, webhook worker) and of psctl's database
//! steps: environment configuration, the Postgres pool and embedded migrations, exact money
//! amounts, webhook-secret encryption, the metrics/health HTTP server with graceful shutdown,
//! the build-info gauge, logging setup, and (feature `testing`) throw-away test databases.

pub mod build_info;
pub mod config;
pub mod crypto;
pub mod db;
pub mod http;
pub mod invoice;
pub mod money;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::Secret;
