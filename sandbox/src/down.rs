//! `psctl-sandbox down`: stops what `up` started (Prometheus, the daemon, the registry, this
//! node's containers, the network) and nothing else; `--purge` also deletes the state directory.

use std::time::Duration;

use anyhow::Context as _;

use crate::process::{self, run};
use crate::settings::Layout;
use crate::up::{ALERTMANAGER_BIN, PROMETHEUS_BIN, REGISTRY_BIN};

/// Stops everything; returns what was done, one line each.
pub fn down(layout: &Layout, purge: bool) -> anyhow::Result<Vec<String>> {
    let settings = layout.load_settings()?;
    let mut report = Vec::new();
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    for (name, program) in [
        ("prometheus", PROMETHEUS_BIN.to_owned()),
        ("alertmanager", ALERTMANAGER_BIN.to_owned()),
        ("daemon", exe.display().to_string()),
        ("registry", REGISTRY_BIN.to_owned()),
    ] {
        let stopped = process::stop(layout, name, &program, Duration::from_secs(10))?;
        report.push(format!(
            "{name}: {}",
            if stopped {
                "stopped"
            } else {
                "was not running"
            }
        ));
    }
    // Only containers of this sandbox's node: another sandbox (tests) may share Docker.
    let ids = run(
        "docker",
        &[
            "ps",
            "-aq",
            "--filter",
            "label=psctl.sandbox=1",
            "--filter",
            &format!("label=psctl.sandbox.node={}", settings.node),
        ],
    )?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(&ids);
        run("docker", &args)?;
    }
    report.push(format!("containers: {} removed", ids.len()));
    let ours = run(
        "docker",
        &[
            "network",
            "inspect",
            "--format",
            "{{index .Labels \"psctl.sandbox.network\"}}",
            &settings.network,
        ],
    )
    .map(|label| label.trim() == settings.node)
    .unwrap_or(false);
    if ours {
        match run("docker", &["network", "rm", &settings.network]) {
            Ok(_) => report.push(format!("network {}: removed", settings.network)),
            Err(error) => report.push(format!("network {}: kept ({error})", settings.network)),
        }
    } else {
        report.push(format!(
            "network {}: not ours or absent, left alone",
            settings.network
        ));
    }
    if purge {
        std::fs::remove_dir_all(&layout.root)
            .with_context(|| format!("cannot remove `{}`", layout.root.display()))?;
        report.push(format!("state {}: removed", layout.root.display()));
    }
    Ok(report)
}
