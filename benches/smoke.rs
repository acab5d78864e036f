//! Benchmark of `psctl smoke` on the sandbox: the wall time of the full suite without the
//! functional check (target ≤ 5 s), then the functional check's own duration (target: the
//! poller's poll interval, 10 s by default, plus 5 s).
//!
//! Needs the sandbox (`eval "$(psctl-sandbox env)"`): it deploys both services into a namespace
//! and database of its own, waits until the suite passes, then times five runs of the `psctl`
//! binary as an operator would run it. The last line is `smoke_wall_s=<median>`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

fn main() {
    if std::env::var_os("PSCTL_CONFIG").is_none() {
        eprintln!(
            "benches/smoke: the sandbox is required: run `psctl-sandbox up` and `eval \"$(psctl-sandbox env)\"` first"
        );
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let sandbox = support::Sandbox::services("bench").await;
    // The chart's default poll interval: the functional figure is the one production sees.
    let config = sandbox.config("bench", |environment| {
        let values = environment["components"]["poller"]["values"]
            .as_object_mut()
            .unwrap();
        values.remove("pollIntervalSecs");
    });
    sandbox.deploy(&config, &[]);
    let suite = [
        "smoke",
        "--only",
        "cluster",
        "metrics",
        "monitoring",
        "integrity",
        "-o",
        "json",
    ];
    let warm: Vec<&str> = suite.iter().copied().chain(["--wait", "90s"]).collect();
    let (code, stdout, stderr) = sandbox.psctl(&config, &warm);
    assert_eq!(
        code, 0,
        "the deployment never became healthy:\n{stdout}\n{stderr}"
    );

    let mut walls = Vec::new();
    for run in 1..=5 {
        let started = Instant::now();
        let (code, stdout, stderr) = sandbox.psctl(&config, &suite);
        let wall = started.elapsed();
        assert_eq!(code, 0, "run {run} failed:\n{stdout}\n{stderr}");
        let report = support::report(&stdout);
        println!(
            "run {run}: {} checks in {:.2}s wall ({} ms inside psctl)",
            report["summary"]["total"],
            wall.as_secs_f64(),
            report["duration_ms"]
        );
        walls.push(wall);
    }
    let mut functional = Vec::new();
    for run in 1..=3 {
        let (code, stdout, stderr) =
            sandbox.psctl(&config, &["smoke", "--only", "functional", "-o", "json"]);
        assert_eq!(code, 0, "functional run {run} failed:\n{stdout}\n{stderr}");
        let report = support::report(&stdout);
        let check = support::check(&report, "functional/deposit-to-paid");
        let ms = check["duration_ms"].as_u64().unwrap_or_default();
        println!(
            "functional run {run}: {:.2}s ({})",
            ms as f64 / 1000.0,
            check["evidence"]
        );
        functional.push(Duration::from_millis(ms));
    }
    sandbox.finish().await;
    walls.sort();
    let median = walls[walls.len() / 2];
    let worst = functional.iter().max().copied().unwrap_or_default();
    println!(
        "smoke_functional_max_s={:.2} (target: poll interval 10s + 5s = 15s)",
        worst.as_secs_f64()
    );
    println!("smoke_wall_s={:.2}", median.as_secs_f64());
}
