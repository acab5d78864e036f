//! The database's items: the poller checkpoint, recent system events and the audit trail's
//! rows of the window (also the postmortem's timeline).

use std::time::Duration;

use sqlx::Row as _;

use super::Collector;
use crate::db::DatabaseUrl;
use crate::output::Output;
use crate::settings::Environment;

/// The database items; returns the audit rows of the window for the postmortem (`None` when
/// the audit trail could not be read).
pub async fn collect(
    database: Result<DatabaseUrl, String>,
    output: &Output,
    environment: &Environment,
    since: Duration,
    collector: &mut Collector<'_>,
) -> Option<Vec<crate::audit::AuditRow>> {
    let url = match database {
        Ok(url) => url,
        Err(error) => {
            collector.skip("database", error);
            return None;
        }
    };
    let pool = match crate::db::connect(&url, Duration::from_secs(5)).await {
        Ok(pool) => pool,
        Err(error) => {
            collector.skip(
                "database",
                output.redactor().scrub(&error.to_string()).into_owned(),
            );
            return None;
        }
    };
    let checkpoint = sqlx::query(
        "SELECT name, last_insert_time::text AS last_insert_time,
                last_success_at::text AS last_success_at, updated_at::text AS updated_at
           FROM poller_checkpoint ORDER BY name",
    )
    .fetch_all(&pool)
    .await;
    match checkpoint {
        Ok(rows) => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    serde_json::json!({
                        "name": row.get::<String, _>("name"),
                        "last_insert_time": row.get::<Option<String>, _>("last_insert_time"),
                        "last_success_at": row.get::<Option<String>, _>("last_success_at"),
                        "updated_at": row.get::<Option<String>, _>("updated_at"),
                    })
                })
                .collect();
            let detail = format!("{} checkpoints", rows.len());
            collector.json(
                "poller checkpoint",
                "db/poller-checkpoint.json",
                &rows,
                detail,
            );
        }
        Err(error) => collector.skip("poller checkpoint", error.to_string()),
    }
    let events = sqlx::query(
        "SELECT id, source, kind, severity, message, details::text AS details,
                created_at::text AS created_at
           FROM system_events
          WHERE created_at >= now() - make_interval(secs => $1)
          ORDER BY id DESC LIMIT 1000",
    )
    .bind(since.as_secs_f64())
    .fetch_all(&pool)
    .await;
    match events {
        Ok(rows) => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    serde_json::json!({
                        "id": row.get::<i64, _>("id"),
                        "source": row.get::<String, _>("source"),
                        "kind": row.get::<String, _>("kind"),
                        "severity": row.get::<String, _>("severity"),
                        "message": row.get::<String, _>("message"),
                        "details": row.get::<Option<String>, _>("details"),
                        "created_at": row.get::<Option<String>, _>("created_at"),
                    })
                })
                .collect();
            let detail = format!("{} events (newest 1000 at most)", rows.len());
            collector.json("system events", "db/system-events.json", &rows, detail);
        }
        Err(error) => collector.skip("system events", error.to_string()),
    }
    let audit = match crate::audit::since(
        &pool,
        &environment.name,
        chrono::TimeDelta::from_std(since)
            .ok()
            .and_then(|window| chrono::Utc::now().checked_sub_signed(window))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
        AUDIT_ROWS,
    )
    .await
    {
        Ok(rows) => {
            let detail = format!("{} rows (oldest first, {AUDIT_ROWS} at most)", rows.len());
            collector.json("audit trail", "db/audit.json", &rows, detail);
            Some(rows)
        }
        Err(error) => {
            collector.skip("audit trail", error.to_string());
            None
        }
    };
    pool.close().await;
    audit
}

/// Audit rows of the window collected at most (the newest).
const AUDIT_ROWS: i64 = 1000;
