//! `psctl canary start|status|promote|abort|resume`: phased promotion of a component's new tag
//! through the chart's canary track, judged by the gates of `crate::canary`.
//!
//! psctl is the controller for the length of the run: it holds the deploy Lease, scales the
//! tracks by replicas, evaluates Prometheus every interval and writes the run's state to the
//! ConfigMap `psctl-canary-<component>` after every change, so `status` and `resume` work from
//! any machine. The stable release's Helm history changes only at promotion: the canary
//! Deployment is rendered from the chart (`helm template` with `canary.enabled=true`) and
//! applied on its own with the field manager `psctl-canary`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde::Serialize;

use super::history::read_revisions;
use super::support::{self, AuditNote};
use crate::audit::AuditSink;
use crate::canary::gate::{GatePolicy, Observation, OnInconclusive, StepTally, check_policy};
use crate::canary::queries::{self, CANARY_TRACK, STABLE_TRACK, Scope, WindowQueries};
use crate::canary::runner::{self, Backend, Ending, Observed};
use crate::canary::state::{
    self, CanaryRun, OperatorRequest, RunStatus, STATE_KEY, STATE_VERSION, Split,
};
use crate::cli::{
    CanaryCommand, CanaryInconclusive, CanaryPromoteArgs, CanaryResumeArgs, CanaryStartArgs,
    CanaryStatusArgs, CanaryTargetArgs,
};
use crate::cluster::{self, ClusterError, is_not_found};
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::helm::driver::{self, HelmCommand, HelmTarget, UpgradeSpec};
use crate::helm::revision;
use crate::lock::{self, DeployLock, LockError};
use crate::output::{CheckState, Output, Render, Style, table};
use crate::prom::Prometheus;
use crate::rollout::diagnosis::Policy;
use crate::rollout::track::{self, Target};
use crate::settings::{CanarySpec, Component, Environment, GlobalSettings};
use crate::smoke::{
    self, Category as SmokeCategory, Selection, SmokeContext, SmokeSettings,
    Verdict as SmokeVerdict,
};

/// How long the per-step smoke checks keep retrying while new canary pods settle.
pub const SMOKE_WAIT: Duration = Duration::from_secs(30);

/// The field manager of the canary Deployment's server-side applies.
pub const FIELD_MANAGER: &str = "psctl-canary";
/// Annotation on the canary Deployment naming the tag under test.
pub const TAG_ANNOTATION: &str = "psctl.io/canary-tag";

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

// ---------------------------------------------------------------------------------------------
// Settings and plan (pure)

/// `canary start` arguments resolved against the component's `canary:` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct StartSettings {
    pub component: Option<String>,
    pub tag: String,
    pub steps: Option<Vec<u8>>,
    pub bake: Option<Duration>,
    pub interval: Option<Duration>,
    pub min_requests: Option<f64>,
    pub confidence: Option<f64>,
    pub on_inconclusive: Option<OnInconclusive>,
    pub values: Option<PathBuf>,
    pub timeout: Duration,
}

impl StartSettings {
    pub fn resolve(args: CanaryStartArgs) -> Self {
        let CanaryStartArgs {
            component,
            tag,
            steps,
            bake,
            interval,
            min_requests,
            confidence,
            on_inconclusive,
            values,
            timeout,
        } = args;
        Self {
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
            values,
            timeout,
        }
    }
}

