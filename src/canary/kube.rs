//! The canary's cluster edge: [`KubeBackend`] carries out the runner's decisions against the
//! Kubernetes API, Helm and Prometheus (render and apply the canary Deployment, scale the
//! tracks, watch the rollouts, run the smoke checks, promote through Helm, undo), and the run's
//! state is kept in its ConfigMap through `crate::state`. The decisions themselves stay in
//! `runner` and `gate`; this file only does what they ask.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use crate::canary::gate::Observation;
use crate::canary::plan::{
    FIELD_MANAGER, TAG_ANNOTATION, canary_object, merge_values, repository, template_command,
};
use crate::canary::queries::{self, CANARY_TRACK, STABLE_TRACK, Scope};
use crate::canary::runner::{Backend, Observed, PromotionError};
use crate::canary::state::{self, CanaryRun, OperatorRequest, RunStatus, Split};
use crate::cluster::image::{self, AppImage};
use crate::cluster::{self, ClusterError, is_not_found, ownership};
use crate::error::{CommandError, ExitStatus};
use crate::helm::driver::{HelmTarget, UpgradeSpec};
use crate::helm::{revision, storage};
use crate::lock::{self, LeaseGuard};
use crate::output::{CheckState, Output};
use crate::prom::Prometheus;
use crate::rollout::report::{outcome_summary, report_outcome};
use crate::rollout::track::{self, Target};
use crate::settings::{CanarySpec, Component, Environment};
use crate::smoke::{self, Category as SmokeCategory, Selection, SmokeContext, SmokeSettings};
use crate::state::{ConfigMapStore, StoreError};

/// How long the per-step smoke checks keep retrying while new canary pods settle.
pub const SMOKE_WAIT: Duration = Duration::from_secs(30);

/// What the backend works with.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub client: &'a kube::Client,
    pub environment: &'a Environment,
    pub component: &'a Component,
    pub spec: &'a CanarySpec,
    pub helm: &'a HelmTarget,
    pub chart: &'a Path,
    pub prometheus: &'a Prometheus,
    pub output: &'a Output,
    pub timeout: Duration,
}

/// The run's ConfigMap `psctl-canary-<component>`; documents of another format version are
/// refused, not misread.
pub fn store(client: &kube::Client, namespace: &str, component: &str) -> ConfigMapStore<CanaryRun> {
    ConfigMapStore::new(client, namespace, state::config_map_name(component))
        .label(state::COMPONENT_LABEL, component)
        .decoder(|text| CanaryRun::from_json(text).map_err(|e| e.to_string()))
}

/// Writes `run`; returns a request another psctl stored meanwhile (consumed), unless `run`
/// carries one of its own.
pub async fn save_run(
    store: &ConfigMapStore<CanaryRun>,
    run: &CanaryRun,
) -> Result<Option<OperatorRequest>, StoreError> {
    store
        .replace_with(run, |stored| match (&run.request, stored) {
            (None, Some(stored)) => stored.request,
            _ => None,
        })
        .await
}

/// Stores an operator request for the live driver.
pub async fn store_request(
    store: &ConfigMapStore<CanaryRun>,
    request: &OperatorRequest,
) -> Result<(), StoreError> {
    store
        .modify(|run| run.request = Some(request.clone()))
        .await
}

