//! The poll-and-match cycle and the long-running loop: leadership first, then (leader only)
//! fetch Binance windows into deposit_raw, advance the checkpoint, count new allocation
//! collisions, and drain the matching backlog in batches; metrics and readiness follow each step.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::DateTime;
use problemsolver_core::http::{Readiness, Shutdown};
use sqlx::PgPool;

use crate::binance::{BinanceClient, BinanceError, parse_deposit};
use crate::config::Settings;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::store::{self, DEPOSITS_CHECKPOINT, MatchOutcome};
use crate::window;

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error("database unreachable: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Binance(#[from] BinanceError),
    #[error("Binance asked us to back off; {0:?} left")]
    BackingOff(Duration),
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
    backoff_until: Option<Instant>,
    /// Highest credited `deposit_raw.id` reconciled so far (0: start from the oldest).
    reconciled_through: i64,
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
            backoff_until: None,
            reconciled_through: 0,
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
            self.readiness
                .set_not_ready("database unreachable from the pool");
        }
        if !leader {
            return Ok(CycleOutcome::Standby);
        }
        let started = Instant::now();
        let mut report = CycleReport::default();
        let result = self.lead(&mut report, shutdown).await;
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

    async fn lead(
        &mut self,
        report: &mut CycleReport,
        shutdown: &Shutdown,
    ) -> Result<(), CycleError> {
        // Matching runs even when Binance is failing: deposits inserted directly (smoke tests)
        // or fetched earlier still get credited.
        let poll_result = self.poll_binance(report).await;
        report.collisions =
            store::count_new_collisions(&self.pool, self.settings.collision_settle).await?;
        self.metrics.collisions.inc_by(report.collisions);
        loop {
            let MatchOutcome {
                processed,
                credited,
            } = store::match_batch(&self.pool, self.settings.match_batch_size).await?;
            report.processed += processed;
            report.credited += credited;
            self.metrics.deposits_processed.inc_by(processed);
            if i64::try_from(processed).unwrap_or(i64::MAX) < self.settings.match_batch_size
                || shutdown.is_triggered()
            {
                break;
            }
        }
        self.reconcile(report).await?;
        poll_result
    }

    /// Checks the deposits credited since the last pass (the whole history, a batch per
    /// cycle, after a restart) and counts what does not add up.
    async fn reconcile(&mut self, report: &mut CycleReport) -> Result<(), CycleError> {
        let outcome = store::reconcile_after(
            &self.pool,
            self.reconciled_through,
            self.settings.match_batch_size,
        )
        .await?;
        self.reconciled_through = outcome.last_id;
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
                "reconciliation: credited deposits whose payment, ledger credit, invoice or webhook row do not add up"
            );
        }
        Ok(())
    }

    async fn poll_binance(&mut self, report: &mut CycleReport) -> Result<(), CycleError> {
        if let Some(until) = self.backoff_until {
            let now = Instant::now();
            if now < until {
                return Err(CycleError::BackingOff(until - now));
            }
            self.backoff_until = None;
        }
        let checkpoint = store::load_checkpoint(&self.pool, DEPOSITS_CHECKPOINT).await?;
        let windows = window::plan(
            checkpoint.map(|c| c.timestamp_millis()),
            self.binance.server_now_ms(),
            millis(self.settings.overlap),
            millis(self.settings.initial_lookback),
        );
        for window in windows {
            let rows = match self.binance.deposits_in(window).await {
                Ok(rows) => rows,
                Err(error) => {
                    if let BinanceError::RateLimited { retry_after, .. } = &error {
                        self.backoff_until = Some(Instant::now() + *retry_after);
                    }
                    return Err(error.into());
                }
            };
            report.fetched += rows.len() as u64;
            let mut deposits = Vec::with_capacity(rows.len());
            for row in &rows {
                match parse_deposit(row) {
                    Ok(deposit) => deposits.push(deposit),
                    Err(reason) => {
                        report.unparsable += 1;
                        self.metrics.deposits_errors.inc();
                        let id = row.get("id").map(ToString::to_string).unwrap_or_default();
                        tracing::error!(binance_id = %id, %reason, "skipping a deposit Binance sent that cannot be parsed");
                    }
                }
            }
            report.stored += store::upsert_deposits(&self.pool, &deposits).await?;
            // The window is complete: the next poll may start from its end (minus the overlap).
            if let Some(end) = DateTime::from_timestamp_millis(window.end_ms) {
                store::save_checkpoint(&self.pool, DEPOSITS_CHECKPOINT, end).await?;
            }
        }
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
                    collisions = report.collisions,
                    "cycle complete"
                ),
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
