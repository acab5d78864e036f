//! End-to-end tests of `psctl secrets apply` and `psctl secrets check` against the sandbox (they
//! fail, never skip, without it). Each test works in its own namespace, deleted at the end also
//! when an assertion fails, as the namespace's least-privilege ServiceAccount (tests/support).
//!
//! The values are random high-entropy markers: the tests assert that none of them (nor its
//! base64 form) appears in stdout or stderr at any verbosity, in errors, or in the argv of a
//! child process, while the Secret in the cluster does hold them.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use rand::Rng as _;

use support::Sandbox;
use support::sandbox::RuntimeSecret;

const REQUIRED: [&str; 4] = [
    "DATABASE_URL",
    "BINANCE_API_KEY",
    "BINANCE_API_SECRET",
    "WEBHOOK_SECRET",
];

fn marker() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format!("MRK{}", hex::encode(bytes))
}

/// A namespace without the runtime Secret, and a PATH of recording shims: any child process
/// psctl starts is logged.
struct Bed {
    sandbox: Sandbox,
    config: PathBuf,
    shims: tempfile::TempDir,
}

impl Bed {
    async fn new(test: &str) -> Self {
        let sandbox = Sandbox::builder(test)
            .runtime_secret(RuntimeSecret::Absent)
            .start()
            .await;
        let config = sandbox.sandbox_config("secrets", |_| {});
        let shims = tempfile::tempdir().unwrap();
        for program in [
            "kubectl", "helm", "docker", "git", "cargo", "sh", "bash", "env",
        ] {
            let shim = shims.path().join(program);
            std::fs::write(
                &shim,
                format!(
                    "#!/bin/sh\necho \"{program} $*\" >> {}\nexit 1\n",
                    shims.path().join("argv.log").display()
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Self {
            sandbox,
            config,
            shims,
        }
    }

    fn psctl(&self, args: &[&str]) -> (i32, String, String) {
        self.sandbox
            .command(&self.config, args)
            .env("PATH", self.shims.path())
            .run()
            .parts()
    }

    fn child_argv(&self) -> String {
        std::fs::read_to_string(self.shims.path().join("argv.log")).unwrap_or_default()
    }

    async fn secret(&self) -> Option<Secret> {
        let secrets: Api<Secret> =
            Api::namespaced(self.sandbox.admin.clone(), &self.sandbox.namespace);
        secrets.get_opt("problemsolver-secrets").await.unwrap()
    }
}

fn write_env(dir: &Path, name: &str, values: &BTreeMap<&str, String>) -> String {
    let path = dir.join(name);
    let mut text = String::from("# runtime secrets for the e2e test\n");
    for (index, (key, value)) in values.iter().enumerate() {
        // Exercise each quoting style the parser accepts.
        match index % 3 {
            0 => text.push_str(&format!("{key}={value}\n")),
            1 => text.push_str(&format!("export {key}=\"{value}\"\n")),
            _ => text.push_str(&format!("{key}='{value}'  # comment\n")),
        }
    }
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// No marker, raw or base64, anywhere in `texts`.
fn assert_no_value(values: &BTreeMap<&str, String>, texts: &[&str]) {
    for value in values.values() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        for text in texts {
            assert!(
                !text.contains(value.as_str()) && !text.contains(&encoded),
                "a secret value leaked into the output:\n{text}"
            );
        }
    }
}

fn changes(stdout: &str, change: &str) -> Vec<String> {
    let report: serde_json::Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    report["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["change"] == change)
        .map(|k| k["key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn apply_writes_the_values_and_never_prints_one() {
    let sandbox = Bed::new("secrets-apply").await;
    let dir = tempfile::tempdir().unwrap();
    let mut values: BTreeMap<&str, String> = REQUIRED.iter().map(|k| (*k, marker())).collect();
    let mut seen: Vec<String> = Vec::new();

    // A required key missing: refused before anything is written, the key named.
    let mut partial = values.clone();
    partial.remove("WEBHOOK_SECRET");
    let file = write_env(dir.path(), "partial.env", &partial);
    let (code, stdout, stderr) =
        sandbox.psctl(&["secrets", "apply", "--from-env-file", &file, "--yes", "-vv"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("WEBHOOK_SECRET (missing)"), "{stderr}");
    assert!(sandbox.secret().await.is_none());
    seen.extend([stdout, stderr]);

    // --dry-run shows the diff and writes nothing.
    let file = write_env(dir.path(), "runtime.env", &values);
    let (code, stdout, stderr) = sandbox.psctl(&[
        "secrets",
        "apply",
        "--from-env-file",
        &file,
        "--dry-run",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(changes(&stdout, "added").len(), 4, "{stdout}");
    assert!(sandbox.secret().await.is_none());
    seen.extend([stdout, stderr]);

    // The contract's invocation.
    let (code, stdout, stderr) =
        sandbox.psctl(&["secrets", "apply", "--from-env-file", &file, "--yes", "-v"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("created, fingerprint "), "{stdout}");
    seen.extend([stdout, stderr]);
    let secret = sandbox.secret().await.expect("the Secret was created");
    let data = secret.data.clone().unwrap_or_default();
    for (key, value) in &values {
        assert_eq!(
            data.get(*key).map(|v| v.0.as_slice()),
            Some(value.as_bytes()),
            "{key}"
        );
    }
    let annotations = secret.metadata.annotations.unwrap_or_default();
    assert!(annotations.contains_key("psctl.io/applied-at"));

    // One value changed: exactly that key is reported changed, at debug verbosity.
    values.insert("BINANCE_API_SECRET", marker());
    let file = write_env(dir.path(), "runtime.env", &values);
    let (code, stdout, stderr) = sandbox.psctl(&[
        "secrets",
        "apply",
        "--from-env-file",
        &file,
        "--yes",
        "-vv",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        changes(&stdout, "changed"),
        ["BINANCE_API_SECRET"],
        "{stdout}"
    );
    assert_eq!(changes(&stdout, "unchanged").len(), 3, "{stdout}");
    seen.extend([stdout, stderr]);

    // Applying the same file again changes nothing.
    let (code, stdout, stderr) =
        sandbox.psctl(&["secrets", "apply", "--from-env-file", &file, "--yes"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("already holds these values"), "{stderr}");
    seen.extend([stdout, stderr]);

    // A malformed file: the error cites the line, not the value.
    std::fs::write(
        dir.path().join("broken.env"),
        format!("A=1\n{}\n", values["DATABASE_URL"]),
    )
    .unwrap();
    let broken = dir.path().join("broken.env").display().to_string();
    let (code, stdout, stderr) =
        sandbox.psctl(&["secrets", "apply", "--from-env-file", &broken, "--yes"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("line 2: expected `KEY=VALUE`"), "{stderr}");
    seen.extend([stdout, stderr]);

    let texts: Vec<&str> = seen.iter().map(String::as_str).collect();
    assert_no_value(&values, &texts);
    assert_no_value(&partial, &texts);
    assert_eq!(
        sandbox.child_argv(),
        "",
        "psctl secrets must not start child processes"
    );
}

#[tokio::test]
async fn check_reports_missing_and_empty_keys_and_when_the_secret_changed() {
    let sandbox = Bed::new("secrets-check").await;
    let (code, _, stderr) = sandbox.psctl(&["secrets", "check"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let values: BTreeMap<&str, String> = REQUIRED.iter().map(|k| (*k, marker())).collect();
    let file = write_env(dir.path(), "runtime.env", &values);
    let (code, _, stderr) = sandbox.psctl(&["secrets", "apply", "--from-env-file", &file, "--yes"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = sandbox.psctl(&["secrets", "check", "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["last_changed_source"], "psctl.io/applied-at");
    assert!(
        report["fingerprint"]
            .as_str()
            .is_some_and(|f| f.len() == 16)
    );
    assert!(
        report["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["state"] == "present"),
        "{report}"
    );

    // Someone edits the Secret by hand: one key emptied, one removed.
    let secrets: Api<Secret> =
        Api::namespaced(sandbox.sandbox.admin.clone(), &sandbox.sandbox.namespace);
    let patch = serde_json::json!({"data": {"BINANCE_API_KEY": "", "WEBHOOK_SECRET": null}});
    secrets
        .patch(
            "problemsolver-secrets",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let (code, stdout, stderr) = sandbox.psctl(&["secrets", "check", "-o", "json"]);
    assert_eq!(code, 1, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let states: BTreeMap<String, String> = report["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(states["BINANCE_API_KEY"], "empty");
    assert_eq!(states["WEBHOOK_SECRET"], "missing");
    assert_eq!(states["DATABASE_URL"], "present");
    assert!(
        stderr.contains("BINANCE_API_KEY (empty), WEBHOOK_SECRET (missing)"),
        "{stderr}"
    );
    let (_, table, _) = sandbox.psctl(&["secrets", "check"]);
    assert!(table.contains("last changed"), "{table}");
    assert_no_value(&values, &[&stdout, &stderr, &table]);
}
