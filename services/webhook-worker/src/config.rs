//! Command-line and environment configuration of the worker binary (`--help` documents every variable).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use clap::Parser;

use crate::backoff::Backoff;
use crate::breaker::BreakerPolicy;
use crate::client::ClientSettings;
use crate::ssrf::TargetPolicy;
use crate::worker::WorkerConfig;

/// Delivers signed webhooks (Standard Webhooks) from the Postgres `webhook_queue` to merchants.
#[derive(Debug, Parser)]
#[command(name = "problemsolver-webhook-worker", version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("BUILD_GIT_COMMIT"), ")"), after_long_help = ENVIRONMENT_HELP, after_help = ENVIRONMENT_HELP)]
pub struct Args {
    /// Deliver what is due now, then exit: 0 when the queue was reachable, 1 otherwise. No
    /// metrics server is started in this mode.
    #[arg(long)]
    pub once: bool,

    /// Address of the /metrics, /health and /ready server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8001")]
    pub metrics_addr: SocketAddr,

    /// Allow plain http:// and private, loopback or link-local targets. Sandbox and tests ONLY:
    /// it disables the SSRF defence, and the worker says so loudly at start.
    #[arg(long, env = "WEBHOOK_ALLOW_INSECURE_TARGETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_insecure_targets: bool,

    /// Deliveries per second across all merchants (the runbook's 1000 by default).
    #[arg(long, env = "WEBHOOK_GLOBAL_RPS", default_value = "1000")]
    pub global_rps: NonZeroU32,

    /// Deliveries per second to any one merchant endpoint.
    #[arg(long, env = "WEBHOOK_ENDPOINT_RPS", default_value = "10")]
    pub endpoint_rps: NonZeroU32,

    /// The most worker replicas that can run at once (the HPA's maximum plus the rollout's
    /// surge and canary pods). Only used while the shared limiter in Redis does not answer: each
    /// replica then keeps to 1/N of WEBHOOK_GLOBAL_RPS and WEBHOOK_ENDPOINT_RPS, so together
    /// they still never exceed them.
    #[arg(long, env = "WEBHOOK_RATE_LIMIT_REPLICAS", default_value = "10")]
    pub rate_limit_replicas: NonZeroU32,

    /// Prefix of the shared rate limiter's Redis keys; environments sharing one Redis database
    /// need different prefixes.
    #[arg(long, env = "WEBHOOK_RATE_LIMIT_PREFIX", default_value = crate::ratelimit::DEFAULT_KEY_PREFIX)]
    pub rate_limit_prefix: String,

    /// Deliveries in flight at once, shared by all pipelines.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,

    /// Rows claimed per batch.
    #[arg(long, env = "WEBHOOK_BATCH_SIZE", default_value_t = 64)]
    pub batch_size: u32,

    /// Claim/deliver/complete loops running side by side (they share WEBHOOK_CONCURRENCY).
    #[arg(long, env = "WEBHOOK_PIPELINES", default_value_t = 2)]
    pub pipelines: usize,

    /// Seconds a claimed row stays leased; a row whose worker died is retried after this. Must
    /// cover the worst case of a batch, checked at start: WEBHOOK_REQUEST_TIMEOUT_SECS ×
    /// (⌈WEBHOOK_PIPELINES × WEBHOOK_BATCH_SIZE / WEBHOOK_CONCURRENCY⌉ + 1) + WEBHOOK_PIPELINES ×
    /// WEBHOOK_BATCH_SIZE / WEBHOOK_GLOBAL_RPS + 5 s.
    #[arg(long, env = "WEBHOOK_LEASE_SECS", default_value_t = 60)]
    pub lease_secs: u64,

    /// Timeout of one delivery request, in seconds.
    #[arg(long, env = "WEBHOOK_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// First retry delay in milliseconds; doubles per attempt (with jitter) up to the maximum.
    #[arg(long, env = "WEBHOOK_BACKOFF_BASE_MS", default_value_t = 5_000)]
    pub backoff_base_ms: u64,

