//! What `psctl status` shows: one screen per environment, each component's release and
//! revision, its Deployments (with the kill switch's remembered count), its pods (ready,
//! restarts, age, image), and the headline gauges of its metrics endpoint. The types, their
//! rendering and the reading of pods and metrics text are pure here; `read.rs` gathers them
//! from the cluster.

mod read;

pub use read::collect;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::cluster::image::{self, AppImage};
use crate::output::{Render, Style, table};

/// The `-o json` schema of `psctl status`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub environment: String,
    pub namespace: String,
    /// Who holds the deploy Lease (`user@host pid N (operation)`), when anyone does.
    pub lock_holder: Option<String>,
    pub components: Vec<ComponentStatus>,
}

#[derive(Debug, Serialize)]
pub struct ComponentStatus {
    pub component: String,
    pub release: String,
    pub revision: Option<u32>,
    pub release_status: Option<String>,
    pub image_tag: Option<String>,
    /// The component's Deployments: the stable track and, while one exists, the canary track.
    pub deployments: Vec<DeploymentStatus>,
    pub pods: Vec<PodStatus>,
    /// Selected gauges from the metrics endpoint (e.g. `problemsolver_poller_last_success_unixtime`,
    /// `webhook_queue_depth`); absent when the endpoint could not be read.
    pub metrics: Option<std::collections::BTreeMap<String, f64>>,
    /// Why `metrics` is absent.
    pub metrics_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeploymentStatus {
    pub name: String,
    /// `stable` or `canary`.
    pub track: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// While the kill switch holds this Deployment at zero: the count `kill-switch off`
    /// restores.
    pub kill_switch_remembered: Option<i32>,
}

#[derive(Debug, Serialize)]
pub struct PodStatus {
    pub name: String,
    pub ready: String,
    pub phase: String,
    pub restarts: i32,
    pub age_seconds: Option<i64>,
    pub image: String,
    pub track: Option<String>,
}

/// Gauges worth one glance at 3 a.m.
const HEADLINE_METRICS: [&str; 5] = [
    "problemsolver_poller_last_success_unixtime",
    "problemsolver_poller_consecutive_errors",
    "webhook_queue_depth",
    "worker_health_status",
    "problemsolver_poller_is_leader",
];

impl Render for Status {
    fn render_table(&self, _style: &Style) -> String {
        let now = Timestamp::now().as_second();
        let mut text = format!(
            "environment {} (namespace {})\n",
            self.environment, self.namespace
        );
        if let Some(holder) = &self.lock_holder {
            text.push_str(&format!("deploy lock held by {holder}\n"));
        }
        for component in &self.components {
            for deployment in &component.deployments {
                if let Some(remembered) = deployment.kill_switch_remembered {
                    text.push_str(&format!(
                        "KILL SWITCH ON: {} held at {} replicas ({remembered} restored by `psctl kill-switch off`)\n",
                        deployment.name, deployment.replicas
                    ));
                }
            }
        }
        text.push('\n');
        text.push_str(&table::render(
            &[
                "COMPONENT",
                "RELEASE",
                "REVISION",
                "STATUS",
                "IMAGE TAG",
                "HEALTH",
            ],
            self.components.iter().map(|c| {
                [
                    c.component.clone(),
                    c.release.clone(),
                    c.revision.map_or_else(|| "-".to_owned(), |r| r.to_string()),
                    c.release_status
                        .clone()
                        .unwrap_or_else(|| "not installed".to_owned()),
                    c.image_tag.clone().unwrap_or_default(),
                    health_line(c, now),
                ]
            }),
        ));
        text.push('\n');
        text.push_str(&table::render(
            &["POD", "READY", "STATUS", "RESTARTS", "AGE", "IMAGE"],
            self.components.iter().flat_map(|c| c.pods.iter()).map(|p| {
                [
                    p.name.clone(),
                    p.ready.clone(),
                    p.phase.clone(),
                    p.restarts.to_string(),
                    p.age_seconds.map(human_age).unwrap_or_default(),
                    p.image.clone(),
                ]
            }),
        ));
        text
    }
}

fn health_line(component: &ComponentStatus, now: i64) -> String {
    let Some(metrics) = &component.metrics else {
        return component
            .metrics_error
            .clone()
            .map(|e| format!("metrics unavailable: {e}"))
            .unwrap_or_default();
    };
    let mut parts = Vec::new();
    if let Some(last) = metrics.get("problemsolver_poller_last_success_unixtime") {
        // Whole seconds are all an operator needs; the gauge is a Unix time.
        #[allow(clippy::cast_possible_truncation)]
        let ago = now - *last as i64;
        parts.push(if *last > 0.0 {
            format!("last poll success {} ago", human_age(ago))
        } else {
            "no successful poll yet".to_owned()
        });
    }
    if let Some(depth) = metrics.get("webhook_queue_depth") {
        parts.push(format!("queue depth {depth}"));
    }
    if let Some(health) = metrics.get("worker_health_status") {
        parts.push(if *health >= 1.0 {
            "worker healthy".to_owned()
        } else {
            "worker UNHEALTHY".to_owned()
        });
    }
    parts.join(", ")
}

fn human_age(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "0s".to_owned(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// One pod as the table shows it. Pure.
pub fn pod_status(pod: &Pod, app: AppImage<'_>) -> PodStatus {
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let total = pod
        .spec
        .as_ref()
        .map_or(containers.len(), |s| s.containers.len());
    let waiting = containers
        .iter()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
    PodStatus {
        name: pod.metadata.name.clone().unwrap_or_default(),
        ready: format!("{}/{total}", containers.iter().filter(|c| c.ready).count()),
        // An ended pod shows why it ended (`Evicted`, `Shutdown`), as `kubectl get pods` does.
        phase: status
            .filter(|s| matches!(s.phase.as_deref(), Some("Failed" | "Succeeded")))
            .and_then(|s| s.reason.clone())
            .or(waiting)
            .or_else(|| status.and_then(|s| s.phase.clone()))
            .unwrap_or_else(|| "Pending".to_owned()),
        restarts: containers.iter().map(|c| c.restart_count).sum(),
        age_seconds: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| Timestamp::now().as_second() - t.0.as_second()),
        // The application's image, not an injected sidecar's.
        image: pod
            .spec
            .as_ref()
            .and_then(|s| image::app_image(s, app))
            .unwrap_or_default(),
        track: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("track"))
            .cloned(),
    }
}

/// One of a component's Deployments as `status` shows it (no `spec.replicas` means 1, the API
/// server's default). Pure.
pub fn deployment_status(name: &str, track: &str, object: &Deployment) -> DeploymentStatus {
    DeploymentStatus {
        name: name.to_owned(),
        track: track.to_owned(),
        replicas: object.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        kill_switch_remembered: crate::kill_switch::remembered(object)
            .and_then(|v| v.trim().parse().ok()),
    }
}

/// Sums each headline gauge over its series. Pure.
pub fn headline_metrics(exposition: &str) -> std::collections::BTreeMap<String, f64> {
    let mut values = std::collections::BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if !HEADLINE_METRICS.contains(&name) {
            continue;
        }
        if let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *values.entry(name.to_owned()).or_insert(0.0) += value;
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headline_metrics_are_extracted_and_summed() {
        let text = "# TYPE webhook_queue_depth gauge\nwebhook_queue_depth 4\n\
                    problemsolver_poller_last_success_unixtime 1790000000\nother_metric 9\n\
                    worker_health_status{pod=\"a\"} 1\n";
        let metrics = headline_metrics(text);
        assert_eq!(metrics.len(), 3);
        assert_eq!(metrics["webhook_queue_depth"], 4.0);
        assert_eq!(
            metrics["problemsolver_poller_last_success_unixtime"],
            1_790_000_000.0
        );
    }

    #[test]
    fn a_deployment_held_by_the_kill_switch_shows_its_remembered_count() {
        let held: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w", "annotations": {crate::kill_switch::REPLICAS_ANNOTATION: "3"}},
            "spec": {"replicas": 0, "selector": {}, "template": {}},
        }))
        .unwrap();
        let status = deployment_status("w", "stable", &held);
        assert_eq!(
            (status.replicas, status.kill_switch_remembered),
            (0, Some(3))
        );
        let running: Deployment =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "w"}})).unwrap();
        let status = deployment_status("w", "canary", &running);
        assert_eq!((status.replicas, status.kill_switch_remembered), (1, None));
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(600), "10m");
        assert_eq!(human_age(7200), "2h");
        assert_eq!(human_age(3 * 86400), "3d");
    }

    #[test]
    fn the_health_line_summarises_the_gauges() {
        let component = ComponentStatus {
            component: "webhook".into(),
            release: "r".into(),
            revision: Some(1),
            release_status: Some("deployed".into()),
            image_tag: None,
            deployments: Vec::new(),
            pods: Vec::new(),
            metrics: Some(
                [
                    ("webhook_queue_depth".to_owned(), 2.0),
                    ("worker_health_status".to_owned(), 0.0),
                ]
                .into(),
            ),
            metrics_error: None,
        };
        assert_eq!(
            health_line(&component, 0),
            "queue depth 2, worker UNHEALTHY"
        );
    }
}
