//! Shared test setup: a server on a free loopback port and a kube-rs client for it.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;

use kube::Client;
use psctl_sandbox_apiserver::{ApiServer, ApiServerConfig, RunningApiServer};

/// A started server and a client pointed at it.
pub struct TestServer {
    pub server: RunningApiServer,
    pub client: Client,
}

/// Starts a server with `configure` applied to the default test configuration.
pub async fn start_with(configure: impl FnOnce(&mut ApiServerConfig)) -> TestServer {
    let mut config = ApiServerConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ApiServerConfig::default()
    };
    configure(&mut config);
    let server = ApiServer::start(config).await.expect("server starts");
    let kube_config = kube::Config::new(server.url().parse().expect("valid URL"));
    let client = Client::try_from(kube_config).expect("client builds");
    TestServer { server, client }
}

/// Starts a server with the default test configuration.
pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

/// Creates a namespace.
pub async fn namespace(client: &Client, name: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": name } }))
            .expect("valid namespace");
    api.create(&kube::api::PostParams::default(), &namespace)
        .await
        .expect("namespace created");
}
