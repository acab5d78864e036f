//! The deploy's plan, pure: the Helm command per component (`helm upgrade --install` with every
//! value in one values file), the tag each keeps when no `--tag` is given, the rollback target of
//! each release (its deployed revision, read under the deploy Lease), and the runtime Secret's
//! fingerprint on the pod template. What `--dry-run` prints.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::error::CommandError;
use crate::helm;
use crate::helm::driver::{HelmCommand, HelmTarget, UpgradeSpec, Values};
use crate::helm::revision;
use crate::helm::storage::Revision;
use crate::output::{CheckState, Output, Render, Style, table};
use crate::settings::{Component, Environment};

/// `deploy` arguments, resolved.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    pub components: Vec<String>,
    pub tag: Option<String>,
    pub timeout: Duration,
    /// `--hold`; `None` takes the environment's `deploy_hold`.
    pub hold: Option<Duration>,
    pub rollback: bool,
}

impl DeploySettings {
    /// How long each component's new pods are watched after its rollout is complete.
    pub fn hold(&self, environment: &Environment) -> Duration {
        self.hold.unwrap_or(environment.deploy_hold)
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
    /// How long the new pods are watched after each rollout is complete.
    pub hold_seconds: u64,
    pub rollback_on_failure: bool,
    pub steps: Vec<PlanStep>,
}

impl Render for DeployPlan {
    fn render_table(&self, _style: &Style) -> String {
        let mut text = format!(
            "deploy plan for `{}` (context {}, namespace {}, timeout {}s, hold {}s, rollback on failure: {})\n",
            self.environment,
            self.kube_context,
            self.namespace,
            self.timeout_seconds,
            self.hold_seconds,
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
        let chart = crate::helm::driver::resolve_chart(config, &component.chart);
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
        kube_context: crate::cluster::context_label(environment),
        namespace: environment.namespace.clone(),
        timeout_seconds: settings.timeout.as_secs(),
        hold_seconds: settings.hold(environment).as_secs(),
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
        let own = revision::of_release(history, &component.release);
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

/// No selected release may be `pending-*`; returns each component's deployed revision (the
/// rollback target), `None` for a first install.
pub fn preflight_releases(
    components: &[&Component],
    history: &[Revision],
    output: &Output,
) -> Result<Vec<Option<u32>>, CommandError> {
    let mut previous = Vec::new();
    for component in components {
        let own = revision::of_release(history, &component.release);
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
    use crate::error::ExitStatus;
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
            in_cluster: false,
        }
    }

    fn settings(components: &[&str], tag: Option<&str>) -> DeploySettings {
        DeploySettings {
            components: components.iter().map(|c| (*c).to_owned()).collect(),
            tag: tag.map(str::to_owned),
            timeout: Duration::from_secs(300),
            hold: None,
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
