//! The real Helm v4 engine (through the sandbox's `helm`) against the sandbox: install, upgrade,
//! history, rollback to a revision, uninstall, with release storage as Helm keeps it.

mod support;

use support::{fixture, sandbox};

fn greeting(namespace: &support::Namespace<'_>) -> String {
    let config = namespace.get_json(&["get", "configmap", "demo-settings"]);
    config["data"]["greeting"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn helm_installs_upgrades_rolls_back_and_uninstalls() {
    let sandbox = sandbox();
    let namespace = sandbox.namespace("helm");
    let chart = fixture("chart").display().to_string();
    let ns = namespace.name.as_str();

    sandbox
        .helm(&["upgrade", "--install", "demo", &chart, "-n", ns])
        .ok("install");
    assert_eq!(greeting(&namespace), "hello");
    sandbox
        .helm(&[
            "upgrade",
            "--install",
            "demo",
            &chart,
            "-n",
            ns,
            "--set",
            "greeting=bonjour",
        ])
        .ok("upgrade");
    assert_eq!(greeting(&namespace), "bonjour");

    let history: serde_json::Value = serde_json::from_str(
        &sandbox
            .helm(&["history", "demo", "-n", ns, "-o", "json"])
            .ok("history"),
    )
    .expect("history JSON");
    let revisions: Vec<i64> = history
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|entry| entry["revision"].as_i64())
        .collect();
    assert_eq!(revisions, vec![1, 2]);
    assert_eq!(history[1]["status"], "deployed");
    assert_eq!(history[0]["status"], "superseded");

    // Releases live where Helm keeps them: Secrets of type helm.sh/release.v1.
    let storage = namespace.get_json(&["get", "secrets", "-l", "owner=helm,name=demo"]);
    assert_eq!(storage["items"].as_array().map_or(0, Vec::len), 2);
    assert_eq!(storage["items"][0]["type"], "helm.sh/release.v1");

    sandbox
        .helm(&["rollback", "demo", "1", "-n", ns])
        .ok("rollback");
    assert_eq!(greeting(&namespace), "hello");
    let status: serde_json::Value = serde_json::from_str(
        &sandbox
            .helm(&["status", "demo", "-n", ns, "-o", "json"])
            .ok("status"),
    )
    .expect("status JSON");
    assert_eq!(status["version"], 3);
    assert_eq!(status["info"]["status"], "deployed");

    sandbox
        .helm(&["uninstall", "demo", "-n", ns])
        .ok("uninstall");
    let gone = namespace.kubectl(&["get", "configmap", "demo-settings"]);
    assert_eq!(
        gone.code, 1,
        "the release's objects are deleted by uninstall"
    );
    let missing = sandbox.helm(&["status", "demo", "-n", ns]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
}
