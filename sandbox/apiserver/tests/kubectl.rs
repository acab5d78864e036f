//! Real kubectl against the emulated API server: get, get -o yaml, describe, apply (create, then
//! change), scale, rollout history/undo (over hand-made ReplicaSets: the controllers live in
//! another crate), delete, get --watch, and the real error messages.
//!
//! kubectl comes from `$KUBECTL`, else `<sandbox state>/bin/kubectl`; `scripts/fetch-tools.sh`
//! installs it there. Without it these tests fail with that hint rather than skip.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

fn kubectl_path() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return PathBuf::from(path);
    }
    let state = std::env::var_os("PSCTL_SANDBOX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/psctl/sandbox")
        });
    let path = state.join("bin/kubectl");
    assert!(
        path.exists(),
        "kubectl not found: set KUBECTL or run scripts/fetch-tools.sh (expected {})",
        path.display()
    );
    path
}

struct Kubectl {
    binary: PathBuf,
    kubeconfig: tempfile::NamedTempFile,
}

impl Kubectl {
    fn new(server: &psctl_sandbox_apiserver::RunningApiServer) -> Self {
        Self::with_token(server, server.admin_token())
    }

    /// kubectl authenticating with `token`.
    fn with_token(server: &psctl_sandbox_apiserver::RunningApiServer, token: &str) -> Self {
        use base64::Engine as _;
        let server_url = server.https_url();
        let ca = base64::engine::general_purpose::STANDARD.encode(server.ca_pem());
        let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: psctl-sandbox\n  cluster: {{server: \"{server_url}\", certificate-authority-data: \"{ca}\"}}\nusers:\n- name: psctl-sandbox\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: psctl-sandbox\n  context: {{cluster: psctl-sandbox, user: psctl-sandbox, namespace: default}}\ncurrent-context: psctl-sandbox\n"
        );
        std::fs::write(kubeconfig.path(), text).expect("kubeconfig written");
        Self {
            binary: kubectl_path(),
            kubeconfig,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .env("KUBECONFIG", self.kubeconfig.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("kubectl runs")
    }

    /// Runs and requires success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    async fn apply(&self, manifest: &str) -> String {
        let file = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .expect("temp file");
        std::fs::write(file.path(), manifest).expect("manifest written");
        self.ok(&["apply", "-f", &file.path().to_string_lossy()])
            .await
    }
}

fn manifest(image: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: app
        image: {image}
        env: [{{name: MODE, value: test}}]
        ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"#
    )
}

#[tokio::test]
async fn apply_get_describe_scale_delete() {
    let test = common::start().await;
    let kubectl = Kubectl::new(&test.server);

    let created = kubectl.apply(&manifest("127.0.0.1:5000/web:1", 2)).await;
    assert!(
        created.contains("deployment.apps/web created") && created.contains("service/web created"),
        "{created}"
    );
    let changed = kubectl.apply(&manifest("127.0.0.1:5000/web:2", 2)).await;
    assert!(
        changed.contains("deployment.apps/web configured")
            && changed.contains("service/web unchanged"),
        "{changed}"
    );

    let image = kubectl
        .ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(image, "127.0.0.1:5000/web:2");
    let yaml = kubectl
        .ok(&["get", "deployment", "web", "-o", "yaml"])
        .await;
    assert!(
        yaml.contains("generation: 2")
            && yaml.contains("maxSurge: 25%")
            && yaml.contains("kubectl.kubernetes.io/last-applied-configuration"),
        "{yaml}"
    );
    let table = kubectl.ok(&["get", "deployments"]).await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|row| row.starts_with("web ") && row.contains("0/2")),
        "{table}"
    );
    let names = kubectl.ok(&["get", "deploy,svc", "-o", "name"]).await;
    assert!(
        names.contains("deployment.apps/web") && names.contains("service/web"),
        "{names}"
    );

    let described = kubectl.ok(&["describe", "deployment", "web"]).await;
    assert!(
        described.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge"),
        "{described}"
    );
    assert!(described.contains("127.0.0.1:5000/web:2"), "{described}");

    let scaled = kubectl
        .ok(&["scale", "deployment/web", "--replicas=5"])
        .await;
    assert!(scaled.contains("deployment.apps/web scaled"), "{scaled}");
    assert_eq!(
        kubectl
            .ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "5"
    );

    let deleted = kubectl.ok(&["delete", "deployment", "web"]).await;
    assert!(
        deleted.contains("deployment.apps \"web\" deleted"),
        "{deleted}"
    );
    let missing = kubectl.run(&["get", "deployment", "web"]).await;
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("Error from server (NotFound): deployments.apps \"web\" not found"),
        "{stderr}"
    );
    test.server.shutdown().await;
}

