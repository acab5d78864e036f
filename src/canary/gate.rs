//! Canary gate decisions: pure functions from observed figures (requests, failures, p95 latency
//! of the canary and the stable track) to a verdict per evaluation and a decision per step.
//! Nothing here queries Prometheus or touches the cluster; the canary runner feeds it.
//!
//! Three rules shape everything here:
//! - Missing data (no series, NaN, Prometheus unreachable) is never a pass and never by itself
//!   an abort: the run holds and says why.
//! - Too little evidence is "inconclusive", not a pass: the bake extends, then the run pauses for
//!   a human (or aborts, if the policy says so).
//! - One bad evaluation does not abort: only `consecutive_failures_to_abort` failed evaluations in
//!   a row do, except the absolute guardrail, which is itself measured over minutes.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::canary::stats::{BetaPosterior, Counts, Margin, prob_exceeds};

/// What to do when a step's bake has been extended to its limit without a conclusive result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnInconclusive {
    /// Stop promoting and wait for `canary promote` or `canary abort` (the default).
    Pause,
    /// Abort the canary.
    Abort,
}

/// What a latency breach leads to once it has failed `consecutive_failures_to_abort`
/// evaluations in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnLatency {
    /// Abort the canary like any other failed gate (the default).
    Abort,
    /// Stop promoting and wait for a human (the runbook's "P95 latency >500ms → manual review"):
    /// only when latency was the one gate that failed.
    Pause,
}

/// The thresholds of the gates. Defaults follow the runbook: 95 % confidence, p95 under 500 ms,
/// an absolute error-rate guardrail of 1 % over 5 minutes, two failed windows in a row to abort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatePolicy {
    /// Posterior probability needed to call the canary worse (or not worse) than stable.
    pub confidence: f64,
    /// The canary counts as worse when its failure rate exceeds
    /// `stable * (1 + margin_relative) + margin_absolute`: by default 50 % more than stable plus
    /// 0.1 percentage point, so 0.4 % → 0.7 % is tolerated and 0.4 % → 1 % is not.
    pub margin_relative: f64,
    pub margin_absolute: f64,
    /// Minimum canary requests in the evaluated window before the error gate can pass.
    pub min_requests: f64,
    /// Absolute p95 latency ceiling for the canary, in milliseconds.
    pub latency_ceiling_ms: f64,
    /// The canary's p95 may exceed stable's p95 by this factor...
    pub latency_tolerance: f64,
    /// ...plus this many milliseconds (so two fast services are not compared on noise).
    pub latency_slack_ms: f64,
    /// Absolute guardrail: a canary failure rate above this over `guardrail_window` aborts,
    /// whatever the comparison with stable says.
    pub guardrail_error_rate: f64,
    /// The span the guardrail is judged over.
    #[serde(with = "duration_secs")]
    pub guardrail_window: Duration,
    /// Failed evaluations in a row that abort the run.
    pub consecutive_failures_to_abort: u32,
    /// The bake may be extended to this multiple of itself while results are inconclusive.
    pub max_bake_factor: f64,
    pub on_inconclusive: OnInconclusive,
    /// Absolute target for the canary's failure rate since the step began (the runbook's
    /// "error rate < 0.5 %": 0.005), judged with `confidence` beside the comparison with stable.
    /// `None` (the default): only the comparison and the guardrail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// What a latency gate failure does at the abort limit: `abort` (default) or `pause`.
    pub on_latency: OnLatency,
}

impl GatePolicy {
    pub fn margin(&self) -> Margin {
        Margin {
            relative: self.margin_relative,
            absolute: self.margin_absolute,
        }
    }
}

impl Default for GatePolicy {
    fn default() -> Self {
        Self {
            confidence: 0.95,
            margin_relative: 0.5,
            margin_absolute: 0.001,
            min_requests: 50.0,
            latency_ceiling_ms: 500.0,
            latency_tolerance: 1.2,
            latency_slack_ms: 25.0,
            guardrail_error_rate: 0.01,
            guardrail_window: Duration::from_secs(300),
            consecutive_failures_to_abort: 2,
            max_bake_factor: 3.0,
            on_inconclusive: OnInconclusive::Pause,
            max_error_rate: None,
            on_latency: OnLatency::Abort,
        }
    }
}

