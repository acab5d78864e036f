//! End-to-end tests of `psctl canary` in the sandbox, with real Prometheus measuring real
//! webhook workers: a healthy canary is promoted, a canary whose new values break delivery is
//! aborted with stable untouched, a run killed mid-step is resumed from its recorded step, and a
//! canary pod that starts crash-looping mid-bake aborts the run before the next evaluation.
//!
//! Each test has its own namespace and its own database (migrated, seeded with a copy of the
//! sandbox merchant, whose endpoint is the sandbox's merchant sink), runs psctl as the
//! namespace's least-privilege ServiceAccount (tests/support), and feeds the worker's queue at
//! a steady rate so both tracks deliver. The worker image is built from the workspace and
//! pushed to the sandbox registry under a content tag. Without the sandbox these tests fail;
//! they never skip.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use sqlx::PgPool;

use support::Sandbox;
use support::sandbox::RuntimeSecret;

const IMAGE: &str = "problemsolver-webhook-worker";
const RELEASE: &str = "problemsolver-webhook";
const CANARY: &str = "problemsolver-webhook-canary";

/// One test's namespace, database (with the sandbox merchant), configuration and traffic. The
/// "stable" and the "new" release are the same worker image under two tags, as a real canary
/// of a rebuild is.
struct CanaryBed {
    traffic: Option<tokio::task::JoinHandle<()>>,
    pool: PgPool,
    config: std::path::PathBuf,
    stable_tag: String,
    new_tag: String,
    sandbox: Sandbox,
}

impl Drop for CanaryBed {
    fn drop(&mut self) {
        if let Some(traffic) = self.traffic.take() {
            traffic.abort();
        }
    }
}

impl CanaryBed {
    async fn new(test: &str) -> Self {
        let sandbox = Sandbox::builder(test)
            .service_images()
            .runtime_secret(RuntimeSecret::Sandbox)
            .sandbox_merchant()
            .start()
            .await;
        let stable_tag = sandbox.tag.clone();
        let new_tag = format!("{stable_tag}-new");
        let (registry, from, to) = (
            sandbox.registry.clone(),
            stable_tag.clone(),
            new_tag.clone(),
        );
        tokio::task::spawn_blocking(move || support::images::retag(&registry, IMAGE, &from, &to))
            .await
            .unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&sandbox.database_url)
            .await
            .unwrap();

        // Two stable replicas: every step below 100 % is 1 canary + 1 stable. The absolute
        // margin is wide because these workers never fail against a healthy sink: with zero
        // failures on both sides, proving "not worse by 0.1 point" needs thousands of requests.
        let mut environment = sandbox.connection();
        environment["components"] = serde_json::json!({
            "webhook": {
                "release": RELEASE,
                "chart": std::path::Path::new(support::ROOT).join("charts/webhook-worker"),
                "image": IMAGE,
                "deployment": RELEASE,
                "selector": "app=problemsolver-webhook",
                "values": {"replicaCount": 2, "allowInsecureTargets": true},
                "metrics": {
                    "service": "problemsolver-webhook-metrics",
                    "port": 8001,
                    "required": ["webhook_deliveries_total", "webhook_queue_depth", "worker_health_status"],
                },
                "canary": {
                    "deployment": CANARY,
                    "steps": [10, 60, 100],
                    "bake": "30s",
                    "interval": "10s",
                    "policy": {"min_requests": 30, "margin_absolute": 0.02},
                },
            },
        });
        let config = sandbox.write_config("canary", environment);
        Self {
            traffic: None,
            pool,
            config,
            stable_tag,
            new_tag,
            sandbox,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        self.sandbox
            .command(&self.config, args)
            .arg("--yes")
            .into_command()
    }

