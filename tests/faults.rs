//! The fault matrix: psctl's mutating commands driven through the faults the sandbox injects
//! (API error bursts and latency, watches cut mid-rollout, the registry off, Prometheus and
//! Postgres stopped, psctl killed before Helm, with Helm and during the rollout, a second
//! operator racing, the kill switch pulled mid-release, a rollback that fails), for deploy,
//! rollback (`--to-rev`, `--undo`, `--unstick`), the kill switch, canary (`start`, `resume`,
//! `promote`, `abort`, each killed or refused at the points that matter), `run`, `secrets
//! apply`, `build` and `db migrate`. Each case asserts the exit code, the state
//! `psctl status -o json` (and `canary status`, a run's record) shows afterwards and the audit
//! trail, and prints one line; the suite ends with
//! `fault_matrix cases=N survived=N` and fails unless every case survived.
//!
//! The faults are global to the sandbox, so this binary runs on its own (nextest group
//! `faults`, and `scripts/test.sh` runs it after every other test), and every injected fault is
//! undone when its case ends, also when the case panics. Cases sharing a setup share one
//! namespace and database. Without the sandbox these tests fail; they never skip.

mod support;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use sqlx::{Connection as _, PgConnection};

use support::images::{crashing_image, retag};
use support::{Sandbox, report};

const IMAGE: &str = "problemsolver-webhook-worker";
const STABLE: &str = "problemsolver-webhook";
const CANARY: &str = "problemsolver-webhook-canary";

// ---------------------------------------------------------------------------------------------
// Faults

/// The `psctl-sandbox` of this build (next to the psctl under test), or `$PSCTL_SANDBOX_BIN`.
fn sandbox_bin() -> PathBuf {
    std::env::var_os("PSCTL_SANDBOX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_psctl")).with_file_name("psctl-sandbox"))
}

