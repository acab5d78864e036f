//! `psctl run PLAYBOOK`: executes a playbook's steps in order, each as the psctl command it
//! names, with progress `[N/M]`, an `on_failure` per step, a rollback baseline recorded in the
//! cluster, and `--from` to resume.
//!
//! Plan → (dry run: print it) → record the baseline → execute step by step → report. The
//! baseline (each component's deployed revision when the run began) and every step's result
//! live in a ConfigMap `psctl-run-<playbook>`, so a run resumed with `--from` on another
//! machine rolls back to the same revisions as the run that started the change.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser as _;
use serde::{Deserialize, Serialize};

use super::history::read_revisions;
use super::support;
use crate::cli::{Cli, RollbackArgs, RunArgs};
use crate::cluster;
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::helm::revision;
use crate::output::{CheckState, Format, Output, Render, Style, table};
use crate::playbook::{self, OnFailure, Plan, PlannedStep};
use crate::settings::{Environment, GlobalSettings};
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

pub async fn run(args: RunArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let RunArgs {
        playbook: path,
        from,
        vars,
    } = args;
    let environment = global.environment()?;
    let context = playbook::Context {
        environment: environment.name.clone(),
        overrides: vars,
        git_sha: Some(git_sha),
    };
    let playbook = playbook::load(&path, &context)?;
    let plan = playbook.plan(&environment)?;
    // Every step must be a command this psctl understands before anything runs.
    for step in &plan.steps {
        parse_step(step)?;
    }
    let start = match &from {
        Some(from) => plan
            .find(from)
            .map_err(|m| CommandError::usage(anyhow::anyhow!(m)))?,
        None => 0,
    };
    if global.dry_run {
        output.data(&plan).context("writing the plan")?;
        return Ok(ExitStatus::Success);
    }
    support::confirm(
        global,
        &format!(
            "run playbook `{}` ({} steps{}) against `{}`?",
            plan.playbook,
            plan.steps.len(),
            if start > 0 {
                format!(", from step {}", start + 1)
            } else {
                String::new()
            },
            environment.name
        ),
    )?;

    let client = cluster::connect(&environment).await?;
    // The whole run holds the deploy Lease: nobody deploys between its steps, and each step
    // (run in this process) shares the hold and its fencing.
    let audit = support::open_audit(global, &environment, output).await?;
    let held = support::take_lock(&client, &environment, "run", audit.as_ref(), output).await?;
    // While the kill switch is on, a run that would bring a component back before turning the
    // switch off itself is refused here, before any step runs. A run that turns it off first
    // (the restore playbook's second half) goes ahead.
    let held = if reviving_step(&plan.steps[start..]).is_some() {
        let every: Vec<&crate::settings::Component> = environment.components.iter().collect();
        support::require_kill_switch_off(held, &client, &environment, &every).await?
    } else {
        held
    };
    let store = StateStore::new(&client, &environment.namespace, state_name(&plan.playbook));
    let mut state = prepare_state(&store, &client, &environment, &plan, start, output).await?;
    store.save(&state).await?;

    let executor = Executor {
        plan: &plan,
        environment: &environment,
        global,
        output,
        lease: held.guard(),
    };
    let outcome = executor.execute(&mut state, start, &store).await;
    let (status, rollbacks, failure) = match outcome {
        Finish::Completed => (ExitStatus::Success, Vec::new(), None),
        Finish::CompletedWithFailures => (ExitStatus::VerificationFailed, Vec::new(), None),
        Finish::Stopped { step, error } => {
            let resume = format!(
                "psctl run {} --env {} --from {} (after fixing step {step})",
                plan.file, environment.name, step
            );
            (error.status(), Vec::new(), Some((resume, error)))
        }
        Finish::RolledBack {
            step,
            error,
            rollbacks,
            rollback_failed,
        } => {
            let resume = format!(
                "psctl run {} --env {} --from {}",
                plan.file, environment.name, step
            );
            let status = if rollback_failed {
                ExitStatus::RollbackFailed
            } else {
                ExitStatus::VerificationFailed
            };
            (status, rollbacks, Some((resume, error)))
        }
    };
    state.status = match (&failure, rollbacks.is_empty(), status) {
        (None, _, ExitStatus::Success) => "succeeded",
        (None, _, _) => "completed-with-failures",
        (Some(_), false, _) => "rolled-back",
        (Some(_), true, _) => "failed",
    }
    .to_owned();
    // A run that lost the Lease leaves the record to whoever holds it now.
    if held.check().is_ok()
        && let Err(error) = store.save(&state).await
    {
        output.warn(format!("the run's record could not be saved: {error}"));
    }
    if let Err(error) = held.release().await {
        output.warn(format!(
            "the deploy lock was not released cleanly: {error}; it expires in {}s",
            crate::lock::LEASE_SECONDS
        ));
    }
    let report = RunReport {
        playbook: plan.playbook.clone(),
        environment: environment.name.clone(),
        result: state.status.clone(),
        steps: state.steps.clone(),
        rollbacks,
        resume: failure.as_ref().map(|(resume, _)| resume.clone()),
    };
    output.data(&report).context("writing the run report")?;
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

/// The first step that could bring a stopped component back (deploy, rollback, canary) before
/// any step turns the kill switch off. Pure.
fn reviving_step(steps: &[PlannedStep]) -> Option<&PlannedStep> {
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

/// `git rev-parse --short=12 HEAD` of the working directory.
fn git_sha() -> Result<String, String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git rev-parse failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The step's command as clap parses it: the same code path as typing it.
fn parse_step(step: &PlannedStep) -> Result<Option<crate::cli::Command>, CommandError> {
    if step.command.is_empty() {
        return Ok(None);
    }
    let argv = std::iter::once("psctl".to_owned()).chain(step.command.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(cli) => Ok(Some(cli.command)),
        Err(error) => Err(CommandError::usage(anyhow::anyhow!(
            "step {} ({}): `{}` is not a valid psctl command: {}",
            step.number,
            step.name,
            step.command.join(" "),
            error.kind()
        ))),
    }
}

async fn prepare_state(
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
async fn read_baseline(
    client: &kube::Client,
    environment: &Environment,
) -> Result<BTreeMap<String, Option<Baseline>>, CommandError> {
    let releases: Vec<String> = environment
        .components
        .iter()
        .map(|c| c.release.clone())
        .collect();
    let history = read_revisions(client, &environment.namespace, &releases).await?;
    Ok(environment
        .components
        .iter()
        .map(|component| {
            let own: Vec<_> = history
                .iter()
                .filter(|r| r.release == component.release)
                .cloned()
                .collect();
            let baseline = revision::deployed(&own).map(|r| Baseline {
                revision: r.revision,
                chart: r.chart.clone(),
                image_tag: r.image_tag.clone(),
            });
            (component.name.clone(), baseline)
        })
        .collect())
}

enum Finish {
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

struct Executor<'a> {
    plan: &'a Plan,
    environment: &'a Environment,
    global: &'a GlobalSettings,
    output: &'a Output,
    /// Checked before every step: a run that lost the Lease stops there.
    lease: crate::lock::LeaseGuard,
}

impl Executor<'_> {
    async fn execute(&self, state: &mut RunState, start: usize, store: &StateStore) -> Finish {
        let total = self.plan.steps.len();
        let mut continued_failures = false;
        for step in &self.plan.steps[start..] {
            if let Err(lost) = self.lease.check() {
                return Finish::Stopped {
                    step: step.number,
                    error: crate::lock::LockError::Lost(lost).into(),
                };
            }
            self.output.info(format!(
                "[{}/{total}] {}: {}",
                step.number,
                step.name,
                step.display_command(&self.environment.name)
            ));
            let started = Instant::now();
            let (result, data) = self.run_step(step).await;
            let record = &mut state.steps[step.number - 1];
            record.duration_s = started.elapsed().as_secs_f64();
            record.data = data;
            let failure = match result {
                Ok(ExitStatus::Success) => None,
                Ok(status) => Some(CommandError::new(
                    status,
                    anyhow::anyhow!(
                        "`{}` exited with {}",
                        step.display_command(&self.environment.name),
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
            if let Err(error) = store.save(state).await {
                self.output
                    .warn(format!("the run's record could not be saved: {error}"));
            }
            let Some(error) = failure else {
                self.output.check(
                    CheckState::Ok,
                    &format!("step {}/{total} {}", step.number, step.name),
                    &format!("{:.1}s", state.steps[step.number - 1].duration_s),
                );
                continue;
            };
            self.output.check(
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
                OnFailure::Rollback if self.lease.check().is_err() => {
                    // Not ours to roll back any more: whoever holds the Lease owns the state.
                    return Finish::Stopped {
                        step: step.number,
                        error,
                    };
                }
                OnFailure::Rollback => {
                    let (rollbacks, rollback_failed) = self.rollback_to_baseline(state).await;
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

    /// Runs one step in this process, through the same dispatch as the command line.
    async fn run_step(&self, step: &PlannedStep) -> (CommandResult, Option<serde_json::Value>) {
        let command = match parse_step(step) {
            Ok(Some(command)) => command,
            Ok(None) => {
                let question = step.message.as_deref().unwrap_or("continue?");
                let answer = support::confirm(self.global, question).map_err(|e| {
                    e.hint(format!(
                        "approve by resuming with `--from {} --yes`",
                        step.number
                    ))
                });
                return (answer.map(|()| ExitStatus::Success), None);
            }
            Err(error) => return (Err(error), None),
        };
        let mut global = self.global.clone();
        global.dry_run = false;
        if matches!(self.output.format(), Format::Json | Format::Yaml) {
            let (captured, buffer) = self.output.capturing_data();
            let result = Box::pin(super::dispatch(command, &global, &captured)).await;
            let text = buffer.contents();
            let data = serde_json::from_str(&text)
                .ok()
                .or_else(|| (!text.trim().is_empty()).then_some(serde_json::Value::String(text)));
            (result, data)
        } else {
            let result = Box::pin(super::dispatch(command, &global, self.output)).await;
            (result, None)
        }
    }

    /// Returns every component whose deployed release differs from the baseline to it.
    async fn rollback_to_baseline(&self, state: &RunState) -> (Vec<String>, bool) {
        let mut done = Vec::new();
        let mut failed = false;
        let client = match cluster::connect(self.environment).await {
            Ok(client) => client,
            Err(error) => {
                self.output
                    .warn(format!("cannot reach the cluster to roll back: {error}"));
                return (done, true);
            }
        };
        let now = match read_baseline(&client, self.environment).await {
            Ok(now) => now,
            Err(error) => {
                self.output.warn(format!(
                    "cannot read the releases to roll back: {:#}",
                    error.error()
                ));
                return (done, true);
            }
        };
        // Newest first: the reverse of configuration (deploy) order.
        for component in self.environment.components.iter().rev() {
            let before = state.baseline.get(&component.name).cloned().flatten();
            let current = now.get(&component.name).cloned().flatten();
            match rollback_action(before.as_ref(), current.as_ref()) {
                RollbackAction::Nothing => {}
                RollbackAction::CannotUndoFirstInstall => {
                    self.output.warn(format!(
                        "{}: installed by this run with no earlier revision to return to; \
                         stop it with `psctl kill-switch on --component {}` if needed",
                        component.name, component.name
                    ));
                }
                RollbackAction::To(revision) => {
                    self.output.info(format!(
                        "rolling {} back to revision {revision} (its state when the run began)",
                        component.name
                    ));
                    let args = RollbackArgs {
                        component: Some(component.name.clone()),
                        to_rev: Some(revision),
                        undo: false,
                        unstick: false,
                        force: false,
                        timeout: std::time::Duration::from_secs(300),
                        no_verify: false,
                    };
                    let mut global = self.global.clone();
                    global.dry_run = false;
                    global.yes = true;
                    // With -o json the report is the only document on stdout; the
                    // rollback's own plan is summarised in `rollbacks`.
                    let (captured, _) = self.output.capturing_data();
                    let output = if matches!(self.output.format(), Format::Json | Format::Yaml) {
                        &captured
                    } else {
                        self.output
                    };
                    let result = Box::pin(super::rollback::run(args, &global, output)).await;
                    match result {
                        Ok(ExitStatus::Success) => {
                            done.push(format!("{} to revision {revision}", component.name));
                        }
                        Ok(_) | Err(_) => {
                            failed = true;
                            self.output.warn(format!(
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
}

#[derive(Debug, PartialEq, Eq)]
enum RollbackAction {
    Nothing,
    CannotUndoFirstInstall,
    To(u32),
}

/// What returning a component to its baseline takes. Pure. A release whose deployed
/// revision runs the same chart and image as the baseline (say, after deploy's own automatic
/// rollback) is left alone: rolling back again would only add a revision.
fn rollback_action(before: Option<&Baseline>, now: Option<&Baseline>) -> RollbackAction {
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
type StateStore = ConfigMapStore<RunState>;

/// `psctl-run-<playbook>`, reduced to a valid object name.
fn state_name(playbook: &str) -> String {
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
mod tests {
    use super::*;

    fn step(number: usize, command: &[&str]) -> PlannedStep {
        PlannedStep {
            number,
            name: format!("step-{number}"),
            kind: "x",
            command: command.iter().map(|w| (*w).to_owned()).collect(),
            message: None,
            on_failure: OnFailure::Stop,
            line: None,
        }
    }

    #[test]
    fn only_a_run_reviving_components_before_switching_off_meets_the_kill_switch() {
        let restore = [
            step(1, &[]),
            step(2, &["kill-switch", "off", "--component", "poller"]),
            step(3, &["deploy", "--tag", "v1"]),
        ];
        assert!(reviving_step(&restore).is_none());
        let release = [
            step(1, &["build", "--tag", "v1"]),
            step(2, &["deploy", "--tag", "v1"]),
        ];
        assert_eq!(reviving_step(&release).map(|s| s.number), Some(2));
        let stop = [step(1, &["kill-switch", "on"]), step(2, &["status"])];
        assert!(reviving_step(&stop).is_none());
    }

    fn base(revision: u32, tag: &str) -> Baseline {
        Baseline {
            revision,
            chart: "webhook-worker-0.1.0".into(),
            image_tag: tag.into(),
        }
    }

    #[test]
    fn a_changed_release_returns_to_its_baseline_revision() {
        assert_eq!(
            rollback_action(Some(&base(3, "v1")), Some(&base(4, "v2"))),
            RollbackAction::To(3)
        );
    }

    #[test]
    fn an_unchanged_or_already_restored_release_is_left_alone() {
        assert_eq!(
            rollback_action(Some(&base(3, "v1")), Some(&base(3, "v1"))),
            RollbackAction::Nothing
        );
        // deploy's automatic rollback produced revision 5 with the baseline's content.
        assert_eq!(
            rollback_action(Some(&base(3, "v1")), Some(&base(5, "v1"))),
            RollbackAction::Nothing
        );
        assert_eq!(rollback_action(None, None), RollbackAction::Nothing);
    }

    #[test]
    fn a_first_install_cannot_be_rolled_back() {
        assert_eq!(
            rollback_action(None, Some(&base(1, "v2"))),
            RollbackAction::CannotUndoFirstInstall
        );
    }

    #[test]
    fn state_names_are_valid_object_names() {
        assert_eq!(state_name("release"), "psctl-run-release");
        assert_eq!(state_name("Emergency Stop!"), "psctl-run-emergency-stop");
        assert!(state_name(&"x".repeat(100)).len() <= 63);
    }

    #[test]
    fn the_report_ends_with_a_summary_and_the_resume_hint() {
        let step = |number: usize, result: &str| StepRecord {
            number,
            name: format!("s{number}"),
            kind: "status".into(),
            command: "psctl status --env sandbox".into(),
            result: result.into(),
            exit_code: if result == "failed" { 1 } else { 0 },
            duration_s: 1.25,
            error: if result == "failed" {
                "smoke failed".into()
            } else {
                String::new()
            },
            data: None,
        };
        let report = RunReport {
            playbook: "release".into(),
            environment: "sandbox".into(),
            result: "failed".into(),
            steps: vec![
                step(1, "skipped"),
                step(2, "passed"),
                step(3, "failed"),
                step(4, "not-run"),
            ],
            rollbacks: vec!["poller to revision 3".into()],
            resume: Some("psctl run playbooks/release.yaml --env sandbox --from 3".into()),
        };
        let text = report.render_table(&Style::PLAIN);
        assert!(
            text.contains("passed 1, failed 1, skipped 1, not run 1"),
            "{text}"
        );
        assert!(text.contains("Rolled back: poller to revision 3"), "{text}");
        assert!(text.ends_with("--from 3\n"), "{text}");
        assert!(text.contains("smoke failed"), "{text}");
    }
}
