//! Poller integration tests: real Postgres (a fresh database per test) and the Binance stub.

use std::time::Duration;

use problemsolver_core::Secret;
use problemsolver_core::crypto::MasterKey;
use problemsolver_core::invoice::{NewInvoice, create_invoice};
use problemsolver_core::money::Decimal;
use problemsolver_core::testing::TestDb;
use problemsolver_poller::binance::{BinanceClient, BinanceError};
use problemsolver_poller::config::Settings;
use problemsolver_poller::leader::POLLER_LOCK_KEY;
use problemsolver_poller::service::{CycleError, CycleOutcome};
use problemsolver_poller::window::Window;
use problemsolver_stubs::binance::{Fault, StubDeposit};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

mod support;
use support::*;

#[tokio::test]
async fn full_flow_credits_invoice_once_and_queues_webhook() {
    let mut h = harness("flow", settings()).await;
    let merchant_id = merchant(&h.db.pool).await;
    let invoice = invoice(&h.db.pool, merchant_id, "10.5").await;
    assert_eq!(invoice.publish_amount, dec("10.5"));
    // Binance pads amounts; numeric comparison must still match.
    h.stub.push_deposit(deposit("9001", "10.50000000"));

    let report = led(&mut h).await;
    assert_eq!(
        (
            report.fetched,
            report.stored,
            report.processed,
            report.credited
        ),
        (1, 1, 1, 1)
    );

    let pool = &h.db.pool.clone();
    let (status, paid_at_set): (String, bool) =
        sqlx::query_as("SELECT status, paid_at IS NOT NULL FROM invoices WHERE id = $1")
            .bind(invoice.id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), paid_at_set), ("paid", true));
    let (payment_amount, payment_tx): (Decimal, String) =
        sqlx::query_as("SELECT amount, tx_id FROM payments WHERE invoice_id = $1")
            .bind(invoice.id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        (payment_amount, payment_tx.as_str()),
        (dec("10.5"), "0x9001")
    );
    let (entry_type, change): (String, Decimal) = sqlx::query_as(
        "SELECT entry_type, change_amount FROM ledger_entries WHERE invoice_id = $1",
    )
    .bind(invoice.id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((entry_type.as_str(), change), ("credit", dec("10.5")));
    let (event, status, payload): (String, String, serde_json::Value) = sqlx::query_as(
        "SELECT event_type, status, payload FROM webhook_queue WHERE invoice_id = $1",
    )
    .bind(invoice.id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (event.as_str(), status.as_str()),
        ("invoice.paid", "pending")
    );
    assert_eq!(payload["type"], "invoice.paid");
    assert_eq!(payload["data"]["invoice_id"], invoice.id.to_string());
    assert_eq!(payload["data"]["amount"], "10.5");
    assert_eq!(payload["data"]["tx_id"], "0x9001");
    let matched: Option<Uuid> = sqlx::query_scalar(
        "SELECT matched_invoice_id FROM deposit_raw WHERE binance_deposit_id = '9001'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(matched, Some(invoice.id));

    assert_eq!(h.metrics.deposits_processed.get(), 1);
    assert!(h.metrics.last_success_unixtime.get() > 0);
    assert_eq!(h.metrics.is_leader.get(), 1);
    assert_eq!(h.readiness.state(), Ok(()));

    // Re-running (same history fetched again thanks to the overlap) never double-credits.
    let again = led(&mut h).await;
    assert_eq!(
        (again.fetched, again.stored, again.processed, again.credited),
        (1, 0, 0, 0)
    );
    assert_eq!(count(pool, "SELECT count(*) FROM payments").await, 1);
    assert_eq!(count(pool, "SELECT count(*) FROM ledger_entries").await, 1);
    assert_eq!(count(pool, "SELECT count(*) FROM webhook_queue").await, 1);
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn reconciliation_counts_credited_deposits_and_finds_records_changed_behind_its_back() {
    let mut h = harness("reconcile", settings()).await;
    let merchant_id = merchant(&h.db.pool).await;
    let first = invoice(&h.db.pool, merchant_id, "7").await;
    invoice(&h.db.pool, merchant_id, "8").await;
    h.stub.push_deposit(deposit("7001", "7"));
    h.stub.push_deposit(deposit("7002", "8"));
    let report = led(&mut h).await;
    assert_eq!(
        (report.credited, report.reconciled, report.mismatches),
        (2, 2, 0)
    );
    assert_eq!(h.metrics.reconciliation_checked.get(), 2);
    assert_eq!(h.metrics.reconciliation_mismatches.get(), 0);
    // Incremental: the next cycle has nothing new to check.
    let again = led(&mut h).await;
    assert_eq!((again.reconciled, again.mismatches), (0, 0));

    // Someone deletes the first invoice's webhook row: a restarted poller (which reconciles
    // the history from the start) counts exactly that deposit as a mismatch.
    sqlx::query("DELETE FROM webhook_queue WHERE invoice_id = $1")
        .bind(first.id)
        .execute(&h.db.pool)
        .await
        .unwrap();
    h.poller.shutdown().await;
    let (poller, metrics, _, _) = poller_for(&h.db, &h.stub.base_url(), settings());
    h.poller = poller;
    let report = led(&mut h).await;
    assert_eq!((report.reconciled, report.mismatches), (2, 1));
    assert_eq!(metrics.reconciliation_mismatches.get(), 1);
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn second_deposit_for_a_paid_invoice_is_recorded_not_credited() {
    let mut h = harness("dup", settings()).await;
    let merchant_id = merchant(&h.db.pool).await;
    invoice(&h.db.pool, merchant_id, "3").await;
    h.stub.push_deposit(deposit("1", "3.00000000"));
    h.stub.push_deposit(deposit("2", "3.00000000"));
    let report = led(&mut h).await;
    assert_eq!((report.processed, report.credited), (2, 1));
    let pool = &h.db.pool.clone();
    assert_eq!(count(pool, "SELECT count(*) FROM payments").await, 1);
    assert_eq!(count(pool, "SELECT count(*) FROM ledger_entries").await, 1);
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM system_events WHERE kind = 'deposit.duplicate'"
        )
        .await,
        1,
        "the second payment is recorded as a duplicate for a refund"
    );
    let outcomes: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT outcome, related_invoice_id::text FROM deposit_raw ORDER BY binance_deposit_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(outcomes[1].0, "duplicate");
    assert!(
        outcomes[1].1.is_some(),
        "the duplicate names the invoice it was meant for"
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn directly_inserted_deposits_are_matched_too() {
    let mut h = harness("direct", settings()).await;
    let merchant_id = merchant(&h.db.pool).await;
    let invoice = invoice(&h.db.pool, merchant_id, "0.009998").await;
    sqlx::query(
        "INSERT INTO deposit_raw (binance_deposit_id, tx_id, coin, network, address, amount, binance_status, insert_time, is_smoke)
         VALUES ('smoke-1', 'smoke-tx', 'USDT', $1, $2, '0.00999800', 1, now(), true)",
    )
    .bind(NETWORK)
    .bind(ADDRESS)
    .execute(&h.db.pool)
    .await
    .unwrap();
    let report = led(&mut h).await;
    assert_eq!(report.credited, 1);
    let status: String = sqlx::query_scalar("SELECT status FROM invoices WHERE id = $1")
        .bind(invoice.id)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "paid");
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn pending_and_rejected_deposits_are_recorded_but_not_credited_until_success() {
    let mut h = harness("pending", settings()).await;
    let merchant_id = merchant(&h.db.pool).await;
    let first = invoice(&h.db.pool, merchant_id, "5").await;
    let second = invoice(&h.db.pool, merchant_id, "6").await;
    h.stub.push_deposit(deposit("p", "5").with_status(0));
    h.stub.push_deposit(deposit("r", "6").with_status(7));
    let report = led(&mut h).await;
    assert_eq!((report.stored, report.credited), (2, 0));
    let pool = &h.db.pool.clone();
    assert_eq!(count(pool, "SELECT count(*) FROM deposit_raw").await, 2);
    assert_eq!(count(pool, "SELECT count(*) FROM payments").await, 0);
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM invoices WHERE status = 'pending'"
        )
        .await,
        2
    );

    // Binance later reports the pending one as successful: now it is credited.
    assert!(h.stub.set_deposit_status("p", 1));
    let report = led(&mut h).await;
    assert_eq!((report.stored, report.credited), (1, 1));
    let statuses: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM invoices ORDER BY base_amount")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        vec![
            (first.id, "paid".to_owned()),
            (second.id, "pending".to_owned())
        ]
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn ledger_and_audit_are_append_only() {
    let mut h = harness("appendonly", settings()).await;
    let merchant_id = merchant(&h.db.pool).await;
    invoice(&h.db.pool, merchant_id, "1").await;
    h.stub.push_deposit(deposit("a", "1"));
    led(&mut h).await;
    let pool = &h.db.pool.clone();
    for statement in [
        "UPDATE ledger_entries SET change_amount = 0",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries CASCADE",
    ] {
        let error = sqlx::query(statement)
            .execute(pool)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ledger_entries is append-only"),
            "{statement}: {error}"
        );
    }
    sqlx::query("INSERT INTO ops_audit (os_user, action, outcome, hash) VALUES ('op', 'deploy', 'ok', '\\x01')")
        .execute(pool)
        .await
        .unwrap();
    let error = sqlx::query("UPDATE ops_audit SET outcome = 'forged'")
        .execute(pool)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("ops_audit is append-only"), "{error}");
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM ledger_entries WHERE change_amount = 1"
        )
        .await,
        1
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn concurrent_invoice_creation_never_shares_a_publish_amount_and_collisions_are_counted() {
    let mut h = harness("concurrent", settings()).await;
    let merchant_id = merchant(&h.db.pool).await;
    let pool = h.db.pool.clone();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { invoice(&pool, merchant_id, "20").await })
        })
        .collect();
    let mut amounts = Vec::new();
    let mut collisions = 0u64;
    for task in tasks {
        let invoice = task.await.unwrap();
        amounts.push(invoice.publish_amount);
        collisions += invoice.allocation_collisions as u64;
    }
    amounts.sort();
    amounts.dedup();
    assert_eq!(
        amounts.len(),
        50,
        "every pending invoice on one address has its own publish_amount"
    );
    assert_eq!(amounts[0], dec("20"));
    assert_eq!(amounts[49], dec("20.0049"));
    assert_eq!(collisions, (0..50).sum::<u64>());

    let report = led(&mut h).await;
    assert_eq!(report.collisions, collisions);
    assert_eq!(h.metrics.collisions.get(), collisions);
    // Seen once: a second cycle adds nothing.
    assert_eq!(led(&mut h).await.collisions, 0);
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn standby_stays_ready_and_idle_until_the_leader_goes() {
    let mut h = harness("standby", settings()).await;
    let merchant_id = merchant(&h.db.pool).await;
    invoice(&h.db.pool, merchant_id, "2").await;
    h.stub.push_deposit(deposit("s", "2"));
    // Another replica (here: a plain session) holds the lock.
    let mut other = PgConnection::connect(h.db.url().expose()).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(POLLER_LOCK_KEY)
        .execute(&mut other)
        .await
        .unwrap();

    let outcome = h.poller.cycle(&h.shutdown).await.unwrap();
    assert_eq!(outcome, CycleOutcome::Standby);
    assert_eq!(h.metrics.is_leader.get(), 0);
    assert_eq!(h.readiness.state(), Ok(()), "a standby is ready");
    assert!(
        h.stub.requests().is_empty(),
        "a standby never calls Binance"
    );
    assert_eq!(count(&h.db.pool, "SELECT count(*) FROM payments").await, 0);

    // The leader dies: its session ends and the standby takes over on its next cycle.
    // Postgres frees the lock when it notices the session ended, a moment after the client
    // closes; the real loop simply tries again next interval, and so does this test.
    other.close().await.unwrap();
    let mut report = None;
    for _ in 0..100 {
        match h.poller.cycle(&h.shutdown).await.unwrap() {
            CycleOutcome::Led(led) => {
                report = Some(led);
                break;
            }
            CycleOutcome::Standby => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(report.expect("the standby took over").credited, 1);
    assert_eq!(h.metrics.is_leader.get(), 1);
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn signatures_and_api_keys_are_verified() {
    let stub = stub().await;
    let window = Window {
        start_ms: now_ms() - 60_000,
        end_ms: now_ms(),
    };
    let bad_secret = BinanceClient::new(
        &stub.base_url(),
        Secret::new(API_KEY.to_owned()),
        Secret::new("wrong".to_owned()),
        5000,
    )
    .unwrap();
    match bad_secret.deposit_page(window, 0).await {
        Err(BinanceError::Api {
            status: 401,
            code: -1022,
            ..
        }) => {}
        other => panic!("expected -1022, got {other:?}"),
    }
    let bad_key = BinanceClient::new(
        &stub.base_url(),
        Secret::new("nope".to_owned()),
        Secret::new(API_SECRET.to_owned()),
        5000,
    )
    .unwrap();
    match bad_key.deposit_page(window, 0).await {
        Err(BinanceError::Api {
            status: 401,
            code: -2015,
            ..
        }) => {}
        other => panic!("expected -2015, got {other:?}"),
    }
    let good = BinanceClient::new(
        &stub.base_url(),
        Secret::new(API_KEY.to_owned()),
        Secret::new(API_SECRET.to_owned()),
        5000,
    )
    .unwrap();
    assert_eq!(
        good.deposit_page(window, 0).await.unwrap(),
        Vec::<serde_json::Value>::new()
    );
    let query = &stub.requests()[2].query;
    assert!(
        query.contains("recvWindow=5000")
            && query.contains("&timestamp=")
            && query.contains("&signature="),
        "{query}"
    );
}

#[tokio::test]
async fn pages_by_offset_and_splits_long_gaps_into_ninety_day_windows() {
    let day = Duration::from_secs(24 * 3600);
    let mut h = harness(
        "paging",
        Settings {
            initial_lookback: day * 200,
            ..settings()
        },
    )
    .await;
    for i in 0..2500 {
        h.stub.push_deposit(StubDeposit::success(
            &format!("d{i}"),
            "USDT",
            NETWORK,
            ADDRESS,
            "1.00000000",
            now_ms() - 60_000 - i,
        ));
    }
    let report = led(&mut h).await;
    assert_eq!((report.fetched, report.stored), (2500, 2500));
    assert_eq!(
        count(&h.db.pool, "SELECT count(*) FROM deposit_raw").await,
        2500
    );

    let queries: Vec<String> = h.stub.requests().into_iter().map(|r| r.query).collect();
    let param = |query: &str, name: &str| -> i64 {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    let windows: Vec<(i64, i64)> = queries
        .iter()
        .map(|q| (param(q, "startTime"), param(q, "endTime")))
        .collect();
    let mut distinct = windows.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "200 days need three windows: {distinct:?}"
    );
    for pair in distinct.windows(2) {
        assert_eq!(pair[1].0, pair[0].1 + 1, "windows are contiguous");
    }
    // Binance: "time between startTime and endTime must be less than 90 days".
    assert!(distinct.iter().all(|(s, e)| e - s < 90 * 86_400_000));
    let last_window_offsets: Vec<i64> = queries
        .iter()
        .filter(|q| param(q, "startTime") == distinct[2].0)
        .map(|q| param(q, "offset"))
        .collect();
    assert_eq!(last_window_offsets, vec![0, 1000, 2000]);

    // The next cycle starts from the checkpoint minus the overlap: one short window.
    let before = h.stub.requests().len();
    led(&mut h).await;
    let next = &h.stub.requests()[before].query;
    let span = param(next, "endTime") - param(next, "startTime");
    assert!(
        (600_000..700_000).contains(&span),
        "overlap window spans {span} ms"
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn rate_limits_back_off_but_matching_continues() {
    let mut h = harness("ratelimit", settings()).await;
    let merchant_id = merchant(&h.db.pool).await;
    invoice(&h.db.pool, merchant_id, "4").await;
    h.stub.inject(Fault::RateLimited {
        retry_after_secs: 30,
    });
    sqlx::query(
        "INSERT INTO deposit_raw (binance_deposit_id, tx_id, coin, network, address, amount, binance_status, insert_time)
         VALUES ('x', 'tx', 'USDT', $1, $2, 4, 1, now())",
    )
    .bind(NETWORK)
    .bind(ADDRESS)
    .execute(&h.db.pool)
    .await
    .unwrap();
    match h.poller.cycle(&h.shutdown).await {
        Err(CycleError::Binance(BinanceError::RateLimited {
            status: 429,
            retry_after,
        })) => {
            assert_eq!(retry_after, Duration::from_secs(30));
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    assert_eq!(
        count(&h.db.pool, "SELECT count(*) FROM payments").await,
        1,
        "matching ran despite Binance"
    );
    assert_eq!(h.metrics.consecutive_errors.get(), 1);
    let requests = h.stub.requests().len();
    assert!(matches!(
        h.poller.cycle(&h.shutdown).await,
        Err(CycleError::BackingOff(_))
    ));
    assert_eq!(
        h.stub.requests().len(),
        requests,
        "no request while backing off"
    );
    assert_eq!(h.metrics.consecutive_errors.get(), 2);
    assert_eq!(h.metrics.deposits_errors.get(), 2);
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn server_errors_are_unknown_and_do_not_advance_the_checkpoint() {
    let mut h = harness("fivexx", settings()).await;
    h.stub.inject(Fault::ServerError { status: 503 });
    assert!(matches!(
        h.poller.cycle(&h.shutdown).await,
        Err(CycleError::Binance(BinanceError::ServerUnknown {
            status: 503
        }))
    ));
    assert_eq!(
        count(
            &h.db.pool,
            "SELECT count(*) FROM poller_checkpoint WHERE name = 'binance_deposits'"
        )
        .await,
        0
    );
    led(&mut h).await;
    assert_eq!(
        h.metrics.consecutive_errors.get(),
        0,
        "a success resets the streak"
    );
    assert_eq!(
        count(
            &h.db.pool,
            "SELECT count(*) FROM poller_checkpoint WHERE name = 'binance_deposits'"
        )
        .await,
        1
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn clock_skew_is_resynced() {
    let mut h = harness("skew", settings()).await;
    h.stub.set_server_time_offset_ms(120_000);
    h.stub.push_deposit(StubDeposit::success(
        "k",
        "USDT",
        NETWORK,
        ADDRESS,
        "1",
        now_ms() - 60_000,
    ));
    let report = led(&mut h).await;
    assert_eq!(report.fetched, 1);
    // Binance's time is taken before every cycle, so the skew never reaches a signed request.
    let statuses: Vec<u16> = h.stub.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200], "no request rejected with -1021");
    assert!(
        h.stub
            .requests()
            .iter()
            .all(|r| !r.query.contains("endTime=") || {
                let end: i64 = r
                    .query
                    .split('&')
                    .find_map(|p| p.strip_prefix("endTime="))
                    .and_then(|v| v.parse().ok())
                    .unwrap();
                // The window ends on Binance's clock, two minutes ahead of ours.
                end > now_ms() + 100_000
            }),
        "{:?}",
        h.stub.requests()
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn binary_once_runs_a_cycle_and_never_logs_secrets() {
    let db = TestDb::new("binary").await;
    let stub = stub().await;
    let merchant_id = merchant(&db.pool).await;
    invoice(&db.pool, merchant_id, "7").await;
    stub.push_deposit(deposit("b", "7.00000000"));
    // trust auth ignores the password, so a recognisable one can be checked for in the output.
    let url = db.url().expose().replacen(
        "postgres://postgres@",
        "postgres://postgres:DbPassw0rdValue@",
        1,
    );
    assert!(url.contains("DbPassw0rdValue"));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_problemsolver-poller"))
        .arg("--once")
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("BINANCE_API_BASE", stub.base_url())
        .env("BINANCE_API_KEY", API_KEY)
        .env("BINANCE_API_SECRET", API_SECRET)
        .env("RUST_LOG", "trace")
        .env("COLLISION_SETTLE_SECS", "0")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["credited"], 1);
    assert!(stderr.len() > 100, "trace logging produced output");
    for secret in [API_KEY, API_SECRET, "DbPassw0rdValue"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked"
        );
    }

    // Missing configuration: a clear error naming the variable, exit code 2, no panic.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_problemsolver-poller"))
        .arg("--once")
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("BINANCE_API_KEY", API_KEY)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`BINANCE_API_SECRET` is not set"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    db.drop_db().await;
}

#[tokio::test]
async fn help_documents_every_environment_variable() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_problemsolver-poller"))
        .arg("--help")
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for name in [
        "DATABASE_URL",
        "BINANCE_API_BASE",
        "BINANCE_API_KEY",
        "BINANCE_API_SECRET",
        "METRICS_ADDR",
        "POLL_INTERVAL_SECS",
        "RUST_LOG",
        "LOG_FORMAT",
        "--once",
    ] {
        assert!(help.contains(name), "--help lacks {name}:\n{help}");
    }
}

#[tokio::test]
async fn merchant_secrets_are_stored_encrypted_and_decrypt_with_the_master_key() {
    let db = TestDb::new("merchant").await;
    let merchant_id = merchant(&db.pool).await;
    let (ciphertext, nonce): (Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT webhook_secret_ciphertext, webhook_secret_nonce FROM merchants WHERE id = $1",
    )
    .bind(merchant_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(nonce.len(), 12);
    assert!(
        !ciphertext.windows(6).any(|w| w == b"whsec_"),
        "stored in clear"
    );
    let key = MasterKey::parse("ENCRYPTION_MASTER_KEY", MASTER_KEY).unwrap();
    let secret = problemsolver_core::crypto::merchant_secret(&db.pool, &key, merchant_id)
        .await
        .unwrap();
    assert_eq!(secret.expose(), "whsec_dGVzdA==");
    let wrong = MasterKey::parse("ENCRYPTION_MASTER_KEY", &"11".repeat(32)).unwrap();
    assert!(
        problemsolver_core::crypto::merchant_secret(&db.pool, &wrong, merchant_id)
            .await
            .is_err()
    );

    // create_invoice refuses nonsense with a clear database error.
    let bad = NewInvoice {
        merchant_id,
        coin: "USDT".to_owned(),
        network: NETWORK.to_owned(),
        address: ADDRESS.to_owned(),
        base_amount: dec("0"),
        is_smoke: false,
    };
    let error = create_invoice(&db.pool, &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("base_amount must be positive"), "{error}");
    db.drop_db().await;
}
