//! Field ownership with real kubectl and the real Helm engine: `kubectl apply --server-side`
//! conflicts and `--force-conflicts`, shared ownership of equal values, pruning of fields an
//! applier stops applying, `kubectl scale` then a re-apply (a conflict, as in kubernetes'
//! `scale_test.go`), the shape of `managedFields`, and Helm 4's apply-method defaults.

mod support;

use serde_json::Value;
use support::{Namespace, fixture, sandbox};

fn deployment(replicas: u32, image: &str) -> String {
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
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
          image: {image}
          command: ["sleep", "3600"]
          ports: [{{containerPort: 8080}}]
"#
    )
}

/// `kubectl apply --server-side` of `manifest` as `manager`, with extra flags.
fn apply(namespace: &Namespace<'_>, manager: &str, manifest: &str, extra: &[&str]) -> support::Run {
    let field_manager = format!("--field-manager={manager}");
    let mut args = vec![
        "-n",
        namespace.name.as_str(),
        "apply",
        "--server-side",
        field_manager.as_str(),
        "-f",
        "-",
    ];
    args.extend_from_slice(extra);
    namespace.sandbox.kubectl_stdin(&args, manifest)
}

/// The object with its managedFields (kubectl hides them unless asked).
fn with_fields(namespace: &Namespace<'_>, kind: &str, name: &str) -> Value {
    namespace.get_json(&["get", kind, name, "--show-managed-fields"])
}

fn entry<'a>(object: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    object["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

fn owns_replicas(entry: &Value) -> bool {
    entry["fieldsV1"]["f:spec"].get("f:replicas").is_some()
}

#[test]
fn server_side_apply_conflicts_are_refused_shared_when_equal_and_forced_on_request() {
    let sandbox = sandbox();
    let namespace = sandbox.namespace("ssa");
    let base = format!("{}/psctl-base:bookworm", sandbox.registry);
    let other = format!("{}/psctl-base:other", sandbox.registry);

    apply(&namespace, "team-a", &deployment(1, &base), &[]).ok("first apply");
    let object = with_fields(&namespace, "deployment", "web");
    let applied = entry(&object, "team-a", "Apply").expect("team-a's Apply entry");
    assert_eq!(applied["apiVersion"], "apps/v1");
    assert_eq!(applied["fieldsType"], "FieldsV1");
    assert!(applied["time"].is_string(), "{applied}");
    assert!(applied.get("subresource").is_none(), "{applied}");
    let container = &applied["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert_eq!(container["."], serde_json::json!({}), "{applied}");
    assert_eq!(container["f:image"], serde_json::json!({}));
    assert_eq!(
        container["f:ports"]["k:{\"containerPort\":8080,\"protocol\":\"TCP\"}"]["f:containerPort"],
        serde_json::json!({}),
        "{applied}"
    );
    assert_eq!(
        applied["fieldsV1"]["f:spec"]["f:selector"],
        serde_json::json!({})
    );
    assert!(applied["fieldsV1"]["f:metadata"].get("f:name").is_none());
    // The defaulted fields the applier did not send belong to nobody.
    assert!(container.get("f:imagePullPolicy").is_none(), "{applied}");

    // Another manager changing team-a's image: a conflict, nothing changed.
    let refused = apply(&namespace, "team-b", &deployment(1, &other), &[]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains(
            "Apply failed with 1 conflict: conflict with \"team-a\": .spec.template.spec.containers[name=\"web\"].image"
        ),
        "{}",
        refused.stderr
    );
    let object = with_fields(&namespace, "deployment", "web");
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["image"],
        base.as_str()
    );

    // The same value is shared ownership, not a conflict.
    apply(&namespace, "team-b", &deployment(1, &base), &[]).ok("same values");
    let object = with_fields(&namespace, "deployment", "web");
    for manager in ["team-a", "team-b"] {
        let owned = entry(&object, manager, "Apply").expect("an Apply entry");
        assert!(owns_replicas(owned), "{manager}: {owned}");
    }

    // --force-conflicts takes the image over.
    apply(
        &namespace,
        "team-b",
        &deployment(1, &other),
        &["--force-conflicts"],
    )
    .ok("forced");
    let object = with_fields(&namespace, "deployment", "web");
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["image"],
        other.as_str()
    );
    let team_a = entry(&object, "team-a", "Apply").expect("team-a keeps the rest");
    assert!(
        team_a["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]
            .get("f:image")
            .is_none(),
        "{team_a}"
    );
    assert!(owns_replicas(team_a));
}

