//! `psctl-sandbox status`: whether each part of the sandbox is up, as a table or JSON.

use serde::Serialize;

use crate::probe::{http, http_ok, tcp_open};
use crate::process::{run, running_pid};
use crate::settings::{BASE_IMAGE, Layout, Settings};

/// One part's state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Part {
    pub name: &'static str,
    pub up: bool,
    pub detail: String,
}

fn part(name: &'static str, up: bool, detail: impl Into<String>) -> Part {
    Part {
        name,
        up,
        detail: detail.into(),
    }
}

/// Checks every part.
pub async fn collect(layout: &Layout, settings: &Settings) -> Vec<Part> {
    let client = http();
    let exe = std::env::current_exe()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let mut parts = Vec::new();

    let daemon = running_pid(layout, "daemon", &exe);
    parts.push(part(
        "daemon",
        daemon.is_some(),
        daemon.map_or("not running".to_owned(), |pid| format!("pid {pid}")),
    ));
    let health: Option<serde_json::Value> = match client
        .get(format!("{}/healthz", settings.control_url()))
        .send()
        .await
    {
        Ok(response) => response.json().await.ok(),
        Err(_) => None,
    };
    let flag = |key: &str| {
        health
            .as_ref()
            .and_then(|value| value[key].as_bool())
            .unwrap_or(false)
    };
    parts.push(part(
        "api-server",
        http_ok(&client, &format!("{}/version", settings.api_url())).await,
        settings.api_url(),
    ));
    parts.push(part(
        "controllers",
        flag("controllers"),
        "deployment, replicaset, endpoints, gc",
    ));
    parts.push(part(
        "kubelet",
        flag("kubelet"),
        format!("node {} on network {}", settings.node, settings.network),
    ));
    let sink = health
        .as_ref()
        .and_then(|value| value["merchant_sink"].as_str())
        .unwrap_or_default()
        .to_owned();
    parts.push(part("merchant-sink", !sink.is_empty(), sink));
    let binance = health
        .as_ref()
        .and_then(|value| value["binance_stub"].as_str())
        .unwrap_or_default()
        .to_owned();
    parts.push(part("binance-stub", !binance.is_empty(), binance));
    let postgres_addr = format!("127.0.0.1:{}", settings.postgres_port);
    let postgres_up = flag("postgres_endpoint")
        && tcp_open(&postgres_addr).await
        && database_reachable(settings).await;
    parts.push(part("postgres", postgres_up, settings.database_url_host()));
    parts.push(part(
        "registry",
        http_ok(&client, &format!("http://{}/v2/", settings.registry())).await,
        settings.registry(),
    ));
    let targets = health
        .as_ref()
        .and_then(|value| value["prometheus_targets"].as_u64())
        .unwrap_or(0);
    let rules = health
        .as_ref()
        .and_then(|value| value["prometheus_rules"].as_u64())
        .unwrap_or(0);
    parts.push(part(
        "prometheus",
        http_ok(&client, &format!("{}/-/ready", settings.prometheus_url())).await,
        format!(
            "{} ({targets} pod targets, {rules} PrometheusRules)",
            settings.prometheus_url()
        ),
    ));
    parts.push(part(
        "alertmanager",
        http_ok(&client, &format!("{}/-/ready", settings.alertmanager_url())).await,
        settings.alertmanager_url(),
    ));
    parts.push(part(
        "network",
        run("docker", &["network", "inspect", &settings.network]).is_ok(),
        settings.network.clone(),
    ));
    let remote = format!("{}/{BASE_IMAGE}", settings.registry());
    parts.push(part(
        "base-image",
        run("docker", &["image", "inspect", &remote]).is_ok(),
        remote,
    ));
    let tools = layout.kubectl().is_file() && layout.helm().is_file();
    parts.push(part(
        "tools",
        tools,
        format!(
            "{}, {}",
            layout.kubectl().display(),
            layout.helm().display()
        ),
    ));
    parts.push(part(
        "kubeconfig",
        layout.kubeconfig().is_file(),
        layout.kubeconfig().display().to_string(),
    ));
    parts
}

async fn database_reachable(settings: &Settings) -> bool {
    use sqlx::Connection as _;
    let connect = sqlx::PgConnection::connect(&settings.database_url_host());
    match tokio::time::timeout(std::time::Duration::from_secs(3), connect).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            true
        }
        _ => false,
    }
}

/// The table `status` prints.
pub fn table(parts: &[Part]) -> String {
    let width = parts
        .iter()
        .map(|part| part.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:<width$}  {:<4}  DETAIL\n", "PART", "UP");
    for part in parts {
        out.push_str(&format!(
            "{:<width$}  {:<4}  {}\n",
            part.name,
            if part.up { "yes" } else { "no" },
            part.detail
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_up_and_says_yes_or_no() {
        let parts = vec![
            part("api-server", true, "http://127.0.0.1:6443"),
            part("registry", false, "127.0.0.1:5000"),
        ];
        assert_eq!(
            table(&parts),
            "PART        UP    DETAIL\napi-server  yes   http://127.0.0.1:6443\nregistry    no    127.0.0.1:5000\n"
        );
    }
}