#[tokio::test]
async fn rollout_history_and_undo_to_revision() {
    let test = common::start().await;
    let kubectl = Kubectl::new(&test.server);
    kubectl.apply(&manifest("127.0.0.1:5000/web:3", 1)).await;
    let uid = kubectl
        .ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.uid}"])
        .await;
    for revision in 1..=3 {
        let replica_set = format!(
            r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-h{revision}
  labels: {{app: web, pod-template-hash: h{revision}}}
  annotations: {{deployment.kubernetes.io/revision: "{revision}"}}
  ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: web, uid: {uid}, controller: true, blockOwnerDeletion: true}}]
spec:
  replicas: 0
  selector: {{matchLabels: {{app: web, pod-template-hash: h{revision}}}}}
  template:
    metadata: {{labels: {{app: web, pod-template-hash: h{revision}}}}}
    spec:
      containers: [{{name: app, image: "127.0.0.1:5000/web:{revision}"}}]
"#
        );
        kubectl.apply(&replica_set).await;
    }
    let history = kubectl.ok(&["rollout", "history", "deployment/web"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(revisions, vec!["1", "2", "3"], "{history}");
    let detail = kubectl
        .ok(&["rollout", "history", "deployment/web", "--revision=1"])
        .await;
    assert!(detail.contains("127.0.0.1:5000/web:1"), "{detail}");
    let undone = kubectl
        .ok(&["rollout", "undo", "deployment/web", "--to-revision=1"])
        .await;
    assert!(undone.contains("rolled back"), "{undone}");
    let image = kubectl
        .ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(image, "127.0.0.1:5000/web:1");
    let missing = kubectl
        .run(&["rollout", "undo", "deployment/web", "--to-revision=9"])
        .await;
    assert!(!missing.status.success());
    test.server.shutdown().await;
}

#[tokio::test]
async fn get_watch_streams_changes() {
    let test = common::start().await;
    let kubectl = Kubectl::new(&test.server);
    let mut watch = kubectl
        .command(&[
            "get",
            "configmaps",
            "--watch",
            "--output-watch-events",
            "-o",
            "custom-columns=EVENT:.type,NAME:.object.metadata.name,V:.object.data.v",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    tokio::time::sleep(Duration::from_millis(800)).await;
    kubectl
        .ok(&["create", "configmap", "watched", "--from-literal=v=1"])
        .await;
    kubectl
        .ok(&[
            "patch",
            "configmap",
            "watched",
            "-p",
            r#"{"data":{"v":"2"}}"#,
        ])
        .await;
    kubectl.ok(&["delete", "configmap", "watched"]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    watch.start_kill().expect("watch stops");
    let output = watch.wait_with_output().await.expect("watch output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let events: Vec<String> = stdout
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        events,
        // The namespace's `kube-root-ca.crt` first, as on a real cluster.
        vec![
            "ADDED kube-root-ca.crt <none>",
            "ADDED watched 1",
            "MODIFIED watched 2",
            "DELETED watched 2"
        ],
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    test.server.shutdown().await;
}

/// Answers every log request with two numbered lines naming the pod and container.
struct NumberedLogs;

impl psctl_sandbox_apiserver::PodBackend for NumberedLogs {
    fn logs<'a>(
        &'a self,
        _namespace: &'a str,
        pod: &'a str,
        container: Option<&'a str>,
        options: psctl_sandbox_apiserver::LogOptions,
    ) -> futures::future::BoxFuture<
        'a,
        Result<psctl_sandbox_apiserver::PodLogs, psctl_sandbox_apiserver::PodBackendError>,
    > {
        use futures::FutureExt;
        async move {
            let lines = options.tail_lines.unwrap_or(2);
            let text: String = (1..=lines)
                .map(|index| format!("{pod}/{} line {index}\n", container.unwrap_or("-")))
                .collect();
            Ok(psctl_sandbox_apiserver::PodLogs::Complete(text))
        }
        .boxed()
    }
}

#[tokio::test]
async fn logs_through_the_pod_backend() {
    let test =
        common::start_with(|config| config.pod_backend = Some(std::sync::Arc::new(NumberedLogs)))
            .await;
    let kubectl = Kubectl::new(&test.server);
    kubectl.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec: {containers: [{name: app, image: img}]}\n").await;
    let logs = kubectl.ok(&["logs", "p1", "--tail=3"]).await;
    assert_eq!(logs, "p1/app line 1\np1/app line 2\np1/app line 3\n");
    let pods = kubectl.ok(&["get", "pods"]).await;
    assert!(
        pods.lines()
            .nth(1)
            .is_some_and(|row| row.split_whitespace().collect::<Vec<_>>()[..4]
                == ["p1", "0/1", "Pending", "0"]),
        "{pods}"
    );
    test.server.shutdown().await;
}

/// `kubectl auth can-i ARGS`: exit code and answer.
async fn can(kubectl: &Kubectl, args: &[&str]) -> (Option<i32>, String) {
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    let output = kubectl.run(&full).await;
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

#[tokio::test]
async fn auth_can_i_answers_per_binding() {
    let test = common::start().await;
    let admin = Kubectl::new(&test.server);
    admin
        .apply(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: editor, namespace: team}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: viewer, namespace: team}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: editor, namespace: team}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}\nsubjects: [{kind: ServiceAccount, name: editor, namespace: team}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: viewer, namespace: team}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects: [{kind: ServiceAccount, name: viewer, namespace: team}]\n",
        )
        .await;
    assert_eq!(
        admin.ok(&["auth", "can-i", "delete", "nodes"]).await.trim(),
        "yes"
    );
    // `kubectl create token` sends a protobuf TokenRequest and prints the token.
    let editor_token = admin.ok(&["create", "token", "editor", "-n", "team"]).await;
    let viewer_token = admin.ok(&["create", "token", "viewer", "-n", "team"]).await;
    let editor = Kubectl::with_token(&test.server, editor_token.trim());
    let viewer = Kubectl::with_token(&test.server, viewer_token.trim());

    let yes = (Some(0), "yes".to_owned());
    let no = (Some(1), "no".to_owned());
    assert_eq!(can(&editor, &["create", "leases", "-n", "team"]).await, yes);
    assert_eq!(
        can(&editor, &["patch", "deployments", "-n", "team"]).await,
        yes
    );
    assert_eq!(
        can(
            &editor,
            &[
                "update",
                "deployments",
                "--subresource=status",
                "-n",
                "team"
            ]
        )
        .await,
        no
    );
    assert_eq!(
        can(&editor, &["create", "rolebindings", "-n", "team"]).await,
        no
    );
    assert_eq!(can(&editor, &["get", "pods", "-n", "other"]).await, no);
    assert_eq!(
        can(&viewer, &["list", "deployments", "-n", "team"]).await,
        yes
    );
    assert_eq!(can(&viewer, &["create", "leases", "-n", "team"]).await, no);
    assert_eq!(can(&viewer, &["get", "secrets", "-n", "team"]).await, no);
    assert_eq!(
        viewer
            .ok(&[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}"
            ])
            .await,
        "system:serviceaccount:team:viewer"
    );
    let rules = viewer.ok(&["auth", "can-i", "--list", "-n", "team"]).await;
    assert!(rules.contains("deployments.apps"), "{rules}");
    assert!(!rules.contains("secrets"), "{rules}");

    let refused = viewer
        .run(&["create", "configmap", "x", "-n", "team"])
        .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("configmaps is forbidden: User \"system:serviceaccount:team:viewer\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team\""),
        "{stderr}"
    );
    test.server.shutdown().await;
}
