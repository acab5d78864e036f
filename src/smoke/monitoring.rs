//! Monitoring checks: a ServiceMonitor (monitoring.coreos.com/v1) selects each component,
//! Prometheus lists the component's targets UP (`/api/v1/targets`), a sample PromQL query
//! over its required metrics returns data, and Prometheus has loaded the rules of the
//! component's PrometheusRule (`/api/v1/rules`). Matching and judging are pure.
//!
//! Targets are matched by label: the environment's `namespace` plus every `key=value` of the
//! component's selector (and of the run's pod selector), which is how the sandbox's Prometheus
//! and a prometheus-operator `podTargetLabels: [app, track]` label them.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

use super::{Outcome, pod_selector, selector_pairs};
use crate::cluster::describe;
use crate::prom::{PromError, Prometheus, RuleGroup, Sample, Target};
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
        Err(error @ kube::Error::Api(_)) if !super::server_error(&error) => {
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

/// The chart value that renders a component's PrometheusRule (the repository's charts, and the
/// usual name in community charts).
pub const RULES_SWITCH: &str = "prometheusRule.enabled";

/// `prometheusRule.enabled` in the component's `values`, when the environment sets it. Pure.
pub fn rules_switch(component: &Component) -> Option<bool> {
    let (section, key) = RULES_SWITCH.split_once('.')?;
    component
        .values
        .get(section)?
        .as_mapping()?
        .get(key)?
        .as_bool()
}

/// The rules one PrometheusRule object declares: its name and every `alert` and `record` name
/// of its groups, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedRules {
    pub name: String,
    pub rules: Vec<String>,
}

/// The PrometheusRules of `release` among `objects` (Helm's `meta.helm.sh/release-name`
/// annotation, or the chart's `app.kubernetes.io/instance` label), with their rule names. Pure.
pub fn release_rules(objects: &[DynamicObject], release: &str) -> Vec<ShippedRules> {
    objects
        .iter()
        .filter(|object| {
            let metadata = &object.metadata;
            let annotated = metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("meta.helm.sh/release-name"))
                .is_some_and(|name| name == release);
            let labelled = metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/instance"))
                .is_some_and(|name| name == release);
            annotated || labelled
        })
        .map(|object| ShippedRules {
            name: object.metadata.name.clone().unwrap_or_default(),
            rules: object.data["spec"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|group| group["rules"].as_array().into_iter().flatten())
                .filter_map(|rule| rule["alert"].as_str().or_else(|| rule["record"].as_str()))
                .map(str::to_owned)
                .collect(),
        })
        .collect()
}

/// Whether a rule file Prometheus reports is the one of PrometheusRule `namespace/name`: the
/// Prometheus Operator writes `<namespace>-<name>-<uid>.yaml`, the sandbox
/// `<namespace>-<name>.yml`. Pure.
pub fn rule_file_of(file: &str, namespace: &str, name: &str) -> bool {
    let base = file.rsplit('/').next().unwrap_or(file);
    let Some(rest) = base.strip_prefix(&format!("{namespace}-{name}")) else {
        return false;
    };
    let stem = match rest
        .strip_suffix(".yaml")
        .or_else(|| rest.strip_suffix(".yml"))
    {
        Some(stem) => stem,
        None => return false,
    };
    // The Operator's suffix is the object's UID: `-` then 36 characters of a UUID.
    stem.is_empty()
        || stem.strip_prefix('-').is_some_and(|uid| {
            uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        })
}

