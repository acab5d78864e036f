//! End-to-end poller throughput on a *durable* PostgreSQL (fsync, synchronous_commit and
//! full_page_writes on, as in production): 100,000 successful deposits served by the Binance stub
//! over HTTP (signed requests, 1,000-row pages), each matching one of 100,000 pending invoices.
//! The figure is one leader cycle timed from its start to its end: Binance's time, every page
//! fetched and parsed, every row stored, every deposit matched, and for each an invoice marked
//! paid, a payment, a ledger credit and a webhook row written, then expiry, stuck report and
//! reconciliation. The result is checked before it is printed.
//!
//! Then, on the same cluster, `pgbench` runs a one-row `UPDATE` per transaction with one client
//! (the poller's leader commits from one session at a time), the physical commit limit the
//! figure is put beside.
//!
//! Needs `PSCTL_BENCH_DATABASE_URL` (`eval "$(scripts/postgres.sh start-durable)"`); refuses to
//! run without it or on a cluster with any durability setting off. Last line:
//! `deposits_per_s=N`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use problemsolver_core::Secret;
use problemsolver_core::db::connect_options;
use problemsolver_core::http::{Readiness, Shutdown};
use problemsolver_core::testing::{TestDb, bench};
use problemsolver_poller::binance::BinanceClient;
use problemsolver_poller::config::Settings;
use problemsolver_poller::leader::{Leadership, POLLER_LOCK_KEY};
use problemsolver_poller::metrics::Metrics;
use problemsolver_poller::service::{CycleOutcome, Poller};
use problemsolver_stubs::binance::{BinanceStub, StubDeposit};
use prometheus_client::registry::Registry;

const DEPOSITS: i64 = 100_000;
const PGBENCH_SECS: u32 = 20;
const KEY: &str = "bench-api-key";
const SECRET: &str = "bench-api-secret";

#[tokio::main]
async fn main() {
    let admin_url = bench::durable_admin_url().await;
    let db = TestDb::on_server(&admin_url, "bench_backlog", 4).await;
    let pool = db.pool.clone();
    let merchant_id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO merchants (name, webhook_url, webhook_secret_ciphertext, webhook_secret_nonce)
         VALUES ('bench', 'https://merchant.example/hook', '\\x00', '\\x000000000000000000000000') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("insert merchant");
    // One address per invoice, as a gateway handing out many deposit addresses would; created
    // an hour ago, so every deposit below is inside its invoice's life.
    sqlx::query(
        "INSERT INTO invoices (merchant_id, coin, network, address, base_amount, publish_amount,
                               created_at, expires_at)
         SELECT $1, 'USDT', 'TRX', 'addr-' || i, 10 + i * 0.0001, 10 + i * 0.0001,
                now() - interval '1 hour', now() + interval '1 hour'
           FROM generate_series(1, $2::int8) AS i",
    )
    .bind(merchant_id)
    .bind(DEPOSITS)
    .execute(&pool)
    .await
    .expect("seed invoices");
    sqlx::query("ANALYZE")
        .execute(&pool)
        .await
        .expect("analyze");

    let stub = BinanceStub::start(SocketAddr::from(([127, 0, 0, 1], 0)), KEY, SECRET)
        .await
        .expect("start the Binance stub");
    let now_ms = chrono::Utc::now().timestamp_millis();
    for i in 1..=DEPOSITS {
        let amount = format!(
            "{:.8}",
            rust_decimal::Decimal::from(10) + rust_decimal::Decimal::new(i, 4)
        );
        stub.push_deposit(StubDeposit::success(
            &format!("bench-{i}"),
            "USDT",
            "TRX",
            &format!("addr-{i}"),
            &amount,
            now_ms - 30 * 60_000 + i,
        ));
    }

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let client = BinanceClient::new(
        &stub.base_url(),
        Secret::new(KEY.to_owned()),
        Secret::new(SECRET.to_owned()),
        5000,
    )
    .expect("client");
    let leadership = Leadership::new(connect_options(&db.url()).expect("url"), POLLER_LOCK_KEY);
    let settings = Settings {
        initial_lookback: Duration::from_secs(2 * 3600),
        ..Settings::default()
    };
    let mut poller = Poller::new(
        pool.clone(),
        client,
        leadership,
        metrics,
        Readiness::new("bench"),
        settings,
    );
    let commits_before = bench::commits(&pool).await;
    let started = Instant::now();
    let report = match poller.cycle(&Shutdown::new()).await {
        Ok(CycleOutcome::Led(report)) => report,
        other => panic!("the cycle did not lead: {other:?}"),
    };
    let secs = started.elapsed().as_secs_f64();
    let commits = bench::commits(&pool).await - commits_before;
    poller.shutdown().await;

    let (paid, hooks, ledger): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM invoices WHERE status = 'paid'),
                (SELECT count(*) FROM webhook_queue),
                (SELECT count(*) FROM ledger_entries WHERE entry_type = 'credit')",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    // A fast wrong answer is not a result.
    assert_eq!(
        (
            report.fetched,
            report.stored,
            report.credited,
            report.mismatches
        ),
        (DEPOSITS as u64, DEPOSITS as u64, DEPOSITS as u64, 0),
        "{report:?}"
    );
    assert_eq!((paid, hooks, ledger), (DEPOSITS, DEPOSITS, DEPOSITS));
    let pages = stub.requests().len();
    let tps = bench::pgbench_tps(db.url().expose(), 1, PGBENCH_SECS);
    db.drop_db().await;

    println!(
        "cycle: {DEPOSITS} deposits fetched over HTTP in {pages} pages, stored, matched and credited in {secs:.2}s"
    );
    println!(
        "poller_commits={commits} ({:.0}/s) pgbench_tps={tps:.0} (one-row update, 1 client, same durable cluster)",
        commits as f64 / secs
    );
    println!("deposits_per_s={:.0}", DEPOSITS as f64 / secs);
}