/// The component to canary: the named one, or the only one with a `canary:` section.
pub fn pick_component<'a>(
    environment: &'a Environment,
    name: Option<&str>,
) -> Result<(&'a Component, &'a CanarySpec), CommandError> {
    let with_canary: Vec<&Component> = environment
        .components
        .iter()
        .filter(|c| c.canary.is_some())
        .collect();
    let component = match name {
        Some(name) => environment.component(name)?,
        None => {
            match with_canary.as_slice() {
                [only] => only,
                [] => {
                    return Err(CommandError::usage(anyhow::anyhow!(
                    "no component of environment `{}` has a canary track",
                    environment.name
                ))
                .hint("add `canary: {deployment: <release>-canary}` to the component in psctl.yaml"));
                }
                several => {
                    return Err(CommandError::usage(anyhow::anyhow!(
                        "several components have a canary track ({}); name one",
                        several
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .hint("pass `--component NAME`"));
                }
            }
        }
    };
    let Some(spec) = &component.canary else {
        return Err(CommandError::usage(anyhow::anyhow!(
            "component `{}` has no canary track configured",
            component.name
        ))
        .hint(format!(
            "add `canary: {{deployment: {}-canary}}` under components.{} in psctl.yaml",
            component.release, component.name
        )));
    };
    Ok((component, spec))
}

/// The policy, steps, bake and interval of a new run: flags over configuration over defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunShape {
    pub steps: Vec<u8>,
    pub bake_secs: u64,
    pub interval_secs: u64,
    pub policy: GatePolicy,
}

pub fn shape(spec: &CanarySpec, settings: &StartSettings) -> Result<RunShape, CommandError> {
    let usage = |message: String| CommandError::usage(anyhow::anyhow!(message));
    let steps = settings.steps.clone().unwrap_or_else(|| spec.steps.clone());
    if steps.is_empty()
        || steps.iter().any(|s| *s == 0 || *s > 100)
        || !steps.windows(2).all(|w| w[0] < w[1])
    {
        return Err(usage(format!(
            "--steps {steps:?}: weights must be increasing percentages between 1 and 100, e.g. `10,30,60,100`"
        )));
    }
    let bake = settings.bake.unwrap_or(spec.bake);
    let interval = match settings.interval {
        Some(interval) => interval,
        // A bake shortened on the command line (demos, tests) shortens the configured interval
        // with it: four evaluations per bake, at least 5 s apart.
        None if spec.interval > bake => (bake / 4).max(Duration::from_secs(5)).min(bake),
        None => spec.interval,
    };
    if interval.is_zero() || interval > bake || bake.is_zero() {
        return Err(usage(format!(
            "the interval ({}s) must be more than zero and at most the bake ({}s)",
            interval.as_secs(),
            bake.as_secs()
        ))
        .hint(
            "e.g. `--bake 5m --interval 30s`; short runs in tests: `--bake 40s --interval 10s`",
        ));
    }
    let mut policy = spec.policy.clone();
    if let Some(min_requests) = settings.min_requests {
        policy.min_requests = min_requests;
    }
    if let Some(confidence) = settings.confidence {
        policy.confidence = confidence;
    }
    if let Some(on_inconclusive) = settings.on_inconclusive {
        policy.on_inconclusive = on_inconclusive;
    }
    check_policy(&policy).map_err(|message| usage(format!("canary policy: {message}")))?;
    Ok(RunShape {
        steps,
        bake_secs: bake.as_secs().max(1),
        interval_secs: interval.as_secs().max(1),
        policy,
    })
}

/// Deep-merges `overlay` into `base` (mappings merge key by key, anything else is replaced).
pub fn merge_values(
    base: &serde_yaml::Mapping,
    overlay: &serde_yaml::Mapping,
) -> serde_yaml::Mapping {
    let mut merged = base.clone();
    for (key, value) in overlay {
        match (merged.get_mut(key), value) {
            (Some(serde_yaml::Value::Mapping(existing)), serde_yaml::Value::Mapping(more)) => {
                *existing = merge_values(existing, more);
            }
            _ => {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    merged
}

/// The image repository the chart is given: `<registry>/<image>` when the environment has a registry.
fn repository(environment: &Environment, component: &Component) -> Option<String> {
    environment
        .registry
        .as_ref()
        .map(|registry| format!("{registry}/{}", component.image))
}

/// `helm template` of the chart with the canary track on: the source of the canary Deployment.
/// Everything, the canary switches and tag included, goes in the values file.
pub fn template_command(
    helm: &HelmTarget,
    release: &str,
    chart: &Path,
    repository: Option<&str>,
    tag: &str,
    replicas: i32,
    values: &serde_yaml::Mapping,
) -> Result<HelmCommand, CommandError> {
    let mut merged = driver::chart_values(values)?;
    driver::merge(&mut merged, driver::image_values(repository, None)?);
    crate::registry::check_tag(tag).map_err(driver::HelmError::InvalidTag)?;
    driver::set(&mut merged, &["canary", "enabled"], true.into());
    driver::set(&mut merged, &["canary", "image", "tag"], tag.into());
    driver::set(&mut merged, &["canary", "replicas"], replicas.into());
    Ok(helm.template(release, chart, merged))
}

/// Picks the Deployment named `name` out of `helm template` output and makes it the canary
/// object to apply: namespace set, tag annotated. Pure.
pub fn canary_object(
    rendered: &str,
    name: &str,
    namespace: &str,
    tag: &str,
) -> Result<serde_json::Value, String> {
    use serde::Deserialize as _;
    for document in serde_yaml::Deserializer::from_str(rendered) {
        let Ok(value) = serde_json::Value::deserialize(document) else {
            continue;
        };
        let is_it = value["kind"] == "Deployment" && value["metadata"]["name"] == name;
        if !is_it {
            continue;
        }
        let mut object = value;
        object["metadata"]["namespace"] = serde_json::Value::String(namespace.to_owned());
        if !object["metadata"]["annotations"].is_object() {
            object["metadata"]["annotations"] = serde_json::json!({});
        }
        object["metadata"]["annotations"][TAG_ANNOTATION] =
            serde_json::Value::String(tag.to_owned());
        return Ok(object);
    }
    Err(format!(
        "the chart rendered no Deployment `{name}` with canary.enabled=true; the chart needs a canary track \
         (see charts/webhook-worker) and psctl.yaml's canary.deployment must name it"
    ))
}

/// What `canary start --dry-run` prints.
#[derive(Debug, Clone, Serialize)]
pub struct StartPlan {
    pub environment: String,
    pub namespace: String,
    pub component: String,
    pub release: String,
    pub stable_deployment: String,
    pub canary_deployment: String,
    pub tag: String,
    pub shape: RunShape,
    /// Renders the canary Deployment (applied with field manager `psctl-canary`).
    pub canary_render: String,
    /// The values file of `canary_render` (nothing secret).
    pub canary_values: Option<String>,
    /// Run at promotion only.
    pub promotion: String,
    /// The values file of `promotion` (nothing secret).
    pub promotion_values: Option<String>,
    /// The gate queries for a window of one bake.
    pub queries: WindowQueries,
    pub state_config_map: String,
}

impl Render for StartPlan {
    fn render_table(&self, _style: &Style) -> String {
        let mut text = format!(
            "canary plan for `{}` in `{}` (namespace {}): tag {}\n\
             steps {:?} %, bake {}s each, gates every {}s; state in ConfigMap `{}`\n\
             canary track: {}\npromotion: {}\n",
            self.component,
            self.environment,
            self.namespace,
            self.tag,
            self.shape.steps,
            self.shape.bake_secs,
            self.shape.interval_secs,
            self.state_config_map,
            self.canary_render,
            self.promotion,
        );
        for (what, values) in [
            ("canary track", &self.canary_values),
            ("promotion", &self.promotion_values),
        ] {
            if let Some(values) = values {
                text.push_str(&format!("{what} values file:\n"));
                for line in values.lines() {
                    text.push_str(&format!("  {line}\n"));
                }
            }
        }
        text.push_str(&table::render(
            &["GATE QUERY", "PROMQL"],
            [
                ["requests", self.queries.requests.as_str()],
                ["failures", self.queries.failures.as_str()],
                ["p95 (ms)", self.queries.p95_ms.as_str()],
            ],
        ));
        text
    }
}

// ---------------------------------------------------------------------------------------------
// Reports

/// What `status` (and every command at its end) prints: the run and who drives it.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryReport {
    #[serde(flatten)]
    pub run: CanaryRun,
    /// The psctl process currently driving the run, if one is alive.
    pub driven_by: Option<String>,
}

fn time(unix: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

impl Render for CanaryReport {
    fn render_table(&self, _style: &Style) -> String {
        let run = &self.run;
        let split = run.split();
        let mut text = format!(
            "canary of `{}` ({}) tag {}: {} at {}; canary {} / stable {} replicas\n\
             started {} by {}; steps {:?} %, bake {}s, interval {}s\n",
            run.component,
            run.release,
            run.tag,
            run.status.as_str(),
            run.position(),
            if run.status == RunStatus::Running || run.status == RunStatus::Paused {
                split.canary.to_string()
            } else {
                "-".to_owned()
            },
            if run.status == RunStatus::Running || run.status == RunStatus::Paused {
                split.stable.to_string()
            } else {
                "-".to_owned()
            },
            time(run.started_at),
            run.started_by,
            run.steps,
            run.bake_secs,
            run.interval_secs,
        );
        if let Some(reason) = &run.reason {
            text.push_str(&format!("reason: {reason}\n"));
        }
        match &self.driven_by {
            Some(holder) => text.push_str(&format!("driven by: {holder}\n")),
            None if run.status == RunStatus::Running => text.push_str(
                "driven by: nobody (the psctl that ran it is gone): `psctl canary resume` continues it\n",
            ),
            None => {}
        }
        if let Some(request) = &run.request {
            text.push_str(&format!(
                "pending request from {}: {request:?}\n",
                request.by()
            ));
        }
        text.push_str(&table::render(
            &[
                "STEP",
                "AT",
                "VERDICT",
                "DECISION",
                "ERROR RATE",
                "LATENCY",
                "GUARDRAIL",
            ],
            run.windows.iter().map(|w| {
                let decision = match &w.decision {
                    crate::canary::gate::StepDecision::Continue => "continue".to_owned(),
                    crate::canary::gate::StepDecision::Advance => "advance".to_owned(),
                    crate::canary::gate::StepDecision::Abort { .. } => "abort".to_owned(),
                    crate::canary::gate::StepDecision::Pause { .. } => "pause".to_owned(),
                };
                let gate = |outcome: &crate::canary::gate::GateOutcome| {
                    format!("{}: {}", outcome.name(), outcome.detail())
                };
                [
                    format!("{}/{} {}%", w.step + 1, run.steps.len(), w.weight),
                    format!("{}s", w.elapsed_secs),
                    serde_json::to_value(w.evaluation.verdict)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    decision,
                    gate(&w.evaluation.error_rate),
                    gate(&w.evaluation.latency),
                    gate(&w.evaluation.guardrail),
                ]
            }),
        ));
        if !run.events.is_empty() {
            text.push_str("events:\n");
            for event in &run.events {
                text.push_str(&format!("  {}  {}\n", time(event.at), event.message));
            }
        }
        text
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

async fn start(args: CanaryStartArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let settings = StartSettings::resolve(args);
    let environment = global.environment()?;
    let (component, spec) = pick_component(&environment, settings.component.as_deref())?;
    let shape = shape(spec, &settings)?;
    let extra = match &settings.values {
        Some(path) => read_values_file(path)?,
        None => serde_yaml::Mapping::new(),
    };
    let helm = support::helm_target(&environment);
    let chart = support::resolve_chart(&global.config, &component.chart);
    let merged = merge_values(&component.values, &extra);
    let repository = repository(&environment, component);
    let render = template_command(
        &helm,
        &component.release,
        &chart,
        repository.as_deref(),
        &settings.tag,
        1,
        &merged,
    )?;
    let promotion = helm.upgrade_install(&UpgradeSpec {
        release: &component.release,
        chart: &chart,
        image_repository: repository.clone(),
        image_tag: Some(&settings.tag),
        values: &merged,
        description: &format!("psctl canary promote {}", settings.tag),
    })?;
    let scope = Scope::new(&environment.namespace, &component.selector).map_err(|m| {
        CommandError::usage(anyhow::anyhow!(
            "components.{}.selector: {m}",
            component.name
        ))
    })?;
    let plan = StartPlan {
        environment: environment.name.clone(),
        namespace: environment.namespace.clone(),
        component: component.name.clone(),
        release: component.release.clone(),
        stable_deployment: component.deployment.clone(),
        canary_deployment: spec.deployment.clone(),
        tag: settings.tag.clone(),
        shape: shape.clone(),
        canary_render: render.display(),
        canary_values: render.values_file(),
        promotion: promotion.display(),
        promotion_values: promotion.values_file(),
        queries: queries::window_queries(
            &spec.metrics,
            &scope,
            Duration::from_secs(shape.bake_secs),
        ),
        state_config_map: state::config_map_name(&component.name),
    };
    if global.dry_run {
        output.data(&plan).context("writing the canary plan")?;
        return Ok(ExitStatus::Success);
    }
    support::confirm(
        global,
        &format!(
            "start a canary of {} tag {} in `{}` (steps {:?} %)?",
            component.name, settings.tag, environment.name, shape.steps
        ),
    )?;

    let client = connect(&environment, output).await?;
    let prometheus = prometheus(&environment, output).await?;
    let store = StateStore::new(&client, &environment.namespace, &component.name);
    if let Some((existing, _)) = store.load().await?
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
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &environment.namespace);
    let stable = match deployments.get(&component.deployment).await {
        Ok(deployment) => deployment,
        Err(error) if is_not_found(&error) => {
            output.check(
                CheckState::Fail,
                "stable track",
                &format!("Deployment `{}` does not exist", component.deployment),
            );
            return Err(CommandError::usage(anyhow::anyhow!(
                "the stable Deployment `{}` does not exist in `{}`: a canary needs a running stable release",
                component.deployment,
                environment.namespace
            ))
            .hint(format!("deploy it first: `psctl deploy --component {}`", component.name)));
        }
        Err(error) => {
            return Err(ClusterError::api(format!(
                "reading Deployment `{}`",
                component.deployment
            ))(error)
            .into());
        }
    };
    let stable_replicas = stable.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if stable_replicas < 1 {
        return Err(CommandError::usage(anyhow::anyhow!(
            "the stable Deployment `{}` has 0 replicas (kill switch on?); there is no traffic to compare with",
            component.deployment
        ))
        .hint("restore it first, e.g. `psctl kill-switch off`"));
    }
    output.check(
        CheckState::Ok,
        "stable track",
        &format!(
            "`{}` has {stable_replicas} replica(s)",
            component.deployment
        ),
    );
    let history = read_revisions(
        &client,
        &environment.namespace,
        std::slice::from_ref(&component.release),
    )
    .await?;
    let Some(stable_revision) = revision::deployed(&history).map(|r| r.revision) else {
        return Err(CommandError::usage(anyhow::anyhow!(
            "release `{}` has no deployed revision; a canary promotes over a deployed stable release",
            component.release
        ))
        .hint(format!("deploy it first: `psctl deploy --component {}`", component.name)));
    };
    output.check(
        CheckState::Ok,
        "stable release",
        &format!("`{}` at revision {stable_revision}", component.release),
    );
    preflight_image(&environment, component, &settings.tag, output).await?;
    let audit = support::open_audit(global, &environment, output).await?;
    let audit = crate::events::publishing(audit, &client, &environment, output);
    let operation = format!("canary {}", component.name);
    let me = lock::holder_identity(&operation);
    let held =
        support::take_lock(&client, &environment, &operation, audit.as_ref(), output).await?;
    let now = unix_now();
    let image = format!(
        "{}:{}",
        repository.unwrap_or_else(|| component.image.clone()),
        settings.tag
    );
    let mut run = CanaryRun {
        version: STATE_VERSION,
        component: component.name.clone(),
        namespace: environment.namespace.clone(),
        release: component.release.clone(),
        stable_deployment: component.deployment.clone(),
        canary_deployment: spec.deployment.clone(),
        tag: settings.tag.clone(),
        image,
        steps: shape.steps,
        bake_secs: shape.bake_secs,
        interval_secs: shape.interval_secs,
        policy: shape.policy,
        values: serde_json::to_value(&extra).unwrap_or(serde_json::Value::Null),
        stable_replicas,
        stable_revision: Some(stable_revision),
        started_by: me.clone(),
        started_at: now,
        status: RunStatus::Running,
        step: 0,
        step_started_at: None,
        tally: StepTally::default(),
        holder: Some(me),
        reason: None,
        updated_at: now,
        request: None,
        events: Vec::new(),
        windows: Vec::new(),
    };
    run.event(
        now,
        format!("started by {} for tag {}", run.started_by, run.tag),
    );
    let context = Context {
        client: &client,
        environment: &environment,
        component,
        spec,
        helm: &helm,
        chart: &chart,
        prometheus: &prometheus,
        audit: audit.as_ref(),
        output,
        timeout: settings.timeout,
    };
    drive_and_report(context, held, run).await
}

async fn status(args: CanaryStatusArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let CanaryStatusArgs { component } = args;
    let environment = global.environment()?;
    let (component, _) = pick_component(&environment, component.as_deref())?;
    let client = cluster::connect(&environment).await?;
    let store = StateStore::new(&client, &environment.namespace, &component.name);
    let Some((run, _)) = store.load().await? else {
        return Err(no_run(&environment, component));
    };
    let driven_by = live_driver(&client, &environment.namespace, &run).await;
    output
        .data(&CanaryReport { run, driven_by })
        .context("writing the canary status")?;
    Ok(ExitStatus::Success)
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
    let store = StateStore::new(&client, &environment.namespace, &component.name);
    let Some((mut run, _)) = store.load().await? else {
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
    if let Some(holder) = live_driver(&client, &environment.namespace, &run).await
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
    let prometheus = prometheus(&environment, output).await?;
    let audit = support::open_audit(global, &environment, output).await?;
    let audit = crate::events::publishing(audit, &client, &environment, output);
    let operation = format!("canary {}", component.name);
    let me = lock::holder_identity(&operation);
    let held =
        support::take_lock(&client, &environment, &operation, audit.as_ref(), output).await?;
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
        audit: audit.as_ref(),
        output,
        timeout,
    };
    drive_and_report(context, held, run).await
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
    let store = StateStore::new(&client, &environment.namespace, &component.name);
    let Some((mut run, _)) = store.load().await? else {
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
    if let Some(holder) = live_driver(&client, &environment.namespace, &run).await
        && lock::HolderProcess::of(&holder) == lock::HolderProcess::AliveHere
    {
        store.request(request).await?;
        output.check(CheckState::Ok, "request stored", &stored(holder));
        return Ok(ExitStatus::Success);
    }
    let prometheus = prometheus(&environment, output).await?;
    let audit = support::open_audit(global, &environment, output).await?;
    let audit = crate::events::publishing(audit, &client, &environment, output);
    // A driver on another host shows it is alive by renewing the Lease while we watch.
    let held = match support::take_lock(&client, &environment, &operation, audit.as_ref(), output)
        .await
    {
        Ok(held) => held,
        Err(LockError::Held { holder, .. }) if run.holder.as_deref() == Some(holder.as_str()) => {
            store.request(request).await?;
            output.check(CheckState::Ok, "request stored", &stored(holder));
            return Ok(ExitStatus::Success);
        }
        Err(error) => return Err(error.into()),
    };
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
        audit: audit.as_ref(),
        output,
        timeout,
    };
    let manual_abort = matches!(run.request, Some(OperatorRequest::Abort { .. }));
    let result = drive_and_report(context, held, run).await;
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

/// What the driving commands work with.
#[derive(Clone, Copy)]
struct Context<'a> {
    client: &'a kube::Client,
    environment: &'a Environment,
    component: &'a Component,
    spec: &'a CanarySpec,
    helm: &'a HelmTarget,
    chart: &'a Path,
    prometheus: &'a Prometheus,
    audit: &'a dyn AuditSink,
    output: &'a Output,
    timeout: Duration,
}

/// Saves the run, drives it, releases the Lease, records the audit entry, prints the report and
/// maps the ending to the exit code.
async fn drive_and_report(
    context: Context<'_>,
    held: DeployLock,
    mut run: CanaryRun,
) -> CommandResult {
    let backend = KubeBackend::new(context);
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
    };
    support::audit(
        context.audit,
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
    }
}

// ---------------------------------------------------------------------------------------------
// Preflight and plumbing

fn read_values_file(path: &Path) -> Result<serde_yaml::Mapping, CommandError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CommandError::usage(
            anyhow::Error::new(e).context(format!("reading --values `{}`", path.display())),
        )
    })?;
    if text.trim().is_empty() {
        return Ok(serde_yaml::Mapping::new());
    }
    serde_yaml::from_str(&text).map_err(|e| {
        CommandError::usage(anyhow::anyhow!(
            "--values `{}` is not a YAML mapping of chart values: {e}",
            path.display()
        ))
    })
}

async fn connect(environment: &Environment, output: &Output) -> Result<kube::Client, CommandError> {
    let client = cluster::connect(environment).await?;
    match client.apiserver_version().await {
        Ok(_) => Ok(client),
        Err(error) => {
            let error = ClusterError::api(format!(
                "reaching the API server of context `{}`",
                environment.kube_context
            ))(error);
            output.check(CheckState::Fail, "cluster reachable", &error.to_string());
            Err(error.into())
        }
    }
}

async fn prometheus(
    environment: &Environment,
    output: &Output,
) -> Result<Prometheus, CommandError> {
    let Some(url) = &environment.prometheus_url else {
        return Err(CommandError::usage(anyhow::anyhow!(
            "environment `{}` has no prometheus_url: the canary gates read Prometheus",
            environment.name
        ))
        .hint(
            "set `prometheus_url:` for the environment in psctl.yaml, e.g. `http://127.0.0.1:9090`",
        ));
    };
    let prometheus = Prometheus::new(url, Duration::from_secs(10))
        .map_err(|e| CommandError::usage(anyhow::Error::new(e)))?;
    match prometheus.query("vector(1)").await {
        Ok(_) => {
            output.check(CheckState::Ok, "prometheus", url);
            Ok(prometheus)
        }
        Err(error) => {
            output.check(CheckState::Fail, "prometheus", &error.to_string());
            let status = if error.is_unreachable() {
                ExitStatus::Unreachable
            } else {
                ExitStatus::Usage
            };
            Err(CommandError::new(status, error)
                .hint("the gates cannot judge without Prometheus; nothing was changed"))
        }
    }
}

async fn preflight_image(
    environment: &Environment,
    component: &Component,
    tag: &str,
    output: &Output,
) -> Result<(), CommandError> {
    let Some(registry) = &environment.registry else {
        output.check(
            CheckState::Skip,
            "image tag",
            "no registry configured for the environment",
        );
        return Ok(());
    };
    let url = crate::registry::manifest_url(registry, &component.image, tag);
    let reference = format!("{registry}/{}:{tag}", component.image);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| {
            CommandError::usage(anyhow::Error::new(e).context("building the HTTP client"))
        })?;
    let response = http
        .head(&url)
        .header(reqwest::header::ACCEPT, crate::registry::MANIFEST_ACCEPT)
        .send()
        .await;
    match response {
        Ok(response) if response.status().is_success() => {
            output.check(CheckState::Ok, "image tag", &format!("{reference} exists"));
            Ok(())
        }
        Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => {
            output.check(
                CheckState::Fail,
                "image tag",
                &format!("{reference} is not in the registry"),
            );
            Err(CommandError::verification(anyhow::anyhow!(
                "image {reference} does not exist (the canary pods would fail with ErrImagePull); nothing was changed"
            ))
            .hint("build and push it first, or pick an existing tag"))
        }
        Ok(response) => {
            output.check(
                CheckState::Warn,
                "image tag",
                &format!(
                    "{reference}: the registry answered {}; not verified",
                    response.status()
                ),
            );
            Ok(())
        }
        Err(error) => {
            output.check(
                CheckState::Fail,
                "image tag",
                &format!("registry {registry} unreachable"),
            );
            Err(CommandError::unreachable(
                anyhow::Error::new(error)
                    .context(format!("checking {reference} in registry {registry}")),
            ))
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The holder of the deploy Lease when it is the run's own driver and not known dead (a driver
/// on this host whose process is gone is not driving anything).
async fn live_driver(client: &kube::Client, namespace: &str, run: &CanaryRun) -> Option<String> {
    if run.status != RunStatus::Running {
        return None;
    }
    let expected = run.holder.as_deref()?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let lease = leases.get_opt(lock::LEASE_NAME).await.ok().flatten()?;
    let holder = lease.spec?.holder_identity?;
    (holder == expected && lock::HolderProcess::of(&holder) != lock::HolderProcess::DeadHere)
        .then_some(holder)
}

/// Reads and writes the run's ConfigMap with optimistic concurrency.
struct StateStore {
    api: Api<ConfigMap>,
    name: String,
    component: String,
}

impl StateStore {
    fn new(client: &kube::Client, namespace: &str, component: &str) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            name: state::config_map_name(component),
            component: component.to_owned(),
        }
    }

    /// The stored run and the ConfigMap's resourceVersion.
    async fn load(&self) -> Result<Option<(CanaryRun, Option<String>)>, CommandError> {
        let config_map = match self.api.get_opt(&self.name).await {
            Ok(Some(config_map)) => config_map,
            Ok(None) => return Ok(None),
            Err(error) => {
                return Err(
                    ClusterError::api(format!("reading ConfigMap `{}`", self.name))(error).into(),
                );
            }
        };
        let text = config_map
            .data
            .as_ref()
            .and_then(|d| d.get(STATE_KEY))
            .cloned()
            .unwrap_or_default();
        let run = CanaryRun::from_json(&text).map_err(|error| {
            CommandError::usage(
                anyhow::Error::new(error).context(format!("ConfigMap `{}`", self.name)),
            )
            .hint(format!(
                "inspect it with `kubectl get configmap {} -o yaml`",
                self.name
            ))
        })?;
        Ok(Some((run, config_map.metadata.resource_version)))
    }

    fn object(
        &self,
        run: &CanaryRun,
        resource_version: Option<String>,
    ) -> Result<ConfigMap, String> {
        let json = run.to_json().map_err(|e| e.to_string())?;
        let (managed_key, managed_value) = state::MANAGED_BY_LABEL;
        Ok(ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(self.name.clone()),
                resource_version,
                labels: Some(BTreeMap::from([
                    (managed_key.to_owned(), managed_value.to_owned()),
                    (state::COMPONENT_LABEL.to_owned(), self.component.clone()),
                ])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(STATE_KEY.to_owned(), json)])),
            ..Default::default()
        })
    }

    /// Writes `run`; returns a request another psctl stored meanwhile (consumed).
    async fn save(&self, run: &CanaryRun) -> Result<Option<OperatorRequest>, String> {
        for _ in 0..5 {
            let stored = self.load().await.map_err(|e| format!("{:#}", e.error()))?;
            let result = match stored {
                None => self
                    .api
                    .create(&PostParams::default(), &self.object(run, None)?)
                    .await
                    .map(|_| None),
                Some((stored, version)) => {
                    let request = if run.request.is_none() {
                        stored.request
                    } else {
                        None
                    };
                    self.api
                        .replace(
                            &self.name,
                            &PostParams::default(),
                            &self.object(run, version)?,
                        )
                        .await
                        .map(|_| request)
                }
            };
            match result {
                Ok(request) => return Ok(request),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => return Err(cluster::describe(&error)),
            }
        }
        Err(format!("ConfigMap `{}` kept changing under us", self.name))
    }

    /// Stores an operator request for the live driver.
    async fn request(&self, request: OperatorRequest) -> Result<(), CommandError> {
        for _ in 0..5 {
            let Some((mut run, version)) = self.load().await? else {
                return Err(CommandError::usage(anyhow::anyhow!(
                    "the canary state `{}` disappeared",
                    self.name
                )));
            };
            run.request = Some(request.clone());
            let object = self
                .object(&run, version)
                .map_err(|m| CommandError::usage(anyhow::anyhow!(m)))?;
            match self
                .api
                .replace(&self.name, &PostParams::default(), &object)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => {
                    return Err(
                        ClusterError::api(format!("writing ConfigMap `{}`", self.name))(error)
                            .into(),
                    );
                }
            }
        }
        Err(CommandError::unreachable(anyhow::anyhow!(
            "ConfigMap `{}` kept changing; the request was not stored",
            self.name
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster-backed runner edges

struct KubeBackend<'a> {
    context: Context<'a>,
    deployments: Api<Deployment>,
    pods: Api<Pod>,
    store: StateStore,
    scope: Result<Scope, String>,
}

impl<'a> KubeBackend<'a> {
    fn new(context: Context<'a>) -> Self {
        let namespace = &context.environment.namespace;
        Self {
            deployments: Api::namespaced(context.client.clone(), namespace),
            pods: Api::namespaced(context.client.clone(), namespace),
            store: StateStore::new(context.client, namespace, &context.component.name),
            scope: Scope::new(namespace, &context.component.selector),
            context,
        }
    }

    fn track_selector(&self, track: &str) -> String {
        format!(
            "{},{}={track}",
            self.context.component.selector,
            queries::TRACK_LABEL
        )
    }

    async fn scale(&self, deployment: &str, replicas: i32) -> Result<(), String> {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        self.deployments
            .patch_scale(deployment, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "scaling `{deployment}` to {replicas}: {}",
                    cluster::describe(&e)
                )
            })
    }

    async fn wait(&self, deployment: &str, track: &str) -> Result<(), String> {
        let target = Target {
            namespace: self.context.environment.namespace.clone(),
            deployment: deployment.to_owned(),
            selector: self.track_selector(track),
        };
        let outcome = track::track(
            self.context.client,
            &target,
            &Policy::default(),
            self.context.timeout,
            self.context.output,
        )
        .await
        .map_err(|e| e.to_string())?;
        support::report_outcome(
            self.context.output,
            &format!("rollout {deployment}"),
            &outcome,
        );
        if outcome.is_complete() {
            Ok(())
        } else {
            Err(format!(
                "`{deployment}`: {}",
                support::outcome_summary(&outcome)
            ))
        }
    }

    fn values(&self, run: &CanaryRun) -> serde_yaml::Mapping {
        let extra: serde_yaml::Mapping =
            serde_json::from_value(run.values.clone()).unwrap_or_default();
        merge_values(&self.context.component.values, &extra)
    }

    /// Renders the canary Deployment from the chart and applies it.
    async fn apply_canary(&self, run: &CanaryRun, replicas: i32) -> Result<(), String> {
        let repository = repository(self.context.environment, self.context.component);
        let command = template_command(
            self.context.helm,
            &run.release,
            self.context.chart,
            repository.as_deref(),
            &run.tag,
            replicas,
            &self.values(run),
        )
        .map_err(|e| format!("{:#}", e.error()))?;
        self.context
            .output
            .detail(format!("  {}", command.display()));
        let rendered = command.run().await.map_err(|e| e.to_string())?;
        let object = canary_object(&rendered, &run.canary_deployment, &run.namespace, &run.tag)?;
        self.deployments
            .patch(
                &run.canary_deployment,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "applying `{}`: {}",
                    run.canary_deployment,
                    cluster::describe(&e)
                )
            })
    }

    /// The canary Deployment already runs the tag under test.
    async fn canary_is_current(&self, run: &CanaryRun) -> Result<bool, String> {
        match self.deployments.get_opt(&run.canary_deployment).await {
            Ok(Some(deployment)) => Ok(deployment
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TAG_ANNOTATION))
                .is_some_and(|tag| *tag == run.tag)),
            Ok(None) => Ok(false),
            Err(error) => Err(cluster::describe(&error)),
        }
    }

    async fn deployed_revision(&self, release: &str) -> Result<Option<u32>, String> {
        let history = read_revisions(
            self.context.client,
            &self.context.environment.namespace,
            &[release.to_owned()],
        )
        .await
        .map_err(|e| format!("{:#}", e.error()))?;
        Ok(revision::deployed(&history).map(|r| r.revision))
    }

    async fn query(&self, promql: &str) -> Result<BTreeMap<String, Option<f64>>, String> {
        self.context
            .prometheus
            .query(promql)
            .await
            .map(|samples| queries::by_track(&samples))
            .map_err(|e| e.to_string())
    }
}