/// The verdict on the component's alert rules: every rule of every PrometheusRule the release
/// deployed in `namespace` is loaded by Prometheus from that object's rule file. `switch` is
/// [`rules_switch`]; `shipped` is [`release_rules`]. Pure.
pub fn judge_rules(
    namespace: &str,
    release: &str,
    switch: Option<bool>,
    shipped: &[ShippedRules],
    groups: &[RuleGroup],
    prometheus: &str,
) -> Outcome {
    if switch == Some(false) {
        return rules_turned_off();
    }
    if shipped.is_empty() {
        return if switch == Some(true) {
            Outcome::fail(format!(
                "`{RULES_SWITCH}` is on but release `{release}` has no PrometheusRule in `{namespace}`: deploy the release again (`psctl deploy`); the charts render it only when the cluster serves monitoring.coreos.com/v1 PrometheusRule"
            ))
        } else {
            Outcome::skip(format!(
                "release `{release}` has no PrometheusRule in `{namespace}`: its chart ships none here (set `{RULES_SWITCH}: true` in the component's values to require one)"
            ))
        };
    }
    let mut loaded = Vec::new();
    let mut missing = Vec::new();
    for object in shipped {
        let names: Vec<&str> = groups
            .iter()
            .filter(|group| rule_file_of(&group.file, namespace, &object.name))
            .flat_map(|group| group.rules.iter().map(|rule| rule.name.as_str()))
            .collect();
        let absent: Vec<&str> = object
            .rules
            .iter()
            .map(String::as_str)
            .filter(|rule| !names.contains(rule))
            .collect();
        if absent.is_empty() {
            loaded.push(format!(
                "{} rule(s) of PrometheusRule `{namespace}/{}`",
                object.rules.len(),
                object.name
            ));
        } else {
            missing.push(format!(
                "{} of {} rule(s) of PrometheusRule `{namespace}/{}`: {}",
                absent.len(),
                object.rules.len(),
                object.name,
                absent.join(", ")
            ));
        }
    }
    if missing.is_empty() {
        Outcome::pass(format!(
            "Prometheus has loaded the {}",
            loaded.join(" and the ")
        ))
    } else {
        Outcome::fail(format!(
            "Prometheus at {prometheus} has not loaded {}: check that its ruleSelector and ruleNamespaceSelector select the object, and its log for a rule file it refused",
            missing.join("; ")
        ))
    }
}

fn rules_turned_off() -> Outcome {
    Outcome::skip(format!(
        "the environment turns the chart's alert rules off (`{RULES_SWITCH}: false` in the component's values)"
    ))
}

