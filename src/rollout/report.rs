//! How a tracked rollout is reported: the check line with its verdict, the events and last log
//! lines of a failure, and the one-line summary used in error messages.

use crate::output::{CheckState, Output};
use crate::rollout::track::Outcome;

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
