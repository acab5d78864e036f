//! The `psctl-sandbox` binary against the running sandbox: `env` prints the contract's exports,
//! `status -o json` reports every part up, `up` again is a no-op that keeps the same daemon.

mod support;

use std::process::Command;

use support::sandbox;

fn psctl_sandbox(args: &[&str]) -> support::Run {
    let sandbox = sandbox();
    let output = Command::new(env!("CARGO_BIN_EXE_psctl-sandbox"))
        .arg("--state-dir")
        .arg(&sandbox.state)
        .args(args)
        .output()
        .expect("psctl-sandbox runs");
    support::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn env_prints_the_contract_exports_pointing_at_this_sandbox() {
    let sandbox = sandbox();
    let text = psctl_sandbox(&["env"]).ok("env");
    for name in [
        "KUBECONFIG",
        "PSCTL_CONFIG",
        "PSCTL_ENV",
        "DATABASE_URL",
        "PROMETHEUS_URL",
        "PSCTL_REGISTRY",
        "HELM",
        "KUBECTL",
    ] {
        assert!(
            text.contains(&format!("export {name}='")),
            "{name} missing:\n{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "export KUBECONFIG='{}'",
            sandbox.kubeconfig.display()
        )),
        "{text}"
    );
    assert!(
        !text.contains("ENCRYPTION_MASTER_KEY") && !text.contains("BINANCE_API_SECRET"),
        "no secret is printed:\n{text}"
    );
}

#[test]
fn status_reports_every_part_up_and_up_again_keeps_the_daemon() {
    let before: serde_json::Value =
        serde_json::from_str(&psctl_sandbox(&["status", "-o", "json"]).ok("status")).expect("JSON");
    let parts = before.as_array().expect("a list of parts");
    let down: Vec<&serde_json::Value> = parts.iter().filter(|part| part["up"] != true).collect();
    assert!(down.is_empty(), "parts down: {down:?}");
    let names: Vec<&str> = parts
        .iter()
        .filter_map(|part| part["name"].as_str())
        .collect();
    for wanted in [
        "daemon",
        "api-server",
        "kubelet",
        "registry",
        "prometheus",
        "postgres",
        "base-image",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    let daemon_pid = |value: &serde_json::Value| {
        value
            .as_array()
            .and_then(|parts| parts.iter().find(|part| part["name"] == "daemon"))
            .map(|part| part["detail"].clone())
    };

    let again = psctl_sandbox(&["up", "--no-bootstrap", "--no-tools"]);
    assert_eq!(again.code, 0, "second up failed: {}", again.stderr);
    assert!(
        again.stdout.starts_with("sandbox_up_seconds="),
        "{}",
        again.stdout
    );
    let after: serde_json::Value =
        serde_json::from_str(&psctl_sandbox(&["status", "-o", "json"]).ok("status")).expect("JSON");
    assert_eq!(
        daemon_pid(&before),
        daemon_pid(&after),
        "an idempotent up must keep the running daemon"
    );
}
