//! Delivery behaviour against real Postgres (own database per test) and the merchant sink.

mod common;

use std::time::Duration;

use common::*;
use problemsolver_stubs::merchant::Behaviour;
use problemsolver_webhook_worker::queue;
use problemsolver_webhook_worker::ssrf::TargetPolicy;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn delivers_signed_webhooks_that_an_independent_verifier_accepts() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/hooks/paid")).await;
    let ids = enqueue(&db.pool, merchant, 3, 12).await;
    let worker = worker(&db.pool, config("w1"));

    let totals = worker.run(CancellationToken::new(), true).await;

    assert_eq!(totals.delivered, 3);
    let summary = sink.summary();
    assert_eq!(
        (summary.accepted, summary.unverified, summary.duplicates),
        (3, 0, 0)
    );
    for delivery in sink.deliveries() {
        assert!(delivery.verified, "{:?}", delivery.verify_error);
        assert_eq!(delivery.path, "/hooks/paid");
        let body: serde_json::Value = serde_json::from_str(&delivery.body).unwrap();
        assert_eq!(body["type"], "invoice.paid");
        assert_eq!(body["data"]["amount"], "0.009998");
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    for id in ids {
        let row = row(&db.pool, id).await;
        assert_eq!(
            (row.status.as_str(), row.attempts, row.last_status_code),
            ("delivered", 1, Some(204))
        );
        assert_eq!(row.lease_owner, None);
        let expected_id = format!("msg_{}", id.simple());
        assert_eq!(sink.accepted_count(&expected_id), 1);
    }
    assert_eq!(worker.metrics().attempts(true), 3);
    db.drop_db().await;
}

#[tokio::test]
async fn a_payload_that_is_already_an_envelope_is_sent_unchanged() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    let envelope = serde_json::json!({
        "type": "invoice.paid",
        "timestamp": "2026-11-23T10:00:00.000000Z",
        "data": {"invoice_id": "i-1", "amount": "0.009998"}
    });
    sqlx::query("INSERT INTO webhook_queue (merchant_id, event_type, payload) VALUES ($1, 'invoice.paid', $2)")
        .bind(merchant)
        .bind(&envelope)
        .execute(&db.pool)
        .await
        .unwrap();
    let worker = worker(&db.pool, config("w1"));

    worker.run_batch(&CancellationToken::new()).await.unwrap();

    let deliveries = sink.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert!(deliveries[0].verified);
    let body: serde_json::Value = serde_json::from_str(&deliveries[0].body).unwrap();
    assert_eq!(body, envelope);
    db.drop_db().await;
}

#[tokio::test]
async fn failures_retry_with_backoff_and_keep_the_webhook_id() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    let id = enqueue(&db.pool, merchant, 1, 12).await[0];
    let worker = worker(&db.pool, config("w1"));
    sink.set_behaviour(Behaviour {
        fail_rate: 1.0,
        status: 503,
        ..Behaviour::default()
    });

    worker.run_batch(&CancellationToken::new()).await.unwrap();
    let first = row(&db.pool, id).await;
    assert_eq!(
        (
            first.status.as_str(),
            first.attempts,
            first.last_status_code
        ),
        ("pending", 1, Some(503))
    );
    assert_eq!(
        first.last_error.as_deref(),
        Some("HTTP 503 Service Unavailable")
    );
    // Base 10 s with equal jitter: due in [5, 10] s.
    assert!(
        (4.0..=10.5).contains(&first.due_in),
        "due in {}",
        first.due_in
    );
    // Not due yet: nothing is claimed.
    assert_eq!(
        worker
            .run_batch(&CancellationToken::new())
            .await
            .unwrap()
            .claimed,
        0
    );

    make_due(&db.pool).await;
    worker.run_batch(&CancellationToken::new()).await.unwrap();
    let second = row(&db.pool, id).await;
    assert_eq!(second.attempts, 2);
    // Second failure: [10, 20] s.
    assert!(
        (9.0..=20.5).contains(&second.due_in),
        "due in {}",
        second.due_in
    );

    sink.set_behaviour(Behaviour::default());
    make_due(&db.pool).await;
    worker.run_batch(&CancellationToken::new()).await.unwrap();
    let done = row(&db.pool, id).await;
    assert_eq!(
        (done.status.as_str(), done.attempts, done.last_error),
        ("delivered", 3, None)
    );
    let ids: Vec<_> = sink
        .deliveries()
        .into_iter()
        .map(|d| d.webhook_id.unwrap())
        .collect();
    assert_eq!(ids, vec![format!("msg_{}", id.simple()); 3]);
    assert_eq!(worker.metrics().attempts(false), 2);
    db.drop_db().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    let id = enqueue(&db.pool, merchant, 1, 12).await[0];
    let worker = worker(&db.pool, config("w1"));
    sink.set_behaviour(Behaviour {
        fail_rate: 1.0,
        status: 429,
        retry_after: Some("120".to_owned()),
        ..Behaviour::default()
    });

    worker.run_batch(&CancellationToken::new()).await.unwrap();
    let row = row(&db.pool, id).await;
    assert_eq!(
        (row.status.as_str(), row.last_status_code),
        ("pending", Some(429))
    );
    assert!(
        (119.0..=121.0).contains(&row.due_in),
        "due in {}",
        row.due_in
    );
    db.drop_db().await;
}

