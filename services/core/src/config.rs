//! Reading configuration from environment variables, with errors that name the variable and
//! say how to fix it, and the [`Secret`] wrapper that keeps secret values out of every log line.

use std::fmt;
use std::str::FromStr;

/// A configuration problem; always names the environment variable involved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable `{name}` is not set: {hint}")]
    Missing { name: String, hint: String },
    #[error("environment variables `{first}` and `{second}` are both set and disagree: {hint}")]
    Conflict {
        first: String,
        second: String,
        hint: String,
    },
    #[error("environment variable `{name}` is not valid Unicode")]
    NotUnicode { name: String },
    #[error("environment variable `{name}` has an invalid value {shown}: {reason}")]
    Invalid {
        name: String,
        /// The offending value in backticks, or `[redacted]` for secrets.
        shown: String,
        reason: String,
    },
}

impl ConfigError {
    /// An invalid value for a non-secret variable (the value is shown).
    pub fn invalid(name: &str, value: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            name: name.to_owned(),
            shown: format!("`{value}`"),
            reason: reason.into(),
        }
    }

    /// An invalid value for a secret variable (the value is never shown).
    pub fn invalid_secret(name: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            name: name.to_owned(),
            shown: "[redacted]".to_owned(),
            reason: reason.into(),
        }
    }
}

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
/// Read it with [`Secret::expose`], only where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret value itself; never format it into a message.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

fn read(name: &str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::NotUnicode {
            name: name.to_owned(),
        }),
    }
}

/// A required variable; missing or empty is an error telling the operator to set it.
pub fn env_required(name: &str) -> Result<String, ConfigError> {
    read(name)?.ok_or_else(|| ConfigError::Missing {
        name: name.to_owned(),
        hint: format!("set `{name}` in the environment (see `--help`)"),
    })
}

/// A required secret variable (e.g. `DATABASE_URL`, `BINANCE_API_SECRET`).
pub fn env_secret(name: &str) -> Result<Secret<String>, ConfigError> {
    env_required(name)
        .map(Secret::new)
        .map_err(|error| match error {
            ConfigError::Missing { name, .. } => ConfigError::Missing {
                hint: format!(
                    "set `{name}` (in Kubernetes it comes from the `problemsolver-secrets` Secret)"
                ),
                name,
            },
            other => other,
        })
}

/// An optional secret variable (e.g. `REDIS_URL`, `SENTRY_DSN`); unset or empty is `None`.
pub fn env_secret_optional(name: &str) -> Result<Option<Secret<String>>, ConfigError> {
    Ok(read(name)?.map(Secret::new))
}

/// An optional variable with a default.
pub fn env_or(name: &str, default: &str) -> Result<String, ConfigError> {
    Ok(read(name)?.unwrap_or_else(|| default.to_owned()))
}

/// An optional variable parsed with `FromStr`, with a default when unset.
pub fn env_parse<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match read(name)? {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|error: T::Err| ConfigError::invalid(name, &raw, error.to_string())),
    }
}

/// An optional boolean: `true/false/1/0/yes/no` (case-insensitive).
pub fn env_bool(name: &str, default: bool) -> Result<bool, ConfigError> {
    match read(name)? {
        None => Ok(default),
        Some(raw) => parse_bool(&raw)
            .ok_or_else(|| ConfigError::invalid(name, &raw, "expected `true` or `false`")),
    }
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn invalid_secret_error_hides_value() {
        let message =
            ConfigError::invalid_secret("ENCRYPTION_MASTER_KEY", "wrong length").to_string();
        assert!(message.contains("ENCRYPTION_MASTER_KEY"));
        assert!(message.contains("[redacted]"));
    }

    #[test]
    fn missing_and_parse_errors_name_the_variable() {
        // Unique names so parallel tests never race on the same variable.
        let missing = env_required("PROBLEMSOLVER_CORE_TEST_SURELY_UNSET")
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("`PROBLEMSOLVER_CORE_TEST_SURELY_UNSET`"),
            "{missing}"
        );
        assert_eq!(
            env_parse("PROBLEMSOLVER_CORE_TEST_SURELY_UNSET", 10u64).unwrap(),
            10
        );
        assert_eq!(
            env_or("PROBLEMSOLVER_CORE_TEST_SURELY_UNSET", "x").unwrap(),
            "x"
        );
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool(" no "), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
