//! Pieces shared by the mutating commands (deploy, rollback, kill-switch): confirmation, the
//! Helm target of an environment, reporting a tracked rollout, and the audit hook.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::audit::{AuditEntry, AuditSink};
use crate::db::DatabaseUrl;
use crate::error::CommandError;
use crate::helm::driver::{HelmTarget, resolve_program};
use crate::output::{CheckState, Output};
use crate::rollout::track::Outcome;
use crate::settings::{Environment, GlobalSettings};

/// Asks before a mutating action unless `--yes`; refuses when nobody can answer.
pub fn confirm(
    global: &GlobalSettings,
    output: &Output,
    question: &str,
) -> Result<(), CommandError> {
    if global.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::usage(anyhow::anyhow!(
            "refusing to proceed without confirmation: {question}"
        ))
        .hint("pass `--yes` to confirm non-interactively"));
    }
    output.info(format!("{question} [y/N]"));
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| {
        CommandError::usage(anyhow::Error::new(e).context("reading the confirmation"))
    })?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CommandError::usage(anyhow::anyhow!(
            "cancelled: nothing was changed"
        )))
    }
}

/// How Helm reaches the environment's cluster.
pub fn helm_target(environment: &Environment) -> HelmTarget {
    HelmTarget {
        program: resolve_program(environment.helm.as_deref()),
        namespace: environment.namespace.clone(),
        kube_context: environment.kube_context.clone(),
        kubeconfig: environment.kubeconfig.clone(),
    }
}

/// A chart path from psctl.yaml: relative paths are looked up next to the configuration file
/// first, then in the working directory.
pub fn resolve_chart(config: &Path, chart: &Path) -> PathBuf {
    if chart.is_absolute() {
        return chart.to_path_buf();
    }
    match config.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if dir.join(chart).exists() => dir.join(chart),
        _ => chart.to_path_buf(),
    }
}

/// Prints a failed or timed-out rollout on stderr: verdict, events, last log lines.
pub fn report_outcome(output: &Output, what: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Complete { progress, seconds } => {
            output.check(
                CheckState::Ok,
                what,
                &format!("{} ({seconds:.1}s)", progress.message),
            );
        }
        Outcome::Failed {
            diagnosis,
            logs,
            seconds,
        } => {
            output.check(
                CheckState::Fail,
                what,
                &format!("{diagnosis} (after {seconds:.1}s)"),
            );
            if !diagnosis.events.is_empty() {
                output.info("  events:");
                for event in &diagnosis.events {
                    output.info(format!("    {event}"));
                }
            }
            if !logs.is_empty() {
                let source = match (&diagnosis.pod, &diagnosis.container) {
                    (Some(pod), Some(container)) => format!("{pod}/{container}"),
                    _ => "the container".to_owned(),
                };
                output.info(format!("  last log lines of {source}:"));
                for line in logs {
                    output.info(format!("    {line}"));
                }
            }
        }
        Outcome::TimedOut {
            progress,
            diagnosis,
            seconds,
        } => {
            let state = progress
                .as_ref()
                .map_or_else(|| "no progress reported".to_owned(), |p| p.message.clone());
            output.check(
                CheckState::Fail,
                what,
                &format!("timed out after {seconds:.0}s: {state}"),
            );
            if let Some(diagnosis) = diagnosis {
                output.info(format!("  stuck: {diagnosis}"));
            }
        }
    }
}

/// One line of the short failure summary used in error messages.
pub fn outcome_summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Complete { .. } => "complete".to_owned(),
        Outcome::Failed { diagnosis, .. } => diagnosis.to_string(),
        Outcome::TimedOut {
            diagnosis: Some(diagnosis),
            ..
        } => format!("timed out ({diagnosis})"),
        Outcome::TimedOut { .. } => "timed out".to_owned(),
    }
}

/// What a mutating command did, for the audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct AuditNote {
    pub action: String,
    pub target: String,
    pub from_state: String,
    pub to_state: String,
    pub outcome: String,
    pub details: serde_json::Value,
}

/// Opens the audit trail before anything changes: the Postgres sink, or (only under
/// `--allow-no-audit`) one that announces every unrecorded action. Database URL secrets are
/// registered with the redactor first.
pub async fn open_audit(
    global: &GlobalSettings,
    environment: &Environment,
    output: &Output,
) -> Result<Box<dyn AuditSink>, CommandError> {
    let url = match &global.database_url {
        Some(url) => Ok(url.clone()),
        None => DatabaseUrl::resolve(None, &environment.database_url_env, |name| {
            std::env::var(name).ok()
        })
        .map_err(|error| error.to_string()),
    };
    if let Ok(url) = &url {
        if let Some(password) = url.password() {
            output.redactor().register(&password);
        }
        output.redactor().register(url.expose());
    }
    match crate::audit::open(url, global.allow_no_audit, output).await {
        Ok(sink) => {
            output.check(CheckState::Ok, "audit trail", "opened");
            Ok(sink)
        }
        Err(error) => {
            output.check(CheckState::Fail, "audit trail", &error.to_string());
            Err(error.into())
        }
    }
}

/// Records one action. The action already happened, so a failed write is reported loudly
/// rather than turned into a failure of the command.
pub async fn audit(
    sink: &dyn AuditSink,
    output: &Output,
    environment: &Environment,
    note: AuditNote,
) {
    let AuditNote {
        action,
        target,
        from_state,
        to_state,
        outcome,
        details,
    } = note;
    let entry = AuditEntry::new(action, target)
        .environment(environment.name.clone())
        .kube_identity(environment.kube_context.clone())
        .transition(from_state, to_state)
        .outcome(outcome)
        .details(details);
    if let Err(error) = sink.record(&entry).await {
        output.warn(format!(
            "the audit record of `{} {}` was NOT written: {error}",
            entry.action, entry.target
        ));
    }
}
