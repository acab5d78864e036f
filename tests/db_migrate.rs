//! `psctl db migrate` against real PostgreSQL: up/down/up with a verified backup first, a
//! database ahead of the binary refused, and the production guard refusing a downgrade.

mod support;

use support::db::{TestDb, psctl};

async fn applied_versions(pool: &sqlx::PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn table_exists(pool: &sqlx::PgPool, table: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn known_versions() -> Vec<i64> {
    psctl::db::migrate::known_migrations(&psctl::db::migrate::MIGRATOR)
        .iter()
        .map(|k| k.version)
        .collect()
}

#[tokio::test]
async fn migrate_up_down_up_backs_up_first_and_audits() {
    let db = TestDb::create("migrate").await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let backups_arg = backups.to_str().unwrap();
    let known = known_versions();

    let dry = psctl(
        dir.path(),
        &[
            "db",
            "migrate",
            "--database-url",
            &db.url,
            "--dry-run",
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(dry.code, 0, "{dry:#?}");
    assert_eq!(
        dry.json()["plan"]["apply"].as_array().unwrap().len(),
        known.len()
    );
    let pool = db.pool().await;
    assert!(
        !table_exists(&pool, "invoices").await,
        "--dry-run changed the database"
    );

    let up = psctl(
        dir.path(),
        &[
            "db",
            "migrate",
            "--database-url",
            &db.url,
            "--yes",
            "--backup-dir",
            backups_arg,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(up.code, 0, "{up:#?}");
    assert_eq!(applied_versions(&pool).await, known);
    let backup_file = up.json()["backup"]["file"].as_str().unwrap().to_owned();
    assert!(std::path::Path::new(&backup_file).exists());
    assert!(std::path::Path::new(&format!("{backup_file}.manifest.json")).exists());

    let again = psctl(
        dir.path(),
        &[
            "db",
            "migrate",
            "--database-url",
            &db.url,
            "--yes",
            "--backup-dir",
            backups_arg,
        ],
        &[],
    );
    assert_eq!(again.code, 0, "{again:#?}");
    assert!(again.stderr.contains("up to date"), "{again:#?}");

    let down = psctl(
        dir.path(),
        &[
            "db",
            "migrate",
            "--database-url",
            &db.url,
            "--down",
            "1",
            "--yes",
            "--backup-dir",
            backups_arg,
        ],
        &[],
    );
    assert_eq!(down.code, 0, "{down:#?}");
    assert_eq!(applied_versions(&pool).await, known[..known.len() - 1]);
    // The newest migration's table is gone; the audit trail (an older migration) stays.
    assert!(!table_exists(&pool, "deposit_quarantine").await);
    assert!(table_exists(&pool, "ops_audit").await);

    let down2 = psctl(
        dir.path(),
        &[
            "db",
            "migrate",
            "--database-url",
            &db.url,
            "--down",
            "2",
            "--yes",
            "--backup-dir",
            backups_arg,
        ],
        &[],
    );
    assert_eq!(down2.code, 0, "{down2:#?}");
    assert_eq!(applied_versions(&pool).await, known[..known.len() - 3]);

    let up2 = psctl(
        dir.path(),
        &[
            "db",
            "migrate",
            "--database-url",
            &db.url,
            "--yes",
            "--backup-dir",
            backups_arg,
        ],
        &[],
    );
    assert_eq!(up2.code, 0, "{up2:#?}");
    assert_eq!(applied_versions(&pool).await, known);
    assert!(table_exists(&pool, "ops_audit").await);
    // The table was recreated by this run, so its success row is the only one and chains from nothing.
    let actions: Vec<(String, String)> =
        sqlx::query_as("SELECT action, outcome FROM ops_audit ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        actions,
        vec![("db.migrate".to_owned(), "succeeded".to_owned())]
    );
    let verify = psctl(
        dir.path(),
        &["db", "verify", "--database-url", &db.url],
        &[],
    );
    assert_eq!(verify.code, 0, "{verify:#?}");
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_database_ahead_of_the_binary_is_refused() {
    let db = TestDb::create("ahead").await;
    let pool = db.pool().await;
    support::db::migrate(&pool).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (20991231000001, 'from the future', true, '\\x00', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "db",
            "migrate",
            "--database-url",
            &db.url,
            "--yes",
            "--backup-dir",
            "b",
        ],
        vec![
            "db",
            "migrate",
            "--database-url",
            &db.url,
            "--down",
            "1",
            "--yes",
            "--backup-dir",
            "b",
        ],
    ] {
        let run = psctl(dir.path(), &args, &[]);
        assert_eq!(run.code, 2, "{run:#?}");
        assert!(
            run.stderr.contains("ahead of the binary") && run.stderr.contains("20991231000001"),
            "{run:#?}"
        );
    }
    assert!(
        !dir.path().join("b").exists(),
        "a refused migration must not even take a backup"
    );
    assert_eq!(
        applied_versions(&pool).await.len(),
        known_versions().len() + 1
    );
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_changed_migration_is_refused() {
    let db = TestDb::create("checksum").await;
    let pool = db.pool().await;
    support::db::migrate(&pool).await;
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\xdead' WHERE version = (SELECT min(version) FROM _sqlx_migrations)")
        .execute(&pool)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = psctl(
        dir.path(),
        &["db", "migrate", "--database-url", &db.url, "--dry-run"],
        &[],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("checksum differs"), "{run:#?}");
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn the_production_guard_refuses_a_down_migration() {
    let db = TestDb::create("prodguard").await;
    let pool = db.pool().await;
    support::db::migrate(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("psctl.yaml"),
        "environments:\n  prod:\n    kube_context: prod-cluster\n    production: true\n    database_url_env: PROD_DB_URL\n",
    )
    .unwrap();
    let env = [("PROD_DB_URL", db.url.as_str())];
    let plain = psctl(
        dir.path(),
        &[
            "--env",
            "prod",
            "db",
            "migrate",
            "--down",
            "1",
            "--yes",
            "--backup-dir",
            "b",
        ],
        &env,
    );
    assert_eq!(plain.code, 2, "{plain:#?}");
    assert!(
        plain
            .stderr
            .contains("refusing to downgrade the schema of production environment `prod`"),
        "{plain:#?}"
    );
    let forced = psctl(
        dir.path(),
        &[
            "--env",
            "prod",
            "db",
            "migrate",
            "--down",
            "1",
            "--force-production",
            "--yes",
            "--backup-dir",
            "b",
        ],
        &env,
    );
    assert_eq!(forced.code, 2, "{forced:#?}");
    assert!(
        forced.stderr.contains("typed confirmation on a terminal"),
        "{forced:#?}"
    );
    assert_eq!(
        applied_versions(&pool).await,
        known_versions(),
        "the guard must refuse before any change"
    );
    assert!(!dir.path().join("b").exists());
    // Upgrading production is allowed (the URL came from the configured variable).
    let up = psctl(
        dir.path(),
        &[
            "--env",
            "prod",
            "db",
            "migrate",
            "--yes",
            "--backup-dir",
            "b",
        ],
        &env,
    );
    assert_eq!(up.code, 0, "{up:#?}");
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn an_unreachable_database_exits_3_without_printing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:1/nowhere",
        support::db::FAKE_PASSWORD
    );
    for args in [
        vec!["db", "verify", "--database-url", &url],
        vec!["audit", "--database-url", &url],
    ] {
        let run = psctl(dir.path(), &args, &[]);
        assert_eq!(run.code, 3, "{run:#?}");
        assert!(run.stderr.contains("127.0.0.1:1/nowhere"), "{run:#?}");
    }
    let missing = psctl(dir.path(), &["db", "verify"], &[]);
    assert_eq!(missing.code, 2, "{missing:#?}");
    assert!(missing.stderr.contains("no database URL"), "{missing:#?}");
}
