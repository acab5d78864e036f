//! Poller work cancelled mid-flight (a future dropped by a timeout, a `select!`, an aborted task,
//! or the simulation's kills) must leave the database pool as it found it: every connection goes
//! back outside any transaction, what the poller writes next commits, and the pool hands out a
//! connection at once.
//!
//! Whatever the cause, a pooled session left inside a transaction is ended by the server after
//! the pool's idle-in-transaction timeout, so its row locks cannot stall the next cycle for good.
//!
//! The cancellation is placed deterministically: the work is polled one step at a time and
//! dropped when the server shows its session has run `BEGIN` while the client has not read the
//! answer yet (the window a timeout hits when the database is slow). sqlx 0.9.0 returned such a
//! connection to the pool still inside the transaction (launchbadge/sqlx#4393): the next
//! borrower's writes stayed uncommitted and held their row locks, and the next cycle waited on
//! those locks forever.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use problemsolver_core::db::{self, PoolConfig};
use problemsolver_core::http::Shutdown;
use problemsolver_core::testing::TestDb;
use problemsolver_poller::service::CycleError;
use problemsolver_poller::store::{self, DEPOSITS_CHECKPOINT};
use sqlx::{Connection, PgConnection};

mod support;
use support::*;

/// A session of the pool as the server sees it.
#[derive(Debug)]
#[allow(dead_code)] // read through `Debug` in failure messages
struct Session {
    pid: i32,
    state: String,
    query: String,
    /// Whether its current transaction was opened by the statement it ran last (a `BEGIN` of
    /// this attempt, not one sent into a transaction left open earlier).
    opened_by_last_statement: bool,
}

async fn pool_sessions(observer: &mut PgConnection) -> Vec<Session> {
    let rows: Vec<(i32, String, String, bool)> = sqlx::query_as(
        "SELECT pid, coalesce(state, ''), coalesce(query, ''),
                coalesce(xact_start = query_start, false)
           FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()
            AND backend_type = 'client backend'",
    )
    .fetch_all(observer)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(pid, state, query, opened_by_last_statement)| Session {
            pid,
            state,
            query,
            opened_by_last_statement,
        })
        .collect()
}

fn in_transaction(session: &Session) -> bool {
    session.state.starts_with("idle in transaction")
}