#[test]
fn kubectl_scale_owns_replicas_and_a_reapply_conflicts_until_forced() {
    let sandbox = sandbox();
    let namespace = sandbox.namespace("ssa-scale");
    let base = format!("{}/psctl-base:bookworm", sandbox.registry);

    apply(&namespace, "deployer", &deployment(1, &base), &[]).ok("apply");
    namespace
        .kubectl(&["scale", "deployment/web", "--replicas=0"])
        .ok("scale");
    let object = with_fields(&namespace, "deployment", "web");
    let scaler = object["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .find(|e| e["subresource"] == "scale")
        .expect("an entry for the scale subresource")
        .clone();
    assert_eq!(scaler["operation"], "Update");
    assert_eq!(
        scaler["fieldsV1"],
        serde_json::json!({"f:spec": {"f:replicas": {}}}),
        "{scaler}"
    );
    let deployer = entry(&object, "deployer", "Apply").expect("the applier's entry");
    assert!(
        !owns_replicas(deployer),
        "the scale took .spec.replicas: {deployer}"
    );

    let manager = scaler["manager"].as_str().expect("a manager name");
    let refused = apply(&namespace, "deployer", &deployment(1, &base), &[]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains(&format!(
            "Apply failed with 1 conflict: conflict with \"{manager}\" using apps/v1: .spec.replicas"
        )),
        "{}",
        refused.stderr
    );
    // Applying the value the scale set is no conflict.
    apply(&namespace, "deployer", &deployment(0, &base), &[]).ok("same replicas");

    apply(
        &namespace,
        "deployer",
        &deployment(1, &base),
        &["--force-conflicts"],
    )
    .ok("forced");
    let object = with_fields(&namespace, "deployment", "web");
    assert_eq!(object["spec"]["replicas"], 1);
    assert!(
        object["metadata"]["managedFields"]
            .as_array()
            .expect("managedFields")
            .iter()
            .all(|e| e["subresource"] != "scale"),
        "{object}"
    );
    assert!(owns_replicas(
        entry(&object, "deployer", "Apply").expect("entry")
    ));

    // A merge patch is an Update too: it owns what it changed.
    namespace
        .kubectl(&[
            "patch",
            "deployment",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":2}}"#,
            "--field-manager=patcher",
        ])
        .ok("patch");
    let object = with_fields(&namespace, "deployment", "web");
    assert!(owns_replicas(
        entry(&object, "patcher", "Update").expect("patcher's entry")
    ));
}

#[test]
fn fields_an_applier_stops_applying_are_removed_unless_another_manager_owns_them() {
    let sandbox = sandbox();
    let namespace = sandbox.namespace("ssa-prune");
    let config = |data: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n{data}")
    };
    apply(
        &namespace,
        "owner",
        &config("  a: \"1\"\n  b: \"2\"\n  c: \"3\"\n"),
        &[],
    )
    .ok("apply");
    apply(&namespace, "other", &config("  c: \"3\"\n"), &[]).ok("shared c");
    apply(&namespace, "owner", &config("  a: \"1\"\n"), &[]).ok("drop b and c");
    let object = with_fields(&namespace, "configmap", "settings");
    assert_eq!(
        object["data"],
        serde_json::json!({"a": "1", "c": "3"}),
        "{object}"
    );
    assert_eq!(
        entry(&object, "owner", "Apply").expect("owner")["fieldsV1"],
        serde_json::json!({"f:data": {"f:a": {}}})
    );
    // A patch without a manager name is recorded under kubectl's User-Agent prefix.
    namespace
        .kubectl(&["annotate", "configmap", "settings", "note=x"])
        .ok("annotate");
    let object = with_fields(&namespace, "configmap", "settings");
    let annotator = object["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .find(|e| {
            e["fieldsV1"]["f:metadata"]["f:annotations"]
                .get("f:note")
                .is_some()
        })
        .expect("someone owns the annotation")
        .clone();
    assert!(
        annotator["manager"]
            .as_str()
            .is_some_and(|m| m.starts_with("kubectl")),
        "{annotator}"
    );
    assert_eq!(annotator["operation"], "Update");
}

