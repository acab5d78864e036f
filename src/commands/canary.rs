//! `psctl canary start|status|promote|abort|resume`: phased promotion of a component's new tag
//! through the chart's canary track, judged by the gates of `crate::canary`.
//!
//! psctl is the controller for the length of the run: it holds the deploy Lease, scales the
//! tracks by replicas, evaluates Prometheus every interval and writes the run's state to the
//! ConfigMap `psctl-canary-<component>` after every change, so `status` and `resume` work from
//! any machine. The stable release's Helm history changes only at promotion: the canary
//! Deployment is rendered from the chart (`helm template` with `canary.enabled=true`) and
//! applied on its own with the field manager `psctl-canary`.
//!
//! This file resolves, plans (`canary::plan`), drives (`canary::runner` over
//! `canary::kube::KubeBackend`) and reports (`canary::report`).

use std::path::Path;

use anyhow::Context as _;

use super::support::{self, AuditNote};
use crate::audit::AuditSink;
use crate::canary::gate::{OnInconclusive, OnLatency, StepTally};
use crate::canary::kube::{self as canary_kube, Context, KubeBackend, unix_now};
use crate::canary::plan::{self, StableTrack, StartSettings, pick_component};
use crate::canary::report::{self as canary_report, CanaryReport};
use crate::canary::runner::{self, Backend as _, Ending};
use crate::canary::state::{self, CanaryRun, OperatorRequest, RunStatus};
use crate::cli::{
    CanaryCommand, CanaryInconclusive, CanaryLatency, CanaryPromoteArgs, CanaryResumeArgs,
    CanaryStartArgs, CanaryStatusArgs, CanaryTargetArgs,
};
use crate::cluster;
use crate::error::{Classify as _, CommandError, CommandResult, ExitStatus};
use crate::lock::{self, DeployLock, LockError};
use crate::output::{CheckState, Output};
use crate::settings::{Component, Environment, GlobalSettings};
use crate::state::ConfigMapStore;

pub async fn run(
    command: CanaryCommand,
    global: &GlobalSettings,
    output: &Output,
) -> CommandResult {
    match command {
        CanaryCommand::Start(args) => start(args, global, output).await,
        CanaryCommand::Status(args) => status(args, global, output).await,
        CanaryCommand::Promote(args) => promote(args, global, output).await,
        CanaryCommand::Abort(args) => abort(args, global, output).await,
        CanaryCommand::Resume(args) => resume(args, global, output).await,
    }
}

/// `canary start` arguments as the planner takes them.
fn start_settings(args: CanaryStartArgs) -> StartSettings {
    let CanaryStartArgs {
        component,
        tag,
        steps,
        bake,
        interval,
        min_requests,
        confidence,
        on_inconclusive,
        max_error_rate,
        on_latency,
        values,
        timeout,
    } = args;
    StartSettings {
        component,
        tag,
        steps,
        bake,
        interval,
        min_requests,
        confidence,
        on_inconclusive: on_inconclusive.map(|choice| match choice {
            CanaryInconclusive::Pause => OnInconclusive::Pause,
            CanaryInconclusive::Abort => OnInconclusive::Abort,
        }),
        max_error_rate,
        on_latency: on_latency.map(|choice| match choice {
            CanaryLatency::Abort => OnLatency::Abort,
            CanaryLatency::Pause => OnLatency::Pause,
        }),
        values,
        timeout,
    }
}