/// Lists the PrometheusRules of `namespace`, asks Prometheus for its rules and judges the
/// component's.
pub async fn alert_rules(
    client: &kube::Client,
    prometheus: &Prometheus,
    namespace: &str,
    component: &Component,
) -> Outcome {
    let switch = rules_switch(component);
    if switch == Some(false) {
        return rules_turned_off();
    }
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
        "prometheusrules",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let objects = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(error @ kube::Error::Api(_)) => {
            return Outcome::fail(format!("listing PrometheusRules: {}", describe(&error)));
        }
        Err(error) => {
            return Outcome::unreachable(format!(
                "the API server is unreachable (listing PrometheusRules): {}",
                describe(&error)
            ));
        }
    };
    let shipped = release_rules(&objects, &component.release);
    if shipped.is_empty() {
        return judge_rules(
            namespace,
            &component.release,
            switch,
            &shipped,
            &[],
            prometheus.base_url(),
        );
    }
    match prometheus.rules().await {
        Ok(groups) => judge_rules(
            namespace,
            &component.release,
            switch,
            &shipped,
            &groups,
            prometheus.base_url(),
        ),
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

    fn prometheus_rule(name: &str, release: &str, rules: &[&str]) -> DynamicObject {
        let rules: Vec<serde_json::Value> = rules
            .iter()
            .map(|rule| match rule.strip_prefix("record:") {
                Some(record) => serde_json::json!({"record": record, "expr": "sum(up)"}),
                None => serde_json::json!({"alert": rule, "expr": "up == 0", "for": "5m"}),
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {
                "name": name, "namespace": "apps",
                "annotations": {"meta.helm.sh/release-name": release},
            },
            "spec": {"groups": [{"name": name, "rules": rules}]},
        }))
        .unwrap()
    }

    fn group(file: &str, rules: &[&str]) -> RuleGroup {
        RuleGroup {
            name: "problemsolver-webhook".to_owned(),
            file: file.to_owned(),
            rules: rules
                .iter()
                .map(|name| crate::prom::LoadedRule {
                    name: (*name).to_owned(),
                    kind: "alerting".to_owned(),
                    health: "ok".to_owned(),
                    last_error: String::new(),
                })
                .collect(),
        }
    }

    fn with_rules_switch(enabled: bool) -> Component {
        let mut component = component();
        component.values.insert(
            "prometheusRule".into(),
            crate::yaml::from_str(&format!("enabled: {enabled}\nlabels: {{}}\n")).unwrap(),
        );
        component
    }

    #[test]
    fn the_rules_switch_is_read_from_the_component_values() {
        assert_eq!(
            rules_switch(&component()),
            None,
            "not set: the chart decides"
        );
        assert_eq!(rules_switch(&with_rules_switch(true)), Some(true));
        assert_eq!(rules_switch(&with_rules_switch(false)), Some(false));
    }

    #[test]
    fn the_release_rules_are_its_objects_alert_and_record_names() {
        let objects = [
            prometheus_rule(
                "problemsolver-webhook",
                "problemsolver-webhook",
                &["WebhookFailureRateHigh", "record:webhook:failures:rate5m"],
            ),
            prometheus_rule(
                "problemsolver-poller",
                "problemsolver-poller",
                &["PollerDown"],
            ),
        ];
        assert_eq!(
            release_rules(&objects, "problemsolver-webhook"),
            [ShippedRules {
                name: "problemsolver-webhook".to_owned(),
                rules: vec![
                    "WebhookFailureRateHigh".to_owned(),
                    "webhook:failures:rate5m".to_owned()
                ],
            }]
        );
        assert!(release_rules(&objects, "problemsolver-api").is_empty());
    }

    #[test]
    fn rule_files_are_recognised_as_the_operator_and_the_sandbox_name_them() {
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        for file in [
            "/var/lib/psctl-sandbox/prometheus/rules/apps-problemsolver-webhook.yml".to_owned(),
            format!(
                "/etc/prometheus/rules/prometheus-k8s-rulefiles-0/apps-problemsolver-webhook-{uid}.yaml"
            ),
        ] {
            assert!(
                rule_file_of(&file, "apps", "problemsolver-webhook"),
                "{file}"
            );
        }
        for file in [
            "/rules/other-problemsolver-webhook.yml".to_owned(),
            "/rules/apps-problemsolver-webhook-canary.yml".to_owned(),
            format!("/rules/apps-problemsolver-webhook-canary-{uid}.yaml"),
            "/rules/apps-problemsolver-webhook.yml.check".to_owned(),
        ] {
            assert!(
                !rule_file_of(&file, "apps", "problemsolver-webhook"),
                "{file}"
            );
        }
    }

    #[test]
    fn every_shipped_rule_must_be_loaded_from_the_objects_own_file() {
        let shipped = [ShippedRules {
            name: "problemsolver-webhook".to_owned(),
            rules: vec![
                "WebhookFailureRateHigh".to_owned(),
                "WebhookWorkerDown".to_owned(),
            ],
        }];
        let ours = "/rules/apps-problemsolver-webhook.yml";
        let loaded = judge_rules(
            "apps",
            "problemsolver-webhook",
            None,
            &shipped,
            &[group(
                ours,
                &["WebhookFailureRateHigh", "WebhookWorkerDown"],
            )],
            "http://p",
        );
        assert_eq!(
            loaded,
            Outcome::pass(
                "Prometheus has loaded the 2 rule(s) of PrometheusRule `apps/problemsolver-webhook`"
            )
        );

        // The same rules loaded for another namespace do not count for this one.
        let elsewhere = judge_rules(
            "apps",
            "problemsolver-webhook",
            Some(true),
            &shipped,
            &[
                group(
                    "/rules/staging-problemsolver-webhook.yml",
                    &["WebhookFailureRateHigh", "WebhookWorkerDown"],
                ),
                group(ours, &["WebhookWorkerDown"]),
            ],
            "http://p",
        );
        assert_eq!(elsewhere.verdict, Verdict::Fail);
        assert_eq!(
            elsewhere.evidence,
            "Prometheus at http://p has not loaded 1 of 2 rule(s) of PrometheusRule `apps/problemsolver-webhook`: WebhookFailureRateHigh: check that its ruleSelector and ruleNamespaceSelector select the object, and its log for a rule file it refused"
        );
        assert!(!elsewhere.unreachable);
    }

    #[test]
    fn rules_turned_off_skip_and_a_missing_object_fails_only_when_required() {
        let off = judge_rules(
            "apps",
            "problemsolver-webhook",
            Some(false),
            &[],
            &[],
            "http://p",
        );
        assert_eq!(off.verdict, Verdict::Skipped);
        assert!(
            off.evidence.contains("`prometheusRule.enabled: false`"),
            "{}",
            off.evidence
        );
        let required = judge_rules(
            "apps",
            "problemsolver-webhook",
            Some(true),
            &[],
            &[],
            "http://p",
        );
        assert_eq!(required.verdict, Verdict::Fail);
        assert!(
            required
                .evidence
                .starts_with("`prometheusRule.enabled` is on but release `problemsolver-webhook` has no PrometheusRule in `apps`"),
            "{}",
            required.evidence
        );
        let none = judge_rules("apps", "problemsolver-webhook", None, &[], &[], "http://p");
        assert_eq!(none.verdict, Verdict::Skipped);
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