#[tokio::test]
async fn exhausted_attempts_mark_the_row_dead() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    let id = enqueue(&db.pool, merchant, 1, 2).await[0];
    let worker = worker(&db.pool, config("w1"));
    sink.set_behaviour(Behaviour {
        fail_rate: 1.0,
        ..Behaviour::default()
    });

    worker.run_batch(&CancellationToken::new()).await.unwrap();
    make_due(&db.pool).await;
    let totals = worker.run_batch(&CancellationToken::new()).await.unwrap();

    assert_eq!(totals.dead, 1);
    let row = row(&db.pool, id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("dead", 2));
    assert_eq!(worker.metrics().dead_letters.get(), 1);
    let (events, details): (i64, serde_json::Value) = sqlx::query_as(
        "SELECT count(*), max(details::text)::jsonb FROM system_events WHERE kind = 'webhook_dead_lettered'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(events, 1);
    assert_eq!(details["webhook_id"], id.to_string());
    assert_eq!(details["attempts"], 2);
    assert_eq!(details["last_status_code"], 500);
    make_due(&db.pool).await;
    assert_eq!(
        worker
            .run_batch(&CancellationToken::new())
            .await
            .unwrap()
            .claimed,
        0
    );
    assert_eq!(sink.summary().received, 2);
    db.drop_db().await;
}

#[tokio::test]
async fn gone_disables_the_merchant_endpoint_and_its_queue() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    let other_sink = common::sink().await;
    let other = common::merchant(&db.pool, &other_sink.url("/h")).await;
    enqueue(&db.pool, merchant, 5, 12).await;
    enqueue(&db.pool, other, 2, 12).await;
    sink.set_behaviour(Behaviour {
        fail_rate: 1.0,
        status: 410,
        ..Behaviour::default()
    });
    let mut config = config("w1");
    config.batch_size = 1;
    config.concurrency = 1;
    let worker = worker(&db.pool, config);

    worker.run(CancellationToken::new(), true).await;

    assert_eq!(
        sink.summary().received,
        1,
        "one 410 is enough to stop delivering"
    );
    let (enabled, reason): (bool, Option<String>) = sqlx::query_as(
        "SELECT webhook_enabled, webhook_disabled_reason FROM merchants WHERE id = $1",
    )
    .bind(merchant)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!enabled);
    assert!(reason.unwrap().contains("410"));
    assert_eq!(count_status(&db.pool, "disabled").await, 5);
    assert_eq!(count_status(&db.pool, "delivered").await, 2);
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM system_events WHERE kind = 'merchant_webhook_disabled'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(events, 1);
    db.drop_db().await;
}

#[tokio::test]
async fn redirects_are_failures_and_are_not_followed() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    let id = enqueue(&db.pool, merchant, 1, 12).await[0];
    sink.set_behaviour(Behaviour {
        fail_rate: 1.0,
        status: 301,
        location: Some(sink.url("/elsewhere")),
        ..Behaviour::default()
    });
    let worker = worker(&db.pool, config("w1"));

    worker.run_batch(&CancellationToken::new()).await.unwrap();

    let deliveries = sink.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].path, "/h");
    let row = row(&db.pool, id).await;
    assert_eq!(
        (row.status.as_str(), row.last_status_code),
        ("pending", Some(301))
    );
    assert!(row.last_error.unwrap().contains("not followed"));
    db.drop_db().await;
}

