//! `psctl-sandbox serve`: the long-running daemon `up` starts detached. It hosts, in one process,
//! the emulated API server, the controllers, the Docker kubelet, the merchant webhook sink, the
//! Postgres endpoint and the Prometheus target list, plus a small control endpoint on loopback
//! (`/healthz`, `/postgres/{stop,start}`) that `status` and `fault` use.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path as AxumPath, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use psctl_sandbox_apiserver::admission::SidecarInjection;
use psctl_sandbox_apiserver::{
    ApiServer, ApiServerConfig, LogOptions, PodBackend, PodBackendError, PodLogs,
};
use psctl_sandbox_cluster::kubelet::logs::LogsError;
use psctl_sandbox_cluster::{
    Controllers, ControllersConfig, DockerLogs, EvictError, Evictor, Kubelet, KubeletConfig,
};
use serde_json::json;
use tokio::sync::Mutex;

use crate::pgproxy;
use crate::secrets::Generated;
use crate::settings::{Layout, SIDECAR_IMAGE};
use crate::targets::target_groups;

/// Pod logs for the API server, read from Docker by this sandbox's node label.
struct Logs(DockerLogs);

impl PodBackend for Logs {
    fn logs<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        container: Option<&'a str>,
        options: LogOptions,
    ) -> BoxFuture<'a, Result<PodLogs, PodBackendError>> {
        async move {
            // `follow` is answered with what exists now; streaming is a known difference.
            match self
                .0
                .pod_logs(
                    namespace,
                    pod,
                    container,
                    options.tail_lines,
                    options.previous,
                )
                .await
            {
                Ok(text) => Ok(PodLogs::Complete(text)),
                Err(LogsError::NotFound(message)) => Err(PodBackendError::BadRequest(message)),
                Err(other) => Err(PodBackendError::Internal(other.to_string())),
            }
        }
        .boxed()
    }
}

pub(crate) struct Health {
    controllers: Option<psctl_sandbox_cluster::ControllersHandle>,
    kubelet: Option<psctl_sandbox_cluster::KubeletHandle>,
    merchant_url: String,
    binance_url: String,
    targets: usize,
    /// PrometheusRules loaded into Prometheus (`rules.rs`).
    pub(crate) rules: usize,
}

#[derive(Clone)]
struct Control {
    health: Arc<Mutex<Health>>,
    evictor: Evictor,
    postgres: pgproxy::Switch,
    binance: Arc<problemsolver_stubs::binance::BinanceStubHandle>,
}

/// A deposit scripted through `POST /binance/deposits` (what a test or a demo needs to say).
#[derive(Debug, serde::Deserialize)]
struct ScriptedDeposit {
    id: String,
    coin: String,
    network: String,
    address: String,
    amount: String,
    /// Milliseconds since the epoch; now when absent.
    insert_time_ms: Option<i64>,
    /// Binance's deposit status; 1 (success) when absent.
    status: Option<i32>,
}

/// Runs the daemon until SIGTERM or Ctrl-C.
pub async fn run(layout: &Layout) -> anyhow::Result<()> {
    let settings = layout.load_settings()?;
    let gateway: IpAddr = layout
        .load_gateway()?
        .parse()
        .context("the recorded network gateway is not an IP address; rerun `psctl-sandbox up`")?;
    let secrets = Generated::load(&layout.secrets_dir())?;

    let postgres = pgproxy::Switch::new();
    pgproxy::start(
        &[
            SocketAddr::from(([127, 0, 0, 1], settings.postgres_port)),
            SocketAddr::new(gateway, settings.postgres_port),
        ],
        settings.postgres_upstream()?,
        postgres.clone(),
    )
    .await?;

    let api = ApiServer::start(ApiServerConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], settings.api_port)),
        pod_backend: Some(Arc::new(Logs(DockerLogs::for_node(&settings.node)))),
        admin_token: secrets.api_admin_token.expose().to_owned(),
        tls: Some(crate::secrets::api_tls(
            &layout.secrets_dir(),
            false,
            &[gateway],
        )?),
        // Pods reach the API server through the network gateway, as they reach Postgres.
        advertise: Some(SocketAddr::new(gateway, settings.api_port)),
        sidecar_injection: Some(SidecarInjection {
            image: format!("{}/{SIDECAR_IMAGE}", settings.registry()),
        }),
        ..ApiServerConfig::default()
    })
    .await
    .context("cannot start the API server")?;
    // The controllers and the kubelet act as the administrator, as the sandbox's own parts.
    let mut config = kube::Config::new(
        api.url()
            .parse()
            .context("the API server URL does not parse")?,
    );
    config.auth_info.token = Some(secrets.api_admin_token.expose().to_owned().into());
    let client =
        kube::Client::try_from(config).context("cannot build a client for the API server")?;

    let controllers = Controllers::run(
        client.clone(),
        ControllersConfig {
            sync_delay: Duration::from_millis(settings.controller_sync_delay_ms),
            ..ControllersConfig::default()
        },
    );
    let kubelet = Kubelet::run(
        client.clone(),
        KubeletConfig {
            network: settings.network.clone(),
            allowed_registries: vec![
                settings.registry(),
                format!("localhost:{}", settings.registry_port),
            ],
            root_dir: layout.kubelet_dir(),
            ..KubeletConfig::new(&settings.node)
        },
    )
    .await
    .context("cannot start the kubelet (is Docker running?)")?;

    let merchant = problemsolver_stubs::merchant::MerchantSink::start(
        SocketAddr::new(gateway, settings.merchant_port),
        secrets.merchant_webhook_secret.expose(),
    )
    .await?;

    let binance = problemsolver_stubs::binance::BinanceStub::start(
        SocketAddr::new(gateway, settings.binance_port),
        secrets.binance_api_key.expose(),
        secrets.binance_api_secret.expose(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot bind the Binance stub to {gateway}:{}",
            settings.binance_port
        )
    })?;

    let evictor = kubelet.evictor();
    let control = Control {
        evictor,
        health: Arc::new(Mutex::new(Health {
            controllers: Some(controllers),
            kubelet: Some(kubelet),
            merchant_url: merchant.url("/webhook"),
            binance_url: binance.base_url(),
            targets: 0,
            rules: 0,
        })),
        postgres,
        binance: Arc::new(binance),
    };
    tokio::spawn(crate::rules::keep_rules(
        client.clone(),
        layout.clone(),
        settings.prometheus_url(),
        control.health.clone(),
    ));
    tokio::spawn(keep_targets(client, layout.clone(), control.health.clone()));

    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/postgres/{action}", post(postgres_switch))
        .route("/binance/deposits", post(push_deposit))
        .route("/kubelet/evict/{namespace}/{pod}", post(evict_pod))
        .with_state(control);
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], settings.control_port)))
            .await
            .with_context(|| {
                format!(
                    "cannot bind the control endpoint to 127.0.0.1:{}",
                    settings.control_port
                )
            })?;
    tracing::info!(api = %api.url(), "sandbox daemon ready");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the control endpoint failed")?;
    tracing::info!("sandbox daemon stopping");
    drop(merchant);
    api.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

