//! End-to-end tests of `psctl canary` in the sandbox, with real Prometheus measuring real
//! webhook workers: a healthy canary is promoted, a canary whose new values break delivery is
//! aborted with stable untouched, and a run killed mid-step is resumed from its recorded step.
//!
//! Each test has its own namespace and its own database (migrated, seeded with a copy of the
//! sandbox merchant, whose endpoint is the sandbox's merchant sink), and feeds the worker's
//! queue at a steady rate so both tracks deliver. The worker image is built from the workspace
//! and pushed to the sandbox registry once per test process. Without the sandbox these tests
//! fail; they never skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use sqlx::{Connection as _, PgConnection, PgPool};

const IMAGE: &str = "problemsolver-webhook-worker";
const RELEASE: &str = "problemsolver-webhook";
const CANARY: &str = "problemsolver-webhook-canary";

fn sandbox_environment() -> psctl::settings::Environment {
    let path = std::env::var_os("PSCTL_CONFIG").map(PathBuf::from).expect(
        "PSCTL_CONFIG is not set: these tests need the sandbox; run them through scripts/test.sh \
         or `eval \"$(psctl-sandbox env)\"` first",
    );
    let config = psctl::settings::file::load(&path).expect("the sandbox's psctl.yaml is valid");
    config
        .environments
        .get("sandbox")
        .expect("the sandbox config has environment `sandbox`")
        .clone()
}

