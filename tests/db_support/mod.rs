//! Shared helpers of psctl's database tests: a throwaway database per test on the PostgreSQL
//! named by `PSCTL_TEST_DATABASE_URL` (an admin URL), the real `psctl` binary, and seed data
//! shaped like the services write it.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};

/// A password the tests put in every URL: trust authentication ignores it, and it must never
/// appear in anything psctl prints.
pub const FAKE_PASSWORD: &str = "Sup3rS3cretPw-do-not-print";

pub fn admin_url() -> String {
    match std::env::var("PSCTL_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "PSCTL_TEST_DATABASE_URL is not set: start PostgreSQL with `eval \"$(scripts/postgres.sh start)\"` \
             (scripts/test.sh does this) and run the tests again"
        ),
    }
}

/// The admin URL pointed at `database`, carrying [`FAKE_PASSWORD`].
pub fn url_for(database: &str) -> String {
    let mut url = url::Url::parse(&admin_url()).expect("PSCTL_TEST_DATABASE_URL is a URL");
    url.set_password(Some(FAKE_PASSWORD))
        .expect("URL with a host");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// A uniquely named database, dropped by [`TestDb::drop_now`].
pub struct TestDb {
    pub name: String,
    pub url: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "psctl_{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

impl TestDb {
    pub async fn create(prefix: &str) -> Self {
        let name = unique_name(prefix);
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("connect with PSCTL_TEST_DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let url = url_for(&name);
        Self { name, url }
    }

    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url)
            .await
            .unwrap()
    }

    pub async fn drop_now(self) {
        drop_database(&self.name).await;
    }
}

pub async fn drop_database(name: &str) {
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `psctl args` in `dir` with no configuration file and stdin closed; asserts that the
/// test password appears nowhere in the output.
pub fn psctl(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_psctl"));
    command
        .current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::null());
    for variable in [
        "DATABASE_URL",
        "PSCTL_CONFIG",
        "PSCTL_ENV",
        "PSCTL_AUDIT_HMAC_KEY",
        "PSCTL_BACKUP_DIR",
        "PSCTL_OUTPUT",
    ] {
        command.env_remove(variable);
    }
    command.env("NO_COLOR", "1");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run the psctl binary");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        !run.stdout.contains(FAKE_PASSWORD) && !run.stderr.contains(FAKE_PASSWORD),
        "the database password was printed: {run:#?}"
    );
    run
}

/// Applies the embedded migrations the way the services do.
pub async fn migrate(pool: &PgPool) {
    psctl::db::migrate::MIGRATOR.run(pool).await.unwrap();
}

/// `paid` invoices paid the way the poller does it (deposit matched → payment → ledger credit →
/// webhook row → invoice paid), plus one pending invoice. Returns the sum paid.
pub async fn seed_payments(pool: &PgPool, paid: u32) {
    let merchant: sqlx::types::Uuid = sqlx::query_scalar(
        "INSERT INTO merchants (name, webhook_url, webhook_secret_ciphertext, webhook_secret_nonce) \
         VALUES ('m', 'https://merchant.example/hook', '\\x01', decode(repeat('ab', 12), 'hex')) RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    for n in 0..paid {
        let mut tx = pool.begin().await.unwrap();
        let invoice: sqlx::types::Uuid = sqlx::query_scalar(
            "SELECT id FROM create_invoice($1, 'USDT', 'TRX', 'TADDR', $2::numeric)",
        )
        .bind(merchant)
        .bind(format!("{}.25", 10 + n))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        let deposit: i64 = sqlx::query_scalar(
            "INSERT INTO deposit_raw (binance_deposit_id, tx_id, coin, network, address, amount, binance_status, \
             insert_time, matched_invoice_id, processed_at, outcome) \
             SELECT 'dep-' || $2, 'tx-' || $2, 'USDT', 'TRX', 'TADDR', publish_amount, 1, now(), id, now(), 'credited' \
             FROM invoices WHERE id = $1 RETURNING id",
        )
        .bind(invoice)
        .bind(n.to_string())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        let payment: sqlx::types::Uuid = sqlx::query_scalar(
            "INSERT INTO payments (invoice_id, deposit_id, merchant_id, coin, network, amount, tx_id) \
             SELECT $1, d.id, $3, d.coin, d.network, d.amount, d.tx_id FROM deposit_raw d WHERE d.id = $2 RETURNING id",
        )
        .bind(invoice)
        .bind(deposit)
        .bind(merchant)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO ledger_entries (merchant_id, invoice_id, payment_id, entry_type, coin, change_amount) \
             SELECT merchant_id, invoice_id, id, 'credit', coin, amount FROM payments WHERE id = $1",
        )
        .bind(payment)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO webhook_queue (merchant_id, invoice_id, event_type, payload) \
             VALUES ($1, $2, 'invoice.paid', '{}'::jsonb)",
        )
        .bind(merchant)
        .bind(invoice)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query("UPDATE invoices SET status = 'paid', paid_at = now() WHERE id = $1")
            .bind(invoice)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    sqlx::query("SELECT create_invoice($1, 'USDT', 'TRX', 'TADDR', 99)")
        .bind(merchant)
        .execute(pool)
        .await
        .unwrap();
}

/// Appends `count` audit rows through the library, as any psctl command would.
pub async fn seed_audit(pool: &PgPool, count: u32) {
    use psctl::audit::{AuditEntry, AuditSink as _, ChainKey, PostgresAudit};
    let sink = PostgresAudit::new(pool.clone(), ChainKey::from_env());
    for n in 0..count {
        let entry = AuditEntry::new("deploy", "problemsolver-webhook")
            .environment("test")
            .transition(format!("rev {n}"), format!("rev {}", n + 1))
            .outcome("succeeded")
            .details(serde_json::json!({"tag": format!("1.0.{n}"), "ratio": 0.25, "steps": [10, 30, 60, 100]}));
        sink.record(&entry).await.unwrap();
    }
}
