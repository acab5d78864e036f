//! Alerting as a cluster with the Prometheus Operator has it: a `PrometheusRule` applied with
//! kubectl is loaded into the sandbox's Prometheus within seconds, its alerts fire and reach
//! Alertmanager with the route their `priority` selects; an object promtool rejects is left out
//! without breaking the others; deleting the object unloads its rules.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{eventually, sandbox};

fn settings() -> serde_json::Value {
    let text = std::fs::read_to_string(sandbox().state.join("sandbox.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// GET `url` with curl; the parsed JSON body.
fn get(url: &str) -> Result<serde_json::Value, String> {
    let output = Command::new("curl")
        .args(["-sf", "--max-time", "5", url])
        .output()
        .map_err(|error| error.to_string())?;
    if !output.status.success() {
        return Err(format!("GET {url} failed"));
    }
    serde_json::from_slice(&output.stdout).map_err(|error| error.to_string())
}

/// The names of the alerting rules Prometheus has loaded from files of `namespace`.
fn loaded_alerts(prometheus: &str, namespace: &str) -> Result<Vec<String>, String> {
    let rules = get(&format!("{prometheus}/api/v1/rules?type=alert"))?;
    Ok(rules["data"]["groups"]
        .as_array()
        .ok_or("no groups")?
        .iter()
        .filter(|group| {
            group["file"]
                .as_str()
                .is_some_and(|file| file.ends_with(&format!("/{namespace}-alerts.yml")))
        })
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|rule| rule["name"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn a_prometheus_rule_is_loaded_fires_and_reaches_alertmanager() {
    let sandbox = sandbox();
    let namespace = sandbox.namespace("alerts");
    let settings = settings();
    let prometheus = format!("http://127.0.0.1:{}", settings["prometheus_port"]);
    let alertmanager = format!("http://127.0.0.1:{}", settings["alertmanager_port"]);
    let ns = namespace.name.clone();
    namespace.apply(&format!(
        r#"apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: alerts
spec:
  groups:
    - name: fidelity
      rules:
        - alert: FidelityAlwaysFiring
          expr: vector(1)
          labels:
            priority: P2
            namespace: {ns}
          annotations:
            summary: always firing
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: broken
spec:
  groups:
    - name: broken
      rules:
        - alert: FidelityBroken
          expr: sum((
"#
    ));

    // Loaded from its own file; the broken object is left out.
    let names = eventually("the rule loaded", Duration::from_secs(60), || {
        let names = loaded_alerts(&prometheus, &ns)?;
        if names.is_empty() {
            Err("not loaded yet".to_owned())
        } else {
            Ok(names)
        }
    });
    assert_eq!(names, vec!["FidelityAlwaysFiring".to_owned()]);
    let all = get(&format!("{prometheus}/api/v1/rules?type=alert")).unwrap();
    assert!(
        !all.to_string().contains("FidelityBroken"),
        "a rule promtool rejects is never loaded: {all}"
    );

    // It fires and Alertmanager receives it, routed by priority.
    let filter = format!(
        "{alertmanager}/api/v2/alerts?filter=alertname%3D%22FidelityAlwaysFiring%22&filter=namespace%3D%22{ns}%22"
    );
    // Prometheus sends at once and re-sends every minute (`--rules.alert.resend-delay`): a
    // first send lost to an Alertmanager still starting arrives a minute later.
    let received = eventually(
        "the alert in Alertmanager",
        Duration::from_secs(150),
        || {
            let alerts = get(&filter)?;
            alerts
                .as_array()
                .and_then(|list| list.first().cloned())
                .ok_or_else(|| format!("not received yet: {alerts}"))
        },
    );
    assert_eq!(received["labels"]["priority"], "P2");
    assert_eq!(received["status"]["state"], "active");
    let receivers: Vec<&str> = received["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|receiver| receiver["name"].as_str())
        .collect();
    assert_eq!(receivers, vec!["pagerduty-p2"], "{received}");

    // Deleting the object unloads its rules.
    namespace
        .kubectl(&["delete", "prometheusrule", "alerts"])
        .ok("kubectl delete");
    eventually("the rule unloaded", Duration::from_secs(60), || {
        let names = loaded_alerts(&prometheus, &ns)?;
        if names.is_empty() {
            Ok(())
        } else {
            Err(format!("still loaded: {names:?}"))
        }
    });
}
