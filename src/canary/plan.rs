//! The canary's plan, pure: which component, the run's shape (steps, bake, interval, gate
//! policy: flags over configuration over defaults), the chart values, the `helm template` that
//! renders the canary Deployment and the object taken out of its output, and the plan
//! `canary start --dry-run` prints. No I/O.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::canary::gate::{GatePolicy, OnInconclusive, OnLatency, StepTally, check_policy};
use crate::canary::queries::{self, Scope, WindowQueries};
use crate::canary::state::{self, CanaryRun, RunStatus, STATE_VERSION};
use crate::error::CommandError;
use crate::helm::driver::{self, HelmCommand, HelmTarget, UpgradeSpec};
use crate::output::{Render, Style, table};
use crate::settings::{CanarySpec, Component, Environment};

/// The field manager of the canary Deployment's server-side applies.
pub const FIELD_MANAGER: &str = crate::cluster::ownership::CANARY;
/// Annotation on the canary Deployment naming the tag under test.
pub const TAG_ANNOTATION: &str = "psctl.io/canary-tag";

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
    /// The absolute error-rate target for this run (`max_error_rate`).
    pub max_error_rate: Option<f64>,
    pub on_latency: Option<OnLatency>,
    pub values: Option<PathBuf>,
    pub timeout: Duration,
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
    if let Some(max_error_rate) = settings.max_error_rate {
        policy.max_error_rate = Some(max_error_rate);
    }
    if let Some(on_latency) = settings.on_latency {
        policy.on_latency = on_latency;
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
    base: &crate::yaml::Mapping,
    overlay: &crate::yaml::Mapping,
) -> crate::yaml::Mapping {
    let mut merged = base.clone();
    for (key, value) in overlay {
        match (merged.get_mut(key), value) {
            (Some(crate::yaml::Value::Mapping(existing)), crate::yaml::Value::Mapping(more)) => {
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
pub fn repository(environment: &Environment, component: &Component) -> Option<String> {
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
    values: &crate::yaml::Mapping,
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
    for document in crate::yaml::Deserializer::from_str(rendered) {
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

/// Everything `canary start` decided before touching the cluster.
#[derive(Debug, Clone)]
pub struct Start {
    pub plan: StartPlan,
    /// The `--values` overlay, recorded in the run so that a resume renders the same chart.
    pub extra: crate::yaml::Mapping,
    /// `<repository>:<tag>` of the image under test.
    pub image: String,
}

/// Builds `canary start`'s plan. Pure.
#[allow(clippy::too_many_arguments)]
pub fn start(
    environment: &Environment,
    component: &Component,
    spec: &CanarySpec,
    settings: &StartSettings,
    extra: crate::yaml::Mapping,
    helm: &HelmTarget,
    chart: &Path,
) -> Result<Start, CommandError> {
    let shape = shape(spec, settings)?;
    let merged = merge_values(&component.values, &extra);
    let repository = repository(environment, component);
    let render = template_command(
        helm,
        &component.release,
        chart,
        repository.as_deref(),
        &settings.tag,
        1,
        &merged,
    )?;
    let promotion = helm.upgrade_install(&UpgradeSpec {
        release: &component.release,
        chart,
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
    let image = format!(
        "{}:{}",
        repository.unwrap_or_else(|| component.image.clone()),
        settings.tag
    );
    let plan = StartPlan {
        environment: environment.name.clone(),
        namespace: environment.namespace.clone(),
        component: component.name.clone(),
        release: component.release.clone(),
        stable_deployment: component.deployment.clone(),
        canary_deployment: spec.deployment.clone(),
        tag: settings.tag.clone(),
        queries: queries::window_queries(
            &spec.metrics,
            &scope,
            Duration::from_secs(shape.bake_secs),
        ),
        shape,
        canary_render: render.display(),
        canary_values: render.values_file(),
        promotion: promotion.display(),
        promotion_values: promotion.values_file(),
        state_config_map: state::config_map_name(&component.name),
    };
    Ok(Start { plan, extra, image })
}

/// What the stable track looked like when the run started (read under the deploy Lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StableTrack {
    pub replicas: i32,
    pub revision: u32,
}

/// The run `start` records, driven by `me` from `now`. Pure.
pub fn new_run(start: Start, stable: StableTrack, me: String, now: i64) -> CanaryRun {
    let Start { plan, extra, image } = start;
    let mut run = CanaryRun {
        version: STATE_VERSION,
        component: plan.component,
        namespace: plan.namespace,
        release: plan.release,
        stable_deployment: plan.stable_deployment,
        canary_deployment: plan.canary_deployment,
        tag: plan.tag,
        image,
        steps: plan.shape.steps,
        bake_secs: plan.shape.bake_secs,
        interval_secs: plan.shape.interval_secs,
        policy: plan.shape.policy,
        values: serde_json::to_value(&extra).unwrap_or(serde_json::Value::Null),
        stable_replicas: stable.replicas,
        stable_revision: Some(stable.revision),
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
        promoting_since: None,
        events: Vec::new(),
        windows: Vec::new(),
    };
    run.event(
        now,
        format!("started by {} for tag {}", run.started_by, run.tag),
    );
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitStatus;

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
            max_error_rate: None,
            on_latency: None,
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
            in_cluster: false,
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
    fn the_error_target_and_latency_action_flags_override_the_policy_and_are_checked() {
        let environment = environment();
        let (_, spec) = pick_component(&environment, None).unwrap();
        let mut configured = spec.clone();
        configured.policy.max_error_rate = Some(0.01);
        configured.policy.on_latency = OnLatency::Pause;
        let kept = shape(&configured, &settings("t")).unwrap();
        assert_eq!(
            (kept.policy.max_error_rate, kept.policy.on_latency),
            (Some(0.01), OnLatency::Pause),
            "without the flags the file's values stay"
        );

        let mut flags = settings("t");
        flags.max_error_rate = Some(0.005);
        flags.on_latency = Some(OnLatency::Abort);
        let shaped = shape(&configured, &flags).unwrap();
        assert_eq!(
            (shaped.policy.max_error_rate, shaped.policy.on_latency),
            (Some(0.005), OnLatency::Abort)
        );
        let plan = serde_json::to_value(&shaped).unwrap();
        assert_eq!(plan["policy"]["max_error_rate"], 0.005);
        assert_eq!(plan["policy"]["on_latency"], "abort");

        for rate in [0.0, 1.0, 1.5, -0.1, f64::NAN] {
            let mut bad = settings("t");
            bad.max_error_rate = Some(rate);
            let error = shape(spec, &bad).unwrap_err();
            assert_eq!(error.status(), ExitStatus::Usage);
            assert!(
                format!("{:#}", error.error())
                    .contains("`max_error_rate` must be between 0 and 1 (exclusive)"),
                "{rate}: {:#}",
                error.error()
            );
        }
    }

    #[test]
    fn values_merge_deeply_with_the_overlay_winning() {
        let base: crate::yaml::Mapping =
            crate::yaml::from_str("allowInsecureTargets: true\nenv: {A: '1', B: '2'}\n").unwrap();
        let overlay: crate::yaml::Mapping =
            crate::yaml::from_str("allowInsecureTargets: false\nenv: {B: '3'}\n").unwrap();
        let merged = merge_values(&base, &overlay);
        let expected: crate::yaml::Mapping =
            crate::yaml::from_str("allowInsecureTargets: false\nenv: {A: '1', B: '3'}\n").unwrap();
        assert_eq!(merged, expected);
    }

    #[test]
    fn the_canary_is_rendered_with_the_canary_track_on_and_values_in_a_file() {
        let values: crate::yaml::Mapping = crate::yaml::from_str("logLevel: debug\n").unwrap();
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
            &crate::yaml::Mapping::new(),
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
    fn a_started_run_records_the_plan_the_stable_track_and_its_driver() {
        let environment = environment();
        let (component, spec) = pick_component(&environment, None).unwrap();
        let extra: crate::yaml::Mapping = crate::yaml::from_str("logLevel: debug\n").unwrap();
        let start = start(
            &environment,
            component,
            spec,
            &settings("1.4.3"),
            extra,
            &helm(),
            Path::new("charts/webhook-worker"),
        )
        .unwrap();
        assert_eq!(
            start.image,
            "127.0.0.1:5000/problemsolver-webhook-worker:1.4.3"
        );
        assert_eq!(start.plan.state_config_map, "psctl-canary-webhook");
        assert!(
            start.plan.promotion.starts_with("helm upgrade"),
            "{}",
            start.plan.promotion
        );
        let stable = StableTrack {
            replicas: 4,
            revision: 7,
        };
        let run = new_run(start, stable, "ops@host 1 canary webhook".into(), 100);
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!((run.stable_replicas, run.stable_revision), (4, Some(7)));
        assert_eq!(run.holder.as_deref(), Some("ops@host 1 canary webhook"));
        assert_eq!(run.values, serde_json::json!({"logLevel": "debug"}));
        assert_eq!(run.steps, [10, 30, 60, 100]);
        assert_eq!(run.events.len(), 1);
        assert!(run.events[0].message.contains("for tag 1.4.3"));
    }
}
