//! How `psctl deploy`'s cost grows with the number of components: the API requests of a deploy
//! of N components and its wall time, at N = 2, 10 and 20, on the sandbox (the Deployment
//! controller, the kubelet running Docker containers, the real Helm engine).
//!
//! Each component is a real workload configured in psctl.yaml alone, as another team's service
//! would be: the chart `benches/charts/small-service` (a Deployment with readiness and liveness
//! probes, and its metrics Service) with the small HTTP service of `tests/support/images.rs`
//! (`/ready`, and `/metrics` with `small_service_up`, which each component lists as required),
//! so psctl's post-deploy checks (pods Ready, the metrics endpoint read through the Service
//! proxy) judge it as they judge the problemsolver services. Per size, a namespace and a database
//! of its own ([`support::Sandbox`]) and psctl running as a ServiceAccount bound to the Role
//! `psctl rbac` prints for that configuration.
//!
//! Per size: a first deploy installs the N releases (printed as `install`, not part of the
//! growth); then every run deploys a new tag of the same image to all N components
//! (`psctl deploy --tag <new> --hold <hold> --yes`), a real rolling update of each, one after
//! another as psctl deploys them. A run is measured from outside psctl: `wall_s` from the instant
//! before spawning it to its exit; the requests are those the sandbox API server counted for the
//! ServiceAccount between a reset just before the spawn and the exit, which are psctl's and
//! the Helm children's (same kubeconfig, same identity) together. The User-Agent separates
//! them: `psctl/<version>` for psctl, Helm's engine its own, and `psctl-sandbox-helm/<version>`
//! for the sandbox `helm` CLI's edit of the release record (`--description`, which the real Helm
//! writes within the engine's own requests). Every run is checked: psctl exits 0 reporting every
//! component deployed and its rollout complete, and every Deployment, read by the administrator,
//! runs the new tag with all replicas updated, Ready and available.
//!
//! `cargo bench -p psctl --bench deploy_scaling` (or `cargo test -p psctl --bench
//! deploy_scaling -- --bench`) prints, per size, `deploy components=N requests=R (verb resource
//! count, ...) wall_s=W` (median of the runs; the breakdown is that of the run with the median
//! requests), the runs, the requests per client, the cost per component and where the time
//! went, then `scaling_deploy_requests=<growth>` (the growth classification of
//! `benches/shared/cost.rs`, shared with `benches/scaling.rs`). `-- --runs N`, `-- --sizes
//! 2,10,20` and `-- --hold 30s` (default `0s`: see docs/performance.md) change it. Run by `cargo
//! test -p psctl --bench deploy_scaling` (no `--bench` argument) it is the quick mode
//! `scripts/bench-quick.sh` runs: sizes 1 and 2, one run each. Needs the sandbox (`eval
//! "$(psctl-sandbox env)"`), Docker and `rustc` (to build the small service).

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "shared/cost.rs"]
mod cost;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use support::Sandbox;
use support::images::{self, SMALL_SERVICE_IMAGE};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/charts/small-service");
/// The small service's port (the chart's `port`).
const PORT: u16 = 8080;
/// The metric every component lists as required: its post-deploy check reads it.
const REQUIRED_METRIC: &str = "small_service_up";

struct Mode {
    runs: usize,
    sizes: Vec<u64>,
    hold: String,
}

fn mode() -> Mode {
    // `cargo bench` passes `--bench`; `cargo test --bench deploy_scaling` does not: quick mode.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|arg| arg == "--bench");
    let mut mode = if full {
        Mode {
            runs: 3,
            sizes: vec![2, 10, 20],
            hold: "0s".to_owned(),
        }
    } else {
        Mode {
            runs: 1,
            sizes: vec![1, 2],
            hold: "0s".to_owned(),
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
            "--sizes" => {
                mode.sizes = args
                    .next()
                    .expect("--sizes takes a comma-separated list")
                    .split(',')
                    .map(|n| {
                        n.parse()
                            .ok()
                            .filter(|n| *n > 0)
                            .expect("--sizes takes positive numbers")
                    })
                    .collect();
                mode.sizes.sort_unstable();
                mode.sizes.dedup();
            }
            "--hold" => {
                mode.hold = args
                    .next()
                    .expect("--hold takes a duration, e.g. 30s")
                    .clone();
            }
            _ => {}
        }
    }
    mode
}

fn main() {
    if std::env::var_os("PSCTL_CONFIG").is_none() {
        eprintln!(
            "benches/deploy_scaling: the sandbox is required: run `psctl-sandbox up` and `eval \"$(psctl-sandbox env)\"` first"
        );
        std::process::exit(2);
    }
    let mode = mode();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(bench(&mode));
}

/// One deploy, as measured.
struct Run {
    requests: cost::Requests,
    wall: Duration,
    /// When psctl started each component's Helm upgrade, and said its rollout was complete
    /// (after the hold), since the spawn.
    upgrades: Vec<Duration>,
    rollouts: Vec<Duration>,
}

