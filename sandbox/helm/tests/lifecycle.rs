//! The real Helm engine, through the built `helm` binary, against the sandbox API server
//! started in-process: install, upgrade, history, status, get, list, rollback and uninstall
//! of charts/webhook-worker, checking what the cluster holds after each step (the Deployment's
//! image, Helm's release Secrets).
//!
//! Needs the engine library (`scripts/fetch-tools.sh` installs it); fails, never skips,
//! without it.

use base64::Engine as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use psctl_sandbox_apiserver::{ApiServer, ApiServerConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

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

struct Cluster {
    kubeconfig: PathBuf,
    namespace: String,
    client: kube::Client,
}

impl Cluster {
    /// Runs the helm binary against the cluster (off the async runtime: it blocks).
    async fn helm(&self, args: &[&str]) -> Output {
        let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        full.extend([
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
            "--kube-context".into(),
            "psctl-sandbox".into(),
            "-n".into(),
            self.namespace.clone(),
        ]);
        let library = engine_library();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_helm"))
                .args(&full)
                .current_dir(repo())
                .env("HELM_ENGINE_LIBRARY", library)
                .output()
                .expect("the helm binary runs")
        })
        .await
        .expect("helm task")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let output = self.helm(args).await;
        assert!(
            output.status.success(),
            "helm {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    }

    async fn image(&self, name: &str) -> String {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let deployment = deployments.get(name).await.expect("the Deployment exists");
        deployment.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    }

    async fn release_secrets(&self, release: &str) -> Vec<Secret> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        secrets
            .list(&ListParams::default().labels(&format!("owner=helm,name={release}")))
            .await
            .expect("list release Secrets")
            .items
    }
}

fn history(text: &str) -> Vec<(u64, String)> {
    let value: Value = serde_json::from_str(text).expect("history JSON");
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_history_rollback_uninstall() {
    let server = ApiServer::start(ApiServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..ApiServerConfig::default()
    })
    .await
    .expect("the sandbox API server starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: psctl-sandbox\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: psctl-sandbox\n  context:\n    cluster: psctl-sandbox\n    user: psctl-sandbox\nusers:\n- name: psctl-sandbox\n  user:\n    token: {}\ncurrent-context: psctl-sandbox\n",
            server.https_url(),
            base64::engine::general_purpose::STANDARD.encode(server.ca_pem()),
            server.admin_token()
        ),
    )
    .unwrap();
    let mut config = kube::Config::new(server.url().parse().unwrap());
    config.auth_info.token = Some(server.admin_token().to_owned().into());
    let cluster = Cluster {
        kubeconfig,
        namespace: format!("helm-lifecycle-{}", std::process::id()),
        client: kube::Client::try_from(config).unwrap(),
    };
    let release = "problemsolver-webhook";
    let repository = "127.0.0.1:5000/problemsolver-webhook-worker";

    // Install (upgrade --install of a release that does not exist).
    let stdout = cluster
        .ok(&[
            "upgrade",
            "--install",
            release,
            "charts/webhook-worker",
            "--create-namespace",
            "--set-string",
            "image.tag=one",
        ])
        .await;
    assert!(
        stdout.contains("does not exist. Installing it now."),
        "{stdout}"
    );
    assert!(stdout.contains("STATUS: deployed"), "{stdout}");
    assert_eq!(cluster.image(release).await, format!("{repository}:one"));
    let secrets = cluster.release_secrets(release).await;
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].type_.as_deref(), Some("helm.sh/release.v1"));
    assert_eq!(
        secrets[0].metadata.name.as_deref(),
        Some("sh.helm.release.v1.problemsolver-webhook.v1")
    );

    // Upgrade.
    let stdout = cluster
        .ok(&[
            "upgrade",
            "--install",
            release,
            "charts/webhook-worker",
            "--set-string",
            "image.tag=two",
            "--description",
            "psctl deploy two",
        ])
        .await;
    assert!(stdout.contains("has been upgraded"), "{stdout}");
    assert!(stdout.contains("DESCRIPTION: psctl deploy two"), "{stdout}");
    assert_eq!(cluster.image(release).await, format!("{repository}:two"));
    assert_eq!(
        history(&cluster.ok(&["history", release, "-o", "json"]).await),
        vec![(1, "superseded".into()), (2, "deployed".into())]
    );
    let values: Value =
        serde_json::from_str(&cluster.ok(&["get", "values", release, "-o", "json"]).await).unwrap();
    assert_eq!(values["image"]["tag"], "two");
    assert!(
        cluster
            .ok(&["get", "manifest", release])
            .await
            .contains(&format!("{repository}:two"))
    );

    // Roll back to revision 1: a new revision 3 with revision 1's content.
    let stdout = cluster.ok(&["rollback", release, "1"]).await;
    assert!(stdout.contains("Rollback was a success"), "{stdout}");
    assert_eq!(cluster.image(release).await, format!("{repository}:one"));
    assert_eq!(
        history(
            &cluster
                .ok(&["history", release, "-o", "json", "--max", "2"])
                .await
        ),
        vec![(2, "superseded".into()), (3, "deployed".into())]
    );
    let table = cluster.ok(&["history", release]).await;
    assert!(table.contains("psctl deploy two"), "{table}");
    assert!(table.contains("Rollback to 1"), "{table}");
    let status: Value =
        serde_json::from_str(&cluster.ok(&["status", release, "-o", "json"]).await).unwrap();
    assert_eq!(status["info"]["status"], "deployed");
    assert_eq!(status["info"]["description"], "Rollback to 1");
    assert_eq!(status["version"], 3);
    let list: Value = serde_json::from_str(&cluster.ok(&["list", "-o", "json"]).await).unwrap();
    assert_eq!(list[0]["name"], release);
    assert_eq!(list[0]["revision"], "3");
    assert_eq!(cluster.release_secrets(release).await.len(), 3);

    // Uninstall: objects and release records are gone, and history says so like Helm does.
    let stdout = cluster.ok(&["uninstall", release]).await;
    assert!(stdout.contains("uninstalled"), "{stdout}");
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    assert!(deployments.get_opt(release).await.unwrap().is_none());
    assert!(cluster.release_secrets(release).await.is_empty());
    let output = cluster.helm(&["history", release]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("release: not found"));

    server.shutdown().await;
}
