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

/// `psctl evidence` writes `postmortem.md` from the real audit rows of its environment: every
/// section of the runbook's postmortem, the rows in the timeline and the commands table, links
/// to the files written, and nothing secret. Rows of another environment stay out. The cluster
/// is unreachable here, which the skeleton says instead of showing an empty timeline.
#[tokio::test]
async fn evidence_writes_a_postmortem_skeleton_from_the_audit_trail() {
    use psctl::postmortem::SECTIONS;

    let db = TestDb::create("postmortem").await;
    let pool = db.pool().await;
    support::db::migrate(&pool).await;
    let sink = PostgresAudit::new(pool.clone(), ChainKey::Sha256);
    for entry in [
        AuditEntry::new("deploy", "problemsolver-webhook")
            .environment("incident")
            .transition("revision 1", "revision 2")
            .outcome("rolled_back"),
        AuditEntry::new("kill-switch on", "problemsolver-poller")
            .environment("incident")
            .transition("2 replicas", "0 replicas")
            .outcome("succeeded"),
        AuditEntry::new("secrets apply", "problemsolver-secrets")
            .environment("incident")
            .outcome("succeeded")
            .details(serde_json::json!({"BINANCE_API_SECRET": "do-not-store-me"})),
        AuditEntry::new("rollback (helm)", "problemsolver-webhook")
            .environment("elsewhere")
            .transition("revision 7", "revision 6")
            .outcome("succeeded"),
    ] {
        sink.record(&entry).await.unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("psctl.yaml");
    std::fs::write(
        &config,
        "environments:\n  incident:\n    kube_context: nowhere\n    namespace: payments\n",
    )
    .unwrap();
    let out = dir.path().join("evidence");
    let run = psctl(
        dir.path(),
        &[
            "evidence",
            "--database-url",
            &db.url,
            "--dir",
            out.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[("PSCTL_CONFIG", config.to_str().unwrap())],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let items = run.json()["items"].as_array().unwrap().clone();
    let postmortem_item = items
        .iter()
        .find(|i| i["item"] == "postmortem")
        .unwrap_or_else(|| panic!("no postmortem item: {items:#?}"));
    assert_eq!(postmortem_item["file"], "postmortem.md");
    assert_eq!(postmortem_item["result"], "collected");

    let text = std::fs::read_to_string(out.join("postmortem.md")).unwrap();
    // Every section, in the runbook's order.
    let positions: Vec<usize> = SECTIONS
        .iter()
        .map(|s| {
            text.find(&format!("\n{s}\n"))
                .unwrap_or_else(|| panic!("no `{s}`:\n{text}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    let section = |name: &str| -> String {
        text.split(&format!("\n{name}\n"))
            .nth(1)
            .unwrap()
            .split("\n## ")
            .next()
            .unwrap()
            .to_owned()
    };
    let timeline = section("## Timeline");
    let deploy = timeline
        .find("psctl `deploy` on `problemsolver-webhook` (revision 1 → revision 2): rolled_back")
        .unwrap_or_else(|| panic!("{timeline}"));
    let stop = timeline
        .find(
            "psctl `kill-switch on` on `problemsolver-poller` (2 replicas → 0 replicas): succeeded",
        )
        .unwrap_or_else(|| panic!("{timeline}"));
    assert!(deploy < stop, "oldest first: {timeline}");
    assert!(
        timeline.contains("The cluster could not be read"),
        "{timeline}"
    );
    let commands = section("## Commands run");
    assert_eq!(
        commands
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains("`psctl "))
            .count(),
        3,
        "{commands}"
    );
    assert!(
        commands.contains("| `psctl secrets apply` | problemsolver-secrets |"),
        "{commands}"
    );
    // Another environment's rows are not this incident's.
    assert!(!text.contains("revision 7"), "{text}");
    assert!(!text.contains("do-not-store-me"), "{text}");
    let evidence = section("## Evidence");
    assert!(
        evidence.contains("- [audit trail](db/audit.json) — 3 rows"),
        "{evidence}"
    );
    assert!(evidence.contains("- cluster: not collected"), "{evidence}");
    assert!(out.join("db/audit.json").exists());
    pool.close().await;
    db.drop_now().await;
}
