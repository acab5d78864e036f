//! `psctl --help` start-up time: the median wall time of 30 runs of the real binary. The figure
//! is printed on the last line as `psctl_help_startup_ms=<value> ms`. Run by `cargo test --bench
//! help_startup` (no `--bench` argument: the quick mode CI uses), 5 runs.

use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let binary = env!("CARGO_BIN_EXE_psctl");
    let runs = if std::env::args().any(|arg| arg == "--bench") {
        30
    } else {
        5
    };
    let mut samples = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let status = Command::new(binary)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run psctl --help");
        assert!(status.success(), "psctl --help failed: {status}");
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    println!(
        "runs={} min_ms={:.2} max_ms={:.2}",
        samples.len(),
        samples[0],
        samples[samples.len() - 1]
    );
    println!("psctl_help_startup_ms={median:.2} ms");
}