/// The stable Deployment's replica count; `None` when it does not exist.
pub async fn stable_replicas(
    client: &kube::Client,
    namespace: &str,
    deployment: &str,
) -> Result<Option<i32>, ClusterError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let found = deployments
        .get_opt(deployment)
        .await
        .map_err(ClusterError::api(format!(
            "reading Deployment `{deployment}`"
        )))?;
    Ok(found.map(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
}

/// The revision of `release` Helm records as deployed.
pub async fn deployed_revision(
    client: &kube::Client,
    namespace: &str,
    release: &str,
) -> Result<Option<u32>, CommandError> {
    let history = storage::read_revisions(client, namespace, &[release.to_owned()]).await?;
    Ok(revision::deployed(&history).map(|r| r.revision))
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The stable Deployment's replicas: it must exist and serve traffic to compare with.
pub async fn preflight_stable_replicas(
    client: &kube::Client,
    environment: &Environment,
    component: &Component,
    output: &Output,
) -> Result<i32, CommandError> {
    let Some(replicas) =
        stable_replicas(client, &environment.namespace, &component.deployment).await?
    else {
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
    };
    if replicas < 1 {
        return Err(CommandError::usage(anyhow::anyhow!(
            "the stable Deployment `{}` has 0 replicas (kill switch on?); there is no traffic to compare with",
            component.deployment
        ))
        .hint("restore it first, e.g. `psctl kill-switch off`"));
    }
    output.check(
        CheckState::Ok,
        "stable track",
        &format!("`{}` has {replicas} replica(s)", component.deployment),
    );
    Ok(replicas)
}

/// The stable release's deployed revision: what an abort after a promotion returns to.
pub async fn preflight_stable_revision(
    client: &kube::Client,
    environment: &Environment,
    component: &Component,
    output: &Output,
) -> Result<u32, CommandError> {
    let Some(revision) =
        deployed_revision(client, &environment.namespace, &component.release).await?
    else {
        return Err(CommandError::usage(anyhow::anyhow!(
            "release `{}` has no deployed revision; a canary promotes over a deployed stable release",
            component.release
        ))
        .hint(format!("deploy it first: `psctl deploy --component {}`", component.name)));
    };
    output.check(
        CheckState::Ok,
        "stable release",
        &format!("`{}` at revision {revision}", component.release),
    );
    Ok(revision)
}

/// Prometheus answers a query: the gates cannot judge without it.
pub async fn preflight_prometheus(
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

/// The holder of the deploy Lease when it is the run's own driver and not known dead (a driver
/// on this host whose process is gone is not driving anything).
pub async fn live_driver(
    client: &kube::Client,
    namespace: &str,
    run: &CanaryRun,
) -> Option<String> {
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

/// The runner's [`Backend`] over the cluster.
pub struct KubeBackend<'a> {
    context: Context<'a>,
    deployments: Api<Deployment>,
    pods: Api<Pod>,
    store: ConfigMapStore<CanaryRun>,
    scope: Result<Scope, String>,
    /// The deploy Lease's fencing token: no write once it is lost.
    lease: LeaseGuard,
}

impl<'a> KubeBackend<'a> {
    pub fn new(context: Context<'a>, lease: LeaseGuard) -> Self {
        let namespace = &context.environment.namespace;
        Self {
            lease,
            deployments: Api::namespaced(context.client.clone(), namespace),
            pods: Api::namespaced(context.client.clone(), namespace),
            store: store(context.client, namespace, &context.component.name),
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
        self.lease.check().map_err(|e| e.to_string())?;
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        self.deployments
            .patch_scale(
                deployment,
                &ownership::patch_params(FIELD_MANAGER),
                &Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "scaling `{deployment}` to {replicas}: {}",
                    cluster::describe(&e)
                )
            })
    }

    /// Gives the stable Deployment's replicas back to Helm (see `cluster::ownership`): before
    /// Helm applies the release again, and once stable holds its final count.
    async fn hand_back_stable(&self, run: &CanaryRun) -> Result<(), String> {
        ownership::hand_back(&self.deployments, &run.stable_deployment, &[FIELD_MANAGER])
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "handing the replicas of `{}` back to Helm: {}",
                    run.stable_deployment,
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
        let tracked = track::track(
            self.context.client,
            &target,
            self.context.timeout,
            self.context.output,
        );
        let outcome = tokio::select! {
            outcome = tracked => outcome.map_err(|e| e.to_string())?,
            lost = self.lease.lost() => return Err(lost.to_string()),
        };
        report_outcome(
            self.context.output,
            &format!("rollout {deployment}"),
            &outcome,
        );
        if outcome.is_complete() {
            Ok(())
        } else {
            Err(format!("`{deployment}`: {}", outcome_summary(&outcome)))
        }
    }

    fn values(&self, run: &CanaryRun) -> crate::yaml::Mapping {
        let extra: crate::yaml::Mapping =
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

    /// The manifest digest `tag` points at in the environment's registry, for pods pinned by
    /// digest; `None` without a registry or when it cannot say.
    async fn tag_digest(&self, tag: &str) -> Option<String> {
        let registry = self.context.environment.registry.as_deref()?;
        let registry = crate::registry::Registry::new(registry).ok()?;
        match registry.manifest(&self.context.component.image, tag).await {
            Ok(manifest) => manifest.map(|m| m.digest),
            Err(error) => {
                tracing::debug!(%error, "cannot resolve the tag's digest");
                None
            }
        }
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
        deployed_revision(
            self.context.client,
            &self.context.environment.namespace,
            release,
        )
        .await
        .map_err(|e| format!("{:#}", e.error()))
    }

    async fn query(&self, promql: &str) -> Result<BTreeMap<String, Option<f64>>, String> {
        self.context
            .prometheus
            .query(promql)
            .await
            .map(|samples| queries::by_track(&samples))
            .map_err(|e| e.to_string())
    }

    fn upgrade_command(&self, run: &CanaryRun) -> Result<crate::helm::driver::HelmCommand, String> {
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
        Ok(command)
    }

    /// The promotion from Helm on: stable upgraded and rolled out at its recorded count, then
    /// the canary track removed.
    async fn promote_with(
        &self,
        run: &CanaryRun,
        command: crate::helm::driver::HelmCommand,
    ) -> Result<String, String> {
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
            self.hand_back_stable(run).await?;
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
}

/// How often the canary pods are looked at during a bake.
const POD_WATCH_PERIOD: Duration = Duration::from_secs(2);

impl KubeBackend<'_> {
    /// The first failing canary pod, explained; `None` when none fails or the pods cannot be
    /// listed (an API hiccup is not the canary's fault: the next look decides).
    async fn canary_pod_failure(&self) -> Option<String> {
        let pods = self
            .pods
            .list(&ListParams::default().labels(&self.track_selector(CANARY_TRACK)))
            .await
            .ok()?;
        pods.items
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            // An evicted pod is replaced by its ReplicaSet; the node's trouble is not the
            // canary's.
            .filter(|pod| !crate::rollout::diagnosis::has_ended(pod))
            .find_map(crate::rollout::diagnosis::pod_failure)
            .map(|diagnosis| diagnosis.to_string())
    }
}

impl Backend for KubeBackend<'_> {
    fn now(&self) -> i64 {
        unix_now()
    }

    async fn sleep(&self, duration: Duration) {
        // A lost Lease ends the wait at once: the runner stops at its next check.
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            _ = self.lease.lost() => {}
        }
    }

    fn fenced(&self) -> Option<String> {
        self.lease.check().err().map(|error| error.to_string())
    }

    async fn bake_wait(&self, _run: &CanaryRun, duration: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            if let Some(problem) = self.canary_pod_failure().await {
                return Some(problem);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            // A lost Lease ends the wait at once: the runner stops at its next check.
            tokio::select! {
                () = tokio::time::sleep((deadline - now).min(POD_WATCH_PERIOD)) => {}
                _ = self.lease.lost() => return None,
            }
        }
    }

    async fn set_weights(&self, run: &CanaryRun, split: Split) -> Result<String, String> {
        self.lease.check().map_err(|e| e.to_string())?;
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
        // Pods that ended (evicted, completed) no longer run anything: the ReplicaSet replaces them.
        let live: Vec<&Pod> = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| !crate::rollout::diagnosis::has_ended(p))
            .collect();
        if live.is_empty() {
            return Err("no canary pod is running".to_owned());
        }
        // Only the application's containers are compared: admission may add sidecars.
        let repository = repository(self.context.environment, self.context.component);
        let app = match &repository {
            Some(repository) => AppImage::Repository(repository),
            None => AppImage::Named(&self.context.component.image),
        };
        let pinned = live.iter().any(|p| {
            p.spec
                .as_ref()
                .is_some_and(|s| image::app_digest_only(s, app))
        });
        let tag_digest = if pinned {
            self.tag_digest(&run.tag).await
        } else {
            None
        };
        for pod in &live {
            let checked = pod.spec.as_ref().map_or_else(
                || Err("it has no spec".to_owned()),
                |spec| image::check_app_tag(spec, app, &run.tag, tag_digest.as_deref()),
            );
            if let Err(why) = checked {
                let name = pod.metadata.name.clone().unwrap_or_default();
                return Err(format!(
                    "canary pod `{name}` does not run tag {}: {why}",
                    run.tag
                ));
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
        report.print_checks(self.context.output);
        if report.passed() {
            Ok(format!(
                "{} canary pod(s) on {}; smoke {}",
                live.len(),
                run.tag,
                report.summary_line()
            ))
        } else {
            Err(report.failure_summary())
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
        save_run(&self.store, run).await.map_err(|e| e.to_string())
    }

    async fn promote(&self, run: &CanaryRun) -> Result<String, PromotionError> {
        // Nothing changes before Helm runs: a refusal up to there leaves the run as it was.
        let command = self
            .upgrade_command(run)
            .map_err(PromotionError::NotStarted)?;
        self.hand_back_stable(run)
            .await
            .map_err(PromotionError::NotStarted)?;
        self.promote_with(run, command)
            .await
            .map_err(PromotionError::Failed)
    }

    async fn abort(&self, run: &CanaryRun) -> Result<String, String> {
        let mut done = Vec::new();
        // A promotion that reached Helm is undone first: stable back to its recorded revision.
        if let Some(recorded) = run.stable_revision {
            let current = self.deployed_revision(&run.release).await?;
            if current.is_some_and(|c| c != recorded) {
                self.hand_back_stable(run).await?;
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
        self.hand_back_stable(run).await?;
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
