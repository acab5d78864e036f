//! The real engine against the real charts, no cluster: `helm lint` and `helm template` of
//! charts/poller and charts/webhook-worker through the built `helm` binary, and promtool's
//! check and unit tests of the alert rules the charts ship.
//!
//! Needs the engine library (`scripts/fetch-tools.sh` installs it) and `promtool` (Debian
//! package `prometheus`, installed by `scripts/bootstrap.sh`); a missing one fails the test
//! with the fix, never skips it.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../src/yaml.rs"]
mod yaml;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn engine_library() -> PathBuf {
    if let Some(path) = std::env::var_os("HELM_ENGINE_LIBRARY") {
        return PathBuf::from(path);
    }
    let state = std::env::var_os("PSCTL_SANDBOX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/psctl/sandbox")
        });
    let path = state.join("lib/libhelm_sdkpy.so");
    assert!(
        path.exists(),
        "the Helm engine library is missing at {}: run scripts/fetch-tools.sh (or set HELM_ENGINE_LIBRARY)",
        path.display()
    );
    path
}

fn helm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_helm"))
        .args(args)
        .current_dir(repo())
        .env("HELM_ENGINE_LIBRARY", engine_library())
        // Nothing here may reach a cluster, whatever the developer's environment says.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("the helm binary runs")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "helm failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

/// Renders a chart and parses every document.
fn template(args: &[&str]) -> Vec<Value> {
    let mut full = vec!["template"];
    full.extend_from_slice(args);
    let text = ok(&helm(&full));
    yaml::Deserializer::from_str(&text)
        .filter_map(|document| {
            let value: yaml::Value = serde::Deserialize::deserialize(document).ok()?;
            (!value.is_null()).then(|| serde_json::to_value(value).expect("YAML is JSON"))
        })
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
}

fn count(objects: &[Value], kind: &str) -> usize {
    objects.iter().filter(|o| o["kind"] == kind).count()
}

#[test]
fn lint_passes_on_both_charts() {
    let stdout = ok(&helm(&["lint", "charts/poller", "charts/webhook-worker"]));
    assert!(
        stdout.contains("2 chart(s) linted, 0 chart(s) failed"),
        "{stdout}"
    );
}

#[test]
fn lint_fails_on_a_broken_chart_and_names_the_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("Chart.yaml"),
        "apiVersion: v2\nname: broken\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("templates/cm.yaml"),
        "kind: ConfigMap\ndata: {{ .Values.x | nosuchfunction }}\n",
    )
    .unwrap();
    let output = helm(&["lint", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("nosuchfunction"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("1 chart(s) failed"),
        "{output:?}"
    );
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn env_entry<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name}"))
}