    fn psctl(&self, args: &[&str]) -> (i32, String, String) {
        let output = self.command(args).output().expect("run psctl");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Deploys the stable release and starts feeding the queue: `per_second` webhooks a second.
    async fn deploy_stable_and_start_traffic(&mut self, per_second: u32) {
        let (code, stdout, stderr) = self.psctl(&[
            "deploy",
            "--component",
            "webhook",
            "--tag",
            &self.stable_tag.clone(),
        ]);
        assert_eq!(code, 0, "stable deploy failed:\n{stdout}\n{stderr}");
        let pool = self.pool.clone();
        let period = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
        self.traffic = Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                let _ = sqlx::query(
                    "INSERT INTO webhook_queue (merchant_id, event_type, payload, max_attempts) \
                     SELECT id, 'invoice.paid', jsonb_build_object('canary_e2e', now()), 50 FROM merchants LIMIT 1",
                )
                .execute(&pool)
                .await;
            }
        }));
    }

    async fn deployment(&self, name: &str) -> Option<Deployment> {
        Api::<Deployment>::namespaced(self.sandbox.admin.clone(), &self.sandbox.namespace)
            .get_opt(name)
            .await
            .unwrap()
    }

    async fn replicas(&self, name: &str) -> Option<i32> {
        self.deployment(name)
            .await
            .and_then(|d| d.spec.and_then(|s| s.replicas))
    }

    fn history(&self) -> Vec<serde_json::Value> {
        let (code, stdout, stderr) = self.psctl(&["history", "webhook", "-o", "json"]);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(&stdout).unwrap()
    }

    /// Waits until the run's first step is baking (its clock has started).
    async fn wait_until_baking(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(state) = self.state().await
                && state["step_started_at"].is_i64()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "step 1 never started baking: {:?}",
                self.state().await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn state(&self) -> Option<serde_json::Value> {
        let config_map =
            Api::<ConfigMap>::namespaced(self.sandbox.admin.clone(), &self.sandbox.namespace)
                .get_opt("psctl-canary-webhook")
                .await
                .unwrap()?;
        serde_json::from_str(config_map.data?.get("state.json")?).ok()
    }
}

