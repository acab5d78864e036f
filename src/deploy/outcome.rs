//! What a deploy did, typed: each component's state, why the run stopped, the order in which
//! a failed run is undone, and the decision between exit 1 (a verification said no and the
//! change was undone or left in place on request) and exit 4 (the automatic rollback failed).
//! Pure: the executor (`deploy::execute`) records, this module decides.

use std::fmt;

use serde::Serialize;

use crate::error::{Classify as _, CommandError, ExitStatus};
use crate::lock::{LockError, Lost};
use crate::output::{Render, Style, table};
use crate::rollout::report::outcome_summary;
use crate::rollout::track::Outcome;

/// Where one component of the plan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    /// The run stopped before reaching it.
    NotStarted,
    /// Its upgrade, rollout or verification failed (and nothing undid it).
    Failed,
    Deployed,
    /// Returned to the revision deployed before the run.
    RolledBack,
    /// A failed first install, removed.
    Uninstalled,
    /// The rollback or uninstall itself failed: a human must act.
    RollbackFailed,
}

impl ComponentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "not_started",
            Self::Failed => "failed",
            Self::Deployed => "deployed",
            Self::RolledBack => "rolled_back",
            Self::Uninstalled => "uninstalled",
            Self::RollbackFailed => "rollback_failed",
        }
    }

    /// The run changed this component (Helm was called for it).
    pub fn changed(self) -> bool {
        self != Self::NotStarted
    }
}

impl fmt::Display for ComponentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `-o json` result of a deploy.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub environment: String,
    pub components: Vec<ComponentResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentResult {
    pub component: String,
    pub release: String,
    /// Revision deployed before this run (the rollback target), if the release existed.
    pub previous_revision: Option<u32>,
    /// `deployed`, `failed`, `rolled_back`, `uninstalled`, `rollback_failed`, `not_started`.
    pub result: ComponentState,
    pub rollout: Option<Outcome>,
}

impl Render for DeployReport {
    fn render_table(&self, _style: &Style) -> String {
        table::render(
            &["COMPONENT", "RELEASE", "PREVIOUS", "RESULT", "DETAIL"],
            self.components.iter().map(|c| {
                [
                    c.component.clone(),
                    c.release.clone(),
                    c.previous_revision
                        .map_or_else(|| "-".to_owned(), |r| r.to_string()),
                    c.result.to_string(),
                    c.rollout.as_ref().map(outcome_summary).unwrap_or_default(),
                ]
            }),
        )
    }
}

/// Why the run stopped at a component.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Upgrade { release: String, error: String },
    Tracking { deployment: String, error: String },
    Rollout { deployment: String, summary: String },
    Verification { component: String, problem: String },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upgrade { release, error } => {
                write!(f, "helm upgrade of `{release}` failed: {error}")
            }
            Self::Tracking { deployment, error } => {
                write!(f, "tracking the rollout of `{deployment}` failed: {error}")
            }
            Self::Rollout {
                deployment,
                summary,
            } => write!(f, "the rollout of `{deployment}` failed: {summary}"),
            Self::Verification { component, problem } => {
                write!(
                    f,
                    "`{component}` rolled out but failed verification: {problem}"
                )
            }
        }
    }
}

/// How a changed component is undone: back to the revision recorded before the run, or, for a
/// first install, uninstalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    To(u32),
    Uninstall,
}

impl Undo {
    pub fn of(previous_revision: Option<u32>) -> Self {
        previous_revision.map_or(Self::Uninstall, Self::To)
    }

    /// The component's state once the undo succeeded.
    pub fn done(self) -> ComponentState {
        match self {
            Self::To(_) => ComponentState::RolledBack,
            Self::Uninstall => ComponentState::Uninstalled,
        }
    }
}

/// The components to undo, newest change first (the reverse of the order they were deployed),
/// each with how. Components the run never reached are left alone. Pure.
pub fn rollback_order(results: &[ComponentResult]) -> Vec<(usize, Undo)> {
    results
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, r)| r.result.changed())
        .map(|(index, r)| (index, Undo::of(r.previous_revision)))
        .collect()
}

/// The run's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every component deployed and verified.
    Deployed,
    /// A component failed and `--no-rollback` left everything in place.
    LeftInPlace { failure: Failure },
    /// A component failed and every change was undone.
    Undone { failure: Failure },
    /// A component failed and undoing it failed too (`problems`: one per component).
    RollbackFailed {
        failure: Failure,
        problems: Vec<String>,
    },
    /// The deploy Lease was lost (taken over, or not renewed): whoever holds it now owns the
    /// releases, so nothing more is changed here and nothing is rolled back.
    Fenced { lost: Lost },
}

impl Verdict {
    /// Decides from the failure (if any), whether rollback was on, and what the undo left
    /// behind. Pure.
    pub fn decide(failure: Option<Failure>, rollback: bool, problems: Vec<String>) -> Self {
        match failure {
            None => Self::Deployed,
            Some(failure) if !rollback => Self::LeftInPlace { failure },
            Some(failure) if problems.is_empty() => Self::Undone { failure },
            Some(failure) => Self::RollbackFailed { failure, problems },
        }
    }

