//! The controller runtime: watch-driven kube-rs controllers for Deployments, ReplicaSets and
//! Service Endpoints, plus the garbage collector. Decisions come from the pure modules
//! (`deployment`, `replicaset`, `endpoints`, `gc`); this module only lists, patches and records.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;

use crate::deployment::{self as logic, NewRsEvent, RsCounts, SpecError, StatusInput};
use crate::endpoints::{endpoints_for, same_subsets};
use crate::events::{EventType, Recorder, object_reference};
use crate::gc::is_orphan;
use crate::replicaset as rs_logic;
use crate::selector::{map_selector_matches, selector_query};

/// Settings for [`Controllers::run`].
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// How often every object is reconciled even without a change.
    pub resync: Duration,
    /// How often the garbage collector sweeps.
    pub gc_interval: Duration,
    /// How long the Deployment and ReplicaSet controllers wait after a change before they act
    /// (then on the object as it is by then), like the work queue of a real controller
    /// manager: for that moment `status.observedGeneration` trails `metadata.generation`.
    /// Changes arriving meanwhile are handled together in the next sync. Zero reacts at once.
    pub sync_delay: Duration,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(30),
            gc_interval: Duration::from_secs(2),
            sync_delay: Duration::from_secs(1),
        }
    }
}

/// Errors a reconcile can end with; the controller logs them and retries.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The API server refused or could not be reached.
    #[error("API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The object's spec is unusable.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// The running controllers; dropping the handle stops them.
#[derive(Debug)]
pub struct ControllersHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl ControllersHandle {
    /// Stops every controller.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Whether any controller task ended (they run until stopped, so this means a failure).
    pub fn any_finished(&self) -> bool {
        self.tasks.iter().any(JoinHandle::is_finished)
    }
}

impl Drop for ControllersHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Entry point for the sandbox's controller manager.
#[derive(Debug)]
pub struct Controllers;

struct Context {
    client: Client,
    config: ControllersConfig,
    deployment_events: Recorder,
    replica_set_events: Recorder,
}

impl Controllers {
    /// Starts the Deployment, ReplicaSet and Endpoints controllers and the garbage collector
    /// against `client`'s API server, on the current Tokio runtime.
    pub fn run(client: Client, config: ControllersConfig) -> ControllersHandle {
        let context = Arc::new(Context {
            deployment_events: Recorder::new(client.clone(), "deployment-controller", None),
            replica_set_events: Recorder::new(client.clone(), "replicaset-controller", None),
            client: client.clone(),
            config: config.clone(),
        });
        let deployments: Api<Deployment> = Api::all(client.clone());
        let replica_sets: Api<ReplicaSet> = Api::all(client.clone());
        let pods: Api<Pod> = Api::all(client.clone());
        let services: Api<Service> = Api::all(client.clone());

        let deployment_task = {
            let context = context.clone();
            let replica_sets = replica_sets.clone();
            tokio::spawn(async move {
                Controller::new(deployments, watcher::Config::default())
                    .owns(replica_sets, watcher::Config::default())
                    .run(reconcile_deployment, error_policy, context)
                    .for_each(log_result("deployment"))
                    .await;
            })
        };
        let replica_set_task = {
            let context = context.clone();
            let pods = pods.clone();
            tokio::spawn(async move {
                Controller::new(replica_sets, watcher::Config::default())
                    .owns(pods, watcher::Config::default())
                    .run(reconcile_replica_set, error_policy, context)
                    .for_each(log_result("replicaset"))
                    .await;
            })
        };
        let endpoints_task = {
            let context = context.clone();
            tokio::spawn(async move {
                let controller = Controller::new(services, watcher::Config::default());
                let store = controller.store();
                controller
                    .watches(pods, watcher::Config::default(), move |pod: Pod| {
                        store
                            .state()
                            .into_iter()
                            .filter(|service| {
                                service.metadata.namespace == pod.metadata.namespace
                                    && service
                                        .spec
                                        .as_ref()
                                        .and_then(|spec| spec.selector.as_ref())
                                        .is_some_and(|selector| {
                                            map_selector_matches(
                                                selector,
                                                pod.metadata.labels.as_ref(),
                                            )
                                        })
                            })
                            .map(|service| ObjectRef::from_obj(service.as_ref()))
                            .collect::<Vec<_>>()
                    })
                    .run(reconcile_service, error_policy, context)
                    .for_each(log_result("endpoints"))
                    .await;
            })
        };
        let gc_task = tokio::spawn(garbage_collector(client, config.gc_interval));
        ControllersHandle {
            tasks: vec![deployment_task, replica_set_task, endpoints_task, gc_task],
        }
    }
}