fn sandbox_fault(args: &[&str]) -> Result<String, String> {
    let output = Command::new(sandbox_bin())
        .arg("fault")
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", sandbox_bin().display()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "psctl-sandbox fault {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The faults a case injected; each is undone when this is dropped (a panicking case too).
#[derive(Default)]
struct Faults {
    undo: Vec<Vec<String>>,
}

impl Faults {
    fn inject(&mut self, args: &[&str], undo: &[&str]) {
        self.undo
            .push(undo.iter().map(|s| (*s).to_owned()).collect());
        sandbox_fault(args).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Undoes the faults now (in reverse order), panicking if one cannot be undone.
    fn restore(&mut self) {
        while let Some(undo) = self.undo.pop() {
            let args: Vec<&str> = undo.iter().map(String::as_str).collect();
            sandbox_fault(&args).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        while let Some(undo) = self.undo.pop() {
            let args: Vec<&str> = undo.iter().map(String::as_str).collect();
            if let Err(error) = sandbox_fault(&args) {
                eprintln!("fault_matrix: could not undo a fault: {error}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The matrix

#[derive(Default)]
struct Matrix {
    cases: usize,
    survived: usize,
}

impl Matrix {
    /// Runs one case; a panic is a case that did not survive (reported, and the suite goes on
    /// with the next case).
    async fn case(&mut self, name: &str, body: impl AsyncFnOnce() -> String) {
        self.cases += 1;
        let started = Instant::now();
        let result = AssertUnwindSafe(body()).catch_unwind().await;
        let seconds = started.elapsed().as_secs();
        match result {
            Ok(summary) => {
                self.survived += 1;
                println!("fault_matrix case={name} survived ({seconds}s): {summary}");
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                println!("fault_matrix case={name} FAILED ({seconds}s): {message}");
            }
        }
    }

    fn finish(&self) {
        println!(
            "fault_matrix cases={} survived={}",
            self.cases, self.survived
        );
        assert_eq!(
            self.survived, self.cases,
            "fault_matrix cases={} survived={}",
            self.cases, self.survived
        );
    }
}

/// Whether to run `group`: every group, unless `$FAULT_MATRIX_GROUPS` names some
/// (comma-separated: deploy, secrets, canary, canary-operations, rollback-run) to work on one.
fn selected(group: &str) -> bool {
    std::env::var("FAULT_MATRIX_GROUPS")
        .map_or(true, |groups| groups.split(',').any(|g| g.trim() == group))
}

/// The whole matrix, one group of cases after the other (each group in a namespace and
/// database of its own), then the tally.
#[tokio::test(flavor = "multi_thread")]
async fn fault_matrix() {
    let started = Instant::now();
    let mut matrix = Matrix::default();
    if selected("deploy") {
        deploy_and_rollback(&mut matrix).await;
    }
    if selected("secrets") {
        secrets_build_and_migrate(&mut matrix).await;
    }
    if selected("canary") {
        canary(&mut matrix).await;
    }
    if selected("canary-operations") {
        canary_operations(&mut matrix).await;
    }
    if selected("rollback-run") {
        rollback_and_run(&mut matrix).await;
    }
    println!("fault_matrix wall time {}s", started.elapsed().as_secs());
    matrix.finish();
}

// ---------------------------------------------------------------------------------------------
// psctl, its state and its audit trail

/// psctl as the harness runs it (the test's least-privilege identity, the test database, no
/// inherited environment), confirmed with `--yes`.
fn psctl_command(sandbox: &Sandbox, config: &Path, args: &[&str]) -> Command {
    sandbox.command(config, args).arg("--yes").into_command()
}

/// A psctl running in the background, its output going to files.
struct Background {
    child: Child,
    stdout: tempfile::NamedTempFile,
    stderr: tempfile::NamedTempFile,
}

impl Background {
    fn spawn(sandbox: &Sandbox, config: &Path, args: &[&str]) -> Self {
        let stdout = tempfile::NamedTempFile::new().unwrap();
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let child = psctl_command(sandbox, config, args)
            .stdout(Stdio::from(stdout.reopen().unwrap()))
            .stderr(Stdio::from(stderr.reopen().unwrap()))
            .spawn()
            .expect("spawn psctl");
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Like `spawn`, but psctl leads a process group of its own that the Helm it starts joins,
    /// so `kill_group` ends both, as a cancelled CI job or a closed terminal does.
    fn spawn_group(sandbox: &Sandbox, config: &Path, args: &[&str]) -> Self {
        use std::os::unix::process::CommandExt as _;
        let stdout = tempfile::NamedTempFile::new().unwrap();
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let child = psctl_command(sandbox, config, args)
            .process_group(0)
            .stdout(Stdio::from(stdout.reopen().unwrap()))
            .stderr(Stdio::from(stderr.reopen().unwrap()))
            .spawn()
            .expect("spawn psctl");
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Waits for it to exit (at most `timeout`): exit code, stdout, stderr.
    async fn wait(mut self, timeout: Duration) -> (i32, String, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "psctl still running after {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        (
            status.code().unwrap_or(-1),
            std::fs::read_to_string(self.stdout.path()).unwrap_or_default(),
            self.stderr(),
        )
    }

    /// SIGKILL, as `kill -9` or the OOM killer would.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL psctl");
        self.child.wait().unwrap();
    }

    /// SIGKILL to the whole process group (psctl and its Helm): see `spawn_group`.
    fn kill_group(mut self) {
        let group = format!("-{}", self.pid());
        let status = Command::new("kill")
            .args(["-KILL", "--", &group])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL -- {group}");
        self.child.wait().unwrap();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn psctl(sandbox: &Sandbox, config: &Path, args: &[&str]) -> (i32, String, String) {
    let output = psctl_command(sandbox, config, args)
        .output()
        .expect("run psctl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `psctl status -o json`.
fn status(sandbox: &Sandbox, config: &Path) -> serde_json::Value {
    let (code, stdout, stderr) = psctl(sandbox, config, &["status", "-o", "json"]);
    assert_eq!(code, 0, "psctl status: {stderr}");
    report(&stdout)
}

fn webhook(status: &serde_json::Value) -> &serde_json::Value {
    status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "webhook")
        .unwrap_or_else(|| panic!("no webhook in {status:#}"))
}

/// `(revision, status, image tag)` of the webhook release as `psctl status` reports it.
fn release_state(status: &serde_json::Value) -> (u64, String, String) {
    let webhook = webhook(status);
    (
        webhook["revision"].as_u64().unwrap_or(0),
        webhook["release_status"].as_str().unwrap_or("").to_owned(),
        webhook["image_tag"].as_str().unwrap_or("").to_owned(),
    )
}

/// `(replicas, kill-switch remembered count)` of one of the webhook's Deployments.
fn deployment_state(status: &serde_json::Value, name: &str) -> Option<(i64, Option<i64>)> {
    webhook(status)["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .map(|d| {
            (
                d["replicas"].as_i64().unwrap(),
                d["kill_switch_remembered"].as_i64(),
            )
        })
}

/// One row of the audit trail.
#[derive(Debug, Clone)]
struct AuditRow {
    id: i64,
    action: String,
    target: String,
    from_state: String,
    to_state: String,
    outcome: String,
    details: serde_json::Value,
}

async fn audit_rows(sandbox: &Sandbox, after: i64) -> Vec<AuditRow> {
    let mut connection = PgConnection::connect(&sandbox.database_url)
        .await
        .expect("the test database");
    let rows: Vec<(
        i64,
        String,
        String,
        String,
        String,
        String,
        serde_json::Value,
    )> = sqlx::query_as(
        "SELECT id, action, target, from_state, to_state, outcome, details \
             FROM ops_audit WHERE id > $1 ORDER BY id",
    )
    .bind(after)
    .fetch_all(&mut connection)
    .await
    .expect("read ops_audit");
    connection.close().await.ok();
    rows.into_iter()
        .map(
            |(id, action, target, from_state, to_state, outcome, details)| AuditRow {
                id,
                action,
                target,
                from_state,
                to_state,
                outcome,
                details,
            },
        )
        .collect()
}

async fn last_audit_id(sandbox: &Sandbox) -> i64 {
    audit_rows(sandbox, 0).await.last().map_or(0, |r| r.id)
}

fn actions(rows: &[AuditRow]) -> Vec<String> {
    rows.iter()
        .map(|r| format!("{} {} [{}]", r.action, r.target, r.outcome))
        .collect()
}

/// The first line of stderr that says what went wrong (for the case's summary line).
fn error_line(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_default()
        .to_owned()
}

async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Pushes the sandbox's webhook image again as `<tag>-<suffix>` and returns the new tag.
async fn new_tag(sandbox: &Sandbox, suffix: &str) -> String {
    let registry = sandbox.registry.clone();
    let (from, to) = (sandbox.tag.clone(), format!("{}-{suffix}", sandbox.tag));
    let tag = to.clone();
    tokio::task::spawn_blocking(move || retag(&registry, IMAGE, &from, &to))
        .await
        .unwrap();
    tag
}

/// Pushes (once) the webhook image whose binary exits at once and returns its tag.
async fn crashing_tag(sandbox: &Sandbox) -> String {
    let registry = sandbox.registry.clone();
    tokio::task::spawn_blocking(move || crashing_image(&registry, IMAGE))
        .await
        .unwrap()
}

fn deploy_args(tag: &str) -> Vec<&str> {
    vec![
        "deploy",
        "--component",
        "webhook",
        "--tag",
        tag,
        "--timeout",
        "3m",
    ]
}

// ---------------------------------------------------------------------------------------------
// Deploy and rollback

async fn deploy_and_rollback(matrix: &mut Matrix) {
    {
        let sandbox = &Sandbox::services("faults-deploy").await;
        let config = sandbox.config("deploy", |_| {});
        sandbox.deploy(&config, &["webhook"]);
        let namespace = sandbox.namespace.clone();
        let config = config.as_path();

        matrix
            .case("registry-off-during-deploy-preflight", async || {
                let tag = new_tag(sandbox, "registry").await;
                let before = release_state(&status(sandbox, config));
                let audited = last_audit_id(sandbox).await;
                let mut faults = Faults::default();
                faults.inject(&["registry", "off"], &["registry", "on"]);
                let (code, _, stderr) = psctl(sandbox, config, &deploy_args(&tag));
                faults.restore();
                assert_eq!(code, 3, "{stderr}");
                assert!(stderr.contains("registry"), "{stderr}");
                let after = status(sandbox, config);
                assert_eq!(release_state(&after), before, "nothing changed");
                assert!(after["lock_holder"].is_null(), "{after:#}");
                let rows = audit_rows(sandbox, audited).await;
                assert!(rows.is_empty(), "nothing to audit: {:?}", actions(&rows));
                error_line(&stderr)
            })
            .await;

        matrix
            .case("api-503-on-the-lease-write", async || {
                let tag = new_tag(sandbox, "lease503").await;
                let before = release_state(&status(sandbox, config));
                let path = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
                // A 503 that lasts: every write of the Lease is refused.
                let mut faults = Faults::default();
                for method in ["POST", "PUT"] {
                    faults.inject(
                        &[
                            "api", "--path", &path, "--method", method, "--status", "503",
                        ],
                        &["api", "--clear"],
                    );
                }
                let (code, _, refused) = psctl(sandbox, config, &deploy_args(&tag));
                faults.restore();
                assert_eq!(code, 3, "{refused}");
                assert!(refused.contains("Lease `psctl-deploy`"), "{refused}");
                assert_eq!(
                    release_state(&status(sandbox, config)),
                    before,
                    "nothing changed"
                );
                // A burst of three: the client's retries (429/503/504, with back-off) absorb it.
                for method in ["POST", "PUT"] {
                    faults.inject(
                        &[
                            "api", "--path", &path, "--method", method, "--status", "503",
                            "--count", "3",
                        ],
                        &["api", "--clear"],
                    );
                }
                let (code, _, stderr) = psctl(sandbox, config, &deploy_args(&tag));
                faults.restore();
                assert_eq!(code, 0, "{stderr}");
                let (_, state, deployed) = release_state(&status(sandbox, config));
                assert_eq!(
                    (state.as_str(), deployed.as_str()),
                    ("deployed", tag.as_str())
                );
                format!(
                    "lasting 503: exit 3 ({}); burst of 3: retried, deployed",
                    error_line(&refused)
                )
            })
            .await;

        matrix
            .case(
                "api-500-burst-on-deployment-writes-during-deploy",
                async || {
                    let tag = new_tag(sandbox, "write500").await;
                    let (revision, _, previous_tag) = release_state(&status(sandbox, config));
                    let audited = last_audit_id(sandbox).await;
                    let mut faults = Faults::default();
                    let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{STABLE}");
                    faults.inject(
                        &[
                            "api", "--path", &path, "--method", "PATCH", "--status", "500",
                            "--count", "1",
                        ],
                        &["api", "--clear"],
                    );
                    let (code, _, stderr) = psctl(sandbox, config, &deploy_args(&tag));
                    faults.restore();
                    let after = status(sandbox, config);
                    let (now, state, deployed) = release_state(&after);
                    let rows = audit_rows(sandbox, audited).await;
                    let deploy_row = rows
                        .iter()
                        .find(|r| r.action == "deploy")
                        .unwrap_or_else(|| panic!("no deploy row: {:?}", actions(&rows)));
                    match code {
                        // The write failed and the release was put back where it was.
                        1 => {
                            assert!(stderr.contains("helm upgrade"), "{stderr}");
                            assert_eq!(state, "deployed");
                            assert_eq!(deployed, previous_tag);
                            assert!(now > revision);
                            assert_eq!(deploy_row.outcome, "rolled_back", "{deploy_row:?}");
                        }
                        // The burst was absorbed by a retry.
                        0 => {
                            assert_eq!(
                                (state.as_str(), deployed.as_str()),
                                ("deployed", tag.as_str())
                            );
                            assert_eq!(deploy_row.outcome, "succeeded", "{deploy_row:?}");
                        }
                        other => panic!("exit {other}:\n{stderr}"),
                    }
                    format!("exit {code}: {}", error_line(&stderr))
                },
            )
            .await;

        matrix
            .case("api-latency-2s-during-deploy", async || {
                let tag = new_tag(sandbox, "slow").await;
                let mut faults = Faults::default();
                let path = format!("/namespaces/{namespace}/(deployments|leases|replicasets)");
                faults.inject(
                    &["api", "--path", &path, "--delay-ms", "2000"],
                    &["api", "--clear"],
                );
                let started = Instant::now();
                let (code, _, stderr) = psctl(sandbox, config, &deploy_args(&tag));
                let took = started.elapsed();
                faults.restore();
                assert_eq!(code, 0, "{stderr}");
                assert!(
                    took >= Duration::from_secs(4),
                    "the latency applied: {took:?}"
                );
                let after = status(sandbox, config);
                let (_, state, deployed) = release_state(&after);
                assert_eq!(
                    (state.as_str(), deployed.as_str()),
                    ("deployed", tag.as_str())
                );
                assert!(after["lock_holder"].is_null(), "released: {after:#}");
                format!("deployed in {}s under 2 s latency", took.as_secs())
            })
            .await;

        matrix
            .case("sigkill-mid-deploy-then-rerun", async || {
                let tag = new_tag(sandbox, "killed").await;
                let audited = last_audit_id(sandbox).await;
                let killed = Background::spawn(sandbox, config, &deploy_args(&tag));
                let pid = killed.pid();
                // Killed once Helm recorded the new revision: during the rollout wait.
                eventually("the new revision", Duration::from_secs(90), async || {
                    let (_, state, deployed) = release_state(&status(sandbox, config));
                    (deployed == tag && state == "deployed").then_some(())
                })
                .await;
                killed.kill();
                let holder = status(sandbox, config)["lock_holder"].clone();
                assert!(
                    holder
                        .as_str()
                        .is_some_and(|h| h.contains(&format!("pid {pid} (deploy)"))),
                    "the dead process still holds the Lease: {holder}"
                );
                let (code, _, stderr) = psctl(sandbox, config, &deploy_args(&tag));
                assert_eq!(code, 0, "{stderr}");
                assert!(
                    stderr.contains("took over the deploy lock from")
                        && stderr.contains("no longer exists on this host"),
                    "{stderr}"
                );
                let after = status(sandbox, config);
                let (_, state, deployed) = release_state(&after);
                assert_eq!(
                    (state.as_str(), deployed.as_str()),
                    ("deployed", tag.as_str())
                );
                assert!(after["lock_holder"].is_null(), "{after:#}");
                let rows = audit_rows(sandbox, audited).await;
                let takeover = rows
                    .iter()
                    .find(|r| r.action == "lock-takeover")
                    .unwrap_or_else(|| panic!("no takeover row: {:?}", actions(&rows)));
                assert!(
                    takeover.from_state.contains(&format!("pid {pid}")),
                    "{takeover:?}"
                );
                assert_eq!(takeover.details["reason"], "holder_dead", "{takeover:?}");
                assert!(
                    rows.iter()
                        .any(|r| r.action == "deploy" && r.outcome == "succeeded"),
                    "{:?}",
                    actions(&rows)
                );
                stderr
                    .lines()
                    .find(|l| l.contains("took over"))
                    .unwrap_or_default()
                    .to_owned()
            })
            .await;

        matrix
            .case("watch-cut-mid-rollout", async || {
                // A healthy release and then a crash-looping one, each with every watch cut and
                // the watch history compacted in the middle of its rollout: the tracker re-lists
                // and reaches the same verdict it would have reached without the cut.
                let crashes = crashing_tag(sandbox).await;
                let healthy = new_tag(sandbox, "cut").await;
                let mut lines = Vec::new();
                for (tag, expected) in [(healthy.as_str(), 0), (crashes.as_str(), 1)] {
                    let (_, _, previous_tag) = release_state(&status(sandbox, config));
                    let mut deploy = Background::spawn(sandbox, config, &deploy_args(tag));
                    eventually("the new revision", Duration::from_secs(90), async || {
                        let (_, _, deployed) = release_state(&status(sandbox, config));
                        (deployed == tag).then_some(())
                    })
                    .await;
                    let cut = sandbox_fault(&["cut-watches", "--compact"]).unwrap();
                    assert!(
                        deploy.running(),
                        "the cut came before the verdict: {}",
                        deploy.stderr()
                    );
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let again = sandbox_fault(&["cut-watches", "--compact"]).unwrap();
                    let (code, _, stderr) = deploy.wait(Duration::from_secs(240)).await;
                    assert_eq!(code, expected, "{stderr}");
                    let after = status(sandbox, config);
                    let (_, state, deployed) = release_state(&after);
                    let wanted = if expected == 0 {
                        tag
                    } else {
                        previous_tag.as_str()
                    };
                    assert_eq!((state.as_str(), deployed.as_str()), ("deployed", wanted));
                    assert!(after["lock_holder"].is_null(), "{after:#}");
                    lines.push(format!("exit {code} ({cut}; {again})"));
                }
                lines.join("; crash-looping: ")
            })
            .await;

        matrix
            .case("sigkill-before-helm-then-rerun", async || {
                // Frozen under the Lease, before Helm runs: reading the releases takes 60 s.
                let tag = new_tag(sandbox, "prehelm").await;
                let before = release_state(&status(sandbox, config));
                let audited = last_audit_id(sandbox).await;
                let mut faults = Faults::default();
                let list = format!("/api/v1/namespaces/{namespace}/secrets$");
                faults.inject(
                    &[
                        "api",
                        "--path",
                        &list,
                        "--method",
                        "GET",
                        "--delay-ms",
                        "60000",
                    ],
                    &["api", "--clear"],
                );
                let killed = Background::spawn(sandbox, config, &deploy_args(&tag));
                let pid = killed.pid();
                let leases = Api::<Lease>::namespaced(sandbox.admin.clone(), &namespace);
                eventually("the Lease taken", Duration::from_secs(90), async || {
                    let lease = leases.get_opt("psctl-deploy").await.ok()??;
                    let holder = lease.spec?.holder_identity?;
                    holder
                        .contains(&format!("pid {pid} (deploy)"))
                        .then_some(())
                })
                .await;
                killed.kill();
                faults.restore();
                assert_eq!(
                    release_state(&status(sandbox, config)),
                    before,
                    "killed before Helm: the release is untouched"
                );
                let (code, _, stderr) = psctl(sandbox, config, &deploy_args(&tag));
                assert_eq!(code, 0, "{stderr}");
                assert!(stderr.contains("no longer exists on this host"), "{stderr}");
                let (_, state, deployed) = release_state(&status(sandbox, config));
                assert_eq!(
                    (state.as_str(), deployed.as_str()),
                    ("deployed", tag.as_str())
                );
                let rows = audit_rows(sandbox, audited).await;
                assert!(
                    rows.iter().any(
                        |r| r.action == "lock-takeover" && r.details["reason"] == "holder_dead"
                    ),
                    "{:?}",
                    actions(&rows)
                );
                "killed holding the Lease: release untouched; re-run took over and deployed"
                    .to_owned()
            })
            .await;

        matrix
            .case("sigkill-of-psctl-and-helm-mid-upgrade", async || {
                // Helm is stopped between writing its pending revision and applying the
                // Deployment: every Deployment PATCH waits 60 s. The whole process group dies.
                let tag = new_tag(sandbox, "midhelm").await;
                let (revision, _, good_tag) = release_state(&status(sandbox, config));
                let audited = last_audit_id(sandbox).await;
                let mut faults = Faults::default();
                let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments");
                faults.inject(
                    &["api", "--path", &path, "--method", "PATCH", "--delay-ms", "60000"],
                    &["api", "--clear"],
                );
                let killed = Background::spawn_group(sandbox, config, &deploy_args(&tag));
                eventually("Helm's pending revision", Duration::from_secs(90), async || {
                    let (_, state, _) = release_state(&status(sandbox, config));
                    (state == "pending-upgrade").then_some(())
                })
                .await;
                killed.kill_group();
                faults.restore();
                let (stuck, state, _) = release_state(&status(sandbox, config));
                assert_eq!((stuck, state.as_str()), (revision + 1, "pending-upgrade"));
                // The next deploy names the way out instead of tripping over Helm's lock.
                let (code, _, refused) = psctl(sandbox, config, &deploy_args(&tag));
                assert_eq!(code, 2, "{refused}");
                assert!(refused.contains("psctl rollback webhook --unstick"), "{refused}");
                // A fresh pending revision may belong to a Helm that still runs: --force is
                // the operator's word that none does.
                let (code, _, young) = psctl(sandbox, config, &["rollback", "webhook", "--unstick"]);
                assert_eq!(code, 2, "{young}");
                assert!(young.contains("--unstick --force"), "{young}");
                let (code, _, unstuck) = psctl(
                    sandbox,
                    config,
                    &["rollback", "webhook", "--unstick", "--force"],
                );
                assert_eq!(code, 0, "{unstuck}");
                let (_, state, deployed) = release_state(&status(sandbox, config));
                assert_eq!(
                    (state.as_str(), deployed.as_str()),
                    ("deployed", good_tag.as_str())
                );
                let (code, _, stderr) = psctl(sandbox, config, &deploy_args(&tag));
                assert_eq!(code, 0, "{stderr}");
                let (_, state, deployed) = release_state(&status(sandbox, config));
                assert_eq!(
                    (state.as_str(), deployed.as_str()),
                    ("deployed", tag.as_str())
                );
                let rows = audit_rows(sandbox, audited).await;
                for (action, outcome) in [
                    ("lock-takeover", None),
                    ("rollback (unstick)", Some("succeeded")),
                    ("deploy", Some("succeeded")),
                ] {
                    assert!(
                        rows.iter().any(|r| r.action == action
                            && outcome.is_none_or(|o| r.outcome == o)),
                        "{action}: {:?}",
                        actions(&rows)
                    );
                }
                format!(
                    "left pending-upgrade; deploy: {}; unstick without --force: {}; with it: recovered; re-deploy: exit 0",
                    error_line(&refused),
                    error_line(&young)
                )
            })
            .await;

        matrix
            .case("sigkill-mid-rollback-then-rerun", async || {
                let (revision, _, current_tag) = release_state(&status(sandbox, config));
                let history = sandbox.history(config, "webhook");
                let target = history
                    .iter()
                    .rev()
                    .filter(|r| r["status"] == "superseded")
                    .filter_map(|r| Some((r["revision"].as_u64()?, r["image_tag"].as_str()?)))
                    .find(|(_, tag)| *tag != current_tag && !tag.starts_with("crashes-"))
                    .map(|(rev, tag)| (rev, tag.to_owned()))
                    .expect("an earlier revision with another tag");
                let to_rev = target.0.to_string();
                let args = ["rollback", "webhook", "--to-rev", to_rev.as_str()];
                let killed = Background::spawn(sandbox, config, &args);
                eventually(
                    "the rollback's revision",
                    Duration::from_secs(90),
                    async || {
                        let (now, _, _) = release_state(&status(sandbox, config));
                        (now > revision).then_some(())
                    },
                )
                .await;
                killed.kill();
                // The same command again finishes the job (a plain `rollback` would now go
                // back to the release being rolled back from).
                let (code, _, stderr) = psctl(sandbox, config, &args);
                assert_eq!(code, 0, "{stderr}");
                let after = status(sandbox, config);
                let (_, state, deployed) = release_state(&after);
                assert_eq!(
                    (state.as_str(), deployed.as_str()),
                    ("deployed", target.1.as_str())
                );
                assert!(after["lock_holder"].is_null(), "{after:#}");
                format!("re-run of `rollback --to-rev {to_rev}` took over and finished: exit 0")
            })
            .await;

        matrix
            .case("two-operators-race", async || {
                let first = new_tag(sandbox, "race-a").await;
                let second = new_tag(sandbox, "race-b").await;
                let (revision, _, _) = release_state(&status(sandbox, config));
                let a = Background::spawn(sandbox, config, &deploy_args(&first));
                let b = Background::spawn(sandbox, config, &deploy_args(&second));
                let (code_a, _, stderr_a) = a.wait(Duration::from_secs(240)).await;
                let (code_b, _, stderr_b) = b.wait(Duration::from_secs(240)).await;
                let (winner, loser_stderr) = match (code_a, code_b) {
                    (0, 2) => (&first, stderr_b),
                    (2, 0) => (&second, stderr_a),
                    other => panic!("exit codes {other:?}:\n{stderr_a}\n---\n{stderr_b}"),
                };
                assert!(
                    loser_stderr.contains("another psctl operation holds the deploy lock"),
                    "{loser_stderr}"
                );
                let (now, state, deployed) = release_state(&status(sandbox, config));
                assert_eq!(now, revision + 1, "exactly one new revision");
                assert_eq!(
                    (state.as_str(), deployed.as_str()),
                    ("deployed", winner.as_str())
                );
                error_line(&loser_stderr)
            })
            .await;

        matrix
            .case("kill-switch-during-deploy", async || {
                let tag = new_tag(sandbox, "braked").await;
                let audited = last_audit_id(sandbox).await;
                let (_, _, previous_tag) = release_state(&status(sandbox, config));
                let replicas = deployment_state(&status(sandbox, config), STABLE)
                    .expect("the stable Deployment")
                    .0;
                let deploy = Background::spawn(sandbox, config, &deploy_args(&tag));
                eventually(
                    "the deploy's rollout",
                    Duration::from_secs(90),
                    async || {
                        let (_, _, deployed) = release_state(&status(sandbox, config));
                        (deployed == tag).then_some(())
                    },
                )
                .await;
                let (code, _, stderr) = psctl(
                    sandbox,
                    config,
                    &["kill-switch", "on", "--component", "webhook"],
                );
                assert_eq!(code, 0, "{stderr}");
                assert!(
                    stderr.contains("overrode the deploy lock held by"),
                    "{stderr}"
                );
                let (code, _, deploy_stderr) = deploy.wait(Duration::from_secs(60)).await;
                assert_eq!(code, 2, "{deploy_stderr}");
                assert!(
                    deploy_stderr.contains("(kill-switch)")
                        && deploy_stderr.contains("psctl kill-switch off"),
                    "{deploy_stderr}"
                );
                let braked = status(sandbox, config);
                assert_eq!(deployment_state(&braked, STABLE), Some((0, Some(replicas))));
                // Nothing brings it back while the switch is on.
                let (code, _, refused) = psctl(sandbox, config, &deploy_args(&previous_tag));
                assert_eq!(code, 2, "{refused}");
                assert!(refused.contains("psctl kill-switch off"), "{refused}");
                let (code, _, refused_rollback) = psctl(sandbox, config, &["rollback", "webhook"]);
                assert_eq!(code, 2, "{refused_rollback}");
                assert!(
                    refused_rollback.contains("the kill switch is on"),
                    "{refused_rollback}"
                );
                assert_eq!(
                    deployment_state(&status(sandbox, config), STABLE),
                    Some((0, Some(replicas)))
                );
                let (code, _, stderr) = psctl(
                    sandbox,
                    config,
                    &["kill-switch", "off", "--component", "webhook"],
                );
                assert_eq!(code, 0, "{stderr}");
                assert_eq!(
                    deployment_state(&status(sandbox, config), STABLE),
                    Some((replicas, None))
                );
                let rows = audit_rows(sandbox, audited).await;
                let takeover = rows
                    .iter()
                    .find(|r| r.action == "lock-takeover")
                    .unwrap_or_else(|| panic!("no override row: {:?}", actions(&rows)));
                assert_eq!(
                    takeover.details["reason"], "kill_switch_override",
                    "{takeover:?}"
                );
                assert!(takeover.from_state.ends_with("(deploy)"), "{takeover:?}");
                for (action, to_state) in [
                    ("kill-switch on", "replicas 0".to_owned()),
                    ("kill-switch off", format!("replicas {replicas}")),
                ] {
                    assert!(
                        rows.iter().any(|r| r.action == action
                            && r.target == STABLE
                            && r.to_state == to_state),
                        "{action} -> {to_state}: {:?}",
                        actions(&rows)
                    );
                }
                error_line(&deploy_stderr)
            })
            .await;

        matrix
            .case("a-rollback-that-fails", async || {
                let crashes = crashing_tag(sandbox).await;
                let (revision, _, good_tag) = release_state(&status(sandbox, config));
                let audited = last_audit_id(sandbox).await;
                let deploy = Background::spawn(sandbox, config, &deploy_args(&crashes));
                eventually(
                    "the crashing revision",
                    Duration::from_secs(90),
                    async || {
                        let (now, _, _) = release_state(&status(sandbox, config));
                        (now > revision).then_some(())
                    },
                )
                .await;
                // From here every new release record is refused: Helm's rollback cannot write one.
                let mut faults = Faults::default();
                let path = format!("/api/v1/namespaces/{namespace}/secrets");
                faults.inject(
                    &[
                        "api", "--path", &path, "--method", "POST", "--status", "500",
                    ],
                    &["api", "--clear"],
                );
                let (code, _, stderr) = deploy.wait(Duration::from_secs(240)).await;
                faults.restore();
                assert_eq!(code, 4, "{stderr}");
                assert!(stderr.contains("THE AUTOMATIC ROLLBACK FAILED"), "{stderr}");
                let fix = format!("psctl rollback webhook --to-rev {revision}");
                assert!(stderr.contains(&fix), "the fixing command: {stderr}");
                let (_, _, running) = release_state(&status(sandbox, config));
                assert_eq!(running, crashes, "still on the crashing release");
                // The command it names fixes it.
                let (code, _, fixed) = psctl(
                    sandbox,
                    config,
                    &["rollback", "webhook", "--to-rev", &revision.to_string()],
                );
                assert_eq!(code, 0, "{fixed}");
                let (_, state, deployed) = release_state(&status(sandbox, config));
                assert_eq!(
                    (state.as_str(), deployed.as_str()),
                    ("deployed", good_tag.as_str())
                );
                let rows = audit_rows(sandbox, audited).await;
                assert!(
                    rows.iter()
                        .any(|r| r.action == "deploy" && r.outcome == "rollback_failed"),
                    "{:?}",
                    actions(&rows)
                );
                assert!(
                    rows.iter()
                        .any(|r| r.action.starts_with("rollback") && r.outcome == "succeeded"),
                    "{:?}",
                    actions(&rows)
                );
                error_line(&stderr)
            })
            .await;

        matrix
            .case("postgres-cut-during-smoke", async || {
                let mut faults = Faults::default();
                faults.inject(&["postgres", "stop"], &["postgres", "start"]);
                let (code, _, stderr) = psctl(sandbox, config, &["smoke", "--only", "integrity"]);
                faults.restore();
                assert_eq!(code, 3, "unreachable, not a failed verification:\n{stderr}");
                let (_, state, _) = release_state(&status(sandbox, config));
                assert_eq!(state, "deployed");
                stderr
                    .lines()
                    .find(|l| l.starts_with("FAIL") || l.starts_with("error"))
                    .unwrap_or_default()
                    .to_owned()
            })
            .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets, build and migrations

/// The runtime Secret's resourceVersion (`None` when there is no Secret): unchanged means
/// nothing was written.
async fn secret_version(sandbox: &Sandbox) -> Option<String> {
    Api::<Secret>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
        .get_opt("problemsolver-secrets")
        .await
        .unwrap()
        .and_then(|secret| secret.metadata.resource_version)
}

async fn applied_migrations(sandbox: &Sandbox) -> i64 {
    let mut connection = PgConnection::connect(&sandbox.database_url)
        .await
        .expect("the test database");
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut connection)
        .await
        .expect("read _sqlx_migrations");
    connection.close().await.ok();
    count
}

async fn secrets_build_and_migrate(matrix: &mut Matrix) {
    let sandbox = &Sandbox::builder("faults-secrets")
        .runtime_secret(support::sandbox::RuntimeSecret::Absent)
        .start()
        .await;
    let config = sandbox.sandbox_config("secrets", |_| {});
    let config = config.as_path();
    let namespace = sandbox.namespace.clone();
    let dir = tempfile::tempdir().unwrap();
    let env_file = |name: &str, secret: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "DATABASE_URL=postgres://faults@db.invalid/faults\nBINANCE_API_KEY=key-{secret}\n\
                 BINANCE_API_SECRET=secret-{secret}\nWEBHOOK_SECRET=whsec-{secret}\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    };

    matrix
        .case("api-503-on-secrets-apply", async || {
            let audited = last_audit_id(sandbox).await;
            let first = env_file("first.env", "one");
            let path = format!("/api/v1/namespaces/{namespace}/secrets");
            let apply = |file: &str| psctl(sandbox, config, &["secrets", "apply", "--from-env-file", file]);
            // Every write of a Secret refused: exit 3, no Secret.
            let mut faults = Faults::default();
            faults.inject(
                &["api", "--path", &path, "--method", "POST", "--status", "503"],
                &["api", "--clear"],
            );
            let (code, _, refused) = apply(&first);
            faults.restore();
            assert_eq!(code, 3, "{refused}");
            assert_eq!(secret_version(sandbox).await, None, "nothing written");
            // A burst of two: retried, created.
            faults.inject(
                &["api", "--path", &path, "--method", "POST", "--status", "503", "--count", "2"],
                &["api", "--clear"],
            );
            let (code, _, stderr) = apply(&first);
            faults.restore();
            assert_eq!(code, 0, "{stderr}");
            let created = secret_version(sandbox).await.expect("created");
            // A change whose update keeps failing leaves the Secret as it was.
            let second = env_file("second.env", "two");
            let named = format!("{path}/problemsolver-secrets");
            for method in ["PUT", "PATCH"] {
                faults.inject(
                    &["api", "--path", &named, "--method", method, "--status", "500"],
                    &["api", "--clear"],
                );
            }
            let (code, _, failed) = apply(&second);
            faults.restore();
            assert_ne!(code, 0, "{failed}");
            assert!([1, 3].contains(&code), "a server error is no usage error: exit {code}\n{failed}");
            assert_eq!(secret_version(sandbox).await.as_deref(), Some(created.as_str()));
            let rows = audit_rows(sandbox, audited).await;
            let outcomes: Vec<&str> = rows
                .iter()
                .filter(|r| r.action == "secrets apply")
                .map(|r| r.outcome.as_str())
                .collect();
            assert!(outcomes.contains(&"succeeded"), "{:?}", actions(&rows));
            assert!(outcomes.contains(&"failed"), "{:?}", actions(&rows));
            let lock = status(sandbox, config)["lock_holder"].clone();
            assert!(lock.is_null(), "the Lease is released: {lock}");
            format!(
                "lasting 503 on create: exit 3 ({}); burst: retried; lasting 500 on update: exit {code}, Secret unchanged",
                error_line(&refused)
            )
        })
        .await;

    matrix
        .case("registry-off-during-build", async || {
            let prebuilt = support::images::prebuilt_binaries().display().to_string();
            let tag = format!("faults-build-{}", std::process::id());
            let build = [
                "build",
                "--prebuilt",
                prebuilt.as_str(),
                "--tag",
                tag.as_str(),
            ];
            let mut faults = Faults::default();
            faults.inject(&["registry", "off"], &["registry", "on"]);
            let (code, _, refused) = psctl(sandbox, config, &build);
            faults.restore();
            assert_eq!(
                code, 3,
                "the registry is unreachable, not a failed check:\n{refused}"
            );
            assert!(refused.contains("registry"), "{refused}");
            let (code, stdout, stderr) =
                psctl(sandbox, config, &[&build[..], &["-o", "json"]].concat());
            assert_eq!(code, 0, "{stderr}");
            let pushed = report(&stdout);
            let images = pushed["images"].as_array().cloned().unwrap_or_default();
            assert!(
                !images.is_empty() && images.iter().all(|i| i["push"] == "pushed"),
                "after the registry is back, the re-run pushes every image: {pushed:#}"
            );
            error_line(&refused)
        })
        .await;

    matrix
        .case("postgres-cut-during-db-migrate", async || {
            let backups = tempfile::tempdir().unwrap();
            let backup_dir = backups.path().display().to_string();
            let all = applied_migrations(sandbox).await;
            let (code, _, stderr) = psctl(
                sandbox,
                config,
                &["db", "migrate", "--down", "1", "--backup-dir", &backup_dir],
            );
            assert_eq!(code, 0, "{stderr}");
            assert_eq!(applied_migrations(sandbox).await, all - 1);
            let mut faults = Faults::default();
            faults.inject(&["postgres", "stop"], &["postgres", "start"]);
            let (code, _, refused) = psctl(
                sandbox,
                config,
                &["db", "migrate", "--backup-dir", &backup_dir],
            );
            faults.restore();
            assert_eq!(code, 3, "unreachable, not a failed migration:\n{refused}");
            assert_eq!(
                applied_migrations(sandbox).await,
                all - 1,
                "nothing half-applied"
            );
            let (code, _, stderr) = psctl(
                sandbox,
                config,
                &["db", "migrate", "--backup-dir", &backup_dir],
            );
            assert_eq!(code, 0, "{stderr}");
            assert_eq!(applied_migrations(sandbox).await, all);
            error_line(&refused)
        })
        .await;
}

// ---------------------------------------------------------------------------------------------
// Canary

async fn canary_state(sandbox: &Sandbox) -> Option<serde_json::Value> {
    let config_map = Api::<ConfigMap>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
        .get_opt("psctl-canary-webhook")
        .await
        .ok()??;
    serde_json::from_str(config_map.data?.get("state.json")?).ok()
}

async fn replicas(sandbox: &Sandbox, name: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|d| d.spec?.replicas)
}

/// The webhook with two stable replicas, so the 50 % step is one canary and one stable, and a
/// long bake, so a run is still baking whatever the cases take.
fn canary_config(sandbox: &Sandbox, name: &str) -> PathBuf {
    sandbox.config(name, |environment| {
        let webhook = &mut environment["components"]["webhook"];
        webhook["values"]["replicaCount"] = 2.into();
        webhook["values"]["allowInsecureTargets"] = true.into();
        webhook["canary"] = serde_json::json!({
            "deployment": CANARY,
            "steps": [50, 100],
            "bake": "20m",
            "interval": "5s",
        });
    })
}

async fn canary(matrix: &mut Matrix) {
    {
        let sandbox = &Sandbox::services("faults-canary").await;
        let config = canary_config(sandbox, "canary");
        sandbox.deploy(&config, &["webhook"]);
        let config = config.as_path();
        let tag = new_tag(sandbox, "canary").await;
        let canary = Background::spawn(
            sandbox,
            config,
            &[
                "canary",
                "start",
                "--component",
                "webhook",
                "--tag",
                &tag,
                "--timeout",
                "3m",
            ],
        );
        let pid = canary.pid();
        let mut canary = Some(canary);
        eventually(
            "the canary's first bake",
            Duration::from_secs(180),
            async || {
                let state = canary_state(sandbox).await?;
                (!state["step_started_at"].is_null()).then_some(())
            },
        )
        .await;

        matrix
            .case("prometheus-stopped-mid-canary", async || {
                let windows = |state: &serde_json::Value| {
                    state["windows"].as_array().cloned().unwrap_or_default()
                };
                let before = windows(&canary_state(sandbox).await.unwrap()).len();
                let mut faults = Faults::default();
                faults.inject(&["prometheus", "stop"], &["prometheus", "start"]);
                // Two evaluations without Prometheus: both hold, neither aborts nor pauses.
                let held = eventually(
                    "two evaluations without Prometheus",
                    Duration::from_secs(60),
                    async || {
                        let all = windows(&canary_state(sandbox).await?);
                        (all.len() >= before + 2).then(|| all[before..].to_vec())
                    },
                )
                .await;
                for window in &held {
                    assert_eq!(window["evaluation"]["verdict"], "hold", "{window:#}");
                    assert!(
                        window["note"].is_string(),
                        "the reason is recorded: {window:#}"
                    );
                }
                let state = canary_state(sandbox).await.unwrap();
                assert_eq!(state["status"], "running", "{state:#}");
                assert!(canary.as_mut().unwrap().running(), "the run goes on");
                faults.restore();
                // Prometheus is back: the next evaluations read it again.
                let seen = windows(&canary_state(sandbox).await.unwrap()).len();
                let read = eventually(
                    "an evaluation reading Prometheus again",
                    Duration::from_secs(90),
                    async || {
                        let all = windows(&canary_state(sandbox).await?);
                        all[seen.min(all.len())..]
                            .iter()
                            .find(|w| w["note"].is_null())
                            .cloned()
                    },
                )
                .await;
                assert!(canary.as_mut().unwrap().running(), "the run goes on");
                format!(
                    "{} evaluations held ({}), then {}",
                    held.len(),
                    held[0]["note"].as_str().unwrap_or_default(),
                    read["evaluation"]["verdict"]
                )
            })
            .await;

        matrix
            .case("kill-switch-during-running-canary", async || {
                let audited = last_audit_id(sandbox).await;
                let before = status(sandbox, config);
                let stable = deployment_state(&before, STABLE).expect("stable").0;
                let canary_replicas = deployment_state(&before, CANARY).expect("canary track").0;
                assert!(canary_replicas > 0, "{before:#}");
                let (code, _, stderr) = psctl(
                    sandbox,
                    config,
                    &["kill-switch", "on", "--component", "webhook"],
                );
                assert_eq!(code, 0, "{stderr}");
                assert!(
                    stderr.contains("overrode the deploy lock held by")
                        && stderr.contains(&format!("pid {pid} (canary webhook)")),
                    "{stderr}"
                );
                let (code, _, canary_stderr) =
                    canary.take().unwrap().wait(Duration::from_secs(30)).await;
                assert_eq!(code, 2, "{canary_stderr}");
                assert!(canary_stderr.contains("taken over by"), "{canary_stderr}");
                let braked = status(sandbox, config);
                assert_eq!(deployment_state(&braked, STABLE), Some((0, Some(stable))));
                assert_eq!(
                    deployment_state(&braked, CANARY),
                    Some((0, Some(canary_replicas)))
                );
                // It stays braked: the stopped canary made no change after the override.
                tokio::time::sleep(Duration::from_secs(6)).await;
                assert_eq!(replicas(sandbox, STABLE).await, Some(0));
                assert_eq!(replicas(sandbox, CANARY).await, Some(0));
                for args in [
                    vec!["canary", "resume", "--component", "webhook"],
                    vec!["canary", "promote", "--component", "webhook"],
                ] {
                    let (code, _, refused) = psctl(sandbox, config, &args);
                    assert_eq!(code, 2, "{args:?}: {refused}");
                    assert!(
                        refused.contains("psctl kill-switch off"),
                        "{args:?}: {refused}"
                    );
                }
                let (code, _, stderr) = psctl(
                    sandbox,
                    config,
                    &["kill-switch", "off", "--component", "webhook"],
                );
                assert_eq!(code, 0, "{stderr}");
                let restored = status(sandbox, config);
                assert_eq!(deployment_state(&restored, STABLE), Some((stable, None)));
                assert_eq!(
                    deployment_state(&restored, CANARY),
                    Some((canary_replicas, None))
                );
                let rows = audit_rows(sandbox, audited).await;
                let takeover = rows
                    .iter()
                    .find(|r| r.action == "lock-takeover")
                    .unwrap_or_else(|| panic!("no override row: {:?}", actions(&rows)));
                assert_eq!(takeover.details["reason"], "kill_switch_override");
                assert!(
                    takeover
                        .from_state
                        .contains(&format!("pid {pid} (canary webhook)")),
                    "{takeover:?}"
                );
                for (action, target) in [
                    ("kill-switch on", STABLE),
                    ("kill-switch on", CANARY),
                    ("kill-switch off", STABLE),
                    ("kill-switch off", CANARY),
                ] {
                    assert!(
                        rows.iter()
                            .any(|r| r.action == action && r.target == target),
                        "{action} {target}: {:?}",
                        actions(&rows)
                    );
                }
                // The stopped run is left for a human: an abort puts stable back whole.
                let (code, _, stderr) = psctl(
                    sandbox,
                    config,
                    &["canary", "abort", "--component", "webhook"],
                );
                assert_eq!(code, 0, "{stderr}");
                assert_eq!(
                    replicas(sandbox, STABLE).await,
                    Some(i32::try_from(stable + canary_replicas).unwrap())
                );
                assert_eq!(replicas(sandbox, CANARY).await, Some(0));
                error_line(&canary_stderr)
            })
            .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Canary promote, abort and resume under faults; psctl killed at three points of a canary

/// The holder of the deploy Lease, read with the admin client (not through psctl, so a fault
/// on the Deployments does not slow it).
async fn lease_holder(sandbox: &Sandbox) -> Option<String> {
    Api::<Lease>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
        .get_opt("psctl-deploy")
        .await
        .ok()??
        .spec?
        .holder_identity
}

fn canary_start_args(tag: &str) -> Vec<&str> {
    vec![
        "canary",
        "start",
        "--component",
        "webhook",
        "--tag",
        tag,
        "--timeout",
        "3m",
    ]
}

const CANARY_RESUME: &[&str] = &[
    "canary",
    "resume",
    "--component",
    "webhook",
    "--timeout",
    "3m",
];
const CANARY_PROMOTE_NOW: &[&str] = &[
    "canary",
    "promote",
    "--component",
    "webhook",
    "--full",
    "--timeout",
    "3m",
];
const CANARY_ABORT: &[&str] = &[
    "canary",
    "abort",
    "--component",
    "webhook",
    "--timeout",
    "3m",
];

fn windows(state: &serde_json::Value) -> Vec<serde_json::Value> {
    state["windows"].as_array().cloned().unwrap_or_default()
}

fn events(state: &serde_json::Value) -> Vec<String> {
    state["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}

/// `psctl canary status -o json`: the run as an operator reads it.
fn canary_status(sandbox: &Sandbox, config: &Path) -> serde_json::Value {
    let (code, stdout, stderr) = psctl(sandbox, config, &["canary", "status", "-o", "json"]);
    assert_eq!(code, 0, "psctl canary status: {stderr}");
    report(&stdout)
}

/// Starts a canary of `tag` in the background and waits until its first step bakes.
async fn canary_baking(sandbox: &Sandbox, config: &Path, tag: &str) -> Background {
    let mut driver = Background::spawn(sandbox, config, &canary_start_args(tag));
    eventually(
        "the canary's first bake",
        Duration::from_secs(180),
        async || {
            assert!(driver.running(), "the canary ended: {}", driver.stderr());
            let state = canary_state(sandbox).await?;
            (state["tag"] == tag && !state["step_started_at"].is_null()).then_some(())
        },
    )
    .await;
    driver
}

/// The stable and canary Deployments' replicas as `psctl status` reports them (0 for a track
/// that does not exist).
fn tracks(status: &serde_json::Value) -> (i64, i64) {
    (
        deployment_state(status, STABLE).map_or(0, |d| d.0),
        deployment_state(status, CANARY).map_or(0, |d| d.0),
    )
}

async fn canary_operations(matrix: &mut Matrix) {
    let sandbox = &Sandbox::services("faults-canary-ops").await;
    let config = canary_config(sandbox, "canary-ops");
    sandbox.deploy(&config, &["webhook"]);
    let config = config.as_path();
    let namespace = sandbox.namespace.clone();
    let canary_path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{CANARY}$");
    let stable_path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{STABLE}$");
    // The driver the next case starts from, when a case leaves one running.
    let mut driver: Option<Background> = None;
    let first = new_tag(sandbox, "ops-1").await;

    matrix
        .case(
            "sigkill-canary-start-before-scale-up-then-resume",
            async || {
                let audited = last_audit_id(sandbox).await;
                let mut faults = Faults::default();
                // Under the Lease, the kill-switch check reads the canary Deployment once (let
                // through); the run's own read before it applies the canary track hangs.
                faults.inject(
                    &[
                        "api", "--path", &canary_path, "--method", "GET", "--delay-ms", "1",
                        "--count", "1",
                    ],
                    &["api", "--clear"],
                );
                faults.inject(
                    &[
                        "api", "--path", &canary_path, "--method", "GET", "--delay-ms", "60000",
                    ],
                    &["api", "--clear"],
                );
                let killed = Background::spawn(sandbox, config, &canary_start_args(&first));
                let pid = killed.pid();
                let mine = format!("pid {pid} (canary webhook)");
                let saved = eventually(
                    "the run's state, saved under the Lease",
                    Duration::from_secs(90),
                    async || {
                        let state = canary_state(sandbox).await?;
                        (state["tag"] == first.as_str()
                            && state["holder"].as_str().is_some_and(|h| h.contains(&mine)))
                        .then_some(state)
                    },
                )
                .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                killed.kill();
                faults.restore();
                assert_eq!(saved["status"], "running", "{saved:#}");
                assert!(saved["step_started_at"].is_null(), "{saved:#}");
                assert_eq!(replicas(sandbox, CANARY).await, None, "no canary track yet");
                assert_eq!(replicas(sandbox, STABLE).await, Some(2));
                assert!(
                    lease_holder(sandbox).await.is_some_and(|h| h.contains(&mine)),
                    "the dead process still holds the Lease"
                );
                // `canary status` names it: running, at step 1/2, driven by nobody alive.
                let shown = canary_status(sandbox, config);
                assert_eq!(
                    (&shown["status"], &shown["step"], &shown["driven_by"]),
                    (
                        &serde_json::json!("running"),
                        &serde_json::json!(0),
                        &serde_json::Value::Null
                    ),
                    "{shown:#}"
                );
                let mut resumed = Background::spawn(sandbox, config, CANARY_RESUME);
                eventually(
                    "the resumed run's first bake",
                    Duration::from_secs(180),
                    async || {
                        assert!(resumed.running(), "resume ended: {}", resumed.stderr());
                        let state = canary_state(sandbox).await?;
                        (!state["step_started_at"].is_null()).then_some(())
                    },
                )
                .await;
                let stderr = resumed.stderr();
                assert!(
                    stderr.contains("took over the deploy lock from")
                        && stderr.contains(&mine)
                        && stderr.contains("no longer exists on this host"),
                    "{stderr}"
                );
                assert_eq!(tracks(&status(sandbox, config)), (1, 1), "50 %: one and one");
                let rows = audit_rows(sandbox, audited).await;
                assert!(
                    rows.iter().any(|r| r.action == "lock-takeover"
                        && r.details["reason"] == "holder_dead"
                        && r.from_state.contains(&mine)),
                    "{:?}",
                    actions(&rows)
                );
                driver = Some(resumed);
                "killed under the Lease before the canary track existed; resume took the Lease over and set 1+1"
                    .to_owned()
            },
        )
        .await;

    matrix
        .case("sigkill-canary-mid-bake-then-resume", async || {
            let running = driver.take().expect("a driver from the previous case");
            eventually("an evaluation", Duration::from_secs(60), async || {
                let state = canary_state(sandbox).await?;
                (!windows(&state).is_empty()).then_some(())
            })
            .await;
            let pid = running.pid();
            running.kill();
            let audited = last_audit_id(sandbox).await;
            let killed = canary_state(sandbox).await.unwrap();
            assert_eq!(killed["status"], "running", "{killed:#}");
            let clock = killed["step_started_at"].clone();
            assert!(clock.is_i64(), "{killed:#}");
            let evaluated = windows(&killed).len();
            let mut resumed = Background::spawn(sandbox, config, CANARY_RESUME);
            let state = eventually(
                "two evaluations by the resumed run",
                Duration::from_secs(60),
                async || {
                    assert!(resumed.running(), "resume ended: {}", resumed.stderr());
                    let state = canary_state(sandbox).await?;
                    (windows(&state).len() >= evaluated + 2).then_some(state)
                },
            )
            .await;
            // The same step on its own clock, and the weights not set again.
            assert_eq!(state["step_started_at"], clock, "{state:#}");
            assert_eq!(state["step"], 0);
            let messages = events(&state);
            let resumed_at = messages
                .iter()
                .rposition(|m| m.starts_with("resumed by") && m.contains("previous driver gone"))
                .unwrap_or_else(|| panic!("no resume event: {messages:#?}"));
            assert!(
                !messages[resumed_at..]
                    .iter()
                    .any(|m| m.starts_with("weights set")),
                "{messages:#?}"
            );
            let new = &windows(&state)[evaluated..];
            let last_before = windows(&killed).last().unwrap()["elapsed_secs"]
                .as_u64()
                .unwrap();
            assert!(
                new.iter()
                    .all(|w| w["elapsed_secs"].as_u64().unwrap() > last_before),
                "the bake goes on from where it was: {new:#?}"
            );
            assert_eq!(tracks(&status(sandbox, config)), (1, 1));
            let stderr = resumed.stderr();
            assert!(
                stderr.contains(&format!("pid {pid} (canary webhook)"))
                    && stderr.contains("no longer exists on this host"),
                "{stderr}"
            );
            let rows = audit_rows(sandbox, audited).await;
            assert!(
                rows.iter()
                    .any(|r| r.action == "lock-takeover" && r.details["reason"] == "holder_dead"),
                "{:?}",
                actions(&rows)
            );
            // Killed again, mid-bake: the next case acts on a run nobody drives.
            resumed.kill();
            format!(
                "resume continued step 1/2 at {}s of its bake, weights untouched",
                new[0]["elapsed_secs"]
            )
        })
        .await;

    matrix
        .case("api-500-then-503-burst-during-canary-promote", async || {
            let audited = last_audit_id(sandbox).await;
            let (revision, _, stable_tag) = release_state(&status(sandbox, config));
            // Every write of the stable Deployment refused: the promotion cannot begin.
            let mut faults = Faults::default();
            faults.inject(
                &[
                    "api",
                    "--path",
                    &stable_path,
                    "--method",
                    "PATCH",
                    "--status",
                    "500",
                ],
                &["api", "--clear"],
            );
            let (code, _, refused) = psctl(sandbox, config, CANARY_PROMOTE_NOW);
            faults.restore();
            assert_eq!(
                code, 3,
                "the API server refused, nothing changed:\n{refused}"
            );
            assert!(refused.contains("psctl canary promote"), "{refused}");
            let after = status(sandbox, config);
            assert_eq!(
                release_state(&after),
                (revision, "deployed".to_owned(), stable_tag.clone())
            );
            assert_eq!(tracks(&after), (1, 1), "the canary keeps its weight");
            assert!(after["lock_holder"].is_null(), "{after:#}");
            let shown = canary_status(sandbox, config);
            assert_eq!(shown["status"], "paused", "{shown:#}");
            assert!(
                shown["reason"].as_str().is_some_and(|r| r.contains("500")),
                "{shown:#}"
            );
            // A burst of three 503s on the same writes: retried, promoted.
            faults.inject(
                &[
                    "api",
                    "--path",
                    &stable_path,
                    "--method",
                    "PATCH",
                    "--status",
                    "503",
                    "--count",
                    "3",
                ],
                &["api", "--clear"],
            );
            let (code, _, stderr) = psctl(sandbox, config, CANARY_PROMOTE_NOW);
            faults.restore();
            assert_eq!(code, 0, "{stderr}");
            let after = status(sandbox, config);
            assert_eq!(
                release_state(&after),
                (revision + 1, "deployed".to_owned(), first.clone())
            );
            assert_eq!(tracks(&after), (2, 0), "stable whole, canary track removed");
            assert_eq!(replicas(sandbox, CANARY).await, None);
            assert!(after["lock_holder"].is_null(), "{after:#}");
            assert_eq!(canary_status(sandbox, config)["status"], "promoted");
            let rows = audit_rows(sandbox, audited).await;
            let outcomes: Vec<&str> = rows
                .iter()
                .filter(|r| r.action == "canary")
                .map(|r| r.outcome.as_str())
                .collect();
            assert_eq!(
                outcomes,
                ["interrupted", "succeeded"],
                "{:?}",
                actions(&rows)
            );
            format!(
                "lasting 500: exit 3 ({}), paused at 1+1; burst of 3 503s: retried, promoted",
                error_line(&refused)
            )
        })
        .await;

    let second = new_tag(sandbox, "ops-2").await;
    matrix
        .case("api-500-on-scale-during-canary-abort", async || {
            canary_baking(sandbox, config, &second).await.kill();
            let audited = last_audit_id(sandbox).await;
            let (revision, _, stable_tag) = release_state(&status(sandbox, config));
            let scale = format!("/apis/apps/v1/namespaces/{namespace}/deployments/[^/]+/scale$");
            let mut faults = Faults::default();
            faults.inject(
                &[
                    "api", "--path", &scale, "--method", "PATCH", "--status", "500",
                ],
                &["api", "--clear"],
            );
            let (code, _, failed) = psctl(sandbox, config, CANARY_ABORT);
            faults.restore();
            assert_eq!(code, 4, "the abort itself failed:\n{failed}");
            assert!(failed.contains("psctl canary abort"), "{failed}");
            let after = status(sandbox, config);
            assert_eq!(
                tracks(&after),
                (1, 1),
                "the first write failed: nothing moved"
            );
            assert!(after["lock_holder"].is_null(), "{after:#}");
            let shown = canary_status(sandbox, config);
            assert_eq!(shown["status"], "paused", "{shown:#}");
            assert!(
                shown["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("THE ABORT FAILED")),
                "{shown:#}"
            );
            // The hinted command, once the API server takes writes again.
            let (code, _, stderr) = psctl(sandbox, config, CANARY_ABORT);
            assert_eq!(code, 0, "{stderr}");
            let after = status(sandbox, config);
            assert_eq!(tracks(&after), (2, 0));
            assert_eq!(replicas(sandbox, CANARY).await, Some(0), "kept at 0");
            assert_eq!(
                release_state(&after),
                (revision, "deployed".to_owned(), stable_tag)
            );
            assert_eq!(canary_status(sandbox, config)["status"], "aborted");
            let rows = audit_rows(sandbox, audited).await;
            let outcomes: Vec<&str> = rows
                .iter()
                .filter(|r| r.action == "canary")
                .map(|r| r.outcome.as_str())
                .collect();
            assert_eq!(outcomes, ["failed", "aborted"], "{:?}", actions(&rows));
            format!(
                "exit 4 ({}); `canary abort` again: aborted",
                error_line(&failed)
            )
        })
        .await;

    let third = new_tag(sandbox, "ops-3").await;
    matrix
        .case("two-operators-race-on-canary-promote", async || {
            canary_baking(sandbox, config, &third).await.kill();
            let (revision, _, _) = release_state(&status(sandbox, config));
            let a = Background::spawn(sandbox, config, CANARY_PROMOTE_NOW);
            let b = Background::spawn(sandbox, config, CANARY_PROMOTE_NOW);
            let (code_a, _, stderr_a) = a.wait(Duration::from_secs(240)).await;
            let (code_b, _, stderr_b) = b.wait(Duration::from_secs(240)).await;
            let loser = match (code_a, code_b) {
                (0, 2) => stderr_b,
                (2, 0) => stderr_a,
                other => panic!("exit codes {other:?}:\n{stderr_a}\n---\n{stderr_b}"),
            };
            assert!(
                loser.contains("another psctl operation holds the deploy lock")
                    || loser.contains("is already promoted"),
                "{loser}"
            );
            let after = status(sandbox, config);
            assert_eq!(
                release_state(&after),
                (revision + 1, "deployed".to_owned(), third.clone()),
                "exactly one promotion"
            );
            assert_eq!(tracks(&after), (2, 0));
            assert!(after["lock_holder"].is_null(), "{after:#}");
            error_line(&loser)
        })
        .await;

    let fourth = new_tag(sandbox, "ops-4").await;
    matrix
        .case("sigkill-canary-mid-promotion-then-resume", async || {
            let mut running = canary_baking(sandbox, config, &fourth).await;
            let audited = last_audit_id(sandbox).await;
            let (revision, _, _) = release_state(&status(sandbox, config));
            // Killed, with its Helm, between the promotion's upgrade and the canary track's
            // removal (which is held back here).
            let mut faults = Faults::default();
            faults.inject(
                &[
                    "api",
                    "--path",
                    &canary_path,
                    "--method",
                    "DELETE",
                    "--delay-ms",
                    "60000",
                ],
                &["api", "--clear"],
            );
            let pid = running.pid();
            // The live driver takes the request at its next evaluation.
            let (code, _, stderr) = psctl(sandbox, config, CANARY_PROMOTE_NOW);
            assert_eq!(code, 0, "{stderr}");
            assert!(stderr.contains("request stored"), "{stderr}");
            eventually(
                "the promotion's Helm revision",
                Duration::from_secs(120),
                async || {
                    assert!(running.running(), "the driver ended: {}", running.stderr());
                    let (now, state, tag) = release_state(&status(sandbox, config));
                    (now > revision && state == "deployed" && tag == fourth).then_some(())
                },
            )
            .await;
            running.kill();
            faults.restore();
            let killed = canary_state(sandbox).await.unwrap();
            assert_eq!(killed["status"], "running", "{killed:#}");
            assert!(
                killed["promoting_since"].is_i64(),
                "recorded before Helm: {killed:#}"
            );
            let evaluated = windows(&killed).len();
            let (code, _, stderr) = psctl(sandbox, config, CANARY_RESUME);
            assert_eq!(code, 0, "{stderr}");
            assert!(
                stderr.contains(&format!("pid {pid} (canary webhook)"))
                    && stderr.contains("the promotion had begun"),
                "{stderr}"
            );
            let state = canary_state(sandbox).await.unwrap();
            assert_eq!(state["status"], "promoted", "{state:#}");
            assert_eq!(windows(&state).len(), evaluated, "no step baked again");
            let after = status(sandbox, config);
            let (_, release, tag) = release_state(&after);
            assert_eq!(
                (release.as_str(), tag.as_str()),
                ("deployed", fourth.as_str())
            );
            assert_eq!(tracks(&after), (2, 0));
            assert!(after["lock_holder"].is_null(), "{after:#}");
            let rows = audit_rows(sandbox, audited).await;
            for (action, outcome) in [("lock-takeover", "succeeded"), ("canary", "succeeded")] {
                assert!(
                    rows.iter()
                        .any(|r| r.action == action && r.outcome == outcome),
                    "{action}: {:?}",
                    actions(&rows)
                );
            }
            "killed after Helm upgraded stable; resume finished the promotion (no bake again)"
                .to_owned()
        })
        .await;

    let fifth = new_tag(sandbox, "ops-5").await;
    matrix
        .case("api-latency-2s-during-canary-promote", async || {
            canary_baking(sandbox, config, &fifth).await.kill();
            let mut faults = Faults::default();
            let path = format!("/namespaces/{namespace}/(deployments|leases|replicasets)");
            faults.inject(
                &["api", "--path", &path, "--delay-ms", "2000"],
                &["api", "--clear"],
            );
            let started = Instant::now();
            let (code, _, stderr) = psctl(sandbox, config, CANARY_PROMOTE_NOW);
            let took = started.elapsed();
            faults.restore();
            assert_eq!(code, 0, "{stderr}");
            assert!(
                took >= Duration::from_secs(4),
                "the latency applied: {took:?}"
            );
            let after = status(sandbox, config);
            let (_, release, tag) = release_state(&after);
            assert_eq!(
                (release.as_str(), tag.as_str()),
                ("deployed", fifth.as_str())
            );
            assert_eq!(tracks(&after), (2, 0));
            assert!(after["lock_holder"].is_null(), "{after:#}");
            format!("promoted in {}s under 2 s latency", took.as_secs())
        })
        .await;
}

// ---------------------------------------------------------------------------------------------
// Rollback killed before Helm and while its revision is pending, `--undo` under a 503 burst,
// and `psctl run` killed mid-run and under an API error

/// A playbook file of `yaml` in `dir`, as a path argument.
fn playbook(dir: &Path, name: &str, yaml: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// The run record of playbook `name` (`psctl-run-<name>`): its state and resourceVersion.
async fn run_record(sandbox: &Sandbox, name: &str) -> Option<(serde_json::Value, String)> {
    let config_map = Api::<ConfigMap>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
        .get_opt(&format!("psctl-run-{name}"))
        .await
        .ok()??;
    let version = config_map.metadata.resource_version.clone()?;
    let state = serde_json::from_str(config_map.data?.get("state.json")?).ok()?;
    Some((state, version))
}

fn step_results(record: &serde_json::Value) -> Vec<(String, u64)> {
    record["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["result"].as_str().unwrap_or_default().to_owned(),
                s["exit_code"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The image tag the stable Deployment's pod template runs.
async fn template_tag(sandbox: &Sandbox) -> String {
    let deployment = Api::<Deployment>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
        .get(STABLE)
        .await
        .unwrap();
    let image = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default();
    image.rsplit(':').next().unwrap_or_default().to_owned()
}

async fn rollback_and_run(matrix: &mut Matrix) {
    let sandbox = &Sandbox::services("faults-rollback-run").await;
    let config = sandbox.config("rollback-run", |_| {});
    sandbox.deploy(&config, &["webhook"]);
    let config = config.as_path();
    let namespace = sandbox.namespace.clone();
    let stable_path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{STABLE}$");
    let first_tag = sandbox.tag.clone();
    let second_tag = new_tag(sandbox, "rb").await;
    let (code, _, stderr) = psctl(sandbox, config, &deploy_args(&second_tag));
    assert_eq!(code, 0, "{stderr}");
    let dir = tempfile::tempdir().unwrap();

    matrix
        .case("sigkill-rollback-before-helm-then-rerun", async || {
            let (revision, _, current) = release_state(&status(sandbox, config));
            assert_eq!(current, second_tag);
            let target = (revision - 1).to_string();
            let args = ["rollback", "webhook", "--to-rev", target.as_str()];
            let audited = last_audit_id(sandbox).await;
            // Frozen under the Lease, before Helm: every read of the Deployment (the
            // kill-switch check reads it under the Lease) takes 20 s.
            let mut faults = Faults::default();
            faults.inject(
                &[
                    "api",
                    "--path",
                    &stable_path,
                    "--method",
                    "GET",
                    "--delay-ms",
                    "20000",
                ],
                &["api", "--clear"],
            );
            let killed = Background::spawn(sandbox, config, &args);
            let mine = format!("pid {} (rollback)", killed.pid());
            eventually("the Lease taken", Duration::from_secs(90), async || {
                lease_holder(sandbox)
                    .await
                    .is_some_and(|h| h.contains(&mine))
                    .then_some(())
            })
            .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            killed.kill();
            faults.restore();
            assert_eq!(
                release_state(&status(sandbox, config)),
                (revision, "deployed".to_owned(), second_tag.clone()),
                "killed before Helm: the release is untouched"
            );
            let (code, _, stderr) = psctl(sandbox, config, &args);
            assert_eq!(code, 0, "{stderr}");
            assert!(
                stderr.contains(&mine) && stderr.contains("no longer exists on this host"),
                "{stderr}"
            );
            let after = status(sandbox, config);
            assert_eq!(
                release_state(&after),
                (revision + 1, "deployed".to_owned(), first_tag.clone())
            );
            assert!(after["lock_holder"].is_null(), "{after:#}");
            let rows = audit_rows(sandbox, audited).await;
            for (action, reason) in [
                ("lock-takeover", Some("holder_dead")),
                ("rollback (helm)", None),
            ] {
                assert!(
                    rows.iter().any(|r| r.action == action
                        && r.outcome == "succeeded"
                        && reason.is_none_or(|w| r.details["reason"] == w)),
                    "{action}: {:?}",
                    actions(&rows)
                );
            }
            format!(
                "release untouched; the same `rollback --to-rev {target}` took over and finished"
            )
        })
        .await;

    matrix
        .case("sigkill-of-rollback-and-helm-while-pending", async || {
            let history = sandbox.history(config, "webhook");
            let (revision, _, current) = release_state(&status(sandbox, config));
            assert_eq!(current, first_tag);
            let target = history
                .iter()
                .rev()
                .find(|r| r["image_tag"] == second_tag.as_str())
                .and_then(|r| r["revision"].as_u64())
                .expect("a revision of the second tag")
                .to_string();
            let args = ["rollback", "webhook", "--to-rev", target.as_str()];
            let audited = last_audit_id(sandbox).await;
            let mut faults = Faults::default();
            let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments");
            faults.inject(
                &[
                    "api",
                    "--path",
                    &path,
                    "--method",
                    "PATCH",
                    "--delay-ms",
                    "60000",
                ],
                &["api", "--clear"],
            );
            let killed = Background::spawn_group(sandbox, config, &args);
            // Helm records the rollback's revision as pending before it applies it (the
            // sandbox's Helm rolls back through its upgrade, so the status reads
            // pending-upgrade where a real Helm writes pending-rollback).
            let pending = eventually(
                "Helm's pending revision",
                Duration::from_secs(90),
                async || {
                    let (_, state, _) = release_state(&status(sandbox, config));
                    state.starts_with("pending-").then_some(state)
                },
            )
            .await;
            killed.kill_group();
            faults.restore();
            let (stuck, state, _) = release_state(&status(sandbox, config));
            assert_eq!((stuck, state.as_str()), (revision + 1, pending.as_str()));
            // The same command again names the way out instead of tripping over Helm's lock.
            let (code, _, refused) = psctl(sandbox, config, &args);
            assert_eq!(code, 2, "{refused}");
            assert!(
                refused.contains("psctl rollback webhook --unstick"),
                "{refused}"
            );
            let (code, _, unstuck) = psctl(
                sandbox,
                config,
                &["rollback", "webhook", "--unstick", "--force"],
            );
            assert_eq!(code, 0, "{unstuck}");
            assert_eq!(
                release_state(&status(sandbox, config)),
                (revision + 1, "deployed".to_owned(), first_tag.clone()),
                "back on the release the rollback left"
            );
            let (code, _, stderr) = psctl(sandbox, config, &args);
            assert_eq!(code, 0, "{stderr}");
            let after = status(sandbox, config);
            assert_eq!(
                release_state(&after),
                (revision + 2, "deployed".to_owned(), second_tag.clone())
            );
            assert!(after["lock_holder"].is_null(), "{after:#}");
            let rows = audit_rows(sandbox, audited).await;
            for (action, outcome) in [
                ("lock-takeover", "succeeded"),
                ("rollback (unstick)", "succeeded"),
                ("rollback (helm)", "succeeded"),
            ] {
                assert!(
                    rows.iter()
                        .any(|r| r.action == action && r.outcome == outcome),
                    "{action}: {:?}",
                    actions(&rows)
                );
            }
            format!(
                "left {pending}; re-run: {}; `--unstick --force`, then the re-run: exit 0",
                error_line(&refused)
            )
        })
        .await;

    matrix
        .case("api-503-burst-on-rollback-undo", async || {
            let audited = last_audit_id(sandbox).await;
            assert_eq!(template_tag(sandbox).await, second_tag);
            let mut faults = Faults::default();
            faults.inject(
                &[
                    "api",
                    "--path",
                    &stable_path,
                    "--method",
                    "PUT",
                    "--status",
                    "503",
                    "--count",
                    "3",
                ],
                &["api", "--clear"],
            );
            let (code, _, stderr) = psctl(sandbox, config, &["rollback", "webhook", "--undo"]);
            let left = sandbox_fault(&["api"]).unwrap();
            faults.restore();
            assert_eq!(code, 0, "{stderr}");
            assert!(!left.contains("503"), "the burst was served: {left}");
            assert_eq!(
                template_tag(sandbox).await,
                first_tag,
                "the previous template"
            );
            let after = status(sandbox, config);
            assert!(after["lock_holder"].is_null(), "{after:#}");
            let rows = audit_rows(sandbox, audited).await;
            assert!(
                rows.iter()
                    .any(|r| r.action.starts_with("rollback") && r.outcome == "succeeded"),
                "{:?}",
                actions(&rows)
            );
            "three 503s on the template's PUT: retried, previous template restored".to_owned()
        })
        .await;

    matrix
        .case("sigkill-mid-run-then-resume", async || {
            let tag = new_tag(sandbox, "run").await;
            // Another playbook's record, which the resume must leave alone.
            let other = playbook(
                dir.path(),
                "other",
                "name: faults-other\nsteps:\n  - status\n",
            );
            let (code, _, stderr) = psctl(sandbox, config, &["run", &other]);
            assert_eq!(code, 0, "{stderr}");
            let (_, other_version) = run_record(sandbox, "faults-other").await.unwrap();
            let file = playbook(
                dir.path(),
                "release",
                &format!(
                    "name: faults-release\nsteps:\n  - status:\n      name: before\n  \
                     - deploy:\n      name: deploy-webhook\n      components: [webhook]\n      \
                     tag: {tag}\n      timeout: 3m\n  - status:\n      name: after\n"
                ),
            );
            let (revision, _, _) = release_state(&status(sandbox, config));
            let audited = last_audit_id(sandbox).await;
            let killed = Background::spawn(sandbox, config, &["run", &file]);
            let mine = format!("pid {} (run)", killed.pid());
            eventually("the deploy step's revision", Duration::from_secs(90), async || {
                let (_, state, deployed) = release_state(&status(sandbox, config));
                (deployed == tag && state == "deployed").then_some(())
            })
            .await;
            killed.kill();
            let (record, _) = run_record(sandbox, "faults-release").await.unwrap();
            assert_eq!(record["status"], "running", "{record:#}");
            assert_eq!(
                step_results(&record),
                [("passed".into(), 0), ("not-run".into(), 0), ("not-run".into(), 0)]
            );
            assert!(lease_holder(sandbox).await.is_some_and(|h| h.contains(&mine)));
            let (code, _, stderr) = psctl(sandbox, config, &["run", &file, "--from", "deploy-webhook"]);
            assert_eq!(code, 0, "{stderr}");
            assert!(stderr.contains("resuming the run started"), "{stderr}");
            assert!(stderr.contains(&mine), "the dead run's Lease taken over: {stderr}");
            let (resumed, _) = run_record(sandbox, "faults-release").await.unwrap();
            assert_eq!(resumed["status"], "succeeded", "{resumed:#}");
            assert_eq!(
                step_results(&resumed),
                [("passed".into(), 0), ("passed".into(), 0), ("passed".into(), 0)]
            );
            for field in ["started_at", "started_by", "baseline"] {
                assert_eq!(resumed[field], record[field], "{field}: the killed run's");
            }
            assert_eq!(
                record["baseline"]["webhook"]["revision"].as_u64(),
                Some(revision),
                "the baseline from before the killed run"
            );
            assert_eq!(
                run_record(sandbox, "faults-other").await.unwrap().1,
                other_version,
                "another playbook's record untouched"
            );
            let after = status(sandbox, config);
            let (_, state, deployed) = release_state(&after);
            assert_eq!((state.as_str(), deployed.as_str()), ("deployed", tag.as_str()));
            assert!(after["lock_holder"].is_null(), "{after:#}");
            let rows = audit_rows(sandbox, audited).await;
            for action in ["lock-takeover", "deploy"] {
                assert!(
                    rows.iter().any(|r| r.action == action && r.outcome == "succeeded"),
                    "{action}: {:?}",
                    actions(&rows)
                );
            }
            "killed in the deploy step's rollout wait; `--from deploy-webhook` reused its record and baseline"
                .to_owned()
        })
        .await;

    matrix
        .case("api-500-during-a-run-step", async || {
            let file = playbook(
                dir.path(),
                "smoke",
                "name: faults-smoke\nsteps:\n  - smoke:\n      name: smoke-webhook\n      \
                 only: [cluster]\n      components: [webhook]\n  - status:\n      name: after\n",
            );
            let pods = format!("/api/v1/namespaces/{namespace}/pods$");
            let mut faults = Faults::default();
            faults.inject(
                &["api", "--path", &pods, "--method", "GET", "--status", "500"],
                &["api", "--clear"],
            );
            let (code, report, failed) = psctl(sandbox, config, &["run", &file]);
            faults.restore();
            assert_eq!(
                code, 3,
                "the step's own exit code: the cluster could not answer\n{failed}"
            );
            assert!(
                report.contains(&format!("Resume with: psctl run {file} --env e2e --from 1")),
                "the resume command: {report}"
            );
            let (record, _) = run_record(sandbox, "faults-smoke").await.unwrap();
            assert_eq!(record["status"], "failed", "{record:#}");
            assert_eq!(
                step_results(&record),
                [("failed".into(), 3), ("not-run".into(), 0)]
            );
            assert!(status(sandbox, config)["lock_holder"].is_null());
            let (code, _, stderr) =
                psctl(sandbox, config, &["run", &file, "--from", "smoke-webhook"]);
            assert_eq!(code, 0, "{stderr}");
            let (record, _) = run_record(sandbox, "faults-smoke").await.unwrap();
            assert_eq!(record["status"], "succeeded", "{record:#}");
            format!(
                "exit 3 ({}); `--from smoke-webhook`: exit 0",
                error_line(&failed)
            )
        })
        .await;
}