#[tokio::test]
async fn ssrf_guard_refuses_non_public_targets_before_connecting() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let port = sink.addr().port();
    let targets = [
        (
            format!("https://127.0.0.1:{port}/h"),
            "not public (loopback)",
        ),
        (
            format!("https://localhost:{port}/h"),
            "not public (loopback)",
        ),
        (
            "https://169.254.169.254/latest/meta-data".to_owned(),
            "link-local",
        ),
        (
            "https://[::ffff:10.0.0.1]/h".to_owned(),
            "not public (private)",
        ),
        ("https://100.64.1.1/h".to_owned(), "carrier-grade NAT"),
        (sink.url("/h"), "only https is allowed"),
    ];
    let mut rows = Vec::new();
    for (url, expected) in &targets {
        let merchant = merchant(&db.pool, url).await;
        rows.push((enqueue(&db.pool, merchant, 1, 12).await[0], url, *expected));
    }
    let mut config = config("w1");
    config.client.policy = TargetPolicy::PublicHttpsOnly;
    let worker = worker(&db.pool, config);

    worker.run_batch(&CancellationToken::new()).await.unwrap();

    assert_eq!(sink.summary().received, 0);
    for (id, url, expected) in rows {
        let row = row(&db.pool, id).await;
        let error = row.last_error.unwrap_or_default();
        assert!(error.starts_with("target refused: "), "{url}: {error}");
        assert!(error.contains(expected), "{url}: {error}");
        assert_eq!(
            (row.status.as_str(), row.attempts, row.last_status_code),
            ("pending", 1, None)
        );
    }
    db.drop_db().await;
}

#[tokio::test]
async fn a_dead_workers_lease_expires_and_the_row_is_delivered() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    let ids = enqueue(&db.pool, merchant, 3, 12).await;
    // A worker claims the rows and dies without completing them.
    let claimed = queue::claim(&db.pool, "dead-worker", 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let worker = worker(&db.pool, config("w2"));

    assert_eq!(
        worker
            .run_batch(&CancellationToken::new())
            .await
            .unwrap()
            .claimed,
        0,
        "leases still held"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Rows whose claim never completed are suspects: each is retried in a batch of its own.
    let totals = worker.run_batch(&CancellationToken::new()).await.unwrap();
    assert_eq!((totals.claimed, totals.delivered), (1, 1));
    let totals = worker.run(CancellationToken::new(), true).await;

    assert_eq!(totals.delivered, 2);
    for id in &ids {
        let row = row(&db.pool, *id).await;
        // One attempt charged to the dead worker's claim, one to the delivery.
        assert_eq!((row.status.as_str(), row.attempts), ("delivered", 2));
    }
    // The dead worker coming back cannot overwrite the results.
    let stale: Vec<_> = claimed
        .iter()
        .map(|c| queue::Completion::release(c.id, Duration::ZERO))
        .collect();
    assert_eq!(
        queue::complete(&db.pool, "dead-worker", &stale)
            .await
            .unwrap()
            .rows,
        0
    );
    assert_eq!(count_status(&db.pool, "delivered").await, 3);
    db.drop_db().await;
}

#[tokio::test]
async fn circuit_breaker_opens_then_half_opens_with_one_probe() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    enqueue(&db.pool, merchant, 10, 12).await;
    sink.set_behaviour(Behaviour {
        fail_rate: 1.0,
        status: 500,
        ..Behaviour::default()
    });
    let mut config = config("w1");
    config.concurrency = 1;
    config.breaker.failure_threshold = 3;
    config.breaker.open_for = Duration::from_millis(800);
    let worker = worker(&db.pool, config);

    let totals = worker.run_batch(&CancellationToken::new()).await.unwrap();

    assert_eq!(
        sink.summary().received,
        3,
        "the breaker stops calls after 3 failures"
    );
    assert_eq!((totals.failed, totals.released), (3, 7));
    assert_eq!(worker.metrics().breaker_opens.get(), 1);
    let untouched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_queue WHERE attempts = 0 AND status = 'pending'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        untouched, 7,
        "rows held back by the breaker are not charged an attempt"
    );

    // Still open: everything made due is held back without a call.
    make_due(&db.pool).await;
    worker.run_batch(&CancellationToken::new()).await.unwrap();
    assert_eq!(sink.summary().received, 3);

    // Half-open: the probe fails, the breaker opens again.
    tokio::time::sleep(Duration::from_millis(900)).await;
    make_due(&db.pool).await;
    worker.run_batch(&CancellationToken::new()).await.unwrap();
    assert_eq!(
        sink.summary().received,
        4,
        "exactly one probe while half-open"
    );
    assert_eq!(worker.metrics().breaker_opens.get(), 2);

    // Half-open again, the merchant has recovered: the probe closes the breaker and the rest flows.
    sink.set_behaviour(Behaviour::default());
    tokio::time::sleep(Duration::from_millis(900)).await;
    make_due(&db.pool).await;
    worker.run_batch(&CancellationToken::new()).await.unwrap();
    make_due(&db.pool).await;
    worker.run(CancellationToken::new(), true).await;
    assert_eq!(count_status(&db.pool, "delivered").await, 10);
    db.drop_db().await;
}