async fn healthz(
    State(control): State<Control>,
) -> (axum::http::StatusCode, Json<serde_json::Value>) {
    let health = control.health.lock().await;
    let controllers = health
        .controllers
        .as_ref()
        .is_some_and(|handle| !handle.any_finished());
    let kubelet = health
        .kubelet
        .as_ref()
        .is_some_and(|handle| !handle.is_finished());
    let body = json!({
        "api": true,
        "controllers": controllers,
        "kubelet": kubelet,
        "merchant_sink": health.merchant_url,
        "binance_stub": health.binance_url,
        "postgres_endpoint": control.postgres.enabled(),
        "prometheus_targets": health.targets,
        "prometheus_rules": health.rules,
        "build": crate::process::build_stamp(),
    });
    let code = if controllers && kubelet {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn postgres_switch(
    State(control): State<Control>,
    AxumPath(action): AxumPath<String>,
) -> (axum::http::StatusCode, String) {
    match action.as_str() {
        "stop" => control.postgres.set(false),
        "start" => control.postgres.set(true),
        other => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                format!("unknown action `{other}`: use stop or start\n"),
            );
        }
    }
    (
        axum::http::StatusCode::OK,
        format!("postgres endpoint {action}ed\n"),
    )
}

/// `POST /kubelet/evict/{namespace}/{pod}`: the kubelet evicts the pod (see `Evictor::evict`);
/// answers once the API server shows it `Failed`/`Evicted`.
async fn evict_pod(
    State(control): State<Control>,
    AxumPath((namespace, pod)): AxumPath<(String, String)>,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    match control.evictor.evict(&namespace, &pod).await {
        Ok(_) => (
            StatusCode::OK,
            format!("pod {namespace}/{pod}: evicted (phase Failed, reason Evicted)\n"),
        ),
        Err(error) => {
            let code = match &error {
                EvictError::NotFound { .. } => StatusCode::NOT_FOUND,
                EvictError::OtherNode { .. } | EvictError::Ended { .. } => StatusCode::CONFLICT,
                EvictError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                EvictError::Kube(_) => StatusCode::BAD_GATEWAY,
            };
            (code, format!("{error}\n"))
        }
    }
}

async fn push_deposit(
    State(control): State<Control>,
    Json(deposit): Json<ScriptedDeposit>,
) -> axum::http::StatusCode {
    let insert_time = deposit.insert_time_ms.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
    });
    let mut stub = problemsolver_stubs::binance::StubDeposit::success(
        &deposit.id,
        &deposit.coin,
        &deposit.network,
        &deposit.address,
        &deposit.amount,
        insert_time,
    );
    if let Some(status) = deposit.status {
        stub = stub.with_status(status);
    }
    control.binance.push_deposit(stub);
    axum::http::StatusCode::CREATED
}

/// Rewrites Prometheus' target file whenever the running pods change.
async fn keep_targets(client: kube::Client, layout: Layout, health: Arc<Mutex<Health>>) {
    let pods: Api<Pod> = Api::all(client);
    let path = layout.prometheus_targets();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut last = String::new();
    loop {
        match pods.list(&ListParams::default()).await {
            Ok(list) => {
                let groups = target_groups(&list.items);
                let text =
                    serde_json::to_string_pretty(&groups).unwrap_or_else(|_| "[]".to_owned());
                if text != last {
                    let tmp = path.with_extension("tmp");
                    let written =
                        std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &path));
                    match written {
                        Ok(()) => last = text,
                        Err(error) => {
                            tracing::warn!(%error, path = %path.display(), "cannot write the Prometheus target file")
                        }
                    }
                }
                health.lock().await.targets = groups.len();
            }
            Err(error) => tracing::warn!(%error, "cannot list pods for Prometheus targets"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
