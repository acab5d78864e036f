//! Schema migrations: the migrations embedded in this binary compared with what a database has
//! applied (a pure plan), the production guard for downgrades, and the thin executor over sqlx.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

/// The repository's `migrations/` directory, compiled in; the services embed the same files.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// sqlx's bookkeeping table.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// A migration this binary knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Known {
    pub version: i64,
    pub description: String,
    #[serde(skip)]
    pub checksum: Vec<u8>,
    /// A `.down.sql` exists for it.
    pub reversible: bool,
}

/// A migration the database records as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
    pub success: bool,
}

/// The binary's up migrations, oldest first.
pub fn known_migrations(migrator: &Migrator) -> Vec<Known> {
    let reversible: Vec<i64> = migrator
        .iter()
        .filter(|m| m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| Known {
            version: m.version,
            description: m.description.to_string(),
            checksum: m.checksum.to_vec(),
            reversible: reversible.contains(&m.version),
        })
        .collect()
}

/// What `psctl db migrate` will do, computed before touching anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "direction", rename_all = "snake_case")]
pub enum MigrationPlan {
    /// Apply these, oldest first (empty: up to date).
    Up { apply: Vec<Step> },
    /// Revert these, newest first, ending at `target_version` (0: empty schema).
    Down {
        revert: Vec<Step>,
        target_version: i64,
    },
}

impl MigrationPlan {
    pub fn steps(&self) -> &[Step] {
        match self {
            Self::Up { apply } => apply,
            Self::Down { revert, .. } => revert,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.steps().is_empty()
    }

    /// True when the plan reverts `version` (used to know whether a table survives the plan).
    pub fn reverts(&self, version: i64) -> bool {
        matches!(self, Self::Down { revert, .. } if revert.iter().any(|s| s.version == version))
    }
}

/// One migration in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub version: i64,
    pub description: String,
}

/// Why the database and the binary disagree; nothing is changed when any of these is found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the database has applied migration(s) {} that this psctl does not know: it is ahead of the binary",
        list(.versions)
    )]
    Ahead { versions: Vec<i64> },
    #[error(
        "migration {version} ({description}) was applied with different contents than this psctl embeds (checksum differs)"
    )]
    ChecksumMismatch { version: i64, description: String },
    #[error("migration {version} is recorded as failed (partially applied)")]
    Dirty { version: i64 },
    #[error("--down {requested} asked for more migrations than the {applied} applied")]
    DownTooFar { requested: u32, applied: usize },
    #[error("migration {version} ({description}) has no .down.sql, so it cannot be reverted")]
    Irreversible { version: i64, description: String },
    #[error("--down 0 reverts nothing; give the number of migrations to revert")]
    DownZero,
}

fn list(versions: &[i64]) -> String {
    versions
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that the database is a prefix-compatible state of the binary's migrations.
pub fn check_applied(known: &[Known], applied: &[Applied]) -> Result<(), PlanError> {
    if let Some(dirty) = applied.iter().find(|a| !a.success) {
        return Err(PlanError::Dirty {
            version: dirty.version,
        });
    }
    let by_version: BTreeMap<i64, &Known> = known.iter().map(|k| (k.version, k)).collect();
    let ahead: Vec<i64> = applied
        .iter()
        .filter(|a| !by_version.contains_key(&a.version))
        .map(|a| a.version)
        .collect();
    if !ahead.is_empty() {
        return Err(PlanError::Ahead { versions: ahead });
    }
    for applied in applied {
        if let Some(known) = by_version.get(&applied.version)
            && known.checksum != applied.checksum
        {
            return Err(PlanError::ChecksumMismatch {
                version: applied.version,
                description: known.description.clone(),
            });
        }
    }
    Ok(())
}

/// The up plan: every known migration not yet applied, oldest first.
pub fn plan_up(known: &[Known], applied: &[Applied]) -> Result<MigrationPlan, PlanError> {
    check_applied(known, applied)?;
    let apply = known
        .iter()
        .filter(|k| !applied.iter().any(|a| a.version == k.version))
        .map(|k| Step {
            version: k.version,
            description: k.description.clone(),
        })
        .collect();
    Ok(MigrationPlan::Up { apply })
}

/// The down plan: the newest `count` applied migrations, newest first.
pub fn plan_down(
    known: &[Known],
    applied: &[Applied],
    count: u32,
) -> Result<MigrationPlan, PlanError> {
    check_applied(known, applied)?;
    if count == 0 {
        return Err(PlanError::DownZero);
    }
    let mut versions: Vec<i64> = applied.iter().map(|a| a.version).collect();
    versions.sort_unstable();
    let count_usize = usize::try_from(count).unwrap_or(usize::MAX);
    if count_usize > versions.len() {
        return Err(PlanError::DownTooFar {
            requested: count,
            applied: versions.len(),
        });
    }
    let keep = versions.len() - count_usize;
    let target_version = if keep == 0 { 0 } else { versions[keep - 1] };
    let mut revert = Vec::new();
    for version in versions[keep..].iter().rev() {
        // check_applied guarantees every applied version is known.
        let Some(known) = known.iter().find(|k| k.version == *version) else {
            return Err(PlanError::Ahead {
                versions: vec![*version],
            });
        };
        if !known.reversible {
            return Err(PlanError::Irreversible {
                version: *version,
                description: known.description.clone(),
            });
        }
        revert.push(Step {
            version: *version,
            description: known.description.clone(),
        });
    }
    Ok(MigrationPlan::Down {
        revert,
        target_version,
    })
}

/// What the operator supplied to authorise a downgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DowngradeConsent {
    pub production: bool,
    pub force_production: bool,
    /// The environment name as typed at the prompt (None: no terminal, no prompt shown).
    pub typed: Option<String>,
}

