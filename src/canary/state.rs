//! The persisted state of a canary run: everything needed to show it (`canary status`) and to
//! continue it from another machine after a crash (`canary resume`). It lives as JSON in a
//! ConfigMap next to the component (`psctl-canary-<component>`), so the cluster, not the
//! operator's laptop, is the source of truth. Also here: the replica split of a weight.
//!
//! Plain data and pure functions only; the ConfigMap is read and written through
//! `crate::state::ConfigMapStore` (see `canary::kube::store`).

use serde::{Deserialize, Serialize};

use crate::canary::gate::{Evaluation, GatePolicy, Observation, StepDecision, StepTally};

/// Bumped when the JSON shape changes incompatibly.
pub const STATE_VERSION: u32 = 1;
/// The label naming the component on the state ConfigMap (next to `crate::state`'s own).
pub const COMPONENT_LABEL: &str = "psctl.io/canary-component";
/// Window records kept in the state (the oldest are dropped first).
pub const MAX_WINDOWS: usize = 400;

/// The ConfigMap holding `component`'s canary state.
pub fn config_map_name(component: &str) -> String {
    format!("psctl-canary-{component}")
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// A psctl process is (or was, until it crashed) driving the run.
    Running,
    /// Stopped for a human: inconclusive or no data at the bake limit. The canary keeps its weight.
    Paused,
    /// The canary was scaled to zero and stable restored. Final.
    Aborted,
    /// Stable runs the new tag and the canary track is gone. Final.
    Promoted,
}

impl RunStatus {
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Aborted | RunStatus::Promoted)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Aborted => "aborted",
            RunStatus::Promoted => "promoted",
        }
    }
}

/// What an operator asked of a run driven by another psctl process; that process acts on it at
/// its next evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum OperatorRequest {
    /// End the current step now (`full`: skip every remaining step and promote).
    Promote {
        full: bool,
        by: String,
        at: i64,
    },
    Abort {
        by: String,
        at: i64,
    },
}

impl OperatorRequest {
    pub fn by(&self) -> &str {
        match self {
            OperatorRequest::Promote { by, .. } | OperatorRequest::Abort { by, .. } => by,
        }
    }
}

/// Canary and stable replica counts for one weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub canary: i32,
    pub stable: i32,
}

impl Split {
    /// The canary's real share of the replicas, in percent.
    pub fn real_weight(&self) -> f64 {
        let total = self.canary + self.stable;
        if total <= 0 {
            0.0
        } else {
            100.0 * f64::from(self.canary) / f64::from(total)
        }
    }
}

/// The replica split for `weight` percent of `total` stable replicas, as the runbook does it
/// (10 % of 10 is 9 stable + 1 canary). Below 100 % both tracks keep at least one replica, so
/// there is always a stable track to compare with: with few replicas the real weight is higher
/// than asked (10 % of 2 is 1 + 1, i.e. 50 %), see [`Split::real_weight`]. 100 % moves every
/// replica to the canary.
pub fn split(total: i32, weight: u8) -> Split {
    let total = total.max(1);
    if weight >= 100 {
        return Split {
            canary: total,
            stable: 0,
        };
    }
    let wanted = (f64::from(total) * f64::from(weight) / 100.0).round() as i32;
    let canary = wanted.clamp(1, (total - 1).max(1));
    Split {
        canary,
        stable: (total - canary).max(1),
    }
}

/// One evaluation as recorded: the figures, every gate's outcome, and what was decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    /// Index into `steps`.
    pub step: usize,
    pub weight: u8,
    /// Unix seconds of the evaluation.
    pub at: i64,
    /// Seconds the step had baked.
    pub elapsed_secs: u64,
    pub observation: Observation,
    pub evaluation: Evaluation,
    pub decision: StepDecision,
    /// Why figures are missing (e.g. Prometheus unreachable), when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An event of the run other than an evaluation: weights set, smoke results, operator actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub at: i64,
    pub message: String,
}

/// The whole state of one canary run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryRun {
    pub version: u32,
    pub component: String,
    pub namespace: String,
    pub release: String,
    pub stable_deployment: String,
    pub canary_deployment: String,
    /// The new tag under test, and its full image reference.
    pub tag: String,
    pub image: String,
    /// Weights in percent, increasing.
    pub steps: Vec<u8>,
    pub bake_secs: u64,
    pub interval_secs: u64,
    pub policy: GatePolicy,
    /// Extra (non-secret) chart values of the new release, applied to the canary track and at
    /// promotion.
    #[serde(default)]
    pub values: serde_json::Value,
    /// Stable replicas before the run: the total that steps divide, and what abort restores.
    pub stable_replicas: i32,
    /// The stable release's deployed Helm revision before the run (what a failed promotion
    /// rolls back to).
    pub stable_revision: Option<u32>,
    pub started_by: String,
    pub started_at: i64,
    pub status: RunStatus,
    /// Index into `steps` of the current step.
    pub step: usize,
    /// When the current step's weights were in place; `None` until then.
    pub step_started_at: Option<i64>,
    pub tally: StepTally,
    /// The psctl process driving the run (its deploy-lock identity).
    pub holder: Option<String>,
    pub reason: Option<String>,
    pub updated_at: i64,
    #[serde(default)]
    pub request: Option<OperatorRequest>,
    /// When the promotion began (unix seconds), recorded before Helm runs: a run resumed after
    /// its driver died mid-promotion finishes the promotion instead of baking a step whose
    /// stable track may already run the new tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoting_since: Option<i64>,
    #[serde(default)]
    pub events: Vec<EventRecord>,
    #[serde(default)]
    pub windows: Vec<WindowRecord>,
}

