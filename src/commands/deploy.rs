//! `psctl deploy`: preflight, `helm upgrade --install` per component, rollout tracked with
//! watches, automatic rollback to the recorded revisions on failure.
//!
//! Plan → preflight → execute → report. The plan (Helm argv per component) is a value printed
//! under `--dry-run`; after each rollout the smoke suite verifies the component
//! ([`verify_component`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use serde::Serialize;

use super::history::read_revisions;
use super::support::{self, AuditNote};
use crate::audit::AuditSink;
use crate::cli::DeployArgs;
use crate::cluster::{self, ClusterError, is_not_found};
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::helm;
use crate::helm::driver::{HelmCommand, HelmTarget, UpgradeSpec, Values};
use crate::helm::revision;
use crate::helm::storage::Revision;
use crate::lock;
use crate::output::{CheckState, Output, Render, Style, table};
use crate::registry::{MANIFEST_ACCEPT, manifest_url, tags_url};
use crate::rollout::diagnosis::Policy;
use crate::rollout::track::{self, Outcome, Target};
use crate::settings::{Component, Environment, GlobalSettings};
use crate::smoke::{
    self, Category as SmokeCategory, Selection, SmokeContext, SmokeSettings, Verdict,
};

/// `deploy` arguments, resolved.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    pub components: Vec<String>,
    pub tag: Option<String>,
    pub timeout: Duration,
    pub rollback: bool,
}

impl DeploySettings {
    pub fn resolve(args: DeployArgs) -> Self {
        let DeployArgs {
            components,
            tag,
            timeout,
            no_rollback,
        } = args;
        Self {
            components,
            tag,
            timeout,
            rollback: !no_rollback,
        }
    }
}

/// One component's step of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanStep {
    pub component: String,
    pub release: String,
    pub deployment: String,
    /// `<repository>:<tag>`; without `--tag`, the tag the release runs now.
    pub image: String,
    /// The Helm command line (the values file shown as `<values-file>`).
    pub helm: String,
    /// The values file's content (image, psctl.yaml's chart values: nothing secret), if any.
    pub values: Option<String>,
    #[serde(skip)]
    pub command: HelmCommand,
    #[serde(skip)]
    pub selector: String,
}

/// The plan of a deploy: what `--dry-run` prints.
#[derive(Debug, Clone, Serialize)]
pub struct DeployPlan {
    pub environment: String,
    pub kube_context: String,
    pub namespace: String,
    pub timeout_seconds: u64,
    pub rollback_on_failure: bool,
    pub steps: Vec<PlanStep>,
}

impl Render for DeployPlan {
    fn render_table(&self, _style: &Style) -> String {
        let mut text = format!(
            "deploy plan for `{}` (context {}, namespace {}, timeout {}s, rollback on failure: {})\n",
            self.environment,
            self.kube_context,
            self.namespace,
            self.timeout_seconds,
            self.rollback_on_failure
        );
        text.push_str(&table::render(
            &["COMPONENT", "RELEASE", "IMAGE", "HELM"],
            self.steps.iter().map(|s| {
                [
                    s.component.clone(),
                    s.release.clone(),
                    s.image.clone(),
                    s.helm.clone(),
                ]
            }),
        ));
        for step in &self.steps {
            if let Some(values) = &step.values {
                text.push_str(&format!("{} values file:\n", step.component));
                for line in values.lines() {
                    text.push_str(&format!("  {line}\n"));
                }
            }
        }
        text
    }
}

/// Stands for the tag a release runs now in a `--dry-run` plan without `--tag` (the dry run
/// does not read the cluster).
pub const KEPT_TAG: &str = "<the tag it runs now>";

/// Builds the plan. Pure: no I/O. Without `--tag`, each component's tag comes from `kept`
/// (what it runs now, see [`kept_tags`]); a component missing there is shown as [`KEPT_TAG`].
pub fn plan(
    environment: &Environment,
    settings: &DeploySettings,
    helm: &HelmTarget,
    config: &std::path::Path,
    kept: &BTreeMap<String, String>,
) -> Result<DeployPlan, CommandError> {
    let components = environment.select(&settings.components)?;
    let mut steps = Vec::new();
    for component in components {
        let tag = settings
            .tag
            .as_deref()
            .or_else(|| kept.get(&component.name).map(String::as_str));
        let repository = environment
            .registry
            .as_ref()
            .map(|registry| format!("{registry}/{}", component.image));
        let chart = support::resolve_chart(config, &component.chart);
        let description = match tag {
            Some(tag) => format!("psctl deploy {tag}"),
            None => "psctl deploy".to_owned(),
        };
        let command = helm.upgrade_install(&UpgradeSpec {
            release: &component.release,
            chart: &chart,
            image_repository: repository.clone(),
            image_tag: tag,
            values: &component.values,
            description: &description,
        })?;
        let image = format!(
            "{}:{}",
            repository.as_deref().unwrap_or(&component.image),
            tag.unwrap_or(KEPT_TAG)
        );
        steps.push(PlanStep {
            component: component.name.clone(),
            release: component.release.clone(),
            deployment: component.deployment.clone(),
            image,
            helm: command.display(),
            values: command.values_file(),
            command,
            selector: component.selector.clone(),
        });
    }
    Ok(DeployPlan {
        environment: environment.name.clone(),
        kube_context: environment.kube_context.clone(),
        namespace: environment.namespace.clone(),
        timeout_seconds: settings.timeout.as_secs(),
        rollback_on_failure: settings.rollback,
        steps,
    })
}

