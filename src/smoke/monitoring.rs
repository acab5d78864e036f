//! Monitoring checks: a ServiceMonitor (monitoring.coreos.com/v1) selects each component,
//! Prometheus lists the component's targets UP (`/api/v1/targets`), and a sample PromQL query
//! over its required metrics returns data. Matching and judging are pure.
//!
//! Targets are matched by label: the environment's `namespace` plus every `key=value` of the
//! component's selector (and of the run's pod selector), which is how the sandbox's Prometheus
//! and a prometheus-operator `podTargetLabels: [app, track]` label them.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

use super::{Outcome, pod_selector, selector_pairs};
use crate::cluster::describe;
use crate::prom::{PromError, Prometheus, Sample, Target};
use crate::settings::Component;

/// The ServiceMonitors of `namespace` that select the component: every label pair of its
/// selector appears in the monitor's `spec.selector.matchLabels`. Pure.
pub fn matching_monitors(monitors: &[DynamicObject], component: &Component) -> Vec<String> {
    let wanted = selector_pairs(&component.selector);
    monitors
        .iter()
        .filter(|monitor| {
            let labels = &monitor.data["spec"]["selector"]["matchLabels"];
            wanted
                .iter()
                .all(|(key, value)| labels[key.as_str()].as_str() == Some(value.as_str()))
        })
        .filter_map(|monitor| monitor.metadata.name.clone())
        .collect()
}

/// Lists ServiceMonitors in `namespace` and looks for one selecting the component.
pub async fn service_monitor(
    client: &kube::Client,
    namespace: &str,
    component: &Component,
) -> Outcome {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            return Outcome::fail(
                "the cluster does not serve monitoring.coreos.com/v1 ServiceMonitor: install the Prometheus operator's CRDs",
            );
        }
        Err(error @ kube::Error::Api(_)) => {
            return Outcome::fail(format!("listing ServiceMonitors: {}", describe(&error)));
        }
        Err(error) => {
            return Outcome::unreachable(format!(
                "the API server is unreachable (listing ServiceMonitors): {}",
                describe(&error)
            ));
        }
    };
    let found = matching_monitors(&list.items, component);
    if found.is_empty() {
        Outcome::fail(format!(
            "no ServiceMonitor in `{namespace}` selects `{}` ({} present): set the chart value `serviceMonitor.enabled: true` in the component's `values`",
            component.selector,
            list.items.len()
        ))
    } else {
        Outcome::pass(format!(
            "ServiceMonitor {} selects `{}`",
            found
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            component.selector
        ))
    }
}

/// Label pairs a component's targets carry: the namespace and the (narrowed) selector's pairs.
pub fn target_labels(
    namespace: &str,
    component: &Component,
    pods: Option<&str>,
) -> Vec<(String, String)> {
    let mut labels = vec![("namespace".to_owned(), namespace.to_owned())];
    labels.extend(selector_pairs(&pod_selector(component, pods)));
    labels
}

