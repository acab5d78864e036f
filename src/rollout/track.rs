//! The rollout tracker: kube-rs watches on the Deployment, its ReplicaSets and Pods feed
//! [`diagnosis::assess`] on every change (and at least once a second, for the timeout), printing
//! per-pod progress and returning as soon as the verdict is in, or when the timeout expires.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, LogParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::Serialize;
use tokio::sync::Notify;

use super::diagnosis::{self, Diagnosis, FailureReason, Progress, Snapshot, Verdict};
use crate::cluster::ClusterError;
use crate::output::Output;

/// What to watch.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub deployment: String,
    /// Label selector of the Deployment's pods (and ReplicaSets).
    pub selector: String,
}

/// How a tracked rollout ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Complete {
        progress: Progress,
        seconds: f64,
    },
    Failed {
        diagnosis: Diagnosis,
        logs: Vec<String>,
        seconds: f64,
    },
    TimedOut {
        progress: Option<Progress>,
        diagnosis: Option<Diagnosis>,
        seconds: f64,
    },
}

impl Outcome {
    pub fn is_complete(&self) -> bool {
        matches!(self, Self::Complete { .. })
    }
}

/// A Deployment that is absent this long after tracking starts is reported missing.
const MISSING_GRACE: Duration = Duration::from_secs(15);
/// Last log lines shown for a failing container.
const LOG_LINES: i64 = 20;

/// Tracks the rollout of `target` until it completes, fails, or `timeout` passes.
pub async fn track(
    client: &kube::Client,
    target: &Target,
    timeout: Duration,
    output: &Output,
) -> Result<Outcome, ClusterError> {
    track_and_hold(client, target, timeout, Duration::ZERO, output).await
}