    /// Longest retry delay in milliseconds.
    #[arg(long, env = "WEBHOOK_BACKOFF_MAX_MS", default_value_t = 3_600_000)]
    pub backoff_max_ms: u64,

    /// Consecutive failures that open a merchant's circuit breaker.
    #[arg(long, env = "WEBHOOK_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,

    /// Seconds an open breaker waits before letting one probe through.
    #[arg(long, env = "WEBHOOK_BREAKER_OPEN_SECS", default_value_t = 30)]
    pub breaker_open_secs: u64,

    /// Milliseconds between polls when nothing is due.
    #[arg(long, env = "WEBHOOK_IDLE_POLL_MS", default_value_t = 500)]
    pub idle_poll_ms: u64,

    /// Seconds between `webhook_queue_depth` refreshes.
    #[arg(long, env = "WEBHOOK_QUEUE_DEPTH_INTERVAL_SECS", default_value_t = 5)]
    pub queue_depth_interval_secs: u64,

    /// Seconds to let in-flight deliveries finish after SIGTERM before exiting anyway (their
    /// leases then expire and the rows are retried).
    #[arg(long, env = "WEBHOOK_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    /// Prefix of the lease owners this process writes, `<WORKER_ID>/p<pipeline>/<uuid>` with a
    /// new uuid per claim (default: host name, process id and a random suffix).
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,

    /// Database connections in the pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,
}

/// Why the arguments cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("`{0}` must be greater than zero")]
    Zero(&'static str),
    #[error("`WEBHOOK_BACKOFF_MAX_MS` must be at least `WEBHOOK_BACKOFF_BASE_MS`")]
    BackoffRange,
    #[error(
        "`WEBHOOK_LEASE_SECS` ({lease}) is shorter than the worst case of one claimed batch ({needed} s): \
         `WEBHOOK_PIPELINES` ({pipelines}) batches of `WEBHOOK_BATCH_SIZE` ({batch_size}) rows share \
         `WEBHOOK_CONCURRENCY` ({concurrency}) delivery slots, so the last row of a batch may wait \
         {rounds} rounds (⌈{pipelines} × {batch_size} / {concurrency}⌉ + 1) of \
         `WEBHOOK_REQUEST_TIMEOUT_SECS` ({request_timeout} s), plus {rows} rows at `WEBHOOK_GLOBAL_RPS` \
         ({global_rps}/s), plus a 5 s margin. With a shorter lease a batch outlives it and its last rows \
         are put back unsent instead of delivered. Set `WEBHOOK_LEASE_SECS` to at least {needed}, or \
         lower `WEBHOOK_BATCH_SIZE`, `WEBHOOK_PIPELINES` or `WEBHOOK_REQUEST_TIMEOUT_SECS`, or raise \
         `WEBHOOK_CONCURRENCY`"
    )]
    LeaseTooShort {
        lease: u64,
        needed: u64,
        pipelines: usize,
        batch_size: u32,
        concurrency: usize,
        rounds: u64,
        rows: u64,
        request_timeout: u64,
        global_rps: u32,
    },
}

/// Variables read outside clap: the secret ones are never shown with their values.
const ENVIRONMENT_HELP: &str = "\
Environment (secrets, read from the environment only and never printed):
  DATABASE_URL           postgres:// URL of the problemsolver database (required)
  WEBHOOK_SECRET         32-byte AES-256-GCM key wrapping merchants' webhook signing
                         secrets, as 64 hex characters or base64 (required)
  ENCRYPTION_MASTER_KEY  older name of WEBHOOK_SECRET, accepted alone; set with a
                         different value beside it, the worker refuses to start
  REDIS_URL              redis:// URL: rate limits shared by all replicas (optional;
                         without it each process enforces the full limits alone)
  SENTRY_DSN             Sentry DSN: error events, secrets scrubbed (optional)
