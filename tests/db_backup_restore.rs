//! `psctl db backup` and `psctl db restore` with the real `pg_dump`/`pg_restore`: a restore into
//! a new database gives identical reconciliation totals; the live database, an existing
//! database and a tampered backup are all refused.

mod support;

use support::db::{TestDb, psctl};

#[tokio::test]
async fn backup_then_restore_into_a_new_database_gives_identical_totals() {
    let live = TestDb::create("live").await;
    let pool = live.pool().await;
    support::db::migrate(&pool).await;
    support::db::seed_payments(&pool, 5).await;
    support::db::seed_audit(&pool, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let backups_arg = backups.to_str().unwrap();

    let before = psctl(
        dir.path(),
        &["db", "verify", "--database-url", &live.url, "-o", "json"],
        &[],
    );
    assert_eq!(before.code, 0, "{before:#?}");
    let totals = before.json()["totals"].clone();
    assert_eq!(totals["payments"]["count"], 5);
    assert_eq!(totals["payments"]["sum"], "61.250000000000000000");
    assert_eq!(totals["audit_rows"], 3);

    let backup = psctl(
        dir.path(),
        &[
            "db",
            "backup",
            "--database-url",
            &live.url,
            "--dir",
            backups_arg,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(backup.code, 0, "{backup:#?}");
    let result = backup.json();
    let file = result["file"].as_str().unwrap().to_owned();
    assert!(result["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(result["sha256"].as_str().unwrap().len(), 64);
    assert!(result["toc_entries"].as_u64().unwrap() > 10);
    let table = psctl(
        dir.path(),
        &[
            "db",
            "backup",
            "--database-url",
            &live.url,
            "--dir",
            backups_arg,
        ],
        &[],
    );
    assert_eq!(table.code, 0, "{table:#?}");
    for column in ["FILE", "SIZE", "DURATION", "SHA256"] {
        assert!(table.stdout.contains(column), "{table:#?}");
    }

    let into_db = TestDb::reserve("restored");
    let into = into_db.name.clone();
    let restore = psctl(
        dir.path(),
        &[
            "db",
            "restore",
            "--database-url",
            &live.url,
            "--backup",
            &file,
            "--into",
            &into,
            "--yes",
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(restore.code, 0, "{restore:#?}");
    assert_eq!(restore.json()["verify"]["totals"], totals);

    let restored_url = support::db::url_for(&into);
    let after = psctl(
        dir.path(),
        &[
            "db",
            "verify",
            "--database-url",
            &restored_url,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(after.code, 0, "{after:#?}");
    let mut after_totals = after.json()["totals"].clone();
    // The restore appended its own audit rows to the LIVE database, not to the restored copy.
    assert_eq!(after_totals, totals);
    let live_audit: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, outcome FROM ops_audit WHERE action = 'db.restore' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        live_audit,
        vec![
            ("db.restore".into(), "started".into()),
            ("db.restore".into(), "succeeded".into())
        ]
    );
    after_totals["audit_rows"] = serde_json::json!(0);
    assert_ne!(
        after_totals, totals,
        "the comparison above must be able to fail"
    );

    // Refusals: the live database, an existing database, a tampered file.
    let onto_live = psctl(
        dir.path(),
        &[
            "db",
            "restore",
            "--database-url",
            &live.url,
            "--backup",
            &file,
            "--into",
            &live.name,
            "--yes",
        ],
        &[],
    );
    assert_eq!(onto_live.code, 2, "{onto_live:#?}");
    assert!(
        onto_live.stderr.contains("it is the live database"),
        "{onto_live:#?}"
    );
    let existing = psctl(
        dir.path(),
        &[
            "db",
            "restore",
            "--database-url",
            &live.url,
            "--backup",
            &file,
            "--into",
            &into,
            "--yes",
        ],
        &[],
    );
    assert_eq!(existing.code, 2, "{existing:#?}");
    assert!(existing.stderr.contains("already exists"), "{existing:#?}");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let other_db = TestDb::reserve("tampered");
    let other = other_db.name.clone();
    let tampered = psctl(
        dir.path(),
        &[
            "db",
            "restore",
            "--database-url",
            &live.url,
            "--backup",
            &file,
            "--into",
            &other,
            "--yes",
        ],
        &[],
    );
    assert_eq!(tampered.code, 2, "{tampered:#?}");
    assert!(
        tampered.stderr.contains("checksum mismatch"),
        "{tampered:#?}"
    );
    let created: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&other)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!created, "a refused restore must not create the database");

    pool.close().await;
    into_db.drop_now().await;
    live.drop_now().await;
}

#[tokio::test]
async fn retention_prunes_only_psctl_backups() {
    let live = TestDb::create("retention").await;
    let pool = live.pool().await;
    support::db::migrate(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let first = psctl(
        dir.path(),
        &[
            "db",
            "backup",
            "--database-url",
            &live.url,
            "--dir",
            backups.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(first.code, 0, "{first:#?}");
    let old_file = first.json()["file"].as_str().unwrap().to_owned();
    // Age the first backup's manifest by 40 days.
    let manifest_path = format!("{old_file}.manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["created_at"] =
        serde_json::json!((chrono::Utc::now() - chrono::Duration::days(40)).to_rfc3339());
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let foreign = backups.join("handmade.dump");
    std::fs::write(&foreign, b"not ours").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = psctl(
        dir.path(),
        &[
            "db",
            "backup",
            "--database-url",
            &live.url,
            "--dir",
            backups.to_str().unwrap(),
            "--retention-days",
            "30",
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(second.code, 0, "{second:#?}");
    assert_eq!(second.json()["pruned"], serde_json::json!([old_file]));
    assert!(!std::path::Path::new(&old_file).exists());
    assert!(foreign.exists());
    assert!(std::path::Path::new(second.json()["file"].as_str().unwrap()).exists());
    pool.close().await;
    live.drop_now().await;
}

#[tokio::test]
async fn without_an_audit_trail_restore_proceeds_only_with_allow_no_audit() {
    let live = TestDb::create("noaudit").await;
    let pool = live.pool().await;
    support::db::migrate(&pool).await;
    support::db::seed_payments(&pool, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let backup = psctl(
        dir.path(),
        &[
            "db",
            "backup",
            "--database-url",
            &live.url,
            "--dir",
            backups.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(backup.code, 0, "{backup:#?}");
    let file = backup.json()["file"].as_str().unwrap().to_owned();
    // The live database loses its audit table (the test is superuser; no trigger guards DROP).
    sqlx::query("DROP TABLE ops_audit")
        .execute(&pool)
        .await
        .unwrap();

    let into_db = TestDb::reserve("noaudit_restored");
    let into = into_db.name.clone();
    let args = [
        "db",
        "restore",
        "--database-url",
        &live.url,
        "--backup",
        &file,
        "--into",
        &into,
        "--yes",
    ];
    let refused = psctl(dir.path(), &args, &[]);
    assert_eq!(refused.code, 3, "{refused:#?}");
    assert!(
        refused.stderr.contains("audit trail is unavailable"),
        "{refused:#?}"
    );
    assert!(refused.stderr.contains("--allow-no-audit"), "{refused:#?}");
    let exists = |name: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert!(
        !exists(into.clone()).await,
        "refused before creating anything"
    );

    let mut allowed_args = args.to_vec();
    allowed_args.push("--allow-no-audit");
    let allowed = psctl(dir.path(), &allowed_args, &[]);
    assert_eq!(allowed.code, 0, "{allowed:#?}");
    assert!(
        allowed.stderr.contains("WITHOUT an audit trail"),
        "{allowed:#?}"
    );
    assert!(
        allowed.stderr.contains("audit record NOT written"),
        "{allowed:#?}"
    );
    assert!(exists(into.clone()).await);

    pool.close().await;
    into_db.drop_now().await;
    live.drop_now().await;
}
