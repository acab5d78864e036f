//! What `canary status` (and every canary command at its end) prints: the run, who drives it,
//! every evaluation with its figures and the run's events.

use serde::Serialize;

use crate::canary::gate::{GateOutcome, StepDecision};
use crate::canary::state::{CanaryRun, RunStatus, WindowRecord};
use crate::output::{Render, Style, table};

#[derive(Debug, Clone, Serialize)]
pub struct CanaryReport {
    #[serde(flatten)]
    pub run: CanaryRun,
    /// The psctl process currently driving the run, if one is alive.
    pub driven_by: Option<String>,
}

fn time(unix: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

impl Render for CanaryReport {
    fn render_table(&self, _style: &Style) -> String {
        let run = &self.run;
        let split = run.split();
        let mut text = format!(
            "canary of `{}` ({}) tag {}: {} at {}; canary {} / stable {} replicas\n\
             started {} by {}; steps {:?} %, bake {}s, interval {}s\n",
            run.component,
            run.release,
            run.tag,
            run.status.as_str(),
            run.position(),
            if run.status == RunStatus::Running || run.status == RunStatus::Paused {
                split.canary.to_string()
            } else {
                "-".to_owned()
            },
            if run.status == RunStatus::Running || run.status == RunStatus::Paused {
                split.stable.to_string()
            } else {
                "-".to_owned()
            },
            time(run.started_at),
            run.started_by,
            run.steps,
            run.bake_secs,
            run.interval_secs,
        );
        if let Some(reason) = &run.reason {
            text.push_str(&format!("reason: {reason}\n"));
        }
        match &self.driven_by {
            Some(holder) => text.push_str(&format!("driven by: {holder}\n")),
            None if run.status == RunStatus::Running => text.push_str(
                "driven by: nobody (the psctl that ran it is gone): `psctl canary resume` continues it\n",
            ),
            None => {}
        }
        if let Some(request) = &run.request {
            text.push_str(&format!(
                "pending request from {}: {request:?}\n",
                request.by()
            ));
        }
        text.push_str(&table::render(
            &[
                "STEP",
                "AT",
                "VERDICT",
                "DECISION",
                "ERROR RATE",
                "LATENCY",
                "GUARDRAIL",
            ],
            run.windows.iter().map(|w| {
                let decision = match &w.decision {
                    StepDecision::Continue => "continue".to_owned(),
                    StepDecision::Advance => "advance".to_owned(),
                    StepDecision::Abort { .. } => "abort".to_owned(),
                    StepDecision::Pause { .. } => "pause".to_owned(),
                };
                let gate =
                    |outcome: &GateOutcome| format!("{}: {}", outcome.name(), outcome.detail());
                [
                    format!("{}/{} {}%", w.step + 1, run.steps.len(), w.weight),
                    format!("{}s", w.elapsed_secs),
                    serde_json::to_value(w.evaluation.verdict)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    decision,
                    gate(&w.evaluation.error_rate),
                    gate(&w.evaluation.latency),
                    gate(&w.evaluation.guardrail),
                ]
            }),
        ));
        if !run.events.is_empty() {
            text.push_str("events:\n");
            for event in &run.events {
                text.push_str(&format!("  {}  {}\n", time(event.at), event.message));
            }
        }
        text
    }
}

/// One line per evaluation for `canary status --watch`: where, after how long, the verdict and
/// what was decided.
fn window_line(run: &CanaryRun, window: &WindowRecord) -> String {
    let decision = match &window.decision {
        StepDecision::Continue => "continue".to_owned(),
        StepDecision::Advance => "advance".to_owned(),
        StepDecision::Abort { reason } => format!("abort: {reason}"),
        StepDecision::Pause { reason } => format!("pause: {reason}"),
    };
    let verdict = serde_json::to_value(window.evaluation.verdict)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "{}  evaluation at step {}/{} ({}%) after {}s: {verdict}, {decision}; error rate {}",
        time(window.at),
        window.step + 1,
        run.steps.len(),
        window.weight,
        window.elapsed_secs,
        window.evaluation.error_rate.detail(),
    )
}

/// The one-line state of a run: what the live line of `canary status --watch` shows.
pub fn summary_line(report: &CanaryReport) -> String {
    let run = &report.run;
    let mut line = format!(
        "canary of `{}` tag {}: {} at {}",
        run.component,
        run.tag,
        run.status.as_str(),
        run.position()
    );
    if matches!(run.status, RunStatus::Running | RunStatus::Paused) {
        let split = run.split();
        line.push_str(&format!(
            ", canary {} / stable {} replicas",
            split.canary, split.stable
        ));
    }
    match &report.driven_by {
        Some(holder) => line.push_str(&format!(", driven by {holder}")),
        None if run.status == RunStatus::Running => {
            line.push_str(", driven by nobody (`psctl canary resume` continues it)");
        }
        None => {}
    }
    line
}

