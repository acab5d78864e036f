//! End-to-end: the field ownership psctl leaves lets Helm 4's next server-side upgrade succeed
//! (`scripts/test.sh` brings the sandbox up and exports its environment; without it this test
//! fails, it never skips).
//!
//! A release is installed with the sandbox's real Helm engine (server-side apply, field manager
//! `helm`); psctl's kill switch then owns `.spec.replicas`, so a `helm upgrade` that changes the
//! replica count is refused with the API server's conflict while the switch is on, and succeeds,
//! without `--force-conflicts`, once `kill-switch off` has handed the field back.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};

const CHART: &str = "apiVersion: v2\nname: ownership\nversion: 0.1.0\n";
const VALUES: &str = "replicas: 3\n";
const TEMPLATE: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: problemsolver-webhook
  labels: {app: problemsolver-webhook}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: problemsolver-webhook}}
  template:
    metadata:
      labels: {app: problemsolver-webhook}
    spec:
      containers:
        - name: w
          image: {{ .Values.image }}
          command: ["sleep", "3600"]
"#;

fn sandbox_config() -> PathBuf {
    let path = std::env::var_os("PSCTL_CONFIG").map(PathBuf::from).expect(
        "PSCTL_CONFIG is not set: this test needs the sandbox; run it through scripts/test.sh \
         or `eval \"$(psctl-sandbox env)\"` first",
    );
    assert!(path.exists(), "PSCTL_CONFIG points at {}", path.display());
    path
}

struct Setup {
    namespace: String,
    config: tempfile::NamedTempFile,
    chart: tempfile::TempDir,
    helm: PathBuf,
    kubeconfig: PathBuf,
    context: String,
    image: String,
    client: kube::Client,
}

impl Setup {
    async fn new() -> Self {
        let base = psctl::settings::file::load(&sandbox_config()).expect("valid psctl.yaml");
        let environment = base
            .environments
            .get("sandbox")
            .expect("environment `sandbox`")
            .clone();
        let namespace = format!("e2e-ownership-{}", std::process::id());
        let kubeconfig = environment.kubeconfig.clone().expect("a kubeconfig");
        let helm = environment.helm.clone().expect("a helm");
        let registry = environment.registry.clone().expect("a registry");
        let chart = tempfile::tempdir().unwrap();
        std::fs::create_dir(chart.path().join("templates")).unwrap();
        std::fs::write(chart.path().join("Chart.yaml"), CHART).unwrap();
        std::fs::write(chart.path().join("values.yaml"), VALUES).unwrap();
        std::fs::write(chart.path().join("templates/deployment.yaml"), TEMPLATE).unwrap();
        let text = format!(
            "environments:\n  e2e:\n    kube_context: {context}\n    kubeconfig: {kubeconfig}\n    namespace: {namespace}\n    \
             registry: {registry}\n    helm: {helm}\n    components:\n      webhook:\n        release: problemsolver-webhook\n        \
             chart: {chart}\n        image: psctl-base\n        deployment: problemsolver-webhook\n        \
             selector: app=problemsolver-webhook\n",
            context = environment.kube_context,
            kubeconfig = kubeconfig.display(),
            helm = helm.display(),
            chart = chart.path().display(),
        );
        let config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(config.path(), text).unwrap();
        let mut e2e = environment.clone();
        e2e.namespace = namespace.clone();
        let client = psctl::cluster::connect(&e2e)
            .await
            .expect("the sandbox answers");
        let object: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &object)
            .await
            .expect("create the test namespace");
        Self {
            namespace,
            config,
            chart,
            helm,
            kubeconfig,
            context: environment.kube_context.clone(),
            image: format!("{registry}/psctl-base:bookworm"),
            client,
        }
    }

    fn run(program: &Path, args: &[String]) -> (i32, String, String) {
        let output = Command::new(program)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("PSCTL_ENV")
            .output()
            .expect("the command runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn psctl(&self, args: &[&str]) -> (i32, String, String) {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend([
            "--config".to_owned(),
            self.config.path().display().to_string(),
            "--allow-no-audit".to_owned(),
            "--yes".to_owned(),
        ]);
        Self::run(Path::new(env!("CARGO_BIN_EXE_psctl")), &all)
    }

    /// `helm upgrade --install` of the test chart (Helm 4 defaults: no --server-side given).
    fn helm_upgrade(&self, replicas: u32) -> (i32, String, String) {
        let args = [
            "upgrade",
            "--install",
            "problemsolver-webhook",
            &self.chart.path().display().to_string(),
            "-n",
            &self.namespace,
            "--kubeconfig",
            &self.kubeconfig.display().to_string(),
            "--kube-context",
            &self.context,
            "--set",
            &format!("replicas={replicas}"),
            "--set",
            &format!("image={}", self.image),
        ]
        .map(str::to_owned);
        Self::run(&self.helm, &args)
    }

    async fn deployment(&self) -> Deployment {
        Api::<Deployment>::namespaced(self.client.clone(), &self.namespace)
            .get("problemsolver-webhook")
            .await
            .expect("the Deployment exists")
    }

    async fn finish(self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
    }
}

/// `(manager, operation, subresource)` of the entries owning `.spec.replicas`.
fn replica_owners(deployment: &Deployment) -> Vec<(String, String, String)> {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0.pointer("/f:spec/f:replicas").is_some())
        })
        .map(|entry| {
            (
                entry.manager.clone().unwrap_or_default(),
                entry.operation.clone().unwrap_or_default(),
                entry.subresource.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn helm_upgrades_after_the_kill_switch_without_forcing_conflicts() {
    let setup = Setup::new().await;
    let (code, _, stderr) = setup.helm_upgrade(3);
    assert_eq!(code, 0, "install: {stderr}");
    assert_eq!(
        replica_owners(&setup.deployment().await),
        vec![("helm".to_owned(), "Apply".to_owned(), String::new())]
    );

    let (code, _, stderr) = setup.psctl(&["kill-switch", "on"]);
    assert_eq!(code, 0, "{stderr}");
    let deployment = setup.deployment().await;
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(0));
    assert_eq!(
        replica_owners(&deployment),
        vec![(
            "psctl-kill-switch".to_owned(),
            "Update".to_owned(),
            String::new()
        )]
    );

    // While the switch is on, an upgrade run by hand cannot bring traffic back silently.
    let (code, _, stderr) = setup.helm_upgrade(2);
    assert_ne!(
        code, 0,
        "the upgrade must conflict while the kill switch is on"
    );
    assert!(
        stderr.contains("conflict with \"psctl-kill-switch\" using apps/v1: .spec.replicas"),
        "{stderr}"
    );
    assert_eq!(
        setup.deployment().await.spec.and_then(|s| s.replicas),
        Some(0)
    );

    let (code, _, stderr) = setup.psctl(&["kill-switch", "off"]);
    assert_eq!(code, 0, "{stderr}");
    let deployment = setup.deployment().await;
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert!(
        deployment
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .all(|entry| entry.manager.as_deref() != Some("psctl-kill-switch")),
        "psctl handed its fields back: {:?}",
        deployment.metadata.managed_fields
    );

    // Helm's next upgrade changes the replica count without --force-conflicts and owns it again.
    let (code, _, stderr) = setup.helm_upgrade(2);
    assert_eq!(code, 0, "upgrade after kill-switch off: {stderr}");
    let deployment = setup.deployment().await;
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(
        replica_owners(&deployment),
        vec![("helm".to_owned(), "Apply".to_owned(), String::new())]
    );
    setup.finish().await;
}
