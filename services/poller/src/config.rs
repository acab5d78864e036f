//! The poller's runtime configuration, read from environment variables (secrets only from the
//! environment, never flags, so they stay out of argv). Every error names the variable.

use std::net::SocketAddr;
use std::time::Duration;

use problemsolver_core::Secret;
use problemsolver_core::config::{ConfigError, env_or, env_parse, env_secret};

/// Shown by `--help`: every variable the poller reads.
pub const ENVIRONMENT_HELP: &str = "\
Environment (secrets only ever from the environment; never printed):
  DATABASE_URL               (secret, required) postgres:// URL of the problemsolver database
  BINANCE_API_KEY            (secret, required) Binance API key, sent as X-MBX-APIKEY
  BINANCE_API_SECRET         (secret, required) Binance API secret, HMAC-SHA256 signing key
  BINANCE_API_BASE           Binance REST base URL [default: https://api.binance.com]
  METRICS_ADDR               listen address for /metrics, /health, /ready [default: 0.0.0.0:8002]
  POLL_INTERVAL_SECS         seconds between cycles [default: 10]
  POLL_OVERLAP_SECS          each poll restarts this long before the checkpoint [default: 1800]
  POLL_INITIAL_LOOKBACK_SECS how far back the very first poll looks [default: 604800 (7 days)]
  BINANCE_RECV_WINDOW_MS     Binance recvWindow, 1..=60000 [default: 5000]
  MATCH_BATCH_SIZE           deposits matched per database transaction [default: 5000]
  COLLISION_SETTLE_SECS      age before an invoice's collisions are counted [default: 5]
  DEPOSIT_STUCK_AFTER_SECS   a deposit Binance has not finalised after this long is reported
                             (metric, system event, alert); it is still re-checked [default: 21600]
  RECHECK_MAX_REQUESTS       re-check windows fetched per cycle for unresolved deposits older
                             than the poll window [default: 10]
  LEADER_SESSION_TIMEOUT_SECS  the lock session's server-side idle timeout: a standby takes over
                             at most this long after a leader stops answering [default: 30]
  DATABASE_MAX_CONNECTIONS   connection pool size [default: 4]
  RUST_LOG                   log filter [default: info]
  LOG_FORMAT                 json | text [default: text]";

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Secret<String>,
    pub database_max_connections: u32,
    pub metrics_addr: SocketAddr,
    pub binance_api_base: String,
    pub binance_api_key: Secret<String>,
    pub binance_api_secret: Secret<String>,
    pub settings: Settings,
}

/// The non-connection knobs of a cycle; tests build these directly.
#[derive(Debug, Clone)]
pub struct Settings {
    pub poll_interval: Duration,
    pub overlap: Duration,
    pub initial_lookback: Duration,
    pub recv_window_ms: i64,
    pub match_batch_size: i64,
    pub collision_settle: Duration,
    /// Unresolved deposits older than this are reported as stuck.
    pub stuck_after: Duration,
    /// Re-check windows per cycle.
    pub recheck_max_requests: usize,
    /// The longest span of insert times one re-check window covers.
    pub recheck_span: Duration,
    /// See [`crate::leader`].
    pub leader_session_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll_interval: Duration::from_secs(10),
            overlap: Duration::from_secs(1800),
            initial_lookback: Duration::from_secs(7 * 24 * 3600),
            recv_window_ms: 5000,
            match_batch_size: 5000,
            collision_settle: Duration::from_secs(5),
            stuck_after: Duration::from_secs(6 * 3600),
            recheck_max_requests: 10,
            recheck_span: Duration::from_secs(3600),
            leader_session_timeout: crate::leader::DEFAULT_SESSION_TIMEOUT,
        }
    }
}

fn positive(name: &str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(name, "0", "must be at least 1"));
    }
    Ok(value)
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Settings::default();
        let base = env_or("BINANCE_API_BASE", "https://api.binance.com")?;
        match reqwest::Url::parse(&base) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return Err(ConfigError::invalid(
                    "BINANCE_API_BASE",
                    &base,
                    "expected an http(s):// URL",
                ));
            }
        }
        let recv_window_ms = env_parse("BINANCE_RECV_WINDOW_MS", defaults.recv_window_ms)?;
        if !(1..=60_000).contains(&recv_window_ms) {
            return Err(ConfigError::invalid(
                "BINANCE_RECV_WINDOW_MS",
                &recv_window_ms.to_string(),
                "Binance accepts 1..=60000",
            ));
        }
        let batch = positive("MATCH_BATCH_SIZE", env_parse("MATCH_BATCH_SIZE", 5000u64)?)?;
        Ok(Config {
            database_url: env_secret("DATABASE_URL")?,
            database_max_connections: u32::try_from(positive(
                "DATABASE_MAX_CONNECTIONS",
                env_parse("DATABASE_MAX_CONNECTIONS", 4u64)?,
            )?)
            .map_err(|_| ConfigError::invalid("DATABASE_MAX_CONNECTIONS", "", "too large"))?,
            metrics_addr: env_parse("METRICS_ADDR", SocketAddr::from(([0, 0, 0, 0], 8002)))?,
            binance_api_base: base,
            binance_api_key: env_secret("BINANCE_API_KEY")?,
            binance_api_secret: env_secret("BINANCE_API_SECRET")?,
            settings: Settings {
                poll_interval: Duration::from_secs(positive(
                    "POLL_INTERVAL_SECS",
                    env_parse("POLL_INTERVAL_SECS", 10)?,
                )?),
                overlap: Duration::from_secs(env_parse(
                    "POLL_OVERLAP_SECS",
                    defaults.overlap.as_secs(),
                )?),
                initial_lookback: Duration::from_secs(env_parse(
                    "POLL_INITIAL_LOOKBACK_SECS",
                    defaults.initial_lookback.as_secs(),
                )?),
                recv_window_ms,
                match_batch_size: i64::try_from(batch).map_err(|_| {
                    ConfigError::invalid("MATCH_BATCH_SIZE", &batch.to_string(), "too large")
                })?,
                collision_settle: Duration::from_secs(env_parse(
                    "COLLISION_SETTLE_SECS",
                    defaults.collision_settle.as_secs(),
                )?),
                stuck_after: Duration::from_secs(positive(
                    "DEPOSIT_STUCK_AFTER_SECS",
                    env_parse("DEPOSIT_STUCK_AFTER_SECS", defaults.stuck_after.as_secs())?,
                )?),
                recheck_max_requests: usize::try_from(positive(
                    "RECHECK_MAX_REQUESTS",
                    env_parse("RECHECK_MAX_REQUESTS", defaults.recheck_max_requests as u64)?,
                )?)
                .map_err(|_| ConfigError::invalid("RECHECK_MAX_REQUESTS", "", "too large"))?,
                recheck_span: defaults.recheck_span,
                leader_session_timeout: {
                    let secs = env_parse(
                        "LEADER_SESSION_TIMEOUT_SECS",
                        defaults.leader_session_timeout.as_secs(),
                    )?;
                    if secs < 3 {
                        return Err(ConfigError::invalid(
                            "LEADER_SESSION_TIMEOUT_SECS",
                            &secs.to_string(),
                            "must be at least 3",
                        ));
                    }
                    Duration::from_secs(secs)
                },
            },
        })
    }
}
