//! `psctl db migrate | backup | restore | verify`: resolve the database, plan, guard, confirm,
//! execute, report. The logic lives in `crate::db` (`db::sequence` runs the confirmed
//! migration and restore) and `crate::audit`; this file only sequences it.

use std::time::Duration;

use serde_json::json;

use super::support;
use crate::audit::AuditEntry;
use crate::audit::ChainKey;
use crate::cli::{DbArgs, DbBackupArgs, DbCommand, DbMigrateArgs, DbRestoreArgs, DbVerifyArgs};
use crate::db::backup;
use crate::db::migrate::{self, DowngradeConsent, MigrationPlan};
use crate::db::report::RestoreReport;
use crate::db::restore;
use crate::db::sequence::{self, connect};
use crate::db::target::{default_backup_dir, resolve_target};
use crate::db::verify;
use crate::error::{CommandError, CommandResult, ExitStatus, ResultExt as _};
use crate::output::Output;
use crate::settings::GlobalSettings;

pub async fn run(args: DbArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    match args.command {
        DbCommand::Migrate(args) => migrate_command(args, global, output).await,
        DbCommand::Backup(args) => backup_command(args, global, output).await,
        DbCommand::Restore(args) => restore_command(args, global, output).await,
        DbCommand::Verify(args) => verify_command(args, global, output).await,
    }
}