/// Why a downgrade is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("refusing to downgrade the schema of production environment `{environment}`")]
    ProductionWithoutForce { environment: String },
    #[error(
        "refusing to downgrade production environment `{environment}` without a typed confirmation on a terminal"
    )]
    NoTerminal { environment: String },
    #[error(
        "confirmation did not match: typed `{typed}`, expected the environment name `{environment}`"
    )]
    Mismatch { environment: String, typed: String },
}

/// The production guard: staging downgrades freely; production needs `--force-production` AND
/// the environment name typed on a terminal (so no script can do it by accident).
pub fn guard_downgrade(environment: &str, consent: &DowngradeConsent) -> Result<(), GuardError> {
    if !consent.production {
        return Ok(());
    }
    if !consent.force_production {
        return Err(GuardError::ProductionWithoutForce {
            environment: environment.to_owned(),
        });
    }
    match &consent.typed {
        None => Err(GuardError::NoTerminal {
            environment: environment.to_owned(),
        }),
        Some(typed) if typed.trim() == environment => Ok(()),
        Some(typed) => Err(GuardError::Mismatch {
            environment: environment.to_owned(),
            typed: typed.trim().to_owned(),
        }),
    }
}

/// Reads `_sqlx_migrations`; a database that never ran a migration has applied nothing.
pub async fn applied_migrations(pool: &PgPool) -> Result<Vec<Applied>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(MIGRATIONS_TABLE)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, String, Vec<u8>, bool)> = sqlx::query_as(
        "SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(version, description, checksum, success)| Applied {
            version,
            description,
            checksum,
            success,
        })
        .collect())
}

/// The newest applied version, or 0.
pub fn current_version(applied: &[Applied]) -> i64 {
    applied.iter().map(|a| a.version).max().unwrap_or(0)
}

