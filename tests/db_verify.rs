//! `psctl db verify` against real PostgreSQL: a healthy database has no findings; a tampered
//! `ops_audit` row is named; a disabled append-only trigger and a broken reconciliation are
//! findings with exit 1.

mod support;

use support::db::{TestDb, psctl};

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in {report:#}"))
}

#[tokio::test]
async fn a_healthy_database_passes_every_check() {
    let db = TestDb::create("healthy").await;
    let pool = db.pool().await;
    support::db::migrate(&pool).await;
    support::db::seed_payments(&pool, 3).await;
    support::db::seed_audit(&pool, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let run = psctl(
        dir.path(),
        &["db", "verify", "--database-url", &db.url, "-o", "json"],
        &[],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let report = run.json();
    for table in ["ledger_entries", "ops_audit"] {
        for operation in ["UPDATE", "DELETE", "TRUNCATE"] {
            let c = check(&report, &format!("append-only {table} {operation}"));
            assert_eq!(
                (c["ok"].as_bool(), c["detail"].as_str()),
                (Some(true), Some("refused")),
                "{c}"
            );
        }
    }
    assert_eq!(
        check(&report, "ops_audit hash chain")["detail"],
        "4 row(s) intact (sha256)"
    );
    // The probes were rolled back: nothing was added.
    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM merchants), (SELECT count(*) FROM ledger_entries), (SELECT count(*) FROM ops_audit)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counts, (1, 3, 4));
    let table = psctl(
        dir.path(),
        &["db", "verify", "--database-url", &db.url],
        &[],
    );
    assert_eq!(table.code, 0);
    assert!(
        table.stdout.contains("CHECK") && table.stdout.contains("TOTAL"),
        "{table:#?}"
    );
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_tampered_audit_row_breaks_the_chain_and_is_named() {
    let db = TestDb::create("tamper").await;
    let pool = db.pool().await;
    support::db::migrate(&pool).await;
    support::db::seed_audit(&pool, 5).await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM ops_audit ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let victim = ids[2];
    // Only a superuser can do this: switch the guard off, rewrite history, switch it back on.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE ops_audit DISABLE TRIGGER ops_audit_no_update_delete")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE ops_audit SET outcome = 'failed' WHERE id = $1")
        .bind(victim)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE ops_audit ENABLE TRIGGER ops_audit_no_update_delete")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let run = psctl(
        dir.path(),
        &["db", "verify", "--database-url", &db.url, "-o", "json"],
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    let report = run.json();
    assert_eq!(report["chain_broken_at"], victim);
    let chain = check(&report, "ops_audit hash chain");
    assert_eq!(chain["ok"], false);
    assert!(
        chain["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("first broken row id {victim}")),
        "{chain}"
    );
    let table = psctl(
        dir.path(),
        &["db", "verify", "--database-url", &db.url],
        &[],
    );
    assert_eq!(table.code, 1);
    assert!(
        table
            .stdout
            .contains(&format!("first broken row id {victim}")),
        "{table:#?}"
    );
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn the_hmac_keyed_chain_needs_the_key_to_verify() {
    let db = TestDb::create("hmac").await;
    let pool = db.pool().await;
    support::db::migrate(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    // The binary reads the key from its environment: migrating down past the audit trail's
    // migration (the newest two) and up again recreates it with one row under the key.
    let key = [("PSCTL_AUDIT_HMAC_KEY", "chain-key-for-tests")];
    let down = psctl(
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
            "b",
        ],
        &key,
    );
    assert_eq!(down.code, 0, "{down:#?}");
    let up = psctl(
        dir.path(),
        &[
            "db",
            "migrate",
            "--database-url",
            &db.url,
            "--yes",
            "--backup-dir",
            "b",
        ],
        &key,
    );
    assert_eq!(up.code, 0, "{up:#?}");
    let with_key = psctl(
        dir.path(),
        &["db", "verify", "--database-url", &db.url, "-o", "json"],
        &key,
    );
    assert_eq!(with_key.code, 0, "{with_key:#?}");
    assert_eq!(
        check(&with_key.json(), "ops_audit hash chain")["detail"],
        "1 row(s) intact (hmac-sha256)"
    );
    let without = psctl(
        dir.path(),
        &["db", "verify", "--database-url", &db.url, "-o", "json"],
        &[],
    );
    assert_eq!(without.code, 1, "{without:#?}");
    assert!(
        !without.stdout.contains("chain-key-for-tests")
            && !with_key.stderr.contains("chain-key-for-tests")
    );
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_disabled_append_only_trigger_and_broken_reconciliation_are_findings() {
    let db = TestDb::create("findings").await;
    let pool = db.pool().await;
    support::db::migrate(&pool).await;
    support::db::seed_payments(&pool, 2).await;
    sqlx::query("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_no_update_delete")
        .execute(&pool)
        .await
        .unwrap();
    // A payment whose ledger credit is missing (the poller's transaction was bypassed).
    sqlx::query("DELETE FROM ledger_entries WHERE id = (SELECT max(id) FROM ledger_entries)")
        .execute(&pool)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = psctl(
        dir.path(),
        &["db", "verify", "--database-url", &db.url, "-o", "json"],
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    let report = run.json();
    for operation in ["UPDATE", "DELETE"] {
        let c = check(&report, &format!("append-only ledger_entries {operation}"));
        assert_eq!(c["ok"], false, "{c}");
        assert!(c["detail"].as_str().unwrap().starts_with("ALLOWED"), "{c}");
    }
    assert_eq!(
        check(&report, "append-only ledger_entries TRUNCATE")["ok"],
        true
    );
    assert_eq!(check(&report, "payments = ledger credits")["ok"], false);
    assert_eq!(check(&report, "payments have a ledger credit")["ok"], false);
    assert_eq!(check(&report, "matched deposits = payments")["ok"], true);
    // The UPDATE/DELETE probes ran on a probe row and were rolled back.
    let ledger: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_entries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(ledger, 1);
    pool.close().await;
    db.drop_now().await;
}
