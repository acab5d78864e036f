//! Which database a command acts on: `--database-url`, else the variable the environment names
//! (`database_url_env`), else the default variable when psctl runs without a configuration
//! file; and where backups go by default. The URL's secrets are registered with the redactor
//! the moment it is resolved.

use std::path::PathBuf;

use super::DatabaseUrl;
use crate::error::CommandError;
use crate::output::Output;
use crate::settings::{
    ConfigError, Environment, GlobalSettings, SettingsError, file::DEFAULT_DATABASE_URL_ENV,
};

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