async fn start(args: CanaryStartArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let settings = start_settings(args);
    let environment = global.environment()?;
    let (component, spec) = pick_component(&environment, settings.component.as_deref())?;
    let extra = match &settings.values {
        Some(path) => read_values_file(path)?,
        None => crate::yaml::Mapping::new(),
    };
    let helm = support::helm_target(&environment);
    let chart = support::resolve_chart(&global.config, &component.chart);
    let start = plan::start(
        &environment,
        component,
        spec,
        &settings,
        extra,
        &helm,
        &chart,
    )?;
    if global.dry_run {
        output
            .data(&start.plan)
            .context("writing the canary plan")?;
        return Ok(ExitStatus::Success);
    }
    support::confirm(
        global,
        &format!(
            "start a canary of {} tag {} in `{}` (steps {:?} %)?",
            component.name, settings.tag, environment.name, start.plan.shape.steps
        ),
    )?;

    let client = connect(&environment, output).await?;
    let prometheus = canary_kube::preflight_prometheus(&environment, output).await?;
    let store = canary_kube::store(&client, &environment.namespace, &component.name);
    if let Some(existing) = store.load().await?
        && !existing.status.is_final()
    {
        return Err(CommandError::usage(anyhow::anyhow!(
            "a canary of `{}` (tag {}) is already {} at {}",
            component.name,
            existing.tag,
            existing.status.as_str(),
            existing.position()
        ))
        .hint("follow it with `psctl canary status`; continue it with `psctl canary resume` or end it with `psctl canary abort`"));
    }
    let stable_replicas =
        canary_kube::preflight_stable_replicas(&client, &environment, component, output).await?;
    let stable_revision =
        canary_kube::preflight_stable_revision(&client, &environment, component, output).await?;
    crate::registry::preflight(
        environment.registry.as_deref(),
        &[(component.image.as_str(), settings.tag.as_str())],
        output,
    )
    .await?;
    let audit = support::open_audit(global, &environment, output).await?;
    let audit = crate::events::publishing(audit, &client, &environment, output);
    let operation = format!("canary {}", component.name);
    let me = lock::holder_identity(&operation);
    let held =
        support::take_lock(&client, &environment, &operation, audit.as_ref(), output).await?;
    let held = support::require_kill_switch_off(held, &client, &environment, &[component]).await?;
    let stable = StableTrack {
        replicas: stable_replicas,
        revision: stable_revision,
    };
    let run = plan::new_run(start, stable, me, unix_now());
    let context = Context {
        client: &client,
        environment: &environment,
        component,
        spec,
        helm: &helm,
        chart: &chart,
        prometheus: &prometheus,
        output,
        timeout: settings.timeout,
    };
    drive_and_report(context, audit.as_ref(), held, run).await
}

async fn status(args: CanaryStatusArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let CanaryStatusArgs {
        component,
        watch,
        every,
    } = args;
    let environment = global.environment()?;
    let (component, _) = pick_component(&environment, component.as_deref())?;
    let client = cluster::connect(&environment).await?;
    let store = canary_kube::store(&client, &environment.namespace, &component.name);
    let Some(run) = store.load().await? else {
        return Err(no_run(&environment, component));
    };
    let driven_by = canary_kube::live_driver(&client, &environment.namespace, &run).await;
    let mut report = CanaryReport { run, driven_by };
    if watch {
        report = follow(&client, &environment, &store, report, every, output).await?;
    }
    output.data(&report).context("writing the canary status")?;
    if watch && report.run.status == RunStatus::Aborted {
        let run = &report.run;
        return Err(CommandError::verification(anyhow::anyhow!(
            "the canary of `{}` (tag {}) was aborted: {}",
            run.component,
            run.tag,
            run.reason.as_deref().unwrap_or("no reason recorded")
        ))
        .titled(format!("canary aborted: {}", run.component)));
    }
    Ok(ExitStatus::Success)
}

/// Reads failures in a row `--watch` rides out (the client already retries each read).
const WATCH_READ_FAILURES: u32 = 5;

/// `canary status --watch`: reads the run every `every` until it is final, printing what the
/// driver recorded in between ([`canary_report::changes`]).
async fn follow(
    client: &kube::Client,
    environment: &Environment,
    store: &ConfigMapStore<CanaryRun>,
    mut report: CanaryReport,
    every: std::time::Duration,
    output: &Output,
) -> Result<CanaryReport, CommandError> {
    let progress = output.spinner(canary_report::summary_line(&report));
    let mut failures = 0;
    while !report.run.status.is_final() {
        tokio::time::sleep(every).await;
        let run = match store.load().await {
            Ok(Some(run)) => run,
            Ok(None) => {
                progress.finish();
                return Err(CommandError::usage(anyhow::anyhow!(
                    "the canary's state ConfigMap `{}` was deleted while watching",
                    store.name()
                )));
            }
            Err(error)
                if failures < WATCH_READ_FAILURES
                    && error.exit_status() == ExitStatus::Unreachable =>
            {
                failures += 1;
                progress.println(format!("reading the run failed ({error}); trying again"));
                continue;
            }
            Err(error) => {
                progress.finish();
                return Err(error.into());
            }
        };
        failures = 0;
        let driven_by = canary_kube::live_driver(client, &environment.namespace, &run).await;
        let next = CanaryReport { run, driven_by };
        for line in canary_report::changes(&report, &next) {
            progress.println(line);
        }
        progress.set_message(canary_report::summary_line(&next));
        report = next;
    }
    progress.finish();
    Ok(report)
}