/// Checks a policy's values make sense; the message names the field and the allowed range.
pub fn check_policy(policy: &GatePolicy) -> Result<(), String> {
    let checks: [(&str, bool, &str); 9] = [
        (
            "confidence",
            policy.confidence > 0.5 && policy.confidence < 1.0,
            "between 0.5 and 1 (exclusive), e.g. 0.95",
        ),
        (
            "margin_relative",
            policy.margin_relative >= 0.0 && policy.margin_relative.is_finite(),
            "0 or more, e.g. 0.5",
        ),
        (
            "margin_absolute",
            (0.0..1.0).contains(&policy.margin_absolute),
            "between 0 and 1, e.g. 0.001",
        ),
        (
            "min_requests",
            policy.min_requests >= 0.0 && policy.min_requests.is_finite(),
            "0 or more, e.g. 50",
        ),
        (
            "latency_ceiling_ms",
            policy.latency_ceiling_ms > 0.0,
            "more than 0, e.g. 500",
        ),
        (
            "latency_tolerance",
            policy.latency_tolerance >= 1.0 && policy.latency_tolerance.is_finite(),
            "1 or more, e.g. 1.2",
        ),
        (
            "guardrail_error_rate",
            policy.guardrail_error_rate > 0.0 && policy.guardrail_error_rate < 1.0,
            "between 0 and 1 (exclusive), e.g. 0.01",
        ),
        (
            "consecutive_failures_to_abort",
            policy.consecutive_failures_to_abort >= 1,
            "1 or more, e.g. 2",
        ),
        (
            "max_bake_factor",
            policy.max_bake_factor >= 1.0 && policy.max_bake_factor.is_finite(),
            "1 or more, e.g. 3",
        ),
    ];
    for (field, valid, range) in checks {
        if !valid {
            return Err(format!("`{field}` must be {range}"));
        }
    }
    if let Some(max) = policy.max_error_rate
        && !(max > 0.0 && max < 1.0)
    {
        return Err("`max_error_rate` must be between 0 and 1 (exclusive), e.g. 0.005".to_owned());
    }
    if policy.latency_slack_ms < 0.0 || policy.guardrail_window.is_zero() {
        return Err(
            "`latency_slack_ms` must be 0 or more and `guardrail_window` more than 0 seconds"
                .to_owned(),
        );
    }
    Ok(())
}

/// Serde helper: durations as whole seconds.
mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

/// One track's figures over an evaluation window, as Prometheus returned them. `None` means the
/// query returned no series; NaN and infinities are treated the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackFigures {
    pub requests: Option<f64>,
    pub failures: Option<f64>,
    pub p95_ms: Option<f64>,
}

impl TrackFigures {
    pub fn new(requests: f64, failures: f64, p95_ms: f64) -> Self {
        Self {
            requests: Some(requests),
            failures: Some(failures),
            p95_ms: Some(p95_ms),
        }
    }

    fn counts(&self) -> Result<(f64, f64), MissingData> {
        let requests = usable(self.requests).ok_or(MissingData::Requests)?;
        let failures = usable(self.failures).ok_or(MissingData::Failures)?;
        Ok((requests, failures))
    }
}

fn usable(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && *v >= 0.0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingData {
    Requests,
    Failures,
    Latency,
}

impl fmt::Display for MissingData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MissingData::Requests => "request count",
            MissingData::Failures => "failure count",
            MissingData::Latency => "p95 latency",
        })
    }
}

/// The figures of one evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Canary and stable figures since the step started: the error comparison uses all the
    /// evidence the step has gathered.
    pub canary: TrackFigures,
    pub stable: TrackFigures,
    /// Canary figures over the trailing guardrail window (e.g. the last 5 minutes).
    pub canary_guardrail: TrackFigures,
}

/// The outcome of one gate over one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum GateOutcome {
    Pass { detail: String },
    Fail { detail: String },
    Inconclusive { detail: String },
    NoData { detail: String },
}

impl GateOutcome {
    /// `pass`, `fail`, `inconclusive` or `no-data`, as serialized.
    pub fn name(&self) -> &'static str {
        match self {
            GateOutcome::Pass { .. } => "pass",
            GateOutcome::Fail { .. } => "fail",
            GateOutcome::Inconclusive { .. } => "inconclusive",
            GateOutcome::NoData { .. } => "no-data",
        }
    }

    /// The figures or the reason behind the outcome.
    pub fn detail(&self) -> &str {
        match self {
            GateOutcome::Pass { detail }
            | GateOutcome::Fail { detail }
            | GateOutcome::Inconclusive { detail }
            | GateOutcome::NoData { detail } => detail,
        }
    }
}

