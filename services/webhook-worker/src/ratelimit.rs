//! Delivery rate limits: one global budget and one per endpoint (merchant).
//!
//! Two implementations sit behind [`Limiter`]:
//!
//! - **shared** ([`SharedLimits`], with `REDIS_URL`): GCRA in Redis, one atomic Lua script that
//!   checks the endpoint's cell and schedules on the global cell, taking both or neither, on
//!   Redis's own clock (`TIME`), so every replica draws from the same budget. This is what keeps
//!   the runbook's promise (10 requests/s per webhook endpoint, 1,000/s overall) whatever the
//!   replica count. The cells have no burst: consecutive sends are at least one emission interval
//!   apart, so no window of one second ever holds more than the rate.
//! - **local** ([`RateLimits`], without `REDIS_URL`): token buckets in the process (burst equal
//!   to the rate). Each replica has the whole budget, so N replicas may send N times the rate; the
//!   worker warns at start and `webhook_rate_limiter{backend="local"}` says so.
//!
//! When Redis does not answer (error or timeout), the decision falls back to a conservative
//! local share, the rates divided by `WEBHOOK_RATE_LIMIT_REPLICAS` (the most replicas that can
//! run at once), and Redis is asked again after [`REDIS_RETRY_AFTER`]. A merchant is therefore
//! never sent more than the promised rate, and deliveries go on (more slowly) instead of stopping:
//! a payment notification that waits is late, one that floods a merchant may be refused and
//! trips its breaker. Every failed Redis call counts in `webhook_rate_limiter_redis_errors_total`
//! and the active limiter is the gauge `webhook_rate_limiter{backend="redis|local|local_fallback"}`.
//!
//! The global limit is waited for (it only smooths the output); the per-endpoint limit is checked
//! without waiting, so one slow-rate merchant never holds a delivery slot: its row is put back
//! with a short delay instead, never dropped.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

use crate::metrics::Metrics;

/// How long the worker uses its local fallback after a failed Redis call before asking Redis
/// again (the connection manager reconnects in the background meanwhile).
pub const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Longest a Redis call may take before it counts as failed. A local Redis answers in well under
/// a millisecond; a slower one would already cost the global rate more than it protects.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// Default prefix of the limiter's Redis keys. The braces are a Redis Cluster hash tag: every key
/// of the script lives in one slot.
pub const DEFAULT_KEY_PREFIX: &str = "{problemsolver-webhook-ratelimit}";

/// Which limiter decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Shared in Redis (`REDIS_URL`).
    Redis,
    /// Per process, full rate (no `REDIS_URL`).
    Local,
    /// Per process, the conservative share, because Redis did not answer.
    LocalFallback,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Redis, Backend::Local, Backend::LocalFallback];

    /// The `backend` label value.
    pub fn label(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Local => "local",
            Backend::LocalFallback => "local_fallback",
        }
    }
}

// ---- local token buckets ----