    /// 0, 1 (a verification said no) or 4 (the automatic rollback failed).
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Deployed => ExitStatus::Success,
            Self::LeftInPlace { .. } | Self::Undone { .. } => ExitStatus::VerificationFailed,
            Self::RollbackFailed { .. } => ExitStatus::RollbackFailed,
            Self::Fenced { lost } => LockError::Lost(lost.clone()).exit_status(),
        }
    }

    /// The audit outcome of a component once the run has ended this way (components undone
    /// are recorded with their own state as they are undone).
    pub fn audit_outcome(&self) -> &'static str {
        match self {
            Self::Deployed => "succeeded",
            Self::Fenced { .. } => "stopped",
            _ => "failed",
        }
    }

    /// The error the command ends with, and its hints; `None` on success.
    pub fn error(&self, report: &DeployReport) -> Option<CommandError> {
        match self {
            Self::Deployed => None,
            Self::Fenced { lost } => Some(
                CommandError::from(LockError::Lost(lost.clone())).hint(
                    "the release was left where it stood; `psctl status` and `psctl history <component>` show it",
                ),
            ),
            Self::LeftInPlace { failure } => Some(
                CommandError::verification(anyhow::anyhow!(
                    "{failure}; left in place (--no-rollback)"
                ))
                .hint("roll back with `psctl rollback <component>` once you have looked"),
            ),
            Self::Undone { failure } => Some(
                CommandError::verification(anyhow::anyhow!(
                    "{failure}; undone: previous revisions restored, failed first installs uninstalled"
                ))
                .hint("`psctl history <component>` shows the failed revision; fix the image or values and deploy again"),
            ),
            Self::RollbackFailed { failure, problems } => {
                let mut error = CommandError::new(
                    ExitStatus::RollbackFailed,
                    anyhow::anyhow!(
                        "{failure}; THE AUTOMATIC ROLLBACK FAILED: {}",
                        problems.join("; ")
                    ),
                )
                .hint("a human must act now: check `psctl status` and `psctl history <component>`")
                .hint("retry with `psctl rollback <component> --to-rev <N>`, or stop traffic with `psctl kill-switch on`");
                for result in report
                    .components
                    .iter()
                    .filter(|r| r.result == ComponentState::RollbackFailed)
                {
                    if let Some(revision) = result.previous_revision {
                        error = error.hint(format!(
                            "`psctl rollback {} --to-rev {revision}` restores what ran before",
                            result.component
                        ));
                    }
                }
                Some(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(component: &str, previous: Option<u32>, state: ComponentState) -> ComponentResult {
        ComponentResult {
            component: component.into(),
            release: format!("problemsolver-{component}"),
            previous_revision: previous,
            result: state,
            rollout: None,
        }
    }

    fn failure() -> Failure {
        Failure::Rollout {
            deployment: "problemsolver-webhook".into(),
            summary: "ImagePullBackOff".into(),
        }
    }

    #[test]
    fn changed_components_are_undone_newest_first_and_unreached_ones_left_alone() {
        let results = [
            result("poller", Some(3), ComponentState::Deployed),
            result("webhook", None, ComponentState::Failed),
            result("other", Some(1), ComponentState::NotStarted),
        ];
        assert_eq!(
            rollback_order(&results),
            [(1, Undo::Uninstall), (0, Undo::To(3))]
        );
        assert_eq!(Undo::To(3).done(), ComponentState::RolledBack);
        assert_eq!(Undo::Uninstall.done(), ComponentState::Uninstalled);
    }

    #[test]
    fn the_exit_code_is_one_when_undone_or_left_and_four_when_the_undo_failed() {
        let cases = [
            (None, true, vec![], ExitStatus::Success),
            (
                Some(failure()),
                false,
                vec![],
                ExitStatus::VerificationFailed,
            ),
            (
                Some(failure()),
                true,
                vec![],
                ExitStatus::VerificationFailed,
            ),
            (
                Some(failure()),
                true,
                vec!["webhook: timed out".to_owned()],
                ExitStatus::RollbackFailed,
            ),
        ];
        for (failure, rollback, problems, expected) in cases {
            let verdict = Verdict::decide(failure, rollback, problems);
            assert_eq!(verdict.exit_status(), expected, "{verdict:?}");
        }
    }

    #[test]
    fn a_failed_rollback_names_the_revision_to_restore_by_hand() {
        let report = DeployReport {
            environment: "sandbox".into(),
            components: vec![
                result("poller", Some(3), ComponentState::RollbackFailed),
                result("webhook", None, ComponentState::RollbackFailed),
            ],
        };
        let verdict = Verdict::decide(Some(failure()), true, vec!["poller: x".into()]);
        let error = verdict.error(&report).unwrap();
        assert_eq!(error.status(), ExitStatus::RollbackFailed);
        let message = format!("{:#}", error.error());
        assert!(
            message.contains("THE AUTOMATIC ROLLBACK FAILED: poller: x"),
            "{message}"
        );
        assert!(message.starts_with("the rollout of `problemsolver-webhook` failed"));
        assert!(
            error
                .hints()
                .iter()
                .any(|h| h == "`psctl rollback poller --to-rev 3` restores what ran before")
        );
        assert_eq!(
            error
                .hints()
                .iter()
                .filter(|h| h.contains("--to-rev 3"))
                .count(),
            1
        );
        assert!(Verdict::Deployed.error(&report).is_none());
    }

    #[test]
    fn states_serialise_as_the_documented_strings() {
        let json =
            serde_json::to_value(result("poller", None, ComponentState::RollbackFailed)).unwrap();
        assert_eq!(json["result"], "rollback_failed");
        for state in [
            ComponentState::NotStarted,
            ComponentState::Failed,
            ComponentState::Deployed,
            ComponentState::RolledBack,
            ComponentState::Uninstalled,
            ComponentState::RollbackFailed,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }
}
