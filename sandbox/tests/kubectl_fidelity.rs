//! Real kubectl against the sandbox: apply, get, describe, scale, rollout status/history/undo,
//! logs and delete, with the outcomes a real cluster gives.

mod support;

use std::time::Duration;

use support::{eventually, sandbox};

fn deployment(image: &str, message: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
          image: {image}
          command: ["/bin/sh", "-c", "echo {message}; mkdir -p /tmp/www; echo ok > /tmp/www/index.html; exec httpd -f -p 8080 -h /tmp/www"]
          ports: [{{name: http, containerPort: 8080}}]
          readinessProbe:
            httpGet: {{path: /index.html, port: 8080}}
            periodSeconds: 1
"#
    )
}

fn ready_replicas(namespace: &support::Namespace<'_>) -> Result<i64, String> {
    let deployment = namespace.get_json(&["get", "deployment", "web"]);
    Ok(deployment["status"]["readyReplicas"].as_i64().unwrap_or(0))
}

#[test]
fn kubectl_drives_a_deployment_through_its_lifecycle() {
    let sandbox = sandbox();
    let image = sandbox.busybox_image("1");
    let namespace = sandbox.namespace("kubectl");

    let applied = namespace.apply(&deployment(&image, "hello-v1"));
    assert!(applied.contains("deployment.apps/web created"), "{applied}");
    let status = namespace
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .ok("rollout status");
    assert!(status.contains("successfully rolled out"), "{status}");

    let pods = namespace.get_json(&["get", "pods", "-l", "app=web"]);
    let items = pods["items"].as_array().expect("a pod list");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"]["phase"], "Running");

    let logs = namespace.kubectl(&["logs", "deployment/web"]).ok("logs");
    assert!(logs.contains("hello-v1"), "{logs}");

    let describe = namespace
        .kubectl(&["describe", "deployment", "web"])
        .ok("describe");
    assert!(
        describe.contains("Replicas:") && describe.contains(&image),
        "{describe}"
    );

    namespace
        .kubectl(&["scale", "deployment/web", "--replicas=2"])
        .ok("scale");
    eventually(
        "two ready replicas",
        Duration::from_secs(90),
        || match ready_replicas(&namespace)? {
            2 => Ok(()),
            other => Err(format!("{other} ready")),
        },
    );

    // A second revision, then back to the first.
    namespace.apply(&deployment(&image, "hello-v2"));
    namespace
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .ok("rollout status v2");
    let history = namespace
        .kubectl(&["rollout", "history", "deployment/web"])
        .ok("history");
    assert!(history.contains('1') && history.contains('2'), "{history}");
    let undo = namespace
        .kubectl(&["rollout", "undo", "deployment/web", "--to-revision=1"])
        .ok("undo");
    assert!(undo.contains("rolled back"), "{undo}");
    namespace
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .ok("rollout status after undo");
    let deployment = namespace.get_json(&["get", "deployment", "web"]);
    assert_eq!(
        deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let command = deployment["spec"]["template"]["spec"]["containers"][0]["command"][2]
        .as_str()
        .unwrap_or_default();
    assert!(
        command.contains("hello-v1"),
        "undo restored the wrong template: {command}"
    );
    // Undoing to a revision that does not exist fails as on a real cluster.
    let missing = namespace.kubectl(&["rollout", "undo", "deployment/web", "--to-revision=42"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("unable to find specified revision"),
        "{}",
        missing.stderr
    );

    let deleted = namespace
        .kubectl(&["delete", "deployment", "web"])
        .ok("delete");
    assert!(deleted.contains("deleted"), "{deleted}");
    let gone = namespace.kubectl(&["get", "deployment", "web"]);
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("NotFound"), "{}", gone.stderr);
    eventually("pods garbage-collected", Duration::from_secs(60), || {
        let pods = namespace.get_json(&["get", "pods", "-l", "app=web"]);
        match pods["items"].as_array().map_or(0, Vec::len) {
            0 => Ok(()),
            left => Err(format!("{left} pods left")),
        }
    });
}

#[test]
fn kubectl_reports_not_found_and_already_exists_like_a_real_cluster() {
    let sandbox = sandbox();
    let namespace = sandbox.namespace("errors");
    let missing = namespace.kubectl(&["get", "configmap", "nope"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains(r#"configmaps "nope" not found"#),
        "{}",
        missing.stderr
    );
    namespace
        .kubectl(&["create", "configmap", "one", "--from-literal=a=b"])
        .ok("create");
    let again = namespace.kubectl(&["create", "configmap", "one", "--from-literal=a=b"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains(r#"configmaps "one" already exists"#),
        "{}",
        again.stderr
    );
}