/// Every gate's outcome for one evaluation, and the verdict they add up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub verdict: Verdict,
    pub error_rate: GateOutcome,
    pub latency: GateOutcome,
    pub guardrail: GateOutcome,
    /// The absolute target (`max_error_rate`), when the policy sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<GateOutcome>,
    /// P(canary failure rate > stable + margin), when it could be computed.
    pub prob_worse: Option<f64>,
    /// P(canary failure rate <= stable + margin), when it could be computed.
    pub prob_not_worse: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every gate passed with enough evidence.
    Pass,
    /// A comparison gate failed (counts towards `consecutive_failures_to_abort`).
    Fail,
    /// The absolute guardrail tripped: abort now.
    GuardrailBreached,
    /// Not enough evidence either way.
    Inconclusive,
    /// Some figure was missing: hold, neither pass nor fail.
    Hold,
}

impl Evaluation {
    /// A one-line explanation naming every gate that did not pass.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .gates()
            .into_iter()
            .filter(|(_, outcome)| !matches!(outcome, GateOutcome::Pass { .. }))
            .map(|(name, outcome)| format!("{name}: {}", outcome.detail()))
            .collect();
        if parts.is_empty() {
            "all gates passed".to_string()
        } else {
            parts.join("; ")
        }
    }

    /// Every gate judged, by name, in report order.
    pub fn gates(&self) -> Vec<(&'static str, &GateOutcome)> {
        let mut gates = vec![("error-rate", &self.error_rate)];
        if let Some(target) = &self.max_error_rate {
            gates.push(("max-error-rate", target));
        }
        gates.push(("latency", &self.latency));
        gates.push(("guardrail", &self.guardrail));
        gates
    }

    /// The latency gate failed and no other gate did.
    pub fn only_latency_failed(&self) -> bool {
        matches!(self.latency, GateOutcome::Fail { .. })
            && self
                .gates()
                .iter()
                .filter(|(name, _)| *name != "latency")
                .all(|(_, outcome)| !matches!(outcome, GateOutcome::Fail { .. }))
    }
}

/// Judges one evaluation.
pub fn evaluate(policy: &GatePolicy, observation: &Observation) -> Evaluation {
    let (error_rate, prob_worse, prob_not_worse) = error_rate_gate(policy, observation);
    let latency = latency_gate(policy, observation);
    let guardrail = guardrail_gate(policy, &observation.canary_guardrail);
    let max_error_rate = policy
        .max_error_rate
        .map(|max| target_gate(policy, max, &observation.canary));

    let mut outcomes = vec![&error_rate, &latency, &guardrail];
    outcomes.extend(max_error_rate.as_ref());
    let verdict = if matches!(guardrail, GateOutcome::Fail { .. }) {
        Verdict::GuardrailBreached
    } else if outcomes
        .iter()
        .any(|o| matches!(o, GateOutcome::Fail { .. }))
    {
        Verdict::Fail
    } else if outcomes
        .iter()
        .any(|o| matches!(o, GateOutcome::NoData { .. }))
    {
        Verdict::Hold
    } else if outcomes
        .iter()
        .any(|o| matches!(o, GateOutcome::Inconclusive { .. }))
    {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };

    Evaluation {
        verdict,
        error_rate,
        latency,
        guardrail,
        max_error_rate,
        prob_worse,
        prob_not_worse,
    }
}

