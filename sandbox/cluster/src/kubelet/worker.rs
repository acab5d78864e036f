//! One pod's life on the node: pull, create and start its containers, watch them exit and
//! restart them with back-off, run probes, and publish the pod status. Each pod gets its own
//! task running a sync loop (the real kubelet's pod worker), so a slow pull holds up only its pod.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Endpoints, HostIP, Pod, PodIP, PodStatus, Secret,
    ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::backoff::go_duration;
use super::docker::{
    ContainerLaunch, Docker, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NAMESPACE, LABEL_NODE,
    LABEL_POD, LABEL_SANDBOX, LABEL_UID, parse_quantity,
};
use super::probe::{self, ProbeKind, ProbeTracker, Transition};
use super::{KubeletConfig, env, status, volumes};
use crate::events::{EventType, Recorder, object_reference};

/// Shared pieces every pod worker uses.
#[derive(Clone)]
pub(crate) struct Shared {
    pub client: Client,
    pub config: Arc<KubeletConfig>,
    pub docker: Docker,
    pub events: Recorder,
    pub http: reqwest::Client,
    pub host_ip: String,
    /// Set when the kubelet itself stops: workers then leave their containers running for the
    /// next kubelet to adopt instead of tearing them down.
    pub stopping: Arc<AtomicBool>,
    /// Pods to evict (by uid) with the eviction message: each pod's worker takes its own.
    pub evictions: Arc<std::sync::Mutex<HashMap<String, String>>>,
}

impl Shared {
    fn take_eviction(&self, uid: &str) -> Option<String> {
        self.evictions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid)
    }
}

#[derive(Debug, Clone)]
struct Instance {
    id: String,
    started: Instant,
    started_at: Timestamp,
    /// The image the instance was started from; empty when adopted (unknown, never compared).
    image: String,
}

#[derive(Debug)]
struct ContainerRuntime {
    name: String,
    /// Instances started so far.
    starts: u32,
    current: Option<Instance>,
    previous: Option<String>,
    last_terminated: Option<ContainerStateTerminated>,
    /// Terminated for good (restart policy says no more).
    finished: Option<ContainerStateTerminated>,
    waiting: Option<(String, String)>,
    exits_in_a_row: u32,
    restart_at: Option<Instant>,
    pull_failures: u32,
    pull_at: Option<Instant>,
    /// When the last pull failed: ErrImagePull stays visible for the first half of the back-off.
    pull_failed_at: Option<Instant>,
    image_ready: bool,
    image_id: String,
    probes: Vec<ProbeTracker>,
    kill_reason: Option<String>,
}

impl ContainerRuntime {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            starts: 0,
            current: None,
            previous: None,
            last_terminated: None,
            finished: None,
            waiting: Some(("ContainerCreating".to_owned(), String::new())),
            exits_in_a_row: 0,
            restart_at: None,
            pull_failures: 0,
            pull_at: None,
            pull_failed_at: None,
            image_ready: false,
            image_id: String::new(),
            probes: Vec::new(),
            kill_reason: None,
        }
    }

    fn probe(&self, kind: ProbeKind) -> Option<&ProbeTracker> {
        self.probes.iter().find(|tracker| tracker.kind == kind)
    }

    fn started(&self) -> bool {
        self.current.is_some()
            && self
                .probe(ProbeKind::Startup)
                .is_none_or(|tracker| tracker.passing)
    }

    fn ready(&self) -> bool {
        self.started()
            && self
                .probe(ProbeKind::Readiness)
                .is_none_or(|tracker| tracker.passing)
    }
}

/// Runs a pod until its sender is dropped or the pod is marked for deletion, then tears its
/// containers down.
pub(crate) async fn run_pod(shared: Shared, mut updates: watch::Receiver<Arc<Pod>>) {
    let mut pod = updates.borrow().clone();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut worker = PodWorker::new(shared, &pod).await;
    let tick = worker.shared.config.sync_interval;
    // An evicted pod has ended: nothing runs or restarts until it is deleted.
    let mut evicted = false;
    loop {
        if pod.metadata.deletion_timestamp.is_some() {
            break;
        }
        if !evicted {
            match worker.shared.take_eviction(&uid) {
                Some(message) => {
                    worker.evict(&pod, &message).await;
                    evicted = true;
                }
                None => worker.sync(&pod).await,
            }
        }
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    if worker.shared.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    break;
                }
                pod = updates.borrow_and_update().clone();
            }
            () = tokio::time::sleep(tick) => {}
        }
    }
    worker.terminate(&pod).await;
}

struct PodWorker {
    shared: Shared,
    containers: Vec<ContainerRuntime>,
    start_time: Timestamp,
    pod_ip: Option<String>,
    last_status: Option<serde_json::Value>,
    /// Projected volumes already written for this pod: volume name → host directory.
    projected: HashMap<String, std::path::PathBuf>,
}