fn assert_hardened(deployment: &Value) {
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let security = &container(deployment)["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let c = container(deployment);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
}

#[test]
fn poller_renders_the_runbook_objects() {
    let objects = template(&[
        "problemsolver-poller",
        "charts/poller",
        "--set",
        "image.tag=abc123",
        "--set-string",
        r"podAnnotations.psctl\.io/secret-fingerprint=f1",
    ]);
    let deployment = find(&objects, "Deployment", "problemsolver-poller");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["app"], "problemsolver-poller");
    assert_eq!(labels["track"], "stable");
    assert_eq!(labels["app.kubernetes.io/instance"], "problemsolver-poller");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["psctl.io/secret-fingerprint"],
        "f1"
    );
    let c = container(deployment);
    assert_eq!(c["image"], "127.0.0.1:5000/problemsolver-poller:abc123");
    assert_eq!(c["resources"]["requests"]["cpu"], "100m");
    assert_eq!(c["resources"]["requests"]["memory"], "128Mi");
    assert_eq!(c["resources"]["limits"]["cpu"], "500m");
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    for key in ["DATABASE_URL", "BINANCE_API_KEY", "BINANCE_API_SECRET"] {
        let entry = env_entry(c, key);
        assert!(entry.get("value").is_none(), "{key} must not be inline");
        assert_eq!(
            entry["valueFrom"]["secretKeyRef"]["name"],
            "problemsolver-secrets"
        );
        assert_eq!(entry["valueFrom"]["secretKeyRef"]["key"], key);
    }
    assert_eq!(env_entry(c, "METRICS_ADDR")["value"], "0.0.0.0:8002");
    assert_hardened(deployment);

    let service = find(&objects, "Service", "problemsolver-poller-metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 8002);
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(service["spec"]["selector"]["app"], "problemsolver-poller");
    assert!(service["spec"]["selector"].get("track").is_none());
    assert_eq!(count(&objects, "PodDisruptionBudget"), 1);
    assert_eq!(count(&objects, "NetworkPolicy"), 1);
    // On by default where the cluster serves the operator's CRDs (this template's discovery
    // does); see the_runbook_alerts_ship_by_default.
    assert_eq!(count(&objects, "ServiceMonitor"), 1);
    assert_eq!(count(&objects, "PrometheusRule"), 1);
    let dashboard = find(&objects, "ConfigMap", "problemsolver-poller-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(dashboard["data"]["poller.json"].as_str().unwrap())
        .expect("the dashboard is JSON");
    assert!(json["panels"].as_array().unwrap().len() >= 6);
}

#[test]
fn secret_name_is_a_value() {
    let objects = template(&["r", "charts/poller", "--set", "secretName=other"]);
    let c = container(find(&objects, "Deployment", "r"));
    assert_eq!(
        env_entry(c, "DATABASE_URL")["valueFrom"]["secretKeyRef"]["name"],
        "other"
    );
}

#[test]
fn webhook_worker_canary_track_is_off_by_default() {
    let objects = template(&["problemsolver-webhook", "charts/webhook-worker"]);
    assert_eq!(count(&objects, "Deployment"), 1);
    assert_eq!(count(&objects, "HorizontalPodAutoscaler"), 0);
    let stable = find(&objects, "Deployment", "problemsolver-webhook");
    assert_eq!(stable["spec"]["replicas"], 2);
    let c = container(stable);
    assert_eq!(c["resources"]["limits"]["cpu"], "1");
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    assert!(env_entry(c, "ENCRYPTION_MASTER_KEY").get("value").is_none());
    assert_eq!(
        env_entry(c, "WEBHOOK_ALLOW_INSECURE_TARGETS")["value"],
        "false"
    );
    assert_hardened(stable);
}

#[test]
fn webhook_worker_canary_and_autoscaling() {
    let objects = template(&[
        "problemsolver-webhook",
        "charts/webhook-worker",
        "--set",
        "image.tag=stable1,canary.enabled=true,canary.image.tag=canary2,canary.replicas=3,autoscaling.enabled=true",
    ]);
    let stable = find(&objects, "Deployment", "problemsolver-webhook");
    let canary = find(&objects, "Deployment", "problemsolver-webhook-canary");
    assert_eq!(
        container(stable)["image"],
        "127.0.0.1:5000/problemsolver-webhook-worker:stable1"
    );
    assert_eq!(
        container(canary)["image"],
        "127.0.0.1:5000/problemsolver-webhook-worker:canary2"
    );
    assert_eq!(canary["spec"]["replicas"], 3);
    // The autoscaler owns the stable replica count.
    assert!(stable["spec"].get("replicas").is_none());
    assert_eq!(stable["spec"]["selector"]["matchLabels"]["track"], "stable");
    assert_eq!(canary["spec"]["selector"]["matchLabels"]["track"], "canary");
    assert_eq!(
        canary["spec"]["template"]["metadata"]["labels"]["track"],
        "canary"
    );
    let service = find(&objects, "Service", "problemsolver-webhook-metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 8001);
    // One Service selects both tracks.
    for deployment in [stable, canary] {
        let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&pod_labels[key], value);
        }
    }
    let hpa = find(&objects, "HorizontalPodAutoscaler", "problemsolver-webhook");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        "problemsolver-webhook"
    );
    let pdb = find(&objects, "PodDisruptionBudget", "problemsolver-webhook");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
}

#[test]
fn webhook_worker_egress_excludes_private_and_metadata_addresses() {
    let objects = template(&["w", "charts/webhook-worker"]);
    let policy = find(&objects, "NetworkPolicy", "w");
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let egress = policy["spec"]["egress"].as_array().unwrap();
    let public = egress
        .iter()
        .flat_map(|rule| rule["to"].as_array().cloned().unwrap_or_default())
        .find(|peer| peer["ipBlock"]["cidr"] == "0.0.0.0/0")
        .expect("a public egress rule");
    let except: Vec<&str> = public["ipBlock"]["except"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for cidr in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
    ] {
        assert!(except.contains(&cidr), "{cidr} missing from {except:?}");
    }
    let ports: Vec<&Value> = egress
        .iter()
        .flat_map(|rule| rule["ports"].as_array().into_iter().flatten())
        .collect();
    assert!(
        ports
            .iter()
            .any(|p| p["port"] == 53 && p["protocol"] == "UDP")
    );
    assert!(ports.iter().any(|p| p["port"] == 5432));
}

