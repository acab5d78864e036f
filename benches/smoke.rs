//! Benchmark of `psctl smoke` on the sandbox, every figure the wall time of the `psctl` process
//! as an operator sees it (spawn to exit, measured here, outside psctl):
//!
//! - `smoke_wall_s`: the full suite without the functional check (`--only cluster metrics
//!   monitoring integrity`, which is how the functional check is left out), median of five runs;
//!   target ≤ 5 s.
//! - `smoke_full_wall_s`: the full suite with the functional check (no `--only`), median of three
//!   runs; the checks run concurrently, so the target is the functional check's: the poller's
//!   poll interval (10 s by default) plus 5 s.
//! - `smoke_functional_max_s`: the longest functional check of those three runs, as the report
//!   states it (from inside psctl), for comparison.
//!
//! Needs the sandbox (`eval "$(psctl-sandbox env)"`): it deploys both services into a namespace
//! and database of its own, waits until the suite passes, then times the runs. The last lines
//! are `smoke_functional_max_s=<max>`, `smoke_full_wall_s=<median>` and `smoke_wall_s=<median>`.

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
    let mut full_walls = Vec::new();
    for run in 1..=3 {
        let started = Instant::now();
        let (code, stdout, stderr) = sandbox.psctl(&config, &["smoke", "-o", "json"]);
        let wall = started.elapsed();
        assert_eq!(code, 0, "full run {run} failed:\n{stdout}\n{stderr}");
        let report = support::report(&stdout);
        let check = support::check(&report, "functional/deposit-to-paid");
        let ms = check["duration_ms"].as_u64().unwrap_or_default();
        println!(
            "full run {run}: {} checks in {:.2}s wall, functional check {:.2}s ({})",
            report["summary"]["total"],
            wall.as_secs_f64(),
            ms as f64 / 1000.0,
            check["evidence"]
        );
        functional.push(Duration::from_millis(ms));
        full_walls.push(wall);
    }
    sandbox.finish().await;
    walls.sort();
    full_walls.sort();
    let median = walls[walls.len() / 2];
    let full_median = full_walls[full_walls.len() / 2];
    let worst = functional.iter().max().copied().unwrap_or_default();
    println!(
        "smoke_functional_max_s={:.2} (target: poll interval 10s + 5s = 15s)",
        worst.as_secs_f64()
    );
    println!(
        "smoke_full_wall_s={:.2} (with the functional check; target 15s)",
        full_median.as_secs_f64()
    );
    println!("smoke_wall_s={:.2}", median.as_secs_f64());
}