/// What `canary status --watch` prints between two readings of a run: every event and
/// evaluation recorded since `before` (oldest first), then the new state when it changed.
/// Pure, so the watch loop only reads and prints.
pub fn changes(before: &CanaryReport, after: &CanaryReport) -> Vec<String> {
    let mut lines = Vec::new();
    // Both lists are bounded (the oldest entries are dropped), so entries are matched by
    // content, not by position.
    let mut new: Vec<(i64, String)> = after
        .run
        .events
        .iter()
        .filter(|event| !before.run.events.contains(event))
        .map(|event| (event.at, format!("{}  {}", time(event.at), event.message)))
        .collect();
    new.extend(
        after
            .run
            .windows
            .iter()
            .filter(|window| !before.run.windows.contains(window))
            .map(|window| (window.at, window_line(&after.run, window))),
    );
    new.sort_by_key(|(at, _)| *at);
    lines.extend(new.into_iter().map(|(_, line)| line));
    let (was, now) = (summary_line(before), summary_line(after));
    if was != now {
        lines.push(now);
    }
    if let Some(reason) = after
        .run
        .reason
        .as_ref()
        .filter(|reason| before.run.reason.as_ref() != Some(*reason))
    {
        lines.push(format!("reason: {reason}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::gate::Observation;

    #[test]
    fn the_status_table_shows_each_evaluation_with_its_figures() {
        let mut run = crate::canary::state::tests::sample_run();
        let observation = Observation {
            canary: crate::canary::gate::TrackFigures::new(2000.0, 60.0, 90.0),
            stable: crate::canary::gate::TrackFigures::new(18000.0, 72.0, 85.0),
            canary_guardrail: crate::canary::gate::TrackFigures::new(2000.0, 60.0, 90.0),
        };
        let evaluation = crate::canary::gate::evaluate(&run.policy, &observation);
        run.record(crate::canary::state::WindowRecord {
            step: 0,
            weight: 10,
            at: 1_790_000_030,
            elapsed_secs: 30,
            observation,
            evaluation,
            decision: crate::canary::gate::StepDecision::Abort {
                reason: "guardrail".into(),
            },
            note: None,
        });
        run.status = RunStatus::Aborted;
        run.reason = Some("absolute guardrail breached".into());
        let text = CanaryReport {
            run,
            driven_by: None,
        }
        .render_table(&Style::PLAIN);
        assert!(text.contains("aborted at step 1/4 (10%)"), "{text}");
        assert!(
            text.contains("reason: absolute guardrail breached"),
            "{text}"
        );
        assert!(
            text.contains("fail: canary 3.00% of 2000, stable 0.40% of 18000"),
            "{text}"
        );
        assert!(text.contains("guardrail-breached"), "{text}");
    }

    fn evaluation_at(run: &CanaryRun, at: i64, decision: StepDecision) -> WindowRecord {
        let observation = Observation {
            canary: crate::canary::gate::TrackFigures::new(500.0, 1.0, 90.0),
            stable: crate::canary::gate::TrackFigures::new(4500.0, 9.0, 85.0),
            canary_guardrail: crate::canary::gate::TrackFigures::new(500.0, 1.0, 90.0),
        };
        let evaluation = crate::canary::gate::evaluate(&run.policy, &observation);
        WindowRecord {
            step: run.step,
            weight: run.weight(),
            at,
            elapsed_secs: 30,
            observation,
            evaluation,
            decision,
            note: None,
        }
    }

    #[test]
    fn the_watch_prints_only_what_happened_since_the_last_reading_in_order() {
        let mut run = crate::canary::state::tests::sample_run();
        run.status = RunStatus::Running;
        run.event(1_790_000_000, "canary at 10% (1 of 10 replicas)");
        let before = CanaryReport {
            run: run.clone(),
            driven_by: Some("ops@host pid 7 (canary webhook)".into()),
        };
        // Nothing changed: nothing to print.
        assert!(changes(&before, &before.clone()).is_empty());

        let window = evaluation_at(&run, 1_790_000_030, StepDecision::Advance);
        run.record(window);
        run.advance();
        run.event(1_790_000_031, "canary at 50% (5 of 10 replicas)");
        let after = CanaryReport {
            run: run.clone(),
            driven_by: before.driven_by.clone(),
        };
        let lines = changes(&before, &after);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].contains("evaluation at step 1/4 (10%) after 30s: ")
                && lines[0].contains(", advance; error rate "),
            "{lines:#?}"
        );
        assert!(
            lines[1].ends_with("canary at 50% (5 of 10 replicas)"),
            "{lines:#?}"
        );
        assert!(
            lines[2].starts_with("canary of `") && lines[2].contains("running at step 2/"),
            "{lines:#?}"
        );

        // The run ends: the new state and its reason, once.
        let mut ended = after.clone();
        ended.run.status = RunStatus::Aborted;
        ended.run.reason = Some("aborted by ops@host".into());
        ended.driven_by = None;
        let lines = changes(&after, &ended);
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].contains(": aborted at step 2/"), "{lines:#?}");
        assert!(
            !lines[0].contains("replicas"),
            "a final run has no split: {lines:#?}"
        );
        assert_eq!(lines[1], "reason: aborted by ops@host");
        assert!(changes(&ended, &ended.clone()).is_empty());
    }

    #[test]
    fn a_running_run_without_a_live_driver_says_how_to_continue_it() {
        let mut run = crate::canary::state::tests::sample_run();
        run.status = RunStatus::Running;
        let line = summary_line(&CanaryReport {
            run,
            driven_by: None,
        });
        assert!(
            line.contains("driven by nobody (`psctl canary resume` continues it)"),
            "{line}"
        );
    }
}
