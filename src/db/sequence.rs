//! What `psctl db migrate` and `psctl db restore` run once the operator has confirmed: a
//! migration behind a verified backup, and a restore into a new database followed by its
//! migrations and a verification; every step written to the audit trail. The planning reads
//! are here too; the guards, prompts and printing stay with the command.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use super::migrate::{self, MIGRATOR, MigrationPlan};
use super::report::{MigrateReport, RestoreReport};
use super::target::Target;
use super::{DatabaseUrl, backup, restore, verify};
use crate::audit::{AuditEntry, AuditError, AuditSink, ChainKey, PostgresAudit, outcome};
use crate::error::{CommandError, ExitStatus, ResultExt as _};
use crate::output::Output;

/// How long a `psctl db` command waits for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool on `url`, unreachable (exit 3) when it does not answer.
pub async fn connect(url: &DatabaseUrl) -> Result<PgPool, CommandError> {
    Ok(super::connect(url, CONNECT_TIMEOUT).await?)
}

/// The migration `down` (or, without it, every pending one) from the applied migrations, as the
/// report `db migrate` prints.
pub async fn plan_migration(
    pool: &PgPool,
    target: &Target,
    down: Option<u32>,
    dry_run: bool,
) -> Result<MigrateReport, CommandError> {
    let applied = migrate::applied_migrations(pool)
        .await
        .or_exit(ExitStatus::Unreachable, "reading applied migrations")?;
    let known = migrate::known_migrations(&MIGRATOR);
    let from_version = migrate::current_version(&applied);
    let plan = match down {
        None => migrate::plan_up(&known, &applied),
        Some(count) => migrate::plan_down(&known, &applied, count),
    }
    .map_err(|error| {
        let ahead = matches!(error, migrate::PlanError::Ahead { .. });
        let error = CommandError::usage(anyhow::Error::new(error).context(format!("planning migrations of {}", target.url.label())));
        if ahead {
            error.hint("use the psctl built from the repository revision that wrote this schema; never downgrade production by running an older binary")
        } else {
            error
        }
    })?;
    let to_version = match &plan {
        MigrationPlan::Up { apply } => apply.last().map_or(from_version, |s| s.version),
        MigrationPlan::Down { target_version, .. } => *target_version,
    };
    Ok(MigrateReport {
        database: target.url.label(),
        dry_run,
        from_version,
        to_version,
        plan,
        backup: None,
    })
}

/// Takes a verified backup into `dir`, then runs the planned migrations; the backup is kept in
/// the report. Nothing migrates when the backup fails (exit 3); a failed migration is exit 1
/// naming the backup.
pub async fn migrate_behind_backup(
    pool: &PgPool,
    target: &Target,
    report: &mut MigrateReport,
    dir: &Path,
    output: &Output,
) -> Result<(), CommandError> {
    let (from_version, to_version) = (report.from_version, report.to_version);
    let audit = PostgresAudit::new(pool.clone(), ChainKey::from_env());
    let entry = AuditEntry::new(
        match report.plan {
            MigrationPlan::Down { .. } => "db.migrate.down",
            MigrationPlan::Up { .. } => "db.migrate",
        },
        target.url.label(),
    )
    .environment(target.environment_name())
    .transition(from_version.to_string(), to_version.to_string());
    let mut recorded = record_if_possible(&audit, &entry, output).await;

    let spinner = output.spinner(format!(
        "backing up {} to {}",
        target.url.label(),
        dir.display()
    ));
    let backup = backup::backup(&target.url, dir, from_version, None).await;
    spinner.finish();
    let backup = match backup {
        Ok(backup) => backup,
        Err(error) => {
            let failed = entry
                .clone()
                .outcome(outcome::REFUSED)
                .details(json!({"reason": "backup failed"}));
            let _ = record_if_possible(&audit, &failed, output).await;
            return Err(CommandError::unreachable(
                anyhow::Error::new(error).context("taking the pre-migration backup"),
            )
            .hint("no migration was run; fix the backup (disk space, pg_dump version) and retry"));
        }
    };
    output.info(format!(
        "backup verified: {} ({} bytes, sha256 {})",
        backup.file.display(),
        backup.size_bytes,
        backup.sha256
    ));
    let spinner = output.spinner(format!("migrating {}", target.url.label()));
    let result = migrate::execute(pool, &report.plan).await;
    spinner.finish();
    let details = json!({
        "steps": report.plan.steps(),
        "backup": backup.file.display().to_string(),
        "backup_sha256": backup.sha256,
    });
    let backup_file = backup.file.display().to_string();
    report.backup = Some(backup);
    match result {
        Ok(()) => {
            let done = entry.clone().outcome(outcome::SUCCEEDED).details(details);
            recorded |= record_if_possible(&audit, &done, output).await;
            if !recorded {
                output.warn("no audit row could be written (the ops_audit table does not exist at either end of this migration)");
            }
            Ok(())
        }
        Err(error) => {
            let failed = entry
                .outcome(outcome::FAILED)
                .details(json!({"error": error.to_string(), "steps": report.plan.steps()}));
            let _ = record_if_possible(&audit, &failed, output).await;
            Err(
                CommandError::verification(anyhow::Error::new(error).context("running migrations"))
                    .hint(format!("the pre-migration backup is {backup_file}")),
            )
        }
    }
}