fn run(command: &mut Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds the worker, makes an image of it on the sandbox base and pushes it under two tags
/// (the "stable" and the "new" release: the same program, as a real canary of a rebuild is).
/// Once per test process; returns the two tags.
fn worker_tags(registry: &str) -> &'static (String, String) {
    static TAGS: OnceLock<(String, String)> = OnceLock::new();
    TAGS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        run(
            Command::new(cargo)
                .args(["build", "-p", "problemsolver-webhook-worker"])
                .current_dir(root),
            "cargo build -p problemsolver-webhook-worker",
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let binary = target.join("debug").join(IMAGE);
        let context = tempfile::tempdir().unwrap();
        std::fs::create_dir(context.path().join("dist")).unwrap();
        std::fs::copy(&binary, context.path().join("dist").join(IMAGE))
            .unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
        let stamp = format!("{}-{}", std::process::id(), unix_now());
        let stable = format!("e2e-canary-stable-{stamp}");
        let new = format!("e2e-canary-new-{stamp}");
        let reference = |tag: &str| format!("{registry}/{IMAGE}:{tag}");
        run(
            Command::new("docker")
                .args(["build", "-q", "-f"])
                .arg(root.join("Dockerfile"))
                .args([
                    "--build-arg",
                    &format!("RUNTIME_BASE={registry}/psctl-base:bookworm"),
                    "--build-arg",
                    &format!("BINARY={IMAGE}"),
                    "-t",
                    &reference(&stable),
                    "-t",
                    &reference(&new),
                ])
                .arg(context.path()),
            "docker build of the worker image",
        );
        for tag in [&stable, &new] {
            run(
                Command::new("docker").args(["push", "-q", &reference(tag)]),
                "docker push",
            );
        }
        (stable, new)
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One test's namespace, database, configuration and traffic.
struct CanaryBed {
    namespace: String,
    database: String,
    admin_url: String,
    pool: PgPool,
    config: tempfile::NamedTempFile,
    client: kube::Client,
    traffic: Option<tokio::task::JoinHandle<()>>,
    stable_tag: String,
    new_tag: String,
}

impl CanaryBed {
    async fn new(test: &str) -> Self {
        let environment = sandbox_environment();
        let registry = environment
            .registry
            .clone()
            .expect("the sandbox config names its registry");
        let (stable_tag, new_tag) = worker_tags(&registry).clone();
        let namespace = format!("e2e-canary-{test}-{}", std::process::id());

        // The database: migrated, with the sandbox merchant copied in (its secret is encrypted
        // under the sandbox's ENCRYPTION_MASTER_KEY, which the copied runtime Secret carries).
        let admin_url = std::env::var("DATABASE_URL").expect(
            "DATABASE_URL is not set: load the sandbox with `eval \"$(psctl-sandbox env)\"`",
        );
        let database = format!(
            "e2e_canary_{}_{}",
            test.replace('-', "_"),
            std::process::id()
        );
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("the sandbox database is reachable");
        let merchant: serde_json::Value = sqlx::query_scalar(
            "SELECT row_to_json(m)::jsonb FROM merchants m WHERE name = 'sandbox-merchant' LIMIT 1",
        )
        .fetch_one(&mut admin)
        .await
        .expect("the sandbox database has the seeded merchant");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{database}\""
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&format!("/{database}"));
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(url.as_str())
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
            .await
            .unwrap()
            .run(&pool)
            .await
            .expect("migrate the test database");
        sqlx::query(
            "INSERT INTO merchants SELECT * FROM jsonb_populate_record(NULL::merchants, $1)",
        )
        .bind(&merchant)
        .execute(&pool)
        .await
        .expect("copy the sandbox merchant");

        let client = psctl::cluster::connect(&environment)
            .await
            .expect("the sandbox API server is reachable");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .expect("create the test namespace");
        // The runtime Secret of the sandbox, pointed at this test's database.
        let sandbox_secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        let runtime = sandbox_secrets
            .get("problemsolver-secrets")
            .await
            .expect("the sandbox's runtime Secret");
        let mut data = runtime.data.unwrap_or_default();
        let pod_url = String::from_utf8(data["DATABASE_URL"].0.clone()).unwrap();
        let mut pod_url = url::Url::parse(&pod_url).unwrap();
        pod_url.set_path(&format!("/{database}"));
        data.insert(
            "DATABASE_URL".to_owned(),
            k8s_openapi::ByteString(pod_url.as_str().as_bytes().to_vec()),
        );
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("problemsolver-secrets".to_owned()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        Api::<Secret>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the runtime Secret");

        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/webhook-worker");
        // Two stable replicas: every step below 100 % is 1 canary + 1 stable. The absolute
        // margin is wide because these workers never fail against a healthy sink: with zero
        // failures on both sides, proving "not worse by 0.1 point" needs thousands of requests.
        let text = format!(
            "environments:\n  e2e:\n    kube_context: {context}\n    kubeconfig: {kubeconfig}\n    namespace: {namespace}\n    \
             registry: {registry}\n    helm: {helm}\n    prometheus_url: {prometheus}\n    components:\n      webhook:\n        \
             release: {RELEASE}\n        chart: {chart}\n        image: {IMAGE}\n        deployment: {RELEASE}\n        \
             selector: app=problemsolver-webhook\n        values:\n          replicaCount: 2\n          allowInsecureTargets: true\n        \
             metrics:\n          service: problemsolver-webhook-metrics\n          port: 8001\n          \
             required: [webhook_deliveries_total, webhook_queue_depth, worker_health_status]\n        \
             canary:\n          deployment: {CANARY}\n          steps: [10, 60, 100]\n          bake: 30s\n          interval: 10s\n          \
             policy:\n            min_requests: 30\n            margin_absolute: 0.02\n",
            context = environment.kube_context,
            kubeconfig = environment.kubeconfig.as_ref().unwrap().display(),
            helm = environment.helm.as_ref().unwrap().display(),
            prometheus = environment.prometheus_url.as_ref().unwrap(),
            chart = chart.display(),
        );
        let config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(config.path(), text).unwrap();
        Self {
            namespace,
            database,
            admin_url,
            pool,
            config,
            client,
            traffic: None,
            stable_tag,
            new_tag,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_psctl"));
        command
            .args(args)
            .args([
                "--config",
                &self.config.path().display().to_string(),
                "--allow-no-audit",
                "--yes",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("NO_COLOR", "1")
            .env_remove("PSCTL_ENV")
            .env_remove("PSCTL_NAMESPACE");
        command
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
        Api::<Deployment>::namespaced(self.client.clone(), &self.namespace)
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

    async fn state(&self) -> Option<serde_json::Value> {
        let config_map = Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
            .get_opt("psctl-canary-webhook")
            .await
            .unwrap()?;
        serde_json::from_str(config_map.data?.get("state.json")?).ok()
    }

    async fn finish(mut self) {
        if let Some(traffic) = self.traffic.take() {
            traffic.abort();
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.namespace, &DeleteParams::default())
            .await;
        self.pool.close().await;
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.database
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

fn image_tag(revision: &serde_json::Value) -> &str {
    revision["image_tag"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_canary_goes_from_ten_to_a_hundred_and_is_promoted() {
    let mut bed = CanaryBed::new("healthy").await;
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
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_whose_deliveries_fail_is_aborted_and_stable_is_untouched() {
    let mut bed = CanaryBed::new("failing").await;
    bed.deploy_stable_and_start_traffic(8).await;
    let before = bed.history();
    // The new release's values refuse plain-HTTP private merchant endpoints (the sandbox sink
    // is one): every delivery the canary attempts fails, stable's keep succeeding.
    let values = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(values.path(), "allowInsecureTargets: false\n").unwrap();
    let new_tag = bed.new_tag.clone();
    let values_path = values.path().display().to_string();
    let (code, stdout, stderr) = bed.psctl(&[
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
    ]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
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
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_mid_step_is_resumed_from_its_recorded_step() {
    let mut bed = CanaryBed::new("resume").await;
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
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abort_from_another_terminal_reaches_the_live_run_through_its_state() {
    let mut bed = CanaryBed::new("remote-abort").await;
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
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if let Some(state) = bed.state().await
            && state["step_started_at"].is_i64()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "step 1 never started: {:?}",
            bed.state().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Another operator sees who drives the run, and asks it to abort.
    let (code, stdout, stderr) = bed.psctl(&["canary", "status"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("driven by: ") && stdout.contains("(canary webhook)"),
        "{stdout}"
    );
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
    bed.finish().await;
}