Logging:
  RUST_LOG               log filter (default `info`)
  LOG_FORMAT             `json` or `text` (default `text`)
Every option above can also be set with the variable shown next to it.";

impl Args {
    /// The worker settings these arguments describe.
    pub fn worker_config(&self) -> Result<WorkerConfig, ConfigError> {
        let Self {
            once: _,
            metrics_addr: _,
            allow_insecure_targets,
            global_rps,
            endpoint_rps,
            rate_limit_replicas: _,
            rate_limit_prefix: _,
            concurrency,
            batch_size,
            pipelines,
            lease_secs,
            request_timeout_secs,
            backoff_base_ms,
            backoff_max_ms,
            breaker_failures,
            breaker_open_secs,
            idle_poll_ms,
            queue_depth_interval_secs: _,
            shutdown_grace_secs: _,
            worker_id,
            database_max_connections: _,
        } = self;
        let nonzero = |value: u64, name: &'static str| {
            if value == 0 {
                Err(ConfigError::Zero(name))
            } else {
                Ok(value)
            }
        };
        nonzero(*concurrency as u64, "WEBHOOK_CONCURRENCY")?;
        nonzero(u64::from(*batch_size), "WEBHOOK_BATCH_SIZE")?;
        nonzero(*pipelines as u64, "WEBHOOK_PIPELINES")?;
        nonzero(*lease_secs, "WEBHOOK_LEASE_SECS")?;
        nonzero(*request_timeout_secs, "WEBHOOK_REQUEST_TIMEOUT_SECS")?;
        nonzero(*backoff_base_ms, "WEBHOOK_BACKOFF_BASE_MS")?;
        nonzero(u64::from(*breaker_failures), "WEBHOOK_BREAKER_FAILURES")?;
        if backoff_max_ms < backoff_base_ms {
            return Err(ConfigError::BackoffRange);
        }
        let policy = if *allow_insecure_targets {
            TargetPolicy::Insecure
        } else {
            TargetPolicy::PublicHttpsOnly
        };
        let config = WorkerConfig {
            worker_id: worker_id.clone().unwrap_or_else(default_worker_id),
            batch_size: i64::from(*batch_size),
            concurrency: *concurrency,
            pipelines: *pipelines,
            lease: Duration::from_secs(*lease_secs),
            idle_poll: Duration::from_millis(*idle_poll_ms),
            backoff: Backoff {
                base: Duration::from_millis(*backoff_base_ms),
                max: Duration::from_millis(*backoff_max_ms),
            },
            breaker: BreakerPolicy {
                failure_threshold: *breaker_failures,
                open_for: Duration::from_secs(*breaker_open_secs),
            },
            global_rps: *global_rps,
            per_endpoint_rps: *endpoint_rps,
            client: ClientSettings {
                policy,
                request_timeout: Duration::from_secs(*request_timeout_secs),
                connect_timeout: Duration::from_secs((*request_timeout_secs).min(5)),
                max_idle_per_host: *concurrency,
            },
            key_cache_ttl: Duration::from_secs(300),
        };
        // Every row of a batch must be sent and answered before its lease runs out, even when all
        // pipelines hold a full batch and every request runs into the timeout.
        let needed = config.required_lease();
        if config.lease < needed {
            let rows = (*pipelines as u64).saturating_mul(u64::from(*batch_size));
            return Err(ConfigError::LeaseTooShort {
                lease: *lease_secs,
                needed: needed.as_secs() + u64::from(needed.subsec_nanos() > 0),
                pipelines: *pipelines,
                batch_size: *batch_size,
                concurrency: *concurrency,
                rounds: rows.div_ceil(*concurrency as u64) + 1,
                rows,
                request_timeout: *request_timeout_secs,
                global_rps: global_rps.get(),
            });
        }
        Ok(config)
    }
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "worker".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let mut argv = vec!["problemsolver-webhook-worker"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_follow_the_runbook() {
        let config = parse(&[]).worker_config().unwrap();
        assert_eq!(config.global_rps.get(), 1000);
        assert_eq!(config.per_endpoint_rps.get(), 10);
        assert_eq!(config.client.policy, TargetPolicy::PublicHttpsOnly);
        assert!(!config.worker_id.is_empty());
        assert_eq!(
            (config.pipelines, config.batch_size, config.concurrency),
            (2, 64, 64)
        );
    }

    #[test]
    fn insecure_targets_need_an_explicit_true() {
        let config = parse(&["--allow-insecure-targets", "true"])
            .worker_config()
            .unwrap();
        assert_eq!(config.client.policy, TargetPolicy::Insecure);
        assert!(Args::try_parse_from(["w", "--allow-insecure-targets", "yes"]).is_err());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = parse(&["--concurrency", "0"]).worker_config().unwrap_err();
        assert!(err.to_string().contains("WEBHOOK_CONCURRENCY"));
        let err = parse(&["--backoff-base-ms", "10", "--backoff-max-ms", "5"])
            .worker_config()
            .unwrap_err();
        assert_eq!(err, ConfigError::BackoffRange);
        assert!(Args::try_parse_from(["w", "--global-rps", "0"]).is_err());
    }

    #[test]
    fn the_default_lease_covers_a_batch_of_every_pipeline() {
        let config = parse(&[]).worker_config().unwrap();
        // 2 pipelines × 64 rows over 64 slots: 2 rounds + 1 in flight, 10 s each, 128 rows at 1000/s.
        assert_eq!(config.batch_worst_case(), Duration::from_millis(30_128));
        assert_eq!(config.required_lease(), Duration::from_millis(35_128));
        assert!(config.lease >= config.required_lease());
    }

    #[test]
    fn a_lease_too_short_for_pipelines_times_batch_is_refused_naming_the_variables() {
        // The old defaults: 200-row batches were checked as if one pipeline had the 64 slots alone
        // (⌈200/64⌉ × 10 s + 5 s = 45 s ≤ 60 s), but two pipelines share them.
        let err = parse(&["--batch-size", "200"]).worker_config().unwrap_err();
        assert_eq!(
            err,
            ConfigError::LeaseTooShort {
                lease: 60,
                needed: 86,
                pipelines: 2,
                batch_size: 200,
                concurrency: 64,
                rounds: 8,
                rows: 400,
                request_timeout: 10,
                global_rps: 1000,
            }
        );
        let message = err.to_string();
        for name in [
            "WEBHOOK_LEASE_SECS",
            "WEBHOOK_PIPELINES",
            "WEBHOOK_BATCH_SIZE",
            "WEBHOOK_CONCURRENCY",
            "WEBHOOK_REQUEST_TIMEOUT_SECS",
            "WEBHOOK_GLOBAL_RPS",
        ] {
            assert!(message.contains(name), "{name} missing from: {message}");
        }
        assert!(message.contains("at least 86"), "{message}");
        // The same batch with one pipeline fits; more pipelines do not.
        assert!(
            parse(&["--batch-size", "200", "--pipelines", "1"])
                .worker_config()
                .is_ok()
        );
        assert!(parse(&["--pipelines", "4"]).worker_config().is_ok());
        assert!(matches!(
            parse(&["--pipelines", "5"]).worker_config(),
            Err(ConfigError::LeaseTooShort { needed: 66, .. })
        ));
        assert!(
            parse(&["--pipelines", "5", "--lease-secs", "66"])
                .worker_config()
                .is_ok()
        );
        // A slow global rate limit counts too: 128 rows at 2/s is 64 s.
        assert!(matches!(
            parse(&["--global-rps", "2"]).worker_config(),
            Err(ConfigError::LeaseTooShort { needed: 99, .. })
        ));
    }
}