/// Without `--tag` a deploy keeps each release's current image: the tag of its `deployed`
/// revision. A release that is not installed yet, or whose tag psctl cannot read, needs
/// `--tag` (exit 2): the chart's default image is never deployed by accident. Pure.
pub fn kept_tags(
    components: &[&Component],
    history: &[Revision],
) -> Result<BTreeMap<String, (String, u32)>, CommandError> {
    let mut kept = BTreeMap::new();
    for component in components {
        let own: Vec<Revision> = history
            .iter()
            .filter(|r| r.release == component.release)
            .cloned()
            .collect();
        let Some(deployed) = revision::deployed(&own) else {
            return Err(CommandError::usage(anyhow::anyhow!(
                "`{}` is not installed yet and no --tag was given: a first install needs the image tag",
                component.release
            ))
            .hint(format!(
                "pass `--tag TAG`, e.g. `psctl deploy --component {} --tag <tag from psctl build>`",
                component.name
            )));
        };
        if let Err(problem) = crate::registry::check_tag(&deployed.image_tag) {
            return Err(CommandError::usage(anyhow::anyhow!(
                "no --tag was given and the tag `{}` runs now cannot be reused (revision {}): {problem}",
                component.release,
                deployed.revision
            ))
            .hint("pass `--tag TAG` with the image to deploy"));
        }
        kept.insert(
            component.name.clone(),
            (deployed.image_tag.clone(), deployed.revision),
        );
    }
    Ok(kept)
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
    pub result: String,
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
                    c.result.clone(),
                    c.rollout
                        .as_ref()
                        .map(support::outcome_summary)
                        .unwrap_or_default(),
                ]
            }),
        )
    }
}

pub async fn run(args: DeployArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let settings = DeploySettings::resolve(args);
    let environment = global.environment()?;
    let helm = support::helm_target(&environment);
    let plan = plan(
        &environment,
        &settings,
        &helm,
        &global.config,
        &BTreeMap::new(),
    )?;
    if global.dry_run {
        output.data(&plan).context("writing the plan")?;
        return Ok(ExitStatus::Success);
    }
    support::confirm(
        global,
        &format!(
            "deploy {} to `{}`?",
            plan.steps
                .iter()
                .map(|s| s.component.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            environment.name
        ),
    )?;

    let client = preflight_cluster(&environment, output).await?;
    let selected = environment.select(&settings.components)?;
    preflight_secret(&client, &environment, output).await?;
    let releases: Vec<String> = selected.iter().map(|c| c.release.clone()).collect();
    let history = read_revisions(&client, &environment.namespace, &releases).await?;
    let previous = preflight_releases(&selected, &history, output)?;
    let kept = match &settings.tag {
        Some(_) => BTreeMap::new(),
        None => {
            let kept = kept_tags(&selected, &history)?;
            for (component, (tag, revision)) in &kept {
                output.info(format!(
                    "no --tag: `{component}` keeps the image it runs now, tag {tag} (revision {revision})"
                ));
            }
            kept.into_iter()
                .map(|(component, (tag, _))| (component, tag))
                .collect()
        }
    };
    let plan = self::plan(&environment, &settings, &helm, &global.config, &kept)?;
    let plan = with_secret_fingerprint(plan, &client, &environment, output).await?;
    let images: Vec<(&Component, &str)> = selected
        .iter()
        .map(|component| {
            let tag = settings
                .tag
                .as_deref()
                .or_else(|| kept.get(&component.name).map(String::as_str))
                .unwrap_or_default();
            (*component, tag)
        })
        .collect();
    preflight_images(&environment, &images, output).await?;
    let audit = support::open_audit(global, &environment, output).await?;
    let deploy_lock =
        support::take_lock(&client, &environment, "deploy", audit.as_ref(), output).await?;

    let context = Context {
        client: &client,
        environment: &environment,
        settings: &settings,
        helm: &helm,
        audit: audit.as_ref(),
        output,
    };
    let result = execute(context, &plan, &previous).await;
    let released = deploy_lock.release().await;
    let (report, status, failure) = result;
    output.data(&report).context("writing the deploy report")?;
    if let Err(error) = released {
        output.warn(format!(
            "the deploy lock was not released cleanly: {error}; it expires in {}s",
            lock::LEASE_SECONDS
        ));
    }
    match failure {
        None => Ok(status),
        Some(error) => Err(error),
    }
}

/// Runs the plan; on failure rolls back every component changed by this run, newest first.
/// What `execute` works with.
#[derive(Clone, Copy)]
struct Context<'a> {
    client: &'a kube::Client,
    environment: &'a Environment,
    settings: &'a DeploySettings,
    helm: &'a HelmTarget,
    audit: &'a dyn AuditSink,
    output: &'a Output,
}