async fn promote(
    args: CanaryPromoteArgs,
    global: &GlobalSettings,
    output: &Output,
) -> CommandResult {
    let CanaryPromoteArgs { target, full } = args;
    let what = if full {
        "promote to 100 % now"
    } else {
        "end the current step"
    };
    take_over(target, global, output, what, move |by, at| {
        OperatorRequest::Promote { full, by, at }
    })
    .await
}

async fn abort(args: CanaryTargetArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    take_over(args, global, output, "abort", |by, at| {
        OperatorRequest::Abort { by, at }
    })
    .await
}

async fn resume(args: CanaryResumeArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let CanaryResumeArgs { target } = args;
    let CanaryTargetArgs { component, timeout } = target;
    let environment = global.environment()?;
    let (component, spec) = pick_component(&environment, component.as_deref())?;
    if global.dry_run {
        output.info("dry run: `canary resume` would continue the recorded run; nothing changed");
        return Ok(ExitStatus::Success);
    }
    let client = connect(&environment, output).await?;
    let store = canary_kube::store(&client, &environment.namespace, &component.name);
    let Some(mut run) = store.load().await? else {
        return Err(no_run(&environment, component));
    };
    if run.status.is_final() {
        return Err(CommandError::usage(anyhow::anyhow!(
            "the canary of `{}` (tag {}) is already {}; nothing to resume",
            component.name,
            run.tag,
            run.status.as_str()
        ))
        .hint("start a new one with `psctl canary start --tag TAG`"));
    }
    if let Some(holder) = canary_kube::live_driver(&client, &environment.namespace, &run).await
        && lock::HolderProcess::of(&holder) == lock::HolderProcess::AliveHere
    {
        return Err(CommandError::usage(anyhow::anyhow!(
            "the canary of `{}` is still driven by `{holder}`",
            component.name
        ))
        .hint("follow it with `psctl canary status`; `psctl canary promote` / `abort` reach it through its state"));
    }
    support::confirm(
        global,
        &format!(
            "resume the canary of {} tag {} at {}?",
            component.name,
            run.tag,
            run.position()
        ),
    )?;
    let prometheus = canary_kube::preflight_prometheus(&environment, output).await?;
    let audit = support::open_audit(global, &environment, output).await?;
    let audit = crate::events::publishing(audit, &client, &environment, output);
    let operation = format!("canary {}", component.name);
    let me = lock::holder_identity(&operation);
    let held =
        support::take_lock(&client, &environment, &operation, audit.as_ref(), output).await?;
    let held = support::require_kill_switch_off(held, &client, &environment, &[component]).await?;
    let now = unix_now();
    if run.status == RunStatus::Paused {
        // A human looked and wants more evidence: the step bakes again from its weights.
        run.status = RunStatus::Running;
        run.step_started_at = None;
        run.tally = StepTally::default();
        run.reason = None;
        run.event(
            now,
            format!(
                "resumed by {me} after a pause: {} bakes again",
                run.position()
            ),
        );
    } else {
        run.event(
            now,
            format!(
                "resumed by {me} at {} (previous driver gone)",
                run.position()
            ),
        );
    }
    run.holder = Some(me);
    let helm = support::helm_target(&environment);
    let chart = support::resolve_chart(&global.config, &component.chart);
    let context = Context {
        client: &client,
        environment: &environment,
        component,
        spec,
        helm: &helm,
        chart: &chart,
        prometheus: &prometheus,
        output,
        timeout,
    };
    drive_and_report(context, audit.as_ref(), held, run).await
}

