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

/// What operators type to look at releases: `list -A` (and its filters), `get values --all` and
/// `--revision`, `status -o json` (also of an earlier revision), `history`, `get manifest`,
/// `get notes`.
#[test]
fn helm_inspection_commands_operators_type() {
    let sandbox = sandbox();
    let first = sandbox.namespace("helm-inspect-a");
    let second = sandbox.namespace("helm-inspect-b");
    let chart = fixture("chart").display().to_string();
    let (a, b) = (first.name.as_str(), second.name.as_str());
    sandbox
        .helm(&["upgrade", "--install", "demo", &chart, "-n", a])
        .ok("install in a");
    sandbox
        .helm(&[
            "upgrade",
            "--install",
            "demo",
            &chart,
            "-n",
            a,
            "--set",
            "greeting=bonjour",
        ])
        .ok("upgrade in a");
    sandbox
        .helm(&["upgrade", "--install", "other", &chart, "-n", b])
        .ok("install in b");

    // Every namespace, with the namespace of each release.
    let listed: serde_json::Value =
        serde_json::from_str(&sandbox.helm(&["list", "-A", "-o", "json"]).ok("list -A"))
            .expect("list JSON");
    let ours: Vec<(String, String, String)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter(|release| release["namespace"] == a || release["namespace"] == b)
        .map(|release| {
            (
                release["name"].as_str().unwrap_or_default().to_owned(),
                release["namespace"].as_str().unwrap_or_default().to_owned(),
                release["revision"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ours,
        [
            ("demo".to_owned(), a.to_owned(), "2".to_owned()),
            ("other".to_owned(), b.to_owned(), "1".to_owned())
        ],
        "{listed:#}"
    );
    let table = sandbox.helm(&["list", "--all-namespaces"]).ok("list table");
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|line| line.starts_with("other") && line.contains(b)),
        "{table}"
    );
    let quiet = sandbox.helm(&["list", "-n", a, "-q"]).ok("list -q");
    assert_eq!(quiet.trim(), "demo");
    let filtered = sandbox
        .helm(&["list", "-A", "--filter", "^oth", "--no-headers"])
        .ok("list --filter");
    assert!(
        filtered.lines().all(|line| line.starts_with("other")) && filtered.contains(b),
        "{filtered}"
    );
    let failed = sandbox
        .helm(&["list", "-n", a, "--failed", "-q"])
        .ok("list --failed");
    assert_eq!(failed.trim(), "", "nothing failed");

    // Values: user-supplied, computed, and those of an earlier revision.
    let values = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["get", "values", "demo", "-n", a, "-o", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&sandbox.helm(&all).ok("get values")).expect("values JSON")
    };
    assert_eq!(values(&[]), serde_json::json!({ "greeting": "bonjour" }));
    assert_eq!(values(&["--all"])["greeting"], "bonjour");
    assert_eq!(
        values(&["--revision", "1"]),
        serde_json::Value::Null,
        "revision 1 had no user values"
    );
    assert_eq!(values(&["--revision", "1", "--all"])["greeting"], "hello");

    // Status, of the latest and of an earlier revision.
    let status = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["status", "demo", "-n", a, "-o", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&sandbox.helm(&all).ok("status")).expect("status JSON")
    };
    let latest = status(&[]);
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["info"]["status"], "deployed");
    assert_eq!(latest["namespace"], a);
    let earlier = status(&["--revision", "1"]);
    assert_eq!(earlier["version"], 1);
    assert_eq!(earlier["info"]["status"], "superseded");
    let missing = sandbox.helm(&["status", "demo", "-n", a, "--revision", "9"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("release: not found"),
        "{}",
        missing.stderr
    );

    let history = sandbox
        .helm(&["history", "demo", "-n", a])
        .ok("history table");
    assert!(history.starts_with("REVISION"), "{history}");
    assert_eq!(history.lines().count(), 3, "{history}");

    let manifest = sandbox
        .helm(&["get", "manifest", "demo", "-n", a])
        .ok("get manifest");
    assert!(
        manifest.contains("kind: ConfigMap") && manifest.contains("bonjour"),
        "{manifest}"
    );
    let old_manifest = sandbox
        .helm(&["get", "manifest", "demo", "-n", a, "--revision", "1"])
        .ok("get manifest --revision");
    assert!(
        old_manifest.contains("hello") && !old_manifest.contains("bonjour"),
        "{old_manifest}"
    );
    sandbox
        .helm(&["get", "notes", "demo", "-n", a])
        .ok("get notes");
    sandbox
        .helm(&["get", "hooks", "demo", "-n", a])
        .ok("get hooks");
}
