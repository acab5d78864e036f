//! Settings: command-line arguments resolved against `psctl.yaml` and `PSCTL_*` variables before
//! any command logic runs.
//!
//! Precedence: flags, then `PSCTL_*` environment variables (handled by clap), then the file, then
//! the defaults of DESIGN.md. Resolution destructures every argument field so a new flag that
//! nobody handles does not compile.

pub mod file;

use std::path::PathBuf;
use std::time::Duration;

pub use file::{
    BaselineSpec, BuildSpec, BuildTool, CanarySpec, Component, ConfigError, Environment,
    MetricsSpec, RecoverySpec, SecretSpec,
};

use crate::cli::{GlobalArgs, OutputFormat};
use crate::error::{Classify, ExitStatus};
use crate::output::Format;

/// Global settings, resolved from the global flags. The configuration file is read lazily so
/// that `completions` and `man` work without one.
#[derive(Debug, Clone)]
pub struct GlobalSettings {
    pub config: PathBuf,
    pub environment: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub format: Format,
    pub dry_run: bool,
    pub yes: bool,
    /// `-v` count minus `-q` count: 0 normal, >0 chattier, <0 quieter.
    pub verbosity: i8,
    /// `--database-url`: wins over the environment's `database_url_env`. Debug masks the password.
    pub database_url: Option<crate::db::DatabaseUrl>,
    /// `--allow-no-audit`: act even when the audit trail cannot be written.
    pub allow_no_audit: bool,
}

impl GlobalSettings {
    pub fn resolve(args: GlobalArgs) -> Self {
        let GlobalArgs {
            config,
            environment,
            context,
            namespace,
            output,
            dry_run,
            yes,
            verbose,
            quiet,
            database_url,
            allow_no_audit,
        } = args;
        let clamp = |count: u8| i8::try_from(count).unwrap_or(i8::MAX);
        Self {
            config,
            environment,
            context,
            namespace,
            format: match output {
                OutputFormat::Table => Format::Table,
                OutputFormat::Json => Format::Json,
                OutputFormat::Yaml => Format::Yaml,
                OutputFormat::Junit => Format::Junit,
            },
            dry_run,
            yes,
            verbosity: clamp(verbose).saturating_sub(clamp(quiet)),
            database_url,
            allow_no_audit,
        }
    }

    /// Loads the configuration file, selects the environment and applies the flag overrides.
    pub fn environment(&self) -> Result<Environment, SettingsError> {
        let config = file::load(&self.config)?;
        let mut environment = select_environment(config, self.environment.as_deref())?;
        if let Some(context) = &self.context {
            environment.kube_context = context.clone();
        }
        if let Some(namespace) = &self.namespace {
            environment.namespace = namespace.clone();
        }
        Ok(environment)
    }
}

/// Picks the named environment, or the only one when no name was given.
pub fn select_environment(
    config: file::ConfigFile,
    name: Option<&str>,
) -> Result<Environment, SettingsError> {
    let file = config.path.display().to_string();
    let known = || {
        config
            .environments
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(name) => match config.environments.get(name) {
            Some(environment) => Ok(environment.clone()),
            None => Err(SettingsError::UnknownEnvironment {
                file,
                name: name.to_owned(),
                known: known(),
            }),
        },
        None if config.environments.len() == 1 => {
            // Exactly one entry: checked by the guard.
            Ok(config
                .environments
                .values()
                .next()
                .cloned()
                .ok_or(SettingsError::NoEnvironment { file })?)
        }
        None => Err(SettingsError::AmbiguousEnvironment {
            file,
            known: known(),
        }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{file}: no environment `{name}`; configured: {known}")]
    UnknownEnvironment {
        file: String,
        name: String,
        known: String,
    },
    #[error("{file}: several environments ({known}) and none selected")]
    AmbiguousEnvironment { file: String, known: String },
    #[error("{file}: no environment defined")]
    NoEnvironment { file: String },
}

impl Classify for SettingsError {
    fn exit_status(&self) -> ExitStatus {
        ExitStatus::Usage
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Self::Config(error) => error.hints(),
            Self::UnknownEnvironment { .. } | Self::AmbiguousEnvironment { .. } => {
                vec!["pass `--env NAME` or set `PSCTL_ENV`".to_owned()]
            }
            Self::NoEnvironment { .. } => vec!["add an entry under `environments:`".to_owned()],
        }
    }
}

/// Parses `90s`, `5m`, `1h30m`, `250ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. `90s`, `5m` or `1h30m`".to_owned());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration; write e.g. `90s`, `5m` or `1h30m`"
            ));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => {
                return Err(format!(
                    "`{text}`: unknown unit `{unit}`; use ms, s, m or h (e.g. `5m`)"
                ));
            }
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn durations_parse_like_the_runbook_writes_them() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(
            parse_duration("5 minutes")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m5").is_err());
    }

    #[test]
    fn the_only_environment_is_chosen_without_a_name() {
        let config = file::parse(
            Path::new("p.yaml"),
            "environments: {dev: {kube_context: a}}",
        )
        .unwrap();
        assert_eq!(select_environment(config, None).unwrap().name, "dev");
    }

    #[test]
    fn several_environments_need_a_name() {
        let text =
            "environments: {dev: {kube_context: a}, prod: {kube_context: b, production: true}}";
        let config = file::parse(Path::new("p.yaml"), text).unwrap();
        let error = select_environment(config.clone(), None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "p.yaml: several environments (dev, prod) and none selected"
        );
        let error = select_environment(config.clone(), Some("stage")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "p.yaml: no environment `stage`; configured: dev, prod"
        );
        assert!(select_environment(config, Some("prod")).unwrap().production);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psctl.yaml");
        std::fs::write(
            &path,
            "environments: {dev: {kube_context: a, namespace: apps}}",
        )
        .unwrap();
        let mut settings = GlobalSettings {
            config: path,
            environment: None,
            context: None,
            namespace: None,
            format: Format::Table,
            dry_run: false,
            yes: false,
            verbosity: 0,
            database_url: None,
            allow_no_audit: false,
        };
        assert_eq!(settings.environment().unwrap().namespace, "apps");
        settings.namespace = Some("other".to_owned());
        settings.context = Some("b".to_owned());
        let environment = settings.environment().unwrap();
        assert_eq!(
            (
                environment.namespace.as_str(),
                environment.kube_context.as_str()
            ),
            ("other", "b")
        );
    }
}
