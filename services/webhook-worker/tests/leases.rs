//! Leases and attempts on real Postgres with the merchant sink: one lease owner per claim,
//! results written only under an unexpired lease, attempts charged at claim, suspects (rows whose
//! claim never completed) retried alone and dead-lettered after `max_attempts`, and two pipelines
//! that never hold or send one row twice at once, with the default settings and with leases too
//! short for the load.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser as _;
use common::*;
use problemsolver_stubs::merchant::{Behaviour, Delivery};
use problemsolver_webhook_worker::config::Args;
use problemsolver_webhook_worker::queue::{self, Completion, FinalStatus};
use problemsolver_webhook_worker::worker::{Totals, Worker, WorkerConfig};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, sqlx::FromRow)]
struct LeaseRecord {
    row_id: Uuid,
    owner: String,
    claimed_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
}

impl LeaseRecord {
    /// When the lease stopped being the owner's: given up, or expired, whichever came first.
    fn end_us(&self) -> i64 {
        let expiry = self.expires_at.timestamp_micros();
        self.ended_at
            .map_or(expiry, |ended| ended.timestamp_micros().min(expiry))
    }

    fn expired(&self) -> bool {
        self.ended_at.is_none_or(|ended| ended > self.expires_at)
    }
}

#[derive(Debug)]
struct LeaseReport {
    leases: usize,
    /// Leases that ran out before their owner gave them up.
    expired: usize,
    /// The longest time from a claim to the answer of the last request it sent.
    longest_batch: Duration,
}

