//! The delivery loop: claim a batch, deliver it concurrently under the breakers and rate limits,
//! write the results back in one statement, repeat; stop claiming on shutdown.
//!
//! Leases. Every claim gets its own lease owner, `<WORKER_ID>/p<pipeline>/<uuid>`, and its rows'
//! results are written only while that owner still holds an unexpired lease (see `queue`). Leases
//! are not renewed while a batch is in flight; instead two things keep a batch inside its lease:
//!
//! 1. the configuration check ([`WorkerConfig::required_lease`]) refuses a lease shorter than the
//!    worst case of one batch: all pipelines' batches share the `concurrency` slots, every request
//!    runs into the timeout, and the global rate limit paces every row, plus [`LEASE_MARGIN`];
//! 2. a row is only sent while its request can still finish, timeout included, [`SEND_MARGIN`]
//!    before the lease expires, measured on the local monotonic clock from *before* the claim was
//!    sent (so never later than the database's expiry). A row past that point is put back unsent.
//!
//! So a row is never on the wire after its lease expired, and another pipeline or replica can only
//! claim it once it is not. Renewal was not chosen: it would add a database write per batch and
//! per interval, and a renewal that fails (database slow or unreachable) would still need the
//! same send guard; the guard alone gives the guarantee, and the check keeps it from firing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::breaker::{BreakerPolicy, Breakers, Permit};
use crate::client::{Attempt, ClientSettings, DeliveryClient};
use crate::metrics::Metrics;
use crate::queue::{self, Claimed, Completion, FinalStatus};
use crate::ratelimit::Limiter;
use crate::signing::{SigningKey, sign_delivery};

/// Turns a merchant's stored (encrypted) secret into a signing key. The worker binary plugs in
/// the services' AES-256-GCM decryption; the error never carries secret material.
pub trait SecretOpener: Send + Sync {
    fn open(&self, ciphertext: &[u8], nonce: &[u8]) -> Result<SigningKey, String>;
}

/// Part of a lease the configuration check keeps free beyond the worst case of a batch: for the
/// claim and completion statements and scheduling delays.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Part of a lease that must still be left when a row's request would hit its timeout, or the
/// row is not sent: time to write the batch's results while the lease is still held.
pub const SEND_MARGIN: Duration = Duration::from_secs(1);

/// Everything tunable about the loop.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Prefix of every lease owner this process writes (`<worker_id>/p<n>/<uuid>`, one per claim).
    pub worker_id: String,
    pub batch_size: i64,
    /// Deliveries in flight at once, across all pipelines.
    pub concurrency: usize,
    /// Claim→deliver→complete loops running side by side, so claiming and completing overlap
    /// with delivering.
    pub pipelines: usize,
    pub lease: Duration,
    pub idle_poll: Duration,
    pub backoff: Backoff,
    pub breaker: BreakerPolicy,
    pub global_rps: NonZeroU32,
    pub per_endpoint_rps: NonZeroU32,
    pub client: ClientSettings,
    /// How long a decrypted key is reused before it is decrypted again.
    pub key_cache_ttl: Duration,
}

impl WorkerConfig {
    /// The longest a claimed batch can take until its last row's request has finished.
    ///
    /// All `pipelines` may hold a full batch at once, and they share the `concurrency` delivery
    /// slots (fairly: slots are handed out first come, first served), so the batch's last row may
    /// wait for `⌈pipelines × batch_size / concurrency⌉` rounds of requests, each running into the
    /// request timeout, plus one round for requests already in flight when the batch was claimed,
    /// plus the time the global rate limit needs for all those rows.
    pub fn batch_worst_case(&self) -> Duration {
        let rows = (self.pipelines.max(1) as u64).saturating_mul(self.batch_size.max(1) as u64);
        let rounds = rows
            .div_ceil(self.concurrency.max(1) as u64)
            .saturating_add(1);
        let rounds = u32::try_from(rounds).unwrap_or(u32::MAX);
        self.client
            .request_timeout
            .saturating_mul(rounds)
            .saturating_add(Duration::from_nanos(
                u64::try_from(u128::from(rows) * 1_000_000_000 / u128::from(self.global_rps.get()))
                    .unwrap_or(u64::MAX),
            ))
    }

