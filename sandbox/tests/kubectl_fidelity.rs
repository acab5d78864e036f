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

/// kubectl's typed `create` commands go through client-go's typed clients, which send
/// Kubernetes protobuf (`application/vnd.kubernetes.protobuf`); what they create must be what
/// a real cluster stores.
#[test]
fn kubectl_typed_create_commands_send_protobuf_and_create_what_a_cluster_would() {
    let sandbox = sandbox();
    let image = sandbox.busybox_image("1");
    let namespace = sandbox.namespace("typed");

    let created = namespace.kubectl(&[
        "create",
        "deployment",
        "web",
        &format!("--image={image}"),
        "--replicas=2",
        "--port=8080",
        "-v=8",
        "--",
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "8080",
    ]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert!(
        created.stdout.contains("deployment.apps/web created"),
        "{}",
        created.stdout
    );
    assert!(
        created
            .stderr
            .contains("application/vnd.kubernetes.protobuf"),
        "kubectl create deployment no longer sends protobuf, so this test proves nothing:\n{}",
        created.stderr
    );
    let deployment = namespace.get_json(&["get", "deployment", "web"]);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(
        deployment["spec"]["strategy"]["type"], "RollingUpdate",
        "defaulted after decoding"
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "busybox");
    assert_eq!(container["image"], image.as_str());
    assert_eq!(
        container["command"],
        serde_json::json!(["/bin/busybox", "httpd", "-f", "-p", "8080"])
    );
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(container["resources"], serde_json::json!({}));
    assert!(
        deployment["metadata"].get("generateName").is_none()
            && deployment["spec"]["template"]["metadata"]
                .get("creationTimestamp")
                .is_none_or(serde_json::Value::is_null),
        "empty fields of the wire form are absent: {deployment}"
    );
    namespace
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .ok("the typed deployment rolls out");

    namespace
        .kubectl(&["create", "service", "clusterip", "web", "--tcp=80:8080"])
        .ok("create service clusterip");
    let service = namespace.get_json(&["get", "service", "web"]);
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"], 8080,
        "an IntOrString holding a number"
    );
    assert_eq!(service["spec"]["selector"]["app"], "web");
    assert!(
        service["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.96.")),
        "{service}"
    );

    namespace
        .kubectl(&[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
            "--from-literal=empty=",
        ])
        .ok("create configmap");
    let config_map = namespace.get_json(&["get", "configmap", "settings"]);
    assert_eq!(
        config_map["data"],
        serde_json::json!({ "mode": "fast", "empty": "" }),
        "map values are kept even when empty"
    );

    namespace
        .kubectl(&[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=token=not-a-real-secret",
        ])
        .ok("create secret");
    let secret = namespace.get_json(&["get", "secret", "creds"]);
    assert_eq!(secret["type"], "Opaque");
    assert!(secret["data"]["token"].is_string(), "data is base64 text");

    namespace
        .kubectl(&["create", "serviceaccount", "robot"])
        .ok("create serviceaccount");
    namespace
        .kubectl(&[
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=pods,deployments.apps",
        ])
        .ok("create role");
    let role = namespace.get_json(&["get", "role", "reader"]);
    let rules = role["rules"].as_array().expect("rules");
    assert!(
        rules
            .iter()
            .any(|rule| rule["apiGroups"] == serde_json::json!([""])
                && rule["resources"] == serde_json::json!(["pods"])),
        "the core group is an empty string inside a list, and kept: {role}"
    );
    assert!(
        rules
            .iter()
            .all(|rule| rule["verbs"] == serde_json::json!(["get", "list"])),
        "{role}"
    );
    let subject = format!("{}:robot", namespace.name);
    namespace
        .kubectl(&[
            "create",
            "rolebinding",
            "reader",
            "--role=reader",
            &format!("--serviceaccount={subject}"),
        ])
        .ok("create rolebinding");
    let binding = namespace.get_json(&["get", "rolebinding", "reader"]);
    assert_eq!(
        binding["roleRef"],
        serde_json::json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader" })
    );
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], "robot");
    // The binding takes effect: RBAC reads what the protobuf body said.
    let token = namespace
        .kubectl(&["create", "token", "robot"])
        .ok("create token (a protobuf TokenRequest)");
    let token_flag = format!("--token={}", token.trim());
    for (verb, expected) in [("list", "yes"), ("delete", "no")] {
        let can = namespace.kubectl(&["auth", "can-i", verb, "pods", &token_flag]);
        assert_eq!(
            can.stdout.trim(),
            expected,
            "can-i {verb} pods: {}",
            can.stderr
        );
    }

    namespace
        .kubectl(&[
            "create",
            "poddisruptionbudget",
            "web",
            "--selector=app=web",
            "--min-available=50%",
        ])
        .ok("create poddisruptionbudget");
    let budget = namespace.get_json(&["get", "poddisruptionbudget", "web"]);
    assert_eq!(
        budget["spec"]["minAvailable"], "50%",
        "an IntOrString holding a string"
    );
}
