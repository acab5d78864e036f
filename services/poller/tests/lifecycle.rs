//! The deposit and invoice lifecycles against real Postgres and the Binance stub over HTTP:
//! deposits that stay pending past the poll overlap, status paths, late and early deposits,
//! expiry, poison rows, a checkpoint from a skewed clock, a poller killed between fetching a
//! window and storing it, a back-off that survives a restart, stuck deposits, and leadership
//! moving when the leader's session dies.

use std::time::{Duration, Instant};

use problemsolver_core::http::Shutdown;
use problemsolver_poller::service::{CycleError, CycleOutcome};
use problemsolver_poller::store::{self, DEPOSITS_CHECKPOINT};
use problemsolver_stubs::binance::Fault;

mod support;
use support::*;

#[tokio::test]
async fn a_deposit_pending_past_the_overlap_is_rechecked_and_credited_once() {
    let mut h = harness("pending_long", settings()).await;
    let pool = h.db.pool.clone();
    let merchant_id = merchant(&pool).await;
    let now = now_ms();
    invoice_between(
        &pool,
        merchant_id,
        "5",
        now - 50 * MINUTE_MS,
        now + 10 * MINUTE_MS,
    )
    .await;
    // Seen by Binance 40 minutes ago, still pending: the overlap (10 min here) no longer covers it.
    h.stub
        .push_deposit(deposit_at("slow", "5", now - 40 * MINUTE_MS, 0));
    let first = led(&mut h).await;
    assert_eq!((first.stored, first.credited), (1, 0));
    assert_eq!(
        outcome_of(&pool, "slow").await,
        None,
        "pending is not final"
    );
    // 0 → 6 (credited but cannot withdraw) is still not final.
    h.stub.set_deposit_status("slow", 6);
    let second = led(&mut h).await;
    assert_eq!(second.credited, 0);
    assert!(second.rechecked >= 1, "{second:?}");
    assert_eq!(outcome_of(&pool, "slow").await, None);
    h.stub.set_deposit_status("slow", 1);
    let third = led(&mut h).await;
    assert_eq!(third.credited, 1, "{third:?}");
    assert_eq!(outcome_of(&pool, "slow").await.as_deref(), Some("credited"));
    // The re-check asked only for the deposit's own insert time, not the whole gap.
    let start = format!(
        "startTime={}&endTime={}",
        now - 40 * MINUTE_MS,
        now - 40 * MINUTE_MS
    );
    assert!(
        h.stub
            .requests()
            .iter()
            .any(|r| r.query.starts_with(&start)),
        "{:?}",
        h.stub.requests()
    );
    let fourth = led(&mut h).await;
    assert_eq!(fourth.credited, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM payments").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM ledger_entries").await, 1);
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn rejected_and_wrong_deposits_are_final_and_recorded() {
    let mut h = harness("rejected", settings()).await;
    let pool = h.db.pool.clone();
    let merchant_id = merchant(&pool).await;
    invoice(&pool, merchant_id, "4").await;
    invoice(&pool, merchant_id, "9").await;
    h.stub.push_deposit(deposit_at("wait", "4", now_ms(), 8));
    h.stub.push_deposit(deposit_at("nope", "9", now_ms(), 2));
    let report = led(&mut h).await;
    assert_eq!(report.credited, 0);
    assert_eq!(outcome_of(&pool, "nope").await.as_deref(), Some("rejected"));
    assert_eq!(events_for(&pool, "deposit.rejected", "nope").await, 1);
    assert_eq!(
        outcome_of(&pool, "wait").await,
        None,
        "8 waits for the user"
    );
    h.stub.set_deposit_status("wait", 7);
    led(&mut h).await;
    assert_eq!(outcome_of(&pool, "wait").await.as_deref(), Some("rejected"));
    assert_eq!(count(&pool, "SELECT count(*) FROM payments").await, 0);
    // The first poll, with no checkpoint, said once where the history it reads begins.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM system_events WHERE source = 'poller' AND kind = 'poll.history_start' \
              AND severity = 'warning' AND details ->> 'from' IS NOT NULL"
        )
        .await,
        1
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn invoices_expire_late_deposits_are_recorded_and_in_time_ones_still_pay() {
    let mut h = harness("expiry", settings()).await;
    let pool = h.db.pool.clone();
    let merchant_id = merchant(&pool).await;
    let now = now_ms();
    // A: expired 30 minutes ago; its deposit came 10 minutes after expiry.
    let a = invoice_between(
        &pool,
        merchant_id,
        "7",
        now - 50 * MINUTE_MS,
        now - 30 * MINUTE_MS,
    )
    .await;
    h.stub
        .push_deposit(deposit_at("late", "7", now - 20 * MINUTE_MS, 1));
    // B: expired 10 minutes ago; its deposit was seen before expiry and succeeded only now.
    let b = invoice_between(
        &pool,
        merchant_id,
        "8",
        now - 50 * MINUTE_MS,
        now - 10 * MINUTE_MS,
    )
    .await;
    h.stub
        .push_deposit(deposit_at("in_time", "8", now - 15 * MINUTE_MS, 0));
    // C: abandoned.
    let c = invoice_between(
        &pool,
        merchant_id,
        "9",
        now - 50 * MINUTE_MS,
        now - 5 * MINUTE_MS,
    )
    .await;

    let first = led(&mut h).await;
    assert_eq!(first.invoices_expired, 3, "{first:?}");
    assert_eq!(outcome_of(&pool, "late").await.as_deref(), Some("late"));
    assert_eq!(events_for(&pool, "deposit.late", "late").await, 1);
    let related: Option<String> = sqlx::query_scalar(
        "SELECT related_invoice_id::text FROM deposit_raw WHERE binance_deposit_id = 'late'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(related, Some(a.id.to_string()), "late names its invoice");
    h.stub.set_deposit_status("in_time", 1);
    let second = led(&mut h).await;
    assert_eq!(second.credited, 1, "{second:?}");
    let status = |id: uuid::Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM invoices WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(status(a.id).await, "expired");
    assert_eq!(status(b.id).await, "paid");
    assert_eq!(status(c.id).await, "expired");
    // The expired invoices' amounts stay held: a new invoice of the same base gets another.
    let again = invoice(&pool, merchant_id, "9").await;
    assert_ne!(again.publish_amount, c.publish_amount);
    assert!(again.allocation_collisions >= 1);
    let text = metrics_text(&h.registry);
    assert!(
        text.contains("problemsolver_deposit_outcomes_total{outcome=\"late\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("problemsolver_invoices_expired_total 3"),
        "{text}"
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn a_deposit_older_than_every_invoice_with_its_amount_never_pays_one() {
    let mut h = harness("early", settings()).await;
    let pool = h.db.pool.clone();
    let merchant_id = merchant(&pool).await;
    let now = now_ms();
    h.stub
        .push_deposit(deposit_at("early", "3", now - 20 * MINUTE_MS, 1));
    invoice_between(
        &pool,
        merchant_id,
        "3",
        now - 10 * MINUTE_MS,
        now + 50 * MINUTE_MS,
    )
    .await;
    let report = led(&mut h).await;
    assert_eq!(report.credited, 0);
    assert_eq!(
        outcome_of(&pool, "early").await.as_deref(),
        Some("before_invoice")
    );
    assert_eq!(
        events_for(&pool, "deposit.before_invoice", "early").await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM invoices WHERE status = 'pending'"
        )
        .await,
        1
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn poison_rows_are_quarantined_once_and_never_block_the_others() {
    let mut h = harness("poison", settings()).await;
    let pool = h.db.pool.clone();
    let merchant_id = merchant(&pool).await;
    invoice(&pool, merchant_id, "1").await;
    let blocked = invoice(&pool, merchant_id, "2").await;
    // Someone wrote the paid webhook of an unpaid invoice by hand: crediting it would violate
    // the (invoice, event) unique key.
    sqlx::query(
        "INSERT INTO webhook_queue (merchant_id, invoice_id, event_type, payload)
         VALUES ($1, $2, 'invoice.paid', '{}')",
    )
    .bind(merchant_id)
    .bind(blocked.id)
    .execute(&pool)
    .await
    .unwrap();
    h.stub.push_deposit(deposit("zero", "0.00000000"));
    let mut nul = deposit("nul", "1.5");
    nul.tx_id = "0xab\u{0}cd".to_owned();
    h.stub.push_deposit(nul);
    h.stub.push_deposit(deposit("conflict", "2"));
    h.stub.push_deposit(deposit("good", "1"));

    let first = led(&mut h).await;
    assert_eq!(first.credited, 1, "{first:?}");
    assert_eq!(first.quarantined, 3, "{first:?}");
    assert_eq!(outcome_of(&pool, "good").await.as_deref(), Some("credited"));
    assert_eq!(
        outcome_of(&pool, "conflict").await.as_deref(),
        Some("quarantined")
    );
    for id in ["zero", "nul", "conflict"] {
        assert_eq!(
            events_for(&pool, "deposit.quarantined", id).await,
            1,
            "{id}"
        );
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM deposit_quarantine").await,
        2
    );
    // The checkpoint moved past the poison rows.
    let checkpoint = store::load_checkpoint(&pool, DEPOSITS_CHECKPOINT)
        .await
        .unwrap();
    assert!(checkpoint.is_some_and(|at| at.timestamp_millis() >= now_ms() - 5_000));
    // The next poll sees the rows again (overlap) without a second event.
    let second = led(&mut h).await;
    assert_eq!(second.quarantined, 0, "{second:?}");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM system_events WHERE kind = 'deposit.quarantined'"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &pool,
            "SELECT min(seen_count)::int8 FROM deposit_quarantine"
        )
        .await,
        2
    );
    let text = metrics_text(&h.registry);
    assert!(
        text.contains("problemsolver_deposits_quarantined_total 3"),
        "{text}"
    );
    assert_eq!(
        second.mismatches + first.mismatches,
        0,
        "quarantined rows reconcile"
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn a_checkpoint_saved_in_the_future_cannot_skip_deposits() {
    let mut h = harness("future", settings()).await;
    let pool = h.db.pool.clone();
    let merchant_id = merchant(&pool).await;
    invoice(&pool, merchant_id, "6").await;
    h.stub.push_deposit(deposit("d", "6"));
    // A pod whose clock ran a day fast saved this.
    sqlx::query(
        "INSERT INTO poller_checkpoint (name, last_insert_time) VALUES ($1, now() + interval '1 day')",
    )
    .bind(DEPOSITS_CHECKPOINT)
    .execute(&pool)
    .await
    .unwrap();
    let report = led(&mut h).await;
    assert_eq!(report.credited, 1, "{report:?}");
    let checkpoint = store::load_checkpoint(&pool, DEPOSITS_CHECKPOINT)
        .await
        .unwrap()
        .unwrap();
    assert!(
        checkpoint.timestamp_millis() <= now_ms() + 1_000,
        "checkpoint {checkpoint} is still ahead of Binance's clock"
    );
    // Not trusting it is visible, once, with the checkpoint that was set aside.
    led(&mut h).await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM system_events WHERE source = 'poller' AND kind = 'poll.checkpoint_ahead' \
              AND severity = 'error' AND details ->> 'stored_checkpoint' IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM system_events WHERE kind = 'poll.history_start'"
        )
        .await,
        0
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

/// A poller killed after Binance answered a window but before the window's deposits were stored
/// (the process dies, its database session with it, and the write never commits) must fetch that
/// window again however late the next process starts: the checkpoint moves only after the store.
/// The deposit is one only the killed cycle's window covered, so a checkpoint saved before the
/// store would leave it outside every later window for good.
#[tokio::test]
async fn a_poller_killed_between_fetch_and_store_fetches_the_window_again() {
    let mut h = harness("killed_before_store", settings()).await;
    let pool = h.db.pool.clone();
    let merchant_id = merchant(&pool).await;
    let t0 = now_ms();
    invoice_between(
        &pool,
        merchant_id,
        "5",
        t0 - 5 * MINUTE_MS,
        t0 + 120 * MINUTE_MS,
    )
    .await;
    led(&mut h).await;
    let checkpoint = store::load_checkpoint(&pool, DEPOSITS_CHECKPOINT)
        .await
        .unwrap();
    assert!(checkpoint.is_some());
    // Twenty minutes later on Binance's clock, a deposit from fifteen minutes ago (the overlap
    // is ten).
    h.stub.set_server_time_offset_ms(20 * MINUTE_MS);
    h.stub
        .push_deposit(deposit_at("killed", "5", t0 + 5 * MINUTE_MS, 1));
    // The store waits behind this lock (it conflicts with INSERT, not with reads).
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE deposit_raw IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let requests_before = h.stub.requests().len();
    let kill = async {
        let pid: i32 = loop {
            let waiting: Option<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock'
                    AND query LIKE '%INSERT INTO deposit_raw%'",
            )
            .fetch_optional(&pool)
            .await
            .unwrap();
            if let Some(pid) = waiting {
                break pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(terminated);
    };
    tokio::select! {
        biased;
        () = kill => {}
        // Its session's end may reach the cycle first: it fails, and nothing is stored.
        outcome = h.poller.cycle(&h.shutdown) => assert!(
            matches!(outcome, Err(CycleError::Database(_))),
            "{outcome:?}"
        ),
    }
    blocker.rollback().await.unwrap();
    assert!(
        h.stub.requests().len() > requests_before,
        "Binance answered the window"
    );
    assert_eq!(outcome_of(&pool, "killed").await, None);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM deposit_raw WHERE binance_deposit_id = 'killed'"
        )
        .await,
        0,
        "the killed store never committed"
    );
    assert_eq!(
        store::load_checkpoint(&pool, DEPOSITS_CHECKPOINT)
            .await
            .unwrap(),
        checkpoint,
        "the checkpoint did not move past a window that was not stored"
    );
    // A new process starts half an hour later on Binance's clock.
    h.stub.set_server_time_offset_ms(50 * MINUTE_MS);
    h.poller = poller_for(&h.db, &h.stub.base_url(), settings()).0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        match h.poller.cycle(&h.shutdown).await {
            Ok(CycleOutcome::Led(report)) => break report,
            other if Instant::now() > deadline => panic!("the new poller never led: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_eq!(report.credited, 1, "{report:?}");
    assert_eq!(
        outcome_of(&pool, "killed").await.as_deref(),
        Some("credited")
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM payments").await, 1);
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn a_rate_limit_back_off_survives_a_restart() {
    let mut h = harness("backoff", settings()).await;
    h.stub.inject(Fault::Banned {
        retry_after_secs: 120,
    });
    let first = h.poller.cycle(&h.shutdown).await;
    assert!(matches!(first, Err(CycleError::Binance(_))), "{first:?}");
    let requests = h.stub.requests().len();
    // A new process: nothing in memory.
    h.poller.shutdown().await;
    let (mut restarted, _, _, _) = poller_for(&h.db, &h.stub.base_url(), settings());
    let again = restarted.cycle(&Shutdown::new()).await;
    match again {
        Err(CycleError::BackingOff(left)) => {
            assert!(
                left > Duration::from_secs(100) && left <= Duration::from_secs(120),
                "{left:?}"
            )
        }
        other => panic!("expected the persisted back-off, got {other:?}"),
    }
    assert_eq!(
        h.stub.requests().len(),
        requests,
        "no request during the back-off"
    );
    restarted.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn deposits_binance_never_finalises_are_reported_stuck_once() {
    let mut settings = settings();
    settings.stuck_after = Duration::from_secs(30 * 60);
    let mut h = harness("stuck", settings).await;
    let pool = h.db.pool.clone();
    let now = now_ms();
    h.stub
        .push_deposit(deposit_at("old", "1", now - 45 * MINUTE_MS, 0));
    h.stub
        .push_deposit(deposit_at("young", "2", now - 5 * MINUTE_MS, 0));
    let first = led(&mut h).await;
    assert_eq!((first.unresolved, first.stuck), (2, 1), "{first:?}");
    led(&mut h).await;
    assert_eq!(events_for(&pool, "deposit.stuck", "old").await, 1);
    assert_eq!(events_for(&pool, "deposit.stuck", "young").await, 0);
    let text = metrics_text(&h.registry);
    assert!(text.contains("problemsolver_deposits_stuck 1"), "{text}");
    assert!(
        text.contains("problemsolver_deposits_unresolved 2"),
        "{text}"
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

#[tokio::test]
async fn a_standby_takes_over_when_the_leaders_session_dies_and_nothing_is_credited_twice() {
    let mut h = harness("failover", settings()).await;
    let pool = h.db.pool.clone();
    let merchant_id = merchant(&pool).await;
    invoice(&pool, merchant_id, "1").await;
    h.stub.push_deposit(deposit("first", "1"));
    led(&mut h).await;
    let (mut standby, _, _, _) = poller_for(&h.db, &h.stub.base_url(), settings());
    let shutdown = Shutdown::new();
    assert!(matches!(
        standby.cycle(&shutdown).await,
        Ok(CycleOutcome::Standby)
    ));
    // The leader's lock session dies (an operator, a network cut, a failover of the database).
    let pid = h.poller.leadership().backend_pid().await.unwrap();
    let killed_at = Instant::now();
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(terminated);
    invoice(&pool, merchant_id, "2").await;
    h.stub.push_deposit(deposit("second", "2"));
    let mut took_over = None;
    for _ in 0..100 {
        if let Ok(CycleOutcome::Led(report)) = standby.cycle(&shutdown).await {
            took_over = Some((killed_at.elapsed(), report));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (after, report) = took_over.expect("the standby never took over");
    println!("takeover_after_session_loss_ms={}", after.as_millis());
    assert_eq!(report.credited, 1);
    // The old leader learns it lost the lock and does nothing.
    let old = h.poller.cycle(&h.shutdown).await;
    assert!(matches!(old, Err(_) | Ok(CycleOutcome::Standby)), "{old:?}");
    assert!(!h.poller.leadership().is_leader());
    assert_eq!(count(&pool, "SELECT count(*) FROM payments").await, 2);
    standby.shutdown().await;
    h.poller.shutdown().await;
    h.db.drop_db().await;
}
