//! Prometheus targets from the API server's pods (the file_sd list the daemon keeps): a running
//! pod with an IP is scraped on its container ports named `metrics`, or on the port of a
//! `prometheus.io/scrape: "true"` annotation; each target keeps `namespace`, `pod`, `app` and
//! `track` labels, as Kubernetes service discovery with the usual relabelling would.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

/// One file_sd entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// The target groups for `pods`, sorted so an unchanged cluster gives an unchanged file.
pub fn target_groups(pods: &[Pod]) -> Vec<TargetGroup> {
    let mut groups = Vec::new();
    for pod in pods {
        let Some(status) = &pod.status else { continue };
        if status.phase.as_deref() != Some("Running") || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(ip) = status.pod_ip.as_deref().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
        let path = annotations.get("prometheus.io/path").cloned();
        let mut ports: Vec<i32> = Vec::new();
        if annotations.get("prometheus.io/scrape").map(String::as_str) == Some("true")
            && let Some(port) = annotations
                .get("prometheus.io/port")
                .and_then(|port| port.parse().ok())
        {
            ports.push(port);
        }
        if let Some(spec) = &pod.spec {
            for container in &spec.containers {
                for port in container.ports.iter().flatten() {
                    if port.name.as_deref() == Some("metrics") {
                        ports.push(port.container_port);
                    }
                }
            }
        }
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            let mut labels = BTreeMap::new();
            labels.insert(
                "namespace".to_owned(),
                pod.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_owned()),
            );
            labels.insert(
                "pod".to_owned(),
                pod.metadata.name.clone().unwrap_or_default(),
            );
            for key in ["app", "track"] {
                if let Some(value) = pod_labels.get(key) {
                    labels.insert(key.to_owned(), value.clone());
                }
            }
            if let Some(instance) = pod_labels.get("app.kubernetes.io/instance") {
                labels.insert("release".to_owned(), instance.clone());
            }
            if let Some(path) = &path {
                labels.insert("__metrics_path__".to_owned(), path.clone());
            }
            groups.push(TargetGroup {
                targets: vec![format!("{ip}:{port}")],
                labels,
            });
        }
    }
    groups.sort();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, ip: Option<&str>, extra: serde_json::Value) -> Pod {
        let mut value = serde_json::json!({
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"app": "problemsolver-webhook", "track": "canary", "pod-template-hash": "abc"}},
            "spec": {"containers": [{"name": "worker", "image": "x",
                                     "ports": [{"name": "metrics", "containerPort": 8001}, {"name": "http", "containerPort": 80}]}]},
            "status": {"phase": phase, "podIP": ip},
        });
        if let (Some(target), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            for (key, field) in extra {
                target.insert(key.clone(), field.clone());
            }
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn running_pods_are_scraped_on_their_metrics_port_with_their_labels() {
        let groups = target_groups(&[pod(
            "worker-1",
            "Running",
            Some("172.30.0.5"),
            serde_json::json!({}),
        )]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].targets, vec!["172.30.0.5:8001"]);
        assert_eq!(groups[0].labels["pod"], "worker-1");
        assert_eq!(groups[0].labels["track"], "canary");
        assert_eq!(groups[0].labels["app"], "problemsolver-webhook");
        assert!(!groups[0].labels.contains_key("pod-template-hash"));
    }

    #[test]
    fn pending_or_ip_less_pods_are_not_targets() {
        let groups = target_groups(&[
            pod("a", "Pending", Some("172.30.0.5"), serde_json::json!({})),
            pod("b", "Running", None, serde_json::json!({})),
        ]);
        assert!(groups.is_empty());
    }

    #[test]
    fn scrape_annotations_add_a_port_and_a_path() {
        let annotated = pod(
            "c",
            "Running",
            Some("172.30.0.6"),
            serde_json::json!({"metadata": {"name": "c", "namespace": "team",
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9100", "prometheus.io/path": "/m"}}}),
        );
        let groups = target_groups(&[annotated]);
        let targets: Vec<&str> = groups
            .iter()
            .map(|group| group.targets[0].as_str())
            .collect();
        assert_eq!(targets, vec!["172.30.0.6:8001", "172.30.0.6:9100"]);
        assert_eq!(groups[0].labels["namespace"], "team");
        assert_eq!(groups[1].labels["__metrics_path__"], "/m");
    }
}
