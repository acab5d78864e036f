//! Running PostgreSQL's client programs (`pg_dump`, `pg_restore`): connection details and the
//! password go in the child's libpq environment, never on its argv, and inherited `PG*`
//! variables are cleared so the child talks to exactly the database psctl resolved.

use super::url::DatabaseUrl;
use crate::output::redact::Redactor;
use crate::process::{Child, ProcessError, describe_exit};

/// A PostgreSQL client program psctl drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    PgDump,
    PgRestore,
}

impl Tool {
    /// The program name; `PSCTL_PG_BINDIR` (e.g. `/usr/lib/postgresql/16/bin`) selects a version
    /// matching the server when several are installed.
    pub fn program(self) -> String {
        let name = match self {
            Self::PgDump => "pg_dump",
            Self::PgRestore => "pg_restore",
        };
        match std::env::var("PSCTL_PG_BINDIR") {
            Ok(dir) if !dir.is_empty() => format!("{}/{name}", dir.trim_end_matches('/')),
            _ => name.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(
        "cannot run `{program}`; install the PostgreSQL client tools (Debian: postgresql-client)"
    )]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program} {args}` failed ({status}): {stderr}")]
    Failed {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },
}

/// Runs `tool` with `args` against `url`; returns its stdout. The password is scrubbed from
/// whatever the tool prints back.
pub async fn run_tool(tool: Tool, args: &[String], url: &DatabaseUrl) -> Result<String, ToolError> {
    let program = tool.program();
    let redactor = Redactor::default();
    if let Some(password) = url.password().filter(|p| !p.is_empty()) {
        redactor.register(&password);
    }
    let mut child = Child::new(&program)
        .args(args.iter().cloned())
        .env_remove_prefix("PG")
        .redactor(&redactor);
    for (name, value) in url.libpq_env() {
        child = child.env(name, value);
    }
    match child.run().await {
        Ok(ran) => Ok(ran.stdout),
        Err(ProcessError::Exit { code, stderr, .. }) => Err(ToolError::Failed {
            program,
            args: args.join(" "),
            status: describe_exit(code),
            stderr: last_lines(stderr.trim(), 8),
        }),
        Err(ProcessError::Spawn { source, .. }) => Err(ToolError::Spawn { program, source }),
        Err(error @ ProcessError::TimedOut { .. }) => Err(ToolError::Spawn {
            program,
            source: std::io::Error::other(error.to_string()),
        }),
    }
}

/// The tool's `--version` line, if it runs.
pub async fn version(tool: Tool) -> Option<String> {
    let ran = Child::new(tool.program())
        .args(["--version"])
        .timeout(std::time::Duration::from_secs(10))
        .run()
        .await
        .ok()?;
    Some(ran.stdout.trim().to_owned())
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_lines_of_a_long_error_are_kept() {
        let text = (1..=20)
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(last_lines(&text, 3), "18\n19\n20");
        assert_eq!(last_lines("one", 3), "one");
    }
}
