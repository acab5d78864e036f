//! The real `problemsolver-webhook-worker` binary: `--help`, configuration errors, and an
//! end-to-end `--once` run with AES-encrypted merchant secrets whose logs must not contain any
//! secret.

mod common;

use std::net::SocketAddr;
use std::process::Output;

use problemsolver_core::Secret;
use problemsolver_core::crypto::{MasterKey, NewMerchant, create_merchant};
use problemsolver_core::testing::TestDb;
use problemsolver_stubs::merchant::{Behaviour, MerchantSink};

const BIN: &str = env!("CARGO_BIN_EXE_problemsolver-webhook-worker");
/// Test-only values; the assertions check that none of them ever reaches the output.
const MASTER_KEY_HEX: &str = "7c1d5e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
const WHSEC_BODY: &str = "c2VjcmV0LW1lcmNoYW50LWtleS1kby1ub3QtbG9nLWl0";

fn whsec() -> String {
    format!("whsec_{WHSEC_BODY}")
}

async fn run(envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (name, value) in envs {
        command.env(name, value);
    }
    command.args(args).output().await.unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn help_documents_every_variable() {
    let output = run(&[], &["--help"]).await;
    assert!(output.status.success());
    let help = text(&output);
    for name in [
        "--once",
        "DATABASE_URL",
        "WEBHOOK_SECRET",
        "ENCRYPTION_MASTER_KEY",
        "REDIS_URL",
        "SENTRY_DSN",
        "WEBHOOK_RATE_LIMIT_REPLICAS",
        "WEBHOOK_RATE_LIMIT_PREFIX",
        "METRICS_ADDR",
        "RUST_LOG",
        "LOG_FORMAT",
        "WEBHOOK_ALLOW_INSECURE_TARGETS",
        "WEBHOOK_GLOBAL_RPS",
        "WEBHOOK_ENDPOINT_RPS",
        "WEBHOOK_CONCURRENCY",
        "WEBHOOK_BATCH_SIZE",
        "WEBHOOK_LEASE_SECS",
        "WEBHOOK_BACKOFF_BASE_MS",
        "WEBHOOK_BREAKER_FAILURES",
        "WEBHOOK_SHUTDOWN_GRACE_SECS",
    ] {
        assert!(
            help.contains(name),
            "--help does not mention {name}:\n{help}"
        );
    }
}

#[tokio::test]
async fn configuration_errors_name_the_variable_and_never_echo_secrets() {
    let missing = run(&[("ENCRYPTION_MASTER_KEY", MASTER_KEY_HEX)], &["--once"]).await;
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("DATABASE_URL"),
        "{}",
        text(&missing)
    );

    let bad_key = run(
        &[
            ("DATABASE_URL", "postgres://u:pw-never-shown@127.0.0.1:1/db"),
            ("ENCRYPTION_MASTER_KEY", "short-secret-value"),
        ],
        &["--once"],
    )
    .await;
    assert!(!bad_key.status.success());
    let out = text(&bad_key);
    assert!(out.contains("ENCRYPTION_MASTER_KEY"), "{out}");
    assert!(
        !out.contains("short-secret-value") && !out.contains("pw-never-shown"),
        "{out}"
    );

    let unreachable = run(
        &[
            ("DATABASE_URL", "postgres://u:pw-never-shown@127.0.0.1:1/db"),
            ("ENCRYPTION_MASTER_KEY", MASTER_KEY_HEX),
        ],
        &["--once"],
    )
    .await;
    assert!(!unreachable.status.success());
    let out = text(&unreachable);
    assert!(out.contains("cannot connect to the database"), "{out}");
    assert!(
        !out.contains("pw-never-shown") && !out.contains(MASTER_KEY_HEX),
        "{out}"
    );

    // WEBHOOK_SECRET and its older name set to different keys: refused, naming both, showing neither.
    let other_key = "ab".repeat(32);
    let conflict = run(
        &[
            ("DATABASE_URL", "postgres://u:pw-never-shown@127.0.0.1:1/db"),
            ("WEBHOOK_SECRET", MASTER_KEY_HEX),
            ("ENCRYPTION_MASTER_KEY", &other_key),
        ],
        &["--once"],
    )
    .await;
    assert!(!conflict.status.success());
    let out = text(&conflict);
    assert!(
        out.contains("`WEBHOOK_SECRET`") && out.contains("`ENCRYPTION_MASTER_KEY`"),
        "{out}"
    );
    assert!(
        !out.contains(MASTER_KEY_HEX) && !out.contains(&other_key),
        "{out}"
    );
    // The runbook's name alone gets past the key check (to the unreachable database).
    let runbook_name = run(
        &[
            ("DATABASE_URL", "postgres://u:pw-never-shown@127.0.0.1:1/db"),
            ("WEBHOOK_SECRET", MASTER_KEY_HEX),
        ],
        &["--once"],
    )
    .await;
    assert!(!runbook_name.status.success());
    assert!(
        text(&runbook_name).contains("cannot connect to the database"),
        "{}",
        text(&runbook_name)
    );
    // A malformed SENTRY_DSN stops the start without being shown.
    let bad_dsn = run(
        &[
            ("SENTRY_DSN", "not-a-dsn-secret-part"),
            ("WEBHOOK_SECRET", MASTER_KEY_HEX),
        ],
        &["--once"],
    )
    .await;
    assert!(!bad_dsn.status.success());
    let out = text(&bad_dsn);
    assert!(
        out.contains("SENTRY_DSN") && !out.contains("not-a-dsn-secret-part"),
        "{out}"
    );

    let bad_number = run(&[("WEBHOOK_CONCURRENCY", "0")], &["--once"]).await;
    assert!(!bad_number.status.success());
    assert!(text(&bad_number).contains("WEBHOOK_CONCURRENCY"));
}

