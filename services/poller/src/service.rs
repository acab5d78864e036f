//! The poll-and-match cycle and the long-running loop: leadership first, then (leader only)
//! take Binance's time, fetch the poll window and re-check windows for unresolved deposits into
//! deposit_raw, advance the checkpoint, count new allocation collisions, drain the matching
//! backlog in batches (row by row around a batch that fails on its data), record deposits
//! Binance finalised without success, expire invoices, report stuck deposits and reconcile;
//! metrics and readiness follow each step.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use problemsolver_core::http::{Readiness, Shutdown};
use sqlx::PgPool;

use crate::binance::{BinanceClient, BinanceError, parse_deposit};
use crate::config::Settings;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::store::{self, DEPOSITS_CHECKPOINT, DepositOutcome, MatchOutcome, ReconcileMark};
use crate::window;

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error("database unreachable: {0}")]
    Database(#[from] sqlx::Error),
    /// The database may answer, but every connection of the pool stayed busy (or stuck) for the
    /// pool's whole acquire timeout.
    #[error(
        "no free connection in the database pool ({open} open of at most {max}, {idle} idle): the cycle stopped and deposits are not being credited"
    )]
    PoolExhausted { open: u32, idle: usize, max: u32 },
    #[error(transparent)]
    Binance(#[from] BinanceError),
    #[error("Binance asked us to back off; {0:?} left")]
    BackingOff(Duration),
    #[error(
        "leadership was lost during the cycle; stopped before the next Binance request or write"
    )]
    LeadershipLost,
}

/// What a leader's cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CycleReport {
    pub fetched: u64,
    pub stored: u64,
    pub unparsable: u64,
    pub processed: u64,
    pub credited: u64,
    pub collisions: u64,
    pub reconciled: u64,
    pub mismatches: u64,
    /// Deposits re-fetched because Binance had not finalised them.
    pub rechecked: u64,
    /// Rows quarantined for the first time (unparsable, refused by the database, or failing to
    /// match).
    pub quarantined: u64,
    /// Deposits recorded without a credit, by reason (late, duplicate, rejected, ...).
    pub recorded: u64,
    pub invoices_expired: u64,
    pub unresolved: u64,
    pub stuck: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CycleOutcome {
    /// Another replica holds the lock; nothing was done.
    Standby,
    Led(CycleReport),
}