impl CanaryRun {
    pub fn weight(&self) -> u8 {
        self.steps.get(self.step).copied().unwrap_or(100)
    }

    pub fn split(&self) -> Split {
        split(self.stable_replicas, self.weight())
    }

    pub fn is_last_step(&self) -> bool {
        self.step + 1 >= self.steps.len()
    }

    /// Notes an event, keeping the list bounded.
    pub fn event(&mut self, at: i64, message: impl Into<String>) {
        self.events.push(EventRecord {
            at,
            message: message.into(),
        });
        if self.events.len() > MAX_WINDOWS {
            let excess = self.events.len() - MAX_WINDOWS;
            self.events.drain(..excess);
        }
    }

    /// Records an evaluation, keeping the list bounded.
    pub fn record(&mut self, window: WindowRecord) {
        self.windows.push(window);
        if self.windows.len() > MAX_WINDOWS {
            let excess = self.windows.len() - MAX_WINDOWS;
            self.windows.drain(..excess);
        }
    }

    /// Moves to the next step (its clock starts once its weights are in place).
    pub fn advance(&mut self) {
        self.step += 1;
        self.step_started_at = None;
        self.tally = StepTally::default();
    }

    /// `1/4 (10%)`-style position.
    pub fn position(&self) -> String {
        format!(
            "step {}/{} ({}%)",
            (self.step + 1).min(self.steps.len()),
            self.steps.len(),
            self.weight()
        )
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    pub fn from_json(text: &str) -> Result<Self, StateError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| StateError::Corrupt(e.to_string()))?;
        let version = value.get("version").and_then(serde_json::Value::as_u64);
        if version != Some(u64::from(STATE_VERSION)) {
            return Err(StateError::Version(version));
        }
        serde_json::from_value(value).map_err(|e| StateError::Corrupt(e.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the canary state is not valid JSON of this psctl: {0}")]
    Corrupt(String),
    #[error("the canary state has version {0:?}; this psctl reads version {STATE_VERSION}")]
    Version(Option<u64>),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample_run() -> CanaryRun {
        CanaryRun {
            version: STATE_VERSION,
            component: "webhook".into(),
            namespace: "default".into(),
            release: "problemsolver-webhook".into(),
            stable_deployment: "problemsolver-webhook".into(),
            canary_deployment: "problemsolver-webhook-canary".into(),
            tag: "1.4.2".into(),
            image: "127.0.0.1:5000/problemsolver-webhook-worker:1.4.2".into(),
            steps: vec![10, 30, 60, 100],
            bake_secs: 300,
            interval_secs: 30,
            policy: GatePolicy::default(),
            values: serde_json::Value::Null,
            stable_replicas: 10,
            stable_revision: Some(3),
            started_by: "ops@laptop".into(),
            started_at: 1_790_000_000,
            status: RunStatus::Running,
            step: 0,
            step_started_at: None,
            tally: StepTally::default(),
            holder: None,
            reason: None,
            updated_at: 1_790_000_000,
            request: None,
            promoting_since: None,
            events: Vec::new(),
            windows: Vec::new(),
        }
    }

    #[test]
    fn the_runbook_split_is_nine_plus_one() {
        assert_eq!(
            split(10, 10),
            Split {
                canary: 1,
                stable: 9
            }
        );
        assert_eq!(
            split(10, 30),
            Split {
                canary: 3,
                stable: 7
            }
        );
        assert_eq!(
            split(10, 60),
            Split {
                canary: 6,
                stable: 4
            }
        );
        assert_eq!(
            split(10, 100),
            Split {
                canary: 10,
                stable: 0
            }
        );
    }

    #[test]
    fn few_replicas_keep_one_of_each_and_report_the_real_weight() {
        let two = split(2, 10);
        assert_eq!(
            two,
            Split {
                canary: 1,
                stable: 1
            }
        );
        assert_eq!(two.real_weight(), 50.0);
        assert_eq!(
            split(2, 60),
            Split {
                canary: 1,
                stable: 1
            }
        );
        assert_eq!(
            split(2, 100),
            Split {
                canary: 2,
                stable: 0
            }
        );
        // A single replica cannot be divided: one of each (the canary pod is extra).
        assert_eq!(
            split(1, 10),
            Split {
                canary: 1,
                stable: 1
            }
        );
        assert_eq!(
            split(3, 90),
            Split {
                canary: 2,
                stable: 1
            }
        );
    }

    #[test]
    fn the_state_round_trips_through_json_and_refuses_other_versions() {
        let mut run = sample_run();
        run.event(1, "weights set");
        run.request = Some(OperatorRequest::Abort {
            by: "a@b".into(),
            at: 5,
        });
        let text = run.to_json().unwrap();
        assert_eq!(CanaryRun::from_json(&text).unwrap(), run);
        let older = text.replace("\"version\":1", "\"version\":0");
        assert!(matches!(
            CanaryRun::from_json(&older),
            Err(StateError::Version(Some(0)))
        ));
        assert!(matches!(
            CanaryRun::from_json("{"),
            Err(StateError::Corrupt(_))
        ));
    }

    #[test]
    fn advancing_resets_the_step_clock_and_tally() {
        let mut run = sample_run();
        run.step_started_at = Some(10);
        run.tally.consecutive_failures = 1;
        run.advance();
        assert_eq!((run.step, run.step_started_at), (1, None));
        assert_eq!(run.tally, StepTally::default());
        assert_eq!(run.position(), "step 2/4 (30%)");
        assert_eq!(
            run.split(),
            Split {
                canary: 3,
                stable: 7
            }
        );
    }
}