impl PodWorker {
    async fn new(shared: Shared, pod: &Pod) -> Self {
        let spec_containers = pod
            .spec
            .as_ref()
            .map(|spec| spec.containers.clone())
            .unwrap_or_default();
        let mut containers: Vec<ContainerRuntime> = spec_containers
            .iter()
            .map(|container| ContainerRuntime::new(&container.name))
            .collect();
        let start_time = pod
            .status
            .as_ref()
            .and_then(|status| status.start_time.as_ref())
            .map(|time| time.0)
            .unwrap_or_else(Timestamp::now);
        // Adopt containers a previous kubelet run left for this pod, so a kubelet restart does
        // not restart the workload.
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Ok(existing) = shared
            .docker
            .list(&[
                (LABEL_UID, uid.as_str()),
                (LABEL_NODE, shared.config.node_name.as_str()),
            ])
            .await
        {
            for runtime in &mut containers {
                let mut mine: Vec<(u32, String)> = existing
                    .iter()
                    .filter(|(_, labels)| labels.get(LABEL_CONTAINER) == Some(&runtime.name))
                    .filter_map(|(id, labels)| {
                        Some((labels.get(LABEL_ATTEMPT)?.parse().ok()?, id.clone()))
                    })
                    .collect();
                mine.sort();
                if let Some((attempt, id)) = mine.pop() {
                    runtime.starts = attempt + 1;
                    runtime.image_ready = true;
                    runtime.current = Some(Instance {
                        id,
                        started: Instant::now(),
                        started_at: Timestamp::now(),
                        image: String::new(),
                    });
                    runtime.waiting = None;
                    runtime.previous = mine.pop().map(|(_, id)| id);
                    if let Some(spec) = spec_containers
                        .iter()
                        .find(|container| container.name == runtime.name)
                    {
                        runtime.probes = trackers(spec, Instant::now());
                    }
                }
            }
        }
        Self {
            shared,
            containers,
            start_time,
            pod_ip: None,
            last_status: None,
            projected: HashMap::new(),
        }
    }

    fn restart_policy(pod: &Pod) -> String {
        pod.spec
            .as_ref()
            .and_then(|spec| spec.restart_policy.clone())
            .unwrap_or_else(|| "Always".to_owned())
    }

    async fn event(
        &self,
        pod: &Pod,
        container: Option<&str>,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        let field_path = container.map(|name| format!("spec.containers{{{name}}}"));
        self.shared
            .events
            .record(object_reference(pod, field_path), kind, reason, message)
            .await;
    }

    async fn sync(&mut self, pod: &Pod) {
        let spec_containers = pod
            .spec
            .as_ref()
            .map(|spec| spec.containers.clone())
            .unwrap_or_default();
        for index in 0..self.containers.len() {
            let Some(spec) = spec_containers.get(index) else {
                continue;
            };
            self.sync_container(pod, index, spec).await;
        }
        self.publish_status(pod, &spec_containers).await;
    }

