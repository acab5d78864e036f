//! The real binary's contract that needs no cluster: exit codes for usage and configuration
//! errors, messages naming the file and key, data on stdout only, and a closed pipe being fine.

mod support;

use std::io::Read as _;
use std::process::{Command, Stdio};

use support::Psctl;

fn psctl(args: &[&str], config: Option<&std::path::Path>) -> (i32, String, String) {
    let mut command = Psctl::new().args(args);
    if let Some(config) = config {
        command = command.env("PSCTL_CONFIG", config);
    }
    command.run().parts()
}

/// Snapshots `text` with this checkout's path and temporary directories replaced.
macro_rules! assert_snapshot_tmp {
    ($name:expr, $text:expr) => {
        support::snapshot_settings().bind(|| insta::assert_snapshot!($name, $text))
    };
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
    assert_eq!(stderr, "");
    insta::assert_snapshot!("help", stdout);
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let (code, stdout, stderr) = psctl(&["deploy", "--no-such-flag"], None);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    insta::assert_snapshot!("unknown_flag", stderr);
}

#[test]
fn a_missing_key_names_the_file_the_path_and_exits_2() {
    let file = config(
        "environments:\n  sandbox:\n    kube_context: psctl-sandbox\n    components:\n      webhook:\n        chart: charts/webhook-worker\n        image: i\n        deployment: d\n        selector: app=x\n",
    );
    let (code, stdout, stderr) = psctl(&["history", "webhook"], Some(file.path()));
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.starts_with(&format!("error: {}: ", file.path().display())),
        "{stderr}"
    );
    assert_snapshot_tmp!("missing_key", stderr);
}

#[test]
fn a_missing_config_file_explains_how_to_point_at_one() {
    let (code, _, stderr) = psctl(&["status", "--config", "/nonexistent/psctl.yaml"], None);
    assert_eq!(code, 2);
    insta::assert_snapshot!("missing_config_file", stderr);
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
    assert_snapshot_tmp!("unreachable_cluster", stderr);
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
    assert_snapshot_tmp!("missing_context", stderr);
}

#[test]
fn a_helm_driver_other_than_secrets_is_refused_before_anything_runs() {
    let file =
        config("environments:\n  e:\n    kube_context: nowhere\n    registry: 127.0.0.1:5000\n");
    let run = |driver: &str, args: &[&str]| {
        Psctl::new()
            .env("PSCTL_CONFIG", file.path())
            .env("HELM_DRIVER", driver)
            .args(args)
            .run()
            .parts()
    };
    for driver in ["configmap", "sql", "memory"] {
        for args in [
            &["history"][..],
            &["deploy", "--dry-run", "--tag", "1.2.3"][..],
            &["status"][..],
        ] {
            let (code, stdout, stderr) = run(driver, args);
            assert_eq!(code, 2, "HELM_DRIVER={driver} {args:?}: {stderr}");
            assert!(stdout.is_empty(), "{stdout}");
            assert!(
                stderr.starts_with(&format!(
                    "error: HELM_DRIVER=\"{driver}\" is not supported: psctl reads Helm release history from Secrets only"
                )),
                "{stderr}"
            );
            assert!(stderr.contains("unset HELM_DRIVER"), "{stderr}");
        }
    }
    insta::assert_snapshot!("helm_driver_refused", run("configmap", &["history"]).2);
    // Helm's own spellings of its default pass, and commands that never touch Helm do not care.
    for driver in ["secret", "secrets", ""] {
        let (code, _, stderr) = run(driver, &["deploy", "--dry-run", "--tag", "1.2.3"]);
        assert_eq!(code, 0, "HELM_DRIVER={driver:?}: {stderr}");
    }
    let (code, _, stderr) = run("configmap", &["rbac"]);
    assert_eq!(code, 0, "{stderr}");
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
    support::snapshot_settings().bind(|| insta::assert_json_snapshot!("deploy_plan_json", plan));
}

#[test]
fn the_canary_plan_needs_no_cluster_and_is_json_on_stdout() {
    let file =
        config("environments:\n  e:\n    kube_context: nowhere\n    registry: 127.0.0.1:5000\n");
    let (code, stdout, stderr) = psctl(
        &[
            "canary",
            "start",
            "--dry-run",
            "--tag",
            "1.2.3",
            "-o",
            "json",
        ],
        Some(file.path()),
    );
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    support::snapshot_settings().bind(|| insta::assert_json_snapshot!("canary_plan_json", plan));
}