async fn bench(mode: &Mode) {
    println!(
        "deploy_scaling: sizes {:?}, {} run(s) each, --hold {}",
        mode.sizes, mode.runs, mode.hold
    );
    let mut points = Vec::new();
    let mut tags: Option<Vec<String>> = None;
    for &size in &mode.sizes {
        let mut sandbox = Sandbox::builder(&format!("deploy-scaling-{size}"))
            .start()
            .await;
        // The image and one tag per deploy (the install and each run), pushed once.
        let tags = match &tags {
            Some(tags) => tags.clone(),
            None => {
                let registry = sandbox.registry.clone();
                let runs = mode.runs;
                let made = tokio::task::spawn_blocking(move || {
                    let base = images::small_service_image(&registry);
                    (0..=runs)
                        .map(|run| {
                            let tag = format!("{base}-deploy{run}");
                            images::retag(&registry, SMALL_SERVICE_IMAGE, &base, &tag);
                            tag
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .expect("the small service image");
                tags = Some(made.clone());
                made
            }
        };
        let config = configure(&sandbox, size);
        sandbox.grant_printed_for(&config).await;

        let install = deploy(&sandbox, &config, size, &tags[0], "0s").await;
        println!(
            "install components={size} requests={} ({}) wall_s={:.1}",
            install.requests.total(),
            install.requests.breakdown(),
            install.wall.as_secs_f64()
        );
        let mut runs = Vec::new();
        for tag in &tags[1..] {
            runs.push(deploy(&sandbox, &config, size, tag, &mode.hold).await);
        }
        points.push(report(size, &runs));
        sandbox.finish().await;
    }
    println!(
        "{}",
        cost::growth_line("deploy", "components", &points, None)
    );
}

/// `c01`..`cNN`: N components of the small service, each its own release, Deployment and
/// metrics Service, in psctl.yaml alone.
fn configure(sandbox: &Sandbox, size: u64) -> PathBuf {
    let mut environment = sandbox.connection();
    let components: serde_json::Map<String, Value> = (1..=size)
        .map(|index| {
            let name = format!("c{index:02}");
            let release = format!("small-{name}");
            let component = json!({
                "release": release,
                "chart": CHART,
                "image": SMALL_SERVICE_IMAGE,
                "deployment": release,
                "selector": format!("app={release}"),
                "metrics": {"service": format!("{release}-metrics"), "port": PORT, "path": "/metrics",
                            "required": [REQUIRED_METRIC]},
            });
            (name, component)
        })
        .collect();
    environment["components"] = Value::Object(components);
    sandbox.write_config(&format!("components-{size}"), environment)
}

/// `psctl deploy --tag TAG --hold HOLD` of every component, timed and counted; checked to have
/// deployed TAG everywhere.
async fn deploy(sandbox: &Sandbox, config: &Path, size: u64, tag: &str, hold: &str) -> Run {
    let user = format!(
        "system:serviceaccount:{}:{}",
        sandbox.namespace,
        support::sandbox::SERVICE_ACCOUNT
    );
    admin_request(&sandbox.admin, "DELETE", "/_sandbox/requests").await;
    let args = [
        "deploy",
        "--tag",
        tag,
        "--timeout",
        "5m",
        "--hold",
        hold,
        "-o",
        "json",
        "--yes",
    ];
    let started = Instant::now();
    let mut child = tokio::process::Command::from(sandbox.command(config, &args).into_command())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run psctl");
    let mut stdout = child.stdout.take().expect("stdout");
    let reading = tokio::spawn(async move {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text)
            .await
            .expect("read psctl's stdout");
        text
    });
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut transcript = String::new();
    let mut upgrades = Vec::new();
    let mut rollouts = Vec::new();
    while let Some(line) = lines.next_line().await.expect("read psctl's stderr") {
        let step = line.trim_start();
        if step.starts_with("deploying ") {
            upgrades.push(started.elapsed());
        } else if step.starts_with("ok rollout ") {
            rollouts.push(started.elapsed());
        }
        transcript.push_str(&line);
        transcript.push('\n');
    }
    let status = child.wait().await.expect("psctl exits");
    let wall = started.elapsed();
    let stdout = reading.await.expect("stdout reader");
    let requests = cost::Requests::from_report(
        &admin_request(
            &sandbox.admin,
            "GET",
            &format!("/_sandbox/requests?user={user}"),
        )
        .await,
    );
    assert!(
        status.success(),
        "psctl deploy --tag {tag} of {size} components: {status}\n{stdout}\n{transcript}"
    );

    // psctl's own verdict, then the cluster's.
    let report = support::report(&stdout);
    let components = report["components"].as_array().expect("components");
    assert_eq!(components.len() as u64, size, "{report:#}");
    for component in components {
        assert_eq!(component["result"], "deployed", "{report:#}");
        assert_eq!(component["rollout"]["outcome"], "complete", "{report:#}");
    }
    let deployments: Api<Deployment> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    for index in 1..=size {
        let name = format!("small-c{index:02}");
        let deployment = deployments.get(&name).await.expect("the Deployment");
        let spec = deployment.spec.as_ref().expect("spec");
        let image = spec.template.spec.as_ref().expect("pod spec").containers[0]
            .image
            .clone()
            .unwrap_or_default();
        assert!(image.ends_with(&format!(":{tag}")), "{name} runs {image}");
        let status = deployment.status.as_ref().expect("status");
        let replicas = spec.replicas.unwrap_or(1);
        assert_eq!(
            status.observed_generation, deployment.metadata.generation,
            "{name}: {status:?}"
        );
        for (what, count) in [
            ("updated", status.updated_replicas),
            ("ready", status.ready_replicas),
            ("available", status.available_replicas),
            ("total", status.replicas),
        ] {
            assert_eq!(count, Some(replicas), "{name}: {what} replicas: {status:?}");
        }
    }
    assert_eq!(upgrades.len() as u64, size, "{transcript}");
    assert_eq!(rollouts.len() as u64, size, "{transcript}");
    Run {
        requests,
        wall,
        upgrades,
        rollouts,
    }
}

/// Prints the size's figures; returns its point of the curve.
fn report(size: u64, runs: &[Run]) -> cost::Point {
    let mut by_requests: Vec<&Run> = runs.iter().collect();
    by_requests.sort_by_key(|run| run.requests.total());
    let median = by_requests[by_requests.len() / 2];
    let mut walls: Vec<Duration> = runs.iter().map(|run| run.wall).collect();
    walls.sort();
    let wall = walls[walls.len() / 2];
    let requests = median.requests.total();
    println!(
        "deploy components={size} requests={requests} ({}) wall_s={:.1}",
        median.requests.breakdown(),
        wall.as_secs_f64()
    );
    println!(
        "  runs: requests {}; wall_s {}",
        runs.iter()
            .map(|run| run.requests.total().to_string())
            .collect::<Vec<_>>()
            .join("/"),
        runs.iter()
            .map(|run| format!("{:.1}", run.wall.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("/")
    );
    for client in median.requests.clients() {
        let theirs = median.requests.of_clients(|agent| agent == client);
        let name = if client.is_empty() {
            "(no User-Agent)"
        } else {
            &client
        };
        println!(
            "  client {name}: {} ({})",
            theirs.total(),
            theirs.breakdown()
        );
    }
    assert!(
        median
            .requests
            .clients()
            .iter()
            .any(|agent| agent == psctl::cluster::USER_AGENT),
        "psctl's requests carry its User-Agent"
    );
    #[allow(clippy::cast_precision_loss)]
    let per_component = requests as f64 / size as f64;
    // Where the time went, medians over the runs: to the first Helm upgrade (preflight, Lease,
    // releases, registry), then per component from its upgrade to its rollout verdict (Helm,
    // the rollout, the hold) and from that verdict to the next component's upgrade (the
    // post-deploy checks, the audit and the Event), and from the last verdict to the exit.
    let seconds = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let mut preflight: Vec<f64> = runs
        .iter()
        .map(|run| run.upgrades[0].as_secs_f64())
        .collect();
    let mut rollout = Vec::new();
    let mut verify = Vec::new();
    for run in runs {
        for index in 0..run.upgrades.len() {
            rollout.push((run.rollouts[index] - run.upgrades[index]).as_secs_f64());
            let next = run.upgrades.get(index + 1).copied().unwrap_or(run.wall);
            verify.push((next - run.rollouts[index]).as_secs_f64());
        }
    }
    println!(
        "  per component: requests {per_component:.1}, wall_s {:.1}; preflight_s {:.1}, upgrade_to_rollout_complete_s {:.1}, rollout_complete_to_next_s {:.1} (medians)",
        wall.as_secs_f64() / size as f64,
        seconds(&mut preflight),
        seconds(&mut rollout),
        seconds(&mut verify),
    );
    // In deploy order, for the run of median wall time: a time that grows along the run would
    // be psctl accumulating work, one that grows with the size alone the cluster's load.
    let mut by_wall: Vec<&Run> = runs.iter().collect();
    by_wall.sort_by_key(|run| run.wall);
    let middle = by_wall[by_wall.len() / 2];
    println!(
        "  upgrade_to_rollout_complete_s in deploy order: {}",
        middle
            .upgrades
            .iter()
            .zip(&middle.rollouts)
            .map(|(upgrade, rollout)| format!("{:.1}", (*rollout - *upgrade).as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    cost::Point {
        size,
        requests,
        wall,
    }
}

/// A `/_sandbox/` request as the sandbox administrator.
async fn admin_request(admin: &kube::Client, method: &str, uri: &str) -> Value {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Vec::new())
        .expect("request");
    let text = admin
        .request_text(request)
        .await
        .expect("the administrator reaches /_sandbox/requests");
    serde_json::from_str(&text).expect("JSON")
}