/// The absolute target: the canary's failure rate since the step began at most `max`, judged
/// with `confidence` (the prior centred on `max`, as the guardrail's), and, like the comparison,
/// not passed on fewer than `min_requests`.
fn target_gate(policy: &GatePolicy, max: f64, canary: &TrackFigures) -> GateOutcome {
    let (requests, failures) = match canary.counts() {
        Ok(counts) => counts,
        Err(missing) => {
            return GateOutcome::NoData {
                detail: format!("no canary {missing} from Prometheus"),
            };
        }
    };
    let counts = Counts::new(requests, failures);
    let prob_above = BetaPosterior::update(BetaPosterior::centred_on(max), counts).survival(max);
    let figures = format!(
        "canary {} of {requests:.0}, target at most {}, P(rate > target) = {prob_above:.3}",
        percent(counts.rate()),
        percent(max),
    );
    if prob_above > policy.confidence {
        GateOutcome::Fail { detail: figures }
    } else if requests < policy.min_requests {
        GateOutcome::Inconclusive {
            detail: format!(
                "{figures}; only {requests:.0} canary requests (need {:.0})",
                policy.min_requests
            ),
        }
    } else if 1.0 - prob_above >= policy.confidence {
        GateOutcome::Pass { detail: figures }
    } else {
        GateOutcome::Inconclusive {
            detail: format!(
                "{figures}; not yet {:.0}% sure it is below",
                policy.confidence * 100.0
            ),
        }
    }
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn error_rate_gate(
    policy: &GatePolicy,
    observation: &Observation,
) -> (GateOutcome, Option<f64>, Option<f64>) {
    let canary = observation.canary.counts();
    let stable = observation.stable.counts();
    let ((canary_requests, canary_failures), (stable_requests, stable_failures)) =
        match (canary, stable) {
            (Ok(c), Ok(s)) => (c, s),
            (Err(missing), _) => {
                let detail = format!("no canary {missing} from Prometheus");
                return (GateOutcome::NoData { detail }, None, None);
            }
            (_, Err(missing)) => {
                let detail = format!("no stable {missing} from Prometheus");
                return (GateOutcome::NoData { detail }, None, None);
            }
        };

    let canary_counts = Counts::new(canary_requests, canary_failures);
    let stable_counts = Counts::new(stable_requests, stable_failures);
    let prior = BetaPosterior::shared_prior(canary_counts, stable_counts);
    let margin = policy.margin();
    let prob_worse = prob_exceeds(
        BetaPosterior::update(prior, canary_counts),
        BetaPosterior::update(prior, stable_counts),
        margin,
    );
    let prob_not_worse = 1.0 - prob_worse;
    let figures = format!(
        "canary {} of {:.0}, stable {} of {:.0}, P(canary above {}) = {:.3}",
        percent(canary_counts.rate()),
        canary_requests,
        percent(stable_counts.rate()),
        stable_requests,
        percent(margin.limit(stable_counts.rate())),
        prob_worse,
    );

    let outcome = if prob_worse > policy.confidence {
        GateOutcome::Fail { detail: figures }
    } else if canary_requests < policy.min_requests {
        GateOutcome::Inconclusive {
            detail: format!(
                "{figures}; only {canary_requests:.0} canary requests (need {:.0})",
                policy.min_requests
            ),
        }
    } else if prob_not_worse >= policy.confidence {
        GateOutcome::Pass { detail: figures }
    } else {
        GateOutcome::Inconclusive {
            detail: format!(
                "{figures}; not yet {:.0}% sure either way",
                policy.confidence * 100.0
            ),
        }
    };
    (outcome, Some(prob_worse), Some(prob_not_worse))
}

fn latency_gate(policy: &GatePolicy, observation: &Observation) -> GateOutcome {
    let Some(canary) = usable(observation.canary.p95_ms) else {
        return GateOutcome::NoData {
            detail: format!("no canary {} from Prometheus", MissingData::Latency),
        };
    };
    if canary > policy.latency_ceiling_ms {
        return GateOutcome::Fail {
            detail: format!(
                "canary p95 {canary:.0} ms is above the {:.0} ms ceiling",
                policy.latency_ceiling_ms
            ),
        };
    }
    let Some(stable) = usable(observation.stable.p95_ms) else {
        return GateOutcome::NoData {
            detail: format!("no stable {} from Prometheus", MissingData::Latency),
        };
    };
    // A p95 over a handful of requests is mostly noise: below `min_requests` the comparison with
    // stable proves nothing either way (the absolute ceiling above still applies).
    if let Ok((requests, _)) = observation.canary.counts()
        && requests < policy.min_requests
    {
        return GateOutcome::Inconclusive {
            detail: format!(
                "canary p95 {canary:.0} ms, stable p95 {stable:.0} ms; only {requests:.0} canary requests (need {:.0})",
                policy.min_requests
            ),
        };
    }
    let allowed = stable * policy.latency_tolerance + policy.latency_slack_ms;
    if canary > allowed {
        GateOutcome::Fail {
            detail: format!(
                "canary p95 {canary:.0} ms exceeds stable p95 {stable:.0} ms (allowed {allowed:.0} ms)"
            ),
        }
    } else {
        GateOutcome::Pass {
            detail: format!("canary p95 {canary:.0} ms, stable p95 {stable:.0} ms"),
        }
    }
}

fn guardrail_gate(policy: &GatePolicy, canary: &TrackFigures) -> GateOutcome {
    let (requests, failures) = match canary.counts() {
        Ok(counts) => counts,
        Err(missing) => {
            return GateOutcome::NoData {
                detail: format!("no canary {missing} for the guardrail window"),
            };
        }
    };
    // Judged with the same confidence as the comparison, so ten requests with one failure
    // (10 %) do not abort on their own, while a sustained 2 % over thousands does. The prior is
    // centred on the guardrail itself, so it leans neither way.
    let counts = Counts::new(requests, failures);
    let guardrail = policy.guardrail_error_rate;
    let prior = BetaPosterior::centred_on(guardrail);
    let prob_above = BetaPosterior::update(prior, counts).survival(guardrail);
    let detail = format!(
        "canary {} of {:.0} over {} s, P(rate > {}) = {:.3}",
        percent(counts.rate()),
        requests,
        policy.guardrail_window.as_secs(),
        percent(policy.guardrail_error_rate),
        prob_above,
    );
    if prob_above > policy.confidence {
        GateOutcome::Fail { detail }
    } else {
        GateOutcome::Pass { detail }
    }
}

/// What the runner should do after an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum StepDecision {
    /// Keep baking this step.
    Continue,
    /// The step passed: move to the next weight (or promote after the last).
    Advance,
    /// Stop and roll the canary back.
    Abort { reason: String },
    /// Stop promoting and wait for a human.
    Pause { reason: String },
}

