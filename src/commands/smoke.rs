//! `psctl smoke`: post-deploy validation. Resolves the arguments into a [`Selection`] and
//! [`SmokeSettings`], opens the environment's edges (cluster, Prometheus, database), runs the
//! suite of `crate::smoke` and prints the report (table, JSON or JUnit). Exit 1 when a check
//! failed, 3 when every failure was an unreachable dependency.

use anyhow::Context as _;

use crate::cli::{SmokeArgs, SmokeCategory};
use crate::cluster;
use crate::db::{DatabaseUrl, UrlError};
use crate::error::{CommandError, CommandResult};
use crate::output::Output;
use crate::prom::Prometheus;
use crate::settings::GlobalSettings;
use crate::smoke::{self, Category, Selection, SmokeContext, SmokeSettings};

/// `smoke` arguments, resolved.
pub fn resolve(args: SmokeArgs) -> (Selection, SmokeSettings) {
    let SmokeArgs {
        only,
        components,
        selector,
        force,
        freshness,
        functional_timeout,
        timeout,
        wait,
    } = args;
    let explicit = !only.is_empty();
    let mut categories: Vec<Category> = only
        .into_iter()
        .map(|category| match category {
            SmokeCategory::Cluster => Category::Cluster,
            SmokeCategory::Metrics => Category::Metrics,
            SmokeCategory::Monitoring => Category::Monitoring,
            SmokeCategory::Functional => Category::Functional,
            SmokeCategory::Integrity => Category::Integrity,
        })
        .collect();
    categories.sort();
    categories.dedup();
    let selection = Selection {
        categories,
        components,
        pod_selector: selector.filter(|s| !s.trim().is_empty()),
        explicit,
    };
    let settings = SmokeSettings {
        freshness,
        functional_timeout,
        check_timeout: timeout,
        wait,
        force,
        ..SmokeSettings::default()
    };
    (selection, settings)
}

pub async fn run(args: SmokeArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let (selection, settings) = resolve(args);
    let environment = global.environment()?;
    let plan = smoke::plan(&environment, &selection, &settings)?;
    if global.dry_run {
        for check in &plan {
            output.info(format!("{:<12} {}", check.category, check.name));
        }
        return Ok(crate::error::ExitStatus::Success);
    }
    let client = cluster::connect(&environment).await?;
    let prometheus = match &environment.prometheus_url {
        Some(url) => Some(
            Prometheus::new(url, settings.check_timeout).map_err(|error| {
                CommandError::usage(
                    anyhow::Error::new(error).context("configuring the Prometheus client"),
                )
            })?,
        ),
        None => None,
    };
    let database = match &global.database_url {
        Some(url) => Some(url.clone()),
        None => match DatabaseUrl::resolve(None, &environment.database_url_env, |name| {
            std::env::var(name).ok()
        }) {
            Ok(url) => Some(url),
            Err(UrlError::Missing { .. }) => None,
            Err(error) => return Err(error.into()),
        },
    };
    if let Some(url) = &database {
        if let Some(password) = url.password() {
            output.redactor().register(&password);
        }
        output.redactor().register(url.expose());
    }
    output.info(format!(
        "smoke: {} check(s) against `{}` (namespace {})",
        plan.len(),
        environment.name,
        environment.namespace
    ));
    let context = SmokeContext::new(environment, client, prometheus, database, settings);
    let report = smoke::run(&context, &selection).await?;
    output.data(&report).context("writing the smoke report")?;
    for failure in report.failures() {
        output.check(
            crate::output::CheckState::Fail,
            &failure.name,
            &failure.evidence,
        );
    }
    output.annotations(&smoke::report::annotations(&report));
    output.step_summary(&smoke::report::step_summary(&report));
    Ok(report.exit_status())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser as _;

    fn args(line: &[&str]) -> SmokeArgs {
        let cli = Cli::try_parse_from(["psctl", "smoke"].iter().chain(line)).unwrap();
        match cli.command {
            crate::cli::Command::Smoke(args) => args,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn only_takes_several_categories_after_one_flag() {
        let (selection, settings) = resolve(args(&[
            "--only",
            "metrics",
            "cluster",
            "--only",
            "metrics",
            "--freshness",
            "2m",
        ]));
        assert_eq!(selection.categories, [Category::Cluster, Category::Metrics]);
        assert!(selection.explicit);
        assert_eq!(settings.freshness, std::time::Duration::from_secs(120));
    }

    #[test]
    fn defaults_run_everything_with_the_runbook_timings() {
        let (selection, settings) = resolve(args(&[]));
        assert!(selection.categories.is_empty() && !selection.explicit);
        assert_eq!(settings, SmokeSettings::default());
    }
}