/// Checks that no row ever had two leases at once and that every request the sink saw was sent
/// and answered entirely inside a lease of its row (so no pipeline sent a row it no longer held).
async fn check_leases(pool: &PgPool, deliveries: &[Delivery]) -> LeaseReport {
    let records: Vec<LeaseRecord> = sqlx::query_as(
        "SELECT row_id, owner, claimed_at, expires_at, ended_at FROM lease_log ORDER BY row_id, claimed_at",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut by_row: HashMap<Uuid, Vec<&LeaseRecord>> = HashMap::new();
    for record in &records {
        by_row.entry(record.row_id).or_default().push(record);
    }
    for (row, leases) in &by_row {
        for pair in leases.windows(2) {
            assert!(
                pair[0].end_us() <= pair[1].claimed_at.timestamp_micros(),
                "row {row} was held twice at once: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
    }
    let mut last_answer: HashMap<&str, i64> = HashMap::new();
    for delivery in deliveries {
        let id = delivery.webhook_id.as_deref().expect("webhook-id");
        let row = Uuid::parse_str(id.strip_prefix("msg_").expect("msg_ prefix")).unwrap();
        let (arrived, answered) = (
            delivery.arrived_unix_us as i64,
            delivery.answered_unix_us as i64,
        );
        let lease = by_row
            .get(&row)
            .and_then(|leases| {
                leases.iter().find(|lease| {
                    lease.claimed_at.timestamp_micros() <= arrived && answered <= lease.end_us()
                })
            })
            .unwrap_or_else(|| {
                panic!(
                    "the request for {row} ({arrived}..{answered} µs) was not inside a lease of it: {:?}",
                    by_row.get(&row)
                )
            });
        let latest = last_answer.entry(lease.owner.as_str()).or_insert(answered);
        *latest = (*latest).max(answered);
    }
    let claimed: HashMap<&str, i64> = records
        .iter()
        .map(|r| (r.owner.as_str(), r.claimed_at.timestamp_micros()))
        .collect();
    let longest_us = last_answer
        .iter()
        .map(|(owner, answered)| answered - claimed[owner])
        .max()
        .unwrap_or(0);
    LeaseReport {
        leases: records.len(),
        expired: records.iter().filter(|r| r.expired()).count(),
        longest_batch: Duration::from_micros(u64::try_from(longest_us).unwrap_or(0)),
    }
}

/// Runs the worker as in production (idle pipelines keep polling, so they take over any lease
/// that runs out) until every row is delivered or `limit` has passed, then shuts it down.
/// Returns the totals and how many rows were delivered.
async fn drain(worker: &Arc<Worker>, pool: &PgPool, rows: i64, limit: Duration) -> (Totals, i64) {
    let shutdown = CancellationToken::new();
    let running = {
        let worker = Arc::clone(worker);
        let shutdown = shutdown.clone();
        tokio::spawn(async move { worker.run(shutdown, false).await })
    };
    let deadline = tokio::time::Instant::now() + limit;
    let mut delivered = 0;
    while tokio::time::Instant::now() < deadline {
        delivered = count_status(pool, "delivered").await;
        if delivered == rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    (running.await.unwrap(), delivered)
}

#[tokio::test]
async fn every_claim_has_its_own_owner_and_charges_the_attempt_at_once() {
    let db = TestDb::new().await;
    let merchant = merchant(&db.pool, "http://127.0.0.1:9/h").await;
    let ids = enqueue(&db.pool, merchant, 2, 12).await;
    let mut config = config("pod-a");
    config.batch_size = 1;
    let worker = worker(&db.pool, config);

    let (first, rows_a) = worker.claim(0).await.unwrap();
    let (second, rows_b) = worker.claim(1).await.unwrap();

    assert!(first.owner.starts_with("pod-a/p0/"), "{}", first.owner);
    assert!(second.owner.starts_with("pod-a/p1/"), "{}", second.owner);
    assert_ne!(first.owner, second.owner);
    let (again, _) = worker.claim(0).await.unwrap();
    assert_ne!(again.owner, first.owner, "a new owner for every claim");
    assert_eq!((rows_a.len(), rows_b.len()), (1, 1));
    for id in &ids {
        // Charged in the database before anything was sent.
        let row = row(&db.pool, *id).await;
        assert_eq!((row.status.as_str(), row.attempts), ("delivering", 1));
    }
    assert_eq!(rows_a[0].attempts, 1);

    // Put back unsent: the attempt is refunded.
    let written = queue::complete(
        &db.pool,
        &first.owner,
        &[Completion::release(rows_a[0].id, Duration::ZERO)],
    )
    .await
    .unwrap();
    assert_eq!(written.rows, 1);
    let row = row(&db.pool, rows_a[0].id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("pending", 0));
    db.drop_db().await;
}

#[tokio::test]
async fn results_are_written_only_by_the_owner_of_an_unexpired_lease() {
    let db = TestDb::new().await;
    let merchant = merchant(&db.pool, "http://127.0.0.1:9/h").await;
    let id = enqueue(&db.pool, merchant, 1, 12).await[0];
    let delivered = |id| Completion {
        id,
        status: FinalStatus::Delivered,
        attempted: true,
        refund: false,
        retry_in: Duration::ZERO,
        last_error: None,
        status_code: Some(204),
    };

    queue::claim(&db.pool, "pod/p0/a", 10, Duration::from_millis(500))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Expired, not yet taken over: still nothing is written.
    let written = queue::complete(&db.pool, "pod/p0/a", &[delivered(id)])
        .await
        .unwrap();
    assert_eq!(written.rows, 0);
    assert_eq!(row(&db.pool, id).await.status, "delivering");

    // Another pipeline takes it over; the first owner's late result is refused, before and
    // after the new owner finishes it, so the row is finished exactly once.
    let taken = queue::claim(&db.pool, "pod/p1/b", 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert!(taken[0].suspect);
    assert_eq!(taken[0].attempts, 2);
    let stale = queue::complete(&db.pool, "pod/p0/a", &[delivered(id)])
        .await
        .unwrap();
    assert_eq!(stale.rows, 0);
    let mut failed = delivered(id);
    failed.status = FinalStatus::Pending;
    failed.status_code = Some(500);
    failed.retry_in = Duration::from_secs(60);
    assert_eq!(
        queue::complete(&db.pool, "pod/p1/b", &[failed])
            .await
            .unwrap()
            .rows,
        1
    );
    assert_eq!(
        queue::complete(&db.pool, "pod/p0/a", &[delivered(id)])
            .await
            .unwrap()
            .rows,
        0
    );
    let row = row(&db.pool, id).await;
    assert_eq!(
        (row.status.as_str(), row.attempts, row.last_status_code),
        ("pending", 2, Some(500))
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_row_whose_claim_never_completed_is_retried_alone() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    let suspect = enqueue(&db.pool, merchant, 1, 12).await[0];
    queue::claim(&db.pool, "killed/p0/x", 10, Duration::from_millis(300))
        .await
        .unwrap();
    let fresh = enqueue(&db.pool, merchant, 5, 12).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The fresh rows are due earlier than the suspect (which is due at its lease expiry), and
    // the suspect is still claimed alone.
    sqlx::query("UPDATE webhook_queue SET next_attempt_at = now() - interval '1 minute' WHERE status = 'pending'")
        .execute(&db.pool)
        .await
        .unwrap();
    let worker = worker(&db.pool, config("w"));

    let (_, rows) = worker.claim(0).await.unwrap();

    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].id, rows[0].suspect, rows[0].attempts),
        (suspect, true, 2)
    );
    let (_, rest) = worker.claim(0).await.unwrap();
    let mut rest: Vec<_> = rest.iter().map(|r| r.id).collect();
    let mut fresh = fresh;
    rest.sort();
    fresh.sort();
    assert_eq!(rest, fresh, "then the others in one batch");
    db.drop_db().await;
}

#[tokio::test]
async fn a_row_whose_attempts_never_complete_is_dead_after_max_attempts() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    let id = enqueue(&db.pool, merchant, 1, 2).await[0];
    // Two claims whose worker died mid-delivery: each charged an attempt, neither completed.
    for owner in ["killed/p0/1", "killed/p0/2"] {
        let claimed = queue::claim(&db.pool, owner, 10, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(!claimed[0].exhausted);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(row(&db.pool, id).await.attempts, 2);
    let worker = worker(&db.pool, config("w"));

    let totals = worker.run_batch(&CancellationToken::new()).await.unwrap();

    assert_eq!((totals.claimed, totals.dead), (1, 1));
    assert_eq!(sink.summary().received, 0, "not sent a third time");
    let row = row(&db.pool, id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("dead", 2));
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("never completed"),
        "{:?}",
        row.last_error
    );
    assert_eq!(worker.metrics().dead_letters.get(), 1);
    let (message, details): (String, serde_json::Value) = sqlx::query_as(
        "SELECT message, details FROM system_events WHERE kind = 'webhook_dead_lettered' AND severity = 'error'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(message.contains("2 of 2 attempts"), "{message}");
    assert_eq!(details["webhook_id"], id.to_string());
    assert_eq!(details["merchant_id"], merchant.to_string());
    db.drop_db().await;
}

/// The worker's own defaults (only the per-endpoint rate limit is lifted, so the one test
/// merchant can use every delivery slot), a merchant that takes 9 s of the 10 s timeout for every
/// answer, and four batches' worth of rows for the two pipelines: the slots are contended all the
/// way through.
#[tokio::test]
async fn two_pipelines_with_the_default_settings_never_hold_or_send_a_row_twice_at_once() {
    let db = TestDb::new().await;
    log_leases(&db.pool).await;
    let sink = sink().await;
    sink.set_behaviour(Behaviour {
        delay_ms: 9_000,
        ..Behaviour::default()
    });
    let merchant = merchant(&db.pool, &sink.url("/slow")).await;
    let config: WorkerConfig = Args::try_parse_from([
        "problemsolver-webhook-worker",
        "--allow-insecure-targets",
        "true",
        "--endpoint-rps",
        "100000",
    ])
    .unwrap()
    .worker_config()
    .expect("the defaults pass the lease check");
    assert_eq!((config.pipelines, config.concurrency), (2, 64));
    let rows = 4 * config.batch_size;
    enqueue(&db.pool, merchant, rows, 12).await;
    let worst_case = config.batch_worst_case();
    let worker = worker(&db.pool, config);

    let (totals, delivered) = drain(&worker, &db.pool, rows, Duration::from_secs(120)).await;

    let summary = sink.summary();
    assert_eq!(
        summary.max_in_flight_per_id, 1,
        "a webhook was delivered twice at once"
    );
    let report = check_leases(&db.pool, &sink.deliveries()).await;
    assert_eq!(delivered, rows, "{totals:?}");
    assert_eq!((summary.accepted, summary.duplicates), (rows as u64, 0));
    assert_eq!(totals.lease_expiring, 0, "{totals:?}");
    assert_eq!(report.expired, 0, "{report:?}");
    assert_eq!(report.leases, rows as usize);
    assert!(
        report.longest_batch <= worst_case,
        "a batch took {:?}, longer than the worst case the lease check assumes ({worst_case:?})",
        report.longest_batch
    );
    let attempts: i64 = sqlx::query_scalar("SELECT sum(attempts) FROM webhook_queue")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, rows);
    db.drop_db().await;
}

/// Leases far too short for the load (the configuration check would refuse this: it is built
/// directly): rows that can no longer be answered inside their lease are put back unsent and
/// picked up again, never sent while another pipeline holds them.
#[tokio::test]
async fn with_leases_too_short_for_the_load_rows_are_put_back_never_sent_twice_at_once() {
    let db = TestDb::new().await;
    log_leases(&db.pool).await;
    let sink = sink().await;
    sink.set_behaviour(Behaviour {
        delay_ms: 700,
        ..Behaviour::default()
    });
    let merchant = merchant(&db.pool, &sink.url("/slow")).await;
    let mut config = config("tight");
    config.pipelines = 2;
    config.concurrency = 8;
    config.batch_size = 64;
    config.lease = Duration::from_secs(4);
    config.client.request_timeout = Duration::from_secs(1);
    assert!(config.required_lease() > config.lease * 4);
    let rows = 72;
    enqueue(&db.pool, merchant, rows, 12).await;
    let worker = worker(&db.pool, config);

    let (totals, delivered) = drain(&worker, &db.pool, rows, Duration::from_secs(60)).await;

    let summary = sink.summary();
    assert_eq!(
        summary.max_in_flight_per_id, 1,
        "a webhook was delivered twice at once"
    );
    let report = check_leases(&db.pool, &sink.deliveries()).await;
    assert_eq!(delivered, rows, "{totals:?}");
    assert_eq!((summary.accepted, summary.duplicates), (rows as u64, 0));
    assert_eq!(report.expired, 0, "{report:?}");
    assert!(
        totals.lease_expiring > 0 && report.leases > rows as usize,
        "the leases were not under pressure: {totals:?} {report:?}"
    );
    // Rows put back unsent were refunded: one attempt each.
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT DISTINCT attempts FROM webhook_queue")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, vec![1]);
    db.drop_db().await;
}
