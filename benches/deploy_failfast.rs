//! Benchmark of how fast `psctl deploy` gives up on a crashing release and how soon the
//! previous revision serves again, on the sandbox with the real service images.
//!
//! (a) `verdict_after_failing_status_s`: from the first failing container status of the new
//!     pods (waiting CrashLoopBackOff / ErrImagePull / ImagePullBackOff, or terminated), as seen
//!     by a watch of our own on the pods, to the `FAIL rollout` line on psctl's stderr. Target
//!     ≤ 10 s.
//! (b) `previous_serving_after_s`: from the start of the bad deploy to the Deployment serving
//!     the previous image again (template, every replica updated and available, every pod
//!     Ready). Target ≤ 60 s.
//!
//! Also `psctl history` wall time. Needs the sandbox (`eval "$(psctl-sandbox env)"`). Three
//! repetitions; the last line is `verdict_after_failing_status_s=<median>
//! previous_serving_after_s=<median>` (the maxima are on the line before).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::io::AsyncBufReadExt as _;

const REPETITIONS: usize = 3;
const DEPLOYMENT: &str = "problemsolver-webhook";
const SELECTOR: &str = "app=problemsolver-webhook";

fn main() {
    if std::env::var_os("PSCTL_CONFIG").is_none() {
        eprintln!(
            "benches/deploy_failfast: the sandbox is required: run `psctl-sandbox up` and `eval \"$(psctl-sandbox env)\"` first"
        );
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(bench());
}

/// The first failing container status of a pod running `tag`, if any: `reason` of a waiting
/// state the rollout can never leave by itself, or a terminated container.
fn failing_status(pod: &Pod, tag: &str) -> Option<String> {
    let runs_tag = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .is_some_and(|image| support::cluster::tag_of(image) == tag);
    if !runs_tag {
        return None;
    }
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|status| {
        let state = status.state.as_ref()?;
        if let Some(waiting) = &state.waiting
            && let Some(reason) = waiting.reason.as_deref()
            && matches!(
                reason,
                "CrashLoopBackOff" | "ErrImagePull" | "ImagePullBackOff"
            )
        {
            return Some(format!("waiting {reason}"));
        }
        if let Some(terminated) = &state.terminated {
            return Some(format!("terminated exit {}", terminated.exit_code));
        }
        status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| format!("last terminated exit {}", t.exit_code))
    })
}

struct Run {
    verdict_after_failing_status: f64,
    previous_serving_after: f64,
}

async fn one_run(sandbox: &support::Sandbox, config: &std::path::Path, crashes: &str) -> Run {
    // Our own watch of the pods: the first failing status of a pod of the bad release.
    let first_failure: Arc<Mutex<Option<(Instant, String)>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    let watch = {
        let first_failure = first_failure.clone();
        let crashes = crashes.to_owned();
        tokio::spawn(async move {
            let stream = watcher(pods, watcher::Config::default().labels(SELECTOR))
                .default_backoff()
                .applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(pod)) = stream.next().await {
                if let Some(status) = failing_status(&pod, &crashes) {
                    let mut first = first_failure.lock().unwrap();
                    if first.is_none() {
                        *first = Some((
                            Instant::now(),
                            format!("{}: {status}", pod.metadata.name.unwrap_or_default()),
                        ));
                    }
                }
            }
        })
    };
    // Let the watch's initial list settle so it sees the new pods from their creation.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let deploy = [
        "deploy",
        "--component",
        "webhook",
        "--tag",
        crashes,
        "--timeout",
        "3m",
        "--yes",
    ];
    let mut child = tokio::process::Command::from(sandbox.command(config, &deploy).into_command())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run psctl");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut verdict: Option<(Instant, String)> = None;
    let mut transcript = String::new();
    while let Some(line) = lines.next_line().await.expect("read psctl's stderr") {
        if verdict.is_none() && line.starts_with("FAIL rollout") {
            verdict = Some((Instant::now(), line.clone()));
        }
        transcript.push_str(&line);
        transcript.push('\n');
    }
    let status = child.wait().await.expect("psctl exits");
    assert_eq!(
        status.code(),
        Some(1),
        "the bad deploy should exit 1:\n{transcript}"
    );
    let serving_at = support::cluster::wait_serving(
        &sandbox.admin,
        &sandbox.namespace,
        DEPLOYMENT,
        SELECTOR,
        &sandbox.tag,
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|reason| panic!("the previous revision never served again: {reason}"));
    watch.abort();

    let (verdict_at, verdict_line) =
        verdict.unwrap_or_else(|| panic!("no `FAIL rollout` line:\n{transcript}"));
    let (failing_at, failing) = first_failure
        .lock()
        .unwrap()
        .clone()
        .expect("the watch saw a failing container status");
    let run = Run {
        verdict_after_failing_status: verdict_at
            .saturating_duration_since(failing_at)
            .as_secs_f64(),
        previous_serving_after: serving_at.duration_since(started).as_secs_f64(),
    };
    println!(
        "  first failing status at {:.1}s ({failing}); verdict at {:.1}s ({}); previous serving at {:.1}s",
        failing_at.saturating_duration_since(started).as_secs_f64(),
        verdict_at.duration_since(started).as_secs_f64(),
        verdict_line.chars().take(100).collect::<String>(),
        run.previous_serving_after,
    );
    run
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::MIN, f64::max)
}

async fn bench() {
    let sandbox = support::Sandbox::services("failfast").await;
    let config = sandbox.config("failfast", |_| {});
    sandbox.deploy(&config, &["webhook"]);
    let registry = sandbox.environment.registry.clone().unwrap();
    let crashes = tokio::task::spawn_blocking(move || {
        support::images::crashing_image(&registry, "problemsolver-webhook-worker")
    })
    .await
    .unwrap();

    let mut verdicts = Vec::new();
    let mut serving = Vec::new();
    for repetition in 1..=REPETITIONS {
        println!("run {repetition}: deploy of {crashes} (crashes at once)");
        let run = one_run(&sandbox, &config, &crashes).await;
        verdicts.push(run.verdict_after_failing_status);
        serving.push(run.previous_serving_after);
    }

    let mut history_walls = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let (code, _, stderr) = sandbox.psctl(&config, &["history", "webhook", "-o", "json"]);
        history_walls.push(started.elapsed().as_secs_f64());
        assert_eq!(code, 0, "{stderr}");
    }
    sandbox.finish().await;

    println!(
        "psctl history wall (5 runs, {} revisions): median {:.3}s, max {:.3}s",
        1 + 2 * REPETITIONS,
        median(&mut history_walls.clone()),
        max(&history_walls)
    );
    println!(
        "targets: verdict <= 10s after the first failing status, previous revision serving <= 60s after the deploy starts"
    );
    println!(
        "max: verdict_after_failing_status_s={:.1} previous_serving_after_s={:.1}",
        max(&verdicts),
        max(&serving)
    );
    println!(
        "verdict_after_failing_status_s={:.1} previous_serving_after_s={:.1}",
        median(&mut verdicts),
        median(&mut serving)
    );
}
