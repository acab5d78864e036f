//! What `canary status` (and every canary command at its end) prints: the run, who drives it,
//! every evaluation with its figures and the run's events.

use serde::Serialize;

use crate::canary::gate::{GateOutcome, StepDecision};
use crate::canary::state::{CanaryRun, RunStatus};
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
}