fn log_result<K, E: std::fmt::Debug>(
    controller: &'static str,
) -> impl FnMut(Result<(ObjectRef<K>, Action), E>) -> futures::future::Ready<()>
where
    K: kube::Resource,
{
    move |result| {
        if let Err(error) = result {
            tracing::debug!(controller, ?error, "reconcile failed");
        }
        futures::future::ready(())
    }
}

fn error_policy<K>(_object: Arc<K>, error: &ControllerError, _context: Arc<Context>) -> Action {
    tracing::debug!(%error, "reconcile error, retrying");
    Action::requeue(Duration::from_secs(1))
}

fn namespace_of<K: ResourceExt>(object: &K) -> String {
    object.namespace().unwrap_or_else(|| "default".to_owned())
}

fn owner_reference(deployment: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: "Deployment".to_owned(),
        name: deployment.name_any(),
        uid: deployment.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Builds the ReplicaSet for the Deployment's current template.
fn new_replica_set(
    deployment: &Deployment,
    hash: &str,
    revision: i64,
    replicas: i32,
    max_surge: i32,
) -> ReplicaSet {
    let spec = deployment.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let mut template_meta = template.metadata.take().unwrap_or_default();
    let mut labels = template_meta.labels.take().unwrap_or_default();
    labels.insert(logic::POD_TEMPLATE_HASH.to_owned(), hash.to_owned());
    template_meta.labels = Some(labels.clone());
    template.metadata = Some(template_meta);
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(logic::POD_TEMPLATE_HASH.to_owned(), hash.to_owned());
    let mut annotations = Default::default();
    logic::copy_deployment_annotations(deployment, &mut annotations);
    annotations.insert(logic::REVISION.to_owned(), revision.to_string());
    let desired = logic::desired_replicas(deployment);
    annotations.insert(logic::DESIRED_REPLICAS.to_owned(), desired.to_string());
    annotations.insert(
        logic::MAX_REPLICAS.to_owned(),
        (desired + max_surge).to_string(),
    );
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", deployment.name_any())),
            namespace: deployment.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(deployment)]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Waits out [`ControllersConfig::sync_delay`], then reads `object` again: the sync works on
/// the object as it is after the delay (`None` when it is gone), as a work queue's worker
/// reads its informer's cache when it pops the key.
async fn after_sync_delay<K>(
    context: &Context,
    object: Arc<K>,
) -> Result<Option<Arc<K>>, ControllerError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if context.config.sync_delay.is_zero() {
        return Ok(Some(object));
    }
    tokio::time::sleep(context.config.sync_delay).await;
    let api: Api<K> = Api::namespaced(context.client.clone(), &namespace_of(object.as_ref()));
    Ok(api.get_opt(&object.name_any()).await?.map(Arc::new))
}