#[test]
fn prometheus_objects_ship_the_tested_rules() {
    for (chart, release) in [
        ("charts/poller", "problemsolver-poller"),
        ("charts/webhook-worker", "problemsolver-webhook"),
    ] {
        let objects = template(&[
            release,
            chart,
            "--set",
            "serviceMonitor.enabled=true,serviceMonitor.namespace=monitoring,prometheusRule.enabled=true",
        ]);
        let monitor = find(&objects, "ServiceMonitor", release);
        assert_eq!(monitor["metadata"]["namespace"], "monitoring");
        assert_eq!(
            monitor["spec"]["podTargetLabels"],
            serde_json::json!(["app", "track"])
        );
        assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
        let rule = find(&objects, "PrometheusRule", release);
        let file: yaml::Value = yaml::from_str(
            &std::fs::read_to_string(repo().join(chart).join("rules/alerts.yaml")).unwrap(),
        )
        .unwrap();
        let file = serde_json::to_value(file).unwrap();
        assert_eq!(rule["spec"]["groups"], file["groups"], "{chart}");
    }
}

/// Every alert links its runbook page as a URL (`runbook_url`, the ecosystem's name), and the
/// base of those URLs is a value.
#[test]
fn runbook_urls_follow_the_configured_base() {
    let shipped = "https://github.com/problemsolver/psctl/blob/main/docs/runbooks/";
    for (chart, release, page) in [
        ("charts/poller", "problemsolver-poller", "poller.md"),
        (
            "charts/webhook-worker",
            "problemsolver-webhook",
            "webhook.md",
        ),
    ] {
        for (set, base) in [
            ("prometheusRule.enabled=true", shipped),
            (
                "prometheusRule.enabled=true,prometheusRule.runbookBaseUrl=https://wiki.example.com/ps/",
                "https://wiki.example.com/ps/",
            ),
        ] {
            let objects = template(&[release, chart, "--set", set]);
            let rule = find(&objects, "PrometheusRule", release);
            let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
            assert!(!rules.is_empty(), "{chart}");
            for alert in rules {
                let annotations = &alert["annotations"];
                assert!(annotations.get("runbook").is_none(), "{alert}");
                let url = annotations["runbook_url"].as_str().unwrap_or_default();
                let anchor = url
                    .strip_prefix(&format!("{base}{page}#"))
                    .unwrap_or_else(|| panic!("{chart}: {url} is not under {base}{page}"));
                let runbook =
                    std::fs::read_to_string(repo().join("docs/runbooks").join(page)).unwrap();
                assert!(
                    runbook.lines().any(|line| line == format!("## {anchor}")),
                    "{url}: docs/runbooks/{page} has no section `{anchor}`"
                );
            }
        }
    }
}

fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|error| {
            panic!("promtool cannot run ({error}): install the Debian package `prometheus` (scripts/bootstrap.sh)")
        })
}

#[test]
fn promtool_checks_and_tests_the_alert_rules() {
    for chart in ["charts/poller", "charts/webhook-worker"] {
        let check = promtool(&["check", "rules", &format!("{chart}/rules/alerts.yaml")]);
        assert!(check.status.success(), "{chart}: {check:?}");
        let test = promtool(&["test", "rules", &format!("{chart}/tests/alerts_test.yaml")]);
        assert!(
            test.status.success(),
            "{chart}:\n{}\n{}",
            String::from_utf8_lossy(&test.stdout),
            String::from_utf8_lossy(&test.stderr)
        );
    }
}

#[test]
fn all_digit_tags_stay_digits() {
    // Values reach the engine as JSON numbers (float64); the charts print them back as digits.
    let objects = template(&[
        "w",
        "charts/webhook-worker",
        "--set",
        "image.tag=1234567,canary.enabled=true,canary.image.tag=89012345",
    ]);
    assert_eq!(
        container(find(&objects, "Deployment", "w"))["image"],
        "127.0.0.1:5000/problemsolver-webhook-worker:1234567"
    );
    assert_eq!(
        container(find(&objects, "Deployment", "w-canary"))["image"],
        "127.0.0.1:5000/problemsolver-webhook-worker:89012345"
    );
}

