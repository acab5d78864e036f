//! Child processes: the one runner for every program psctl drives (Helm, Docker and git for
//! `build`, `pg_dump`/`pg_restore`), and the one shell quoter used wherever a command line is
//! shown (plans, `--dry-run`, errors, playbook steps).
//!
//! A child never reads psctl's stdin unless given one, is killed if psctl drops it or its
//! timeout passes, has its command line logged (at debug level, through the redactor) and
//! comes back as its stdout or a typed failure with the tail of what it printed.
//!
//! May import: `output::redact`. Nothing else of psctl.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::output::redact::Redactor;

/// Characters that never need quoting in a POSIX shell word.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._:/@+-,=".contains(c)
}

/// `word` as one POSIX shell word: unchanged when it is plain, otherwise single-quoted (with
/// `'` written as `'\''`). Pure.
pub fn quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(is_plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `program arg…` with every word quoted. Pure.
pub fn command_line<'a>(program: &str, args: impl IntoIterator<Item = &'a str>) -> String {
    std::iter::once(quote(program))
        .chain(args.into_iter().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One program to run.
#[derive(Debug, Clone)]
pub struct Child {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(OsString, OsString)>,
    env_remove_prefix: Option<String>,
    stdin: Option<PathBuf>,
    timeout: Option<Duration>,
    redactor: Redactor,
}

/// What a child printed when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run `{}`", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({}): {}", describe_exit(*code), tail(stderr, stdout, 15))]
    Exit {
        /// The command line, quoted (and redacted).
        command: String,
        /// `None` when a signal ended it.
        code: Option<i32>,
        stdout: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {}s and was killed", after.as_secs())]
    TimedOut { command: String, after: Duration },
}

/// `exit N` or `a signal`.
pub fn describe_exit(code: Option<i32>) -> String {
    code.map_or_else(|| "a signal".to_owned(), |c| format!("exit {c}"))
}

/// The last `count` non-empty lines of stderr then stdout, indented for an error message.
pub fn tail(stderr: &str, stdout: &str, count: usize) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(count)..].join("\n  ")
}

impl Child {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove_prefix: None,
            stdin: None,
            timeout: None,
            redactor: Redactor::default(),
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets a variable in the child's environment (never on its argv: that is how secrets such
    /// as a database password reach a child).
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Removes every inherited variable whose name starts with `prefix` (e.g. `PG`), so the
    /// child sees only what psctl gives it.
    pub fn env_remove_prefix(mut self, prefix: &str) -> Self {
        self.env_remove_prefix = Some(prefix.to_owned());
        self
    }

    /// Feeds the file at `path` to the child's stdin (default: no stdin).
    pub fn stdin_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.stdin = Some(path.into());
        self
    }

    /// Kills the child when it runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Scrubs the logged command line and the failure's output through `redactor`.
    pub fn redactor(mut self, redactor: &Redactor) -> Self {
        self.redactor = redactor.clone();
        self
    }

    /// The command line as shown to the operator, quoted and redacted.
    pub fn display(&self) -> String {
        let program = self.program.to_string_lossy();
        let line = command_line(&program, self.args.iter().map(String::as_str));
        self.redactor.scrub(&line).into_owned()
    }

    /// Runs the child to completion and returns what it printed.
    pub async fn run(&self) -> Result<Ran, ProcessError> {
        tracing::debug!(command = %self.display(), "running");
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command.stdin(match &self.stdin {
            Some(path) => {
                Stdio::from(
                    std::fs::File::open(path).map_err(|source| ProcessError::Spawn {
                        program: self.program.clone(),
                        source,
                    })?,
                )
            }
            None => Stdio::null(),
        });
        if let Some(prefix) = &self.env_remove_prefix {
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with(prefix.as_str()) {
                    command.env_remove(name);
                }
            }
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let running = command.output();
        let output = match self.timeout {
            Some(after) => match tokio::time::timeout(after, running).await {
                Ok(result) => result,
                // Dropping the future drops the child, which `kill_on_drop` kills.
                Err(_) => {
                    return Err(ProcessError::TimedOut {
                        command: self.display(),
                        after,
                    });
                }
            },
            None => running.await,
        }
        .map_err(|source| ProcessError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        let text = |bytes: &[u8]| {
            self.redactor
                .scrub(&String::from_utf8_lossy(bytes))
                .into_owned()
        };
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        if output.status.success() {
            Ok(Ran { stdout, stderr })
        } else {
            Err(ProcessError::Exit {
                command: self.display(),
                code: output.status.code(),
                stdout,
                stderr,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_and_everything_else_is_single_quoted() {
        for plain in [
            "helm",
            "--values",
            "127.0.0.1:5000/image:1.4.2",
            "a=b,c",
            "user@host",
            "v1+build",
        ] {
            assert_eq!(quote(plain), plain);
        }
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("<values-file>"), "'<values-file>'");
        assert_eq!(
            command_line("docker", ["build", "a b", "it's"]),
            r"docker build 'a b' 'it'\''s'"
        );
    }

    #[tokio::test]
    async fn stdout_comes_back_and_a_failure_carries_its_exit_code_and_output() {
        let ran = Child::new("sh")
            .args(["-c", "echo out; echo err >&2"])
            .run()
            .await
            .unwrap();
        assert_eq!(
            (ran.stdout.as_str(), ran.stderr.as_str()),
            ("out\n", "err\n")
        );

        let error = Child::new("sh")
            .args(["-c", "echo partial; echo broken >&2; exit 3"])
            .run()
            .await
            .unwrap_err();
        let ProcessError::Exit { code, command, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(*code, Some(3));
        assert_eq!(command, "sh -c 'echo partial; echo broken >&2; exit 3'");
        assert!(
            error.to_string().ends_with("(exit 3): broken\n  partial"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let error = Child::new("/nonexistent/psctl-no-such-program")
            .run()
            .await
            .unwrap_err();
        assert!(matches!(error, ProcessError::Spawn { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn a_child_past_its_timeout_is_killed() {
        let started = std::time::Instant::now();
        let error = Child::new("sleep")
            .args(["30"])
            .timeout(Duration::from_millis(200))
            .run()
            .await
            .unwrap_err();
        assert!(matches!(error, ProcessError::TimedOut { .. }), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn the_environment_is_given_and_inherited_prefixes_removed() {
        let ran = Child::new("sh")
            .args(["-c", "echo \"${PATH:+path} ${PSCTLTEST_GIVEN:-unset}\""])
            .env("PSCTLTEST_GIVEN", "given")
            .run()
            .await
            .unwrap();
        assert_eq!(ran.stdout, "path given\n");
        let ran = Child::new("/bin/sh")
            .args(["-c", "echo \"${HOME:-removed}\""])
            .env_remove_prefix("HOM")
            .run()
            .await
            .unwrap();
        assert_eq!(ran.stdout, "removed\n");
    }

    #[tokio::test]
    async fn registered_secrets_never_reach_the_command_line_or_the_error() {
        let redactor = Redactor::default();
        redactor.register("hunter22-secret");
        let child = Child::new("sh")
            .args(["-c", "echo hunter22-secret >&2; exit 1"])
            .redactor(&redactor);
        assert!(!child.display().contains("hunter22"));
        let error = child.run().await.unwrap_err().to_string();
        assert!(!error.contains("hunter22"), "{error}");
        assert!(error.contains("[REDACTED]"), "{error}");
    }
}