/// `promote` and `abort`: handed to the live driver through the state, or done here.
async fn take_over(
    target: CanaryTargetArgs,
    global: &GlobalSettings,
    output: &Output,
    what: &str,
    request: impl FnOnce(String, i64) -> OperatorRequest,
) -> CommandResult {
    let CanaryTargetArgs { component, timeout } = target;
    let environment = global.environment()?;
    let (component, spec) = pick_component(&environment, component.as_deref())?;
    let client = connect(&environment, output).await?;
    let store = canary_kube::store(&client, &environment.namespace, &component.name);
    let Some(mut run) = store.load().await? else {
        return Err(no_run(&environment, component));
    };
    if run.status.is_final() {
        return Err(CommandError::usage(anyhow::anyhow!(
            "the canary of `{}` (tag {}) is already {}; nothing to {what}",
            component.name,
            run.tag,
            run.status.as_str()
        ))
        .hint(if run.status == RunStatus::Promoted {
            format!(
                "to undo a promotion use `psctl rollback {}`",
                component.name
            )
        } else {
            "start a new one with `psctl canary start --tag TAG`".to_owned()
        }));
    }
    if global.dry_run {
        output.info(format!(
            "dry run: would {what} the canary of {} tag {} at {}",
            component.name,
            run.tag,
            run.position()
        ));
        return Ok(ExitStatus::Success);
    }
    support::confirm(
        global,
        &format!(
            "{what}: canary of {} tag {} at {}?",
            component.name,
            run.tag,
            run.position()
        ),
    )?;
    let operation = format!("canary {}", component.name);
    let me = lock::holder_identity(&operation);
    let request = request(me.clone(), unix_now());
    let stored = |holder: String| {
        format!(
            "`{holder}` drives the run and will {what} at its next evaluation (within {}s); follow with `psctl canary status`",
            run.interval_secs
        )
    };
    if let Some(holder) = canary_kube::live_driver(&client, &environment.namespace, &run).await
        && lock::HolderProcess::of(&holder) == lock::HolderProcess::AliveHere
    {
        canary_kube::store_request(&store, &request).await?;
        output.check(CheckState::Ok, "request stored", &stored(holder));
        return Ok(ExitStatus::Success);
    }
    let prometheus = canary_kube::preflight_prometheus(&environment, output).await?;
    let audit = support::open_audit(global, &environment, output).await?;
    let audit = crate::events::publishing(audit, &client, &environment, output);
    // A driver on another host shows it is alive by renewing the Lease while we watch.
    let held = match support::take_lock(&client, &environment, &operation, audit.as_ref(), output)
        .await
    {
        Ok(held) => held,
        Err(LockError::Held { holder, .. }) if run.holder.as_deref() == Some(holder.as_str()) => {
            canary_kube::store_request(&store, &request).await?;
            output.check(CheckState::Ok, "request stored", &stored(holder));
            return Ok(ExitStatus::Success);
        }
        Err(error) => return Err(error.into()),
    };
    let held = support::require_kill_switch_off(held, &client, &environment, &[component]).await?;
    run.status = RunStatus::Running;
    run.reason = None;
    run.request = Some(request);
    run.holder = Some(me);
    let helm = support::helm_target(&environment);
    let chart = support::resolve_chart(&global.config, &component.chart);
    let context = Context {
        client: &client,
        environment: &environment,
        component,
        spec,
        helm: &helm,
        chart: &chart,
        prometheus: &prometheus,
        output,
        timeout,
    };
    let manual_abort = matches!(run.request, Some(OperatorRequest::Abort { .. }));
    let result = drive_and_report(context, audit.as_ref(), held, run).await;
    // An abort asked for and carried out is this command's success.
    match result {
        Err(error) if manual_abort && error.status() == ExitStatus::VerificationFailed => {
            output.check(
                CheckState::Ok,
                "canary aborted",
                "canary scaled to 0, stable restored",
            );
            Ok(ExitStatus::Success)
        }
        other => other,
    }
}

fn no_run(environment: &Environment, component: &Component) -> CommandError {
    CommandError::usage(anyhow::anyhow!(
        "no canary run of `{}` in namespace `{}` (no ConfigMap `{}`)",
        component.name,
        environment.namespace,
        state::config_map_name(&component.name)
    ))
    .hint(format!(
        "start one with `psctl canary start --component {} --tag TAG`",
        component.name
    ))
}

