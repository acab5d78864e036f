//! End-to-end tests of deploy, history, kill-switch and the deploy Lease against the sandbox
//! (`scripts/test.sh` brings it up and exports its environment; without it these tests fail,
//! they never skip). Each test works in its own namespace (tests/support), deleted at the end
//! also when an assertion fails, and runs psctl as the namespace's least-privilege identity.
//!
//! The service images are not needed: failures are provoked with the sandbox's base image
//! (which has no command, so the container cannot start) and with a tag that does not exist.

mod support;

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};

use support::Sandbox;

/// A namespace with dummy runtime values, and a psctl.yaml whose one component is the webhook
/// worker's chart running the sandbox base image.
async fn start(test: &str) -> (Sandbox, PathBuf) {
    let sandbox = Sandbox::builder(test).start().await;
    let mut environment = sandbox.connection();
    environment
        .as_object_mut()
        .unwrap()
        .remove("prometheus_url");
    environment["components"] = serde_json::json!({
        "webhook": {
            "release": "problemsolver-webhook",
            "chart": Path::new(support::ROOT).join("charts/webhook-worker"),
            "image": "psctl-base",
            "deployment": "problemsolver-webhook",
            "selector": "app=problemsolver-webhook",
        },
    });
    let config = sandbox.write_config("e2e", environment);
    (sandbox, config)
}

#[tokio::test]
async fn a_failing_first_install_is_diagnosed_and_uninstalled() {
    let (sandbox, config) = start("first-install").await;
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &[
            "deploy",
            "--tag",
            "bookworm",
            "--timeout",
            "90s",
            "-o",
            "json",
        ],
    );
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
    let (code, stdout, _) = sandbox.psctl(&config, &["history", "webhook", "-o", "json"]);
    assert_eq!(
        (code, stdout.trim()),
        (0, "[]"),
        "the failed install must leave no release behind"
    );
}

#[tokio::test]
async fn a_tag_missing_from_the_registry_is_refused_before_any_change() {
    let (sandbox, config) = start("missing-tag").await;
    let (code, stdout, stderr) = sandbox.psctl(&config, &["deploy", "--tag", "does-not-exist"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("ErrImagePull") && stderr.contains("ImagePullBackOff"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    let deployments: Api<Deployment> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    assert!(
        deployments
            .get_opt("problemsolver-webhook")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_held_deploy_lease_refuses_a_second_operator() {
    let (sandbox, config) = start("lease").await;
    let leases: Api<Lease> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "psctl-deploy"},
        "spec": {"holderIdentity": "ci@runner-7 pid 42 (deploy)", "leaseDurationSeconds": 600, "acquireTime": now, "renewTime": now},
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let (code, _, stderr) = sandbox.psctl(&config, &["deploy", "--tag", "bookworm"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("holds the deploy lock: `ci@runner-7 pid 42 (deploy)` since"),
        "{stderr}"
    );
    let deployments: Api<Deployment> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    assert!(
        deployments
            .get_opt("problemsolver-webhook")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn the_kill_switch_scales_to_zero_and_restores_exactly() {
    let (sandbox, config) = start("kill-switch").await;
    let deployments: Api<Deployment> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
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
        let (code, _, stderr) = sandbox.psctl(&config, &["kill-switch", "on"]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(replicas().await, (Some(0), Some("3".to_owned())));
    }
    for _ in 0..2 {
        let (code, _, stderr) = sandbox.psctl(&config, &["kill-switch", "off"]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(replicas().await, (Some(3), None));
    }
}
