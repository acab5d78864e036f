//! How fast `psctl deploy` gives up on a bad release, and how soon the previous revision serves
//! again as a client of the Service sees it, on the sandbox with the real service images.
//!
//! The webhook worker (2 replicas) runs with `maxSurge: 0, maxUnavailable: 1`, so the rollout
//! really stops one old pod before the new one is up; the benchmark checks that the previous
//! revision's backends did drop below 2 in every run. Four kinds of bad release:
//!
//! - `crash_on_start`: the service binary is `/bin/false` (exit 1 at once);
//! - `crash_after_20s`: the real worker under a small supervisor that kills it and exits 1 after
//!   20 s, so the pod is Ready and serves for 20 s first: the rollout is complete before the
//!   crash, and only deploy's hold (`--hold 30s`, psctl's default) sees it;
//! - `image_pull`: a tag whose manifest is in the registry (so deploy's preflight passes) but
//!   one of whose layers is not (deleted through the registry API), so the pull fails:
//!   ErrImagePull, then ImagePullBackOff;
//! - `never_ready`: the real worker with a readiness probe on a path it answers 404.
//!
//! Every time is measured here, outside psctl, from `started`: the instant before
//! `psctl deploy` is spawned. Per run:
//!
//! - `verdict_s`: `started` → psctl's failure verdict, the `FAIL rollout` line, as this
//!   benchmark reads it from psctl's stderr pipe (what an operator at the terminal sees; psctl
//!   writes each line unbuffered). It counts only when psctl then exits 1: a run where psctl
//!   exits 0 has no verdict (`none`).
//! - `exit_s`: `started` → psctl's exit 1 (what a CI step sees). psctl exits after it has rolled
//!   back and tracked the rollback to completion, so this includes the recovery.
//! - `first_failing_s`: `started` → the first failing status, as our own watch receives it: a
//!   new pod's container waiting in CrashLoopBackOff / ErrImagePull / ImagePullBackOff /
//!   CreateContainer*Error, or terminated (now or as its last state), or the Deployment's
//!   `Progressing` condition turning `ProgressDeadlineExceeded` (the only failing status Kubernetes
//!   gives a pod that never becomes ready).
//! - `verdict_after_failing_status_s`: `verdict_s` − `first_failing_s`; negative when psctl
//!   spoke first, `before` when Kubernetes never reported a failing status in the run (psctl's
//!   `--timeout` fired before the Deployment's progress deadline and rolled back).
//! - `previous_serving_s`: `started` → the previous revision serving again as a client of the
//!   Service sees it. A probe polls every 200 ms for the whole run, from before the deploy until
//!   the end: it sends `GET /ready` through the API server's Service proxy
//!   (`services/problemsolver-webhook-metrics:metrics/proxy/ready`), and reads the Service's
//!   Endpoints (the backends kube-proxy routes to) and sends `GET /ready` to each ready address.
//!   A sample is "previous serving" when the proxied request succeeded, the Service has as many
//!   ready backends as replicas, every one a pod of the previous revision (its
//!   `pod-template-hash`, read from the pod name), and every one answered 200. The figure is the
//!   first sample of the streak of such samples that lasts to the end of the run (at least 5 s
//!   after psctl exits), after the first sample that was not. `none` when it never came back.
//!
//! Targets (medians): verdict ≤ 10 s after the first failing status; for a crash on start also
//! ≤ 30 s after the deploy starts; previous revision serving ≤ 60 s after the deploy starts
//! (`exit_s` has none: it is the recovery, which `previous_serving_s` judges). The
//! benchmark exits 1 when a median misses its target (in the full mode).
//!
//! `cargo bench -p psctl --bench deploy_failfast` runs every kind 5 times; `-- --runs N` and
//! `-- --kinds crash_on_start,image_pull` change that. Run by `cargo test -p psctl --bench
//! deploy_failfast` (no `--bench` argument) it is the quick mode `scripts/bench-quick.sh` uses:
//! one run each of `crash_on_start` and `image_pull`, figures printed, targets not judged. Needs the
//! sandbox (`eval "$(psctl-sandbox env)"`), Docker and `rustc` (to build the supervisor). The
//! last lines are `<kind>_<figure>=<median>` for every kind and figure.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::io::AsyncBufReadExt as _;

