//! Delivery throughput of one worker process: a fresh database with 60,000 due webhooks, the
//! real `problemsolver-webhook-worker --once` binary, and a loopback merchant sink (keep-alive)
//! that verifies every signature. The last line is `deliveries_per_s=N rss_mib=M`, where M is
//! the worker process's peak resident set (VmHWM from /proc/<pid>/status).
//!
//! Rate limits are lifted for the run (the runbook defaults of 1000/s global and 10/s per
//! endpoint would cap the figure, not measure it). Needs `PSCTL_TEST_DATABASE_URL`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use problemsolver_core::Secret;
use problemsolver_core::crypto::{MasterKey, NewMerchant, create_merchant};
use problemsolver_core::testing::TestDb;
use problemsolver_stubs::merchant::MerchantSink;

const ROWS: i64 = 60_000;
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
    let db = TestDb::with_pool_size("webhook_bench", 4).await;
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
    eprintln!("enqueued {ROWS} webhooks; starting the worker");

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
    db.drop_db().await;

    let per_second = ROWS as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{ROWS} deliveries in {:.2} s (process start to exit, including connecting); worker peak RSS (VmHWM) {:.1} MiB",
        elapsed.as_secs_f64(),
        peak_kib as f64 / 1024.0
    );
    println!(
        "deliveries_per_s={per_second:.0} rss_mib={:.1}",
        peak_kib as f64 / 1024.0
    );
}