/// Saves the run, drives it, releases the Lease, records the audit entry, prints the report and
/// maps the ending to the exit code.
async fn drive_and_report(
    context: Context<'_>,
    audit: &dyn AuditSink,
    held: DeployLock,
    mut run: CanaryRun,
) -> CommandResult {
    let guard = held.guard();
    let backend = KubeBackend::new(context, guard.clone());
    let before = format!("{} at {}", run.status.as_str(), run.position());
    if let Err(problem) = backend.save(&run).await {
        let _ = held.release().await;
        return Err(CommandError::unreachable(anyhow::anyhow!(
            "cannot write the canary state ConfigMap `{}`: {problem}",
            state::config_map_name(&run.component)
        )));
    }
    let ending = runner::drive(&backend, &mut run).await;
    if let Err(error) = held.release().await {
        context.output.warn(format!(
            "the deploy lock was not released cleanly: {error}; it expires in {}s",
            lock::LEASE_SECONDS
        ));
    }
    let outcome = match &ending {
        Ending::Promoted => "succeeded",
        Ending::Aborted { .. } => "aborted",
        Ending::Paused { .. } => "paused",
        Ending::RollbackFailed { .. } => "failed",
        Ending::Fenced { .. } => "stopped",
        Ending::Interrupted { .. } => "interrupted",
    };
    support::audit(
        audit,
        context.output,
        context.environment,
        AuditNote {
            action: "canary".to_owned(),
            target: run.release.clone(),
            from_state: before,
            to_state: format!("{} at {}", run.status.as_str(), run.position()),
            outcome: outcome.to_owned(),
            details: serde_json::json!({
                "component": run.component,
                "tag": run.tag,
                "reason": run.reason,
                "evaluations": run.windows.len(),
            }),
        },
    )
    .await;
    let component = run.component.clone();
    let tag = run.tag.clone();
    let canary_deployment = run.canary_deployment.clone();
    context
        .output
        .data(&CanaryReport {
            run,
            driven_by: None,
        })
        .context("writing the canary report")?;
    match ending {
        Ending::Promoted => {
            context.output.check(CheckState::Ok, "canary", &format!("{tag} promoted to stable"));
            Ok(ExitStatus::Success)
        }
        Ending::Aborted { reason } => Err(CommandError::verification(anyhow::anyhow!(
            "the canary of `{component}` (tag {tag}) was aborted: {reason}"
        ))
        .titled(format!("canary aborted: {component}"))
        .hint(format!(
            "stable is restored; the canary Deployment `{canary_deployment}` is kept at 0 replicas for investigation"
        ))
        .hint("`psctl canary status` shows every evaluation with its figures")),
        Ending::Paused { reason } => Err(CommandError::verification(anyhow::anyhow!(
            "the canary of `{component}` (tag {tag}) is paused for a human: {reason}"
        ))
        .hint("the canary keeps its weight; decide with `psctl canary promote` (next step), `psctl canary abort`, \
               or `psctl canary resume` (bake the step again)")),
        Ending::RollbackFailed { reason } => Err(CommandError::new(
            ExitStatus::RollbackFailed,
            anyhow::anyhow!("the canary of `{component}` (tag {tag}) could not be undone: {reason}"),
        )
        .titled(format!("canary rollback failed: {component}"))
        .hint("a human must act now: retry with `psctl canary abort`, check `psctl status`")
        .hint(format!("stop the canary by hand with `kubectl scale deployment {canary_deployment} --replicas=0`"))),
        Ending::Interrupted { reason } => Err(CommandError::unreachable(anyhow::anyhow!(
            "the canary of `{component}` (tag {tag}) was not promoted: {reason}"
        ))
        .hint("the canary keeps its weight, paused; `psctl canary status` shows it")
        .hint(format!(
            "once the cluster takes writes again, `psctl canary promote --component {component} --full` promotes it, or `psctl canary abort` ends it"
        ))),
        Ending::Fenced { reason } => {
            let error = match guard.check() {
                Err(lost) => CommandError::from(LockError::Lost(lost)),
                Ok(()) => CommandError::usage(anyhow::anyhow!("{reason}")),
            };
            Err(error.hint(format!(
                "the canary of `{component}` (tag {tag}) stopped where it was; `psctl canary status` shows its last saved step"
            )))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Preflight and plumbing

fn read_values_file(path: &Path) -> Result<crate::yaml::Mapping, CommandError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CommandError::usage(
            anyhow::Error::new(e).context(format!("reading --values `{}`", path.display())),
        )
    })?;
    if text.trim().is_empty() {
        return Ok(crate::yaml::Mapping::new());
    }
    crate::yaml::from_str(&text).map_err(|e| {
        CommandError::usage(anyhow::anyhow!(
            "--values `{}` is not a YAML mapping of chart values: {e}",
            path.display()
        ))
    })
}

async fn connect(environment: &Environment, output: &Output) -> Result<kube::Client, CommandError> {
    match cluster::connect_checked(environment).await {
        Ok((client, _version)) => Ok(client),
        Err(error) => {
            if matches!(error, cluster::ClusterError::Api { .. }) {
                output.check(CheckState::Fail, "cluster reachable", &error.to_string());
            }
            Err(error.into())
        }
    }
}