    /// The shortest lease the configuration check accepts: the worst case plus [`LEASE_MARGIN`].
    pub fn required_lease(&self) -> Duration {
        self.batch_worst_case().saturating_add(LEASE_MARGIN)
    }
}

/// Totals of a run, for `--once` and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub claimed: u64,
    pub delivered: u64,
    pub failed: u64,
    pub dead: u64,
    pub disabled: u64,
    pub released: u64,
    /// Rows put back unsent because their request could no longer finish inside the lease
    /// (also counted in `released`). Non-zero means the lease is too short for the real load.
    pub lease_expiring: u64,
    /// Batches that failed on the database (claim or completion).
    pub queue_errors: u64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.claimed += other.claimed;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.dead += other.dead;
        self.disabled += other.disabled;
        self.released += other.released;
        self.lease_expiring += other.lease_expiring;
        self.queue_errors += other.queue_errors;
    }
}

struct CachedKey {
    key: SigningKey,
    merchant_updated_at: DateTime<Utc>,
    fetched: Instant,
}

/// The worker. Cheap to share: wrap in an `Arc`.
pub struct Worker {
    pool: PgPool,
    config: WorkerConfig,
    client: DeliveryClient,
    metrics: Metrics,
    opener: Arc<dyn SecretOpener>,
    breakers: Mutex<Breakers<Uuid>>,
    limits: Limiter,
    keys: Mutex<HashMap<Uuid, CachedKey>>,
    in_flight: Semaphore,
}

/// One processed row: its completion and, for 410, the merchant to disable.
struct Processed {
    completion: Completion,
    disable_merchant: Option<Uuid>,
    /// Put back because the lease would have run out during the request.
    lease_expiring: bool,
}

/// One claim's lease: the owner written to its rows and when it ends on the local clock.
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    /// `Instant` taken before the claim statement was sent, plus the lease length: never later
    /// than the `lease_expires_at` the database wrote.
    pub deadline: Instant,
}

impl Worker {
    pub fn new(
        pool: PgPool,
        config: WorkerConfig,
        metrics: Metrics,
        opener: Arc<dyn SecretOpener>,
    ) -> Result<Self, crate::client::BuildError> {
        let client = DeliveryClient::new(config.client)?;
        Ok(Self {
            breakers: Mutex::new(Breakers::new(config.breaker)),
            limits: Limiter::local(config.global_rps, config.per_endpoint_rps)
                .with_metrics(metrics.clone()),
            keys: Mutex::new(HashMap::new()),
            in_flight: Semaphore::new(config.concurrency.max(1)),
            pool,
            client,
            metrics,
            opener,
            config,
        })
    }

