//! The text files the sandbox generates (kubeconfig, psctl.yaml, Prometheus and registry
//! configuration), as pure functions of the settings so they are tested without I/O.

use std::path::Path;

use serde_json::json;

use crate::settings::{BASE_IMAGE, CONTEXT, Layout, RUNTIME_SECRET, Settings};

/// A kubeconfig holding only the sandbox's cluster (HTTPS, trusting the sandbox's own CA),
/// context and user; the user authenticates with the API server's administrator token, so the
/// file is a secret (written 0600).
pub fn kubeconfig(settings: &Settings, admin_token: &str, ca_pem: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let value = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": settings.api_https_url(), "certificate-authority-data": ca}}],
        "users": [{"name": CONTEXT, "user": {"token": admin_token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"}}],
        "current-context": CONTEXT,
        "preferences": {},
    });
    to_yaml(&value)
}

/// The kubeconfig for an API server started by an older build (plain HTTP, no authentication).
pub fn unauthenticated_kubeconfig(settings: &Settings) -> String {
    let value = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": settings.api_url()}}],
        "users": [{"name": CONTEXT, "user": {}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"}}],
        "current-context": CONTEXT,
        "preferences": {},
    });
    to_yaml(&value)
}

/// The psctl.yaml with the environment `sandbox` (see the cross-team contract).
pub fn psctl_config(settings: &Settings, layout: &Layout, gateway: &str) -> String {
    let binance_base = settings.binance_url(gateway);
    let value = json!({
        "environments": {
            "sandbox": {
                "kube_context": CONTEXT,
                "kubeconfig": path(&layout.kubeconfig()),
                "namespace": "default",
                "production": false,
                "registry": settings.registry(),
                "prometheus_url": settings.prometheus_url(),
                "database_url_env": "DATABASE_URL",
                "helm": path(&layout.helm()),
                // Nothing can be pulled here: `psctl build` runs the services on the base image
                // `up` made and pushed to the sandbox registry.
                "build": {"runtime_base": format!("{}/{BASE_IMAGE}", settings.registry())},
                "secret": {
                    "name": RUNTIME_SECRET,
                    "required_keys": ["DATABASE_URL", "BINANCE_API_KEY", "BINANCE_API_SECRET", "WEBHOOK_SECRET"],
                },
                "components": {
                    "poller": {
                        "release": "problemsolver-poller",
                        "chart": "charts/poller",
                        "image": "problemsolver-poller",
                        "deployment": "problemsolver-poller",
                        "selector": "app=problemsolver-poller",
                        // The poller talks to the sandbox's Binance stub, reachable from containers.
                        // ServiceMonitors on, so `psctl smoke`'s monitoring checks have them to find.
                        "values": {"env": {"BINANCE_API_BASE": binance_base}, "serviceMonitor": {"enabled": true}},
                        "metrics": {
                            "service": "problemsolver-poller-metrics", "port": 8002, "path": "/metrics",
                            "required": ["problemsolver_poller_last_success_unixtime", "problemsolver_deposits_processed_total",
                                         "problemsolver_deposits_errors_total", "problemsolver_collisions_total"],
                        },
                    },
                    "webhook": {
                        "release": "problemsolver-webhook",
                        "chart": "charts/webhook-worker",
                        "image": "problemsolver-webhook-worker",
                        "deployment": "problemsolver-webhook",
                        "selector": "app=problemsolver-webhook",
                        // The sandbox's merchant sink is plain http on the Docker gateway, a
                        // private address the worker refuses unless told otherwise.
                        "values": {"serviceMonitor": {"enabled": true}, "allowInsecureTargets": true},
                        "metrics": {
                            "service": "problemsolver-webhook-metrics", "port": 8001, "path": "/metrics",
                            "required": ["webhook_deliveries_total", "webhook_queue_depth", "worker_health_status",
                                         "circuit_breaker_opens_total"],
                        },
                        // Sandbox traffic is tens of requests a second, not production's: the
                        // error-rate gate judges with a coarser margin (2 points) so a step can
                        // be conclusive within a short bake. Production keeps the defaults.
                        "canary": {"deployment": "problemsolver-webhook-canary", "steps": [10, 30, 60, 100], "bake": "5m",
                                   "policy": {"margin_absolute": 0.02, "min_requests": 30}},
                    },
                },
            },
        },
    });
    to_yaml(&value)
}

/// Prometheus: one job over the file_sd list the daemon keeps from the API server's pods, the
/// rule files it keeps from the PrometheusRules (`rules.rs`), and the sandbox's Alertmanager.
pub fn prometheus_config(settings: &Settings, layout: &Layout) -> String {
    let value = json!({
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s", "scrape_timeout": "4s"},
        "rule_files": [format!("{}/*.yml", path(&layout.prometheus_rules_dir()))],
        "alerting": {"alertmanagers": [{
            "static_configs": [{"targets": [format!("127.0.0.1:{}", settings.alertmanager_port)]}],
        }]},
        "scrape_configs": [{
            "job_name": "sandbox-pods",
            "file_sd_configs": [{"files": [path(&layout.prometheus_targets())], "refresh_interval": "5s"}],
        }],
    });
    to_yaml(&value)
}

/// Alertmanager: the routing of `docs/examples/alertmanager.yaml` (P1 and P2 page, P3 goes to
/// the team's channel, a P1 inhibits its namespace's P2/P3) with receivers that notify nobody,
/// so tests read the alerts from Alertmanager's API.
pub fn alertmanager_config() -> String {
    let value = json!({
        "route": {
            "receiver": "team-channel",
            "group_by": ["alertname", "namespace"],
            "group_wait": "5s",
            "group_interval": "30s",
            "repeat_interval": "4h",
            "routes": [
                {"receiver": "pagerduty-p1", "matchers": ["priority=\"P1\""]},
                {"receiver": "pagerduty-p2", "matchers": ["priority=\"P2\""]},
                {"receiver": "team-channel", "matchers": ["priority=\"P3\""]},
            ],
        },
        "inhibit_rules": [{
            "source_matchers": ["priority=\"P1\""],
            "target_matchers": ["priority=~\"P2|P3\""],
            "equal": ["namespace"],
        }],
        "receivers": [{"name": "pagerduty-p1"}, {"name": "pagerduty-p2"}, {"name": "team-channel"}],
    });
    to_yaml(&value)
}

/// The Debian `docker-registry` (distribution v2) configuration: loopback only, state-dir storage.
pub fn registry_config(settings: &Settings, layout: &Layout) -> String {
    let value = json!({
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {
            "filesystem": {"rootdirectory": path(&layout.registry_dir().join("data"))},
            "delete": {"enabled": true},
            "maintenance": {"uploadpurging": {"enabled": false}},
        },
        "http": {"addr": settings.registry(), "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "health": {"storagedriver": {"enabled": true, "interval": "10s", "threshold": 3}},
    });
    to_yaml(&value)
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

fn to_yaml(value: &serde_json::Value) -> String {
    // Serialising a JSON value built in this module cannot fail: it holds only strings, numbers,
    // booleans, arrays and string-keyed maps.
    crate::yaml::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn layout() -> Layout {
        Layout::new(PathBuf::from("/state"))
    }

    #[test]
    fn kubeconfig_names_only_the_sandbox_context() {
        let settings = Settings {
            api_port: 7443,
            ..Settings::default()
        };
        let parsed: crate::yaml::Value =
            crate::yaml::from_str(&kubeconfig(&settings, "admin-token", "PEM")).unwrap();
        assert_eq!(parsed["current-context"], "psctl-sandbox");
        assert_eq!(parsed["contexts"].as_sequence().unwrap().len(), 1);
        assert_eq!(
            parsed["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:7443"
        );
        assert_eq!(
            parsed["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(parsed["contexts"][0]["context"]["user"], "psctl-sandbox");
        assert_eq!(parsed["users"][0]["user"]["token"], "admin-token");
    }

    #[test]
    fn psctl_config_has_the_sandbox_environment() {
        let text = psctl_config(&Settings::default(), &layout(), "172.30.0.1");
        let parsed: crate::yaml::Value = crate::yaml::from_str(&text).unwrap();
        let env = &parsed["environments"]["sandbox"];
        assert_eq!(env["kube_context"], "psctl-sandbox");
        assert_eq!(env["kubeconfig"], "/state/kubeconfig");
        assert_eq!(env["registry"], "127.0.0.1:5000");
        assert_eq!(env["production"], false);
        assert_eq!(
            env["build"]["runtime_base"],
            "127.0.0.1:5000/psctl-base:bookworm"
        );
        assert_eq!(env["components"]["webhook"]["canary"]["steps"][3], 100);
        assert_eq!(env["components"]["poller"]["metrics"]["port"], 8002);
        for component in ["poller", "webhook"] {
            assert_eq!(
                env["components"][component]["values"]["serviceMonitor"]["enabled"],
                true
            );
        }
        assert_eq!(
            env["components"]["poller"]["values"]["env"]["BINANCE_API_BASE"],
            "http://172.30.0.1:18081"
        );
        assert!(
            !text.contains("postgres://"),
            "the database URL must stay out of psctl.yaml"
        );
    }

    #[test]
    fn prometheus_reads_the_daemon_target_file_every_five_seconds() {
        let parsed: crate::yaml::Value =
            crate::yaml::from_str(&prometheus_config(&Settings::default(), &layout())).unwrap();
        assert_eq!(parsed["global"]["scrape_interval"], "5s");
        assert_eq!(
            parsed["scrape_configs"][0]["file_sd_configs"][0]["files"][0],
            "/state/prometheus/targets.json"
        );
        assert_eq!(parsed["rule_files"][0], "/state/prometheus/rules/*.yml");
        assert_eq!(
            parsed["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0],
            "127.0.0.1:9093"
        );
    }

    #[test]
    fn the_alertmanager_configuration_is_valid_and_routes_by_priority() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alertmanager.yml");
        std::fs::write(&file, alertmanager_config()).unwrap();
        let checked = std::process::Command::new("amtool")
            .arg("check-config")
            .arg(&file)
            .output()
            .expect("amtool is missing: install the Debian package prometheus-alertmanager");
        assert!(
            checked.status.success(),
            "{}",
            String::from_utf8_lossy(&checked.stdout)
        );
        for (labels, receiver) in [
            ("priority=P1", "pagerduty-p1"),
            ("priority=P2", "pagerduty-p2"),
            ("priority=P3", "team-channel"),
        ] {
            let routed = std::process::Command::new("amtool")
                .args(["config", "routes", "test", "--config.file"])
                .arg(&file)
                .arg(labels)
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&routed.stdout).trim(),
                receiver,
                "{labels}"
            );
        }
    }

    #[test]
    fn registry_listens_on_loopback_and_stores_under_the_state_dir() {
        let parsed: crate::yaml::Value =
            crate::yaml::from_str(&registry_config(&Settings::default(), &layout())).unwrap();
        assert_eq!(parsed["http"]["addr"], "127.0.0.1:5000");
        assert_eq!(
            parsed["storage"]["filesystem"]["rootdirectory"],
            "/state/registry/data"
        );
    }
}
