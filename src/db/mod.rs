//! psctl's database operations: migrations (`migrate`), backups (`backup`), restores into a new
//! database (`restore`) and verification of the invariants the services rely on (`verify`).
//! `url` keeps the connection URL secret; `target` resolves which database a command acts on;
//! `tools` runs `pg_dump`/`pg_restore` safely; `sequence` runs a confirmed migration behind its
//! backup and a restore through migration and verification, audited; `report` is what they print.
//! Plans are values computed before any change; the executors here are thin.

pub mod backup;
pub mod migrate;
pub mod report;
pub mod restore;
pub mod sequence;
pub mod target;
pub mod tools;
pub mod url;
pub mod verify;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use url::{DatabaseUrl, UrlError, UrlSource};

use crate::error::{Classify, ExitStatus};

/// The database could not be reached or refused the connection.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to database {label}")]
pub struct ConnectError {
    pub label: String,
    #[source]
    pub source: sqlx::Error,
}

impl Classify for ConnectError {
    fn exit_status(&self) -> ExitStatus {
        ExitStatus::Unreachable
    }

    fn hints(&self) -> Vec<String> {
        vec!["check the URL (--database-url or the environment's database_url_env) and that the server is up".to_owned()]
    }
}

/// A small pool: psctl is one operator's process, not a service.
pub async fn connect(url: &DatabaseUrl, timeout: Duration) -> Result<PgPool, ConnectError> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(timeout)
        .connect(url.expose())
        .await
        .map_err(|source| ConnectError {
            label: url.label(),
            source,
        })
}

impl Classify for UrlError {
    fn exit_status(&self) -> ExitStatus {
        ExitStatus::Usage
    }
}