/// Global and per-endpoint token buckets of one process.
pub struct RateLimits<K: Eq + Hash + Clone> {
    global: DefaultDirectRateLimiter,
    per_endpoint: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Eq + Hash + Clone> std::fmt::Debug for RateLimits<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone> RateLimits<K> {
    /// Limits in requests per second; the burst of each bucket equals its rate.
    pub fn new(global_rps: NonZeroU32, per_endpoint_rps: NonZeroU32) -> Self {
        Self {
            global: RateLimiter::direct(Quota::per_second(global_rps)),
            per_endpoint: RateLimiter::keyed(Quota::per_second(per_endpoint_rps)),
            clock: DefaultClock::default(),
        }
    }

    /// One replica's share of limits that `replicas` processes must keep together: each rate
    /// divided by `replicas`, without burst, so the replicas' sum never exceeds the rate in any
    /// one-second window. A share below one per second is kept as one request per
    /// `replicas / rate` seconds.
    pub fn share(
        global_rps: NonZeroU32,
        per_endpoint_rps: NonZeroU32,
        replicas: NonZeroU32,
    ) -> Self {
        let quota = |rps: NonZeroU32| {
            let period = Duration::from_secs_f64(f64::from(replicas.get()) / f64::from(rps.get()));
            Quota::with_period(period)
                .expect("a positive rate has a positive period")
                .allow_burst(NonZeroU32::MIN)
        };
        Self {
            global: RateLimiter::direct(quota(global_rps)),
            per_endpoint: RateLimiter::keyed(quota(per_endpoint_rps)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a per-endpoint token, or says how long until one is available.
    pub fn try_endpoint(&self, key: &K) -> Result<(), Duration> {
        self.per_endpoint
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Waits for a global token.
    pub async fn global(&self) {
        self.global.until_ready().await;
    }

    /// Drops per-endpoint buckets that are full again, bounding memory by active endpoints.
    pub fn forget_idle(&self) {
        self.per_endpoint.retain_recent();
        self.per_endpoint.shrink_to_fit();
    }
}

// ---- shared GCRA in Redis ----

/// GCRA over two cells, atomically, on Redis's clock. KEYS[1] is the endpoint's cell, KEYS[2]
/// the global one; each holds its theoretical arrival time (TAT) in microseconds. ARGV are the
/// emission intervals in microseconds and the scheduling horizon. No burst: one grant per
/// interval and cell.
///
/// The endpoint's cell is checked, not queued on: a TAT in the future refuses (the row is put
/// back). The global cell schedules: the grant's send time is the later of now and its TAT, up to
/// the horizon ahead, and the caller waits until then. Scheduling instead of refusing keeps every
/// global slot used: a refused caller that sleeps and asks again arrives late by its timer's and
/// the round trip's slack, and those slacks would add up to a lower rate than configured. Both
/// cells advance from the send time, so both spacings hold between send times.
///
/// Returns {granted, wait_us, denied_by, at_us}: a grant's wait before sending and its send time;
/// a refusal's retry delay, the cell that refused (1 endpoint, 2 global) and the current time.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local endpoint_interval = tonumber(ARGV[1])
local global_interval = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
local endpoint_tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if endpoint_tat > now then
  return {0, endpoint_tat - now, 1, now}
end
local send_at = tonumber(redis.call('GET', KEYS[2]) or 0)
if send_at < now then
  send_at = now
end
if send_at - now > horizon then
  return {0, send_at - now - horizon, 2, now}
end
local endpoint_next = send_at + endpoint_interval
local global_next = send_at + global_interval
redis.call('SET', KEYS[1], string.format('%d', endpoint_next), 'PX', math.ceil((endpoint_next - now) / 1000) + 1)
redis.call('SET', KEYS[2], string.format('%d', global_next), 'PX', math.ceil((global_next - now) / 1000) + 1)
return {1, send_at - now, 0, send_at}
";

/// How far ahead the global cell schedules sends before it refuses. The worker's concurrency
/// bounds the queue far below it (64 deliveries at 1,000/s are 64 ms).
pub const GLOBAL_HORIZON: Duration = Duration::from_secs(1);

/// One answer of the shared limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Both cells advanced: send after `wait`, at `at_us` on Redis's clock (microseconds since
    /// the epoch), the instant every replica's sends are spaced by.
    Granted { at_us: u64, wait: Duration },
    /// The endpoint's next slot is `wait` away (nothing was taken).
    Endpoint { wait: Duration },
    /// The global schedule is full for the next [`GLOBAL_HORIZON`]; ask again after `wait`
    /// (nothing was taken).
    Global { wait: Duration },
}

/// A Redis error, without the URL (it carries the password).
#[derive(Debug, thiserror::Error)]
#[error("Redis: {detail}")]
pub struct RedisError {
    detail: String,
    /// A wrong URL or password: retrying cannot help.
    configuration: bool,
}

impl RedisError {
    /// The URL or the credentials are wrong (as opposed to Redis being unreachable or slow).
    pub fn is_configuration(&self) -> bool {
        self.configuration
    }
}

impl From<redis::RedisError> for RedisError {
    fn from(error: redis::RedisError) -> Self {
        // The error's text never includes the connection info.
        RedisError {
            configuration: matches!(
                error.kind(),
                redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::InvalidClientConfig
            ),
            detail: error.to_string(),
        }
    }
}

/// The global and per-endpoint limits shared by every replica through Redis.
#[derive(Clone)]
pub struct SharedLimits {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
    endpoint_interval_us: u64,
    global_interval_us: u64,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("prefix", &self.prefix)
            .field("endpoint_interval_us", &self.endpoint_interval_us)
            .field("global_interval_us", &self.global_interval_us)
            .finish_non_exhaustive()
    }
}

impl SharedLimits {
    /// A reconnecting connection, opened on first use (see [`SharedLimits::ping`]), so a worker
    /// starting while Redis is down still delivers, under the fallback. `url` is
    /// `redis://[:password@]host:port/db`.
    pub fn connect(
        url: &str,
        prefix: &str,
        global_rps: NonZeroU32,
        per_endpoint_rps: NonZeroU32,
    ) -> Result<Self, RedisError> {
        let client = redis::Client::open(url).map_err(|error| RedisError {
            detail: format!(
                "`REDIS_URL` is not a valid Redis URL ({})",
                error.category()
            ),
            configuration: true,
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        let interval = |rps: NonZeroU32| 1_000_000u64.div_ceil(u64::from(rps.get()));
        Ok(Self {
            connection,
            script: redis::Script::new(GCRA_SCRIPT),
            prefix: prefix.to_owned(),
            endpoint_interval_us: interval(per_endpoint_rps),
            global_interval_us: interval(global_rps),
        })
    }

    /// Asks Redis for `PING`: whether the shared limiter can decide now.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(())
    }

    /// One atomic check of `endpoint`'s cell and the global cell.
    pub async fn try_acquire(&self, endpoint: &Uuid) -> Result<Decision, RedisError> {
        let mut connection = self.connection.clone();
        let (granted, wait_us, denied_by, now_us): (u8, u64, u8, u64) = self
            .script
            .key(format!("{}:endpoint:{endpoint}", self.prefix))
            .key(format!("{}:global", self.prefix))
            .arg(self.endpoint_interval_us)
            .arg(self.global_interval_us)
            .arg(GLOBAL_HORIZON.as_micros() as u64)
            .invoke_async(&mut connection)
            .await?;
        let wait = Duration::from_micros(wait_us);
        Ok(match (granted, denied_by) {
            (1, _) => Decision::Granted {
                at_us: now_us,
                wait,
            },
            (_, 1) => Decision::Endpoint { wait },
            _ => Decision::Global { wait },
        })
    }
}

// ---- the worker's limiter ----

struct RedisState {
    shared: SharedLimits,
    fallback: RateLimits<Uuid>,
    /// Until when the fallback decides without asking Redis (after a failed call).
    skip_until: Mutex<Option<Instant>>,
}

/// What the worker asks before each delivery.
pub struct Limiter {
    local: RateLimits<Uuid>,
    redis: Option<RedisState>,
    metrics: Option<Metrics>,
    redis_errors: Counter,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("shared", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// Per-process limits only.
    pub fn local(global_rps: NonZeroU32, per_endpoint_rps: NonZeroU32) -> Self {
        Self {
            local: RateLimits::new(global_rps, per_endpoint_rps),
            redis: None,
            metrics: None,
            redis_errors: Counter::default(),
        }
    }

    /// Shared limits in Redis; while Redis fails, each replica keeps to `1/replicas` of the rates.
    pub fn shared(
        shared: SharedLimits,
        global_rps: NonZeroU32,
        per_endpoint_rps: NonZeroU32,
        replicas: NonZeroU32,
    ) -> Self {
        Self {
            local: RateLimits::new(global_rps, per_endpoint_rps),
            redis: Some(RedisState {
                shared,
                fallback: RateLimits::share(global_rps, per_endpoint_rps, replicas),
                skip_until: Mutex::new(None),
            }),
            metrics: None,
            redis_errors: Counter::default(),
        }
    }

    /// Reports the active backend and Redis errors in these metrics.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.redis_errors = metrics.rate_limiter_redis_errors.clone();
        metrics.set_rate_limiter(self.configured_backend());
        self.metrics = Some(metrics);
        self
    }

    /// The backend this limiter uses while everything works.
    pub fn configured_backend(&self) -> Backend {
        if self.redis.is_some() {
            Backend::Redis
        } else {
            Backend::Local
        }
    }

    /// Failed Redis calls so far.
    pub fn redis_errors(&self) -> u64 {
        self.redis_errors.get()
    }

    fn report(&self, backend: Backend) {
        if let Some(metrics) = &self.metrics {
            metrics.set_rate_limiter(backend);
        }
    }

    /// Admits one delivery to `endpoint`: `Err(wait)` when the endpoint is over its rate (put the
    /// row back for `wait`); otherwise waits for the global budget and returns.
    pub async fn admit(&self, endpoint: &Uuid) -> Result<(), Duration> {
        let Some(redis) = &self.redis else {
            self.local.try_endpoint(endpoint)?;
            self.local.global().await;
            return Ok(());
        };
        loop {
            let skipping = redis
                .skip_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|until| Instant::now() < until);
            if !skipping {
                match redis.shared.try_acquire(endpoint).await {
                    Ok(decision) => {
                        self.report(Backend::Redis);
                        match decision {
                            Decision::Granted { wait, .. } => {
                                // The send time the schedule gave this delivery.
                                if !wait.is_zero() {
                                    tokio::time::sleep(wait).await;
                                }
                                return Ok(());
                            }
                            Decision::Endpoint { wait } => return Err(wait),
                            Decision::Global { wait } => {
                                tokio::time::sleep(wait).await;
                                continue;
                            }
                        }
                    }
                    Err(error) => {
                        self.redis_errors.inc();
                        let mut skip = redis
                            .skip_until
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        if skip.is_none_or(|until| Instant::now() >= until) {
                            tracing::warn!(
                                %error,
                                retry_after_ms = REDIS_RETRY_AFTER.as_millis() as u64,
                                "shared rate limiter unreachable: delivering under the conservative local share until Redis answers"
                            );
                        }
                        *skip = Some(Instant::now() + REDIS_RETRY_AFTER);
                    }
                }
            }
            self.report(Backend::LocalFallback);
            redis.fallback.try_endpoint(endpoint)?;
            redis.fallback.global().await;
            return Ok(());
        }
    }

    /// Trims idle per-endpoint state of the local buckets.
    pub fn forget_idle(&self) {
        self.local.forget_idle();
        if let Some(redis) = &self.redis {
            redis.fallback.forget_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rps(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn per_endpoint_limit_is_per_key() {
        let limits = RateLimits::new(rps(1000), rps(2));
        assert!(limits.try_endpoint(&"a").is_ok());
        assert!(limits.try_endpoint(&"a").is_ok());
        let wait = limits.try_endpoint(&"a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(limits.try_endpoint(&"b").is_ok());
    }

    #[tokio::test]
    async fn global_limit_paces_callers() {
        let limits: RateLimits<&str> = RateLimits::new(rps(20), rps(1000));
        let started = std::time::Instant::now();
        for _ in 0..30 {
            limits.global().await;
        }
        // A burst of 20, then 10 more at 20/s: at least ~0.45 s.
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_share_divides_the_rate_and_has_no_burst() {
        // 10/s over 4 replicas: one request per 400 ms.
        let limits = RateLimits::share(rps(1000), rps(10), rps(4));
        assert!(limits.try_endpoint(&"a").is_ok());
        let wait = limits.try_endpoint(&"a").unwrap_err();
        assert!(
            wait > Duration::from_millis(350) && wait <= Duration::from_millis(400),
            "{wait:?}"
        );
        // A share below 1/s still admits, once per period.
        let slow = RateLimits::share(rps(1000), rps(10), rps(20));
        assert!(slow.try_endpoint(&"a").is_ok());
        let wait = slow.try_endpoint(&"a").unwrap_err();
        assert!(wait > Duration::from_millis(1900), "{wait:?}");
    }

    #[tokio::test]
    async fn without_redis_the_local_limiter_decides() {
        let limiter = Limiter::local(rps(1000), rps(2));
        assert_eq!(limiter.configured_backend(), Backend::Local);
        let endpoint = Uuid::new_v4();
        assert!(limiter.admit(&endpoint).await.is_ok());
        assert!(limiter.admit(&endpoint).await.is_ok());
        assert!(limiter.admit(&endpoint).await.is_err());
        assert!(limiter.admit(&Uuid::new_v4()).await.is_ok());
    }
}
