//! A playbook run: its record in the cluster (`psctl-run-<playbook>`: the rollback baseline,
//! each component's deployed revision when the run began, and every step's result), the report
//! printed at the end, and the loop that executes the steps with `on_failure` and the rollback
//! to the baseline.
//!
//! The loop is written over [`RunBackend`]: how a step runs (in `psctl run`, through the same
//! dispatch as the command line), how a component is rolled back, where the record is saved
//! and whether the Lease is still held are the backend's; the order, the records and the
//! stop / continue / roll-back decisions are tested here with a fake.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{OnFailure, Plan, PlannedStep};
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::helm::revision;
use crate::helm::storage::{Revision, read_revisions};
use crate::lock::Lost;
use crate::output::{CheckState, Output, Render, Style, table};
use crate::settings::Environment;
use crate::state::ConfigMapStore;

/// Prints the plan as a numbered list of command lines.
impl Render for Plan {
    fn render_table(&self, _style: &Style) -> String {
        let mut text = format!(
            "Playbook `{}` ({}) against `{}`: {} steps\n",
            self.playbook,
            self.file,
            self.environment,
            self.steps.len()
        );
        if !self.description.is_empty() {
            text.push_str(&format!("{}\n", self.description));
        }
        if !self.vars.is_empty() {
            let vars: Vec<String> = self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
            text.push_str(&format!("Variables: {}\n", vars.join(" ")));
        }
        let rows = self.steps.iter().map(|step| {
            [
                format!("{}/{}", step.number, self.steps.len()),
                step.name.clone(),
                step.display_command(&self.environment),
                step.on_failure.to_string(),
            ]
        });
        text.push_str(&table::render(
            &["STEP", "NAME", "RUNS", "ON FAILURE"],
            rows,
        ));
        text
    }
}

/// The run's record, kept in the cluster between invocations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub playbook: String,
    pub file: String,
    pub started_at: String,
    pub started_by: String,
    /// What each component ran when the run began: the rollback target.
    pub baseline: BTreeMap<String, Option<Baseline>>,
    pub steps: Vec<StepRecord>,
    /// running, succeeded, failed or rolled-back.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    pub revision: u32,
    pub chart: String,
    pub image_tag: String,
}

/// One executed step, as the report and the state record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub number: usize,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub command: String,
    /// passed, failed, skipped (before `--from`), not-run.
    pub result: String,
    pub exit_code: u8,
    pub duration_s: f64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The step command's own JSON output (with `-o json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// What `psctl run` prints at the end.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub playbook: String,
    pub environment: String,
    pub result: String,
    pub steps: Vec<StepRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollbacks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

impl Render for RunReport {
    fn render_table(&self, _style: &Style) -> String {
        let rows = self.steps.iter().map(|s| {
            [
                s.number.to_string(),
                s.name.clone(),
                s.result.clone(),
                if s.result == "passed" || s.result == "failed" {
                    format!("{:.1}s", s.duration_s)
                } else {
                    String::new()
                },
                s.error.clone(),
            ]
        });
        let mut text = table::render(&["STEP", "NAME", "RESULT", "TIME", "DETAIL"], rows);
        let count = |r: &str| self.steps.iter().filter(|s| s.result == r).count();
        text.push_str(&format!(
            "Playbook {}: {}  (passed {}, failed {}, skipped {}, not run {})\n",
            self.playbook,
            self.result,
            count("passed"),
            count("failed"),
            count("skipped"),
            count("not-run")
        ));
        for rollback in &self.rollbacks {
            text.push_str(&format!("Rolled back: {rollback}\n"));
        }
        if let Some(resume) = &self.resume {
            text.push_str(&format!("Resume with: {resume}\n"));
        }
        text
    }
}

/// The first step that could bring a stopped component back (deploy, rollback, canary) before
/// any step turns the kill switch off. Pure.
pub fn reviving_step(steps: &[PlannedStep]) -> Option<&PlannedStep> {
    for step in steps {
        let mut argv = step.command.iter().map(String::as_str);
        match (argv.next(), argv.next()) {
            (Some("kill-switch"), Some("off")) => return None,
            (Some("deploy" | "rollback" | "canary"), _) => return Some(step),
            _ => {}
        }
    }
    None
}