#[tokio::test]
async fn once_delivers_with_encrypted_secrets_and_logs_no_secret() {
    let db = TestDb::new("webhook_binary").await;
    let sink = MerchantSink::start(SocketAddr::from(([127, 0, 0, 1], 0)), &whsec())
        .await
        .unwrap();
    let failing = MerchantSink::start(SocketAddr::from(([127, 0, 0, 1], 0)), &whsec())
        .await
        .unwrap();
    failing.set_behaviour(Behaviour {
        fail_rate: 1.0,
        status: 500,
        ..Behaviour::default()
    });
    let key = MasterKey::parse("ENCRYPTION_MASTER_KEY", MASTER_KEY_HEX).unwrap();
    let mut merchants = Vec::new();
    for url in [sink.url("/ok"), failing.url("/fail")] {
        let merchant = NewMerchant {
            name: "binary test".to_owned(),
            webhook_url: url,
            webhook_secret: Secret::new(whsec()),
        };
        merchants.push(create_merchant(&db.pool, &key, &merchant).await.unwrap());
    }
    for merchant in &merchants {
        sqlx::query(
            "INSERT INTO webhook_queue (merchant_id, event_type, payload)
             SELECT $1, 'invoice.paid', jsonb_build_object('n', g) FROM generate_series(1, 4) g",
        )
        .bind(merchant)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let url = db.url();

    let output = run(
        &[
            ("DATABASE_URL", url.expose()),
            ("ENCRYPTION_MASTER_KEY", MASTER_KEY_HEX),
            ("WEBHOOK_ALLOW_INSECURE_TARGETS", "true"),
            ("WEBHOOK_BREAKER_FAILURES", "2"),
            // One at a time, so the breaker's effect on later calls is exact.
            ("WEBHOOK_CONCURRENCY", "1"),
            ("WEBHOOK_PIPELINES", "1"),
            ("WEBHOOK_BATCH_SIZE", "4"),
            ("RUST_LOG", "trace"),
            ("LOG_FORMAT", "json"),
        ],
        &["--once"],
    )
    .await;

    let logs = text(&output);
    assert!(output.status.success(), "{logs}");
    assert!(
        logs.contains("SSRF DEFENCE IS OFF"),
        "the insecure setting must be announced"
    );
    assert_eq!(sink.summary().accepted, 4);
    assert_eq!(sink.summary().unverified, 0);
    assert_eq!(
        failing.summary().received,
        2,
        "the breaker stopped calls to the failing merchant"
    );
    for secret in [WHSEC_BODY, MASTER_KEY_HEX, "secret-merchant-key"] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    db.drop_db().await;
}

#[tokio::test]
async fn serves_probes_and_on_sigterm_finishes_in_flight_work_and_releases_the_rest() {
    let db = TestDb::new("webhook_sigterm").await;
    let sink = MerchantSink::start(SocketAddr::from(([127, 0, 0, 1], 0)), &whsec())
        .await
        .unwrap();
    sink.set_behaviour(Behaviour {
        delay_ms: 300,
        ..Behaviour::default()
    });
    let key = MasterKey::parse("ENCRYPTION_MASTER_KEY", MASTER_KEY_HEX).unwrap();
    let merchant = NewMerchant {
        name: "sigterm test".to_owned(),
        webhook_url: sink.url("/slow"),
        webhook_secret: Secret::new(whsec()),
    };
    let merchant = create_merchant(&db.pool, &key, &merchant).await.unwrap();
    sqlx::query(
        "INSERT INTO webhook_queue (merchant_id, event_type, payload)
         SELECT $1, 'invoice.paid', jsonb_build_object('n', g) FROM generate_series(1, 20) g",
    )
    .bind(merchant)
    .execute(&db.pool)
    .await
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let url = db.url();
    let mut child = tokio::process::Command::new(BIN)
        .env_clear()
        .envs([
            ("DATABASE_URL", url.expose().as_str()),
            ("ENCRYPTION_MASTER_KEY", MASTER_KEY_HEX),
            ("WEBHOOK_ALLOW_INSECURE_TARGETS", "true"),
            ("WEBHOOK_ENDPOINT_RPS", "1000"),
            ("WEBHOOK_CONCURRENCY", "4"),
            ("WEBHOOK_PIPELINES", "1"),
            ("WEBHOOK_BATCH_SIZE", "20"),
            // (⌈20 / 4⌉ + 1) × 5 s + 5 s fits the default 60 s lease.
            ("WEBHOOK_REQUEST_TIMEOUT_SECS", "5"),
            ("METRICS_ADDR", metrics_addr.as_str()),
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{metrics_addr}");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(response) = http.get(format!("{base}/ready")).send().await
            && response.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "/ready never answered 200");
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "webhook_deliveries_total",
        "webhook_dead_letters_total",
        "webhook_delivery_duration_seconds_bucket",
        "webhook_queue_depth",
        "worker_health_status 1",
        "circuit_breaker_opens_total",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }

    // Deliveries are in flight (each takes 300 ms at the sink); ask the worker to stop.
    for _ in 0..100 {
        if sink.arrived() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(sink.arrived() > 0, "no delivery started");
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), child.wait())
        .await
        .expect("the worker must exit promptly after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    let counts: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT status, attempts, count(*) FROM webhook_queue WHERE lease_owner IS NULL GROUP BY 1, 2 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let delivered = sink.summary().accepted;
    assert!(delivered > 0, "in-flight deliveries finish: {counts:?}");
    assert!(delivered < 20, "the worker stopped early: {counts:?}");
    assert_eq!(
        counts,
        vec![
            ("delivered".to_owned(), 1, delivered as i64),
            ("pending".to_owned(), 0, 20 - delivered as i64),
        ],
        "finished rows are recorded, the rest released without an attempt, no lease left"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_lease_too_short_for_pipelines_times_batch_is_refused_at_start() {
    // The old default batch (200) with the other defaults: two pipelines share 64 slots.
    let output = run(
        &[
            ("WEBHOOK_BATCH_SIZE", "200"),
            ("DATABASE_URL", "postgres://u:pw-never-shown@127.0.0.1:1/db"),
            ("ENCRYPTION_MASTER_KEY", MASTER_KEY_HEX),
        ],
        &["--once"],
    )
    .await;
    assert!(!output.status.success());
    let out = text(&output);
    for expected in [
        "`WEBHOOK_LEASE_SECS` (60) is shorter than the worst case of one claimed batch (86 s)",
        "`WEBHOOK_PIPELINES` (2) batches of `WEBHOOK_BATCH_SIZE` (200) rows share `WEBHOOK_CONCURRENCY` (64)",
        "`WEBHOOK_REQUEST_TIMEOUT_SECS` (10 s)",
        "Set `WEBHOOK_LEASE_SECS` to at least 86",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    assert!(
        !out.contains("cannot connect"),
        "refused before connecting:\n{out}"
    );
    // Raising the lease as the message says is accepted (the run then fails on the database).
    let output = run(
        &[
            ("WEBHOOK_BATCH_SIZE", "200"),
            ("WEBHOOK_LEASE_SECS", "86"),
            ("DATABASE_URL", "postgres://u:pw-never-shown@127.0.0.1:1/db"),
            ("ENCRYPTION_MASTER_KEY", MASTER_KEY_HEX),
        ],
        &["--once"],
    )
    .await;
    let out = text(&output);
    assert!(
        out.contains("cannot connect to the database"),
        "the configuration passed:\n{out}"
    );
}

/// The merchant endpoint of the crash test: a request for the poison webhook makes the test
/// SIGKILL the worker process (as a delivery that crashes or OOM-kills it would); every other
/// request is accepted.
#[derive(Default)]
struct Killer {
    poison: std::sync::Mutex<String>,
    worker_pid: std::sync::atomic::AtomicU32,
    kills: std::sync::atomic::AtomicU32,
    accepted: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

async fn killer_endpoint(
    axum::extract::State(killer): axum::extract::State<std::sync::Arc<Killer>>,
    headers: axum::http::HeaderMap,
) -> axum::http::StatusCode {
    use std::sync::atomic::Ordering;
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if id == *killer.poison.lock().unwrap() {
        let pid = killer.worker_pid.load(Ordering::SeqCst);
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -KILL {pid}");
        killer.kills.fetch_add(1, Ordering::SeqCst);
        // The worker is gone; it never sees an answer.
        std::future::pending::<()>().await;
    }
    *killer.accepted.lock().unwrap().entry(id).or_insert(0) += 1;
    axum::http::StatusCode::NO_CONTENT
}

#[tokio::test]
async fn a_webhook_whose_delivery_kills_the_worker_is_dead_after_max_attempts_restarts() {
    use std::os::unix::process::ExitStatusExt as _;
    use std::sync::atomic::Ordering;
    const MAX_ATTEMPTS: u32 = 3;

    let db = TestDb::new("webhook_poison").await;
    common::log_leases(&db.pool).await;
    let killer = std::sync::Arc::new(Killer::default());
    let app = axum::Router::new()
        .fallback(killer_endpoint)
        .with_state(std::sync::Arc::clone(&killer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let merchant_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let key = MasterKey::parse("ENCRYPTION_MASTER_KEY", MASTER_KEY_HEX).unwrap();
    let merchant = create_merchant(
        &db.pool,
        &key,
        &NewMerchant {
            name: "crash test".to_owned(),
            webhook_url: format!("http://{merchant_addr}/hooks"),
            webhook_secret: Secret::new(whsec()),
        },
    )
    .await
    .unwrap();
    // The poison row is the oldest, so it is in the first batch, with innocent rows around it.
    let poison: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO webhook_queue (merchant_id, event_type, payload, max_attempts, next_attempt_at)
         VALUES ($1, 'invoice.paid', '{\"poison\": true}', $2, now() - interval '1 minute') RETURNING id",
    )
    .bind(merchant)
    .bind(MAX_ATTEMPTS as i32)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    *killer.poison.lock().unwrap() = format!("msg_{}", poison.simple());
    let innocents: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO webhook_queue (merchant_id, event_type, payload)
         SELECT $1, 'invoice.paid', jsonb_build_object('n', g) FROM generate_series(1, 9) g RETURNING id",
    )
    .bind(merchant)
    .fetch_all(&db.pool)
    .await
    .unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let url = db.url();
    // Two pipelines of 4 rows over 4 slots with a 1 s timeout: the worst case of a batch is
    // (⌈8 / 4⌉ + 1) × 1 s (+ 8 rows at 1000/s), so a 9 s lease passes the check with its 5 s margin.
    let env = [
        ("DATABASE_URL", url.expose().as_str()),
        ("ENCRYPTION_MASTER_KEY", MASTER_KEY_HEX),
        ("WEBHOOK_ALLOW_INSECURE_TARGETS", "true"),
        ("WEBHOOK_ENDPOINT_RPS", "1000"),
        ("WEBHOOK_PIPELINES", "2"),
        ("WEBHOOK_CONCURRENCY", "4"),
        ("WEBHOOK_BATCH_SIZE", "4"),
        ("WEBHOOK_REQUEST_TIMEOUT_SECS", "1"),
        ("WEBHOOK_LEASE_SECS", "9"),
        ("WEBHOOK_IDLE_POLL_MS", "100"),
        ("METRICS_ADDR", metrics_addr.as_str()),
    ];
    let settled = || async {
        let (poison_status, innocents_delivered): (String, i64) = sqlx::query_as(
            "SELECT (SELECT status FROM webhook_queue WHERE id = $1),
                    (SELECT count(*) FROM webhook_queue WHERE id <> $1 AND status = 'delivered')",
        )
        .bind(poison)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        poison_status == "dead" && innocents_delivered == innocents.len() as i64
    };

    let mut starts = 0;
    loop {
        starts += 1;
        assert!(
            starts <= MAX_ATTEMPTS + 1,
            "the worker was started {starts} times"
        );
        let mut child = tokio::process::Command::new(BIN)
            .env_clear()
            .envs(env)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        killer
            .worker_pid
            .store(child.id().unwrap(), Ordering::SeqCst);
        // Each run lasts until the poison row kills it, or until everything has settled.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        let killed = loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(
                    status.signal(),
                    Some(9),
                    "the worker exited on its own: {status}"
                );
                break true;
            }
            if settled().await {
                break false;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "run {starts}: neither killed nor settled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        if killed {
            continue;
        }
        // The run that dead-lettered the row counts it on /metrics.
        let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.lines().any(|l| l == "webhook_dead_letters_total 1"),
            "{metrics}"
        );
        let pid = child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = child.wait().await.unwrap();
        assert!(status.success(), "{status}");
        break;
    }

    assert_eq!(
        killer.kills.load(Ordering::SeqCst),
        MAX_ATTEMPTS,
        "one kill per attempt"
    );
    assert_eq!(starts, MAX_ATTEMPTS + 1);
    let (status, attempts, last_error): (String, i32, String) =
        sqlx::query_as("SELECT status, attempts, last_error FROM webhook_queue WHERE id = $1")
            .bind(poison)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("dead", MAX_ATTEMPTS as i32));
    assert!(last_error.contains("never completed"), "{last_error}");
    let details: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM system_events WHERE kind = 'webhook_dead_lettered'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(details["webhook_id"], poison.to_string());
    assert_eq!(details["attempts"], MAX_ATTEMPTS);
    // Once its first claim had died with the process, the row was only ever claimed alone, so
    // the later crashes took no batch of innocent rows down with it.
    let claims: Vec<(String, i64)> = sqlx::query_as(
        "SELECT l.owner, (SELECT count(*) FROM lease_log o WHERE o.owner = l.owner)
         FROM lease_log l WHERE l.row_id = $1 ORDER BY l.claimed_at",
    )
    .bind(poison)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(claims.len(), MAX_ATTEMPTS as usize + 1, "{claims:?}");
    assert!(claims[0].1 > 1, "the first claim was a batch: {claims:?}");
    assert!(
        claims[1..].iter().all(|(_, rows)| *rows == 1),
        "retried alone: {claims:?}"
    );
    // The rows around it were all delivered, none dead.
    let accepted = killer.accepted.lock().unwrap().clone();
    for id in &innocents {
        assert!(
            accepted.contains_key(&format!("msg_{}", id.simple())),
            "{id} never reached the merchant"
        );
    }
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_queue WHERE status = 'dead'")
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        1
    );
    db.drop_db().await;
}