async fn migrate_command(
    args: DbMigrateArgs,
    global: &GlobalSettings,
    output: &Output,
) -> CommandResult {
    let DbMigrateArgs {
        down,
        force_production,
        backup_dir,
    } = args;
    let target = resolve_target(global, output)?;
    let pool = connect(&target.url).await?;
    let mut report = sequence::plan_migration(&pool, &target, down, global.dry_run).await?;
    if report.plan.is_empty() {
        output.info(format!(
            "{}: schema is up to date at version {}",
            target.url.label(),
            report.from_version
        ));
        output
            .data(&report)
            .or_exit(ExitStatus::Usage, "writing the report")?;
        return Ok(ExitStatus::Success);
    }
    if let MigrationPlan::Down { .. } = report.plan {
        let environment = target.environment_name();
        let typed = if target.production()
            && force_production
            && !global.dry_run
            && support::can_prompt(global).is_ok()
        {
            Some(support::prompt(&format!(
                "Downgrading the PRODUCTION schema of `{environment}`. Type the environment name to confirm: "
            ))?)
        } else {
            None
        };
        let consent = DowngradeConsent {
            production: target.production(),
            force_production,
            typed,
        };
        if let Err(refusal) = migrate::guard_downgrade(&environment, &consent)
            && !(global.dry_run && matches!(refusal, migrate::GuardError::NoTerminal { .. }))
        {
            return Err(CommandError::usage(refusal).hint(
                "the runbook: never downgrade production; restore a backup into a new database instead (docs/recovery.md)",
            ));
        }
    }
    if global.dry_run {
        output.info("dry run: nothing changed (a verified backup would be taken first)");
        output
            .data(&report)
            .or_exit(ExitStatus::Usage, "writing the report")?;
        return Ok(ExitStatus::Success);
    }
    let steps = report
        .plan
        .steps()
        .iter()
        .map(|s| s.version.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    support::confirm(
        global,
        &format!("migrate {} ({steps})?", target.url.label()),
    )?;
    let dir = backup_dir.unwrap_or_else(default_backup_dir);
    sequence::migrate_behind_backup(&pool, &target, &mut report, &dir, output).await?;
    output
        .data(&report)
        .or_exit(ExitStatus::Usage, "writing the report")?;
    Ok(ExitStatus::Success)
}

async fn backup_command(
    args: DbBackupArgs,
    global: &GlobalSettings,
    output: &Output,
) -> CommandResult {
    let DbBackupArgs {
        dir,
        retention_days,
    } = args;
    let target = resolve_target(global, output)?;
    let dir = dir.unwrap_or_else(default_backup_dir);
    if global.dry_run {
        output.info(format!(
            "dry run: would run `pg_dump {}` against {} and prune psctl backups older than {retention_days} day(s)",
            backup::pg_dump_args(&dir.join(backup::backup_file_name(&target.url.database(), chrono::Utc::now()))).join(" "),
            target.url.label()
        ));
        return Ok(ExitStatus::Success);
    }
    let pool = connect(&target.url).await?;
    let applied = migrate::applied_migrations(&pool)
        .await
        .or_exit(ExitStatus::Unreachable, "reading applied migrations")?;
    pool.close().await;
    let retention = Duration::from_secs(u64::from(retention_days) * 86_400);
    let spinner = output.spinner(format!(
        "backing up {} to {}",
        target.url.label(),
        dir.display()
    ));
    let result = backup::backup(
        &target.url,
        &dir,
        migrate::current_version(&applied),
        Some(retention),
    )
    .await;
    spinner.finish();
    let result = result.or_exit(
        ExitStatus::Unreachable,
        format!("backing up {}", target.url.label()),
    )?;
    output.info("object-store upload: not configured (local directory only)");
    output
        .data(&result)
        .or_exit(ExitStatus::Usage, "writing the report")?;
    Ok(ExitStatus::Success)
}

async fn restore_command(
    args: DbRestoreArgs,
    global: &GlobalSettings,
    output: &Output,
) -> CommandResult {
    let DbRestoreArgs {
        backup: backup_file,
        into,
    } = args;
    let target = resolve_target(global, output)?;
    let (plan, new_url) =
        restore::plan_restore(&target.url, &backup_file, &into).map_err(CommandError::usage)?;
    let admin = connect(&target.url).await?;
    let manifest = restore::preflight(&admin, &plan, &into)
        .await
        .map_err(|error| match error {
            restore::RestoreError::Lookup { .. } => CommandError::unreachable(error),
            other => CommandError::usage(other),
        })?;
    output.info(format!(
        "backup verified against its manifest (sha256 {}, taken {} from {})",
        manifest.sha256, manifest.created_at, manifest.source
    ));
    let mut report = RestoreReport {
        plan,
        backup_sha256: manifest.sha256.clone(),
        migrations_applied: Vec::new(),
        verify: None,
    };
    if global.dry_run {
        output.info(format!(
            "dry run: would create {} and run `pg_restore {}`, then migrate and verify it",
            report.plan.into,
            report.plan.pg_restore_args.join(" ")
        ));
        output
            .data(&report)
            .or_exit(ExitStatus::Usage, "writing the report")?;
        return Ok(ExitStatus::Success);
    }
    support::confirm(
        global,
        &format!(
            "restore {} into the new database {}?",
            backup_file.display(),
            report.plan.into
        ),
    )?;
    let audit = crate::audit::open(Ok(target.url.clone()), global.allow_no_audit, output).await?;
    let entry = AuditEntry::new("db.restore", report.plan.into.clone())
        .environment(target.environment_name())
        .transition(backup_file.display().to_string(), report.plan.into.clone())
        .details(json!({"backup_sha256": manifest.sha256, "live": report.plan.live}));
    let findings = sequence::restore_migrate_verify(
        &admin,
        &into,
        &new_url,
        &mut report,
        entry,
        audit.as_ref(),
        output,
    )
    .await?;
    output
        .data(&report)
        .or_exit(ExitStatus::Usage, "writing the report")?;
    if findings == 0 {
        output.info(format!("{} restored, migrated and verified; promote it only after reconciling (docs/recovery.md)", report.plan.into));
        Ok(ExitStatus::Success)
    } else {
        output.warn(format!(
            "{} restored but verification found {findings} problem(s); do not promote it",
            report.plan.into
        ));
        Ok(ExitStatus::VerificationFailed)
    }
}

async fn verify_command(
    args: DbVerifyArgs,
    global: &GlobalSettings,
    output: &Output,
) -> CommandResult {
    let DbVerifyArgs {} = args;
    let target = resolve_target(global, output)?;
    let pool = connect(&target.url).await?;
    let report = verify::verify(&pool, &target.url.label(), ChainKey::from_env())
        .await
        .or_exit(
            ExitStatus::Unreachable,
            format!("verifying {}", target.url.label()),
        )?;
    output
        .data(&report)
        .or_exit(ExitStatus::Usage, "writing the report")?;
    output.annotations(&report.annotations());
    output.step_summary(&report.step_summary());
    let findings = report.findings().count();
    if findings == 0 {
        output.info(format!("{}: no findings", target.url.label()));
        Ok(ExitStatus::Success)
    } else {
        output.warn(format!("{}: {findings} finding(s)", target.url.label()));
        Ok(ExitStatus::VerificationFailed)
    }
}