#[tokio::test]
async fn per_endpoint_rate_limit_defers_without_charging_attempts() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    enqueue(&db.pool, merchant, 25, 12).await;
    let mut config = config("w1");
    config.per_endpoint_rps = std::num::NonZeroU32::new(10).unwrap();
    let worker = worker(&db.pool, config);

    let totals = worker.run_batch(&CancellationToken::new()).await.unwrap();

    assert_eq!((totals.delivered, totals.released), (10, 15));
    assert_eq!(sink.summary().received, 10);
    let charged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_queue WHERE status = 'pending' AND attempts > 0",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(charged, 0);
    // The 15 held back are spread at the merchant's rate (10/s), not all due at once.
    let latest: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(next_attempt_at) - now())::float8 FROM webhook_queue WHERE status = 'pending'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        (1.2..=2.0).contains(&latest),
        "last deferred row due in {latest} s"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn two_workers_never_deliver_the_same_row_twice() {
    let db = TestDb::new().await;
    let sink = sink().await;
    sink.set_recording(false);
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    enqueue(&db.pool, merchant, 2000, 12).await;
    let mut first = config("w1");
    first.batch_size = 50;
    first.pipelines = 2;
    let mut second = first.clone();
    second.worker_id = "w2".to_owned();
    let (a, b) = (worker(&db.pool, first), worker(&db.pool, second));

    let (ta, tb) = tokio::join!(
        a.run(CancellationToken::new(), true),
        b.run(CancellationToken::new(), true)
    );

    assert!(
        ta.delivered > 0 && tb.delivered > 0,
        "both workers took part: {ta:?} {tb:?}"
    );
    assert_eq!(ta.delivered + tb.delivered, 2000);
    let summary = sink.summary();
    assert_eq!((summary.accepted, summary.duplicates), (2000, 0));
    assert_eq!(count_status(&db.pool, "delivered").await, 2000);
    db.drop_db().await;
}

#[tokio::test]
async fn shutdown_releases_claimed_rows_that_were_not_attempted() {
    let db = TestDb::new().await;
    let sink = sink().await;
    let merchant = merchant(&db.pool, &sink.url("/h")).await;
    enqueue(&db.pool, merchant, 5, 12).await;
    let worker = worker(&db.pool, config("w1"));
    let shutdown = CancellationToken::new();
    shutdown.cancel();

    let totals = worker.run_batch(&shutdown).await.unwrap();

    assert_eq!((totals.claimed, totals.released), (5, 5));
    assert_eq!(sink.summary().received, 0);
    let released: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_queue
         WHERE status = 'pending' AND attempts = 0 AND lease_owner IS NULL AND next_attempt_at <= now()",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        released, 5,
        "released rows are immediately due for another worker"
    );
    db.drop_db().await;
}
