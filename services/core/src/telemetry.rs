//! Logging setup: `tracing` to stderr, `LOG_FORMAT=json|text` (default text), filter from
//! `RUST_LOG` (default `info`).

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
        .with_writer(std::io::stderr);
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