#[test]
fn the_values_schema_rejects_bad_values_naming_the_field() {
    let output = helm(&[
        "template",
        "r",
        "charts/poller",
        "--set-string",
        "replicaCount=three",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/replicaCount"), "{stderr}");
    let output = helm(&[
        "template",
        "r",
        "charts/webhook-worker",
        "--set",
        "secretName=",
    ]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "an empty secretName must be refused"
    );
}

/// The worker reads the deploy runbook's Secret keys: the key wrapping signing secrets under
/// either name, and the optional REDIS_URL and SENTRY_DSN, all as optional references (the worker
/// itself refuses to start without a key); the poller reads SENTRY_DSN optionally too.
#[test]
fn the_runbook_secret_keys_are_referenced_and_optional_ones_are_optional() {
    let objects = template(&["problemsolver-webhook", "charts/webhook-worker"]);
    let c = container(find(&objects, "Deployment", "problemsolver-webhook"));
    let reference = |name: &str| env_entry(c, name)["valueFrom"]["secretKeyRef"].clone();
    assert_eq!(reference("DATABASE_URL")["key"], "DATABASE_URL");
    assert!(reference("DATABASE_URL").get("optional").is_none());
    for key in [
        "WEBHOOK_SECRET",
        "ENCRYPTION_MASTER_KEY",
        "REDIS_URL",
        "SENTRY_DSN",
    ] {
        let entry = reference(key);
        assert_eq!(entry["name"], "problemsolver-secrets", "{key}");
        assert_eq!(entry["key"], key);
        assert_eq!(entry["optional"], true, "{key}");
    }
    let objects = template(&["problemsolver-poller", "charts/poller"]);
    let c = container(find(&objects, "Deployment", "problemsolver-poller"));
    assert_eq!(
        env_entry(c, "SENTRY_DSN")["valueFrom"]["secretKeyRef"]["optional"],
        true
    );
    assert!(
        env_entry(c, "BINANCE_API_SECRET")["valueFrom"]["secretKeyRef"]
            .get("optional")
            .is_none()
    );
}

/// The divisor of the worker's rate limits while Redis does not answer: the most pods that can
/// run at once.
#[test]
fn the_rate_limit_replicas_count_every_pod_that_can_run() {
    let replicas = |set: &str| {
        let mut args = vec!["problemsolver-webhook", "charts/webhook-worker"];
        if !set.is_empty() {
            args.extend(["--set", set]);
        }
        let objects = template(&args);
        let c = container(find(&objects, "Deployment", "problemsolver-webhook"));
        env_entry(c, "WEBHOOK_RATE_LIMIT_REPLICAS")["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // 2 replicas + maxSurge 1.
    assert_eq!(replicas(""), "3");
    // Autoscaler maximum 10 + surge 1 + canary 3.
    assert_eq!(
        replicas("autoscaling.enabled=true,canary.enabled=true,canary.replicas=3"),
        "14"
    );
    // A percentage surge rounds up: 25 % of 10 is 3.
    assert_eq!(
        replicas("replicaCount=10,strategy.rollingUpdate.maxSurge=25%"),
        "13"
    );
    assert_eq!(replicas("rateLimitReplicas=7"), "7");
}

/// With no value set, a cluster serving the prometheus-operator's CRDs (the sandbox's `helm
/// template` answers discovery with them) gets the ServiceMonitor and the PrometheusRule, and the
/// rule carries the deploy runbook's three alerts with its thresholds and priorities.
#[test]
fn the_runbook_alerts_ship_by_default() {
    let mut alerts = Vec::new();
    for (chart, release) in [
        ("charts/poller", "problemsolver-poller"),
        ("charts/webhook-worker", "problemsolver-webhook"),
    ] {
        let objects = template(&[release, chart]);
        find(&objects, "ServiceMonitor", release);
        let rule = find(&objects, "PrometheusRule", release);
        alerts.extend(
            rule["spec"]["groups"][0]["rules"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
        let off = template(&[
            release,
            chart,
            "--set",
            "serviceMonitor.enabled=false,prometheusRule.enabled=false",
        ]);
        assert_eq!(count(&off, "ServiceMonitor"), 0);
        assert_eq!(count(&off, "PrometheusRule"), 0);
    }
    let alert = |name: &str| {
        alerts
            .iter()
            .find(|a| a["alert"] == name)
            .unwrap_or_else(|| panic!("no alert {name}"))
            .clone()
    };
    let poller = alert("PollerConsecutiveErrors");
    assert!(
        poller["expr"].as_str().unwrap().ends_with("> 5"),
        "{poller}"
    );
    assert_eq!(poller["labels"]["priority"], "P1");
    let webhook = alert("WebhookFailureRateHigh");
    let expr = webhook["expr"].as_str().unwrap();
    assert!(
        expr.contains("[10m]") && expr.trim_end().ends_with("> 0.05"),
        "{expr}"
    );
    assert_eq!(webhook["labels"]["priority"], "P2");
    let reconciliation = alert("ReconciliationMismatch");
    assert!(
        reconciliation["expr"]
            .as_str()
            .unwrap()
            .trim_end()
            .ends_with("> 0.001"),
        "{reconciliation}"
    );
    assert_eq!(reconciliation["labels"]["priority"], "P1");
}