/// Polls `work` one step at a time and drops it as soon as a session of the pool has run
/// `BEGIN` whose answer the client has not read. Returns whether it was dropped there (false:
/// it finished first, or the answer was read within the same poll).
async fn cancel_right_after_begin<F: Future>(work: F, observer: &mut PgConnection) -> bool {
    let mut work = pin!(work);
    loop {
        let finished =
            std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx).is_ready())).await;
        if finished {
            return false;
        }
        // Let the server act on whatever this step sent, then look.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let sessions = pool_sessions(observer).await;
            if sessions.iter().any(|session| {
                in_transaction(session)
                    && session.query == "BEGIN"
                    && session.opened_by_last_statement
            }) {
                return true;
            }
            if sessions.iter().all(|session| session.state != "active") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a pool session stayed active for 5 s: {sessions:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_dropped_inside_begin_leaves_no_transaction_open_on_the_pool() {
    // One connection, so every step reuses the one a cancellation touched.
    let db = TestDb::with_pool_size("cancel_begin", 1).await;
    let pool = db.pool.clone();
    let mut observer = PgConnection::connect(db.url().expose()).await.unwrap();

    let mut cancelled = 0;
    for attempt in 0..40 {
        if cancelled == 6 {
            break;
        }
        // Both transactions a cycle opens: the collision watermark and a matching batch.
        let hit = if attempt % 2 == 0 {
            cancel_right_after_begin(
                store::count_new_collisions(&pool, Duration::ZERO),
                &mut observer,
            )
            .await
        } else {
            cancel_right_after_begin(store::match_batch(&pool, 500, None), &mut observer).await
        };
        cancelled += usize::from(hit);
        // Once the dropped connection is back in the pool (or closed), no session of the pool
        // may still be inside a transaction: the next borrower's statements would run in it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.num_idle() < pool.size() as usize && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let sessions = pool_sessions(&mut observer).await;
        assert!(
            !sessions.iter().any(in_transaction),
            "attempt {attempt}: a connection dropped right after BEGIN went back to the pool still inside the transaction: {sessions:?}"
        );
        // The connection is back (or replaced) within a second, not after `acquire_timeout`.
        let connection = tokio::time::timeout(Duration::from_secs(1), pool.acquire())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no pool connection within 1 s after cancelling at BEGIN (pool: {} open, {} idle)",
                    pool.size(),
                    pool.num_idle()
                )
            })
            .unwrap();
        drop(connection);
    }
    assert_eq!(cancelled, 6, "the work was dropped right after BEGIN");

    // What the poller writes after those cancellations commits: another session sees it at once.
    let at = DateTime::<Utc>::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    store::save_checkpoint(&pool, "cancellation_probe", at, at)
        .await
        .unwrap();
    let seen: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT last_insert_time FROM poller_checkpoint WHERE name = 'cancellation_probe'",
    )
    .fetch_optional(&mut observer)
    .await
    .unwrap();
    let sessions = pool_sessions(&mut observer).await;
    assert_eq!(
        seen,
        Some(at),
        "a checkpoint saved through the pool after the cancellations is not visible to another session (pool sessions: {sessions:?})"
    );

    observer.close().await.unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_session_left_inside_a_transaction_is_ended_and_its_locks_released() {
    let db = TestDb::new("abandoned_transaction").await;
    // The services' pool, with the abandoned-transaction bound shortened for the test.
    let config = PoolConfig {
        max_connections: 1,
        idle_in_transaction_timeout: Some(Duration::from_secs(1)),
        ..PoolConfig::default()
    };
    let pool = db::connect(&db.url(), &config).await.unwrap();
    let at = DateTime::<Utc>::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    store::save_checkpoint(&pool, DEPOSITS_CHECKPOINT, at, at)
        .await
        .unwrap();

    // A transaction the client lost track of (sqlx does not see a BEGIN sent as a plain
    // statement), holding the checkpoint row, goes back to the pool.
    let mut connection = pool.acquire().await.unwrap();
    sqlx::query("BEGIN")
        .execute(&mut *connection)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM poller_checkpoint WHERE name = $1 FOR UPDATE")
        .bind(DEPOSITS_CHECKPOINT)
        .execute(&mut *connection)
        .await
        .unwrap();
    drop(connection);

    // Another writer of that row (another pool) gets it once the server ends the abandoned
    // session.
    let started = Instant::now();
    let written = tokio::time::timeout(
        Duration::from_secs(10),
        store::save_checkpoint(&db.pool, DEPOSITS_CHECKPOINT, at, at),
    )
    .await;
    let mut observer = PgConnection::connect(db.url().expose()).await.unwrap();
    let sessions = pool_sessions(&mut observer).await;
    assert!(
        matches!(written, Ok(Ok(()))),
        "the checkpoint row stayed locked by the abandoned transaction ({written:?} after {:?}; sessions: {sessions:?})",
        started.elapsed()
    );
    assert!(
        !sessions.iter().any(in_transaction),
        "the abandoned session is still there: {sessions:?}"
    );
    // The pool replaces the ended session: the poller's next write goes through and commits.
    let later = at + chrono::Duration::seconds(1);
    store::save_checkpoint(&pool, DEPOSITS_CHECKPOINT, later, later)
        .await
        .unwrap();
    assert_eq!(
        store::load_checkpoint(&db.pool, DEPOSITS_CHECKPOINT)
            .await
            .unwrap(),
        Some(later)
    );

    pool.close().await;
    observer.close().await.unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_that_gets_no_pool_connection_says_so() {
    let db = TestDb::new("pool_exhausted").await;
    let stub = stub().await;
    let config = PoolConfig {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(1),
        ..PoolConfig::default()
    };
    let pool = db::connect(&db.url(), &config).await.unwrap();
    let (mut poller, _metrics, readiness, registry) =
        poller_on_pool(&db, pool.clone(), &stub.base_url(), settings());
    // Every connection is taken (as connections stuck in a release would be).
    let held = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());

    let outcome = poller.cycle(&Shutdown::new()).await;
    match &outcome {
        Err(
            error @ CycleError::PoolExhausted {
                open: 2,
                idle: 0,
                max: 2,
            },
        ) => assert!(
            error
                .to_string()
                .contains("deposits are not being credited"),
            "{error}"
        ),
        other => panic!("expected the pool's exhaustion, got {other:?}"),
    }
    let reason = readiness.state().unwrap_err();
    assert!(reason.contains("2 connections open, 0 idle"), "{reason}");
    let text = metrics_text(&registry);
    assert!(
        text.contains("problemsolver_poller_consecutive_errors 1"),
        "{text}"
    );
    assert!(
        text.contains("problemsolver_deposits_errors_total 1"),
        "{text}"
    );

    // Connections back: the next cycle leads.
    drop(held);
    assert!(matches!(
        poller.cycle(&Shutdown::new()).await,
        Ok(problemsolver_poller::service::CycleOutcome::Led(_))
    ));
    poller.shutdown().await;
    pool.close().await;
    db.drop_db().await;
}