async fn execute(
    context: Context<'_>,
    plan: &DeployPlan,
    previous: &[Option<u32>],
) -> (DeployReport, ExitStatus, Option<CommandError>) {
    let Context {
        client,
        environment,
        settings,
        helm,
        audit,
        output,
    } = context;
    let mut results: Vec<ComponentResult> = plan
        .steps
        .iter()
        .zip(previous)
        .map(|(step, previous)| ComponentResult {
            component: step.component.clone(),
            release: step.release.clone(),
            previous_revision: *previous,
            result: "not_started".to_owned(),
            rollout: None,
        })
        .collect();
    let policy = Policy::default();
    let mut failure: Option<String> = None;
    for (index, step) in plan.steps.iter().enumerate() {
        output.info(format!("deploying {} ({})", step.component, step.image));
        output.detail(format!("  {}", step.helm));
        results[index].result = "failed".to_owned();
        if let Err(error) = step.command.run().await {
            output.check(
                CheckState::Fail,
                &format!("helm upgrade {}", step.release),
                &error.to_string(),
            );
            failure = Some(format!(
                "helm upgrade of `{}` failed: {error}",
                step.release
            ));
            break;
        }
        let target = Target {
            namespace: environment.namespace.clone(),
            deployment: step.deployment.clone(),
            selector: step.selector.clone(),
        };
        let outcome = match track::track(client, &target, &policy, settings.timeout, output).await {
            Ok(outcome) => outcome,
            Err(error) => {
                failure = Some(format!(
                    "tracking the rollout of `{}` failed: {error}",
                    step.deployment
                ));
                break;
            }
        };
        support::report_outcome(output, &format!("rollout {}", step.deployment), &outcome);
        let complete = outcome.is_complete();
        let summary = support::outcome_summary(&outcome);
        results[index].rollout = Some(outcome);
        if !complete {
            failure = Some(format!(
                "the rollout of `{}` failed: {summary}",
                step.deployment
            ));
            break;
        }
        if let Some(component) = environment
            .components
            .iter()
            .find(|c| c.name == step.component)
            && let Err(problem) = verify_component(client, environment, component, output).await
        {
            failure = Some(format!(
                "`{}` rolled out but failed verification: {problem}",
                step.component
            ));
            break;
        }
        results[index].result = "deployed".to_owned();
    }

    let Some(failure) = failure else {
        for result in &results {
            support::audit(audit, output, environment, note(result, "succeeded")).await;
        }
        return (
            DeployReport {
                environment: environment.name.clone(),
                components: results,
            },
            ExitStatus::Success,
            None,
        );
    };
    if !settings.rollback {
        for result in results.iter().filter(|r| r.result != "not_started") {
            support::audit(audit, output, environment, note(result, "failed")).await;
        }
        let error =
            CommandError::verification(anyhow::anyhow!("{failure}; left in place (--no-rollback)"))
                .hint("roll back with `psctl rollback <component>` once you have looked");
        return (
            DeployReport {
                environment: environment.name.clone(),
                components: results,
            },
            ExitStatus::VerificationFailed,
            Some(error),
        );
    }

    let mut rollback_problems = Vec::new();
    for index in (0..results.len()).rev() {
        if results[index].result == "not_started" {
            continue;
        }
        let step = &plan.steps[index];
        let (command, undone) = match results[index].previous_revision {
            Some(revision) => (helm.rollback(&step.release, revision), "rolled_back"),
            None => (helm.uninstall(&step.release), "uninstalled"),
        };
        output.info(format!(
            "rolling back {}: {}",
            step.component,
            command.display()
        ));
        match rollback_one(
            client,
            environment,
            step,
            &command,
            results[index].previous_revision.is_some(),
            settings.timeout,
            output,
        )
        .await
        {
            Ok(()) => results[index].result = undone.to_owned(),
            Err(problem) => {
                results[index].result = "rollback_failed".to_owned();
                rollback_problems.push(format!("{}: {problem}", step.component));
            }
        }
        support::audit(
            audit,
            output,
            environment,
            note(&results[index], &results[index].result.clone()),
        )
        .await;
    }
    let report = DeployReport {
        environment: environment.name.clone(),
        components: results,
    };
    if rollback_problems.is_empty() {
        let error = CommandError::verification(anyhow::anyhow!("{failure}; undone: previous revisions restored, failed first installs uninstalled"))
            .hint("`psctl history <component>` shows the failed revision; fix the image or values and deploy again");
        (report, ExitStatus::VerificationFailed, Some(error))
    } else {
        let mut error = CommandError::new(
            ExitStatus::RollbackFailed,
            anyhow::anyhow!("{failure}; THE AUTOMATIC ROLLBACK FAILED: {}", rollback_problems.join("; ")),
        )
        .hint("a human must act now: check `psctl status` and `psctl history <component>`")
        .hint("retry with `psctl rollback <component> --to-rev <N>`, or stop traffic with `psctl kill-switch on`");
        for result in report
            .components
            .iter()
            .filter(|r| r.result == "rollback_failed")
        {
            if let Some(revision) = result.previous_revision {
                error = error.hint(format!(
                    "`psctl rollback {} --to-rev {revision}` restores what ran before",
                    result.component
                ));
            }
        }
        (report, ExitStatus::RollbackFailed, Some(error))
    }
}

