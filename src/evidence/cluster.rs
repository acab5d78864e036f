//! The cluster's items: pods (status only), container logs (current and, after a restart,
//! previous), the namespace's events (also the postmortem's timeline) and Helm's history.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, LogParams};
use serde::Serialize;

use super::Collector;
use crate::cluster;
use crate::helm::storage::read_revisions;
use crate::postmortem;
use crate::rollout::track::pod_lines;
use crate::settings::Environment;

/// Collects the cluster's items; returns the events of the window for the postmortem's
/// timeline (`None` when they could not be listed).
pub async fn collect(
    client: &kube::Client,
    environment: &Environment,
    since: Duration,
    tail: u32,
    now: Timestamp,
    collector: &mut Collector<'_>,
) -> Option<Vec<postmortem::EventLine>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &environment.namespace);
    for component in &environment.components {
        let list = match pods
            .list(&ListParams::default().labels(&component.selector))
            .await
        {
            Ok(list) => list.items,
            Err(error) => {
                collector.skip(
                    &format!("pods {}", component.name),
                    cluster::describe(&error),
                );
                continue;
            }
        };
        let summary: Vec<PodSummary> = list.iter().map(pod_summary).collect();
        collector.json(
            &format!("pods {}", component.name),
            &format!("{}/pods.json", component.name),
            &summary,
            format!("{} pods", list.len()),
        );
        for line in pod_lines(&list).values() {
            tracing::debug!("{line}");
        }
        for pod in &list {
            collect_logs(&pods, component.name.as_str(), pod, since, tail, collector).await;
        }
    }

    let events: Api<Event> = Api::namespaced(client.clone(), &environment.namespace);
    let timeline = match events.list(&ListParams::default()).await {
        Ok(list) => {
            let cutoff = now.as_second() - since.as_secs() as i64;
            let mut lines: Vec<(i64, String, String)> = list
                .items
                .iter()
                .filter_map(|event| {
                    let at = event_time(event)?;
                    (at >= cutoff).then(|| (at, event_line(event), event_summary(event)))
                })
                .collect();
            lines.sort();
            let text: String = lines.iter().map(|(_, l, _)| format!("{l}\n")).collect();
            let count = text.lines().count();
            collector.write("events", "events.txt", &text, format!("{count} events"));
            Some(
                lines
                    .into_iter()
                    .map(|(at, _, text)| postmortem::EventLine { at, text })
                    .collect(),
            )
        }
        Err(error) => {
            collector.skip("events", cluster::describe(&error));
            None
        }
    };

    match read_revisions(client, &environment.namespace, &environment.releases()).await {
        Ok(revisions) => collector.json(
            "helm history",
            "helm-history.json",
            &revisions,
            format!("{} revisions", revisions.len()),
        ),
        Err(error) => collector.skip("helm history", format!("{:#}", error.error())),
    }
    timeline
}

#[derive(Debug, Serialize)]
struct PodSummary {
    name: String,
    phase: String,
    node: String,
    track: Option<String>,
    containers: Vec<ContainerSummary>,
}

#[derive(Debug, Serialize)]
struct ContainerSummary {
    name: String,
    image: String,
    ready: bool,
    restarts: i32,
    state: String,
    last_state: String,
}

/// Status only: the spec (with its env) is deliberately not copied.
fn pod_summary(pod: &Pod) -> PodSummary {
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| ContainerSummary {
            name: c.name,
            image: c.image,
            ready: c.ready,
            restarts: c.restart_count,
            state: describe_state(c.state.as_ref()),
            last_state: describe_state(c.last_state.as_ref()),
        })
        .collect();
    PodSummary {
        name: pod.metadata.name.clone().unwrap_or_default(),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        track: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("track").cloned()),
        containers,
    }
}

fn describe_state(state: Option<&k8s_openapi::api::core::v1::ContainerState>) -> String {
    let Some(state) = state else {
        return String::new();
    };
    if let Some(running) = &state.running {
        return format!(
            "running since {}",
            running
                .started_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default()
        );
    }
    if let Some(waiting) = &state.waiting {
        return format!(
            "waiting: {} {}",
            waiting.reason.clone().unwrap_or_default(),
            waiting.message.clone().unwrap_or_default()
        )
        .trim_end()
        .to_owned();
    }
    if let Some(terminated) = &state.terminated {
        return format!(
            "terminated: {} (exit {})",
            terminated.reason.clone().unwrap_or_default(),
            terminated.exit_code
        );
    }
    String::new()
}

async fn collect_logs(
    pods: &Api<Pod>,
    component: &str,
    pod: &Pod,
    since: Duration,
    tail: u32,
    collector: &mut Collector<'_>,
) {
    let Some(name) = pod.metadata.name.as_deref() else {
        return;
    };
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    for status in statuses {
        let mut instances = vec![false];
        if status.restart_count > 0 {
            instances.push(true);
        }
        for previous in instances {
            let params = LogParams {
                container: Some(status.name.clone()),
                tail_lines: Some(i64::from(tail)),
                since_seconds: (!previous).then_some(since.as_secs() as i64),
                previous,
                ..LogParams::default()
            };
            let which = if previous { "previous" } else { "current" };
            let item = format!("logs {name}/{} ({which})", status.name);
            let file = format!(
                "{component}/logs/{name}.{}{}.log",
                status.name,
                if previous { ".previous" } else { "" }
            );
            match pods.logs(name, &params).await {
                Ok(text) => {
                    let lines = text.lines().count();
                    collector.write(&item, &file, &text, format!("{lines} lines"));
                }
                Err(error) => collector.skip(&item, cluster::describe(&error)),
            }
        }
    }
}

fn event_time(event: &Event) -> Option<i64> {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .or_else(|| event.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
}

fn event_line(event: &Event) -> String {
    let at = event_time(event)
        .and_then(|s| Timestamp::from_second(s).ok())
        .map(|t| t.to_string())
        .unwrap_or_default();
    format!("{at} {}", event_summary(event))
}

/// An event without its time: type, object, reason, message and count.
fn event_summary(event: &Event) -> String {
    let object = format!(
        "{}/{}",
        event.involved_object.kind.clone().unwrap_or_default(),
        event.involved_object.name.clone().unwrap_or_default()
    );
    format!(
        "{} {object} {}: {} (x{})",
        event.type_.clone().unwrap_or_default(),
        event.reason.clone().unwrap_or_default(),
        event.message.clone().unwrap_or_default().replace('\n', " "),
        event.count.unwrap_or(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_summary_keeps_states_and_drops_the_spec() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w-1", "labels": {"track": "canary"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "worker", "image": "x:1",
                "env": [{"name": "DATABASE_URL", "value": "postgres://u:hunter2@db/x"}]}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "worker", "image": "x:1",
                "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]}
        }))
        .unwrap();
        let summary = serde_json::to_string(&pod_summary(&pod)).unwrap();
        assert!(summary.contains("waiting: CrashLoopBackOff"), "{summary}");
        assert!(summary.contains("terminated: Error (exit 1)"), "{summary}");
        assert!(summary.contains("\"track\":\"canary\""), "{summary}");
        assert!(!summary.contains("hunter2"), "{summary}");
    }
}