    /// Replaces the per-process rate limiter (e.g. with the one shared through Redis).
    pub fn with_limiter(mut self, limiter: Limiter) -> Self {
        self.limits = limiter.with_metrics(self.metrics.clone());
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Runs until `shutdown` is cancelled, or, with `once`, until nothing is due any more.
    /// In-flight deliveries finish (bounded by the request timeout); rows claimed but not yet
    /// attempted are released for other workers.
    pub async fn run(self: &Arc<Self>, shutdown: CancellationToken, once: bool) -> Totals {
        let pipelines = self.config.pipelines.max(1);
        let mut handles = Vec::with_capacity(pipelines);
        for index in 0..pipelines {
            let worker = Arc::clone(self);
            let shutdown = shutdown.clone();
            handles.push(tokio::spawn(async move {
                worker.pipeline(index, shutdown, once).await
            }));
        }
        let mut totals = Totals::default();
        for handle in handles {
            match handle.await {
                Ok(pipeline_totals) => totals.add(pipeline_totals),
                Err(error) => tracing::error!(%error, "a delivery pipeline panicked"),
            }
        }
        totals
    }

    async fn pipeline(&self, index: usize, shutdown: CancellationToken, once: bool) -> Totals {
        let mut totals = Totals::default();
        let mut db_failures = 0u32;
        while !shutdown.is_cancelled() {
            match self.run_batch_in(index, &shutdown).await {
                Ok(batch) => {
                    db_failures = 0;
                    self.metrics.health.set(1);
                    totals.add(batch);
                    if batch.claimed > 0 {
                        continue;
                    }
                    if once {
                        break;
                    }
                }
                Err(error) => {
                    db_failures += 1;
                    totals.queue_errors += 1;
                    self.metrics.health.set(0);
                    tracing::warn!(error = %error, consecutive = db_failures, "webhook queue unavailable");
                    if once && db_failures >= 3 {
                        break;
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.config.idle_poll) => {}
            }
        }
        totals
    }

    /// Claims, delivers and completes one batch (as pipeline 0).
    pub async fn run_batch(&self, shutdown: &CancellationToken) -> sqlx::Result<Totals> {
        self.run_batch_in(0, shutdown).await
    }

    /// Claims due rows under a new lease owned by this claim alone.
    pub async fn claim(&self, pipeline: usize) -> sqlx::Result<(Lease, Vec<Claimed>)> {
        let owner = format!(
            "{}/p{pipeline}/{}",
            self.config.worker_id,
            Uuid::new_v4().simple()
        );
        let started = Instant::now();
        let rows = queue::claim(
            &self.pool,
            &owner,
            self.config.batch_size,
            self.config.lease,
        )
        .await?;
        let lease = Lease {
            owner,
            deadline: started + self.config.lease,
        };
        Ok((lease, rows))
    }

    /// Claims, delivers and completes one batch as pipeline `pipeline`.
    pub async fn run_batch_in(
        &self,
        pipeline: usize,
        shutdown: &CancellationToken,
    ) -> sqlx::Result<Totals> {
        let (lease, rows) = self.claim(pipeline).await?;
        let mut totals = Totals {
            claimed: rows.len() as u64,
            ..Totals::default()
        };
        if rows.is_empty() {
            return Ok(totals);
        }
        if let [row] = rows.as_slice()
            && row.suspect
        {
            tracing::warn!(
                webhook_id = %row.id,
                merchant_id = %row.merchant_id,
                attempts = row.attempts,
                max_attempts = row.max_attempts,
                "a webhook whose previous attempt never completed (worker killed or lease expired) is retried on its own"
            );
        }
        let over_limit = Mutex::new(HashMap::new());
        let processed: Vec<Processed> = futures::stream::iter(rows)
            .map(|row| self.process(row, lease.deadline, shutdown, &over_limit))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut completions = Vec::with_capacity(processed.len());
        for item in processed {
            if let Some(merchant_id) = item.disable_merchant {
                let reason = "endpoint answered 410 Gone; webhooks disabled until re-enabled";
                match queue::disable_merchant(&self.pool, merchant_id, reason).await {
                    Ok(rows) => {
                        tracing::warn!(%merchant_id, queued_rows_disabled = rows, "merchant webhook endpoint disabled (410 Gone)")
                    }
                    Err(error) => {
                        tracing::error!(%merchant_id, %error, "could not disable merchant after 410")
                    }
                }
            }
            if item.lease_expiring {
                totals.lease_expiring += 1;
            }
            let completion = item.completion;
            match (completion.status, completion.attempted) {
                (FinalStatus::Delivered, _) => totals.delivered += 1,
                (FinalStatus::Dead, _) => totals.dead += 1,
                (FinalStatus::Disabled, _) => totals.disabled += 1,
                (FinalStatus::Pending, true) => totals.failed += 1,
                (FinalStatus::Pending, false) => totals.released += 1,
            }
            completions.push(completion);
        }
        if totals.lease_expiring > 0 {
            tracing::warn!(
                rows = totals.lease_expiring,
                lease_secs = self.config.lease.as_secs_f64(),
                "rows were put back unsent because their request could no longer finish within the lease; \
                 raise WEBHOOK_LEASE_SECS or lower WEBHOOK_BATCH_SIZE / WEBHOOK_PIPELINES"
            );
        }
        self.complete_with_retry(&lease.owner, &completions).await?;
        Ok(totals)
    }

    /// The results are what matter most after a delivery: retry a transient database error a
    /// few times before leaving the rows to lease expiry (which redelivers them).
    async fn complete_with_retry(
        &self,
        owner: &str,
        completions: &[Completion],
    ) -> sqlx::Result<()> {
        let mut delay = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            match queue::complete(&self.pool, owner, completions).await {
                Ok(written) => {
                    self.metrics.dead_letters.inc_by(written.dead);
                    if written.rows < completions.len() as u64 {
                        tracing::warn!(
                            expected = completions.len(),
                            written = written.rows,
                            %owner,
                            "some leases had expired (and may have been taken over); their results were not written and those rows will be retried"
                        );
                    }
                    return Ok(());
                }
                Err(error) if tries < 5 => {
                    tries += 1;
                    tracing::warn!(%error, tries, "writing delivery results failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// `over_limit` counts, per merchant, the rows of this batch already put back by the
    /// per-endpoint limit, so they are spread over the following seconds at the merchant's rate
    /// instead of all becoming due together.
    async fn process(
        &self,
        mut row: Claimed,
        lease_deadline: Instant,
        shutdown: &CancellationToken,
        over_limit: &Mutex<HashMap<Uuid, u32>>,
    ) -> Processed {
        let plain = |completion| Processed {
            completion,
            disable_merchant: None,
            lease_expiring: false,
        };
        if row.exhausted {
            tracing::warn!(
                webhook_id = %row.id,
                merchant_id = %row.merchant_id,
                attempts = row.attempts,
                "webhook dead: its last attempt never completed (the worker was killed or its lease ran out while delivering it)"
            );
            return plain(Completion {
                id: row.id,
                status: FinalStatus::Dead,
                attempted: false,
                refund: false,
                retry_in: Duration::ZERO,
                last_error: Some(format!(
                    "attempt {} of {} never completed: the worker was killed or its lease ran out while delivering it",
                    row.attempts, row.max_attempts
                )),
                status_code: None,
            });
        }
        if !row.webhook_enabled {
            return plain(Completion {
                id: row.id,
                status: FinalStatus::Disabled,
                attempted: false,
                refund: true,
                retry_in: Duration::ZERO,
                last_error: Some("merchant webhooks are disabled".to_owned()),
                status_code: None,
            });
        }
        let Ok(_slot) = self.in_flight.acquire().await else {
            return plain(Completion::release(row.id, Duration::ZERO));
        };
        if shutdown.is_cancelled() {
            return plain(Completion::release(row.id, Duration::ZERO));
        }
        let permit = self
            .breakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .permit(&row.merchant_id, Instant::now());
        if let Permit::Rejected(wait) = permit {
            return plain(Completion::release(row.id, wait));
        }
        if let Err(wait) = self.limits.admit(&row.merchant_id).await {
            if permit == Permit::Probe {
                self.breakers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .abandon_probe(&row.merchant_id);
            }
            let queued_before = {
                let mut counts = over_limit.lock().unwrap_or_else(PoisonError::into_inner);
                let count = counts.entry(row.merchant_id).or_insert(0);
                *count += 1;
                *count - 1
            };
            let spread = Duration::from_secs_f64(
                f64::from(queued_before) / f64::from(self.config.per_endpoint_rps.get()),
            );
            return plain(Completion::release(
                row.id,
                (wait + spread).max(Duration::from_millis(10)),
            ));
        }

        // The request may take up to the timeout; it must be over, with time left to write the
        // result, before the lease ends. Otherwise the row goes back unsent.
        let lease_left = lease_deadline.saturating_duration_since(Instant::now());
        if lease_left
            < self
                .config
                .client
                .request_timeout
                .saturating_add(SEND_MARGIN)
        {
            if permit == Permit::Probe {
                self.breakers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .abandon_probe(&row.merchant_id);
            }
            return Processed {
                completion: Completion::release(row.id, Duration::ZERO),
                disable_merchant: None,
                lease_expiring: true,
            };
        }

        let key = match self.signing_key(&row) {
            Ok(key) => key,
            Err(error) => {
                if permit == Permit::Probe {
                    self.breakers
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .abandon_probe(&row.merchant_id);
                }
                return plain(self.failed(&row, None, error, None));
            }
        };
        let timestamp = Utc::now().timestamp();
        let headers = sign_delivery(&key, row.id, timestamp, row.body.as_bytes());
        let (attempt, elapsed) = self
            .client
            .deliver(&row.webhook_url, &headers, std::mem::take(&mut row.body))
            .await;
        self.metrics
            .delivery_duration
            .observe(elapsed.as_secs_f64());

        let success = matches!(attempt, Attempt::Delivered { .. });
        let counts_for_breaker = match &attempt {
            Attempt::Failed { endpoint_fault, .. } => *endpoint_fault,
            _ => true,
        };
        if counts_for_breaker {
            let opened = self
                .breakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(&row.merchant_id, success, Instant::now());
            if opened {
                self.metrics.breaker_opens.inc();
                tracing::warn!(merchant_id = %row.merchant_id, "circuit breaker opened for merchant endpoint");
            }
        } else if permit == Permit::Probe {
            // Our own refusal says nothing about the endpoint's health; let another row probe.
            self.breakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .abandon_probe(&row.merchant_id);
        }
        self.metrics.attempt(success);

        match attempt {
            Attempt::Delivered { status } => plain(Completion {
                id: row.id,
                status: FinalStatus::Delivered,
                attempted: true,
                refund: false,
                retry_in: Duration::ZERO,
                last_error: None,
                status_code: Some(i32::from(status)),
            }),
            Attempt::Gone => Processed {
                completion: Completion {
                    id: row.id,
                    status: FinalStatus::Disabled,
                    attempted: true,
                    refund: false,
                    retry_in: Duration::ZERO,
                    last_error: Some("HTTP 410 Gone: endpoint disabled".to_owned()),
                    status_code: Some(410),
                },
                disable_merchant: Some(row.merchant_id),
                lease_expiring: false,
            },
            Attempt::Failed {
                status,
                error,
                retry_after,
                ..
            } => plain(self.failed(&row, status, error, retry_after)),
        }
    }

    fn failed(
        &self,
        row: &Claimed,
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    ) -> Completion {
        // The claim already charged this attempt.
        let attempts = u32::try_from(row.attempts).unwrap_or(1).max(1);
        let max_attempts = u32::try_from(row.max_attempts).unwrap_or(1);
        let dead = attempts >= max_attempts;
        if dead {
            tracing::warn!(webhook_id = %row.id, merchant_id = %row.merchant_id, attempts, error = %error, "webhook dead after its last attempt");
        } else {
            tracing::debug!(webhook_id = %row.id, attempts, error = %error, "webhook attempt failed; will retry");
        }
        let retry_in = self
            .config
            .backoff
            .next_delay(attempts, rand::random::<f64>(), retry_after);
        Completion {
            id: row.id,
            status: if dead {
                FinalStatus::Dead
            } else {
                FinalStatus::Pending
            },
            attempted: true,
            refund: false,
            retry_in,
            last_error: Some(error.chars().take(1000).collect()),
            status_code: status.map(i32::from),
        }
    }

    fn signing_key(&self, row: &Claimed) -> Result<SigningKey, String> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = keys.get(&row.merchant_id)
            && cached.merchant_updated_at == row.merchant_updated_at
            && cached.fetched.elapsed() < self.config.key_cache_ttl
        {
            return Ok(cached.key.clone());
        }
        let key = self
            .opener
            .open(&row.webhook_secret_ciphertext, &row.webhook_secret_nonce)
            .map_err(|reason| format!("merchant webhook secret unusable: {reason}"))?;
        keys.insert(
            row.merchant_id,
            CachedKey {
                key: key.clone(),
                merchant_updated_at: row.merchant_updated_at,
                fetched: Instant::now(),
            },
        );
        Ok(key)
    }

    /// Refreshes `webhook_queue_depth` and trims per-endpoint state until `shutdown`.
    pub async fn housekeeping(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        loop {
            match queue::depth(&self.pool).await {
                Ok(depth) => {
                    self.metrics.queue_depth.set(depth);
                }
                Err(error) => {
                    self.metrics.health.set(0);
                    tracing::warn!(%error, "cannot read webhook queue depth");
                }
            }
            self.limits.forget_idle();
            self.breakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .forget_healthy();
            self.keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, cached| cached.fetched.elapsed() < self.config.key_cache_ttl);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
