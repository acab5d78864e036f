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
    let client = client_with_token(&server, server.admin_token());
    TestServer { server, client }
}

/// A kube-rs client for `server` sending `token` as its bearer token.
pub fn client_with_token(server: &RunningApiServer, token: &str) -> Client {
    let mut kube_config = kube::Config::new(server.url().parse().expect("valid URL"));
    kube_config.auth_info.token = Some(token.to_owned().into());
    Client::try_from(kube_config).expect("client builds")
}

/// A kube-rs client for `server` without credentials.
pub fn anonymous_client(server: &RunningApiServer) -> Client {
    let kube_config = kube::Config::new(server.url().parse().expect("valid URL"));
    Client::try_from(kube_config).expect("client builds")
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
