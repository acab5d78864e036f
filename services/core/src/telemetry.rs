//! Logging setup: `tracing` to stderr, `LOG_FORMAT=json|text` (default text), filter from
//! `RUST_LOG` (default `info`). Text logs carry ANSI colour only when stderr is a terminal and
//! `NO_COLOR` is unset, so logs collected from a pipe or a file stay plain.

use std::borrow::Cow;
use std::io::IsTerminal as _;
use std::sync::{Arc, LazyLock};

use regex::Regex;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{ConfigError, env_or, env_secret_optional};

/// Environment variables whose values are secrets: [`Scrubber::from_env`] removes each value
/// from every error event before it leaves the process.
pub const SECRET_ENV: [&str; 7] = [
    "DATABASE_URL",
    "BINANCE_API_KEY",
    "BINANCE_API_SECRET",
    "WEBHOOK_SECRET",
    "ENCRYPTION_MASTER_KEY",
    "REDIS_URL",
    "SENTRY_DSN",
];

/// What replaces a secret in an event.
pub const REDACTED: &str = "[redacted]";

/// What [`init`] set up; keep it alive until the process ends: dropping it flushes pending error
/// events (for up to two seconds).
#[must_use = "dropping the guard stops error reporting"]
pub struct Telemetry {
    sentry: Option<sentry::ClientInitGuard>,
}

impl Telemetry {
    /// Whether error events go to Sentry (`SENTRY_DSN` set).
    pub fn reports_errors(&self) -> bool {
        self.sentry.as_ref().is_some_and(|guard| guard.is_enabled())
    }
}

/// Installs the global subscriber; call once at start. With `SENTRY_DSN`, error-level events are
/// also sent to Sentry (warnings and info become their breadcrumbs), scrubbed by
/// [`Scrubber::from_env`]. `service` and `version` name the release (`service@version`). Errors
/// on an unknown `LOG_FORMAT`, an invalid `RUST_LOG` or an invalid `SENTRY_DSN`.
pub fn init(service: &str, version: &str) -> Result<Telemetry, ConfigError> {
    let format = env_or("LOG_FORMAT", "text")?;
    let filter_text = env_or("RUST_LOG", "info")?;
    let filter = EnvFilter::try_new(&filter_text)
        .map_err(|error| ConfigError::invalid("RUST_LOG", &filter_text, error.to_string()))?;
    let ansi = ansi_logs(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let fmt = match format.trim().to_ascii_lowercase().as_str() {
        "json" => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed(),
        "text" => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        _ => {
            return Err(ConfigError::invalid(
                "LOG_FORMAT",
                &format,
                "expected `json` or `text`",
            ));
        }
    };
    let sentry = match env_secret_optional("SENTRY_DSN")? {
        None => None,
        Some(dsn) => {
            let dsn: sentry::types::Dsn = dsn.expose().trim().parse().map_err(|_| {
                ConfigError::invalid_secret(
                    "SENTRY_DSN",
                    "not a Sentry DSN (`https://PUBLIC_KEY@HOST/PROJECT_ID`)",
                )
            })?;
            Some(sentry::init(client_options(
                dsn,
                format!("{service}@{version}"),
                Scrubber::from_env(),
            )))
        }
    };
    // Only ERROR events become Sentry events; the filter decides what is logged at all.
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(sentry.as_ref().map(|_| sentry_layers()))
        .try_init();
    // A subscriber already installed (tests calling init twice) is harmless.
    let _ = result;
    if sentry.is_some() {
        tracing::info!(release = %format!("{service}@{version}"), "reporting errors to Sentry (SENTRY_DSN)");
    }
    Ok(Telemetry { sentry })
}

/// Sentry's options for the services: the release, no personal data, and every event and
/// breadcrumb passed through `scrubber` before it is sent.
pub fn client_options(
    dsn: sentry::types::Dsn,
    release: String,
    scrubber: Scrubber,
) -> sentry::ClientOptions {
    let scrubber = Arc::new(scrubber);
    let for_breadcrumbs = Arc::clone(&scrubber);
    let mut options = sentry::ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = Some(Cow::Owned(release));
    options.send_default_pii = false;
    options.before_send = Some(Arc::new(move |event: sentry::protocol::Event<'static>| {
        scrubber.event(event)
    }));
    options.before_breadcrumb = Some(Arc::new(move |breadcrumb: sentry::protocol::Breadcrumb| {
        for_breadcrumbs.breadcrumb(breadcrumb)
    }));
    options
}