pub struct Poller {
    pool: PgPool,
    binance: BinanceClient,
    leadership: Leadership,
    metrics: Metrics,
    readiness: Readiness,
    settings: Settings,
    consecutive_errors: i64,
    /// The last processed deposit reconciled (default: start from the oldest).
    reconciled_through: ReconcileMark,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Poller {
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    pub fn new(
        pool: PgPool,
        binance: BinanceClient,
        leadership: Leadership,
        metrics: Metrics,
        readiness: Readiness,
        settings: Settings,
    ) -> Self {
        Poller {
            pool,
            binance,
            leadership,
            metrics,
            readiness,
            settings,
            consecutive_errors: 0,
            reconciled_through: ReconcileMark::default(),
        }
    }

    /// One cycle. Metrics, readiness and the consecutive-error count are updated here.
    pub async fn cycle(&mut self, shutdown: &Shutdown) -> Result<CycleOutcome, CycleError> {
        let leader = match self.leadership.refresh().await {
            Ok(leader) => leader,
            Err(error) => {
                self.metrics.is_leader.set(0);
                self.readiness.set_not_ready(format!(
                    "database unreachable (leadership unknown): {error}"
                ));
                self.record_failure();
                return Err(CycleError::Database(error));
            }
        };
        self.metrics.is_leader.set(i64::from(leader));
        if problemsolver_core::db::ping(&self.pool, Duration::from_secs(5)).await {
            self.readiness.set_ready();
        } else {
            self.readiness.set_not_ready(format!(
                "database unreachable from the pool ({} connections open, {} idle)",
                self.pool.size(),
                self.pool.num_idle()
            ));
        }
        if !leader {
            return Ok(CycleOutcome::Standby);
        }
        let started = Instant::now();
        let mut report = CycleReport::default();
        let result = match self.lead(&mut report, shutdown).await {
            Err(CycleError::Database(sqlx::Error::PoolTimedOut)) => {
                Err(CycleError::PoolExhausted {
                    open: self.pool.size(),
                    idle: self.pool.num_idle(),
                    max: self.pool.options().get_max_connections(),
                })
            }
            other => other,
        };
        self.metrics
            .poll_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.consecutive_errors = 0;
                self.metrics.consecutive_errors.set(0);
                self.metrics.last_success_unixtime.set(unix_now());
                Ok(CycleOutcome::Led(report))
            }
            Err(error) => {
                self.record_failure();
                Err(error)
            }
        }
    }

    fn record_failure(&mut self) {
        self.consecutive_errors += 1;
        self.metrics.consecutive_errors.set(self.consecutive_errors);
        self.metrics.deposits_errors.inc();
    }

    /// Fails when leadership was lost since the cycle began: the poller stops calling Binance
    /// and writing at once (a standby may already be leading).
    fn still_leading(&self) -> Result<(), CycleError> {
        if self.leadership.is_leader() {
            Ok(())
        } else {
            self.metrics.is_leader.set(0);
            Err(CycleError::LeadershipLost)
        }
    }

    async fn lead(
        &mut self,
        report: &mut CycleReport,
        shutdown: &Shutdown,
    ) -> Result<(), CycleError> {
        // Matching runs even when Binance is failing: deposits inserted directly (smoke tests)
        // or fetched earlier still get credited.
        let poll_result = self.poll_binance(report).await;
        if matches!(poll_result, Err(CycleError::LeadershipLost)) {
            return poll_result;
        }
        self.still_leading()?;
        report.collisions =
            store::count_new_collisions(&self.pool, self.settings.collision_settle).await?;
        self.metrics.collisions.inc_by(report.collisions);
        loop {
            self.still_leading()?;
            let outcome = match store::match_batch(&self.pool, self.settings.match_batch_size, None)
                .await
            {
                Ok(outcome) => outcome,
                Err(error) if store::is_row_error(&error) => {
                    tracing::error!(%error, "a matching batch failed on its data; matching its deposits one by one");
                    self.match_one_by_one(report).await?
                }
                Err(error) => return Err(error.into()),
            };
            self.count_matched(report, &outcome);
            if i64::try_from(outcome.processed).unwrap_or(i64::MAX) < self.settings.match_batch_size
                || shutdown.is_triggered()
            {
                break;
            }
        }
        let rejected = store::record_failed_deposits(&self.pool).await?;
        if rejected > 0 {
            report.recorded += rejected;
            self.metrics
                .count_outcome(DepositOutcome::Rejected.as_str(), rejected);
        }
        // Expiry and stuck reports use Binance's clock: the clock `insertTime` is on.
        let binance_now = DateTime::<Utc>::from_timestamp_millis(self.binance.server_now_ms())
            .unwrap_or_else(Utc::now);
        report.invoices_expired =
            store::expire_invoices(&self.pool, binance_now, self.settings.match_batch_size).await?;
        self.metrics
            .invoices_expired
            .inc_by(report.invoices_expired);
        let stuck_before = binance_now
            - chrono::Duration::from_std(self.settings.stuck_after)
                .unwrap_or(chrono::Duration::MAX);
        let unresolved = store::report_stuck(&self.pool, stuck_before).await?;
        report.unresolved = unresolved.total;
        report.stuck = unresolved.stuck;
        self.metrics
            .deposits_unresolved
            .set(i64::try_from(unresolved.total).unwrap_or(i64::MAX));
        self.metrics
            .deposits_stuck
            .set(i64::try_from(unresolved.stuck).unwrap_or(i64::MAX));
        if unresolved.newly_reported > 0 {
            tracing::error!(
                newly_stuck = unresolved.newly_reported,
                stuck = unresolved.stuck,
                "deposits Binance has not finalised for longer than DEPOSIT_STUCK_AFTER_SECS (see system_events)"
            );
        }
        self.reconcile(report).await?;
        poll_result
    }

    fn count_matched(&self, report: &mut CycleReport, outcome: &MatchOutcome) {
        report.processed += outcome.processed;
        report.credited += outcome.credited;
        self.metrics.deposits_processed.inc_by(outcome.processed);
        if outcome.credited > 0 {
            self.metrics
                .count_outcome(DepositOutcome::Credited.as_str(), outcome.credited);
        }
        for (reason, count) in &outcome.recorded {
            report.recorded += count;
            self.metrics.count_outcome(reason.as_str(), *count);
        }
    }

    /// Matches the next batch's deposits one transaction each, so a deposit that cannot be
    /// written (a constraint, a bad value) is quarantined and every other one still moves on.
    async fn match_one_by_one(
        &mut self,
        report: &mut CycleReport,
    ) -> Result<MatchOutcome, CycleError> {
        let ids = store::next_candidates(&self.pool, self.settings.match_batch_size).await?;
        let mut total = MatchOutcome::default();
        for id in ids {
            self.still_leading()?;
            match store::match_batch(&self.pool, 1, Some(id)).await {
                Ok(outcome) => {
                    total.processed += outcome.processed;
                    total.credited += outcome.credited;
                    total.recorded.extend(outcome.recorded);
                }
                Err(error) if store::is_row_error(&error) => {
                    if store::quarantine_deposit(&self.pool, id, &error.to_string()).await? {
                        total.processed += 1;
                        total.recorded.push((DepositOutcome::Quarantined, 1));
                        report.quarantined += 1;
                        self.metrics.deposits_quarantined.inc();
                        tracing::error!(deposit_id = id, %error, "quarantined a deposit that cannot be matched (see system_events)");
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(total)
    }

    /// Checks the deposits processed since the last pass (the whole history, a batch per
    /// cycle, after a restart) and counts what does not add up.
    async fn reconcile(&mut self, report: &mut CycleReport) -> Result<(), CycleError> {
        let outcome = store::reconcile_after(
            &self.pool,
            self.reconciled_through,
            self.settings.match_batch_size,
        )
        .await?;
        self.reconciled_through = outcome.through;
        report.reconciled += outcome.checked;
        report.mismatches += outcome.mismatches;
        self.metrics.reconciliation_checked.inc_by(outcome.checked);
        self.metrics
            .reconciliation_mismatches
            .inc_by(outcome.mismatches);
        if outcome.mismatches > 0 {
            tracing::error!(
                mismatches = outcome.mismatches,
                deposit_ids = ?outcome.mismatching_ids,
                "reconciliation: processed deposits whose payment, ledger credit, invoice, webhook row or system event do not add up"
            );
        }
        Ok(())
    }

    async fn poll_binance(&mut self, report: &mut CycleReport) -> Result<(), CycleError> {
        // The back-off lives in the database, so a restarted (or crash-looping) poller honours
        // it too and cannot hammer Binance into an IP ban.
        if let Some(left) = store::load_backoff(&self.pool).await? {
            return Err(CycleError::BackingOff(left));
        }
        self.still_leading()?;
        // Binance's own time bounds every window: a skewed pod clock can neither ask for the
        // future nor save a checkpoint Binance has not reached.
        self.binance_call(self.binance.sync_time()).await?;
        let server_now_ms = self.binance.server_now_ms();
        let server_now = DateTime::<Utc>::from_timestamp_millis(server_now_ms)
            .ok_or_else(|| BinanceError::Decode("server time out of range".to_owned()))?;
        let checkpoint = store::load_checkpoint(&self.pool, DEPOSITS_CHECKPOINT).await?;
        let ahead = checkpoint.filter(|at| *at > server_now);
        let checkpoint_ms = match checkpoint {
            Some(at) if at > server_now => {
                tracing::error!(checkpoint = %at, %server_now, "the stored checkpoint is ahead of Binance's clock (saved by a skewed clock); looking back the initial lookback instead");
                None
            }
            other => other.map(|c| c.timestamp_millis()),
        };
        let windows = window::plan(
            checkpoint_ms,
            server_now_ms,
            millis(self.settings.overlap),
            millis(self.settings.initial_lookback),
        );
        let poll_start_ms = windows.first().map(|w| w.start_ms).unwrap_or(server_now_ms);
        // Reading from the initial lookback, not from a checkpoint: once the first window is
        // stored, say where the history now begins, so that a deposit older than that is a
        // visible gap rather than a silent one.
        let mut reach = checkpoint_ms.is_none().then_some(match ahead {
            Some(_) => (
                "poll.checkpoint_ahead",
                "error",
                "the stored checkpoint was ahead of Binance's clock (saved by a skewed clock) and was not trusted; the history was read again from the initial lookback, and deposits inserted before `from` that the poller had not stored are not read",
            ),
            None => (
                "poll.history_start",
                "warning",
                "no checkpoint yet: the deposit history was read from the initial lookback (POLL_INITIAL_LOOKBACK_SECS); deposits inserted before `from` are never read",
            ),
        });
        for window in windows {
            self.fetch_and_store(window, report).await?;
            // The window is complete: the next poll may start from its end (minus the overlap).
            let Some(end) = DateTime::from_timestamp_millis(window.end_ms) else {
                continue;
            };
            match reach.take() {
                // The first checkpoint and the row saying where the history begins commit
                // together: a crash cannot keep one without the other.
                Some((kind, severity, message)) => {
                    let from =
                        DateTime::<Utc>::from_timestamp_millis(poll_start_ms).unwrap_or(server_now);
                    let mut transaction = self.pool.begin().await?;
                    store::save_checkpoint(&mut *transaction, DEPOSITS_CHECKPOINT, end, server_now)
                        .await?;
                    store::record_poll_reach(
                        &mut *transaction,
                        kind,
                        severity,
                        message,
                        serde_json::json!({
                            "from": from.to_rfc3339(),
                            "binance_now": server_now.to_rfc3339(),
                            "stored_checkpoint": ahead.map(|at| at.to_rfc3339()),
                            "initial_lookback_secs": self.settings.initial_lookback.as_secs(),
                        }),
                    )
                    .await?;
                    transaction.commit().await?;
                }
                None => {
                    store::save_checkpoint(&self.pool, DEPOSITS_CHECKPOINT, end, server_now)
                        .await?;
                }
            }
        }
        self.recheck_unresolved(poll_start_ms, report).await
    }

    /// Fetches again the windows of deposits Binance had not finalised and that the poll window
    /// no longer covers, however old they are, a bounded number of windows per cycle (the least
    /// recently re-checked first), so every deposit is re-checked until it is final.
    async fn recheck_unresolved(
        &mut self,
        poll_start_ms: i64,
        report: &mut CycleReport,
    ) -> Result<(), CycleError> {
        let Some(before) = DateTime::<Utc>::from_timestamp_millis(poll_start_ms) else {
            return Ok(());
        };
        let budget = self.settings.recheck_max_requests;
        let unresolved = store::unresolved_before(
            &self.pool,
            before,
            i64::try_from(budget.saturating_mul(200)).unwrap_or(i64::MAX),
        )
        .await?;
        let unresolved: Vec<(i64, i64)> = unresolved
            .into_iter()
            .map(|(id, at)| (id, at.timestamp_millis()))
            .collect();
        for recheck in
            window::recheck_windows(&unresolved, millis(self.settings.recheck_span), budget)
        {
            self.fetch_and_store(recheck.window, report).await?;
            store::mark_rechecked(&self.pool, &recheck.deposit_ids).await?;
            report.rechecked += recheck.deposit_ids.len() as u64;
        }
        Ok(())
    }

    /// Runs one Binance call; a 418/429 is persisted as a back-off before it is returned.
    async fn binance_call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, BinanceError>>,
    ) -> Result<T, CycleError> {
        match call.await {
            Ok(value) => Ok(value),
            Err(error) => {
                if let BinanceError::RateLimited {
                    status,
                    retry_after,
                } = &error
                {
                    store::save_backoff(&self.pool, *retry_after, *status).await?;
                    tracing::warn!(
                        status,
                        retry_after_s = retry_after.as_secs(),
                        "Binance rate limit: backing off (persisted)"
                    );
                }
                Err(error.into())
            }
        }
    }

    /// Fetches one window, parses every row (quarantining what cannot be parsed) and stores the
    /// rest (quarantining what the database refuses).
    async fn fetch_and_store(
        &mut self,
        window: window::Window,
        report: &mut CycleReport,
    ) -> Result<(), CycleError> {
        self.still_leading()?;
        let rows = self.binance_call(self.binance.deposits_in(window)).await?;
        report.fetched += rows.len() as u64;
        let mut deposits = Vec::with_capacity(rows.len());
        for row in &rows {
            match parse_deposit(row) {
                Ok(deposit) => deposits.push(deposit),
                Err(reason) => {
                    report.unparsable += 1;
                    let id = match row.get("id") {
                        Some(serde_json::Value::String(id)) => id.clone(),
                        Some(serde_json::Value::Number(id)) => id.to_string(),
                        _ => String::new(),
                    };
                    if store::quarantine_row(&self.pool, &id, &reason, row).await? {
                        report.quarantined += 1;
                        self.metrics.deposits_quarantined.inc();
                        self.metrics.deposits_errors.inc();
                    }
                }
            }
        }
        self.still_leading()?;
        let stored = store::upsert_deposits(&self.pool, &deposits).await?;
        report.stored += stored.stored;
        report.quarantined += stored.quarantined;
        self.metrics.deposits_quarantined.inc_by(stored.quarantined);
        Ok(())
    }

    /// Cycles every `poll_interval` until shutdown, then releases the lock.
    pub async fn run(mut self, shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            match self.cycle(&shutdown).await {
                Ok(CycleOutcome::Standby) => {
                    tracing::debug!("standby: another replica holds the poller lock")
                }
                Ok(CycleOutcome::Led(report)) => tracing::info!(
                    fetched = report.fetched,
                    stored = report.stored,
                    processed = report.processed,
                    credited = report.credited,
                    recorded = report.recorded,
                    rechecked = report.rechecked,
                    unresolved = report.unresolved,
                    quarantined = report.quarantined,
                    collisions = report.collisions,
                    "cycle complete"
                ),
                Err(error @ CycleError::PoolExhausted { .. }) => {
                    tracing::error!(consecutive_errors = self.consecutive_errors, %error, "cycle failed")
                }
                Err(error) => {
                    tracing::warn!(consecutive_errors = self.consecutive_errors, %error, "cycle failed")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                _ = shutdown.triggered() => {}
            }
        }
        self.shutdown().await;
    }

    /// Releases leadership so a standby takes over immediately.
    pub async fn shutdown(&mut self) {
        self.leadership.release().await;
        self.metrics.is_leader.set(0);
    }
}
