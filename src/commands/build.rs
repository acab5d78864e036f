//! `psctl build`: build the service binaries (cargo, release) and one image per component, tag
//! them immutably, scan them when a scanner is on PATH, refuse to overwrite a tag that holds
//! other content, push, and print the digests.
//!
//! Resolve → plan (`crate::build`, printed by `--dry-run`) → execute (`build::execute`: the
//! Docker daemon and registry checked, every image built, scanned and checked against the
//! registry before the first push, so a refusal leaves the registry untouched) → report.

use std::path::PathBuf;

use anyhow::Context as _;

use super::support;
use crate::build::execute::{self, Executed};
use crate::build::input::{BuildSettings, PlanContext, plan_input};
use crate::cli::BuildArgs;
use crate::error::{CommandResult, ExitStatus};
use crate::output::Output;
use crate::settings::GlobalSettings;

/// Resolves `build`'s flags; every field is destructured so that none is ignored.
fn settings(args: BuildArgs) -> BuildSettings {
    let BuildArgs {
        components,
        tag,
        ci_build,
        prebuilt,
        runtime_base,
        tool,
        allow_dirty,
    } = args;
    BuildSettings {
        components,
        tag,
        ci_build: ci_build.filter(|b| !b.is_empty()),
        prebuilt,
        runtime_base,
        tool,
        allow_dirty,
    }
}

pub async fn run(args: BuildArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let settings = settings(args);
    let environment = global.environment()?;
    let source = execute::read_source(settings.tag.is_some()).await?;
    let staging = if global.dry_run {
        None
    } else {
        Some(
            tempfile::Builder::new()
                .prefix("psctl-build-")
                .tempdir()
                .context("creating the staging directory")?,
        )
    };
    let context = PlanContext {
        target_dir: std::env::var_os("CARGO_TARGET_DIR")
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from("target"), PathBuf::from),
        dockerfile: support::resolve_chart(&global.config, &environment.build.dockerfile),
        staging: staging
            .as_ref()
            .map_or_else(|| PathBuf::from("$STAGING"), |d| d.path().to_path_buf()),
        scanner: crate::build::detect_scanner(execute::on_path),
    };
    let input = plan_input(&environment, &settings, source, context)?;
    if input.source.dirty_diff.is_some() && settings.tag.is_none() {
        output.warn(format!(
            "the work tree has uncommitted changes: the tag is {} (commit for a clean tag)",
            input.tag
        ));
    }
    let plan = crate::build::plan(&input);
    if global.dry_run {
        output.data(&plan).context("writing the plan")?;
        return Ok(ExitStatus::Success);
    }
    let Executed { report, refusal } = execute::execute(&plan, &input, output).await?;
    output.data(&report).context("writing the build report")?;
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    output.info(format!(
        "deploy it with `psctl deploy --env {} --tag {}`",
        plan.environment, plan.tag
    ));
    Ok(ExitStatus::Success)
}