fn configmap_entry(namespace: &Namespace<'_>, manager: &str) -> Value {
    let object = with_fields(namespace, "configmap", "demo-settings");
    object["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .find(|e| e["manager"] == manager && e["fieldsV1"]["f:data"].get("f:greeting").is_some())
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn helm_installs_server_side_and_upgrades_follow_the_recorded_apply_method() {
    let sandbox = sandbox();
    let namespace = sandbox.namespace("helm-ssa");
    let chart = fixture("chart").display().to_string();
    let ns = namespace.name.as_str();

    // A new install applies server-side as the field manager `helm`.
    sandbox
        .helm(&["install", "demo", &chart, "-n", ns])
        .ok("install");
    assert_eq!(configmap_entry(&namespace, "helm")["operation"], "Apply");

    // Someone edits the greeting; the next upgrade (auto: server-side, as recorded) conflicts...
    namespace
        .kubectl(&[
            "patch",
            "configmap",
            "demo-settings",
            "--type=merge",
            "-p",
            r#"{"data":{"greeting":"hi"}}"#,
            "--field-manager=editor",
        ])
        .ok("edit");
    let refused = sandbox.helm(&[
        "upgrade",
        "demo",
        &chart,
        "-n",
        ns,
        "--set",
        "greeting=bonjour",
    ]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("UPGRADE FAILED"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("conflict with \"editor\""),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains(".data.greeting"),
        "{}",
        refused.stderr
    );
    let greeting = namespace.get_json(&["get", "configmap", "demo-settings"]);
    assert_eq!(greeting["data"]["greeting"], "hi");

    // ...unless forced, which takes the field back.
    sandbox
        .helm(&[
            "upgrade",
            "demo",
            &chart,
            "-n",
            ns,
            "--set",
            "greeting=bonjour",
            "--force-conflicts",
        ])
        .ok("forced upgrade");
    let greeting = namespace.get_json(&["get", "configmap", "demo-settings"]);
    assert_eq!(greeting["data"]["greeting"], "bonjour");
    assert_eq!(configmap_entry(&namespace, "editor"), Value::Null);
    assert_eq!(configmap_entry(&namespace, "helm")["operation"], "Apply");

    // A release installed client-side keeps Helm's three-way merge: an edit never conflicts.
    let csa = sandbox.namespace("helm-csa");
    let ns = csa.name.as_str();
    sandbox
        .helm(&["install", "demo", &chart, "-n", ns, "--server-side=false"])
        .ok("client-side install");
    assert_eq!(configmap_entry(&csa, "helm")["operation"], "Update");
    csa.kubectl(&[
        "patch",
        "configmap",
        "demo-settings",
        "--type=merge",
        "-p",
        r#"{"data":{"greeting":"hi"}}"#,
        "--field-manager=editor",
    ])
    .ok("edit");
    sandbox
        .helm(&[
            "upgrade",
            "demo",
            &chart,
            "-n",
            ns,
            "--set",
            "greeting=bonjour",
        ])
        .ok("client-side upgrade");
    let greeting = csa.get_json(&["get", "configmap", "demo-settings"]);
    assert_eq!(greeting["data"]["greeting"], "bonjour");
    assert_eq!(configmap_entry(&csa, "helm")["operation"], "Update");

    // `install --server-side=auto` is refused as Helm's boolean flag refuses it.
    let refused = sandbox.helm(&["install", "other", &chart, "-n", ns, "--server-side=auto"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("invalid argument \"auto\""),
        "{}",
        refused.stderr
    );
}

/// An applied configuration cannot repeat an item of a keyed list (two `env` entries named
/// alike): kubectl reports the server's structured-merge-diff error. A plain create may carry
/// them, and the object it made can still be applied to without them.
#[test]
fn an_apply_that_repeats_an_env_name_is_refused_but_a_create_is_not() {
    let sandbox = sandbox();
    let namespace = sandbox.namespace("ssa-duplicates");
    let repeated = deployment(1, "img:1").replace(
        "          ports: [{containerPort: 8080}]\n",
        "          ports: [{containerPort: 8080}]\n          env: [{name: FOO, value: x}, {name: FOO, value: y}]\n",
    );
    let refused = apply(&namespace, "owner", &repeated, &[]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("failed to create typed patch object")
            && refused
                .stderr
                .contains(r#".spec.template.spec.containers[name="web"].env: duplicate entries for key [name="FOO"]"#),
        "{}",
        refused.stderr
    );
    assert_ne!(
        namespace.kubectl(&["get", "deployment", "web"]).code,
        0,
        "nothing was created"
    );
    namespace
        .sandbox
        .kubectl_stdin(
            &["-n", namespace.name.as_str(), "create", "-f", "-"],
            &repeated,
        )
        .ok("a create may repeat it");
    apply(
        &namespace,
        "owner",
        &deployment(1, "img:2"),
        &["--force-conflicts"],
    )
    .ok("an apply without the repetition");
}