/// Migrations create and drop `ops_audit` itself, so a missing table is expected at one end.
async fn record_if_possible(audit: &PostgresAudit, entry: &AuditEntry, output: &Output) -> bool {
    match audit.record(entry).await {
        Ok(receipt) => {
            output.detail(format!(
                "audit row {} written",
                receipt.id.unwrap_or_default()
            ));
            true
        }
        Err(AuditError::NoTable) => false,
        Err(error) => {
            output.warn(format!(
                "audit record not written: {:#}",
                anyhow::Error::new(error)
            ));
            false
        }
    }
}

/// Restores the planned backup into its new database (`into`, by name), migrates it to this psctl's schema and
/// verifies it, filling `report`; audited before and after. `Ok(findings)`: how many problems
/// the verification found (none: the copy may be promoted after reconciling).
pub async fn restore_migrate_verify(
    admin: &PgPool,
    into: &str,
    new_url: &DatabaseUrl,
    report: &mut RestoreReport,
    entry: AuditEntry,
    audit: &dyn AuditSink,
    output: &Output,
) -> Result<usize, CommandError> {
    audit.record(&entry).await?;
    let spinner = output.spinner(format!("restoring into {}", report.plan.into));
    let restored = restore::execute(admin, &report.plan, new_url).await;
    spinner.finish();
    if let Err(error) = restored {
        let _ = audit
            .record(
                &entry
                    .clone()
                    .outcome(outcome::FAILED)
                    .details(json!({"error": error.to_string()})),
            )
            .await;
        return Err(CommandError::verification(
            anyhow::Error::new(error).context(format!("restoring into {}", report.plan.into)),
        )
        .hint(format!(
            "the live database was not touched; drop `{into}` before retrying"
        )));
    }
    let restored_pool = connect(new_url).await?;
    let applied = migrate::applied_migrations(&restored_pool).await.or_exit(
        ExitStatus::Unreachable,
        "reading the restored database's migrations",
    )?;
    let plan =
        migrate::plan_up(&migrate::known_migrations(&MIGRATOR), &applied).map_err(|error| {
            CommandError::usage(anyhow::Error::new(error).context(format!(
                "planning migrations of the restored {}",
                report.plan.into
            )))
        })?;
    migrate::execute(&restored_pool, &plan).await.or_exit(
        ExitStatus::VerificationFailed,
        "migrating the restored database",
    )?;
    report.migrations_applied = plan.steps().iter().map(|s| s.version).collect();
    let verified = verify::verify(&restored_pool, &new_url.label(), ChainKey::from_env())
        .await
        .or_exit(ExitStatus::Unreachable, "verifying the restored database")?;
    let clean = verified.is_clean();
    let findings = verified.findings().count();
    report.verify = Some(verified);
    let outcome = if clean {
        outcome::SUCCEEDED
    } else {
        outcome::FAILED
    };
    audit
        .record(&entry.outcome(outcome).details(json!({
            "backup_sha256": report.backup_sha256,
            "migrations_applied": report.migrations_applied,
            "verify_findings": findings,
        })))
        .await?;
    Ok(findings)
}
