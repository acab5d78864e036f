//! Backup and verified restore of a database holding 1,000,000 ledger entries, through the same
//! library code `psctl db backup` / `psctl db restore` run (real `pg_dump` / `pg_restore`).
//!
//! Needs `PSCTL_TEST_DATABASE_URL` (an admin URL; `eval "$(scripts/postgres.sh start)"`).
//! Run: `cargo bench --bench db_backup`. The last line is `backup_restore_s=X size_mib=Y`.

use std::time::{Duration, Instant};

use psctl::audit::ChainKey;
use psctl::db::{self, DatabaseUrl, UrlSource, backup, migrate, restore, verify};
use sqlx::{Connection as _, PgConnection};

const LEDGER_ROWS: i64 = 1_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = std::env::var("PSCTL_TEST_DATABASE_URL").map_err(|_| {
        anyhow::anyhow!(
            "PSCTL_TEST_DATABASE_URL is not set; run `eval \"$(scripts/postgres.sh start)\"` first"
        )
    })?;
    let admin_url =
        DatabaseUrl::parse(&admin, UrlSource::EnvVar("PSCTL_TEST_DATABASE_URL".into()))?;
    let suffix = std::process::id();
    let live_name = format!("psctl_bench_live_{suffix}");
    let restored_name = format!("psctl_bench_restored_{suffix}");
    let live = admin_url.with_database(&live_name)?;
    let mut admin_conn = PgConnection::connect(admin_url.expose()).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{live_name}\""
    )))
    .execute(&mut admin_conn)
    .await?;
    let result = run(&live, &restored_name).await;
    for name in [&live_name, &restored_name] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut admin_conn)
        .await?;
    }
    result
}

async fn run(live: &DatabaseUrl, restored_name: &str) -> anyhow::Result<()> {
    let pool = db::connect(live, Duration::from_secs(10)).await?;
    migrate::MIGRATOR.run(&pool).await?;
    let seeding = Instant::now();
    let merchant: sqlx::types::Uuid = sqlx::query_scalar(
        "INSERT INTO merchants (name, webhook_url, webhook_secret_ciphertext, webhook_secret_nonce) \
         VALUES ('bench', 'https://merchant.example/hook', '\\x01', decode(repeat('ab', 12), 'hex')) RETURNING id",
    )
    .fetch_one(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO ledger_entries (merchant_id, entry_type, coin, change_amount, description, created_at) \
         SELECT $1, 'adjustment', 'USDT', (g % 1000) / 100.0, 'bench entry ' || g, now() - g * interval '1 second' \
         FROM generate_series(1, $2) AS g",
    )
    .bind(merchant)
    .bind(LEDGER_ROWS)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE ledger_entries").execute(&pool).await?;
    println!(
        "seeded {LEDGER_ROWS} ledger entries in {:.2}s",
        seeding.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let schema_version = migrate::current_version(&migrate::applied_migrations(&pool).await?);
    let started = Instant::now();
    let taken = backup::backup(live, dir.path(), schema_version, None).await?;
    let backup_s = started.elapsed().as_secs_f64();
    println!(
        "backup: {:.2}s, {} bytes, {} TOC entries, sha256 {}",
        backup_s, taken.size_bytes, taken.toc_entries, taken.sha256
    );

    let restore_started = Instant::now();
    let (plan, target) = restore::plan_restore(live, &taken.file, restored_name)?;
    restore::preflight(&pool, &plan, restored_name).await?;
    restore::execute(&pool, &plan, &target).await?;
    let restored = db::connect(&target, Duration::from_secs(10)).await?;
    let pending = migrate::plan_up(
        &migrate::known_migrations(&migrate::MIGRATOR),
        &migrate::applied_migrations(&restored).await?,
    )?;
    migrate::execute(&restored, &pending).await?;
    let report = verify::verify(&restored, &target.label(), ChainKey::Sha256).await?;
    let restore_s = restore_started.elapsed().as_secs_f64();
    let totals = report.totals.clone().unwrap_or_default();
    println!(
        "verified restore: {:.2}s ({} ledger entries, {} finding(s))",
        restore_s,
        totals.ledger_entries,
        report.findings().count()
    );
    anyhow::ensure!(
        totals.ledger_entries == LEDGER_ROWS,
        "restored {} ledger entries",
        totals.ledger_entries
    );
    anyhow::ensure!(
        report.is_clean(),
        "verification of the restored database found problems"
    );
    restored.close().await;
    pool.close().await;
    let size_mib = taken.size_bytes as f64 / (1024.0 * 1024.0);
    println!(
        "backup_restore_s={:.2} size_mib={:.1}",
        backup_s + restore_s,
        size_mib
    );
    Ok(())
}
