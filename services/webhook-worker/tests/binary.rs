//! The real `problemsolver-webhook-worker` binary: `--help`, configuration errors, and an
//! end-to-end `--once` run with AES-encrypted merchant secrets whose logs must not contain any
//! secret.

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
        "ENCRYPTION_MASTER_KEY",
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
