//! `psctl db migrate | backup | restore | verify`: resolve the database, plan, guard, execute,
//! report. The logic lives in `crate::db` and `crate::audit`; this file only sequences it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::audit::{AuditEntry, AuditSink, ChainKey, PostgresAudit, outcome};
use crate::cli::{DbArgs, DbBackupArgs, DbCommand, DbMigrateArgs, DbRestoreArgs, DbVerifyArgs};
use crate::db::backup::{self, BackupResult};
use crate::db::migrate::{self, DowngradeConsent, MIGRATOR, MigrationPlan};
use crate::db::restore::{self, RestorePlan};
use crate::db::verify::{self, VerifyReport};
use crate::db::{self as database, DatabaseUrl};
use crate::error::{CommandError, CommandResult, ExitStatus, ResultExt as _};
use crate::output::{Output, Render, Style, table};
use crate::settings::{
    ConfigError, Environment, GlobalSettings, SettingsError, file::DEFAULT_DATABASE_URL_ENV,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(args: DbArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    match args.command {
        DbCommand::Migrate(args) => migrate_command(args, global, output).await,
        DbCommand::Backup(args) => backup_command(args, global, output).await,
        DbCommand::Restore(args) => restore_command(args, global, output).await,
        DbCommand::Verify(args) => verify_command(args, global, output).await,
    }
}

/// The database a command acts on, and the environment it belongs to (None when psctl runs
/// with `--database-url` and no configuration file).
pub struct Target {
    pub url: DatabaseUrl,
    pub environment: Option<Environment>,
}

impl Target {
    pub fn environment_name(&self) -> String {
        self.environment
            .as_ref()
            .map(|e| e.name.clone())
            .unwrap_or_default()
    }

    pub fn production(&self) -> bool {
        self.environment.as_ref().is_some_and(|e| e.production)
    }
}

/// Resolves the environment (optional when the default configuration file is absent and no
/// `--env` was named) and the URL; registers the URL's secrets with the redactor.
pub fn resolve_target(global: &GlobalSettings, output: &Output) -> Result<Target, CommandError> {
    let environment = match global.environment() {
        Ok(environment) => Some(environment),
        Err(SettingsError::Config(ConfigError::Read { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound && global.environment.is_none() =>
        {
            None
        }
        Err(error) => return Err(error.into()),
    };
    let variable = environment
        .as_ref()
        .map_or(DEFAULT_DATABASE_URL_ENV, |e| e.database_url_env.as_str());
    let url = match &global.database_url {
        Some(url) => url.clone(),
        None => DatabaseUrl::resolve(None, variable, |name| std::env::var(name).ok())?,
    };
    if let Some(password) = url.password() {
        output.redactor().register(&password);
    }
    output.redactor().register(url.expose());
    Ok(Target { url, environment })
}

async fn connect(url: &DatabaseUrl) -> Result<sqlx::PgPool, CommandError> {
    Ok(database::connect(url, CONNECT_TIMEOUT).await?)
}

/// `$PSCTL_BACKUP_DIR`, else `$XDG_DATA_HOME/psctl/backups`, else `~/.local/share/psctl/backups`.
pub fn default_backup_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PSCTL_BACKUP_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("psctl").join("backups")
}

// ---------------------------------------------------------------- migrate

/// The printed result of `db migrate`.
#[derive(Debug, Serialize)]
pub struct MigrateReport {
    pub database: String,
    pub dry_run: bool,
    pub from_version: i64,
    pub to_version: i64,
    pub plan: MigrationPlan,
    pub backup: Option<BackupResult>,
}

impl Render for MigrateReport {
    fn render_table(&self, _style: &Style) -> String {
        let (direction, verb) = match &self.plan {
            MigrationPlan::Up { .. } => ("up", if self.dry_run { "pending" } else { "applied" }),
            MigrationPlan::Down { .. } => (
                "down",
                if self.dry_run {
                    "to revert"
                } else {
                    "reverted"
                },
            ),
        };
        let mut text = table::render(
            &["DIRECTION", "VERSION", "DESCRIPTION", "STATE"],
            self.plan.steps().iter().map(|s| {
                [
                    direction.to_owned(),
                    s.version.to_string(),
                    s.description.clone(),
                    verb.to_owned(),
                ]
            }),
        );
        text.push_str(&format!(
            "\nschema version: {} -> {}\n",
            self.from_version, self.to_version
        ));
        if let Some(backup) = &self.backup {
            text.push_str(&format!(
                "backup: {} (sha256 {})\n",
                backup.file.display(),
                backup.sha256
            ));
        }
        text
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
    let applied = migrate::applied_migrations(&pool)
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
    let mut report = MigrateReport {
        database: target.url.label(),
        dry_run: global.dry_run,
        from_version,
        to_version,
        plan,
        backup: None,
    };
    if report.plan.is_empty() {
        output.info(format!(
            "{}: schema is up to date at version {from_version}",
            target.url.label()
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
            && super::support::can_prompt(global).is_ok()
        {
            Some(super::support::prompt(&format!(
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
    super::support::confirm(
        global,
        &format!("migrate {} ({steps})?", target.url.label()),
    )?;

    let audit = PostgresAudit::new(pool.clone(), ChainKey::from_env());
    let entry = AuditEntry::new(
        if down.is_some() {
            "db.migrate.down"
        } else {
            "db.migrate"
        },
        target.url.label(),
    )
    .environment(target.environment_name())
    .transition(from_version.to_string(), to_version.to_string());
    let mut recorded = record_if_possible(&audit, &entry, output).await;

    let dir = backup_dir.unwrap_or_else(default_backup_dir);
    let spinner = output.spinner(format!(
        "backing up {} to {}",
        target.url.label(),
        dir.display()
    ));
    let backup = backup::backup(&target.url, &dir, from_version, None).await;
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
    let result = migrate::execute(&pool, &report.plan).await;
    spinner.finish();
    let details = json!({
        "steps": report.plan.steps(),
        "backup": backup.file.display().to_string(),
        "backup_sha256": backup.sha256,
    });
    report.backup = Some(backup);
    match result {
        Ok(()) => {
            let done = entry.clone().outcome(outcome::SUCCEEDED).details(details);
            recorded |= record_if_possible(&audit, &done, output).await;
            if !recorded {
                output.warn("no audit row could be written (the ops_audit table does not exist at either end of this migration)");
            }
            output
                .data(&report)
                .or_exit(ExitStatus::Usage, "writing the report")?;
            Ok(ExitStatus::Success)
        }
        Err(error) => {
            let failed = entry
                .outcome(outcome::FAILED)
                .details(json!({"error": error.to_string(), "steps": report.plan.steps()}));
            let _ = record_if_possible(&audit, &failed, output).await;
            Err(
                CommandError::verification(anyhow::Error::new(error).context("running migrations"))
                    .hint(format!(
                        "the pre-migration backup is {}",
                        report
                            .backup
                            .as_ref()
                            .map(|b| b.file.display().to_string())
                            .unwrap_or_default()
                    )),
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
        Err(crate::audit::AuditError::NoTable) => false,
        Err(error) => {
            output.warn(format!(
                "audit record not written: {:#}",
                anyhow::Error::new(error)
            ));
            false
        }
    }
}

// ---------------------------------------------------------------- backup

impl Render for BackupResult {
    fn render_table(&self, _style: &Style) -> String {
        let mut text = table::render(
            &["FILE", "SIZE", "DURATION", "SHA256"],
            [[
                self.file.display().to_string(),
                human_size(self.size_bytes),
                format!("{:.2}s", self.duration_seconds),
                self.sha256.clone(),
            ]],
        );
        for pruned in &self.pruned {
            text.push_str(&format!("pruned: {}\n", pruned.display()));
        }
        text
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
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

// ---------------------------------------------------------------- restore

/// The printed result of `db restore`.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub plan: RestorePlan,
    pub backup_sha256: String,
    pub migrations_applied: Vec<i64>,
    pub verify: Option<VerifyReport>,
}

impl Render for RestoreReport {
    fn render_table(&self, style: &Style) -> String {
        let mut text = table::render(
            &["BACKUP", "INTO", "SHA256", "MIGRATIONS APPLIED"],
            [[
                self.plan.backup.display().to_string(),
                self.plan.into.clone(),
                self.backup_sha256.clone(),
                if self.migrations_applied.is_empty() {
                    "none".to_owned()
                } else {
                    self.migrations_applied
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ]],
        );
        if let Some(verify) = &self.verify {
            text.push('\n');
            text.push_str(&verify.render_table(style));
        }
        text
    }
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
    super::support::confirm(
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
    audit.record(&entry).await?;

    let spinner = output.spinner(format!("restoring into {}", report.plan.into));
    let restored = restore::execute(&admin, &report.plan, &new_url).await;
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
    let restored_pool = connect(&new_url).await?;
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
            "backup_sha256": manifest.sha256,
            "migrations_applied": report.migrations_applied,
            "verify_findings": findings,
        })))
        .await?;
    output
        .data(&report)
        .or_exit(ExitStatus::Usage, "writing the report")?;
    if clean {
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

// ---------------------------------------------------------------- verify

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
    }
}