    async fn sync_container(&mut self, pod: &Pod, index: usize, spec: &Container) {
        let network = self.shared.config.network.clone();
        let docker = self.shared.docker.clone();
        // 1. Observe the running instance.
        if let Some(instance) = self.containers[index].current.clone() {
            match docker.inspect(&instance.id, &network).await {
                Ok(info) if info.running => {
                    if index == 0 && info.ip.is_some() {
                        self.pod_ip = info.ip.clone();
                    }
                    self.containers[index].image_id = info.image_id.clone();
                    // Docker's start time is the truth, also for containers adopted after a
                    // kubelet restart.
                    if let (Some(current), Some(started)) =
                        (self.containers[index].current.as_mut(), info.started_at)
                    {
                        current.started_at = started;
                    }
                    let wanted_image = spec.image.clone().unwrap_or_default();
                    if !instance.image.is_empty() && instance.image != wanted_image {
                        // The pod's image was changed in place (`kubectl set image pod/…`): the
                        // real kubelet kills the container and starts the new definition.
                        self.event(
                            pod,
                            Some(&spec.name),
                            EventType::Normal,
                            "Killing",
                            &format!(
                                "Container {} definition changed, will be restarted",
                                spec.name
                            ),
                        )
                        .await;
                        self.containers[index].image_ready = false;
                        if let Err(error) = docker.stop(&instance.id, self.grace(pod)).await {
                            tracing::debug!(%error, "could not stop a changed container");
                        }
                        return;
                    }
                    self.run_probes(pod, index, spec, &instance).await;
                    return;
                }
                Ok(info) => {
                    let runtime = &mut self.containers[index];
                    let reason = if info.oom_killed {
                        "OOMKilled"
                    } else if info.exit_code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    };
                    let terminated = ContainerStateTerminated {
                        exit_code: info.exit_code,
                        reason: Some(reason.to_owned()),
                        message: (!info.error.is_empty()).then(|| info.error.clone()),
                        started_at: info.started_at.map(Time),
                        finished_at: Some(Time(info.finished_at.unwrap_or_else(Timestamp::now))),
                        container_id: Some(format!("docker://{}", instance.id)),
                        signal: None,
                    };
                    runtime.kill_reason = None;
                    runtime.current = None;
                    runtime.probes.clear();
                    if let Some(older) = runtime.previous.replace(instance.id.clone()) {
                        let _ = docker.remove(&older).await;
                    }
                    let ran_for = instance.started.elapsed();
                    if ran_for >= self.shared.config.backoff.reset_after() {
                        runtime.exits_in_a_row = 0;
                    }
                    let policy = Self::restart_policy(pod);
                    let restart = match policy.as_str() {
                        "Never" => false,
                        "OnFailure" => info.exit_code != 0,
                        _ => true,
                    };
                    runtime.last_terminated = Some(terminated.clone());
                    if restart {
                        runtime.exits_in_a_row += 1;
                        let delay = self
                            .shared
                            .config
                            .backoff
                            .crash_delay(runtime.exits_in_a_row);
                        runtime.restart_at = Some(Instant::now() + delay);
                    } else {
                        runtime.finished = Some(terminated);
                    }
                }
                Err(error) if error.is_not_found() => {
                    // Removed behind our back: start a new instance.
                    let runtime = &mut self.containers[index];
                    runtime.current = None;
                    runtime.probes.clear();
                    runtime.restart_at = None;
                }
                Err(error) => {
                    tracing::debug!(%error, "docker inspect failed");
                    return;
                }
            }
        }
        if self.containers[index].finished.is_some() {
            return;
        }
        // 2. Back-off after a crash.
        if let Some(restart_at) = self.containers[index].restart_at {
            let now = Instant::now();
            if now < restart_at {
                let exits = self.containers[index].exits_in_a_row;
                let delay = go_duration(self.shared.config.backoff.crash_delay(exits));
                let message = format!(
                    "back-off {delay} restarting failed container={} pod={}_{}({})",
                    spec.name,
                    pod.name_any(),
                    pod.namespace().unwrap_or_default(),
                    pod.metadata.uid.clone().unwrap_or_default()
                );
                let announce = self.containers[index]
                    .waiting
                    .as_ref()
                    .is_none_or(|(reason, _)| reason != "CrashLoopBackOff");
                self.containers[index].waiting = Some(("CrashLoopBackOff".to_owned(), message));
                if announce {
                    self.event(
                        pod,
                        Some(&spec.name),
                        EventType::Warning,
                        "BackOff",
                        &format!(
                            "Back-off restarting failed container {} in pod {}_{}({})",
                            spec.name,
                            pod.name_any(),
                            pod.namespace().unwrap_or_default(),
                            pod.metadata.uid.clone().unwrap_or_default()
                        ),
                    )
                    .await;
                }
                return;
            }
        }
        // 3. Image.
        if !self.ensure_image(pod, index, spec).await {
            return;
        }
        // 4. Network: later containers join the first one's network namespace, as a pod's
        //    containers share one IP.
        let network_mode = if index == 0 {
            network.clone()
        } else {
            match self.containers[0].current.as_ref() {
                Some(first) => format!("container:{}", first.id),
                None => {
                    self.containers[index].waiting =
                        Some(("ContainerCreating".to_owned(), String::new()));
                    return;
                }
            }
        };
        // 5. Volumes: a projected volume that cannot be made keeps the container in
        //    ContainerCreating with a FailedMount event, as the real volume manager does.
        let mounts = match volumes::container_mounts(pod, spec) {
            Ok(mounts) => {
                let mut binds = Vec::new();
                for (volume, path, read_only) in &mounts.projected {
                    match self.projected_volume(pod, volume).await {
                        Ok(dir) => {
                            binds.push((dir.display().to_string(), path.clone(), *read_only))
                        }
                        Err(message) => {
                            let message = format!(
                                "MountVolume.SetUp failed for volume \"{volume}\" : {message}"
                            );
                            let announce = self.containers[index]
                                .waiting
                                .as_ref()
                                .is_none_or(|(_, old)| old != &message);
                            self.containers[index].waiting =
                                Some(("ContainerCreating".to_owned(), message.clone()));
                            if announce {
                                self.event(pod, None, EventType::Warning, "FailedMount", &message)
                                    .await;
                            }
                            return;
                        }
                    }
                }
                Ok((mounts.tmpfs, binds))
            }
            Err(message) => Err(message),
        };
        // 6. Environment.
        let prepared = match mounts {
            Ok(mounts) => self.resolve_env(pod, spec).await.map(|env| (env, mounts)),
            Err(message) => Err(message),
        };
        let (env, (mounts, binds)) = match prepared {
            Ok(prepared) => prepared,
            Err(message) => {
                let announce = self.containers[index]
                    .waiting
                    .as_ref()
                    .is_none_or(|(_, old)| old != &message);
                self.containers[index].waiting =
                    Some(("CreateContainerConfigError".to_owned(), message.clone()));
                if announce {
                    self.event(
                        pod,
                        Some(&spec.name),
                        EventType::Warning,
                        "Failed",
                        &format!("Error: {message}"),
                    )
                    .await;
                }
                return;
            }
        };
        // 7. Create and start.
        let mut launch = self.launch(pod, index, spec, network_mode, &env, mounts);
        launch.binds = binds;
        match docker.create_and_start(&launch, &env).await {
            Ok(id) => {
                let runtime = &mut self.containers[index];
                runtime.starts += 1;
                runtime.waiting = None;
                runtime.restart_at = None;
                let now = Instant::now();
                runtime.current = Some(Instance {
                    id,
                    started: now,
                    started_at: Timestamp::now(),
                    image: spec.image.clone().unwrap_or_default(),
                });
                runtime.probes = trackers(spec, now);
                self.event(
                    pod,
                    Some(&spec.name),
                    EventType::Normal,
                    "Created",
                    &format!("Created container: {}", spec.name),
                )
                .await;
                self.event(
                    pod,
                    Some(&spec.name),
                    EventType::Normal,
                    "Started",
                    &format!("Started container {}", spec.name),
                )
                .await;
            }
            Err(error) => {
                // A name clash means a half-created container from an interrupted attempt.
                let _ = docker.remove(&launch.name).await;
                let message = error.to_string();
                let runtime = &mut self.containers[index];
                runtime.waiting = Some(("RunContainerError".to_owned(), message.clone()));
                runtime.exits_in_a_row += 1;
                runtime.restart_at = Some(
                    Instant::now()
                        + self
                            .shared
                            .config
                            .backoff
                            .crash_delay(runtime.exits_in_a_row),
                );
                self.event(
                    pod,
                    Some(&spec.name),
                    EventType::Warning,
                    "Failed",
                    &format!("Error: {message}"),
                )
                .await;
            }
        }
    }

    fn image_pull_policy(spec: &Container) -> String {
        if let Some(policy) = &spec.image_pull_policy {
            return policy.clone();
        }
        let image = spec.image.clone().unwrap_or_default();
        let last = image.rsplit('/').next().unwrap_or_default();
        if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
            "IfNotPresent".to_owned()
        } else {
            "Always".to_owned()
        }
    }

    /// Whether the image may be pulled at all: the sandbox talks to its own registry only.
    fn registry_allowed(&self, image: &str) -> bool {
        let first = image.split('/').next().unwrap_or_default();
        let has_registry = image.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        has_registry
            && self
                .shared
                .config
                .allowed_registries
                .iter()
                .any(|registry| registry == first)
    }

    async fn ensure_image(&mut self, pod: &Pod, index: usize, spec: &Container) -> bool {
        let image = spec.image.clone().unwrap_or_default();
        let policy = Self::image_pull_policy(spec);
        if self.containers[index].image_ready && policy != "Always" {
            return true;
        }
        let docker = self.shared.docker.clone();
        let present = docker.image_present(&image).await.unwrap_or(false);
        if present && policy != "Always" {
            if !self.containers[index].image_ready {
                self.event(
                    pod,
                    Some(&spec.name),
                    EventType::Normal,
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                )
                .await;
            }
            self.containers[index].image_ready = true;
            return true;
        }
        if policy == "Never" {
            let message =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            self.containers[index].waiting =
                Some(("ErrImageNeverPull".to_owned(), message.clone()));
            self.event(
                pod,
                Some(&spec.name),
                EventType::Warning,
                "ErrImageNeverPull",
                &message,
            )
            .await;
            return false;
        }
        if let Some(pull_at) = self.containers[index].pull_at
            && Instant::now() < pull_at
        {
            let failed_at = self.containers[index].pull_failed_at.unwrap_or(pull_at);
            if Instant::now() < failed_at + (pull_at - failed_at) / 2 {
                return false;
            }
            let announce = self.containers[index]
                .waiting
                .as_ref()
                .is_none_or(|(reason, _)| reason != "ImagePullBackOff");
            let message = format!("Back-off pulling image \"{image}\"");
            self.containers[index].waiting = Some(("ImagePullBackOff".to_owned(), message.clone()));
            if announce {
                self.event(
                    pod,
                    Some(&spec.name),
                    EventType::Normal,
                    "BackOff",
                    &message,
                )
                .await;
            }
            return false;
        }
        self.event(
            pod,
            Some(&spec.name),
            EventType::Normal,
            "Pulling",
            &format!("Pulling image \"{image}\""),
        )
        .await;
        let started = Instant::now();
        let result = if self.registry_allowed(&image) {
            docker
                .pull(&image, self.shared.config.pull_timeout)
                .await
                .map_err(|error| error.to_string())
        } else {
            Err(format!(
                "the sandbox pulls only from {}; push the image there (no other registry is reachable)",
                self.shared.config.allowed_registries.join(", ")
            ))
        };
        match result {
            Ok(()) => {
                let runtime = &mut self.containers[index];
                runtime.pull_failures = 0;
                runtime.pull_at = None;
                runtime.image_ready = true;
                let took = started.elapsed();
                self.event(
                    pod,
                    Some(&spec.name),
                    EventType::Normal,
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        took.as_secs_f64()
                    ),
                )
                .await;
                true
            }
            Err(error) => {
                let runtime = &mut self.containers[index];
                runtime.pull_failures += 1;
                runtime.pull_failed_at = Some(Instant::now());
                runtime.pull_at = Some(
                    Instant::now() + self.shared.config.backoff.pull_delay(runtime.pull_failures),
                );
                let message = format!("Failed to pull image \"{image}\": {error}");
                runtime.waiting = Some(("ErrImagePull".to_owned(), message.clone()));
                self.event(
                    pod,
                    Some(&spec.name),
                    EventType::Warning,
                    "Failed",
                    &message,
                )
                .await;
                self.event(
                    pod,
                    Some(&spec.name),
                    EventType::Warning,
                    "Failed",
                    "Error: ErrImagePull",
                )
                .await;
                false
            }
        }
    }

    async fn resolve_env(
        &self,
        pod: &Pod,
        spec: &Container,
    ) -> Result<Vec<(String, String)>, String> {
        let namespace = pod.namespace().unwrap_or_else(|| "default".to_owned());
        let (secret_names, config_map_names) = env::referenced_objects(spec);
        let secrets_api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &namespace);
        let config_maps_api: Api<ConfigMap> =
            Api::namespaced(self.shared.client.clone(), &namespace);
        let mut secrets = HashMap::new();
        for name in secret_names {
            match secrets_api.get_opt(&name).await {
                Ok(Some(secret)) => {
                    secrets.insert(name, secret);
                }
                Ok(None) => {}
                Err(error) => return Err(format!("could not read secret \"{name}\": {error}")),
            }
        }
        let mut config_maps = HashMap::new();
        for name in config_map_names {
            match config_maps_api.get_opt(&name).await {
                Ok(Some(config_map)) => {
                    config_maps.insert(name, config_map);
                }
                Ok(None) => {}
                Err(error) => return Err(format!("could not read configmap \"{name}\": {error}")),
            }
        }
        let resolved = env::resolve_env(
            spec,
            pod,
            self.pod_ip.as_deref(),
            &self.shared.host_ip,
            &secrets,
            &config_maps,
        )?;
        // The `kubernetes` Service's variables come first and the container's own win, as the
        // kubelet builds them. They name the address its Endpoints hold (the API server's
        // advertised one): the sandbox has no proxy routing the Service's cluster IP.
        let mut service_env = self.master_service_env().await;
        service_env.retain(|(name, _)| resolved.iter().all(|(own, _)| own != name));
        service_env.extend(resolved);
        Ok(service_env)
    }

    async fn master_service_env(&self) -> Vec<(String, String)> {
        let api: Api<Endpoints> = Api::namespaced(self.shared.client.clone(), "default");
        let Ok(Some(endpoints)) = api.get_opt("kubernetes").await else {
            return Vec::new();
        };
        let subset = endpoints.subsets.into_iter().flatten().next();
        let address = subset
            .as_ref()
            .and_then(|subset| subset.addresses.as_ref())
            .and_then(|addresses| addresses.first())
            .map(|address| address.ip.clone());
        let port = subset
            .as_ref()
            .and_then(|subset| subset.ports.as_ref())
            .and_then(|ports| ports.first())
            .and_then(|port| u16::try_from(port.port).ok());
        match (address, port) {
            (Some(address), Some(port)) => env::master_service_env(&address, port),
            _ => Vec::new(),
        }
    }

    /// The host directory holding the projected volume `name` of `pod`, written once per pod:
    /// a token requested for the pod's ServiceAccount bound to the pod (with the volume's
    /// expiration and audience, as the kubelet's token manager asks), the ConfigMap items and
    /// the downward API fields. Directories 0755 and files with the volume's modes, under the
    /// kubelet's private root (`<root>/pods/<uid>/volumes/kubernetes.io~projected/<name>`).
    async fn projected_volume(
        &mut self,
        pod: &Pod,
        name: &str,
    ) -> Result<std::path::PathBuf, String> {
        if let Some(dir) = self.projected.get(name) {
            return Ok(dir.clone());
        }
        let source = volumes::projected_source(pod, name)
            .ok_or_else(|| format!("volume {name} is not a projected volume"))?;
        let namespace = pod.namespace().unwrap_or_else(|| "default".to_owned());
        let token = match volumes::token_source(&source) {
            Some(requested) => Some(self.request_token(pod, &namespace, &requested).await?),
            None => None,
        };
        let config_maps_api: Api<ConfigMap> =
            Api::namespaced(self.shared.client.clone(), &namespace);
        let mut config_maps = HashMap::new();
        for config_map in volumes::config_map_names(&source) {
            match config_maps_api.get_opt(&config_map).await {
                Ok(Some(found)) => {
                    config_maps.insert(config_map, found);
                }
                Ok(None) => {}
                Err(error) => {
                    return Err(format!(
                        "could not read configmap \"{config_map}\": {error}"
                    ));
                }
            }
        }
        let files = volumes::projected_files(pod, &source, token.as_deref(), &config_maps)?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = self
            .shared
            .config
            .root_dir
            .join("pods")
            .join(&uid)
            .join("volumes/kubernetes.io~projected")
            .join(name);
        write_volume(&self.shared.config.root_dir, &dir, &files)
            .map_err(|error| format!("cannot write the volume's files: {error}"))?;
        self.projected.insert(name.to_owned(), dir.clone());
        Ok(dir)
    }

    async fn request_token(
        &self,
        pod: &Pod,
        namespace: &str,
        requested: &volumes::TokenSource,
    ) -> Result<String, String> {
        let account = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned());
        let api: Api<ServiceAccount> = Api::namespaced(self.shared.client.clone(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: requested.audience.clone().into_iter().collect(),
                expiration_seconds: Some(requested.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Pod".to_owned()),
                    name: Some(pod.name_any()),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        let answer = api
            .create_token_request(&account, &kube::api::PostParams::default(), &request)
            .await
            .map_err(|error| match error {
                kube::Error::Api(status) => format!("failed to fetch token: {}", status.message),
                other => format!("failed to fetch token: {other}"),
            })?;
        answer
            .status
            .map(|status| status.token)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| "failed to fetch token: the answer holds no token".to_owned())
    }

    fn launch(
        &self,
        pod: &Pod,
        index: usize,
        spec: &Container,
        network: String,
        env: &[(String, String)],
        tmpfs: Vec<(String, Option<u64>)>,
    ) -> ContainerLaunch {
        let runtime = &self.containers[index];
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod.namespace().unwrap_or_else(|| "default".to_owned());
        let short_uid: String = uid
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        let labels = [
            (LABEL_SANDBOX, "1".to_owned()),
            (LABEL_NODE, self.shared.config.node_name.clone()),
            (LABEL_NAMESPACE, namespace.clone()),
            (LABEL_POD, pod.name_any()),
            (LABEL_UID, uid.clone()),
            (LABEL_CONTAINER, spec.name.clone()),
            (LABEL_ATTEMPT, runtime.starts.to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        let limits = spec
            .resources
            .as_ref()
            .and_then(|resources| resources.limits.as_ref());
        let memory_bytes = limits
            .and_then(|limits| limits.get("memory"))
            .and_then(|quantity| parse_quantity(&quantity.0))
            .map(|bytes| bytes as u64);
        let cpus = limits
            .and_then(|limits| limits.get("cpu"))
            .and_then(|quantity| parse_quantity(&quantity.0));
        let pod_security = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.security_context.as_ref());
        let security = spec.security_context.as_ref();
        let user = security
            .and_then(|context| context.run_as_user)
            .or_else(|| pod_security.and_then(|context| context.run_as_user));
        let group = security
            .and_then(|context| context.run_as_group)
            .or_else(|| pod_security.and_then(|context| context.run_as_group));
        let shares_network = network.starts_with("container:");
        ContainerLaunch {
            name: format!(
                "psctl_{namespace}_{}_{short_uid}_{}_{}",
                pod.name_any(),
                spec.name,
                runtime.starts
            ),
            image: spec.image.clone().unwrap_or_default(),
            network,
            hostname: (!shares_network).then(|| pod.name_any()),
            labels,
            command: env::expand_all(&spec.command.clone().unwrap_or_default(), env),
            args: env::expand_all(&spec.args.clone().unwrap_or_default(), env),
            working_dir: spec.working_dir.clone(),
            memory_bytes,
            cpus,
            user: user.map(|user| (user, group)),
            read_only: security
                .and_then(|context| context.read_only_root_filesystem)
                .unwrap_or(false),
            tmpfs,
            binds: Vec::new(),
            cap_drop: security
                .and_then(|context| context.capabilities.as_ref())
                .and_then(|capabilities| capabilities.drop.clone())
                .unwrap_or_default(),
            cap_add: security
                .and_then(|context| context.capabilities.as_ref())
                .and_then(|capabilities| capabilities.add.clone())
                .unwrap_or_default(),
            no_new_privileges: security.and_then(|context| context.allow_privilege_escalation)
                == Some(false),
        }
    }

    async fn run_probes(&mut self, pod: &Pod, index: usize, spec: &Container, instance: &Instance) {
        let now = Instant::now();
        let ip = self.pod_ip.clone();
        let docker = self.shared.docker.clone();
        let http = self.shared.http.clone();
        let started = self.containers[index]
            .probe(ProbeKind::Startup)
            .is_none_or(|tracker| tracker.passing);
        let mut kill: Option<String> = None;
        let mut notes: Vec<(EventType, &'static str, String)> = Vec::new();
        for tracker in &mut self.containers[index].probes {
            if !tracker.kind.runs(started) || !tracker.due(now) {
                continue;
            }
            let result = probe::run(
                &tracker.probe,
                spec,
                ip.as_deref(),
                &instance.id,
                &docker,
                &http,
            )
            .await;
            let transition = tracker.record(result.is_ok(), Instant::now());
            if let Err(message) = &result {
                notes.push((
                    EventType::Warning,
                    "Unhealthy",
                    format!("{} probe failed: {message}", tracker.kind.title()),
                ));
            }
            if transition == Transition::Failed && tracker.kind != ProbeKind::Readiness {
                kill = Some(format!(
                    "Container {} failed {} probe, will be restarted",
                    spec.name,
                    tracker.kind.title().to_lowercase()
                ));
            }
        }
        for (kind, reason, message) in notes {
            self.event(pod, Some(&spec.name), kind, reason, &message)
                .await;
        }
        if let Some(message) = kill {
            self.event(
                pod,
                Some(&spec.name),
                EventType::Normal,
                "Killing",
                &message,
            )
            .await;
            self.containers[index].kill_reason = Some(message);
            let grace = self.grace(pod);
            if let Err(error) = docker.stop(&instance.id, grace).await {
                tracing::debug!(%error, "could not stop unhealthy container");
            }
        }
    }

    fn grace(&self, pod: &Pod) -> Duration {
        let seconds = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0);
        Duration::from_secs(seconds.unsigned_abs()).min(self.shared.config.max_grace)
    }

    fn container_status(&self, runtime: &ContainerRuntime, spec: &Container) -> ContainerStatus {
        let state = if let Some(instance) = &runtime.current {
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(instance.started_at)),
                }),
                ..ContainerState::default()
            }
        } else if let Some(finished) = &runtime.finished {
            ContainerState {
                terminated: Some(finished.clone()),
                ..ContainerState::default()
            }
        } else {
            let (reason, message) = runtime
                .waiting
                .clone()
                .unwrap_or_else(|| ("ContainerCreating".to_owned(), String::new()));
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason),
                    message: (!message.is_empty()).then_some(message),
                }),
                ..ContainerState::default()
            }
        };
        let last_state = if runtime.finished.is_some() {
            None
        } else {
            runtime
                .last_terminated
                .clone()
                .map(|terminated| ContainerState {
                    terminated: Some(terminated),
                    ..ContainerState::default()
                })
        };
        let restart_count = runtime.starts.saturating_sub(1);
        // The image of the instance that runs, which lags the spec after an in-place change.
        let image = runtime
            .current
            .as_ref()
            .map(|instance| instance.image.clone())
            .filter(|image| !image.is_empty())
            .or_else(|| spec.image.clone())
            .unwrap_or_default();
        ContainerStatus {
            name: runtime.name.clone(),
            image,
            image_id: if runtime.image_id.is_empty() {
                String::new()
            } else {
                format!("docker://{}", runtime.image_id)
            },
            container_id: runtime
                .current
                .as_ref()
                .map(|instance| format!("docker://{}", instance.id))
                .or_else(|| {
                    runtime
                        .finished
                        .as_ref()
                        .and_then(|finished| finished.container_id.clone())
                }),
            state: Some(state),
            last_state,
            ready: runtime.ready(),
            started: Some(runtime.started()),
            restart_count: i32::try_from(restart_count).unwrap_or(i32::MAX),
            ..ContainerStatus::default()
        }
    }

    async fn publish_status(&mut self, pod: &Pod, specs: &[Container]) {
        let statuses: Vec<ContainerStatus> = self
            .containers
            .iter()
            .zip(specs)
            .map(|(runtime, spec)| self.container_status(runtime, spec))
            .collect();
        let now = Timestamp::now();
        let previous = pod.status.as_ref();
        let phase = status::phase(&Self::restart_policy(pod), &statuses);
        let pod_status = PodStatus {
            phase: Some(phase.to_owned()),
            conditions: Some(status::conditions(previous, &statuses, now)),
            host_ip: Some(self.shared.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: self.shared.host_ip.clone(),
            }]),
            pod_ip: self.pod_ip.clone(),
            pod_ips: self.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
            start_time: Some(Time(self.start_time)),
            container_statuses: Some(statuses),
            qos_class: Some(qos_class(specs).to_owned()),
            ..PodStatus::default()
        };
        let value = serde_json::to_value(&pod_status).unwrap_or_default();
        // Compare without condition times, which carry over anyway, to avoid needless writes.
        if self.last_status.as_ref() == Some(&value) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            &pod.namespace().unwrap_or_else(|| "default".to_owned()),
        );
        // JSON merge patch replaces lists wholesale and nulls clear fields we no longer report.
        let patch = serde_json::json!({"status": value});
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => self.last_status = Some(value),
            Err(error) => {
                tracing::debug!(%error, pod = pod.name_any(), "could not write pod status")
            }
        }
    }

    /// A hard eviction, as the kubelet's eviction manager does it: event `Evicted`, every
    /// container killed at once (no grace period), then the pod `Failed` with reason `Evicted`
    /// (see [`status::evicted`]). The containers stay (stopped) until the pod is deleted.
    async fn evict(&mut self, pod: &Pod, message: &str) {
        self.event(pod, None, EventType::Warning, status::EVICTED, message)
            .await;
        let running: Vec<String> = self
            .containers
            .iter()
            .filter(|runtime| runtime.current.is_some())
            .map(|runtime| runtime.name.clone())
            .collect();
        for name in &running {
            self.event(
                pod,
                Some(name),
                EventType::Normal,
                "Killing",
                &format!("Stopping container {name}"),
            )
            .await;
        }
        let docker = self.shared.docker.clone();
        let network = self.shared.config.network.clone();
        let now = Timestamp::now();
        for runtime in &mut self.containers {
            runtime.waiting = None;
            runtime.restart_at = None;
            let Some(instance) = runtime.current.take() else {
                if runtime.finished.is_none() {
                    // Never started: what the kubelet reports for a container it cannot find.
                    runtime.finished = Some(ContainerStateTerminated {
                        exit_code: 137,
                        reason: Some("ContainerStatusUnknown".to_owned()),
                        message: Some(
                            "The container could not be located when the pod was terminated"
                                .to_owned(),
                        ),
                        ..ContainerStateTerminated::default()
                    });
                }
                continue;
            };
            if let Err(error) = docker.stop(&instance.id, Duration::ZERO).await {
                tracing::debug!(%error, "could not kill container");
            }
            let info = docker.inspect(&instance.id, &network).await.ok();
            let exit_code = info.as_ref().map_or(137, |info| info.exit_code);
            runtime.finished = Some(ContainerStateTerminated {
                exit_code,
                reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.to_owned()),
                started_at: Some(Time(instance.started_at)),
                finished_at: Some(Time(info.and_then(|info| info.finished_at).unwrap_or(now))),
                container_id: Some(format!("docker://{}", instance.id)),
                ..ContainerStateTerminated::default()
            });
        }
        let specs = pod
            .spec
            .as_ref()
            .map(|spec| spec.containers.clone())
            .unwrap_or_default();
        let statuses: Vec<ContainerStatus> = self
            .containers
            .iter()
            .zip(&specs)
            .map(|(runtime, spec)| self.container_status(runtime, spec))
            .collect();
        let previous = pod.status.clone().unwrap_or_default();
        let evicted = status::evicted(&previous, statuses, message, now);
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            &pod.namespace().unwrap_or_else(|| "default".to_owned()),
        );
        let patch = serde_json::json!({"status": evicted});
        if let Err(error) = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(%error, pod = pod.name_any(), "could not mark the pod evicted");
        }
    }

    async fn terminate(&mut self, pod: &Pod) {
        let grace = self.grace(pod);
        let docker = self.shared.docker.clone();
        let mut stops = Vec::new();
        for runtime in &self.containers {
            if let Some(instance) = &runtime.current {
                self.event(
                    pod,
                    Some(&runtime.name),
                    EventType::Normal,
                    "Killing",
                    &format!("Stopping container {}", runtime.name),
                )
                .await;
                let docker = docker.clone();
                let id = instance.id.clone();
                stops.push(async move { docker.stop(&id, grace).await });
            }
        }
        for result in futures::future::join_all(stops).await {
            if let Err(error) = result {
                tracing::debug!(%error, "could not stop container");
            }
        }
        // Remove every instance of this pod, previous ones included.
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if !uid.is_empty() {
            let _ = std::fs::remove_dir_all(self.shared.config.root_dir.join("pods").join(&uid));
        }
        if let Ok(all) = docker
            .list(&[
                (LABEL_UID, uid.as_str()),
                (LABEL_NODE, self.shared.config.node_name.as_str()),
            ])
            .await
        {
            for (id, _) in all {
                let _ = docker.remove(&id).await;
            }
        }
        // A graceful delete waits for the kubelet; finish it as the real kubelet does.
        if pod.metadata.deletion_timestamp.is_some() {
            let api: Api<Pod> = Api::namespaced(
                self.shared.client.clone(),
                &pod.namespace().unwrap_or_else(|| "default".to_owned()),
            );
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            };
            match api.delete(&pod.name_any(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => tracing::debug!(%error, "could not finish pod deletion"),
            }
        }
    }
}