/// The record this invocation starts from: a run resumed with `--from` after an unfinished run
/// of the same playbook keeps that run's baseline, starter and earlier step results; otherwise
/// the baseline is read now.
pub async fn prepare_state(
    store: &StateStore,
    client: &kube::Client,
    environment: &Environment,
    plan: &Plan,
    start: usize,
    output: &Output,
) -> Result<RunState, CommandError> {
    let previous = store.load_if_readable().await?;
    let reuse = start > 0
        && previous
            .as_ref()
            .is_some_and(|p| p.playbook == plan.playbook && p.status != "succeeded");
    let baseline = match (&previous, reuse) {
        (Some(previous), true) => {
            output.info(format!(
                "resuming the run started {} by {}: rollbacks return to its baseline",
                previous.started_at, previous.started_by
            ));
            previous.baseline.clone()
        }
        _ => {
            if start > 0 {
                output.warn(
                    "no interrupted run of this playbook is recorded: the rollback baseline is the current state",
                );
            }
            read_baseline(client, environment).await?
        }
    };
    let mut steps: Vec<StepRecord> = plan
        .steps
        .iter()
        .map(|s| StepRecord {
            number: s.number,
            name: s.name.clone(),
            kind: s.kind.to_owned(),
            command: s.display_command(&plan.environment),
            result: if s.number <= start {
                "skipped".to_owned()
            } else {
                "not-run".to_owned()
            },
            exit_code: 0,
            duration_s: 0.0,
            error: String::new(),
            data: None,
        })
        .collect();
    if let (Some(previous), true) = (&previous, reuse) {
        // Keep what the earlier invocation did for the steps before --from.
        for (record, old) in steps.iter_mut().zip(&previous.steps).take(start) {
            if old.name == record.name && old.result != "not-run" {
                *record = old.clone();
            }
        }
    }
    // A resumed run keeps who started it and when; a new one records this process.
    let (started_at, started_by) = match previous.filter(|_| reuse) {
        Some(previous) => (previous.started_at, previous.started_by),
        None => (
            k8s_openapi::jiff::Timestamp::now().to_string(),
            crate::lock::holder_identity("run"),
        ),
    };
    Ok(RunState {
        playbook: plan.playbook.clone(),
        file: plan.file.clone(),
        started_at,
        started_by,
        baseline,
        steps,
        status: "running".to_owned(),
    })
}

/// Each component's deployed revision now.
pub async fn read_baseline(
    client: &kube::Client,
    environment: &Environment,
) -> Result<BTreeMap<String, Option<Baseline>>, CommandError> {
    let history = read_revisions(client, &environment.namespace, &environment.releases()).await?;
    Ok(baseline_of(environment, &history))
}

/// Each component's deployed revision in `history`. Pure.
pub fn baseline_of(
    environment: &Environment,
    history: &[Revision],
) -> BTreeMap<String, Option<Baseline>> {
    environment
        .components
        .iter()
        .map(|component| {
            let own = revision::of_release(history, &component.release);
            let baseline = revision::deployed(&own).map(|r| Baseline {
                revision: r.revision,
                chart: r.chart.clone(),
                image_tag: r.image_tag.clone(),
            });
            (component.name.clone(), baseline)
        })
        .collect()
}

/// How the loop ended.
pub enum Finish {
    Completed,
    CompletedWithFailures,
    Stopped {
        step: usize,
        error: CommandError,
    },
    RolledBack {
        step: usize,
        error: CommandError,
        rollbacks: Vec<String>,
        rollback_failed: bool,
    },
}

/// What a run ends with: its exit status, its final record status, the components rolled
/// back, and, on failure, the resume command and the error. Pure.
pub struct Conclusion {
    pub status: ExitStatus,
    pub state: &'static str,
    pub rollbacks: Vec<String>,
    pub failure: Option<(String, CommandError)>,
}

