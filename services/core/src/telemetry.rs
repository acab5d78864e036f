//! Logging setup: `tracing` to stderr, `LOG_FORMAT=json|text` (default text), filter from
//! `RUST_LOG` (default `info`). Text logs carry ANSI colour only when stderr is a terminal and
//! `NO_COLOR` is unset, so logs collected from a pipe or a file stay plain.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, env_or};

/// Installs the global subscriber; call once at start. Errors on an unknown `LOG_FORMAT` or an
/// invalid `RUST_LOG`.
pub fn init() -> Result<(), ConfigError> {
    let format = env_or("LOG_FORMAT", "text")?;
    let filter_text = env_or("RUST_LOG", "info")?;
    let filter = EnvFilter::try_new(&filter_text)
        .map_err(|error| ConfigError::invalid("RUST_LOG", &filter_text, error.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi_logs(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ));
    let result = match format.trim().to_ascii_lowercase().as_str() {
        "json" => builder.json().with_current_span(false).try_init(),
        "text" => builder.try_init(),
        _ => {
            return Err(ConfigError::invalid(
                "LOG_FORMAT",
                &format,
                "expected `json` or `text`",
            ));
        }
    };
    // A subscriber already installed (tests calling init twice) is harmless.
    let _ = result;
    Ok(())
}

/// Whether text logs are coloured: only on a terminal, and never with a non-empty `NO_COLOR`.
pub fn ansi_logs(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::ansi_logs;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(ansi_logs(true, None));
        assert!(ansi_logs(true, Some(OsStr::new(""))));
        assert!(!ansi_logs(true, Some(OsStr::new("1"))));
        assert!(!ansi_logs(false, None));
        assert!(!ansi_logs(false, Some(OsStr::new("1"))));
    }
}