async fn rollback_one(
    client: &kube::Client,
    environment: &Environment,
    step: &PlanStep,
    command: &HelmCommand,
    track_it: bool,
    timeout: Duration,
    output: &Output,
) -> Result<(), String> {
    command.run().await.map_err(|e| e.to_string())?;
    if !track_it {
        output.check(
            CheckState::Ok,
            &format!("uninstall {}", step.release),
            "the failed first install was removed",
        );
        return Ok(());
    }
    let target = Target {
        namespace: environment.namespace.clone(),
        deployment: step.deployment.clone(),
        selector: step.selector.clone(),
    };
    let outcome = track::track(client, &target, &Policy::default(), timeout, output)
        .await
        .map_err(|e| e.to_string())?;
    support::report_outcome(output, &format!("rollback {}", step.deployment), &outcome);
    if outcome.is_complete() {
        Ok(())
    } else {
        Err(support::outcome_summary(&outcome))
    }
}

fn note(result: &ComponentResult, outcome: &str) -> AuditNote {
    AuditNote {
        action: "deploy".to_owned(),
        target: result.release.clone(),
        from_state: result
            .previous_revision
            .map_or_else(|| "absent".to_owned(), |r| format!("revision {r}")),
        to_state: result.result.clone(),
        outcome: outcome.to_owned(),
        details: serde_json::json!({ "component": result.component }),
    }
}

/// Moved to the smoke suite; kept here for existing callers.
pub use crate::smoke::metrics::missing_metrics;

/// How long post-rollout smoke checks keep retrying while the new pods settle.
pub const POST_DEPLOY_SMOKE_WAIT: Duration = Duration::from_secs(30);

/// Post-rollout verification: the smoke suite's `cluster` and `metrics` categories for the
/// component (pods Ready and not restarting, the metrics endpoint valid with every required
/// name, the poller's freshness). Failing checks are retried for [`POST_DEPLOY_SMOKE_WAIT`]; a
/// failure that remains is a failed rollout (the caller rolls back). The functional check is
/// not part of a deploy: run `psctl smoke` afterwards (see docs/smoke.md).
pub async fn verify_component(
    client: &kube::Client,
    environment: &Environment,
    component: &Component,
    output: &Output,
) -> Result<(), String> {
    let selection = Selection {
        categories: vec![SmokeCategory::Cluster, SmokeCategory::Metrics],
        components: vec![component.name.clone()],
        pod_selector: None,
        explicit: false,
    };
    let settings = SmokeSettings {
        wait: POST_DEPLOY_SMOKE_WAIT,
        ..SmokeSettings::default()
    };
    let context = SmokeContext::new(environment.clone(), client.clone(), None, None, settings);
    let report = smoke::run(&context, &selection)
        .await
        .map_err(|error| error.to_string())?;
    for check in &report.checks {
        let state = match check.result {
            Verdict::Pass => CheckState::Ok,
            Verdict::Fail => CheckState::Fail,
            Verdict::Skipped => CheckState::Skip,
        };
        output.check(state, &format!("smoke {}", check.name), &check.evidence);
    }
    if report.passed() {
        Ok(())
    } else {
        Err(format!(
            "post-deploy smoke failed: {}",
            report
                .failures()
                .map(|c| format!("{}: {}", c.name, c.evidence))
                .collect::<Vec<_>>()
                .join("; ")
        ))
    }
}