/// Maps how the loop ended to the run's result. Pure.
pub fn conclude(finish: Finish, plan: &Plan, environment: &str) -> Conclusion {
    let (status, rollbacks, failure) = match finish {
        Finish::Completed => (ExitStatus::Success, Vec::new(), None),
        Finish::CompletedWithFailures => (ExitStatus::VerificationFailed, Vec::new(), None),
        Finish::Stopped { step, error } => {
            let resume = format!(
                "psctl run {} --env {environment} --from {step} (after fixing step {step})",
                plan.file
            );
            (error.status(), Vec::new(), Some((resume, error)))
        }
        Finish::RolledBack {
            step,
            error,
            rollbacks,
            rollback_failed,
        } => {
            let resume = format!("psctl run {} --env {environment} --from {step}", plan.file);
            let status = if rollback_failed {
                ExitStatus::RollbackFailed
            } else {
                ExitStatus::VerificationFailed
            };
            (status, rollbacks, Some((resume, error)))
        }
    };
    let state = match (&failure, rollbacks.is_empty(), status) {
        (None, _, ExitStatus::Success) => "succeeded",
        (None, _, _) => "completed-with-failures",
        (Some(_), false, _) => "rolled-back",
        (Some(_), true, _) => "failed",
    };
    Conclusion {
        status,
        state,
        rollbacks,
        failure,
    }
}

/// The command's result once the report is printed. Pure.
pub fn result(conclusion: Conclusion) -> CommandResult {
    let Conclusion {
        status, failure, ..
    } = conclusion;
    match failure {
        Some((_, error)) if status == ExitStatus::RollbackFailed => Err(CommandError::new(
            ExitStatus::RollbackFailed,
            anyhow::anyhow!("{:#}; and the rollback to the run's baseline failed", error.error()),
        )
        .hint("check `psctl status` and `psctl history`, then `psctl rollback <component> --to-rev N`")),
        Some((_, error)) => Err(CommandError::new(status, anyhow::anyhow!("{:#}", error.error()))),
        None => Ok(status),
    }
}

/// The edges of a run.
pub trait RunBackend {
    /// Whether this process still holds the deploy Lease: checked before every step and before
    /// rolling back (whoever holds it now owns the state).
    fn fence(&self) -> Result<(), Lost>;
    /// Runs one step; with `-o json`/`yaml`, also returns what it printed as data.
    fn run_step(
        &self,
        step: &PlannedStep,
    ) -> impl Future<Output = (CommandResult, Option<serde_json::Value>)>;
    /// Saves the record (a failure is reported, never fatal).
    fn save(&self, state: &RunState) -> impl Future<Output = Result<(), String>>;
    /// Each component's deployed release now, for the rollback.
    fn current(&self) -> impl Future<Output = Result<BTreeMap<String, Option<Baseline>>, String>>;
    /// Rolls `component` back to `revision`.
    fn rollback(&self, component: &str, revision: u32) -> impl Future<Output = CommandResult>;
}

/// Executes the steps from index `start`, recording each in `state` and saving it after every
/// step.
pub async fn execute(
    backend: &impl RunBackend,
    plan: &Plan,
    environment: &Environment,
    state: &mut RunState,
    start: usize,
    output: &Output,
) -> Finish {
    let total = plan.steps.len();
    let mut continued_failures = false;
    for step in &plan.steps[start..] {
        if let Err(lost) = backend.fence() {
            return Finish::Stopped {
                step: step.number,
                error: crate::lock::LockError::Lost(lost).into(),
            };
        }
        output.info(format!(
            "[{}/{total}] {}: {}",
            step.number,
            step.name,
            step.display_command(&environment.name)
        ));
        let started = Instant::now();
        let (result, data) = backend.run_step(step).await;
        let record = &mut state.steps[step.number - 1];
        record.duration_s = started.elapsed().as_secs_f64();
        record.data = data;
        let failure = match result {
            Ok(ExitStatus::Success) => None,
            Ok(status) => Some(CommandError::new(
                status,
                anyhow::anyhow!(
                    "`{}` exited with {}",
                    step.display_command(&environment.name),
                    status.code()
                ),
            )),
            Err(error) => Some(error),
        };
        match &failure {
            None => {
                record.result = "passed".to_owned();
                record.exit_code = 0;
                record.error.clear();
            }
            Some(error) => {
                record.result = "failed".to_owned();
                record.exit_code = error.status().code();
                record.error = format!("{:#}", error.error());
            }
        }
        if let Err(error) = backend.save(state).await {
            output.warn(format!("the run's record could not be saved: {error}"));
        }
        let Some(error) = failure else {
            output.check(
                CheckState::Ok,
                &format!("step {}/{total} {}", step.number, step.name),
                &format!("{:.1}s", state.steps[step.number - 1].duration_s),
            );
            continue;
        };
        output.check(
            CheckState::Fail,
            &format!("step {}/{total} {}", step.number, step.name),
            &format!("{:#} (on_failure: {})", error.error(), step.on_failure),
        );
        match step.on_failure {
            OnFailure::Continue => continued_failures = true,
            OnFailure::Stop => {
                return Finish::Stopped {
                    step: step.number,
                    error,
                };
            }
            OnFailure::Rollback if backend.fence().is_err() => {
                // Not ours to roll back any more: whoever holds the Lease owns the state.
                return Finish::Stopped {
                    step: step.number,
                    error,
                };
            }
            OnFailure::Rollback => {
                let (rollbacks, rollback_failed) =
                    rollback_to_baseline(backend, environment, state, output).await;
                return Finish::RolledBack {
                    step: step.number,
                    error,
                    rollbacks,
                    rollback_failed,
                };
            }
        }
    }
    if continued_failures {
        Finish::CompletedWithFailures
    } else {
        Finish::Completed
    }
}

