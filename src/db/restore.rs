//! Restoring a verified backup into a NEW database: never over the live one, never into a
//! database that already exists. Migrating and verifying the result is the command's job.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sqlx::PgPool;

use super::backup::{BackupError, Manifest, verify_against_manifest};
use super::tools::{Tool, ToolError, run_tool};
use super::url::{DatabaseUrl, UrlError, check_database_name};

/// What `psctl db restore` will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestorePlan {
    pub backup: PathBuf,
    /// `host:port/database` of the live database (left untouched).
    pub live: String,
    /// `host:port/database` to create.
    pub into: String,
    pub pg_restore_args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "refusing to restore into `{name}`: it is the live database; restore into a new database and promote it after verification"
    )]
    IntoLive { name: String },
    #[error(
        "refusing to restore into `{name}`: the database already exists; choose a new name (restore never overwrites)"
    )]
    Exists { name: String },
    #[error(transparent)]
    Name(#[from] UrlError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("creating database `{name}`")]
    Create {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("checking whether database `{name}` exists")]
    Lookup {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Tool(#[from] ToolError),
}

/// Builds the plan; refuses the live database by name before anything touches the server.
pub fn plan_restore(
    live: &DatabaseUrl,
    backup: &Path,
    into: &str,
) -> Result<(RestorePlan, DatabaseUrl), RestoreError> {
    check_database_name(into)?;
    if into == live.database() {
        return Err(RestoreError::IntoLive {
            name: into.to_owned(),
        });
    }
    let target = live.with_database(into)?;
    let plan = RestorePlan {
        backup: backup.to_owned(),
        live: live.label(),
        into: target.label(),
        pg_restore_args: pg_restore_args(backup, into),
    };
    Ok((plan, target))
}

/// The `pg_restore` argv: the target is named by database name only (host, user and password
/// travel in the libpq environment). `--exit-on-error` so a partial restore is a failure, not a
/// warning at the end of a long log.
pub fn pg_restore_args(backup: &Path, into: &str) -> Vec<String> {
    vec![
        "--exit-on-error".to_owned(),
        "--no-password".to_owned(),
        format!("--dbname={into}"),
        backup.display().to_string(),
    ]
}

/// Checks the backup against its manifest, then refuses an existing target.
pub async fn preflight(
    admin: &PgPool,
    plan: &RestorePlan,
    into: &str,
) -> Result<Manifest, RestoreError> {
    let manifest = verify_against_manifest(&plan.backup).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(into)
            .fetch_one(admin)
            .await
            .map_err(|source| RestoreError::Lookup {
                name: into.to_owned(),
                source,
            })?;
    if exists {
        return Err(RestoreError::Exists {
            name: into.to_owned(),
        });
    }
    Ok(manifest)
}

/// Creates the new database (through `admin`, a connection to the live server) and restores into it.
pub async fn execute(
    admin: &PgPool,
    plan: &RestorePlan,
    target: &DatabaseUrl,
) -> Result<(), RestoreError> {
    let name = target.database();
    check_database_name(&name)?;
    // The name is a checked plain identifier, so quoting it cannot be subverted.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(admin)
        .await
        .map_err(|source| RestoreError::Create {
            name: name.clone(),
            source,
        })?;
    run_tool(Tool::PgRestore, &plan.pg_restore_args, target).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::url::UrlSource;

    fn live() -> DatabaseUrl {
        DatabaseUrl::parse("postgres://app:pw@db:5432/payments", UrlSource::Flag).unwrap()
    }

    #[test]
    fn the_live_database_is_refused() {
        let error = plan_restore(&live(), Path::new("/b/x.dump"), "payments").unwrap_err();
        assert!(matches!(error, RestoreError::IntoLive { .. }), "{error}");
    }

    #[test]
    fn odd_target_names_are_refused_before_any_sql() {
        let error = plan_restore(
            &live(),
            Path::new("/b/x.dump"),
            "a\"; DROP DATABASE payments; --",
        )
        .unwrap_err();
        assert!(
            matches!(error, RestoreError::Name(UrlError::BadDatabaseName { .. })),
            "{error}"
        );
    }

    #[test]
    fn the_plan_names_both_databases_and_keeps_credentials_off_argv() {
        let (plan, target) =
            plan_restore(&live(), Path::new("/b/x.dump"), "payments_restore").unwrap();
        assert_eq!(plan.live, "db:5432/payments");
        assert_eq!(plan.into, "db:5432/payments_restore");
        assert_eq!(
            plan.pg_restore_args,
            [
                "--exit-on-error",
                "--no-password",
                "--dbname=payments_restore",
                "/b/x.dump"
            ]
        );
        assert!(!plan.pg_restore_args.iter().any(|a| a.contains("pw")));
        assert_eq!(target.database(), "payments_restore");
    }
}
