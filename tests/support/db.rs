//! Throwaway databases for tests: one per test on a PostgreSQL the test names by an admin URL
//! (`PSCTL_TEST_DATABASE_URL` for the database tests, the sandbox's `DATABASE_URL` for the
//! end-to-end tests), dropped when the [`TestDb`] is dropped, also when an assertion fails;
//! the psctl runs of the database tests; and seed data shaped like the services write it.

use std::path::Path;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};

use super::{Psctl, Run};

/// A password the tests put in every URL: trust authentication ignores it, and it must never
/// appear in anything psctl prints.
pub const FAKE_PASSWORD: &str = "Sup3rS3cretPw-do-not-print";

/// The admin URL of the database tests' PostgreSQL.
pub fn admin_url() -> String {
    match std::env::var("PSCTL_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "PSCTL_TEST_DATABASE_URL is not set: start PostgreSQL with `eval \"$(scripts/postgres.sh start)\"` \
             (scripts/test.sh does this) and run the tests again"
        ),
    }
}

/// `admin` pointed at `database`, carrying `password` when given.
pub fn url_on(admin: &str, database: &str, password: Option<&str>) -> String {
    let mut url = url::Url::parse(admin).expect("the admin URL is a URL");
    if password.is_some() {
        url.set_password(password).expect("URL with a host");
    }
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// The database tests' admin URL pointed at `database`, carrying [`FAKE_PASSWORD`].
pub fn url_for(database: &str) -> String {
    url_on(&admin_url(), database, Some(FAKE_PASSWORD))
}

/// A database name unique to this process and call.
pub fn unique_name(prefix: &str) -> String {
    format!("psctl_{}", super::unique(prefix).replace('-', "_"))
}

/// A uniquely named database, dropped (`WITH (FORCE)`) when this value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
    dropped: bool,
}

impl TestDb {
    /// A new empty database on the database tests' PostgreSQL; its URL carries
    /// [`FAKE_PASSWORD`].
    pub async fn create(prefix: &str) -> Self {
        let name = unique_name(prefix);
        Self::create_on(&admin_url(), &name, Some(FAKE_PASSWORD)).await
    }

    /// A new empty database `name` on the server of `admin`.
    pub async fn create_on(admin: &str, name: &str, password: Option<&str>) -> Self {
        let mut connection = PgConnection::connect(admin)
            .await
            .expect("connect with the admin database URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        connection.close().await.unwrap();
        Self {
            name: name.to_owned(),
            url: url_on(admin, name, password),
            admin: admin.to_owned(),
            dropped: false,
        }
    }

    /// A database the test expects psctl to create (a restore target): not created here, but
    /// dropped like the others if it exists.
    pub fn reserve(prefix: &str) -> Self {
        let name = unique_name(prefix);
        Self {
            url: url_for(&name),
            name,
            admin: admin_url(),
            dropped: false,
        }
    }

    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url)
            .await
            .unwrap()
    }

    /// Drops the database now (the end of a passing test), reporting a failure.
    pub async fn drop_now(mut self) {
        self.dropped = true;
        drop_database(&self.admin, &self.name)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin, name) = (self.admin.clone(), self.name.clone());
        super::run_detached(&format!("database {name}"), async move {
            drop_database(&admin, &name).await
        });
    }
}

async fn drop_database(admin: &str, name: &str) -> Result<(), String> {
    let mut connection = PgConnection::connect(admin)
        .await
        .map_err(|e| format!("connect to drop {name}: {e}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut connection)
    .await
    .map_err(|e| format!("DROP DATABASE {name}: {e}"))?;
    let _ = connection.close().await;
    Ok(())
}

/// Runs `psctl args` in `dir` with no configuration file; asserts that the test password
/// appears nowhere in the output.
pub fn psctl(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Psctl::new().current_dir(dir).args(args);
    for (name, value) in env {
        command = command.env(name, value);
    }
    let run = command.run();
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