/// Returns every component whose deployed release differs from the baseline to it, newest
/// first (the reverse of configuration, i.e. deploy, order).
async fn rollback_to_baseline(
    backend: &impl RunBackend,
    environment: &Environment,
    state: &RunState,
    output: &Output,
) -> (Vec<String>, bool) {
    let mut done = Vec::new();
    let mut failed = false;
    let now = match backend.current().await {
        Ok(now) => now,
        Err(error) => {
            output.warn(error);
            return (done, true);
        }
    };
    for component in environment.components.iter().rev() {
        let before = state.baseline.get(&component.name).cloned().flatten();
        let current = now.get(&component.name).cloned().flatten();
        match rollback_action(before.as_ref(), current.as_ref()) {
            RollbackAction::Nothing => {}
            RollbackAction::CannotUndoFirstInstall => {
                output.warn(format!(
                    "{}: installed by this run with no earlier revision to return to; \
                     stop it with `psctl kill-switch on --component {}` if needed",
                    component.name, component.name
                ));
            }
            RollbackAction::To(revision) => {
                output.info(format!(
                    "rolling {} back to revision {revision} (its state when the run began)",
                    component.name
                ));
                match backend.rollback(&component.name, revision).await {
                    Ok(ExitStatus::Success) => {
                        done.push(format!("{} to revision {revision}", component.name));
                    }
                    Ok(_) | Err(_) => {
                        failed = true;
                        output.warn(format!(
                            "the rollback of {} to revision {revision} failed",
                            component.name
                        ));
                    }
                }
            }
        }
    }
    (done, failed)
}

#[derive(Debug, PartialEq, Eq)]
pub enum RollbackAction {
    Nothing,
    CannotUndoFirstInstall,
    To(u32),
}

/// What returning a component to its baseline takes. Pure. A release whose deployed
/// revision runs the same chart and image as the baseline (say, after deploy's own automatic
/// rollback) is left alone: rolling back again would only add a revision.
pub fn rollback_action(before: Option<&Baseline>, now: Option<&Baseline>) -> RollbackAction {
    match (before, now) {
        (_, None) => RollbackAction::Nothing,
        (None, Some(_)) => RollbackAction::CannotUndoFirstInstall,
        (Some(before), Some(now)) => {
            if now.revision == before.revision
                || (now.chart == before.chart && now.image_tag == before.image_tag)
            {
                RollbackAction::Nothing
            } else {
                RollbackAction::To(before.revision)
            }
        }
    }
}

/// The run record in its ConfigMap.
pub type StateStore = ConfigMapStore<RunState>;

/// `psctl-run-<playbook>`, reduced to a valid object name.
pub fn state_name(playbook: &str) -> String {
    let cleaned: String = playbook
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    let mut name = format!("psctl-run-{cleaned}");
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests;