/// The tracing layers that feed Sentry: `error` events become Sentry events; `warn` and `info`
/// events become breadcrumbs sent with the next error. No spans (no performance tracing).
pub fn sentry_layers<S>() -> Vec<Box<dyn tracing_subscriber::Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
    use tracing_subscriber::filter::{LevelFilter, filter_fn};
    vec![
        // Breadcrumbs first, so an error's own breadcrumbs are in place when it is captured.
        BreadcrumbLayer::new()
            .with_filter(filter_fn(|metadata| {
                matches!(
                    *metadata.level(),
                    tracing::Level::WARN | tracing::Level::INFO
                )
            }))
            .boxed(),
        ErrorLayer::new().with_filter(LevelFilter::ERROR).boxed(),
    ]
}

/// Removes secrets from Sentry events: the values of the [`SECRET_ENV`] variables wherever they
/// appear, any URL's password (`scheme://user:PASSWORD@host`), merchant signing secrets
/// (`whsec_...`), and the value of any field whose name says it holds a secret (`password`,
/// `secret`, `token`, `api_key`, `dsn`, `authorization`, `database_url`, `redis_url`).
#[derive(Default)]
pub struct Scrubber {
    values: Vec<String>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("values", &self.values.len())
            .finish()
    }
}

static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@").expect("valid regex")
});
static SIGNING_SECRET: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"whsec_[A-Za-z0-9+/=_-]+").expect("valid regex"));

fn secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "dsn",
        "authorization",
        "cookie",
        "database_url",
        "redis_url",
        "master_key",
    ]
    .iter()
    .any(|word| name.contains(word))
}

impl Scrubber {
    /// Scrubs these exact values (and the patterns).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .map(|v| v.trim().to_owned())
            // Very short values would redact ordinary words; real secrets are longer.
            .filter(|v| v.len() >= 6)
            .collect();
        // Longest first, so a value containing another is removed whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self { values }
    }

    /// Scrubs the current values of [`SECRET_ENV`].
    pub fn from_env() -> Self {
        Self::new(
            SECRET_ENV
                .iter()
                .filter_map(|name| std::env::var(name).ok()),
        )
    }

    /// `text` without secrets.
    pub fn text(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for value in &self.values {
            if text.contains(value.as_str()) {
                text = text.replace(value.as_str(), REDACTED);
            }
        }
        let text = URL_PASSWORD.replace_all(&text, format!("${{head}}{REDACTED}@").as_str());
        SIGNING_SECRET.replace_all(&text, REDACTED).into_owned()
    }

    fn value(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => *text = self.text(text),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.value(v)),
            serde_json::Value::Object(map) => {
                for (name, item) in map.iter_mut() {
                    if secret_field(name) && !item.is_null() {
                        *item = serde_json::Value::String(REDACTED.to_owned());
                    } else {
                        self.value(item);
                    }
                }
            }
            _ => {}
        }
    }

    fn scrub<T: serde::Serialize + serde::de::DeserializeOwned>(&self, item: T) -> Option<T> {
        // Every string of the event, wherever the SDK or a tracing field put it. An event that
        // cannot be rebuilt after scrubbing is dropped, never sent unscrubbed.
        let mut value = serde_json::to_value(item).ok()?;
        self.value(&mut value);
        serde_json::from_value(value).ok()
    }

    /// The event without secrets (`None`: dropped, when it cannot be scrubbed).
    pub fn event(
        &self,
        event: sentry::protocol::Event<'static>,
    ) -> Option<sentry::protocol::Event<'static>> {
        self.scrub(event)
    }

    /// The breadcrumb without secrets.
    pub fn breadcrumb(
        &self,
        breadcrumb: sentry::protocol::Breadcrumb,
    ) -> Option<sentry::protocol::Breadcrumb> {
        self.scrub(breadcrumb)
    }
}

