//! The database URL as a secret-bearing value: parsed once, printed only redacted, and handed to
//! child processes (`pg_dump`, `pg_restore`) as libpq environment variables, never on argv.

use std::fmt;

use url::Url;

/// Where the URL came from, so an error can tell the operator which knob to turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// `--database-url`.
    Flag,
    /// The environment variable named by the environment's `database_url_env` (or `DATABASE_URL`).
    EnvVar(String),
}

impl fmt::Display for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag => f.write_str("--database-url"),
            Self::EnvVar(name) => write!(f, "${name}"),
        }
    }
}

/// A PostgreSQL connection URL. `Debug` and `Display` show it with the password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: Url,
}

/// The URL could not be used; the message never contains the URL itself (it may hold a password).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error(
        "the database URL from {origin} is not a valid URL ({reason}); expected postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    Invalid { origin: UrlSource, reason: String },
    #[error(
        "the database URL from {origin} has scheme `{scheme}`; expected postgres:// or postgresql://"
    )]
    Scheme { origin: UrlSource, scheme: String },
    #[error("the database URL from {origin} names no database; add `/DATABASE` after the host")]
    NoDatabase { origin: UrlSource },
    #[error("no database URL: pass --database-url or set ${variable}")]
    Missing { variable: String },
    #[error(
        "`{name}` is not a usable database name: use letters, digits and `_` (at most 63, not starting with a digit)"
    )]
    BadDatabaseName { name: String },
}

impl DatabaseUrl {
    /// Parses `text`; `origin` only feeds error messages.
    pub fn parse(text: &str, origin: UrlSource) -> Result<Self, UrlError> {
        let url = Url::parse(text.trim()).map_err(|error| UrlError::Invalid {
            origin: origin.clone(),
            reason: error.to_string(),
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(UrlError::Scheme {
                origin,
                scheme: url.scheme().to_owned(),
            });
        }
        let this = Self { url };
        if this.database().is_empty() {
            return Err(UrlError::NoDatabase { origin });
        }
        Ok(this)
    }

    /// Resolves the URL: the flag wins, else the variable `variable` (the environment's
    /// `database_url_env`) read through `lookup`.
    pub fn resolve(
        flag: Option<&str>,
        variable: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, UrlError> {
        if let Some(text) = flag {
            return Self::parse(text, UrlSource::Flag);
        }
        match lookup(variable).filter(|value| !value.trim().is_empty()) {
            Some(text) => Self::parse(&text, UrlSource::EnvVar(variable.to_owned())),
            None => Err(UrlError::Missing {
                variable: variable.to_owned(),
            }),
        }
    }

    /// The full URL, password included: only for handing to the database driver.
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// The password, if any (percent-decoded), so that callers can register it for redaction.
    pub fn password(&self) -> Option<String> {
        self.url.password().map(percent_decode)
    }

    pub fn host(&self) -> String {
        match self.url.host_str() {
            // An IPv6 literal keeps its brackets in the URL but libpq wants it bare.
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            None => self.query("host").unwrap_or_else(|| "localhost".to_owned()),
        }
    }

    pub fn port(&self) -> u16 {
        self.url.port().unwrap_or(5432)
    }

    pub fn user(&self) -> Option<String> {
        let user = self.url.username();
        if user.is_empty() {
            self.query("user")
        } else {
            Some(percent_decode(user))
        }
    }

    /// The database name (the URL's path without the leading `/`).
    pub fn database(&self) -> String {
        percent_decode(self.url.path().trim_start_matches('/'))
    }

    /// The same server and credentials, another database.
    pub fn with_database(&self, name: &str) -> Result<Self, UrlError> {
        check_database_name(name)?;
        let mut url = self.url.clone();
        url.set_path(&format!("/{name}"));
        Ok(Self { url })
    }

    /// `host:port/database`: how psctl names a database in tables and messages.
    pub fn label(&self) -> String {
        format!("{}:{}/{}", self.host(), self.port(), self.database())
    }

    /// The libpq environment for a child process. The password travels only here, never on argv.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host()),
            ("PGPORT", self.port().to_string()),
            ("PGDATABASE", self.database()),
        ];
        if let Some(user) = self.user() {
            env.push(("PGUSER", user));
        }
        if let Some(password) = self.password() {
            env.push(("PGPASSWORD", password));
        }
        for (parameter, variable) in [
            ("sslmode", "PGSSLMODE"),
            ("sslrootcert", "PGSSLROOTCERT"),
            ("sslcert", "PGSSLCERT"),
            ("sslkey", "PGSSLKEY"),
            ("application_name", "PGAPPNAME"),
            ("connect_timeout", "PGCONNECT_TIMEOUT"),
        ] {
            if let Some(value) = self.query(parameter) {
                env.push((variable, value));
            }
        }
        env
    }