/// Executes a plan. The plan was checked against the same database moments before; sqlx
/// re-validates under its migration lock, so a concurrent change is refused, not raced.
pub async fn execute(
    pool: &PgPool,
    plan: &MigrationPlan,
) -> Result<(), sqlx::migrate::MigrateError> {
    match plan {
        MigrationPlan::Up { apply } if apply.is_empty() => Ok(()),
        MigrationPlan::Up { .. } => MIGRATOR.run(pool).await,
        MigrationPlan::Down { target_version, .. } => MIGRATOR.undo(pool, *target_version).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(versions: &[i64]) -> Vec<Known> {
        versions
            .iter()
            .map(|v| Known {
                version: *v,
                description: format!("m{v}"),
                checksum: vec![*v as u8],
                reversible: true,
            })
            .collect()
    }

    fn applied(versions: &[i64]) -> Vec<Applied> {
        versions
            .iter()
            .map(|v| Applied {
                version: *v,
                description: format!("m{v}"),
                checksum: vec![*v as u8],
                success: true,
            })
            .collect()
    }

    fn versions(plan: &MigrationPlan) -> Vec<i64> {
        plan.steps().iter().map(|s| s.version).collect()
    }

    #[test]
    fn the_embedded_migrations_are_all_reversible_and_ordered() {
        let known = known_migrations(&MIGRATOR);
        assert!(known.len() >= 4, "{known:?}");
        assert!(known.iter().all(|k| k.reversible));
        assert!(known.windows(2).all(|w| w[0].version < w[1].version));
        assert!(known.iter().any(|k| k.description == "ops audit"));
    }

    #[test]
    fn pending_migrations_are_planned_oldest_first() {
        let plan = plan_up(&known(&[1, 2, 3]), &applied(&[1])).unwrap();
        assert_eq!(versions(&plan), [2, 3]);
        assert!(
            plan_up(&known(&[1, 2]), &applied(&[1, 2]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_database_ahead_of_the_binary_is_refused() {
        let error = plan_up(&known(&[1, 2]), &applied(&[1, 2, 3, 4])).unwrap_err();
        assert_eq!(
            error,
            PlanError::Ahead {
                versions: vec![3, 4]
            }
        );
        assert!(error.to_string().contains("3, 4"));
        assert!(plan_down(&known(&[1, 2]), &applied(&[1, 2, 3]), 1).is_err());
    }

    #[test]
    fn a_changed_or_failed_migration_is_refused() {
        let mut db = applied(&[1, 2]);
        db[1].checksum = vec![0xff];
        assert!(matches!(
            plan_up(&known(&[1, 2]), &db).unwrap_err(),
            PlanError::ChecksumMismatch { version: 2, .. }
        ));
        let mut db = applied(&[1]);
        db[0].success = false;
        assert_eq!(
            plan_up(&known(&[1, 2]), &db).unwrap_err(),
            PlanError::Dirty { version: 1 }
        );
    }

    #[test]
    fn down_reverts_the_newest_first_and_names_the_target() {
        let plan = plan_down(&known(&[1, 2, 3]), &applied(&[1, 2, 3]), 2).unwrap();
        assert_eq!(versions(&plan), [3, 2]);
        assert_eq!(
            plan,
            MigrationPlan::Down {
                revert: plan.steps().to_vec(),
                target_version: 1
            }
        );
        let all = plan_down(&known(&[1, 2]), &applied(&[1, 2]), 2).unwrap();
        assert!(matches!(
            all,
            MigrationPlan::Down {
                target_version: 0,
                ..
            }
        ));
        assert!(all.reverts(1) && all.reverts(2));
        assert_eq!(
            plan_down(&known(&[1]), &applied(&[1]), 2).unwrap_err(),
            PlanError::DownTooFar {
                requested: 2,
                applied: 1
            }
        );
        assert_eq!(
            plan_down(&known(&[1]), &applied(&[1]), 0).unwrap_err(),
            PlanError::DownZero
        );
        let mut k = known(&[1, 2]);
        k[1].reversible = false;
        assert!(matches!(
            plan_down(&k, &applied(&[1, 2]), 1).unwrap_err(),
            PlanError::Irreversible { version: 2, .. }
        ));
    }

    #[test]
    fn the_production_guard_needs_force_and_the_typed_name() {
        let consent = |production, force_production, typed: Option<&str>| DowngradeConsent {
            production,
            force_production,
            typed: typed.map(str::to_owned),
        };
        assert!(guard_downgrade("staging", &consent(false, false, None)).is_ok());
        assert_eq!(
            guard_downgrade("prod", &consent(true, false, Some("prod"))).unwrap_err(),
            GuardError::ProductionWithoutForce {
                environment: "prod".into()
            }
        );
        assert_eq!(
            guard_downgrade("prod", &consent(true, true, None)).unwrap_err(),
            GuardError::NoTerminal {
                environment: "prod".into()
            }
        );
        assert!(matches!(
            guard_downgrade("prod", &consent(true, true, Some("prd"))),
            Err(GuardError::Mismatch { .. })
        ));
        assert!(guard_downgrade("prod", &consent(true, true, Some("prod\n"))).is_ok());
    }
}