fn image_tag(revision: &serde_json::Value) -> &str {
    revision["image_tag"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_canary_goes_from_ten_to_a_hundred_and_is_promoted() {
    let mut bed = CanaryBed::new("canary-healthy").await;
    bed.deploy_stable_and_start_traffic(8).await;
    let before = bed.history();
    assert_eq!(before.len(), 1, "{before:?}");

    let new_tag = bed.new_tag.clone();
    let (code, stdout, stderr) = bed.psctl(&["canary", "start", "--tag", &new_tag, "-o", "json"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "promoted", "{report}");
    // Both baked steps passed on real figures from Prometheus.
    let windows = report["windows"].as_array().unwrap();
    for step in [0, 1] {
        let advanced = windows
            .iter()
            .find(|w| w["step"] == step && w["decision"]["decision"] == "advance")
            .unwrap_or_else(|| panic!("step {step} never advanced: {report}"));
        assert_eq!(advanced["evaluation"]["verdict"], "pass", "{advanced}");
        assert!(
            advanced["observation"]["canary"]["requests"]
                .as_f64()
                .unwrap()
                >= 30.0,
            "{advanced}"
        );
    }
    assert!(
        stderr.contains("step 1/3 (10%): canary 1 replica(s), stable 1"),
        "{stderr}"
    );
    assert!(stderr.contains("error-rate pass"), "{stderr}");

    // Helm history changed once, at promotion, to the new tag; the canary track is gone and
    // stable has its full replica count.
    let after = bed.history();
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(image_tag(&after[1]), new_tag);
    assert_eq!(after[1]["status"], "deployed");
    assert!(bed.deployment(CANARY).await.is_none(), "canary removed");
    assert_eq!(bed.replicas(RELEASE).await, Some(2));
    let (code, stdout, _) = bed.psctl(&["canary", "status"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("promoted"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_whose_deliveries_fail_is_aborted_and_stable_is_untouched() {
    let mut bed = CanaryBed::new("canary-failing").await;
    bed.deploy_stable_and_start_traffic(8).await;
    let before = bed.history();
    // The new release's values refuse plain-HTTP private merchant endpoints (the sandbox sink
    // is one): every delivery the canary attempts fails, stable's keep succeeding.
    let values = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(values.path(), "allowInsecureTargets: false\n").unwrap();
    let new_tag = bed.new_tag.clone();
    let values_path = values.path().display().to_string();
    // Run as a GitHub Actions step would: the abort is an annotation and a job summary entry.
    let summary = tempfile::NamedTempFile::new().unwrap();
    let output = bed
        .command(&[
            "canary",
            "start",
            "--tag",
            &new_tag,
            "--steps",
            "50,100",
            "--values",
            &values_path,
            "-o",
            "json",
        ])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", summary.path())
        .output()
        .expect("run psctl canary start");
    let (code, stdout, stderr) = (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("::error title=canary aborted%3A webhook::the canary of `webhook`"),
        "{stderr}"
    );
    let markdown = std::fs::read_to_string(summary.path()).unwrap();
    assert!(
        markdown.contains("### psctl: canary aborted: webhook") && markdown.contains("was aborted"),
        "{markdown}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "aborted", "{report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("guardrail") || reason.contains("failed evaluations in a row"),
        "{reason}"
    );
    // The deciding evaluation carries its figures: the canary failed, stable did not.
    let last = report["windows"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["decision"]["decision"], "abort", "{last}");
    let canary = &last["observation"]["canary"];
    assert!(canary["failures"].as_f64().unwrap() > 0.0, "{last}");
    assert!(
        last["evaluation"]["error_rate"]["detail"]
            .as_str()
            .unwrap()
            .contains("canary"),
        "{last}"
    );
    assert!(stderr.contains("was aborted"), "{stderr}");
    assert!(stderr.contains("ABORT"), "{stderr}");

    // Stable untouched: same Helm history, full replicas; the canary kept at zero.
    assert_eq!(bed.history(), before);
    assert_eq!(bed.replicas(RELEASE).await, Some(2));
    assert_eq!(bed.replicas(CANARY).await, Some(0));

    // The cluster's own history shows it: a Warning Event from psctl naming who aborted.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(
        bed.sandbox.admin.clone(),
        &bed.sandbox.namespace,
    )
    .list(&Default::default())
    .await
    .expect("events.k8s.io/v1 Events are listed")
    .items;
    let aborted = events
        .iter()
        .find(|event| {
            event.reporting_controller.as_deref() == Some("psctl")
                && event.reason.as_deref() == Some("CanaryAborted")
        })
        .unwrap_or_else(|| panic!("no CanaryAborted Event: {events:#?}"));
    assert_eq!(aborted.type_.as_deref(), Some("Warning"));
    assert!(
        aborted
            .note
            .as_deref()
            .is_some_and(|note| note.contains(" pid ")),
        "the note names the operator: {aborted:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_mid_step_is_resumed_from_its_recorded_step() {
    let mut bed = CanaryBed::new("canary-resume").await;
    bed.deploy_stable_and_start_traffic(8).await;
    let new_tag = bed.new_tag.clone();
    let mut child = bed
        .command(&["canary", "start", "--tag", &new_tag, "--bake", "40s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn psctl canary start");
    // Wait until step 2 (60 %) is baking, then kill psctl without letting it clean up.
    let deadline = Instant::now() + Duration::from_secs(300);
    let recorded = loop {
        if let Some(state) = bed.state().await
            && state["step"] == 1
            && state["step_started_at"].is_i64()
        {
            break state;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "psctl ended before step 2: {:?}",
            bed.state().await
        );
        assert!(
            Instant::now() < deadline,
            "step 2 never started: {:?}",
            bed.state().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tokio::time::sleep(Duration::from_secs(12)).await;
    child.kill().expect("SIGKILL psctl");
    child.wait().unwrap();
    let killed = bed.state().await.unwrap();
    assert_eq!(killed["status"], "running");
    assert_eq!(killed["step"], 1);
    let windows_before = killed["windows"].as_array().unwrap().len();

    let (code, stdout, stderr) = bed.psctl(&["canary", "resume", "-o", "json"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "promoted", "{report}");
    // Continued at step 2 with the step's own clock and tally: step 1 was not baked again and
    // step 2's weights were not set again.
    let windows = report["windows"].as_array().unwrap();
    assert!(windows.len() > windows_before);
    assert!(
        windows[windows_before..].iter().all(|w| w["step"] == 1),
        "after the resume only step 2 was evaluated: {report}"
    );
    let step_started = recorded["step_started_at"].as_i64().unwrap();
    let last_step_two = windows.iter().rev().find(|w| w["step"] == 1).unwrap();
    assert!(
        last_step_two["elapsed_secs"].as_i64().unwrap()
            >= last_step_two["at"].as_i64().unwrap() - step_started - 1,
        "the bake clock kept running from the recorded start: {last_step_two}"
    );
    let events: Vec<&str> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    let resumed = events
        .iter()
        .position(|e| e.contains("resumed by") && e.contains("step 2/3 (60%)"))
        .unwrap_or_else(|| panic!("no resume event: {events:?}"));
    assert!(
        !events[resumed..]
            .iter()
            .any(|e| e.starts_with("weights set")),
        "{events:?}"
    );
    assert!(
        stderr.contains("Lease was released") || stderr.contains("Lease `psctl-deploy` acquired"),
        "{stderr}"
    );
    let history = bed.history();
    assert_eq!(image_tag(history.last().unwrap()), new_tag);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abort_from_another_terminal_reaches_the_live_run_through_its_state() {
    let mut bed = CanaryBed::new("canary-remote-abort").await;
    bed.deploy_stable_and_start_traffic(8).await;
    let new_tag = bed.new_tag.clone();
    let driver = bed
        .command(&[
            "canary", "start", "--tag", &new_tag, "--bake", "10m", "-o", "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psctl canary start");
    bed.wait_until_baking(Duration::from_secs(240)).await;
    // Another operator sees who drives the run, and asks it to abort.
    let (code, stdout, stderr) = bed.psctl(&["canary", "status"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("driven by: ") && stdout.contains("(canary webhook)"),
        "{stdout}"
    );
    // A third follows the run live until it ends.
    let watcher = bed
        .command(&["canary", "status", "--watch", "--every", "1s", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psctl canary status --watch");
    let (code, _, stderr) = bed.psctl(&["canary", "abort"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("request stored"), "{stderr}");

    // The driver acts on it at its next evaluation (interval 10 s) and exits 1.
    let output = tokio::task::spawn_blocking(move || driver.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "aborted", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .starts_with("aborted by "),
        "{report}"
    );
    assert_eq!(
        report["request"],
        serde_json::Value::Null,
        "the request was consumed"
    );
    assert_eq!(bed.replicas(RELEASE).await, Some(2));
    assert_eq!(bed.replicas(CANARY).await, Some(0));

    // The watcher saw the run running, then its end and why, and exits 1 with the final report.
    let watched = tokio::task::spawn_blocking(move || watcher.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&watched.stdout);
    let stderr = String::from_utf8_lossy(&watched.stderr);
    assert_eq!(
        watched.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "aborted", "{report}");
    let running = stderr
        .find(": running at step 1/")
        .unwrap_or_else(|| panic!("{stderr}"));
    let aborted = stderr
        .find(": aborted at step 1/")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(running < aborted, "{stderr}");
    assert!(stderr.contains("reason: aborted by "), "{stderr}");
    assert!(
        stderr.contains("scaled to 0"),
        "the abort's event: {stderr}"
    );
}

/// The canary pods are watched between evaluations: a canary container that starts crash-looping
/// in the middle of a bake (killed twice, so the kubelet backs off its restart) aborts the run
/// with the pod's diagnosis before the step's next evaluation, whatever the figures say.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_pod_that_starts_crash_looping_mid_bake_aborts_the_run() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;

    let mut bed = CanaryBed::new("canary-crashloop").await;
    bed.deploy_stable_and_start_traffic(8).await;
    let new_tag = bed.new_tag.clone();
    // A long interval: the abort must come from watching the pods, not from an evaluation.
    let child = bed
        .command(&[
            "canary",
            "start",
            "--tag",
            &new_tag,
            "--bake",
            "5m",
            "--interval",
            "2m",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psctl canary start");
    bed.wait_until_baking(Duration::from_secs(300)).await;
    let pods = Api::<Pod>::namespaced(bed.sandbox.admin.clone(), &bed.sandbox.namespace);
    let canary_pod = pods
        .list(&ListParams::default().labels("app=problemsolver-webhook,track=canary"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .and_then(|p| p.metadata.name)
        .expect("a canary pod");
    let sandbox_bin =
        std::path::Path::new(env!("CARGO_BIN_EXE_psctl")).with_file_name("psctl-sandbox");
    let kill = || {
        let output = Command::new(&sandbox_bin)
            .args([
                "fault",
                "kill-container",
                &canary_pod,
                "--namespace",
                &bed.sandbox.namespace,
            ])
            .output()
            .expect("run psctl-sandbox");
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    };
    let restarts = || async {
        pods.get(&canary_pod)
            .await
            .unwrap()
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.first().map(|c| (c.restart_count, c.ready)))
            .unwrap_or((0, false))
    };
    // The first crash is restarted at once (the kubelet's back-off starts after it)...
    let first = kill();
    assert!(first.contains("killed"), "{first}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while restarts().await.0 < 1 {
        assert!(
            Instant::now() < deadline,
            "the canary container was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // ...the second lands in CrashLoopBackOff (10 s of back-off).
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        let output = kill();
        if output.contains("killed") {
            break output;
        }
        assert!(
            Instant::now() < deadline,
            "no running container to kill again: {output}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(second.contains("killed"), "{second}");

    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["status"], "aborted", "{report}");
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("a canary pod failed at step 1/3 (10%): CrashLoopBackOff in pod problemsolver-webhook-canary-"),
        "{reason}"
    );
    // Aborted by the watch: the 2-minute interval never came round to an evaluation.
    assert_eq!(report["windows"], serde_json::json!([]), "{report}");
    // Stable is whole again and the canary kept at zero for investigation.
    assert_eq!(bed.replicas(RELEASE).await, Some(2));
    assert_eq!(bed.replicas(CANARY).await, Some(0));
}