    fn query(&self, key: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// Database names psctl creates or restores into: plain identifiers only, so they never need
/// quoting tricks and cannot smuggle SQL.
pub fn check_database_name(name: &str) -> Result<(), UrlError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(UrlError::BadDatabaseName {
            name: name.to_owned(),
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(value) = u8::from_str_radix(hex, 16)
        {
            out.push(value);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            // Cannot fail for a URL that already has a password (it has a host).
            let _ = shown.set_password(Some("****"));
        }
        let pairs: Vec<(String, String)> = shown
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "****".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        if !pairs.is_empty() {
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> DatabaseUrl {
        DatabaseUrl::parse(text, UrlSource::Flag).unwrap()
    }

    #[test]
    fn display_and_debug_mask_the_password() {
        let u = url("postgres://app:s3cr%40t@db.internal:6432/payments?sslmode=require");
        assert_eq!(
            u.to_string(),
            "postgres://app:****@db.internal:6432/payments?sslmode=require"
        );
        assert!(!format!("{u:?}").contains("s3cr"));
        assert_eq!(u.password().as_deref(), Some("s3cr@t"));
        assert_eq!(u.label(), "db.internal:6432/payments");
    }

    #[test]
    fn a_password_in_the_query_is_masked_too() {
        let u = url("postgres://db/app?user=a&password=hunter22");
        assert!(!u.to_string().contains("hunter22"), "{u}");
    }

    #[test]
    fn libpq_env_carries_every_part_and_the_password_only_there() {
        let u = url("postgresql://app:pw%2Fx@10.0.0.5/ledger?sslmode=verify-full");
        let env = u.libpq_env();
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PGHOST"), Some("10.0.0.5"));
        assert_eq!(get("PGPORT"), Some("5432"));
        assert_eq!(get("PGDATABASE"), Some("ledger"));
        assert_eq!(get("PGUSER"), Some("app"));
        assert_eq!(get("PGPASSWORD"), Some("pw/x"));
        assert_eq!(get("PGSSLMODE"), Some("verify-full"));
    }

    #[test]
    fn the_flag_wins_over_the_variable() {
        let lookup = |_: &str| Some("postgres://env@h/envdb".to_owned());
        let u =
            DatabaseUrl::resolve(Some("postgres://flag@h/flagdb"), "DATABASE_URL", lookup).unwrap();
        assert_eq!(u.database(), "flagdb");
        let u = DatabaseUrl::resolve(None, "APP_DB", lookup).unwrap();
        assert_eq!(u.database(), "envdb");
        let missing = DatabaseUrl::resolve(None, "APP_DB", |_| None).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "no database URL: pass --database-url or set $APP_DB"
        );
    }

    #[test]
    fn bad_urls_are_explained_without_echoing_them() {
        let error = DatabaseUrl::parse("mysql://u:topsecret@h/db", UrlSource::Flag).unwrap_err();
        assert!(error.to_string().contains("scheme `mysql`"));
        assert!(!error.to_string().contains("topsecret"));
        let error = DatabaseUrl::parse("postgres://u:topsecret@h", UrlSource::EnvVar("DB".into()))
            .unwrap_err();
        assert_eq!(
            error,
            UrlError::NoDatabase {
                origin: UrlSource::EnvVar("DB".into())
            }
        );
        let error = DatabaseUrl::parse("not a url topsecret", UrlSource::Flag).unwrap_err();
        assert!(!error.to_string().contains("topsecret"));
    }

    #[test]
    fn another_database_keeps_the_credentials_and_rejects_odd_names() {
        let u = url("postgres://app:pw@h:1/live");
        let restored = u.with_database("restore_20261123").unwrap();
        assert_eq!(restored.expose(), "postgres://app:pw@h:1/restore_20261123");
        assert!(u.with_database("x; DROP DATABASE live").is_err());
        assert!(u.with_database("1abc").is_err());
        assert!(u.with_database("").is_err());
    }
}
