//! Delivery throughput of one worker process on a *durable* PostgreSQL (fsync, synchronous_commit
//! and full_page_writes on, as in production): a fresh database with 60,000 due webhooks, the
//! real `problemsolver-webhook-worker --once` binary with its default batch, pipeline and
//! concurrency settings, and a loopback merchant sink (keep-alive) that verifies every signature.
//!
//! Then, on the same cluster and in the same database, `pgbench` runs a one-row `UPDATE` per
//! transaction with as many clients as the worker has pipelines (the worker's concurrent
//! committing database sessions), so the worker's figure can be compared with what the cluster
//! commits per second when every transaction is one row.
//!
//! Needs `PSCTL_BENCH_DATABASE_URL` (`eval "$(scripts/postgres.sh start-durable)"`); refuses to run
//! without it, or on a cluster with any durability setting off. Never falls back to the test
//! cluster. The last two lines are `deliveries_per_s=N` and `rss_mib=M`, where M is the worker
//! process's peak resident set (VmHWM from /proc/<pid>/status). Rate limits are lifted for the
//! run (the runbook defaults of 1000/s global and 10/s per endpoint would cap the figure, not
//! measure it).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser as _;
use problemsolver_core::Secret;
use problemsolver_core::crypto::{MasterKey, NewMerchant, create_merchant};
use problemsolver_core::testing::{TestDb, bench};
use problemsolver_stubs::merchant::MerchantSink;
use problemsolver_webhook_worker::config::Args;

const ROWS: i64 = 60_000;
/// How long pgbench runs.
const PGBENCH_SECS: u32 = 20;
/// A throw-away key for the benchmark database only.
const BENCH_MASTER_KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";
const BENCH_SECRET: &str = "whsec_YmVuY2htYXJrLXNpZ25pbmcta2V5LTAxMjM0NTY3ODk=";

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main]
async fn main() {
    let admin_url = bench::durable_admin_url().await;
    let defaults = Args::parse_from(["problemsolver-webhook-worker"]);
    let db = TestDb::on_server(&admin_url, "webhook_bench", 4).await;
    let sink = MerchantSink::start(SocketAddr::from(([127, 0, 0, 1], 0)), BENCH_SECRET)
        .await
        .expect("start the merchant sink");
    sink.set_recording(false);
    let key = MasterKey::parse("BENCH_MASTER_KEY", BENCH_MASTER_KEY).expect("bench key");
    let merchant = create_merchant(
        &db.pool,
        &key,
        &NewMerchant {
            name: "bench merchant".to_owned(),
            webhook_url: sink.url("/bench"),
            webhook_secret: Secret::new(BENCH_SECRET.to_owned()),
        },
    )
    .await
    .expect("create the bench merchant");
    sqlx::query(
        "INSERT INTO webhook_queue (merchant_id, event_type, payload)
         SELECT $1, 'invoice.paid',
                jsonb_build_object('invoice_id', gen_random_uuid(), 'amount', '10.000123', 'coin', 'USDT',
                                   'network', 'TRX', 'tx_id', md5(g::text))
         FROM generate_series(1, $2) AS g",
    )
    .bind(merchant)
    .bind(ROWS)
    .execute(&db.pool)
    .await
    .expect("enqueue the backlog");
    sqlx::query("ANALYZE webhook_queue")
        .execute(&db.pool)
        .await
        .expect("analyze");
    sqlx::query("CHECKPOINT")
        .execute(&db.pool)
        .await
        .expect("checkpoint before measuring");
    eprintln!(
        "enqueued {ROWS} webhooks; starting the worker (batch {}, pipelines {}, concurrency {})",
        defaults.batch_size, defaults.pipelines, defaults.concurrency
    );

    let commits_before = bench::commits(&db.pool).await;
    let started = Instant::now();
    let mut child =
        tokio::process::Command::new(env!("CARGO_BIN_EXE_problemsolver-webhook-worker"))
            .arg("--once")
            .env("DATABASE_URL", db.url().expose())
            .env("ENCRYPTION_MASTER_KEY", BENCH_MASTER_KEY)
            .env("WEBHOOK_ALLOW_INSECURE_TARGETS", "true")
            .env("WEBHOOK_GLOBAL_RPS", "1000000")
            .env("WEBHOOK_ENDPOINT_RPS", "1000000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start problemsolver-webhook-worker");
    let pid = child.id().expect("worker pid");
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak_kib = peak_kib.max(kib);
        }
        tokio::select! {
            status = child.wait() => break status.expect("wait for the worker"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };
    let elapsed = started.elapsed();
    assert!(status.success(), "the worker failed: {status}");
    // The worker's sessions report their statistics when they end.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let worker_commits = bench::commits(&db.pool).await - commits_before;

    let summary = sink.summary();
    let delivered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_queue WHERE status = 'delivered'")
            .fetch_one(&db.pool)
            .await
            .expect("count delivered");
    assert_eq!(delivered, ROWS, "every row must be delivered");
    assert_eq!(
        summary.accepted, ROWS as u64,
        "the sink must accept every delivery"
    );
    assert_eq!(summary.unverified, 0, "every signature must verify");
    assert_eq!(summary.duplicates, 0, "no webhook may be delivered twice");
    assert_eq!(
        summary.max_in_flight_per_id, 1,
        "no webhook may be in flight twice"
    );

    let per_second = ROWS as f64 / elapsed.as_secs_f64();
    let rss_mib = peak_kib as f64 / 1024.0;
    let commits_per_second = worker_commits as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{ROWS} deliveries in {:.2} s (process start to exit, including connecting) with {worker_commits} \
         commits ({commits_per_second:.0}/s, {:.1} deliveries per commit); worker peak RSS (VmHWM) {rss_mib:.1} MiB",
        elapsed.as_secs_f64(),
        ROWS as f64 / worker_commits.max(1) as f64,
    );

    let clients = defaults.pipelines;
    let tps = bench::pgbench_tps(db.url().expose(), clients, PGBENCH_SECS);
    db.drop_db().await;
    println!(
        "pgbench_tps={tps:.0} clients={clients} (one-row UPDATE per transaction, {PGBENCH_SECS} s, same durable cluster)"
    );
    println!(
        "worker_commits_per_s={commits_per_second:.0} ({:.0}% of pgbench_tps); deliveries_per_s is {:.1}x pgbench_tps",
        100.0 * commits_per_second / tps,
        per_second / tps
    );
    println!("deliveries_per_s={per_second:.0}");
    println!("rss_mib={rss_mib:.1}");
}