async fn preflight_cluster(
    environment: &Environment,
    output: &Output,
) -> Result<kube::Client, CommandError> {
    let client = match cluster::connect(environment).await {
        Ok(client) => client,
        Err(error) => {
            output.check(CheckState::Fail, "cluster", &error.to_string());
            return Err(error.into());
        }
    };
    match client.apiserver_version().await {
        Ok(version) => output.check(
            CheckState::Ok,
            "cluster reachable",
            &format!(
                "context {} (Kubernetes {}.{})",
                environment.kube_context, version.major, version.minor
            ),
        ),
        Err(error) => {
            let error = ClusterError::api(format!(
                "reaching the API server of context `{}`",
                environment.kube_context
            ))(error);
            output.check(CheckState::Fail, "cluster reachable", &error.to_string());
            return Err(error.into());
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.get(&environment.namespace).await {
        Ok(_) => output.check(CheckState::Ok, "namespace", &environment.namespace),
        Err(error) if is_not_found(&error) => {
            output.check(
                CheckState::Fail,
                "namespace",
                &format!("`{}` does not exist", environment.namespace),
            );
            return Err(CommandError::usage(anyhow::anyhow!(
                "namespace `{}` does not exist",
                environment.namespace
            ))
            .hint(format!(
                "create it with `kubectl create namespace {}`",
                environment.namespace
            )));
        }
        Err(error) => {
            let error =
                ClusterError::api(format!("reading namespace `{}`", environment.namespace))(error);
            output.check(CheckState::Fail, "cluster authorised", &error.to_string());
            return Err(error.into());
        }
    }
    preflight_permissions(&client, environment, output).await?;
    Ok(client)
}

/// Every permission `psctl rbac` lists for the environment, asked of the API server
/// (SelfSubjectAccessReview) before anything changes: a missing one is a configuration error
/// naming each verb and resource, not a 403 halfway through a deploy.
async fn preflight_permissions(
    client: &kube::Client,
    environment: &Environment,
    output: &Output,
) -> Result<(), CommandError> {
    let rules = crate::rbac::environment_rules(environment)?;
    let wanted = crate::rbac::accesses(&rules);
    let missing = match cluster::access::missing(client, &environment.namespace, &wanted).await {
        Ok(missing) => missing,
        Err(error) => {
            output.check(CheckState::Fail, "permissions", &error.to_string());
            return Err(error.into());
        }
    };
    if missing.is_empty() {
        output.check(
            CheckState::Ok,
            "permissions",
            &format!("{} checked", wanted.len()),
        );
        return Ok(());
    }
    output.check(
        CheckState::Fail,
        "permissions",
        &format!("{} of {} missing", missing.len(), wanted.len()),
    );
    Err(CommandError::usage(anyhow::anyhow!(
        "{}",
        crate::rbac::refusal(&environment.namespace, &missing)
    ))
    .hint(format!(
        "a namespace admin can grant them: `psctl rbac --env {} --subject <this identity> | kubectl apply -f -` (see docs/rbac.md)",
        environment.name
    )))
}

/// The runtime Secret exists and carries every required key. Values are registered with the
/// redactor the moment they are read and never printed; only key names are reported.
async fn preflight_secret(
    client: &kube::Client,
    environment: &Environment,
    output: &Output,
) -> Result<(), CommandError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &environment.namespace);
    let name = &environment.secret.name;
    let secret = match secrets.get(name).await {
        Ok(secret) => secret,
        Err(error) if is_not_found(&error) => {
            output.check(
                CheckState::Fail,
                "runtime secret",
                &format!("`{name}` does not exist"),
            );
            return Err(CommandError::usage(anyhow::anyhow!("the runtime Secret `{name}` does not exist in `{}`", environment.namespace))
                .hint("create it with `psctl secrets` or `kubectl create secret generic` (never put values on a command line you log)"));
        }
        Err(error) => {
            return Err(ClusterError::api(format!("reading Secret `{name}`"))(error).into());
        }
    };
    let mut keys: Vec<String> = Vec::new();
    for (key, value) in secret.data.iter().flatten() {
        output.redactor().register_bytes(&value.0);
        keys.push(key.clone());
    }
    for (key, value) in secret.string_data.iter().flatten() {
        output.redactor().register(value);
        keys.push(key.clone());
    }
    let missing = missing_keys(&keys, &environment.secret.required_keys);
    if missing.is_empty() {
        output.check(
            CheckState::Ok,
            "runtime secret",
            &format!(
                "`{name}` has all {} required keys",
                environment.secret.required_keys.len()
            ),
        );
        Ok(())
    } else {
        output.check(
            CheckState::Fail,
            "runtime secret",
            &format!("`{name}` lacks {}", missing.join(", ")),
        );
        Err(CommandError::usage(anyhow::anyhow!("the runtime Secret `{name}` lacks required keys: {}", missing.join(", ")))
            .hint("add the missing keys to the Secret; the pods would fail with CreateContainerConfigError"))
    }
}