const DEPLOYMENT: &str = "problemsolver-webhook";
const SELECTOR: &str = "app=problemsolver-webhook";
const SERVICE: &str = "problemsolver-webhook-metrics";
const IMAGE: &str = "problemsolver-webhook-worker";
const REPLICAS: usize = 2;
/// How long the `crash_after_20s` worker serves before its supervisor kills it.
const CRASH_AFTER_SECS: u64 = 20;
/// `psctl deploy --hold`: psctl's default (`deploy_hold` unset in psctl.yaml), said explicitly
/// because the tests' configurations turn the hold off.
const HOLD: &str = "30s";
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// The previous revision must keep serving this long for the run to end.
const STABLE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    CrashOnStart,
    CrashAfter20s,
    ImagePull,
    NeverReady,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::CrashOnStart,
        Kind::CrashAfter20s,
        Kind::ImagePull,
        Kind::NeverReady,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::CrashOnStart => "crash_on_start",
            Kind::CrashAfter20s => "crash_after_20s",
            Kind::ImagePull => "image_pull",
            Kind::NeverReady => "never_ready",
        }
    }

    fn parse(name: &str) -> Kind {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .unwrap_or_else(|| {
                eprintln!(
                    "benches/deploy_failfast: unknown kind `{name}`; kinds: crash_on_start, crash_after_20s, image_pull, never_ready"
                );
                std::process::exit(2)
            })
    }
}

struct Mode {
    full: bool,
    runs: usize,
    kinds: Vec<Kind>,
}

fn mode() -> Mode {
    // `cargo bench` passes `--bench`; `cargo test --bench deploy_failfast` does not: quick mode.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|arg| arg == "--bench");
    let mut mode = if full {
        Mode {
            full,
            runs: 5,
            kinds: Kind::ALL.to_vec(),
        }
    } else {
        Mode {
            full,
            runs: 1,
            kinds: vec![Kind::CrashOnStart, Kind::ImagePull],
        }
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                mode.runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .expect("--runs takes a positive number");
            }
            "--kinds" => {
                mode.kinds = args
                    .next()
                    .expect("--kinds takes a comma-separated list")
                    .split(',')
                    .map(Kind::parse)
                    .collect();
            }
            _ => {}
        }
    }
    mode
}