/// The running tally of one step, kept in the cluster between evaluations so a resumed run
/// continues where it stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTally {
    /// Failed evaluations in a row (a pass or an inconclusive result ends the run; a hold,
    /// which carries no information, neither extends nor ends it).
    pub consecutive_failures: u32,
    pub evaluations: u32,
}

/// Folds one evaluation into a step's tally and decides what happens next.
///
/// `elapsed` is how long the step has baked; `bake` is its planned duration.
pub fn decide(
    policy: &GatePolicy,
    tally: &mut StepTally,
    evaluation: &Evaluation,
    elapsed: Duration,
    bake: Duration,
) -> StepDecision {
    tally.evaluations += 1;
    let bake_limit = bake.mul_f64(policy.max_bake_factor.max(1.0));
    match evaluation.verdict {
        Verdict::GuardrailBreached => {
            tally.consecutive_failures += 1;
            StepDecision::Abort {
                reason: format!(
                    "absolute guardrail breached: {}",
                    evaluation.guardrail.detail()
                ),
            }
        }
        Verdict::Fail => {
            tally.consecutive_failures += 1;
            if tally.consecutive_failures >= policy.consecutive_failures_to_abort
                && policy.on_latency == OnLatency::Pause
                && evaluation.only_latency_failed()
            {
                StepDecision::Pause {
                    reason: format!(
                        "p95 latency failed {} evaluations in a row (on_latency: pause, a human decides): {}",
                        tally.consecutive_failures,
                        evaluation.latency.detail()
                    ),
                }
            } else if tally.consecutive_failures >= policy.consecutive_failures_to_abort {
                StepDecision::Abort {
                    reason: format!(
                        "{} failed evaluations in a row; last: {}",
                        tally.consecutive_failures,
                        evaluation.summary()
                    ),
                }
            } else {
                StepDecision::Continue
            }
        }
        Verdict::Pass => {
            tally.consecutive_failures = 0;
            if elapsed >= bake {
                StepDecision::Advance
            } else {
                StepDecision::Continue
            }
        }
        Verdict::Inconclusive => {
            tally.consecutive_failures = 0;
            if elapsed >= bake_limit {
                let reason = format!(
                    "still inconclusive after {} s of baking: {}",
                    elapsed.as_secs(),
                    evaluation.summary()
                );
                match policy.on_inconclusive {
                    OnInconclusive::Pause => StepDecision::Pause { reason },
                    OnInconclusive::Abort => StepDecision::Abort { reason },
                }
            } else {
                StepDecision::Continue
            }
        }
        Verdict::Hold => {
            if elapsed >= bake_limit {
                StepDecision::Pause {
                    reason: format!(
                        "no usable data after {} s: {}",
                        elapsed.as_secs(),
                        evaluation.summary()
                    ),
                }
            } else {
                StepDecision::Continue
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    /// Canary and stable at the same scale as a 10 % step: stable sees nine times the traffic.
    fn observation(canary_requests: f64, canary_rate: f64, stable_rate: f64) -> Observation {
        let canary = TrackFigures::new(canary_requests, canary_requests * canary_rate, 120.0);
        Observation {
            canary,
            stable: TrackFigures::new(
                canary_requests * 9.0,
                canary_requests * 9.0 * stable_rate,
                118.0,
            ),
            canary_guardrail: canary,
        }
    }

    fn run(policy: &GatePolicy, observations: &[Observation], bake: Duration) -> StepDecision {
        let mut tally = StepTally::default();
        let mut last = StepDecision::Continue;
        for (i, obs) in observations.iter().enumerate() {
            let evaluation = evaluate(policy, obs);
            last = decide(
                policy,
                &mut tally,
                &evaluation,
                MINUTE * (i as u32 + 1),
                bake,
            );
            if !matches!(last, StepDecision::Continue) {
                break;
            }
        }
        last
    }

    #[test]
    fn equal_rates_pass() {
        let policy = GatePolicy::default();
        let evaluation = evaluate(&policy, &observation(2000.0, 0.005, 0.005));
        assert_eq!(
            evaluation.verdict,
            Verdict::Pass,
            "{}",
            evaluation.summary()
        );
        let steps: Vec<_> = (1..=5)
            .map(|i| observation(400.0 * i as f64, 0.005, 0.005))
            .collect();
        assert_eq!(run(&policy, &steps, 5 * MINUTE), StepDecision::Advance);
    }

    #[test]
    fn three_times_the_error_rate_aborts() {
        let policy = GatePolicy::default();
        // 0.3 % → 0.9 %, 1,000 canary requests a minute: caught well before the bake ends.
        let steps: Vec<_> = (1..=10)
            .map(|i| observation(1000.0 * i as f64, 0.009, 0.003))
            .collect();
        match run(&policy, &steps, 10 * MINUTE) {
            StepDecision::Abort { reason } => {
                assert!(reason.contains("failed evaluations in a row"), "{reason}")
            }
            other => panic!("expected abort, got {other:?}"),
        }
    }

    #[test]
    fn sparse_canary_with_too_few_requests_is_inconclusive_not_passed() {
        let policy = GatePolicy::default();
        // 20 canary requests, none failed: looks perfect, proves nothing.
        let evaluation = evaluate(&policy, &observation(20.0, 0.0, 0.005));
        assert_eq!(evaluation.verdict, Verdict::Inconclusive);
        assert!(evaluation.summary().contains("only 20 canary requests"));
        // One failure among them is not enough to call it worse either.
        let one_failure = Observation {
            canary: TrackFigures::new(20.0, 1.0, 120.0),
            ..observation(20.0, 0.0, 0.005)
        };
        assert_eq!(
            evaluate(&policy, &one_failure).verdict,
            Verdict::Inconclusive
        );
        // Baked to the limit while still inconclusive: pause for a human, do not promote.
        let steps = vec![observation(20.0, 0.0, 0.005); 15];
        assert!(matches!(
            run(&policy, &steps, 5 * MINUTE),
            StepDecision::Pause { .. }
        ));
    }

    #[test]
    fn nan_and_empty_results_hold() {
        let policy = GatePolicy::default();
        let mut nan = observation(1000.0, 0.005, 0.005);
        nan.canary.failures = Some(f64::NAN);
        let evaluation = evaluate(&policy, &nan);
        assert_eq!(evaluation.verdict, Verdict::Hold);
        assert!(evaluation.summary().contains("no canary failure count"));

        let mut empty = observation(1000.0, 0.005, 0.005);
        empty.stable = TrackFigures::default();
        assert_eq!(evaluate(&policy, &empty).verdict, Verdict::Hold);

        let mut no_latency = observation(1000.0, 0.005, 0.005);
        no_latency.canary.p95_ms = None;
        assert_eq!(evaluate(&policy, &no_latency).verdict, Verdict::Hold);

        // Holding never aborts, even for a long time: it pauses at the bake limit.
        let steps = vec![nan; 20];
        assert!(matches!(
            run(&policy, &steps, 5 * MINUTE),
            StepDecision::Pause { .. }
        ));
    }

    #[test]
    fn one_bad_window_among_good_ones_does_not_abort() {
        let policy = GatePolicy::default();
        let good = observation(2000.0, 0.005, 0.005);
        let mut bad = good;
        bad.canary.p95_ms = Some(900.0);
        let steps = vec![good, bad, good, good, good];
        assert_eq!(run(&policy, &steps, 5 * MINUTE), StepDecision::Advance);
        // Two in a row do.
        let steps = vec![good, bad, bad, good, good];
        assert!(matches!(
            run(&policy, &steps, 5 * MINUTE),
            StepDecision::Abort { .. }
        ));
    }

    #[test]
    fn guardrail_aborts_whatever_stable_does() {
        let policy = GatePolicy::default();
        // Stable is just as bad, so the comparison passes, but 3 % over 5 minutes is too much.
        let obs = observation(3000.0, 0.03, 0.03);
        let evaluation = evaluate(&policy, &obs);
        assert_eq!(evaluation.verdict, Verdict::GuardrailBreached);
        match run(&policy, &[obs], 5 * MINUTE) {
            StepDecision::Abort { reason } => assert!(reason.contains("guardrail"), "{reason}"),
            other => panic!("expected abort, got {other:?}"),
        }
    }

    #[test]
    fn latency_gates_on_ceiling_and_against_stable() {
        let policy = GatePolicy::default();
        let mut obs = observation(2000.0, 0.005, 0.005);
        obs.canary.p95_ms = Some(600.0);
        obs.stable.p95_ms = Some(590.0);
        let evaluation = evaluate(&policy, &obs);
        assert_eq!(evaluation.verdict, Verdict::Fail);
        assert!(evaluation.summary().contains("500 ms ceiling"));

        obs.canary.p95_ms = Some(300.0);
        obs.stable.p95_ms = Some(100.0);
        let evaluation = evaluate(&policy, &obs);
        assert_eq!(evaluation.verdict, Verdict::Fail);
        assert!(evaluation.summary().contains("allowed 145 ms"));
    }

    #[test]
    fn a_p95_over_too_few_requests_is_inconclusive_but_the_ceiling_still_fails() {
        let policy = GatePolicy::default();
        let mut obs = observation(5.0, 0.0, 0.005);
        obs.canary.p95_ms = Some(300.0);
        obs.stable.p95_ms = Some(100.0);
        let latency = latency_gate(&policy, &obs);
        assert_eq!(latency.name(), "inconclusive", "{latency:?}");
        assert!(format!("{latency:?}").contains("only 5 canary requests (need 50)"));
        obs.canary.p95_ms = Some(700.0);
        assert_eq!(latency_gate(&policy, &obs).name(), "fail");
        // With enough requests the same comparison fails.
        let mut busy = observation(2000.0, 0.005, 0.005);
        busy.canary.p95_ms = Some(300.0);
        busy.stable.p95_ms = Some(100.0);
        assert_eq!(latency_gate(&policy, &busy).name(), "fail");
    }

    #[test]
    fn policies_out_of_range_are_refused_by_name() {
        assert_eq!(check_policy(&GatePolicy::default()), Ok(()));
        let error = check_policy(&GatePolicy {
            confidence: 1.5,
            ..GatePolicy::default()
        })
        .unwrap_err();
        assert!(error.contains("`confidence`"), "{error}");
        let error = check_policy(&GatePolicy {
            consecutive_failures_to_abort: 0,
            ..GatePolicy::default()
        })
        .unwrap_err();
        assert!(error.contains("`consecutive_failures_to_abort`"), "{error}");
    }

    #[test]
    fn inconclusive_can_be_configured_to_abort() {
        let policy = GatePolicy {
            on_inconclusive: OnInconclusive::Abort,
            ..GatePolicy::default()
        };
        let steps = vec![observation(20.0, 0.0, 0.005); 15];
        assert!(matches!(
            run(&policy, &steps, 5 * MINUTE),
            StepDecision::Abort { .. }
        ));
    }
}
