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
    /// How long the server keeps a session that sits inside a transaction with nothing running
    /// (server-side `idle_in_transaction_session_timeout`); `None` leaves it. Our transactions
    /// never wait on anything but their own statements, so a session idle that long inside one
    /// was lost track of by its client (a cancelled future, a driver bug): ending it releases
    /// its row locks, which would otherwise stall every writer of those rows for good.
    pub idle_in_transaction_timeout: Option<Duration>,
    pub application_name: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            statement_timeout: Some(Duration::from_secs(60)),
            idle_in_transaction_timeout: Some(Duration::from_secs(60)),
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
    options = options.options(session_parameters(config));
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(config.idle_timeout)
        .connect_with(options)
        .await
        .map_err(DbError::Connect)
}

/// The server-side settings every pool session starts with.
pub fn session_parameters(config: &PoolConfig) -> Vec<(&'static str, String)> {
    [
        ("statement_timeout", config.statement_timeout),
        (
            "idle_in_transaction_session_timeout",
            config.idle_in_transaction_timeout,
        ),
    ]
    .into_iter()
    .filter_map(|(name, timeout)| timeout.map(|t| (name, t.as_millis().max(1).to_string())))
    .collect()
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
    fn sessions_bound_statements_and_abandoned_transactions() {
        assert_eq!(
            session_parameters(&PoolConfig::default()),
            vec![
                ("statement_timeout", "60000".to_owned()),
                ("idle_in_transaction_session_timeout", "60000".to_owned()),
            ]
        );
        let unbounded = PoolConfig {
            statement_timeout: None,
            idle_in_transaction_timeout: None,
            ..PoolConfig::default()
        };
        assert!(session_parameters(&unbounded).is_empty());
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