#[test]
fn canary_policy_flags_show_in_the_plan_and_are_checked_like_the_file() {
    let file =
        config("environments:\n  e:\n    kube_context: nowhere\n    registry: 127.0.0.1:5000\n");
    let start = |extra: &[&str]| {
        let mut args = vec![
            "canary",
            "start",
            "--dry-run",
            "--tag",
            "1.2.3",
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        psctl(&args, Some(file.path()))
    };
    let (code, stdout, stderr) = start(&["--max-error-rate", "0.005", "--on-latency", "pause"]);
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(plan["shape"]["policy"]["max_error_rate"], 0.005, "{plan:#}");
    assert_eq!(plan["shape"]["policy"]["on_latency"], "pause", "{plan:#}");

    let (code, stdout, stderr) = start(&["--max-error-rate", "1.5"]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("`max_error_rate` must be between 0 and 1 (exclusive)"),
        "{stderr}"
    );
    let (code, _, stderr) = start(&["--on-latency", "ignore"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn the_release_playbook_plan_needs_no_cluster() {
    let file =
        config("environments:\n  e:\n    kube_context: nowhere\n    registry: 127.0.0.1:5000\n");
    let (code, stdout, stderr) = psctl(
        &[
            "run",
            "playbooks/release.yaml",
            "--var",
            "tag=1.2.3",
            "--dry-run",
            "-o",
            "json",
        ],
        Some(file.path()),
    );
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // The commit this binary was built from is a variable of every playbook run.
    support::snapshot_settings().bind(|| {
        insta::assert_json_snapshot!("release_playbook_plan_json", plan, {".vars.git_sha" => "[commit]"})
    });
}

/// `psctl uninstall --dry-run -o json` is a plan that needs no cluster: without one it says the
/// history was not read and shows the command, what it waits for and the redeploy; a production
/// environment is flagged, and the real run there is refused without --force-production before
/// anything is contacted.
#[test]
fn the_uninstall_plan_needs_no_cluster_and_production_needs_force() {
    let file = config(
        "environments:\n  prod:\n    kube_context: nowhere\n    namespace: apps\n    production: true\n",
    );
    let (code, stdout, stderr) = psctl(
        &["uninstall", "webhook", "--dry-run", "-o", "json"],
        Some(file.path()),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("the release history was not read"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`prod` is a production environment: uninstalling `webhook` stops it until it is deployed again; the real run is refused without --force-production"),
        "{stderr}"
    );
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    support::snapshot_settings().bind(|| insta::assert_json_snapshot!("uninstall_plan_json", plan));

    let (code, stdout, stderr) = psctl(&["uninstall", "webhook", "--yes"], Some(file.path()));
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("--force-production"), "{stderr}");
    assert!(stderr.contains("psctl rollback webhook"), "{stderr}");

    let (code, _, stderr) = psctl(&["uninstall", "nosuch", "--dry-run"], Some(file.path()));
    assert_eq!(code, 2, "{stderr}");
}

/// The restore playbook stops both services that write to the database before the restore and
/// starts both after the switch (webhook worker first, poller last), so both come back on the
/// restored database.
#[test]
fn the_restore_playbook_switches_both_services() {
    let file = config("environments:\n  e:\n    kube_context: nowhere\n");
    let (code, stdout, stderr) = psctl(
        &[
            "run",
            "playbooks/restore.yaml",
            "--var",
            "backup=/backups/psctl-payments-20261123T100000Z.dump",
            "--var",
            "into=payments_restore_1123",
            "--dry-run",
            "-o",
            "json",
        ],
        Some(file.path()),
    );
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let commands: Vec<String> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] == "kill-switch")
        .map(|s| {
            s["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        commands,
        [
            "kill-switch on --component poller --component webhook",
            "kill-switch off --component webhook",
            "kill-switch off --component poller",
        ],
        "{plan:#}"
    );
    support::snapshot_settings().bind(|| {
        insta::assert_json_snapshot!("restore_playbook_plan_json", plan, {".vars.git_sha" => "[commit]"})
    });
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let mut child = Psctl::new()
        .args(["completions", "bash"])
        .into_command()
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
        assert!(stdout.is_empty(), "{stdout}");
        insta::assert_snapshot!(format!("injected_tag_{}", command[0]), stderr);
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
    assert_snapshot_tmp!("injected_tag_playbook", stderr);
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
    assert_snapshot_tmp!("deploy_plan_table", stdout);
}

#[test]
fn a_confirmation_nobody_can_answer_is_refused_not_awaited() {
    let file = config("environments:\n  e:\n    kube_context: nowhere\n");
    // stdin is a pipe that stays open: a prompt reading it would hang the test.
    let mut child = Psctl::new()
        .args(["deploy", "--tag", "1.2.3"])
        .env("PSCTL_CONFIG", file.path())
        .into_command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    insta::assert_snapshot!("confirmation_refused", stderr);
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

/// Every command's and subcommand's `--help` as the real binary prints it (stdout, exit 0):
/// a change of wording, of a default or of a flag shows up as a snapshot diff to review.
#[test]
fn every_command_help_is_pinned() {
    use clap::CommandFactory as _;
    fn paths(command: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in command
            .get_subcommands()
            .filter(|sub| sub.get_name() != "help" && !sub.is_hide_set())
        {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_owned());
            out.push(path.clone());
            paths(sub, &path, out);
        }
    }
    let mut all = Vec::new();
    paths(&psctl::cli::Cli::command(), &[], &mut all);
    assert!(all.len() > 10, "{all:?}");
    for path in all {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let (code, stdout, stderr) = psctl(&args, None);
        assert_eq!(code, 0, "psctl {}: {stderr}", args.join(" "));
        assert_eq!(stderr, "", "psctl {}", args.join(" "));
        insta::assert_snapshot!(format!("help_{}", path.join("_")), stdout);
    }
}
