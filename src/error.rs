//! Exit codes and the top-level error type every command returns.
//!
//! Library modules define their own `thiserror` enums; commands wrap them with `anyhow` context and
//! classify the failure into one of the documented exit codes (see `docs/cli.md`). Nothing here
//! prints: `crate::run` renders a [`CommandError`] through the output layer.

use std::fmt;
use std::process::ExitCode;

/// The documented process exit codes. The numbers are a public contract used by CI pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// 0: everything asked for was done and verified.
    Success,
    /// 1: a verification said no (smoke failed, canary aborted, rollout failed and was rolled back).
    VerificationFailed,
    /// 2: usage or configuration error, or an operation refused before it changed anything.
    Usage,
    /// 3: an environment dependency (cluster, Prometheus, database, registry) is unreachable.
    Unreachable,
    /// 4: the automatic rollback itself failed; a human must act now.
    RollbackFailed,
}

impl ExitStatus {
    /// The numeric process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::VerificationFailed => 1,
            Self::Usage => 2,
            Self::Unreachable => 3,
            Self::RollbackFailed => 4,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}

/// A failed command: the error chain, the exit code it maps to, and hints telling the operator
/// what to do next.
pub struct CommandError {
    status: ExitStatus,
    error: anyhow::Error,
    hints: Vec<String>,
    title: Option<String>,
}

impl CommandError {
    /// Wraps `error` with an explicit exit status.
    pub fn new(status: ExitStatus, error: impl Into<anyhow::Error>) -> Self {
        Self {
            status,
            error: error.into(),
            hints: Vec::new(),
            title: None,
        }
    }

    /// A usage or configuration error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self::new(ExitStatus::Usage, error)
    }

    /// An environment dependency is unreachable (exit 3).
    pub fn unreachable(error: impl Into<anyhow::Error>) -> Self {
        Self::new(ExitStatus::Unreachable, error)
    }

    /// A verification said no (exit 1).
    pub fn verification(error: impl Into<anyhow::Error>) -> Self {
        Self::new(ExitStatus::VerificationFailed, error)
    }

    /// Appends a `hint:` line shown after the error chain.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// Names the failure for CI: the title of its GitHub Actions annotation and job summary
    /// section (`canary aborted: webhook`).
    #[must_use]
    pub fn titled(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// The CI title given by [`Self::titled`], if any.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    pub fn status(&self) -> ExitStatus {
        self.status
    }

    pub fn error(&self) -> &anyhow::Error {
        &self.error
    }

    pub fn hints(&self) -> &[String] {
        &self.hints
    }

    /// True when the failure is only a closed stdout (`psctl history | head`), which is not an error.
    pub fn is_broken_pipe(&self) -> bool {
        self.error.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        })
    }
}

impl fmt::Debug for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandError")
            .field("status", &self.status)
            .field("error", &format_args!("{:#}", self.error))
            .field("hints", &self.hints)
            .finish()
    }
}

/// Errors that carry their own classification. Library error enums implement this so that a
/// plain `?` in a command picks the right exit code and hints.
pub trait Classify {
    fn exit_status(&self) -> ExitStatus;
    fn hints(&self) -> Vec<String> {
        Vec::new()
    }
}

impl<E> From<E> for CommandError
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        let status = error.exit_status();
        let hints = Classify::hints(&error);
        Self {
            status,
            error: error.into(),
            hints,
            title: None,
        }
    }
}

/// Attach an exit status to any `Result` whose error converts to `anyhow::Error`.
pub trait ResultExt<T> {
    /// Classify the error with `status`, adding `context` as the outermost message.
    fn or_exit(self, status: ExitStatus, context: impl Into<String>) -> Result<T, CommandError>;
}

impl<T, E> ResultExt<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn or_exit(self, status: ExitStatus, context: impl Into<String>) -> Result<T, CommandError> {
        self.map_err(|error| CommandError::new(status, error.into().context(context.into())))
    }
}

/// Converts an unclassified `anyhow::Error`: exit 2, the code for "not a verification verdict".
impl From<anyhow::Error> for CommandError {
    fn from(error: anyhow::Error) -> Self {
        Self::usage(error)
    }
}

/// What every command returns.
pub type CommandResult = Result<ExitStatus, CommandError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_the_documented_contract() {
        let codes: Vec<u8> = [
            ExitStatus::Success,
            ExitStatus::VerificationFailed,
            ExitStatus::Usage,
            ExitStatus::Unreachable,
            ExitStatus::RollbackFailed,
        ]
        .into_iter()
        .map(ExitStatus::code)
        .collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn broken_pipe_anywhere_in_the_chain_is_recognised() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed");
        let error = CommandError::usage(anyhow::Error::new(io).context("writing the table"));
        assert!(error.is_broken_pipe());
        assert!(!CommandError::usage(anyhow::anyhow!("other")).is_broken_pipe());
    }

    #[test]
    fn or_exit_keeps_the_cause_and_sets_the_status() {
        let result: Result<(), std::io::Error> = Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        let error = result
            .or_exit(ExitStatus::Unreachable, "connecting to the registry")
            .unwrap_err();
        assert_eq!(error.status(), ExitStatus::Unreachable);
        assert_eq!(
            format!("{:#}", error.error()),
            "connecting to the registry: refused"
        );
    }
}
