//! The audit trail on real PostgreSQL: concurrent writers keep one intact chain, `psctl audit`
//! lists it, and secrets never reach a row.

mod support;

use psctl::audit::{AuditEntry, AuditSink as _, ChainKey, PostgresAudit};
use support::db::{TestDb, psctl};

#[tokio::test]
async fn concurrent_appends_form_one_intact_chain() {
    let db = TestDb::create("auditchain").await;
    let pool = db.pool().await;
    support::db::migrate(&pool).await;
    let mut tasks = Vec::new();
    for writer in 0..6 {
        let sink = PostgresAudit::new(pool.clone(), ChainKey::Hmac(b"k".to_vec()));
        tasks.push(tokio::spawn(async move {
            for n in 0..5 {
                let entry = AuditEntry::new("canary.step", format!("writer-{writer}"))
                    .transition(n.to_string(), (n + 1).to_string());
                sink.record(&entry).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let report = psctl::audit::verify_chain(&pool, ChainKey::Hmac(b"k".to_vec()))
        .await
        .unwrap();
    assert_eq!((report.rows, report.broken), (30, None));
    let wrong = psctl::audit::verify_chain(&pool, ChainKey::Sha256)
        .await
        .unwrap();
    assert!(wrong.broken.is_some());
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn psctl_audit_lists_the_newest_rows_without_secrets() {
    let db = TestDb::create("auditlist").await;
    let pool = db.pool().await;
    support::db::migrate(&pool).await;
    support::db::seed_audit(&pool, 3).await;
    let sink = PostgresAudit::new(pool.clone(), ChainKey::Sha256);
    let entry = AuditEntry::new("secrets.apply", "problemsolver-secrets")
        .outcome("succeeded")
        .details(serde_json::json!({"BINANCE_API_SECRET": "do-not-store-me", "keys": ["BINANCE_API_SECRET"]}));
    sink.record(&entry).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let run = psctl(
        dir.path(),
        &[
            "audit",
            "--database-url",
            &db.url,
            "--limit",
            "2",
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let rows = run.json()["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["to_state"], "rev 3");
    assert_eq!(rows[1]["action"], "secrets.apply");
    assert_eq!(rows[1]["prev_hash"], rows[0]["hash"]);
    assert!(!run.stdout.contains("do-not-store-me"), "{run:#?}");
    let stored: String =
        sqlx::query_scalar("SELECT details::text FROM ops_audit ORDER BY id DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!stored.contains("do-not-store-me"), "{stored}");
    let table = psctl(dir.path(), &["audit", "--database-url", &db.url], &[]);
    assert_eq!(table.code, 0);
    assert!(
        table.stdout.contains("secrets.apply") && table.stdout.contains("rev 0 -> rev 1"),
        "{table:#?}"
    );
    pool.close().await;
    db.drop_now().await;
}
