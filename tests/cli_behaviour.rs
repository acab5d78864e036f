//! The real binary's contract that needs no cluster: exit codes for usage and configuration
//! errors, messages naming the file and key, data on stdout only, and a closed pipe being fine.

use std::io::Read as _;
use std::process::{Command, Stdio};

fn psctl(args: &[&str], config: Option<&std::path::Path>) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_psctl"));
    command
        .args(args)
        .env_remove("PSCTL_ENV")
        .env_remove("PSCTL_CONFIG")
        .env("NO_COLOR", "1");
    if let Some(config) = config {
        command.env("PSCTL_CONFIG", config);
    }
    let output = command.output().expect("run psctl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn config(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn help_goes_to_stdout_and_succeeds() {
    let (code, stdout, stderr) = psctl(&["--help"], None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Usage: psctl [OPTIONS] <COMMAND>"));
    assert!(stdout.contains("Exit codes: 0 success, 1 a verification said no"));
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let (code, stdout, stderr) = psctl(&["deploy", "--no-such-flag"], None);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn a_missing_key_names_the_file_the_path_and_exits_2() {
    let file = config(
        "environments:\n  sandbox:\n    kube_context: psctl-sandbox\n    components:\n      webhook:\n        chart: charts/webhook-worker\n        image: i\n        deployment: d\n        selector: app=x\n",
    );
    let (code, stdout, stderr) = psctl(&["history", "webhook"], Some(file.path()));
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    let expected = format!(
        "error: {}: environments.sandbox.components.webhook.release: missing",
        file.path().display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
}

#[test]
fn a_missing_config_file_explains_how_to_point_at_one() {
    let (code, _, stderr) = psctl(&["status", "--config", "/nonexistent/psctl.yaml"], None);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot read configuration file `/nonexistent/psctl.yaml`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: pass `--config FILE` or set `PSCTL_CONFIG`"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_cluster_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n\
         users: [{name: u, user: {}}]\ncontexts: [{name: ctx, context: {cluster: c, user: u}}]\ncurrent-context: ctx\n",
    )
    .unwrap();
    let file = config(&format!(
        "environments:\n  e:\n    kube_context: ctx\n    kubeconfig: {}\n",
        kubeconfig.display()
    ));
    let (code, _, stderr) = psctl(&["history"], Some(file.path()));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("listing Helm release Secrets"), "{stderr}");
}

#[test]
fn a_context_missing_from_the_kubeconfig_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\ncurrent-context: ''\n").unwrap();
    let file = config(&format!(
        "environments:\n  e:\n    kube_context: psctl-sandbox\n    kubeconfig: {}\n",
        kubeconfig.display()
    ));
    let (code, _, stderr) = psctl(&["status"], Some(file.path()));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot use context `psctl-sandbox`"),
        "{stderr}"
    );
}

#[test]
fn the_dry_run_plan_needs_no_cluster_and_is_json_on_stdout() {
    let file =
        config("environments:\n  e:\n    kube_context: nowhere\n    registry: 127.0.0.1:5000\n");
    let (code, stdout, stderr) = psctl(
        &["deploy", "--dry-run", "--tag", "1.2.3", "-o", "json"],
        Some(file.path()),
    );
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        plan["steps"][1]["image"],
        "127.0.0.1:5000/problemsolver-webhook-worker:1.2.3"
    );
    assert!(
        plan["steps"][0]["helm"]
            .as_str()
            .unwrap()
            .contains("upgrade --install problemsolver-poller")
    );
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_psctl"))
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn an_injected_tag_is_refused_before_anything_runs() {
    let file =
        config("environments:\n  e:\n    kube_context: nowhere\n    registry: 127.0.0.1:5000\n");
    for command in [
        &["deploy", "--dry-run", "--tag", "v1,image.repository=evil/x"][..],
        &[
            "canary",
            "start",
            "--dry-run",
            "--tag",
            "v1,canary.replicas=9",
        ][..],
    ] {
        let (code, stdout, stderr) = psctl(command, Some(file.path()));
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("is not a valid image tag"), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
    let playbook = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        playbook.path(),
        "name: p\nsteps:\n  - deploy: {tag: \"${tag}\"}\n",
    )
    .unwrap();
    let (code, _, stderr) = psctl(
        &[
            "run",
            playbook.path().to_str().unwrap(),
            "--dry-run",
            "--var",
            "tag=v1,image.repository=evil/x",
        ],
        Some(file.path()),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`tag`:"), "{stderr}");
}

#[test]
fn the_dry_run_plan_hands_helm_values_in_a_file_never_set() {
    let file =
        config("environments:\n  e:\n    kube_context: nowhere\n    registry: 127.0.0.1:5000\n");
    let (code, stdout, stderr) = psctl(
        &["deploy", "--dry-run", "--tag", "1.2.3"],
        Some(file.path()),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("--set"), "{stdout}");
    assert!(stdout.contains("--values <values-file>"), "{stdout}");
    assert!(stdout.contains("poller values file:"), "{stdout}");
    assert!(stdout.contains(r#""tag": "1.2.3""#), "{stdout}");
}

#[test]
fn a_confirmation_nobody_can_answer_is_refused_not_awaited() {
    let file = config("environments:\n  e:\n    kube_context: nowhere\n");
    // stdin is a pipe that stays open: a prompt reading it would hang the test.
    let mut child = Command::new(env!("CARGO_BIN_EXE_psctl"))
        .args(["deploy", "--tag", "1.2.3"])
        .env_remove("PSCTL_ENV")
        .env_remove("DATABASE_URL")
        .env("PSCTL_CONFIG", file.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing to proceed without confirmation (stdin is not a terminal)"),
        "{stderr}"
    );
    assert!(stderr.contains("pass `--yes`"), "{stderr}");
}

/// `--version` names the commit the binary was built from: this checkout's HEAD, or `unknown`
/// when it was built without git.
#[test]
fn version_prints_the_version_and_the_git_commit() {
    let (code, stdout, stderr) = psctl(&["--version"], None);
    assert_eq!(code, 0, "{stderr}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    assert_eq!(
        stdout,
        format!("psctl {} (commit {head})\n", env!("CARGO_PKG_VERSION"))
    );
}
