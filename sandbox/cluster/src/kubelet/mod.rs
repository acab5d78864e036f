//! The sandbox kubelet: schedules unassigned pods onto its single node and runs each pod's
//! containers as real Docker containers on the sandbox network, one worker task per pod.
//!
//! Submodules: `docker` (the CLI and its argv), `backoff`, `probe`, `env` and `status` (pure
//! decisions), `worker` (one pod's sync loop), `logs` (container output for the API server).

pub mod backoff;
pub mod docker;
pub mod env;
pub mod logs;
pub mod probe;
pub mod status;
pub mod volumes;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use backoff::Backoff;
pub use docker::{Docker, DockerError};
pub use logs::DockerLogs;

use crate::events::Recorder;
use docker::{LABEL_NODE, LABEL_UID};

/// Settings for [`Kubelet::run`].
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The node this kubelet is; pods are scheduled onto it.
    pub node_name: String,
    /// Docker network the pods join (created if missing).
    pub network: String,
    /// Registries the kubelet may pull from (`host:port`, as in image references). Images already
    /// present locally are used whatever their name.
    pub allowed_registries: Vec<String>,
    /// Crash and pull back-off.
    pub backoff: Backoff,
    /// How often each pod worker syncs.
    pub sync_interval: Duration,
    /// Upper bound on terminationGracePeriodSeconds honoured.
    pub max_grace: Duration,
    /// Limit for one image pull.
    pub pull_timeout: Duration,
    /// Where projected volumes are written (the kubelet's `--root-dir`); made private (0700).
    pub root_dir: std::path::PathBuf,
}

impl KubeletConfig {
    /// The defaults for a node name on the `psctl-sandbox` network and registry 127.0.0.1:5000.
    pub fn new(node_name: &str) -> Self {
        Self {
            node_name: node_name.to_owned(),
            network: "psctl-sandbox".to_owned(),
            allowed_registries: vec!["127.0.0.1:5000".to_owned(), "localhost:5000".to_owned()],
            backoff: Backoff::default(),
            sync_interval: Duration::from_secs(1),
            max_grace: Duration::from_secs(30),
            pull_timeout: Duration::from_secs(300),
            root_dir: std::env::temp_dir().join(format!("psctl-kubelet-{node_name}")),
        }
    }
}

/// Why the kubelet could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// Docker is missing or refused.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The API server refused or could not be reached.
    #[error("API call failed: {0}")]
    Kube(#[from] kube::Error),
}

/// The running kubelet; dropping the handle stops its watch loop (containers keep running and
/// are adopted by the next kubelet on the same node).
#[derive(Debug)]
pub struct KubeletHandle {
    task: JoinHandle<()>,
    stopping: Arc<AtomicBool>,
    evictor: Evictor,
}

/// Evicts pods of the kubelet's node (see [`Evictor::evict`]).
#[derive(Clone)]
pub struct Evictor {
    client: Client,
    node: String,
    evictions: Arc<std::sync::Mutex<HashMap<String, String>>>,
}

impl std::fmt::Debug for Evictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evictor").field("node", &self.node).finish()
    }
}

/// Why a pod could not be evicted.
#[derive(Debug, thiserror::Error)]
pub enum EvictError {
    #[error("pod `{namespace}/{name}` not found")]
    NotFound { namespace: String, name: String },
    #[error("pod `{namespace}/{name}` is not on node `{node}`")]
    OtherNode {
        namespace: String,
        name: String,
        node: String,
    },
    #[error("pod `{namespace}/{name}` has already ended (phase {phase})")]
    Ended {
        namespace: String,
        name: String,
        phase: String,
    },
    #[error("pod `{namespace}/{name}` was not marked evicted within {seconds}s")]
    Timeout {
        namespace: String,
        name: String,
        seconds: u64,
    },
    #[error("API call failed: {0}")]
    Kube(#[from] kube::Error),
}

/// The message of an eviction the sandbox injects (a real kubelet names the resource it ran
/// short of and the measured figures).
pub const EVICTION_MESSAGE: &str = "The node was low on resource: memory. ";

impl Evictor {
    /// Evicts the pod as the kubelet's eviction manager does under node pressure: its worker
    /// kills the containers and marks the pod `Failed` with reason `Evicted` (the pod object
    /// stays; its ReplicaSet, no longer counting it, creates a replacement). Returns once the
    /// API server shows the pod evicted.
    pub async fn evict(&self, namespace: &str, name: &str) -> Result<Pod, EvictError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = api
            .get_opt(name)
            .await?
            .ok_or_else(|| EvictError::NotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })?;
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(self.node.as_str()) {
            return Err(EvictError::OtherNode {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                node: self.node.clone(),
            });
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if let Some(phase @ ("Failed" | "Succeeded")) = phase.as_deref() {
            return Err(EvictError::Ended {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                phase: phase.to_owned(),
            });
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.evictions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(uid.clone(), EVICTION_MESSAGE.to_owned());
        const LIMIT: Duration = Duration::from_secs(30);
        let started = std::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(pod) = api.get_opt(name).await?
                && pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some(status::EVICTED)
            {
                return Ok(pod);
            }
            if started.elapsed() > LIMIT {
                self.evictions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&uid);
                return Err(EvictError::Timeout {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    seconds: LIMIT.as_secs(),
                });
            }
        }
    }
}

impl KubeletHandle {
    /// Evicts pods of this node; usable while the handle is held elsewhere.
    pub fn evictor(&self) -> Evictor {
        self.evictor.clone()
    }

