//! Shared helpers for the Docker-backed integration tests: a fake API, a tiny local busybox
//! image, unique names, and polling with a deadline.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::Arc;

use psctl_sandbox_apiserver::{ApiServer, ApiServerConfig, RunningApiServer};
use psctl_sandbox_cluster::DockerLogs;
use psctl_sandbox_cluster::kubelet::{Backoff, KubeletConfig};
use tokio::process::Command;

/// Local image tag with a static busybox (sh, sleep, httpd, ...) and `/www/index.html`.
pub const IMAGE: &str = "psctl-test/busybox:1";
/// The same image under a second tag, for rollouts.
pub const IMAGE_V2: &str = "psctl-test/busybox:2";
/// The Docker network the tests' pods join.
pub const NETWORK: &str = "psctl-sandbox-test";

static IMAGE_ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

async fn sh(script: &str) -> (bool, String) {
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .await
        .expect("run sh");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Builds the test image from the host's static busybox (Debian `busybox-static`) if missing.
pub async fn ensure_image() {
    IMAGE_ONCE
        .get_or_init(|| async {
            let (present, _) = sh(&format!("docker image inspect {IMAGE} >/dev/null 2>&1 && docker image inspect {IMAGE_V2} >/dev/null 2>&1")).await;
            if present {
                return;
            }
            let (busybox_ok, _) = sh("test -x /bin/busybox && /bin/busybox --list >/dev/null").await;
            assert!(busybox_ok, "/bin/busybox is missing: install Debian's busybox-static (scripts/bootstrap.sh does)");
            let script = format!(
                "set -e; d=$(mktemp -d); mkdir -p $d/bin $d/www $d/tmp; cp /bin/busybox $d/bin/busybox; \
                 for c in sh sleep httpd echo cat env false true kill killall pidof id touch; do ln -s busybox $d/bin/$c; done; \
                 echo ok > $d/www/index.html; \
                 tar -C $d -c . | docker import --change 'ENV PATH=/bin' --change 'CMD [\"/bin/sh\"]' - {IMAGE} >/dev/null; \
                 rm -rf $d; docker tag {IMAGE} {IMAGE_V2}"
            );
            let (ok, output) = sh(&script).await;
            assert!(ok, "could not build the test image: {output}");
        })
        .await;
}

/// Starts the sandbox API server on a free loopback port, with this node's container logs behind
/// `pods/log`, and returns it with a client.
pub async fn api(node: &str) -> (RunningApiServer, kube::Client) {
    let server = ApiServer::start(ApiServerConfig {
        bind: ([127, 0, 0, 1], 0).into(),
        pod_backend: Some(Arc::new(DockerLogs::for_node(node))),
        ..ApiServerConfig::default()
    })
    .await
    .expect("API server starts");
    let mut config = kube::Config::new(server.url().parse().expect("server URL"));
    config.auth_info.token = Some(server.admin_token().to_owned().into());
    let client = kube::Client::try_from(config).expect("client");
    (server, client)
}

/// A short unique suffix for names.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Kubelet settings with fast back-off for tests.
pub fn kubelet_config(node: &str) -> KubeletConfig {
    let mut config = KubeletConfig::new(node);
    config.network = NETWORK.to_owned();
    config.backoff = Backoff {
        base: Duration::from_millis(1500),
        max: Duration::from_secs(6),
    };
    config.sync_interval = Duration::from_millis(300);
    config.max_grace = Duration::from_secs(2);
    config.pull_timeout = Duration::from_secs(20);
    config
}

/// A one-container pod.
pub fn pod(name: &str, container: Container) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            labels: Some([("app".to_owned(), name.to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            termination_grace_period_seconds: Some(1),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// A busybox container running `sh -c script`.
pub fn shell(script: &str) -> Container {
    Container {
        name: "main".to_owned(),
        image: Some(IMAGE.to_owned()),
        command: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
        ]),
        ..Container::default()
    }
}

/// Polls `check` until it returns Some or `limit` passes; panics with `what` and the last
/// observation otherwise.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (Option<T>, String)>,
{
    let start = Instant::now();
    loop {
        let (found, observed) = check().await;
        if let Some(found) = found {
            return found;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; last seen: {observed}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// IDs of the Docker containers a node's kubelet created for pod `uid`.
pub async fn containers_of(uid: &str) -> Vec<String> {
    let (_, output) = sh(&format!(
        "docker ps -aq --filter label=psctl.sandbox.pod-uid={uid}"
    ))
    .await;
    output
        .lines()
        .map(str::to_owned)
        .filter(|line| !line.is_empty())
        .collect()
}

/// Removes every container of a test node (cleanup even when a test fails midway).
pub async fn remove_node_containers(node: &str) {
    sh(&format!("docker ps -aq --filter label=psctl.sandbox.node={node} | xargs -r docker rm -f >/dev/null 2>&1")).await;
}

/// Removes a node's containers when dropped.
pub struct NodeCleanup(pub String);

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("docker ps -aq --filter label=psctl.sandbox.node={} | xargs -r docker rm -f >/dev/null 2>&1", self.0))
            .status();
    }
}
