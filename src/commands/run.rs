//! `psctl run PLAYBOOK`: executes a playbook's steps in order, each as the psctl command it
//! names, with progress `[N/M]`, an `on_failure` per step, a rollback baseline recorded in the
//! cluster, and `--from` to resume.
//!
//! Plan (`crate::playbook`, printed under `--dry-run`) → confirm → take the deploy Lease for the
//! whole run → record the baseline (`playbook::run::prepare_state`) → execute step by step
//! (`playbook::run::execute`, each step through the same dispatch as the command line) →
//! report. The baseline (each component's deployed revision when the run began) and every
//! step's result live in a ConfigMap `psctl-run-<playbook>`, so a run resumed with `--from` on
//! another machine rolls back to the same revisions as the run that started the change.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::Parser as _;

use super::support;
use crate::cli::{Cli, Command, RollbackArgs, RunArgs};
use crate::cluster;
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::lock::{LeaseGuard, Lost};
use crate::output::{Format, Output};
use crate::playbook::run::{
    self as playbook_run, Baseline, RunBackend, RunReport, RunState, StateStore,
};
use crate::playbook::{self, PlannedStep};
use crate::settings::{Environment, GlobalSettings};

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
    let held = if playbook_run::reviving_step(&plan.steps[start..]).is_some() {
        let every: Vec<&crate::settings::Component> = environment.components.iter().collect();
        support::require_kill_switch_off(held, &client, &environment, &every).await?
    } else {
        held
    };
    let store = StateStore::new(
        &client,
        &environment.namespace,
        playbook_run::state_name(&plan.playbook),
    );
    let mut state =
        playbook_run::prepare_state(&store, &client, &environment, &plan, start, output).await?;
    store.save(&state).await?;

    let backend = InProcess {
        environment: &environment,
        global,
        output,
        store: &store,
        lease: held.guard(),
    };
    let finish =
        playbook_run::execute(&backend, &plan, &environment, &mut state, start, output).await;
    let conclusion = playbook_run::conclude(finish, &plan, &environment.name);
    state.status = conclusion.state.to_owned();
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
        rollbacks: conclusion.rollbacks.clone(),
        resume: conclusion
            .failure
            .as_ref()
            .map(|(resume, _)| resume.clone()),
    };
    output.data(&report).context("writing the run report")?;
    playbook_run::result(conclusion)
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
fn parse_step(step: &PlannedStep) -> Result<Option<Command>, CommandError> {
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

/// Runs every step, and every rollback to the baseline, in this process through
/// [`super::dispatch`], under the run's Lease.
struct InProcess<'a> {
    environment: &'a Environment,
    global: &'a GlobalSettings,
    output: &'a Output,
    store: &'a StateStore,
    /// Checked before every step: a run that lost the Lease stops there.
    lease: LeaseGuard,
}

impl RunBackend for InProcess<'_> {
    fn fence(&self) -> Result<(), Lost> {
        self.lease.check()
    }

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

    async fn save(&self, state: &RunState) -> Result<(), String> {
        self.store.save(state).await.map_err(|e| e.to_string())
    }

    async fn current(&self) -> Result<BTreeMap<String, Option<Baseline>>, String> {
        let client = cluster::connect(self.environment)
            .await
            .map_err(|error| format!("cannot reach the cluster to roll back: {error}"))?;
        playbook_run::read_baseline(&client, self.environment)
            .await
            .map_err(|error| format!("cannot read the releases to roll back: {:#}", error.error()))
    }

    async fn rollback(&self, component: &str, revision: u32) -> CommandResult {
        let args = RollbackArgs {
            component: Some(component.to_owned()),
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
        // With -o json the report is the only document on stdout; the rollback's own plan is
        // summarised in `rollbacks`.
        let (captured, _) = self.output.capturing_data();
        let output = if matches!(self.output.format(), Format::Json | Format::Yaml) {
            &captured
        } else {
            self.output
        };
        Box::pin(super::dispatch(Command::Rollback(args), &global, output)).await
    }
}
