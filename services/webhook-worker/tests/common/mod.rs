//! Test support: a fresh migrated database per test, merchants, queue rows, and a worker wired
//! to them with fast timings.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use problemsolver_webhook_worker::backoff::Backoff;
use problemsolver_webhook_worker::breaker::BreakerPolicy;
use problemsolver_webhook_worker::client::ClientSettings;
use problemsolver_webhook_worker::metrics::Metrics;
use problemsolver_webhook_worker::signing::SigningKey;
use problemsolver_webhook_worker::ssrf::TargetPolicy;
use problemsolver_webhook_worker::worker::{SecretOpener, Worker, WorkerConfig};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

/// The secret every test merchant signs with (test data, not a real credential).
pub const SECRET: &str = "whsec_dGVzdC1zaWduaW5nLWtleS0wMTIzNDU2Nzg5YWJjZGVm";

pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("PSCTL_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "PSCTL_TEST_DATABASE_URL is not set: start Postgres with `eval \"$(scripts/postgres.sh start)\"` \
             (or run scripts/test.sh)"
        )
    })
}

impl TestDb {
    /// Creates `webhook_worker_<random>` and applies every migration.
    pub async fn new() -> Self {
        let admin_url = admin_url();
        let name = format!("webhook_worker_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to PSCTL_TEST_DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let url = database_url(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(&url)
            .await
            .unwrap();
        sqlx::migrate!("../../migrations").run(&pool).await.unwrap();
        Self {
            pool,
            name,
            admin_url,
        }
    }

    pub fn url(&self) -> String {
        database_url(&self.admin_url, &self.name)
    }

    pub async fn drop_db(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

/// The admin URL with its database path replaced by `name`.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[authority_end..]
        .find('/')
        .map(|i| i + authority_end)
        .unwrap_or(base.len());
    let mut url = format!("{}/{}", &base[..path_start], name);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// Test merchants store their secret "encrypted" as plain bytes; this opener reads them back.
/// The worker's own key handling (decode, sign, cache) is what the tests exercise.
pub struct PlainOpener;

impl SecretOpener for PlainOpener {
    fn open(&self, ciphertext: &[u8], _nonce: &[u8]) -> Result<SigningKey, String> {
        let text = std::str::from_utf8(ciphertext).map_err(|_| "not utf-8".to_owned())?;
        SigningKey::from_whsec(text).map_err(|e| e.to_string())
    }
}

pub async fn merchant(pool: &PgPool, url: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO merchants (name, webhook_url, webhook_secret_ciphertext, webhook_secret_nonce)
         VALUES ('test merchant', $1, $2, $3) RETURNING id",
    )
    .bind(url)
    .bind(SECRET.as_bytes())
    .bind(vec![0u8; 12])
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Enqueues `count` rows for `merchant` (no invoice) with `max_attempts`.
pub async fn enqueue(pool: &PgPool, merchant: Uuid, count: i64, max_attempts: i32) -> Vec<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO webhook_queue (merchant_id, event_type, payload, max_attempts)
         SELECT $1, 'invoice.paid', jsonb_build_object('n', g, 'amount', '0.009998'), $3
         FROM generate_series(1, $2) AS g RETURNING id",
    )
    .bind(merchant)
    .bind(count)
    .bind(max_attempts)
    .fetch_all(pool)
    .await
    .unwrap()
}

pub fn config(worker_id: &str) -> WorkerConfig {
    WorkerConfig {
        worker_id: worker_id.to_owned(),
        batch_size: 100,
        concurrency: 16,
        pipelines: 1,
        lease: Duration::from_secs(30),
        idle_poll: Duration::from_millis(50),
        backoff: Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(600),
        },
        breaker: BreakerPolicy {
            failure_threshold: 1000,
            open_for: Duration::from_secs(30),
        },
        global_rps: NonZeroU32::new(100_000).unwrap(),
        per_endpoint_rps: NonZeroU32::new(100_000).unwrap(),
        client: ClientSettings {
            policy: TargetPolicy::Insecure,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_idle_per_host: 16,
        },
        key_cache_ttl: Duration::from_secs(60),
    }
}

pub fn worker(pool: &PgPool, config: WorkerConfig) -> Arc<Worker> {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    Arc::new(Worker::new(pool.clone(), config, metrics, Arc::new(PlainOpener)).unwrap())
}

pub async fn sink() -> problemsolver_stubs::merchant::MerchantSink {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    problemsolver_stubs::merchant::MerchantSink::start(addr, SECRET)
        .await
        .unwrap()
}

#[derive(Debug, sqlx::FromRow)]
pub struct Row {
    pub id: Uuid,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub last_status_code: Option<i32>,
    pub lease_owner: Option<String>,
    /// Seconds from now until the row is due (negative when overdue).
    pub due_in: f64,
}

pub async fn row(pool: &PgPool, id: Uuid) -> Row {
    sqlx::query_as(
        "SELECT id, status, attempts, last_error, last_status_code, lease_owner,
                extract(epoch FROM next_attempt_at - now())::float8 AS due_in
         FROM webhook_queue WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub async fn count_status(pool: &PgPool, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_queue WHERE status = $1")
        .bind(status)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Makes every waiting row due now (instead of sleeping through back-off in tests).
pub async fn make_due(pool: &PgPool) {
    sqlx::query("UPDATE webhook_queue SET next_attempt_at = now() WHERE status = 'pending'")
        .execute(pool)
        .await
        .unwrap();
}

/// Records every lease a row is given, and when it was given up, from the database's side:
/// a claim sets `lease_owner` (logged with `now()`, the time its `lease_expires_at` counts
/// from); a completion or a takeover replaces it (logged with `clock_timestamp()`).
pub async fn log_leases(pool: &PgPool) {
    for statement in [
        "CREATE TABLE lease_log (
             row_id uuid NOT NULL, owner text NOT NULL, claimed_at timestamptz NOT NULL,
             expires_at timestamptz NOT NULL, ended_at timestamptz, PRIMARY KEY (row_id, owner))",
        "CREATE FUNCTION log_lease() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF OLD.lease_owner IS NOT NULL AND OLD.lease_owner IS DISTINCT FROM NEW.lease_owner THEN
                 UPDATE lease_log SET ended_at = clock_timestamp()
                  WHERE row_id = OLD.id AND owner = OLD.lease_owner;
             END IF;
             IF NEW.lease_owner IS NOT NULL AND NEW.lease_owner IS DISTINCT FROM OLD.lease_owner THEN
                 INSERT INTO lease_log VALUES (NEW.id, NEW.lease_owner, now(), NEW.lease_expires_at, NULL);
             END IF;
             RETURN NEW;
         END $$",
        "CREATE TRIGGER webhook_queue_lease_log AFTER UPDATE ON webhook_queue
         FOR EACH ROW EXECUTE FUNCTION log_lease()",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
}