/// Like [`track`], then keeps watching the new pods for `hold` once the rollout is complete: a
/// container that restarts, or a pod unready past [`diagnosis::READINESS_LOSS_GRACE`], fails the
/// rollout (see [`diagnosis::Hold`]). The hold does not count against `timeout`.
pub async fn track_and_hold(
    client: &kube::Client,
    target: &Target,
    timeout: Duration,
    hold: Duration,
    output: &Output,
) -> Result<Outcome, ClusterError> {
    let started = Instant::now();
    let mut deadline = started + timeout;
    // When the rollout was first complete, and what the hold has seen since.
    let mut holding: Option<(Instant, diagnosis::Hold)> = None;
    let notify = Arc::new(Notify::new());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &target.namespace);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &target.namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);

    let refusal = Refusal::default();
    let (deployment_store, deployment_task) = spawn_reflector(
        deployments,
        watcher::Config::default().fields(&format!("metadata.name={}", target.deployment)),
        notify.clone(),
        (
            format!("watching Deployment `{}`", target.deployment),
            refusal.clone(),
        ),
    );
    let (replica_set_store, replica_set_task) = spawn_reflector(
        replica_sets,
        watcher::Config::default().labels(&target.selector),
        notify.clone(),
        ("watching ReplicaSets".to_owned(), refusal.clone()),
    );
    let (pod_store, pod_task) = spawn_reflector(
        pods.clone(),
        watcher::Config::default().labels(&target.selector),
        notify.clone(),
        ("watching Pods".to_owned(), refusal.clone()),
    );
    let _guards = [
        AbortOnDrop(deployment_task),
        AbortOnDrop(replica_set_task),
        AbortOnDrop(pod_task),
    ];

    let ready = async {
        let _ = deployment_store.wait_until_ready().await;
        let _ = replica_set_store.wait_until_ready().await;
        let _ = pod_store.wait_until_ready().await;
    };
    let refused = async {
        loop {
            refusal.signal.notified().await;
            if refusal.taken().is_some() {
                return;
            }
        }
    };
    tokio::select! {
        _ = ready => {}
        () = refused => {}
        () = tokio::time::sleep(timeout) => {
            return Err(ClusterError::Api {
                action: format!(
                    "watching Deployment `{}`: no initial list within the timeout",
                    target.deployment
                ),
                error: kube::Error::Api(Box::new(
                    kube::core::Status::failure("watch not established", "Timeout").with_code(504),
                )),
            });
        }
    }
    if let Some((action, status)) = refusal.taken() {
        return Err(ClusterError::Api {
            action,
            error: kube::Error::Api(status),
        });
    }

    let spinner = output.spinner(format!("rolling out {}", target.deployment));
    let mut last_pod_lines: BTreeMap<String, String> = BTreeMap::new();
    let mut last_progress: Option<Progress> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        if let Some((action, status)) = refusal.taken() {
            spinner.finish();
            return Err(ClusterError::Api {
                action,
                error: kube::Error::Api(status),
            });
        }
        let snapshot = Snapshot {
            deployment: deployment_store.state().first().map(|d| (**d).clone()),
            replica_sets: replica_set_store
                .state()
                .iter()
                .map(|r| (**r).clone())
                .collect(),
            pods: pod_store.state().iter().map(|p| (**p).clone()).collect(),
            events: Vec::new(),
            now: Timestamp::now(),
            watched: started.elapsed(),
        };
        for (pod, line) in pod_lines(&snapshot.pods) {
            if last_pod_lines.get(&pod) != Some(&line) {
                spinner.println(format!("  {pod}: {line}"));
                last_pod_lines.insert(pod, line);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut verdict = diagnosis::assess(&snapshot);
        if matches!(verdict, Verdict::Complete(_)) && !hold.is_zero() && holding.is_none() {
            spinner.println(format!(
                "  rollout complete; holding {}s: a restart or lost readiness still fails it",
                hold.as_secs()
            ));
            let now = Instant::now();
            deadline = deadline.max(now + hold + diagnosis::READINESS_LOSS_GRACE);
            holding = Some((now, diagnosis::Hold::default()));
        }
        if let Some((since, watch)) = &mut holding
            && !matches!(verdict, Verdict::Failed(_))
        {
            if let Some(failure) = watch.judge(&snapshot, diagnosis::READINESS_LOSS_GRACE) {
                verdict = Verdict::Failed(failure);
            } else if let Verdict::Complete(progress) = &verdict
                && since.elapsed() < hold
            {
                verdict = Verdict::Progressing(Progress {
                    message: format!("complete; holding {}s", hold.as_secs()),
                    ..progress.clone()
                });
            }
        }
        match verdict {
            Verdict::Complete(progress) => {
                spinner.finish();
                return Ok(Outcome::Complete { progress, seconds });
            }
            Verdict::Failed(diagnosis)
                if diagnosis.reason == FailureReason::DeploymentMissing
                    && started.elapsed() < MISSING_GRACE => {}
            Verdict::Failed(diagnosis) => {
                spinner.finish();
                let diagnosis = enrich(client, &target.namespace, snapshot, diagnosis).await;
                let logs = match (&diagnosis.pod, &diagnosis.container) {
                    (Some(pod), Some(container)) => {
                        last_logs(&pods, pod, container, &diagnosis.reason).await
                    }
                    _ => Vec::new(),
                };
                return Ok(Outcome::Failed {
                    diagnosis,
                    logs,
                    seconds,
                });
            }
            Verdict::Progressing(progress) => {
                if last_progress.as_ref().map(|p| &p.message) != Some(&progress.message) {
                    spinner.set_message(format!("{}: {}", target.deployment, progress.message));
                }
                last_progress = Some(progress);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            spinner.finish();
            let stuck = first_unready_pod(&diagnosis::new_replica_set_pods(&snapshot));
            return Ok(Outcome::TimedOut {
                progress: last_progress,
                diagnosis: stuck,
                seconds,
            });
        }
        tokio::select! {
            () = notify.notified() => {}
            _ = tick.tick() => {}
            () = tokio::time::sleep_until((deadline).into()) => {}
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What was being watched when the server refused, and its Status.
type Refused = (String, Box<kube::core::Status>);

/// A watch the API server refused (401/403). Retrying cannot help, so the tracker fails at once
/// instead of waiting out its timeout.
#[derive(Clone, Default)]
struct Refusal {
    refused: Arc<std::sync::Mutex<Option<Refused>>>,
    signal: Arc<Notify>,
}

impl Refusal {
    fn taken(&self) -> Option<Refused> {
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, action: &str, status: Box<kube::core::Status>) {
        let mut slot = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some((action.to_owned(), status));
        }
        drop(slot);
        self.signal.notify_one();
    }
}

/// The Status of a watch error the server answered with 401 or 403.
fn refused_status(error: &watcher::Error) -> Option<Box<kube::core::Status>> {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status))
        | watcher::Error::WatchError(status) => status,
        _ => return None,
    };
    matches!(status.code, 401 | 403).then(|| status.clone())
}

fn spawn_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    notify: Arc<Notify>,
    (action, refusal): (String, Refusal),
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let Err(error) = item {
                if let Some(status) = refused_status(&error) {
                    refusal.record(&action, status);
                    notify.notify_one();
                    return;
                }
                tracing::debug!(%error, "watch error; retrying with back-off");
            }
            notify.notify_one();
        }
    });
    (store, task)
}