/// Whether text logs are coloured: only on a terminal, and never with a non-empty `NO_COLOR`.
pub fn ansi_logs(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn scrubbing_removes_known_values_url_passwords_and_signing_secrets() {
        let scrubber = Scrubber::new([
            "postgres://app:db-pass-123@db:5432/app".to_owned(),
            "binance-secret-value".to_owned(),
            "abc".to_owned(),
        ]);
        let text = scrubber.text(
            "connect postgres://app:db-pass-123@db:5432/app failed; key binance-secret-value; \
             redis://:other-pass@redis:6379/0 down; signing whsec_c2VjcmV0LXNpZ25pbmc= abc",
        );
        for secret in [
            "db-pass-123",
            "binance-secret-value",
            "other-pass",
            "whsec_c2Vj",
        ] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert!(text.contains("redis://:[redacted]@redis:6379/0"), "{text}");
        // Short values are not treated as secrets (they would redact ordinary words).
        assert!(text.ends_with(" abc"), "{text}");
    }

    #[test]
    fn scrubbing_a_breadcrumb_keeps_it() {
        let scrubber = Scrubber::new(["binance-secret-value".to_owned()]);
        let mut breadcrumb = sentry::protocol::Breadcrumb {
            message: Some("retrying with binance-secret-value".to_owned()),
            ..Default::default()
        };
        breadcrumb.data.insert(
            "database_url".to_owned(),
            serde_json::Value::String("postgres://a:b@c/d".to_owned()),
        );
        breadcrumb.ty = "log".to_owned();
        breadcrumb.category = Some("sentry".to_owned());
        breadcrumb.level = sentry::Level::Warning;
        let mut event = sentry::protocol::Event::default();
        event.breadcrumbs.values.push(breadcrumb.clone());
        let event = scrubber.event(event).expect("event kept");
        assert_eq!(event.breadcrumbs.values.len(), 1, "{event:?}");
        let scrubbed = scrubber.breadcrumb(breadcrumb).expect("kept");
        assert_eq!(
            scrubbed.message.as_deref(),
            Some("retrying with [redacted]")
        );
        assert_eq!(scrubbed.data["database_url"], "[redacted]");
    }

    #[test]
    fn scrubbing_an_event_covers_message_extra_and_secret_named_fields() {
        let scrubber = Scrubber::new(["binance-secret-value".to_owned()]);
        let mut event = sentry::protocol::Event {
            message: Some("auth failed with binance-secret-value".to_owned()),
            ..Default::default()
        };
        event.extra.insert(
            "api_key".to_owned(),
            serde_json::Value::String("not-in-the-list".to_owned()),
        );
        event.extra.insert(
            "url".to_owned(),
            serde_json::Value::String("https://u:p4ss@host/x".to_owned()),
        );
        let scrubbed = scrubber.event(event).expect("scrubbed, not dropped");
        let json = serde_json::to_string(&scrubbed).unwrap();
        for secret in ["binance-secret-value", "not-in-the-list", "p4ss"] {
            assert!(!json.contains(secret), "{secret} left in {json}");
        }
        assert!(json.contains("auth failed with [redacted]"), "{json}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(ansi_logs(true, None));
        assert!(ansi_logs(true, Some(OsStr::new(""))));
        assert!(!ansi_logs(true, Some(OsStr::new("1"))));
        assert!(!ansi_logs(false, None));
        assert!(!ansi_logs(false, Some(OsStr::new("1"))));
    }
}
