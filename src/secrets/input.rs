//! Where `psctl secrets apply` reads its values: an env file, or named variables of psctl's own
//! environment. Every value is registered with the output redactor the moment it is read;
//! errors name the file, the line and the key, never a value.

use secrecy::{ExposeSecret as _, SecretString};

use super::Entry;
use crate::error::CommandError;
use crate::output::Output;

/// Where the values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    File(std::path::PathBuf),
    Environment(Vec<String>),
}

/// Reads the input and registers every value with the redactor. Errors name the file, the line
/// and the key, never a value.
pub fn read_input(
    input: &Input,
    lookup: impl Fn(&str) -> Option<String>,
    output: &Output,
) -> Result<Vec<Entry>, CommandError> {
    let entries = match input {
        Input::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                CommandError::usage(
                    anyhow::Error::new(error)
                        .context(format!("cannot read env file `{}`", path.display())),
                )
            })?;
            super::parse_env_file(&text).map_err(|error| {
                CommandError::usage(anyhow::anyhow!("{}: {error}", path.display()))
                    .hint("each line is `KEY=VALUE`; quote values with spaces or `#`; see docs/secrets.md")
            })?
        }
        Input::Environment(keys) => {
            let mut entries = Vec::new();
            let mut unset = Vec::new();
            for key in keys {
                if !super::valid_key(key) {
                    return Err(CommandError::usage(anyhow::anyhow!(
                        "--from-env `{key}` is not a valid Secret key"
                    ))
                    .hint("give key NAMES after --from-env; the values are read from psctl's environment"));
                }
                match lookup(key) {
                    Some(value) => entries.push(Entry {
                        key: key.clone(),
                        value: SecretString::from(value),
                        line: 0,
                    }),
                    None => unset.push(key.clone()),
                }
            }
            if !unset.is_empty() {
                return Err(CommandError::usage(anyhow::anyhow!(
                    "--from-env: {} not set in psctl's environment",
                    unset.join(", ")
                ))
                .hint(
                    "export them first (e.g. from your password manager), without echoing them",
                ));
            }
            entries
        }
    };
    for entry in &entries {
        output.redactor().register(entry.value.expose_secret());
    }
    if entries.is_empty() {
        return Err(CommandError::usage(anyhow::anyhow!(
            "the input has no `KEY=VALUE` entries; nothing to apply"
        )));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Format, Style};

    #[test]
    fn from_env_reads_named_keys_and_registers_their_values() {
        let (output, _, _) = Output::buffered(Format::Table, Style::PLAIN);
        let input = Input::Environment(vec!["A_KEY".into(), "B_KEY".into()]);
        let entries = read_input(
            &input,
            |k| Some(format!("value-of-{k}-0123456789")),
            &output,
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            output.redactor().scrub("x value-of-A_KEY-0123456789 y"),
            "x [REDACTED] y"
        );
        let error = read_input(&input, |_| None, &output).unwrap_err();
        assert!(format!("{:#}", error.error()).contains("A_KEY, B_KEY not set"));
        let error =
            read_input(&Input::Environment(vec!["a=b".into()]), |_| None, &output).unwrap_err();
        assert!(format!("{:#}", error.error()).contains("not a valid Secret key"));
    }

    #[test]
    fn an_env_file_error_names_the_file_and_line_only() {
        let (output, _, _) = Output::buffered(Format::Table, Style::PLAIN);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.env");
        std::fs::write(&path, "OK=1\nthis-is-a-leaked-value\n").unwrap();
        let error = read_input(&Input::File(path.clone()), |_| None, &output).unwrap_err();
        let message = format!("{:#}", error.error());
        assert!(
            message.ends_with("runtime.env: line 2: expected `KEY=VALUE`; the line has no `=`"),
            "{message}"
        );
        assert!(!message.contains("leaked"));
    }
}