/// Adds the failing pod's (or Deployment's) events to the diagnosis.
async fn enrich(
    client: &kube::Client,
    namespace: &str,
    mut snapshot: Snapshot,
    diagnosis: Diagnosis,
) -> Diagnosis {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let object = diagnosis
        .pod
        .clone()
        .or_else(|| {
            snapshot
                .deployment
                .as_ref()
                .and_then(|d| d.metadata.name.clone())
        })
        .unwrap_or_default();
    match events
        .list(&ListParams::default().fields(&format!("involvedObject.name={object}")))
        .await
    {
        Ok(list) => snapshot.events = list.items,
        Err(error) => tracing::debug!(%error, "cannot list events"),
    }
    diagnosis::with_events(diagnosis, &snapshot.events)
}

/// The last log lines of the failing container (its previous instance when it crashed).
async fn last_logs(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    reason: &FailureReason,
) -> Vec<String> {
    let crashed = matches!(
        reason,
        FailureReason::CrashLoopBackOff | FailureReason::OomKilled | FailureReason::Restarted
    );
    for previous in if crashed {
        vec![true, false]
    } else {
        vec![false]
    } {
        let params = LogParams {
            container: Some(container.to_owned()),
            tail_lines: Some(LOG_LINES),
            previous,
            ..LogParams::default()
        };
        if let Ok(text) = pods.logs(pod, &params).await
            && !text.trim().is_empty()
        {
            return text.lines().map(str::to_owned).collect();
        }
    }
    Vec::new()
}

/// One status line per pod, e.g. `Running, ready 1/1, restarts 0, image …:1.4.2`.
pub fn pod_lines(pods: &[Pod]) -> BTreeMap<String, String> {
    pods.iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.clone()?;
            let status = pod.status.as_ref();
            let containers = status
                .and_then(|s| s.container_statuses.as_ref())
                .cloned()
                .unwrap_or_default();
            let ready = containers.iter().filter(|c| c.ready).count();
            let restarts: i32 = containers.iter().map(|c| c.restart_count).sum();
            let waiting = containers
                .iter()
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
                .next();
            let phase = waiting
                .or_else(|| status.and_then(|s| s.phase.clone()))
                .unwrap_or_else(|| "Pending".to_owned());
            let phase = if pod.metadata.deletion_timestamp.is_some() {
                "Terminating".to_owned()
            } else {
                phase
            };
            let total = pod
                .spec
                .as_ref()
                .map_or(containers.len(), |s| s.containers.len());
            Some((
                name,
                format!("{phase}, ready {ready}/{total}, restarts {restarts}"),
            ))
        })
        .collect()
}

/// The first pod of the new ReplicaSet with an unready container (older ReplicaSets' pods are
/// not what the timeout is about).
fn first_unready_pod(pods: &[&Pod]) -> Option<Diagnosis> {
    pods.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let unready = status
            .container_statuses
            .iter()
            .flatten()
            .find(|c| !c.ready)?;
        let reason = unready
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref().and_then(|w| w.reason.clone()))
            .unwrap_or_else(|| "NotReady".to_owned());
        Some(Diagnosis {
            reason: FailureReason::ReadinessTimeout,
            detail: reason,
            pod: pod.metadata.name.clone(),
            container: Some(unready.name.clone()),
            message: "still not ready when the timeout expired".to_owned(),
            events: Vec::new(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_watches_are_told_apart_from_retryable_failures() {
        let status = |code: u16| Box::new(kube::core::Status::failure("x", "y").with_code(code));
        let forbidden = watcher::Error::InitialListFailed(kube::Error::Api(status(403)));
        assert_eq!(refused_status(&forbidden).map(|s| s.code), Some(403));
        let unauthorized = watcher::Error::WatchError(status(401));
        assert_eq!(refused_status(&unauthorized).map(|s| s.code), Some(401));
        // A 410 re-lists and a 500 is retried with back-off: neither is a refusal.
        assert!(refused_status(&watcher::Error::WatchError(status(410))).is_none());
        assert!(
            refused_status(&watcher::Error::WatchStartFailed(kube::Error::Api(status(
                500
            ))))
            .is_none()
        );
        assert!(refused_status(&watcher::Error::NoResourceVersion).is_none());
    }

    #[test]
    fn pod_lines_summarise_phase_readiness_and_restarts() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1"},
            "spec": {"containers": [{"name": "w", "image": "x"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "w", "image": "x", "imageID": "", "ready": false,
                "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
        }))
        .unwrap();
        assert_eq!(
            pod_lines(&[pod])["web-1"],
            "CrashLoopBackOff, ready 0/1, restarts 3"
        );
    }
}
