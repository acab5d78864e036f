//! What `psctl db migrate`, `backup` and `restore` print (`verify`'s report renders itself in
//! `verify.rs`). Pure.

use serde::Serialize;

use super::backup::BackupResult;
use super::migrate::MigrationPlan;
use super::restore::RestorePlan;
use super::verify::VerifyReport;
use crate::output::{Render, Style, table};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
    }
}