    /// Whether the kubelet loop ended (it runs until stopped, so this means a failure).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for KubeletHandle {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

/// Entry point for the Docker kubelet.
#[derive(Debug)]
pub struct Kubelet;

impl Kubelet {
    /// Prepares Docker (network), registers the Node, removes this node's containers whose pods
    /// no longer exist, then starts the pod loop.
    pub async fn run(client: Client, config: KubeletConfig) -> Result<KubeletHandle, KubeletError> {
        let docker = Docker::default();
        docker.ensure_network(&config.network).await?;
        let host_ip = docker.network_gateway(&config.network).await?;
        register_node(&client, &config.node_name, &host_ip).await;
        remove_orphans(&client, &docker, &config.node_name, &config.root_dir).await?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let stopping = Arc::new(AtomicBool::new(false));
        let shared = worker::Shared {
            events: Recorder::new(client.clone(), "kubelet", Some(config.node_name.clone())),
            client,
            config: Arc::new(config),
            docker,
            http,
            host_ip,
            stopping: stopping.clone(),
            evictions: Arc::default(),
        };
        let evictor = Evictor {
            client: shared.client.clone(),
            node: shared.config.node_name.clone(),
            evictions: shared.evictions.clone(),
        };
        Ok(KubeletHandle {
            task: tokio::spawn(pod_loop(shared)),
            stopping,
            evictor,
        })
    }
}

/// Creates the Node object, or leaves it if it exists; an API server without nodes is fine.
async fn register_node(client: &Client, name: &str, host_ip: &str) {
    let api: Api<Node> = Api::all(client.clone());
    let now = Time(Timestamp::now());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", name),
                    ("kubernetes.io/os", "linux"),
                    ("node-role.kubernetes.io/sandbox", ""),
                ]
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".to_owned(),
                address: host_ip.to_owned(),
            }]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                reason: Some("KubeletReady".to_owned()),
                message: Some("kubelet is posting ready status".to_owned()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(now),
            }]),
            ..NodeStatus::default()
        }),
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => {
            tracing::info!(%error, "the API server does not accept a Node; running without one")
        }
    }
}

/// Removes containers of this node whose pod UID is not a live pod, and those pods' volume
/// directories under `root_dir`.
async fn remove_orphans(
    client: &Client,
    docker: &Docker,
    node: &str,
    root_dir: &std::path::Path,
) -> Result<(), KubeletError> {
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let live: HashSet<String> = pods
        .iter()
        .filter_map(|pod| pod.metadata.uid.clone())
        .collect();
    for (id, labels) in docker
        .list(&[(docker::LABEL_SANDBOX, "1"), (LABEL_NODE, node)])
        .await?
    {
        if labels.get(LABEL_UID).is_none_or(|uid| !live.contains(uid)) {
            docker.remove(&id).await?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(root_dir.join("pods")) {
        for entry in entries.flatten() {
            if !live.contains(&entry.file_name().to_string_lossy().into_owned()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(())
}

/// Binds a pod to the node.
async fn schedule(client: &Client, pod: &Pod, node: &str) {
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        &pod.namespace().unwrap_or_else(|| "default".to_owned()),
    );
    let patch = serde_json::json!({"spec": {"nodeName": node}});
    if let Err(error) = api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(%error, pod = pod.name_any(), "could not schedule pod");
        return;
    }
    let status = serde_json::json!({"status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": Time(Timestamp::now())}],
    }});
    if let Err(error) = api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
    {
        tracing::debug!(%error, pod = pod.name_any(), "could not mark pod scheduled");
    }
}

struct WorkerEntry {
    updates: watch::Sender<Arc<Pod>>,
    task: JoinHandle<()>,
}

async fn pod_loop(shared: worker::Shared) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let node = shared.config.node_name.clone();
    let mut workers: HashMap<String, WorkerEntry> = HashMap::new();
    let mut seen_in_init: HashSet<String> = HashSet::new();
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    loop {
        let event = match stream.next().await {
            Some(Ok(event)) => event,
            Some(Err(error)) => {
                tracing::debug!(%error, "pod watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            None => break,
        };
        workers.retain(|_, entry| !entry.task.is_finished());
        match event {
            watcher::Event::Init => seen_in_init.clear(),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                seen_in_init.insert(uid.clone());
                let assigned = pod.spec.as_ref().and_then(|spec| spec.node_name.clone());
                match assigned {
                    None => {
                        if pod.metadata.deletion_timestamp.is_none() {
                            schedule(&shared.client, &pod, &node).await;
                        }
                    }
                    Some(assigned) if assigned == node => {
                        let pod = Arc::new(pod);
                        match workers.get(&uid) {
                            Some(entry) => {
                                let _ = entry.updates.send(pod);
                            }
                            None => {
                                let phase = pod
                                    .status
                                    .as_ref()
                                    .and_then(|status| status.phase.as_deref());
                                // Finished pods stay finished; nothing to run.
                                if matches!(phase, Some("Succeeded" | "Failed")) {
                                    continue;
                                }
                                let (sender, receiver) = watch::channel(pod);
                                let task = tokio::spawn(worker::run_pod(shared.clone(), receiver));
                                workers.insert(
                                    uid,
                                    WorkerEntry {
                                        updates: sender,
                                        task,
                                    },
                                );
                            }
                        }
                    }
                    Some(_) => {}
                }
            }
            watcher::Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                // Dropping the sender tells the worker to tear down.
                workers.remove(&uid);
            }
            watcher::Event::InitDone => {
                workers.retain(|uid, _| seen_in_init.contains(uid));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_targets_the_sandbox_network_and_registry() {
        let config = KubeletConfig::new("sandbox-node");
        assert_eq!(config.network, "psctl-sandbox");
        assert_eq!(config.allowed_registries[0], "127.0.0.1:5000");
        assert_eq!(config.backoff.base, Duration::from_secs(10));
        assert_eq!(config.backoff.max, Duration::from_secs(300));
    }
}