/// Puts the runtime Secret's keyed fingerprint on every pod template, so that a Secret changed
/// by `psctl secrets apply` rolls the pods on the next deploy (Helm sees a new pod template).
async fn with_secret_fingerprint(
    mut plan: DeployPlan,
    client: &kube::Client,
    environment: &Environment,
    output: &Output,
) -> Result<DeployPlan, CommandError> {
    match super::secrets::current_fingerprint(client, environment).await? {
        Some(fingerprint) => {
            output.check(
                CheckState::Ok,
                "secret fingerprint",
                &format!("{fingerprint} on the pod template (pods roll when it changes)"),
            );
            for step in &mut plan.steps {
                step.command.add_values(fingerprint_values(&fingerprint));
                step.helm = step.command.display();
                step.values = step.command.values_file();
            }
        }
        None => output.check(
            CheckState::Skip,
            "secret fingerprint",
            "no psctl fingerprint key in the namespace yet (`psctl secrets apply` makes it): a changed Secret does not roll the pods",
        ),
    }
    Ok(plan)
}

/// The chart values setting the pod-template annotation `psctl.io/secret-fingerprint` (a keyed
/// fingerprint, safe to show).
pub fn fingerprint_values(fingerprint: &str) -> Values {
    let mut values = Values::new();
    helm::driver::set(
        &mut values,
        &["podAnnotations", crate::secrets::POD_FINGERPRINT_ANNOTATION],
        fingerprint.into(),
    );
    values
}

/// Required key names missing from `present`. Pure.
pub fn missing_keys(present: &[String], required: &[String]) -> Vec<String> {
    crate::secrets::missing_required(present, required)
}

/// Every image to deploy exists in the registry (registry HTTP API v2, manifest HEAD).
async fn preflight_images(
    environment: &Environment,
    images: &[(&Component, &str)],
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
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| {
            CommandError::usage(anyhow::Error::new(e).context("building the HTTP client"))
        })?;
    for (component, tag) in images {
        let tag = *tag;
        let url = manifest_url(registry, &component.image, tag);
        let reference = format!("{registry}/{}:{tag}", component.image);
        let response = http
            .head(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => {
                output.check(CheckState::Ok, "image tag", &format!("{reference} exists"));
            }
            Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => {
                output.check(
                    CheckState::Fail,
                    "image tag",
                    &format!("{reference} is not in the registry: pods would fail with ErrImagePull / ImagePullBackOff"),
                );
                return Err(CommandError::verification(anyhow::anyhow!(
                    "image {reference} does not exist (deploying it would end in ErrImagePull/ImagePullBackOff); nothing was changed"
                ))
                .hint(format!("build and push it first (`psctl build`), or pick an existing tag; list tags at {}", tags_url(registry, &component.image))));
            }
            Ok(response) if matches!(response.status().as_u16(), 401 | 403) => {
                output.check(CheckState::Warn, "image tag", &format!("{reference}: the registry needs credentials psctl does not have; not verified"));
            }
            Ok(response) => {
                output.check(
                    CheckState::Fail,
                    "image tag",
                    &format!("{reference}: registry answered {}", response.status()),
                );
                return Err(CommandError::unreachable(anyhow::anyhow!(
                    "registry {registry} answered {} for {reference}",
                    response.status()
                )));
            }
            Err(error) => {
                output.check(
                    CheckState::Fail,
                    "image tag",
                    &format!("registry {registry} unreachable"),
                );
                return Err(CommandError::unreachable(
                    anyhow::Error::new(error)
                        .context(format!("checking {reference} in registry {registry}")),
                )
                .hint("is the registry up? for the sandbox: `psctl-sandbox up`"));
            }
        }
    }
    Ok(())
}