/// Writes a projected volume's files into `dir` (created 0755, under `root`, which is made
/// private: only the volume directories themselves are what containers see).
fn write_volume(
    root: &std::path::Path,
    dir: &std::path::Path,
    files: &[volumes::ProjectedFile],
) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for file in files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)?;
        }
        std::fs::write(&path, &file.content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))?;
    }
    Ok(())
}

fn trackers(spec: &Container, started: Instant) -> Vec<ProbeTracker> {
    [
        (ProbeKind::Startup, spec.startup_probe.clone()),
        (ProbeKind::Liveness, spec.liveness_probe.clone()),
        (ProbeKind::Readiness, spec.readiness_probe.clone()),
    ]
    .into_iter()
    .filter_map(|(kind, probe)| Some(ProbeTracker::new(kind, probe?, started)))
    .collect()
}

/// The pod's QoS class from its containers' requests and limits.
pub fn qos_class(containers: &[Container]) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for container in containers {
        let resources = container.resources.as_ref();
        let limits = resources
            .and_then(|resources| resources.limits.clone())
            .unwrap_or_default();
        let requests = resources
            .and_then(|resources| resources.requests.clone())
            .unwrap_or_default();
        if !limits.is_empty() || !requests.is_empty() {
            any = true;
        }
        for resource in ["cpu", "memory"] {
            let limit = limits.get(resource);
            let request = requests.get(resource).or(limit);
            if limit.is_none() || request.map(|q| &q.0) != limit.map(|q| &q.0) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}
