//! `psctl-sandbox fault …`: fault injection passed through to the parts, so psctl's error
//! handling can be tested against real failures.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::cli::{ApiFaultArgs, FaultCommand, OnOff, StartStop};
use crate::probe::http;
use crate::process::{self, run};
use crate::settings::{Layout, Settings};
use crate::up::{PROMETHEUS_BIN, REGISTRY_BIN, ensure_prometheus, ensure_registry};

/// Applies one fault; returns a line for the user.
pub async fn apply(
    layout: &Layout,
    settings: &Settings,
    command: FaultCommand,
) -> anyhow::Result<String> {
    match command {
        FaultCommand::Api(args) => {
            let secrets = crate::secrets::Generated::load(&layout.secrets_dir())?;
            api(settings, secrets.api_admin_token.expose(), args).await
        }
        FaultCommand::Registry { state } => match state {
            OnOff::Off => {
                process::stop(layout, "registry", REGISTRY_BIN, Duration::from_secs(10))?;
                Ok("registry: off (pushes and pulls are refused)".to_owned())
            }
            OnOff::On => {
                ensure_registry(layout, settings).await?;
                Ok("registry: on".to_owned())
            }
        },
        FaultCommand::Prometheus { action } => match action {
            StartStop::Stop => {
                process::stop(
                    layout,
                    "prometheus",
                    PROMETHEUS_BIN,
                    Duration::from_secs(10),
                )?;
                Ok("prometheus: stopped".to_owned())
            }
            StartStop::Start => {
                ensure_prometheus(layout, settings).await?;
                Ok("prometheus: started".to_owned())
            }
        },
        FaultCommand::Postgres { action } => {
            let action = match action {
                StartStop::Stop => "stop",
                StartStop::Start => "start",
            };
            let response = http()
                .post(format!("{}/postgres/{action}", settings.control_url()))
                .send()
                .await
                .context("the sandbox daemon does not answer: is the sandbox up?")?;
            if !response.status().is_success() {
                anyhow::bail!(
                    "the daemon refused `postgres {action}`: {}",
                    response.status()
                );
            }
            Ok(format!(
                "postgres endpoint 127.0.0.1:{}: {action}ped",
                settings.postgres_port
            )
            .replace("startped", "started"))
        }
        FaultCommand::Evict { pod, namespace } => {
            // Path segments are Kubernetes names (no `/`); the daemon checks they exist.
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(45))
                .no_proxy()
                .build()
                .context("cannot build an HTTP client")?;
            let response = client
                .post(format!(
                    "{}/kubelet/evict/{namespace}/{pod}",
                    settings.control_url()
                ))
                .send()
                .await
                .context("the sandbox daemon does not answer: is the sandbox up?")?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status == reqwest::StatusCode::NOT_FOUND && !text.contains("not found") {
                anyhow::bail!(
                    "the running daemon cannot evict (an older build): `psctl-sandbox down && psctl-sandbox up`"
                );
            }
            if !status.is_success() {
                anyhow::bail!("cannot evict: {}", text.trim());
            }
            Ok(text.trim().to_owned())
        }
        FaultCommand::CutWatches { compact } => {
            let secrets = crate::secrets::Generated::load(&layout.secrets_dir())?;
            let response = http()
                .post(format!("{}/_sandbox/watches", settings.api_url()))
                .bearer_auth(secrets.api_admin_token.expose())
                .json(&json!({ "compact": compact }))
                .send()
                .await
                .context("the API server does not answer: is the sandbox up?")?;
            let status = response.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                anyhow::bail!(
                    "the running daemon cannot cut watches (an older build): `psctl-sandbox down && psctl-sandbox up`"
                );
            }
            if !status.is_success() {
                anyhow::bail!(
                    "the API server refused to cut watches ({status}): {}",
                    response.text().await.unwrap_or_default()
                );
            }
            let answer: serde_json::Value = response.json().await?;
            Ok(match answer["compacted_to"].as_str() {
                Some(version) => format!(
                    "api: {} watch(es) cut; history compacted to resourceVersion {version}",
                    answer["cut"]
                ),
                None => format!("api: {} watch(es) cut", answer["cut"]),
            })
        }
        FaultCommand::KillContainer { pod, namespace } => {
            let ids = run(
                "docker",
                &[
                    "ps",
                    "-q",
                    "--filter",
                    &format!("label=psctl.sandbox.node={}", settings.node),
                    "--filter",
                    &format!("label=psctl.sandbox.namespace={namespace}"),
                    "--filter",
                    &format!("label=psctl.sandbox.pod={pod}"),
                ],
            )?;
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if ids.is_empty() {
                anyhow::bail!(
                    "no running container for pod `{namespace}/{pod}` (check `kubectl get pods -n {namespace}`)"
                );
            }
            let mut args = vec!["kill"];
            args.extend(&ids);
            run("docker", &args)?;
            Ok(format!(
                "pod {namespace}/{pod}: {} container(s) killed",
                ids.len()
            ))
        }
    }
}

async fn api(settings: &Settings, token: &str, args: ApiFaultArgs) -> anyhow::Result<String> {
    let client = http();
    let url = format!("{}/_sandbox/faults", settings.api_url());
    if args.clear {
        client
            .delete(&url)
            .bearer_auth(token)
            .send()
            .await
            .context("the API server does not answer")?
            .error_for_status()?;
        return Ok("api: faults cleared".to_owned());
    }
    let Some(path) = args.path else {
        let list = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .context("the API server does not answer")?
            .error_for_status()?;
        return Ok(list.text().await?);
    };
    if args.status.is_none() && args.delay_ms.is_none() {
        anyhow::bail!("give --status and/or --delay-ms for the fault on `{path}`");
    }
    let body = json!({"path_regex": path, "method": args.method, "status": args.status, "delay_ms": args.delay_ms, "count": args.count});
    let response = client
        .post(&url)
        .json(&body)
        .bearer_auth(token)
        .send()
        .await
        .context("the API server does not answer")?;
    if !response.status().is_success() {
        let status = response.status();
        anyhow::bail!(
            "the API server refused the fault ({status}): {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(format!("api: fault added on `{path}`"))
}