async fn reconcile_deployment(
    deployment: Arc<Deployment>,
    context: Arc<Context>,
) -> Result<Action, ControllerError> {
    let Some(deployment) = after_sync_delay(&context, deployment).await? else {
        return Ok(Action::await_change());
    };
    let resync = Action::requeue(context.config.resync);
    if deployment.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = namespace_of(deployment.as_ref());
    let name = deployment.name_any();
    let uid = deployment.metadata.uid.clone().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
    let deploy_api: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
    let reference = object_reference(deployment.as_ref(), None);

    let (max_surge, max_unavailable) = match logic::resolve_fenceposts(&deployment) {
        Ok(values) => values,
        Err(error) => {
            context
                .deployment_events
                .record(
                    reference,
                    EventType::Warning,
                    "InvalidSpec",
                    &error.to_string(),
                )
                .await;
            return Err(error.into());
        }
    };
    let mut owned: Vec<ReplicaSet> = rs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| {
            rs_logic::controlled_by(&rs.metadata, &uid) && rs.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let desired = logic::desired_replicas(&deployment);
    let paused = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.paused)
        .unwrap_or(false);
    let mut event = NewRsEvent::None;

    let new_name = logic::find_new_replica_set(&deployment, &owned).map(|rs| rs.name_any());
    let new_name = match new_name {
        Some(found) => {
            if deployment
                .status
                .as_ref()
                .and_then(|status| status.conditions.as_ref())
                .is_none_or(|conditions| !conditions.iter().any(|c| c.type_ == logic::PROGRESSING))
            {
                event = NewRsEvent::Found;
            }
            Some(found)
        }
        None if paused => None,
        None => {
            let collision = deployment
                .status
                .as_ref()
                .and_then(|status| status.collision_count);
            let template = &deployment.spec.clone().unwrap_or_default().template;
            let hash = logic::pod_template_hash(template, collision);
            let revision = logic::max_revision(&owned) + 1;
            let zero = RsCounts {
                name: String::new(),
                spec_replicas: 0,
                replicas: 0,
                ready: 0,
                available: 0,
            };
            let old_counts: Vec<RsCounts> = owned.iter().map(RsCounts::of).collect();
            let initial = if logic::is_recreate(&deployment) {
                if old_counts
                    .iter()
                    .any(|rs| rs.spec_replicas > 0 || rs.replicas > 0)
                {
                    0
                } else {
                    desired
                }
            } else {
                logic::rolling_step(desired, max_surge, max_unavailable, &zero, &old_counts)
                    .into_iter()
                    .find(|step| step.name.is_empty())
                    .map(|step| step.replicas)
                    .unwrap_or(0)
            };
            let rs = new_replica_set(&deployment, &hash, revision, initial, max_surge);
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(created) => {
                    event = NewRsEvent::Created;
                    if initial > 0 {
                        context
                            .deployment_events
                            .record(
                                reference.clone(),
                                EventType::Normal,
                                "ScalingReplicaSet",
                                &format!(
                                    "Scaled up replica set {} from 0 to {initial}",
                                    created.name_any()
                                ),
                            )
                            .await;
                    }
                    let name = created.name_any();
                    owned.push(created);
                    Some(name)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    // Either our own earlier create we did not see yet, or a hash collision with a
                    // different template: bump collisionCount so the next hash differs.
                    let existing = rs_api.get(&format!("{name}-{hash}")).await?;
                    let same = existing
                        .spec
                        .as_ref()
                        .and_then(|spec| spec.template.as_ref())
                        .is_some_and(|existing| {
                            logic::templates_equal_ignoring_hash(existing, template)
                        });
                    if !same {
                        let next = collision.unwrap_or(0) + 1;
                        deploy_api
                            .patch_status(
                                &name,
                                &PatchParams::default(),
                                &Patch::Merge(
                                    serde_json::json!({"status": {"collisionCount": next}}),
                                ),
                            )
                            .await?;
                    }
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                Err(error) => return Err(error.into()),
            }
        }
    };

    // Revision bookkeeping on the new ReplicaSet and the Deployment.
    if let Some(new_name) = new_name.as_deref() {
        let max_old = owned
            .iter()
            .filter(|rs| rs.name_any() != new_name)
            .map(|rs| logic::revision_of(rs.metadata.annotations.as_ref()))
            .max()
            .unwrap_or(0);
        if let Some(new_rs) = owned.iter_mut().find(|rs| rs.name_any() == new_name) {
            if let Some(annotations) =
                logic::new_replica_set_annotations(&deployment, new_rs, max_old, max_surge)
            {
                let patch = serde_json::json!({"metadata": {"annotations": annotations}});
                *new_rs = rs_api
                    .patch(new_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            let revision = logic::revision_of(new_rs.metadata.annotations.as_ref()).to_string();
            let current = deployment
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(logic::REVISION));
            if current != Some(&revision) {
                let patch =
                    serde_json::json!({"metadata": {"annotations": {logic::REVISION: revision}}});
                deploy_api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
    }

    // Scaling.
    let new_counts = new_name
        .as_deref()
        .and_then(|new_name| owned.iter().find(|rs| rs.name_any() == new_name))
        .map(RsCounts::of);
    let old_counts: Vec<RsCounts> = owned
        .iter()
        .filter(|rs| Some(rs.name_any()) != new_name)
        .map(RsCounts::of)
        .collect();
    let steps = match (&new_counts, paused) {
        (Some(new_counts), false) if logic::is_recreate(&deployment) => {
            logic::recreate_step(desired, new_counts, &old_counts)
        }
        (Some(new_counts), false) => {
            logic::rolling_step(desired, max_surge, max_unavailable, new_counts, &old_counts)
        }
        // A paused Deployment still follows scale changes when only one ReplicaSet is active.
        (Some(new_counts), true)
            if new_counts.spec_replicas != desired
                && old_counts.iter().all(|rs| rs.spec_replicas == 0) =>
        {
            vec![logic::ScaleStep {
                name: new_counts.name.clone(),
                replicas: desired,
            }]
        }
        _ => Vec::new(),
    };
    for step in &steps {
        let Some(rs) = owned.iter_mut().find(|rs| rs.name_any() == step.name) else {
            continue;
        };
        let from = RsCounts::of(rs).spec_replicas;
        if from == step.replicas {
            continue;
        }
        let patch = serde_json::json!({
            "metadata": {"annotations": {
                logic::DESIRED_REPLICAS: desired.to_string(),
                logic::MAX_REPLICAS: (desired + max_surge).to_string(),
            }},
            "spec": {"replicas": step.replicas},
        });
        *rs = rs_api
            .patch(&step.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let direction = if step.replicas > from { "up" } else { "down" };
        context
            .deployment_events
            .record(
                reference.clone(),
                EventType::Normal,
                "ScalingReplicaSet",
                &format!(
                    "Scaled {direction} replica set {} from {from} to {}",
                    step.name, step.replicas
                ),
            )
            .await;
    }

    // History cleanup once nothing old is running.
    let old_objects: Vec<ReplicaSet> = owned
        .iter()
        .filter(|rs| Some(rs.name_any()) != new_name)
        .cloned()
        .collect();
    let limit = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.revision_history_limit)
        .unwrap_or(logic::DEFAULT_REVISION_HISTORY_LIMIT);
    for prune in logic::history_to_prune(limit, &old_objects) {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        if let Err(error) = rs_api.delete(&prune, &params).await {
            tracing::debug!(%error, replica_set = prune, "could not prune old ReplicaSet");
        }
    }

    // Status.
    let all_counts: Vec<RsCounts> = owned.iter().map(RsCounts::of).collect();
    let now = Timestamp::now();
    let status = logic::compute_status(&StatusInput {
        deployment: &deployment,
        new_rs: new_counts.as_ref(),
        all: &all_counts,
        max_unavailable,
        event,
        now,
    });
    let changed = deployment
        .status
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .ok()
        .flatten()
        != serde_json::to_value(&status).ok();
    if changed {
        deploy_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": status})),
            )
            .await?;
        let timed_out = status.conditions.iter().flatten().any(|c| {
            c.type_ == logic::PROGRESSING && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        let was_timed_out = deployment
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions.iter().any(|c| {
                    c.type_ == logic::PROGRESSING
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                })
            });
        if timed_out && !was_timed_out {
            context
                .deployment_events
                .record(
                    reference,
                    EventType::Warning,
                    "ProgressDeadlineExceeded",
                    &format!("Deployment \"{name}\" has timed out progressing."),
                )
                .await;
        }
    }
    let deadline = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.progress_deadline_seconds)
        .unwrap_or(logic::DEFAULT_PROGRESS_DEADLINE_SECONDS);
    if !steps.is_empty() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    match logic::seconds_until_deadline(&status, deadline, now) {
        Some(seconds) if Duration::from_secs(seconds.unsigned_abs()) < context.config.resync => {
            Ok(Action::requeue(Duration::from_secs(seconds.unsigned_abs())))
        }
        _ => Ok(resync),
    }
}

async fn reconcile_replica_set(
    rs: Arc<ReplicaSet>,
    context: Arc<Context>,
) -> Result<Action, ControllerError> {
    let Some(rs) = after_sync_delay(&context, rs).await? else {
        return Ok(Action::await_change());
    };
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = namespace_of(rs.as_ref());
    let name = rs.name_any();
    let pod_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let rs_api: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
    let selector = rs
        .spec
        .as_ref()
        .map(|spec| selector_query(&spec.selector))
        .unwrap_or_default();
    let pods = pod_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let owned = rs_logic::owned_pods(&rs, &pods);
    let active: Vec<&Pod> = owned
        .iter()
        .copied()
        .filter(|pod| rs_logic::is_active(pod))
        .collect();
    let replicas = rs.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
    let reference = object_reference(rs.as_ref(), None);
    let mut changed = false;
    let missing = i64::from(replicas) - active.len() as i64;
    if missing > 0 {
        for _ in 0..missing.min(500) {
            // A suffix clash is possible but rare: try a few times before giving up this round.
            for _attempt in 0..3 {
                let pod = rs_logic::new_pod(&rs, &rs_logic::random_suffix());
                match pod_api.create(&PostParams::default(), &pod).await {
                    Ok(created) => {
                        context
                            .replica_set_events
                            .record(
                                reference.clone(),
                                EventType::Normal,
                                "SuccessfulCreate",
                                &format!("Created pod: {}", created.name_any()),
                            )
                            .await;
                        changed = true;
                        break;
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(error) => {
                        context
                            .replica_set_events
                            .record(
                                reference.clone(),
                                EventType::Warning,
                                "FailedCreate",
                                &format!("Error creating: {error}"),
                            )
                            .await;
                        return Err(error.into());
                    }
                }
            }
        }
    } else if missing < 0 {
        for pod_name in rs_logic::pods_to_delete(&active, replicas) {
            match pod_api.delete(&pod_name, &DeleteParams::default()).await {
                Ok(_) => {
                    context
                        .replica_set_events
                        .record(
                            reference.clone(),
                            EventType::Normal,
                            "SuccessfulDelete",
                            &format!("Deleted pod: {pod_name}"),
                        )
                        .await;
                    changed = true;
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    if changed {
        // Look again after the pod watch settles; status is written from a fresh list then.
        return Ok(Action::requeue(Duration::from_millis(300)));
    }
    let now = Timestamp::now();
    let status = rs_logic::compute_status(&rs, &owned, now);
    if rs
        .status
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .ok()
        .flatten()
        != serde_json::to_value(&status).ok()
    {
        rs_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": status})),
            )
            .await?;
    }
    match rs_logic::seconds_until_available(&rs, &owned, now) {
        Some(seconds) => Ok(Action::requeue(Duration::from_secs(
            seconds.max(1).unsigned_abs(),
        ))),
        None => Ok(Action::requeue(context.config.resync)),
    }
}

async fn reconcile_service(
    service: Arc<Service>,
    context: Arc<Context>,
) -> Result<Action, ControllerError> {
    let resync = Action::requeue(context.config.resync);
    if service.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = namespace_of(service.as_ref());
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let endpoints_api: Api<Endpoints> = Api::namespaced(context.client.clone(), &namespace);
    let pod_list = pods.list(&ListParams::default()).await?.items;
    let Some(mut wanted) = endpoints_for(&service, &pod_list) else {
        return Ok(resync);
    };
    let name = service.name_any();
    match endpoints_api.get_opt(&name).await? {
        None => match endpoints_api.create(&PostParams::default(), &wanted).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            Err(error) => return Err(error.into()),
        },
        Some(existing) if !same_subsets(&existing, &wanted) => {
            wanted.metadata.resource_version = existing.metadata.resource_version.clone();
            match endpoints_api
                .replace(&name, &PostParams::default(), &wanted)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                Err(error) => return Err(error.into()),
            }
        }
        Some(_) => {}
    }
    Ok(resync)
}

/// Deletes ReplicaSets and Pods whose owners are gone, every `interval`.
async fn garbage_collector(client: Client, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = collect_once(&client).await {
            tracing::debug!(%error, "garbage collection sweep failed");
        }
    }
}

/// One garbage-collection sweep; public so the sandbox can force one.
pub async fn collect_once(client: &Client) -> Result<usize, kube::Error> {
    let params = ListParams::default();
    let deployments = Api::<Deployment>::all(client.clone())
        .list(&params)
        .await?
        .items;
    let replica_sets = Api::<ReplicaSet>::all(client.clone())
        .list(&params)
        .await?
        .items;
    let pods = Api::<Pod>::all(client.clone()).list(&params).await?.items;
    let services = Api::<Service>::all(client.clone())
        .list(&params)
        .await?
        .items;
    let live: HashSet<String> = deployments
        .iter()
        .filter_map(|object| object.metadata.uid.clone())
        .chain(
            replica_sets
                .iter()
                .filter_map(|object| object.metadata.uid.clone()),
        )
        .chain(pods.iter().filter_map(|object| object.metadata.uid.clone()))
        .chain(
            services
                .iter()
                .filter_map(|object| object.metadata.uid.clone()),
        )
        .collect();
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let mut deleted = 0;
    for rs in replica_sets
        .iter()
        .filter(|rs| is_orphan(&rs.metadata, &live))
    {
        let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace_of(rs));
        match api.delete(&rs.name_any(), &background).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    for pod in pods.iter().filter(|pod| is_orphan(&pod.metadata, &live)) {
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace_of(pod));
        match api.delete(&pod.name_any(), &background).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(deleted)
}
