//! The Postgres pool (bounded timeouts, no URL in any error) and the repository's migrations,
//! embedded at build time so every binary carries the schema it was built against.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::Secret;

/// The `migrations/` directory of this repository; psctl's `db migrate` runs the same one.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is deliberately not part of the message: it carries a password.
    #[error("`DATABASE_URL` is not a valid postgres:// URL: {0}")]
    InvalidUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Pool sizing and timeouts.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub idle_timeout: Duration,
    /// Upper bound for any single statement (server-side `statement_timeout`); `None` leaves it.
    pub statement_timeout: Option<Duration>,
    pub application_name: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            statement_timeout: Some(Duration::from_secs(60)),
            application_name: "problemsolver".to_owned(),
        }
    }
}

/// Parses the URL without ever echoing it.
pub fn connect_options(url: &Secret<String>) -> Result<PgConnectOptions, DbError> {
    let options: PgConnectOptions = url.expose().parse().map_err(|error: sqlx::Error| {
        // sqlx's parse errors can quote the input; keep only a generic cause.
        let reason = match error {
            sqlx::Error::Configuration(_) => "malformed URL",
            _ => "unparsable",
        };
        DbError::InvalidUrl(reason.to_owned())
    })?;
    Ok(options)
}

/// Connects a pool and checks one connection works.
pub async fn connect(url: &Secret<String>, config: &PoolConfig) -> Result<PgPool, DbError> {
    let mut options = connect_options(url)?.application_name(&config.application_name);
    if let Some(timeout) = config.statement_timeout {
        options = options.options([("statement_timeout", format!("{}", timeout.as_millis()))]);
    }
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(config.idle_timeout)
        .connect_with(options)
        .await
        .map_err(DbError::Connect)
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// `SELECT 1` with a deadline, for readiness checks.
pub async fn ping(pool: &PgPool, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_url_error_does_not_echo_the_url() {
        let error = connect_options(&Secret::new(
            "postgres://user:s3cr3t@host:notaport/db".to_owned(),
        ))
        .unwrap_err()
        .to_string();
        assert!(!error.contains("s3cr3t"), "{error}");
        assert!(error.contains("DATABASE_URL"), "{error}");
    }

    #[test]
    fn migrations_are_embedded_in_order() {
        let versions: Vec<i64> = MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version)
            .collect();
        assert!(!versions.is_empty());
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
        assert!(
            MIGRATOR
                .iter()
                .any(|m| m.migration_type.is_down_migration()),
            "reversible pairs"
        );
    }
}