impl Backend for KubeBackend<'_> {
    fn now(&self) -> i64 {
        unix_now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    async fn set_weights(&self, run: &CanaryRun, split: Split) -> Result<String, String> {
        if self.canary_is_current(run).await? {
            self.scale(&run.canary_deployment, split.canary).await?;
        } else {
            self.apply_canary(run, split.canary).await?;
        }
        self.wait(&run.canary_deployment, CANARY_TRACK).await?;
        // Canary up first, then stable down: capacity never dips below the total.
        self.scale(&run.stable_deployment, split.stable).await?;
        self.wait(&run.stable_deployment, STABLE_TRACK).await?;
        Ok(format!(
            "weights set at {}: `{}` {} replica(s) on {}, `{}` {} replica(s)",
            run.position(),
            run.canary_deployment,
            split.canary,
            run.tag,
            run.stable_deployment,
            split.stable
        ))
    }

    async fn smoke(&self, run: &CanaryRun) -> Result<String, String> {
        // Every canary pod runs the tag under test (the smoke suite does not look at images)...
        let pods = self
            .pods
            .list(&ListParams::default().labels(&self.track_selector(CANARY_TRACK)))
            .await
            .map_err(|e| format!("listing canary pods: {}", cluster::describe(&e)))?;
        let live: Vec<&Pod> = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if live.is_empty() {
            return Err("no canary pod is running".to_owned());
        }
        let suffix = format!(":{}", run.tag);
        for pod in &live {
            let on_tag = pod.spec.as_ref().is_some_and(|s| {
                s.containers
                    .iter()
                    .all(|c| c.image.as_deref().is_some_and(|i| i.ends_with(&suffix)))
            });
            if !on_tag {
                let name = pod.metadata.name.clone().unwrap_or_default();
                return Err(format!("canary pod `{name}` does not run tag {}", run.tag));
            }
        }
        // ...and passes the smoke suite's cluster and metrics checks, narrowed to the canary
        // pods (each pod's own metrics endpoint, through the pod proxy).
        let selection = Selection {
            categories: vec![SmokeCategory::Cluster, SmokeCategory::Metrics],
            components: vec![self.context.component.name.clone()],
            pod_selector: Some(format!("{}={CANARY_TRACK}", queries::TRACK_LABEL)),
            explicit: false,
        };
        let settings = SmokeSettings {
            wait: SMOKE_WAIT,
            ..SmokeSettings::default()
        };
        let smoke_context = SmokeContext::new(
            self.context.environment.clone(),
            self.context.client.clone(),
            Some(self.context.prometheus.clone()),
            None,
            settings,
        );
        let report = smoke::run(&smoke_context, &selection)
            .await
            .map_err(|error| error.to_string())?;
        for check in &report.checks {
            let state = match check.result {
                SmokeVerdict::Pass => CheckState::Ok,
                SmokeVerdict::Fail => CheckState::Fail,
                SmokeVerdict::Skipped => CheckState::Skip,
            };
            self.context
                .output
                .check(state, &format!("smoke {}", check.name), &check.evidence);
        }
        if report.passed() {
            Ok(format!(
                "{} canary pod(s) on {}; smoke {}",
                live.len(),
                run.tag,
                report.summary_line()
            ))
        } else {
            Err(report
                .failures()
                .map(|c| format!("{}: {}", c.name, c.evidence))
                .collect::<Vec<_>>()
                .join("; "))
        }
    }

    async fn observe(&self, run: &CanaryRun, elapsed: Duration) -> Observed {
        let scope = match &self.scope {
            Ok(scope) => scope,
            Err(problem) => {
                return Observed {
                    observation: Observation::default(),
                    note: Some(problem.clone()),
                };
            }
        };
        let names = &self.context.spec.metrics;
        let step = queries::window_queries(names, scope, elapsed);
        let guardrail = queries::window_queries(names, scope, run.policy.guardrail_window);
        let (requests, failures, p95, guard_requests, guard_failures) = tokio::join!(
            self.query(&step.requests),
            self.query(&step.failures),
            self.query(&step.p95_ms),
            self.query(&guardrail.requests),
            self.query(&guardrail.failures),
        );
        let mut problems = Vec::new();
        let mut take = |result: Result<BTreeMap<String, Option<f64>>, String>| {
            result.unwrap_or_else(|problem| {
                if !problems.contains(&problem) {
                    problems.push(problem);
                }
                BTreeMap::new()
            })
        };
        let requests = take(requests);
        let failures = take(failures);
        let p95 = take(p95);
        let guard_requests = take(guard_requests);
        let guard_failures = take(guard_failures);
        let empty = BTreeMap::new();
        Observed {
            observation: Observation {
                canary: queries::track_figures(CANARY_TRACK, &requests, &failures, &p95),
                stable: queries::track_figures(STABLE_TRACK, &requests, &failures, &p95),
                canary_guardrail: queries::track_figures(
                    CANARY_TRACK,
                    &guard_requests,
                    &guard_failures,
                    &empty,
                ),
            },
            note: (!problems.is_empty()).then(|| problems.join("; ")),
        }
    }

    async fn save(&self, run: &CanaryRun) -> Result<Option<OperatorRequest>, String> {
        self.store.save(run).await
    }

    async fn promote(&self, run: &CanaryRun) -> Result<String, String> {
        let repository = repository(self.context.environment, self.context.component);
        let values = self.values(run);
        let command = self
            .context
            .helm
            .upgrade_install(&UpgradeSpec {
                release: &run.release,
                chart: self.context.chart,
                image_repository: repository,
                image_tag: Some(&run.tag),
                values: &values,
                description: &format!("psctl canary promote {}", run.tag),
            })
            .map_err(|e| e.to_string())?;
        self.context.output.info(format!("  {}", command.display()));
        command.run().await.map_err(|e| e.to_string())?;
        self.wait(&run.stable_deployment, STABLE_TRACK).await?;
        let replicas = self
            .deployments
            .get(&run.stable_deployment)
            .await
            .map_err(|e| cluster::describe(&e))?
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        if replicas != run.stable_replicas {
            self.scale(&run.stable_deployment, run.stable_replicas)
                .await?;
            self.wait(&run.stable_deployment, STABLE_TRACK).await?;
        }
        match self
            .deployments
            .delete(&run.canary_deployment, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => {
                return Err(format!(
                    "stable now runs {} but the canary Deployment `{}` could not be removed: {}",
                    run.tag,
                    run.canary_deployment,
                    cluster::describe(&error)
                ));
            }
        }
        let revision = self.deployed_revision(&run.release).await.ok().flatten();
        Ok(format!(
            "release `{}` upgraded to {}{} with {} replica(s); canary track `{}` removed",
            run.release,
            run.tag,
            revision
                .map(|r| format!(" (revision {r})"))
                .unwrap_or_default(),
            run.stable_replicas,
            run.canary_deployment
        ))
    }

    async fn abort(&self, run: &CanaryRun) -> Result<String, String> {
        let mut done = Vec::new();
        // A promotion that reached Helm is undone first: stable back to its recorded revision.
        if let Some(recorded) = run.stable_revision {
            let current = self.deployed_revision(&run.release).await?;
            if current.is_some_and(|c| c != recorded) {
                let command = self.context.helm.rollback(&run.release, recorded);
                self.context.output.info(format!("  {}", command.display()));
                command.run().await.map_err(|e| e.to_string())?;
                done.push(format!(
                    "release `{}` rolled back to revision {recorded}",
                    run.release
                ));
            }
        }
        match self.deployments.get_opt(&run.canary_deployment).await {
            Ok(Some(_)) => {
                self.scale(&run.canary_deployment, 0).await?;
                done.push(format!(
                    "canary `{}` scaled to 0 (kept for investigation)",
                    run.canary_deployment
                ));
            }
            Ok(None) => done.push(format!("canary `{}` absent", run.canary_deployment)),
            Err(error) => return Err(cluster::describe(&error)),
        }
        self.scale(&run.stable_deployment, run.stable_replicas)
            .await?;
        self.wait(&run.stable_deployment, STABLE_TRACK).await?;
        done.push(format!(
            "stable `{}` restored to {} replica(s)",
            run.stable_deployment, run.stable_replicas
        ));
        Ok(done.join("; "))
    }

    fn report(&self, line: &str) {
        self.context.output.info(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment() -> Environment {
        let text = "environments:\n  sandbox:\n    kube_context: psctl-sandbox\n    registry: 127.0.0.1:5000\n    \
                    prometheus_url: http://127.0.0.1:9090\n";
        crate::settings::file::parse(Path::new("psctl.yaml"), text)
            .unwrap()
            .environments["sandbox"]
            .clone()
    }

    fn settings(tag: &str) -> StartSettings {
        StartSettings {
            component: None,
            tag: tag.to_owned(),
            steps: None,
            bake: None,
            interval: None,
            min_requests: None,
            confidence: None,
            on_inconclusive: None,
            values: None,
            timeout: Duration::from_secs(300),
        }
    }

    fn helm() -> HelmTarget {
        HelmTarget {
            program: PathBuf::from("helm"),
            namespace: "default".into(),
            kube_context: "psctl-sandbox".into(),
            kubeconfig: None,
        }
    }

    #[test]
    fn the_only_component_with_a_canary_is_picked_by_default() {
        let environment = environment();
        let (component, spec) = pick_component(&environment, None).unwrap();
        assert_eq!(component.name, "webhook");
        assert_eq!(spec.deployment, "problemsolver-webhook-canary");
        let error = pick_component(&environment, Some("poller")).unwrap_err();
        assert_eq!(error.status(), ExitStatus::Usage);
        assert!(format!("{:#}", error.error()).contains("no canary track"));
    }

    #[test]
    fn flags_override_the_configured_shape_and_bad_values_are_refused() {
        let environment = environment();
        let (_, spec) = pick_component(&environment, None).unwrap();
        let defaults = shape(spec, &settings("t")).unwrap();
        assert_eq!(defaults.steps, [10, 30, 60, 100]);
        assert_eq!((defaults.bake_secs, defaults.interval_secs), (300, 30));
        assert_eq!(defaults.policy, GatePolicy::default());

        let mut short = settings("t");
        short.steps = Some(vec![50, 100]);
        short.bake = Some(Duration::from_secs(40));
        short.interval = Some(Duration::from_secs(10));
        short.min_requests = Some(20.0);
        short.on_inconclusive = Some(OnInconclusive::Abort);
        let shaped = shape(spec, &short).unwrap();
        assert_eq!(
            (
                shaped.steps.as_slice(),
                shaped.bake_secs,
                shaped.interval_secs
            ),
            (&[50, 100][..], 40, 10)
        );
        assert_eq!(shaped.policy.min_requests, 20.0);
        assert_eq!(shaped.policy.on_inconclusive, OnInconclusive::Abort);

        let mut bad = settings("t");
        bad.steps = Some(vec![30, 10]);
        assert!(format!("{:#}", shape(spec, &bad).unwrap_err().error()).contains("increasing"));
        let mut short_bake = settings("t");
        short_bake.bake = Some(Duration::from_secs(20));
        let shaped = shape(spec, &short_bake).unwrap();
        assert_eq!(
            (shaped.bake_secs, shaped.interval_secs),
            (20, 5),
            "the interval follows a short bake"
        );

        let mut bad = settings("t");
        bad.interval = Some(Duration::from_secs(600));
        assert!(
            format!("{:#}", shape(spec, &bad).unwrap_err().error()).contains("at most the bake")
        );
        let mut bad = settings("t");
        bad.confidence = Some(0.2);
        assert!(format!("{:#}", shape(spec, &bad).unwrap_err().error()).contains("`confidence`"));
    }

    #[test]
    fn values_merge_deeply_with_the_overlay_winning() {
        let base: serde_yaml::Mapping =
            serde_yaml::from_str("allowInsecureTargets: true\nenv: {A: '1', B: '2'}\n").unwrap();
        let overlay: serde_yaml::Mapping =
            serde_yaml::from_str("allowInsecureTargets: false\nenv: {B: '3'}\n").unwrap();
        let merged = merge_values(&base, &overlay);
        let expected: serde_yaml::Mapping =
            serde_yaml::from_str("allowInsecureTargets: false\nenv: {A: '1', B: '3'}\n").unwrap();
        assert_eq!(merged, expected);
    }

    #[test]
    fn the_canary_is_rendered_with_the_canary_track_on_and_values_in_a_file() {
        let values: serde_yaml::Mapping = serde_yaml::from_str("logLevel: debug\n").unwrap();
        let command = template_command(
            &helm(),
            "problemsolver-webhook",
            Path::new("charts/webhook-worker"),
            Some("127.0.0.1:5000/problemsolver-webhook-worker"),
            "1.4.3",
            2,
            &values,
        )
        .unwrap();
        assert_eq!(
            command.display(),
            "helm template problemsolver-webhook charts/webhook-worker --values <values-file>"
        );
        assert_eq!(
            serde_json::Value::Object(command.values.unwrap()),
            serde_json::json!({
                "logLevel": "debug",
                "image": {"repository": "127.0.0.1:5000/problemsolver-webhook-worker"},
                "canary": {"enabled": true, "image": {"tag": "1.4.3"}, "replicas": 2},
            })
        );
    }

    #[test]
    fn a_canary_tag_outside_the_grammar_is_refused_before_helm() {
        // A tag read back from the run's ConfigMap is checked again when the canary is rendered.
        let error = template_command(
            &helm(),
            "problemsolver-webhook",
            Path::new("charts/webhook-worker"),
            None,
            "1.4.3,canary.replicas=100",
            2,
            &serde_yaml::Mapping::new(),
        )
        .unwrap_err();
        assert_eq!(error.status(), ExitStatus::Usage);
    }

    #[test]
    fn only_the_canary_deployment_is_taken_from_the_rendered_chart() {
        let rendered = "---\napiVersion: v1\nkind: Service\nmetadata: {name: problemsolver-webhook-metrics}\n\
                        ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: problemsolver-webhook, namespace: default}\n\
                        ---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: problemsolver-webhook-canary\n  namespace: default\n  \
                        labels: {track: canary}\nspec: {replicas: 1}\n";
        let object = canary_object(
            rendered,
            "problemsolver-webhook-canary",
            "payments",
            "1.4.3",
        )
        .unwrap();
        assert_eq!(object["metadata"]["namespace"], "payments");
        assert_eq!(object["metadata"]["labels"]["track"], "canary");
        assert_eq!(object["metadata"]["annotations"][TAG_ANNOTATION], "1.4.3");
        let error = canary_object(rendered, "other-canary", "payments", "1.4.3").unwrap_err();
        assert!(error.contains("no Deployment `other-canary`"), "{error}");
    }

    #[test]
    fn the_status_table_shows_each_evaluation_with_its_figures() {
        let mut run = crate::canary::state::tests::sample_run();
        let observation = Observation {
            canary: crate::canary::gate::TrackFigures::new(2000.0, 60.0, 90.0),
            stable: crate::canary::gate::TrackFigures::new(18000.0, 72.0, 85.0),
            canary_guardrail: crate::canary::gate::TrackFigures::new(2000.0, 60.0, 90.0),
        };
        let evaluation = crate::canary::gate::evaluate(&run.policy, &observation);
        run.record(crate::canary::state::WindowRecord {
            step: 0,
            weight: 10,
            at: 1_790_000_030,
            elapsed_secs: 30,
            observation,
            evaluation,
            decision: crate::canary::gate::StepDecision::Abort {
                reason: "guardrail".into(),
            },
            note: None,
        });
        run.status = RunStatus::Aborted;
        run.reason = Some("absolute guardrail breached".into());
        let text = CanaryReport {
            run,
            driven_by: None,
        }
        .render_table(&Style::PLAIN);
        assert!(text.contains("aborted at step 1/4 (10%)"), "{text}");
        assert!(
            text.contains("reason: absolute guardrail breached"),
            "{text}"
        );
        assert!(
            text.contains("fail: canary 3.00% of 2000, stable 0.40% of 18000"),
            "{text}"
        );
        assert!(text.contains("guardrail-breached"), "{text}");
    }
}