/// The verdict on Prometheus' targets for a component: at least one, all UP. Pure.
pub fn judge_targets(targets: &[Target], labels: &[(String, String)], prometheus: &str) -> Outcome {
    let matching: Vec<&Target> = targets
        .iter()
        .filter(|t| {
            labels
                .iter()
                .all(|(key, value)| t.labels.get(key) == Some(value))
        })
        .collect();
    let description = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(",");
    if matching.is_empty() {
        return Outcome::fail(format!(
            "Prometheus at {prometheus} has no target {{{description}}} ({} targets in all): it has not discovered the pods; check its service discovery (ServiceMonitor, file_sd)",
            targets.len()
        ));
    }
    let name = |t: &Target| {
        t.labels
            .get("pod")
            .cloned()
            .unwrap_or_else(|| t.scrape_url.clone())
    };
    let down: Vec<String> = matching
        .iter()
        .filter(|t| !t.is_up())
        .map(|t| {
            if t.last_error.is_empty() {
                format!("{} is {}", name(t), t.health)
            } else {
                format!("{} is {}: {}", name(t), t.health, t.last_error)
            }
        })
        .collect();
    if down.is_empty() {
        Outcome::pass(format!(
            "{} target(s) {{{description}}} UP: {}",
            matching.len(),
            matching
                .iter()
                .map(|t| name(t))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        Outcome::fail(format!(
            "{} of {} target(s) {{{description}}} not UP: {}",
            down.len(),
            matching.len(),
            down.join("; ")
        ))
    }
}

/// Asks Prometheus for its targets and judges the component's.
pub async fn targets(
    prometheus: &Prometheus,
    namespace: &str,
    component: &Component,
    pods: Option<&str>,
) -> Outcome {
    match prometheus.targets().await {
        Ok(targets) => judge_targets(
            &targets,
            &target_labels(namespace, component, pods),
            prometheus.base_url(),
        ),
        Err(error) => prom_failure(&error),
    }
}

/// `count({namespace="…",app="…",__name__=~"required|names"})`: how many series of the
/// component's required metrics Prometheus holds (`up` when none are configured).
pub fn sample_query(namespace: &str, component: &Component, pods: Option<&str>) -> String {
    let labels = target_labels(namespace, component, pods)
        .into_iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(&v)))
        .collect::<Vec<_>>()
        .join(",");
    match component
        .metrics
        .as_ref()
        .filter(|m| !m.required.is_empty())
    {
        Some(metrics) => format!(
            "count({{{labels},__name__=~\"{}\"}})",
            metrics
                .required
                .iter()
                .map(|name| escape(name))
                .collect::<Vec<_>>()
                .join("|")
        ),
        None => format!("count(up{{{labels}}})"),
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The verdict on a sample query's answer: some series with a positive value. Pure.
pub fn judge_query(query: &str, samples: &[Sample]) -> Outcome {
    let value = samples.iter().filter_map(Sample::finite).sum::<f64>();
    if value > 0.0 {
        Outcome::pass(format!("`{query}` = {value}"))
    } else {
        Outcome::fail(format!(
            "`{query}` returned no data: Prometheus holds no series of the component's metrics yet (not scraped, or scraped without these labels)"
        ))
    }
}

pub async fn query(prometheus: &Prometheus, promql: &str) -> Outcome {
    match prometheus.query(promql).await {
        Ok(samples) => judge_query(promql, &samples),
        Err(error) => prom_failure(&error),
    }
}

fn prom_failure(error: &PromError) -> Outcome {
    if error.is_unreachable() {
        Outcome::unreachable(format!(
            "{error}; is Prometheus running? (sandbox: `psctl-sandbox fault prometheus start`)"
        ))
    } else {
        Outcome::fail(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::Verdict;
    use super::*;

    fn component() -> Component {
        super::super::tests::environment().components[1].clone()
    }

    fn target(pod: &str, namespace: &str, health: &str) -> Target {
        Target {
            scrape_url: format!("http://10.0.0.1:8001/metrics#{pod}"),
            health: health.to_owned(),
            last_error: if health == "up" {
                String::new()
            } else {
                "connection refused".to_owned()
            },
            labels: BTreeMap::from([
                ("namespace".to_owned(), namespace.to_owned()),
                ("app".to_owned(), "problemsolver-webhook".to_owned()),
                ("pod".to_owned(), pod.to_owned()),
                ("track".to_owned(), "stable".to_owned()),
            ]),
        }
    }

    #[test]
    fn targets_of_the_namespace_and_app_must_all_be_up() {
        let labels = target_labels("apps", &component(), None);
        let targets = [
            target("w-1", "apps", "up"),
            target("w-2", "apps", "up"),
            target("w-9", "other", "down"),
        ];
        assert_eq!(
            judge_targets(&targets, &labels, "http://p"),
            Outcome::pass(
                "2 target(s) {namespace=\"apps\",app=\"problemsolver-webhook\"} UP: w-1, w-2"
            )
        );
        let down = judge_targets(
            &[target("w-1", "apps", "up"), target("w-2", "apps", "down")],
            &labels,
            "http://p",
        );
        assert_eq!(down.verdict, Verdict::Fail);
        assert!(
            down.evidence.ends_with("w-2 is down: connection refused"),
            "{}",
            down.evidence
        );
        let none = judge_targets(&targets[2..], &labels, "http://p");
        assert!(
            none.evidence
                .starts_with("Prometheus at http://p has no target"),
            "{}",
            none.evidence
        );
    }

    #[test]
    fn a_canary_selection_narrows_targets_by_track() {
        let labels = target_labels("apps", &component(), Some("track=canary"));
        let outcome = judge_targets(&[target("w-1", "apps", "up")], &labels, "http://p");
        assert_eq!(outcome.verdict, Verdict::Fail);
    }

    #[test]
    fn the_sample_query_counts_the_required_series() {
        assert_eq!(
            sample_query("apps", &component(), None),
            "count({namespace=\"apps\",app=\"problemsolver-webhook\",__name__=~\"webhook_deliveries_total|webhook_queue_depth|worker_health_status|circuit_breaker_opens_total\"})"
        );
        assert_eq!(
            judge_query("q", &[]).verdict,
            Verdict::Fail,
            "an empty vector is no data"
        );
        let sample = Sample {
            labels: BTreeMap::new(),
            value: 4.0,
        };
        assert_eq!(judge_query("q", &[sample]), Outcome::pass("`q` = 4"));
    }

    #[test]
    fn monitors_match_on_the_selector_labels() {
        let monitor = |name: &str, app: &str| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                "metadata": {"name": name},
                "spec": {"selector": {"matchLabels": {"app": app, "psctl.io/metrics": "true"}}},
            }))
            .unwrap()
        };
        let monitors = [
            monitor("problemsolver-poller", "problemsolver-poller"),
            monitor("problemsolver-webhook", "problemsolver-webhook"),
        ];
        assert_eq!(
            matching_monitors(&monitors, &component()),
            ["problemsolver-webhook"]
        );
        assert!(matching_monitors(&monitors[..1], &component()).is_empty());
    }

    #[tokio::test]
    async fn prometheus_down_fails_as_unreachable_with_the_fix() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let prometheus = Prometheus::new(
            &format!("http://127.0.0.1:{port}"),
            std::time::Duration::from_secs(2),
        )
        .unwrap();
        let outcome = targets(&prometheus, "apps", &component(), None).await;
        assert!(outcome.unreachable);
        assert!(
            outcome.evidence.contains("is unreachable")
                && outcome.evidence.contains("is Prometheus running?"),
            "{}",
            outcome.evidence
        );
    }
}