/// No selected release may be `pending-*`; returns each component's deployed revision (the
/// rollback target), `None` for a first install.
fn preflight_releases(
    components: &[&Component],
    history: &[Revision],
    output: &Output,
) -> Result<Vec<Option<u32>>, CommandError> {
    let mut previous = Vec::new();
    for component in components {
        let own: Vec<Revision> = history
            .iter()
            .filter(|r| r.release == component.release)
            .cloned()
            .collect();
        if let Some(current) = revision::current(&own)
            && current.status.is_pending()
        {
            output.check(
                CheckState::Fail,
                "release state",
                &format!(
                    "`{}` is stuck in {} (revision {})",
                    component.release, current.status, current.revision
                ),
            );
            return Err(CommandError::usage(anyhow::anyhow!(
                "release `{}` is stuck in {} at revision {}; a previous operation never finished",
                component.release,
                current.status,
                current.revision
            ))
            .hint(format!(
                "recover it with `psctl rollback {} --unstick` (shows the plan first)",
                component.name
            )));
        }
        let deployed = revision::deployed(&own).map(|r| r.revision);
        output.check(
            CheckState::Ok,
            "release state",
            &match deployed {
                Some(revision) => format!(
                    "`{}` at revision {revision} (rollback target)",
                    component.release
                ),
                None => format!("`{}` not installed yet (first install)", component.release),
            },
        );
        previous.push(deployed);
    }
    Ok(previous)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::revision::tests::rev;
    use crate::helm::storage::ReleaseStatus;
    use crate::output::Format;
    use std::path::{Path, PathBuf};

    fn environment() -> Environment {
        let text = "environments:\n  sandbox:\n    kube_context: psctl-sandbox\n    registry: 127.0.0.1:5000\n";
        crate::settings::file::parse(Path::new("psctl.yaml"), text)
            .unwrap()
            .environments["sandbox"]
            .clone()
    }

    fn helm() -> HelmTarget {
        HelmTarget {
            program: PathBuf::from("helm"),
            namespace: "default".into(),
            kube_context: "psctl-sandbox".into(),
            kubeconfig: None,
        }
    }

    fn settings(components: &[&str], tag: Option<&str>) -> DeploySettings {
        DeploySettings {
            components: components.iter().map(|c| (*c).to_owned()).collect(),
            tag: tag.map(str::to_owned),
            timeout: Duration::from_secs(300),
            rollback: true,
        }
    }

    #[test]
    fn the_plan_deploys_components_in_configuration_order_with_the_tag() {
        let plan = plan(
            &environment(),
            &settings(&[], Some("1.4.2")),
            &helm(),
            Path::new("psctl.yaml"),
            &BTreeMap::new(),
        )
        .unwrap();
        let names: Vec<_> = plan.steps.iter().map(|s| s.release.as_str()).collect();
        assert_eq!(names, ["problemsolver-poller", "problemsolver-webhook"]);
        assert_eq!(
            plan.steps[1].image,
            "127.0.0.1:5000/problemsolver-webhook-worker:1.4.2"
        );
        assert!(
            plan.steps[1].helm.ends_with("--values <values-file>"),
            "{}",
            plan.steps[1].helm
        );
        let values: serde_json::Value =
            serde_json::from_str(plan.steps[1].values.as_deref().unwrap()).unwrap();
        assert_eq!(
            values["image"],
            serde_json::json!({"repository": "127.0.0.1:5000/problemsolver-webhook-worker", "tag": "1.4.2"})
        );
    }

    #[test]
    fn an_unknown_component_is_a_usage_error() {
        let error = plan(
            &environment(),
            &settings(&["api"], None),
            &helm(),
            Path::new("psctl.yaml"),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert_eq!(error.status(), ExitStatus::Usage);
    }

    #[test]
    fn the_dry_run_plan_renders_as_json_without_internal_fields() {
        let plan = plan(
            &environment(),
            &settings(&["webhook"], Some("x")),
            &helm(),
            Path::new("psctl.yaml"),
            &BTreeMap::new(),
        )
        .unwrap();
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["steps"][0]["component"], "webhook");
        assert!(json["steps"][0].get("command").is_none());
    }

    #[test]
    fn a_pending_release_blocks_the_deploy_with_the_unstick_hint() {
        let environment = environment();
        let components = environment.select(&["poller".to_owned()]).unwrap();
        let mut history = vec![
            rev(1, ReleaseStatus::Superseded),
            rev(2, ReleaseStatus::PendingUpgrade),
        ];
        for revision in &mut history {
            revision.release = "problemsolver-poller".into();
        }
        let (output, _, _) = Output::buffered(Format::Table, Style::PLAIN);
        let error = preflight_releases(&components, &history, &output).unwrap_err();
        assert!(error.hints()[0].contains("psctl rollback poller --unstick"));
        history.pop();
        history[0].status = ReleaseStatus::Deployed;
        assert_eq!(
            preflight_releases(&components, &history, &output).unwrap(),
            [Some(1)]
        );
        assert_eq!(
            preflight_releases(&components, &[], &output).unwrap(),
            [None]
        );
    }

    #[test]
    fn the_secret_fingerprint_is_a_pod_annotation_in_the_values_file() {
        let mut plan = plan(
            &environment(),
            &settings(&["poller"], Some("1.4.2")),
            &helm(),
            Path::new("psctl.yaml"),
            &BTreeMap::new(),
        )
        .unwrap();
        plan.steps[0]
            .command
            .add_values(fingerprint_values("00112233aabbccdd"));
        let values = plan.steps[0].command.values.clone().unwrap();
        assert_eq!(
            values["podAnnotations"],
            serde_json::json!({"psctl.io/secret-fingerprint": "00112233aabbccdd"})
        );
        assert_eq!(values["image"]["tag"], "1.4.2");
        assert!(
            !plan.steps[0]
                .command
                .args
                .iter()
                .any(|a| a.starts_with("--set"))
        );
    }

    #[test]
    fn the_dry_run_table_shows_each_values_file() {
        let plan = plan(
            &environment(),
            &settings(&["webhook"], Some("1.4.2")),
            &helm(),
            Path::new("psctl.yaml"),
            &BTreeMap::new(),
        )
        .unwrap();
        let text = plan.render_table(&Style::PLAIN);
        assert!(text.contains("webhook values file:\n  {\n"), "{text}");
        assert!(text.contains(r#"    "tag": "1.4.2""#), "{text}");
    }

    #[test]
    fn without_a_tag_each_release_keeps_the_tag_it_runs() {
        let environment = environment();
        let components = environment.select(&[]).unwrap();
        let mut history = vec![
            rev(3, ReleaseStatus::Deployed),
            rev(4, ReleaseStatus::Failed),
            rev(7, ReleaseStatus::Deployed),
        ];
        history[0].release = "problemsolver-poller".into();
        history[0].image_tag = "1.4.1".into();
        history[1].release = "problemsolver-poller".into();
        history[1].image_tag = "1.4.2".into();
        history[2].release = "problemsolver-webhook".into();
        history[2].image_tag = "0123456789ab".into();
        let kept = kept_tags(&components, &history).unwrap();
        assert_eq!(
            kept["poller"],
            ("1.4.1".to_owned(), 3),
            "the deployed revision, not the failed one"
        );
        assert_eq!(kept["webhook"], ("0123456789ab".to_owned(), 7));

        let tags = kept.into_iter().map(|(c, (t, _))| (c, t)).collect();
        let plan = plan(
            &environment,
            &settings(&[], None),
            &helm(),
            Path::new("psctl.yaml"),
            &tags,
        )
        .unwrap();
        assert_eq!(
            plan.steps[0].image,
            "127.0.0.1:5000/problemsolver-poller:1.4.1"
        );
        assert_eq!(
            plan.steps[0].command.values.as_ref().unwrap()["image"]["tag"],
            "1.4.1"
        );
        assert_eq!(
            plan.steps[1].command.values.as_ref().unwrap()["image"]["tag"],
            "0123456789ab"
        );
    }

    #[test]
    fn without_a_tag_a_first_install_or_an_unreadable_tag_is_refused() {
        let environment = environment();
        let components = environment.select(&["webhook".to_owned()]).unwrap();
        let error = kept_tags(&components, &[]).unwrap_err();
        assert_eq!(error.status(), ExitStatus::Usage);
        assert!(format!("{:#}", error.error()).contains("a first install needs the image tag"));
        assert!(error.hints()[0].contains("--tag"));

        let mut digest = rev(2, ReleaseStatus::Deployed);
        digest.release = "problemsolver-webhook".into();
        digest.image_tag = "sha256:abc".into();
        let error = kept_tags(&components, &[digest]).unwrap_err();
        assert_eq!(error.status(), ExitStatus::Usage);
    }

    #[test]
    fn a_dry_run_without_a_tag_says_the_running_tag_is_kept() {
        let plan = plan(
            &environment(),
            &settings(&["poller"], None),
            &helm(),
            Path::new("psctl.yaml"),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            plan.steps[0].image,
            format!("127.0.0.1:5000/problemsolver-poller:{KEPT_TAG}")
        );
        let values = plan.steps[0].command.values.as_ref().unwrap();
        assert!(values["image"].get("tag").is_none(), "{values:?}");
    }

    #[test]
    fn missing_secret_keys_are_listed_by_name() {
        let present = ["DATABASE_URL".to_owned(), "BINANCE_API_KEY".to_owned()];
        let required = environment().secret.required_keys;
        assert_eq!(
            missing_keys(&present, &required),
            ["BINANCE_API_SECRET", "WEBHOOK_SECRET"]
        );
    }
}
