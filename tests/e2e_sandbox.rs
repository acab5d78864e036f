//! End-to-end tests of deploy, history, kill-switch and the deploy Lease against the sandbox
//! (`scripts/test.sh` brings it up and exports its environment; without it these tests fail,
//! they never skip). Each test works in its own namespace, deleted at the end.
//!
//! The service images are not needed: failures are provoked with the sandbox's base image
//! (which has no command, so the container cannot start) and with a tag that does not exist.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, PostParams};

struct Sandbox {
    namespace: String,
    config: tempfile::NamedTempFile,
    client: kube::Client,
}

fn sandbox_config() -> PathBuf {
    let path = std::env::var_os("PSCTL_CONFIG").map(PathBuf::from).expect(
        "PSCTL_CONFIG is not set: these tests need the sandbox; run them through scripts/test.sh \
         or `eval \"$(psctl-sandbox env)\"` first",
    );
    assert!(
        path.exists(),
        "PSCTL_CONFIG points at {} which does not exist; is the sandbox up?",
        path.display()
    );
    path
}

impl Sandbox {
    async fn new(test: &str) -> Self {
        let base = psctl::settings::file::load(&sandbox_config())
            .expect("the sandbox's psctl.yaml is valid");
        let environment = base
            .environments
            .get("sandbox")
            .expect("the sandbox config has environment `sandbox`")
            .clone();
        let namespace = format!("e2e-{test}-{}", std::process::id());
        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/webhook-worker");
        let registry = environment
            .registry
            .clone()
            .expect("the sandbox config names its registry");
        let text = format!(
            "environments:\n  e2e:\n    kube_context: {context}\n    kubeconfig: {kubeconfig}\n    namespace: {namespace}\n    \
             registry: {registry}\n    helm: {helm}\n    components:\n      webhook:\n        release: problemsolver-webhook\n        \
             chart: {chart}\n        image: psctl-base\n        deployment: problemsolver-webhook\n        \
             selector: app=problemsolver-webhook\n",
            context = environment.kube_context,
            kubeconfig = environment
                .kubeconfig
                .as_ref()
                .expect("the sandbox config names its kubeconfig")
                .display(),
            helm = environment
                .helm
                .as_ref()
                .expect("the sandbox config names its helm")
                .display(),
            chart = chart.display(),
        );
        let config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(config.path(), text).unwrap();
        let mut e2e = environment.clone();
        e2e.namespace = namespace.clone();
        let client = psctl::cluster::connect(&e2e)
            .await
            .expect("the sandbox API server is reachable");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .expect("create the test namespace");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        // Dummy values: the pods of these tests never reach a database or Binance.
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "problemsolver-secrets"},
            "stringData": {"DATABASE_URL": "postgres://e2e@127.0.0.1:1/none", "BINANCE_API_KEY": "e2e-key-value",
                           "BINANCE_API_SECRET": "e2e-secret-value", "ENCRYPTION_MASTER_KEY": "e2e-master-key-value"},
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the runtime Secret");
        Self {
            namespace,
            config,
            client,
        }
    }

    fn psctl(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_psctl"))
            .args(args)
            .args([
                "--config",
                &self.config.path().display().to_string(),
                "--allow-no-audit",
                "--yes",
            ])
            .env("NO_COLOR", "1")
            .env_remove("PSCTL_ENV")
            .output()
            .expect("run psctl");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn finish(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.namespace, &DeleteParams::default())
            .await;
    }
}

#[tokio::test]
async fn a_failing_first_install_is_diagnosed_and_uninstalled() {
    let sandbox = Sandbox::new("first-install").await;
    let (code, stdout, stderr) = sandbox.psctl(&[
        "deploy",
        "--tag",
        "bookworm",
        "--timeout",
        "90s",
        "-o",
        "json",
    ]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["components"][0]["result"], "uninstalled", "{report}");
    let diagnosis = &report["components"][0]["rollout"]["diagnosis"];
    assert!(
        diagnosis["pod"]
            .as_str()
            .is_some_and(|p| p.starts_with("problemsolver-webhook-")),
        "{report}"
    );
    assert!(
        stderr.contains("FAIL rollout problemsolver-webhook"),
        "{stderr}"
    );
    assert!(!stderr.contains("e2e-secret-value") && !stdout.contains("e2e-secret-value"));
    let (code, stdout, _) = sandbox.psctl(&["history", "webhook", "-o", "json"]);
    assert_eq!(
        (code, stdout.trim()),
        (0, "[]"),
        "the failed install must leave no release behind"
    );
    sandbox.finish().await;
}

#[tokio::test]
async fn a_tag_missing_from_the_registry_is_refused_before_any_change() {
    let sandbox = Sandbox::new("missing-tag").await;
    let (code, stdout, stderr) = sandbox.psctl(&["deploy", "--tag", "does-not-exist"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("ErrImagePull") && stderr.contains("ImagePullBackOff"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    let deployments: Api<Deployment> = Api::namespaced(sandbox.client.clone(), &sandbox.namespace);
    assert!(
        deployments
            .get_opt("problemsolver-webhook")
            .await
            .unwrap()
            .is_none()
    );
    sandbox.finish().await;
}

#[tokio::test]
async fn a_held_deploy_lease_refuses_a_second_operator() {
    let sandbox = Sandbox::new("lease").await;
    let leases: Api<Lease> = Api::namespaced(sandbox.client.clone(), &sandbox.namespace);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "psctl-deploy"},
        "spec": {"holderIdentity": "ci@runner-7 pid 42 (deploy)", "leaseDurationSeconds": 600, "acquireTime": now, "renewTime": now},
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let (code, _, stderr) = sandbox.psctl(&["deploy", "--tag", "bookworm"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("holds the deploy lock: `ci@runner-7 pid 42 (deploy)` since"),
        "{stderr}"
    );
    let deployments: Api<Deployment> = Api::namespaced(sandbox.client.clone(), &sandbox.namespace);
    assert!(
        deployments
            .get_opt("problemsolver-webhook")
            .await
            .unwrap()
            .is_none()
    );
    sandbox.finish().await;
}

#[tokio::test]
async fn the_kill_switch_scales_to_zero_and_restores_exactly() {
    let sandbox = Sandbox::new("kill-switch").await;
    let deployments: Api<Deployment> = Api::namespaced(sandbox.client.clone(), &sandbox.namespace);
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "problemsolver-webhook", "labels": {"app": "problemsolver-webhook"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "problemsolver-webhook"}},
                 "template": {"metadata": {"labels": {"app": "problemsolver-webhook"}},
                              "spec": {"containers": [{"name": "w", "image": "127.0.0.1:5000/psctl-base:bookworm", "command": ["sleep", "3600"]}]}}},
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let replicas = || async {
        let d = deployments.get("problemsolver-webhook").await.unwrap();
        let remembered = d
            .metadata
            .annotations
            .unwrap_or_default()
            .get("psctl.io/kill-switch-replicas")
            .cloned();
        (d.spec.unwrap().replicas, remembered)
    };
    for _ in 0..2 {
        let (code, _, stderr) = sandbox.psctl(&["kill-switch", "on"]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(replicas().await, (Some(0), Some("3".to_owned())));
    }
    for _ in 0..2 {
        let (code, _, stderr) = sandbox.psctl(&["kill-switch", "off"]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(replicas().await, (Some(3), None));
    }
    sandbox.finish().await;
}