fn main() {
    if std::env::var_os("PSCTL_CONFIG").is_none() {
        eprintln!(
            "benches/deploy_failfast: the sandbox is required: run `psctl-sandbox up` and `eval \"$(psctl-sandbox env)\"` first"
        );
        std::process::exit(2);
    }
    let mode = mode();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let missed = runtime.block_on(bench(&mode));
    if mode.full && missed {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Images

/// `<registry>/problemsolver-webhook-worker:pull-fails-<random>`: pushed, then its last layer
/// (one of its own, random content, shared with no other image) deleted from the registry and
/// the image removed from Docker's local store. The manifest is served; the pull fails.
async fn broken_pull_image(registry: &str) -> String {
    let tag = format!("pull-fails-{:016x}", rand::random::<u64>());
    let reference = format!("{registry}/{IMAGE}:{tag}");
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("layer"),
        format!("{:032x}", rand::random::<u128>()),
    )
    .unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {registry}/psctl-base:bookworm\nCOPY layer /layer\n"),
    )
    .unwrap();
    let path = context.path().display().to_string();
    for (args, what) in [
        (vec!["build", "-q", "-t", &reference, &path], "docker build"),
        (vec!["push", "-q", &reference], "docker push"),
        (vec!["rmi", &reference], "docker rmi"),
    ] {
        support::images::run(
            Command::new("docker").args(&args),
            &format!("{what} of the pull-fails image"),
        );
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";
    let manifest = |reference: String| {
        let http = http.clone();
        async move {
            let response = http
                .get(format!(
                    "http://{registry}/v2/{IMAGE}/manifests/{reference}"
                ))
                .header("Accept", accept)
                .send()
                .await
                .expect("the registry answers");
            assert!(response.status().is_success(), "manifest of {reference}");
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let mut body = manifest(tag.clone()).await;
    if let Some(manifests) = body["manifests"].as_array() {
        let image = manifests
            .iter()
            .find(|m| m["platform"]["architecture"] != "unknown")
            .expect("an image manifest in the index");
        body = manifest(image["digest"].as_str().unwrap().to_owned()).await;
    }
    let layer = body["layers"]
        .as_array()
        .and_then(|layers| layers.last())
        .and_then(|layer| layer["digest"].as_str())
        .expect("the manifest lists its layers")
        .to_owned();
    let response = http
        .delete(format!("http://{registry}/v2/{IMAGE}/blobs/{layer}"))
        .send()
        .await
        .expect("the registry answers");
    assert!(
        response.status().is_success(),
        "deleting layer {layer}: {}",
        response.status()
    );
    tag
}

// ---------------------------------------------------------------------------------------------
// Observation

/// The `pod-template-hash` in a pod name `<deployment>-<hash>-<suffix>`.
fn template_hash(pod: &str) -> Option<&str> {
    let rest = pod.strip_prefix(DEPLOYMENT)?.strip_prefix('-')?;
    let (hash, _) = rest.rsplit_once('-')?;
    (!hash.contains('-')).then_some(hash)
}

/// One probe of the Service.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    proxied_ok: bool,
    /// Each ready backend: its pod's template hash and whether it answered 200.
    backends: Vec<(String, bool)>,
}

impl Sample {
    fn previous_serving(&self, previous: &str) -> bool {
        self.proxied_ok
            && self.backends.len() == REPLICAS
            && self
                .backends
                .iter()
                .all(|(hash, ok)| *ok && hash == previous)
    }

    fn previous_backends(&self, previous: &str) -> usize {
        self.backends
            .iter()
            .filter(|(hash, ok)| *ok && hash == previous)
            .count()
    }
}

async fn probe(client: &kube::Client, http: &reqwest::Client, namespace: &str) -> Sample {
    let at = Instant::now();
    let request = http::Request::get(format!(
        "/api/v1/namespaces/{namespace}/services/{SERVICE}:metrics/proxy/ready"
    ))
    .body(Vec::new())
    .unwrap();
    let proxied = tokio::time::timeout(Duration::from_secs(2), client.request_text(request));
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), namespace);
    let (proxied, endpoints) = tokio::join!(proxied, endpoints.get_opt(SERVICE));
    let proxied_ok = matches!(proxied, Ok(Ok(_)));
    let mut targets = Vec::new();
    for subset in endpoints
        .ok()
        .flatten()
        .and_then(|e| e.subsets)
        .unwrap_or_default()
    {
        let Some(port) = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("metrics"))
            .map(|p| p.port)
        else {
            continue;
        };
        for address in subset.addresses.iter().flatten() {
            let pod = address
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_default();
            let hash = template_hash(&pod).unwrap_or("?").to_owned();
            targets.push((hash, format!("http://{}:{port}/ready", address.ip)));
        }
    }
    let answers = futures::future::join_all(targets.iter().map(|(_, url)| {
        let request = http.get(url).timeout(Duration::from_secs(1)).send();
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    }))
    .await;
    Sample {
        at,
        proxied_ok,
        backends: targets
            .into_iter()
            .zip(answers)
            .map(|((hash, _), ok)| (hash, ok))
            .collect(),
    }
}

/// Probes every [`PROBE_INTERVAL`] into `samples` until aborted.
fn spawn_probe(
    client: kube::Client,
    namespace: String,
    samples: Arc<Mutex<Vec<Sample>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        loop {
            let sample = probe(&client, &http, &namespace).await;
            let next = sample.at + PROBE_INTERVAL;
            samples.lock().unwrap().push(sample);
            tokio::time::sleep_until(next.into()).await;
        }
    })
}

