//! Running PostgreSQL's client programs (`pg_dump`, `pg_restore`): connection details and the
//! password go in the child's libpq environment, never on its argv, and inherited `PG*`
//! variables are cleared so the child talks to exactly the database psctl resolved.

use std::process::Stdio;

use super::url::DatabaseUrl;

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

/// Runs `tool` with `args` against `url`; returns its stdout.
pub async fn run_tool(
    tool: Tool,
    args: &[String],
    url: &DatabaseUrl,
    stdin: Stdio,
) -> Result<String, ToolError> {
    let program = tool.program();
    let mut command = tokio::process::Command::new(&program);
    command
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            command.env_remove(name);
        }
    }
    for (name, value) in url.libpq_env() {
        command.env(name, value);
    }
    let output = command.output().await.map_err(|source| ToolError::Spawn {
        program: program.clone(),
        source,
    })?;
    if !output.status.success() {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if let Some(password) = url.password().filter(|p| !p.is_empty()) {
            stderr = stderr.replace(&password, "****");
        }
        return Err(ToolError::Failed {
            program,
            args: args.join(" "),
            status: output.status.to_string(),
            stderr: last_lines(&stderr, 8),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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
