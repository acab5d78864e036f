//! `psctl audit`: lists the newest rows of the `ops_audit` trail (oldest of them first).

use serde::Serialize;

use crate::audit::{self, AuditRow};
use crate::cli::AuditArgs;
use crate::db::target::resolve_target;
use crate::error::{CommandError, CommandResult, ExitStatus, ResultExt as _};
use crate::output::{Output, Render, Style, table};
use crate::settings::GlobalSettings;

/// The listing; JSON carries every column including details and hashes.
#[derive(Debug, Serialize)]
pub struct AuditListing {
    pub database: String,
    pub rows: Vec<AuditRow>,
}

impl Render for AuditListing {
    fn render_table(&self, _style: &Style) -> String {
        table::render(
            &[
                "ID",
                "AT",
                "USER",
                "KUBE IDENTITY",
                "ENV",
                "ACTION",
                "TARGET",
                "FROM -> TO",
                "OUTCOME",
            ],
            self.rows.iter().map(|row| {
                [
                    row.id.to_string(),
                    row.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    row.os_user.clone(),
                    row.kube_identity.clone(),
                    row.environment.clone(),
                    row.action.clone(),
                    row.target.clone(),
                    if row.from_state.is_empty() && row.to_state.is_empty() {
                        String::new()
                    } else {
                        format!("{} -> {}", row.from_state, row.to_state)
                    },
                    row.outcome.clone(),
                ]
            }),
        )
    }
}

pub async fn run(args: AuditArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let AuditArgs { limit } = args;
    if limit == 0 {
        return Err(CommandError::usage(anyhow::anyhow!(
            "--limit 0 shows nothing; give a positive number"
        )));
    }
    let target = resolve_target(global, output)?;
    let pool = crate::db::connect(&target.url, std::time::Duration::from_secs(10)).await?;
    if !audit::PostgresAudit::table_exists(&pool)
        .await
        .or_exit(ExitStatus::Unreachable, "looking for ops_audit")?
    {
        return Err(audit::AuditError::NoTable.into());
    }
    let rows = audit::list(&pool, i64::from(limit)).await?;
    output
        .data(&AuditListing {
            database: target.url.label(),
            rows,
        })
        .or_exit(ExitStatus::Usage, "writing the listing")?;
    Ok(ExitStatus::Success)
}