/// A failing status of a new pod: a waiting reason the rollout cannot leave by itself, or a
/// terminated container (now or as its last state).
fn failing_status(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|status| {
        let state = status.state.as_ref();
        if let Some(reason) = state
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
            && matches!(
                reason,
                "CrashLoopBackOff"
                    | "ErrImagePull"
                    | "ImagePullBackOff"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
                    | "RunContainerError"
            )
        {
            return Some(format!("waiting {reason}"));
        }
        if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
            return Some(format!("terminated exit {}", terminated.exit_code));
        }
        status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| format!("last state terminated exit {}", t.exit_code))
    })
}

fn deadline_exceeded(deployment: &Deployment) -> bool {
    deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
        })
}

type First = Arc<Mutex<Option<(Instant, String)>>>;

fn record(first: &First, what: String) {
    let mut first = first.lock().unwrap();
    if first.is_none() {
        *first = Some((Instant::now(), what));
    }
}

/// Our own watches of the pods and the Deployment, recording the first failing status of a pod
/// that is not `previous`'s and did not exist before, or the Deployment's deadline condition.
/// Returns once both watches have delivered their initial list.
async fn spawn_failure_watch(
    client: &kube::Client,
    namespace: &str,
    previous: &str,
    first: First,
) -> tokio::task::JoinHandle<()> {
    let pods = watcher(
        Api::<Pod>::namespaced(client.clone(), namespace),
        watcher::Config::default().labels(SELECTOR),
    )
    .default_backoff();
    let deployments = watcher(
        Api::<Deployment>::namespaced(client.clone(), namespace),
        watcher::Config::default().fields(&format!("metadata.name={DEPLOYMENT}")),
    )
    .default_backoff();
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
    let previous = previous.to_owned();
    let task = tokio::spawn(async move {
        let mut pods = std::pin::pin!(pods);
        let mut deployments = std::pin::pin!(deployments);
        let mut existing: HashSet<String> = HashSet::new();
        let (mut pods_listed, mut deployments_listed) = (false, false);
        let mut listed_tx = Some(listed_tx);
        loop {
            tokio::select! {
                Some(event) = pods.next() => match event {
                    Ok(watcher::Event::InitApply(pod)) if !pods_listed => {
                        existing.insert(pod.metadata.uid.clone().unwrap_or_default());
                    }
                    Ok(watcher::Event::InitDone) => pods_listed = true,
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let new = template_hash(&name) != Some(previous.as_str())
                            && pod.metadata.deletion_timestamp.is_none()
                            && !existing.contains(pod.metadata.uid.as_deref().unwrap_or_default());
                        if new && let Some(status) = failing_status(&pod) {
                            record(&first, format!("{name}: {status}"));
                        }
                    }
                    _ => {}
                },
                Some(event) = deployments.next() => match event {
                    Ok(watcher::Event::InitDone) => deployments_listed = true,
                    Ok(watcher::Event::Apply(deployment)) if deadline_exceeded(&deployment) => {
                        record(&first, "Deployment: ProgressDeadlineExceeded".to_owned());
                    }
                    _ => {}
                },
                else => return,
            }
            if pods_listed
                && deployments_listed
                && let Some(tx) = listed_tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    listed_rx
        .await
        .expect("the watches deliver their initial lists");
    task
}

/// The previous revision's template hash, once the Service has exactly [`REPLICAS`] ready
/// backends of one revision, every one answering, and no other pod of the Deployment exists.
async fn settled(sandbox: &support::Sandbox) -> String {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let pods = Api::<Pod>::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let sample = probe(&sandbox.admin, &http, &sandbox.namespace).await;
        let hashes: HashSet<&str> = sample.backends.iter().map(|(h, _)| h.as_str()).collect();
        if let [hash] = hashes.into_iter().collect::<Vec<_>>().as_slice()
            && sample.previous_serving(hash)
            && let Ok(list) = pods
                .list(&kube::api::ListParams::default().labels(SELECTOR))
                .await
            && list.items.len() == REPLICAS
        {
            return (*hash).to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the previous revision did not settle: {sample:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// One run

#[derive(Debug, Clone, Default)]
struct Run {
    /// The `FAIL rollout` line, when psctl then exited 1.
    verdict: Option<f64>,
    /// psctl's exit 1.
    exit: Option<f64>,
    first_failing: Option<f64>,
    previous_serving: Option<f64>,
    /// The fewest previous-revision backends answering during the run.
    fewest_previous: usize,
    proxied_errors: usize,
    samples: usize,
}

impl Run {
    /// `verdict − first_failing`; `−∞` (shown `before`) when psctl gave its verdict and
    /// Kubernetes never reported a failing status at all (psctl's `--timeout` fired before the
    /// Deployment's progress deadline, and its rollback made the deadline moot).
    fn verdict_after_failing_status(&self) -> Option<f64> {
        let verdict = self.verdict?;
        Some(match self.first_failing {
            Some(first_failing) => verdict - first_failing,
            None => f64::NEG_INFINITY,
        })
    }
}

async fn one_run(sandbox: &support::Sandbox, config: &Path, kind: Kind, tag: &str) -> Run {
    let previous = settled(sandbox).await;
    let first: First = Arc::default();
    let watch =
        spawn_failure_watch(&sandbox.admin, &sandbox.namespace, &previous, first.clone()).await;
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let probe = spawn_probe(
        sandbox.admin.clone(),
        sandbox.namespace.clone(),
        samples.clone(),
    );
    // The probe's first sample shows the previous revision serving before anything changes.
    loop {
        if let Some(sample) = samples.lock().unwrap().first() {
            assert!(
                sample.previous_serving(&previous),
                "the previous revision does not serve before the deploy: {sample:?}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let deploy = [
        "deploy",
        "--component",
        "webhook",
        "--tag",
        tag,
        "--hold",
        HOLD,
        "--yes",
    ];
    let mut child = tokio::process::Command::from(sandbox.command(config, &deploy).into_command())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run psctl");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut fail_line: Option<(Instant, String)> = None;
    let mut transcript = String::new();
    // When psctl said what it was doing: where the time between start and exit goes.
    let mut timeline = Vec::new();
    while let Some(line) = lines.next_line().await.expect("read psctl's stderr") {
        if fail_line.is_none() && line.starts_with("FAIL rollout") {
            fail_line = Some((Instant::now(), line.clone()));
        }
        let step = line.trim_start();
        for (prefix, name) in [
            ("deploying ", "helm upgrade"),
            ("ok rollout ", "rollout complete"),
            ("FAIL rollout ", "FAIL rollout"),
            ("rolling back ", "helm rollback"),
            ("ok rollback ", "rollback complete"),
        ] {
            if step.starts_with(prefix) {
                timeline.push(format!("{name} {:.1}s", started.elapsed().as_secs_f64()));
            }
        }
        transcript.push_str(&line);
        transcript.push('\n');
    }
    let status = child.wait().await.expect("psctl exits");
    let exited = Instant::now();
    let code = status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "psctl deploy exited {code:?}:\n{transcript}"
    );

    // Observe until the previous revision has served for STABLE after psctl's exit, or, when
    // psctl reported success, until the bad release has shown its failure and the target has
    // passed (the previous revision cannot come back by itself then).
    let give_up = if code == Some(1) {
        exited + Duration::from_secs(120)
    } else {
        started + Duration::from_secs(75)
    };
    loop {
        let done = {
            let samples = samples.lock().unwrap();
            let streak_from = samples
                .iter()
                .rposition(|s| !s.previous_serving(&previous))
                .map_or(0, |i| i + 1);
            samples.get(streak_from).is_some_and(|start| {
                samples.last().is_some_and(|last| {
                    last.at >= exited + STABLE && last.at.duration_since(start.at) >= STABLE
                })
            })
        };
        if done || Instant::now() >= give_up {
            break;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    probe.abort();
    watch.abort();

    let samples = samples.lock().unwrap().clone();
    let since = |at: Instant| at.saturating_duration_since(started).as_secs_f64();
    let first_broken = samples
        .iter()
        .position(|s| s.at >= started && !s.previous_serving(&previous));
    let streak_from = samples
        .iter()
        .rposition(|s| !s.previous_serving(&previous))
        .map(|i| i + 1);
    let previous_serving = match (first_broken, streak_from) {
        (Some(broken), Some(from)) if from > broken && from < samples.len() => {
            let stable = samples.last().unwrap().at.duration_since(samples[from].at) >= STABLE;
            stable.then(|| since(samples[from].at))
        }
        _ => None,
    };
    let fewest_previous = samples
        .iter()
        .filter(|s| s.at >= started)
        .map(|s| s.previous_backends(&previous))
        .min()
        .unwrap_or(0);
    assert!(
        first_broken.is_some() && fewest_previous < REPLICAS,
        "the old pods never stopped during the rollout (maxUnavailable > 0 expected)"
    );
    let first_failing = first.lock().unwrap().clone();
    let run = Run {
        verdict: fail_line
            .as_ref()
            .filter(|_| code == Some(1))
            .map(|(at, _)| since(*at)),
        exit: (code == Some(1)).then(|| since(exited)),
        first_failing: first_failing.as_ref().map(|(at, _)| since(*at)),
        previous_serving,
        fewest_previous,
        proxied_errors: samples
            .iter()
            .filter(|s| s.at >= started && !s.proxied_ok)
            .count(),
        samples: samples.iter().filter(|s| s.at >= started).count(),
    };
    let show = |value: Option<f64>| value.map_or_else(|| "none".to_owned(), |v| format!("{v:.1}s"));
    println!(
        "  {}: psctl exit {} at {:.1}s (FAIL line {}), first failing status {} ({}), previous serving again {}; previous backends fell to {} of {REPLICAS}; {} of {} proxied requests failed",
        kind.name(),
        code.unwrap_or(-1),
        since(exited),
        show(fail_line.as_ref().map(|(at, _)| since(*at))),
        show(run.first_failing),
        first_failing.map_or_else(|| "none seen".to_owned(), |(_, what)| what),
        show(run.previous_serving),
        run.fewest_previous,
        run.proxied_errors,
        run.samples,
    );
    println!("    psctl: {}", timeline.join(", "));
    if let Some((_, line)) = &fail_line {
        println!("    {}", line.chars().take(160).collect::<String>());
    }
    if code == Some(0) {
        // psctl reported success: put the previous revision back for the next run.
        let (code, stdout, stderr) = sandbox.psctl(config, &["rollback", "webhook"]);
        assert_eq!(
            code, 0,
            "restoring the previous revision:\n{stdout}\n{stderr}"
        );
    }
    run
}

// ---------------------------------------------------------------------------------------------
// Figures

/// min, median, max; a missing value (no verdict, never serving again) counts as infinite.
fn spread(values: &[Option<f64>]) -> (f64, f64, f64) {
    let mut sorted: Vec<f64> = values.iter().map(|v| v.unwrap_or(f64::INFINITY)).collect();
    sorted.sort_by(f64::total_cmp);
    (
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    )
}

fn seconds(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.1}")
    } else if value < 0.0 {
        "before".to_owned()
    } else {
        "none".to_owned()
    }
}

struct Figure {
    name: &'static str,
    value: fn(&Run) -> Option<f64>,
    target: fn(Kind) -> Option<f64>,
}

const FIGURES: [Figure; 5] = [
    Figure {
        name: "verdict_s",
        value: |run| run.verdict,
        target: |kind| (kind == Kind::CrashOnStart).then_some(30.0),
    },
    Figure {
        name: "verdict_after_failing_status_s",
        value: Run::verdict_after_failing_status,
        target: |_| Some(10.0),
    },
    Figure {
        name: "exit_s",
        value: |run| run.exit,
        target: |_| None,
    },
    Figure {
        name: "first_failing_s",
        value: |run| run.first_failing,
        target: |_| None,
    },
    Figure {
        name: "previous_serving_s",
        value: |run| run.previous_serving,
        target: |_| Some(60.0),
    },
];

async fn bench(mode: &Mode) -> bool {
    let sandbox = support::Sandbox::services("failfast").await;
    let strategy = serde_json::json!({
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    });
    let good = sandbox.config("failfast", |environment| {
        environment["components"]["webhook"]["values"]["strategy"] = strategy.clone();
    });
    let never_ready = sandbox.config("failfast-never-ready", |environment| {
        let values = &mut environment["components"]["webhook"]["values"];
        values["strategy"] = strategy.clone();
        values["readinessProbe"] = serde_json::json!({"httpGet": {"path": "/never-ready"}});
    });
    sandbox.deploy(&good, &["webhook"]);

    let registry = sandbox.registry.clone();
    let mut plans = Vec::new();
    for kind in &mode.kinds {
        let tag = match kind {
            Kind::CrashOnStart => {
                let registry = registry.clone();
                tokio::task::spawn_blocking(move || {
                    support::images::crashing_image(&registry, IMAGE)
                })
                .await
                .unwrap()
            }
            Kind::CrashAfter20s => {
                let (registry, base) = (registry.clone(), sandbox.tag.clone());
                tokio::task::spawn_blocking(move || {
                    support::images::crashes_after_image(&registry, IMAGE, &base, CRASH_AFTER_SECS)
                })
                .await
                .unwrap()
            }
            Kind::ImagePull => broken_pull_image(&registry).await,
            Kind::NeverReady => sandbox.tag.clone(),
        };
        let config = if *kind == Kind::NeverReady {
            never_ready.clone()
        } else {
            good.clone()
        };
        plans.push((*kind, tag, config));
    }

    let mut results: Vec<(Kind, Vec<Run>)> = Vec::new();
    for (kind, tag, config) in &plans {
        let mut runs = Vec::new();
        for run in 1..=mode.runs {
            println!("{} run {run}/{}: deploy of {tag}", kind.name(), mode.runs);
            runs.push(one_run(&sandbox, config, *kind, tag).await);
        }
        results.push((*kind, runs));
    }
    sandbox.finish().await;

    println!(
        "\n{} run(s) per kind; seconds from the start of `psctl deploy` (min / median / max); `none` = never; `before` = psctl's verdict came and Kubernetes never reported a failing status",
        mode.runs
    );
    let mut missed = Vec::new();
    let mut last_lines = Vec::new();
    for (kind, runs) in &results {
        for figure in &FIGURES {
            let values: Vec<Option<f64>> = runs.iter().map(figure.value).collect();
            let (min, median, max) = spread(&values);
            let target = (figure.target)(*kind);
            let verdict = match target {
                Some(target) if median <= target => format!("target ≤ {target:.0}s met"),
                Some(target) => {
                    missed.push(format!("{}_{}", kind.name(), figure.name));
                    format!("target ≤ {target:.0}s MISSED")
                }
                None => String::new(),
            };
            println!(
                "{:<16} {:<31} {:>6} / {:>6} / {:>6}  {verdict}",
                kind.name(),
                figure.name,
                seconds(min),
                seconds(median),
                seconds(max)
            );
            last_lines.push(format!(
                "{}_{}={}",
                kind.name(),
                figure.name,
                seconds(median)
            ));
        }
    }
    println!(
        "anchors: `kubectl rollout status` reports a failure at the Deployment's progressDeadlineSeconds (600s by default; no timeout of its own by default), `helm upgrade --wait` gives up after --timeout (300s by default)"
    );
    if missed.is_empty() {
        println!("every target met");
    } else if mode.full {
        println!("targets missed: {}", missed.join(", "));
    } else {
        println!(
            "targets missed (not judged in the quick mode): {}",
            missed.join(", ")
        );
    }
    for line in last_lines {
        println!("{line}");
    }
    !missed.is_empty()
}
