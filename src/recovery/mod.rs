//! Verified recovery: what `psctl rollback` checks once the rolled-back revision has rolled out
//! (the rollback runbook's "verifying rollback success").
//!
//! - the smoke suite's `cluster` and `metrics` categories for the component, retried while the
//!   pods settle (the same checks a deploy runs after its rollout);
//! - when the environment configures `recovery.deposit_rate_baseline`, the deposit rate back to
//!   its pre-incident level within the configured window ([`baseline`]).
//!
//! The result is a value ([`Verification`]) that the command prints in its JSON report and
//! maps to an exit code: 1 when a check judged and failed, 3 when every failure was a
//! dependency out of reach.

pub mod baseline;

use std::time::Duration;

use serde::Serialize;

use crate::error::ExitStatus;
use crate::output::{CheckState, Output};
use crate::prom::Prometheus;
use crate::settings::{BaselineSpec, Component, Environment};
use crate::smoke::{self, Category, CheckResult, Verdict};

pub use baseline::{BaselineSource, RateCheck, RateError, RateSource};

/// Overall state of the verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    /// `--no-verify`, or nothing rolled out to verify (an unfinished first install removed).
    Skipped,
    /// The rollback itself failed before there was anything to verify.
    NotRun,
}

/// The `verification` object of `psctl rollback -o json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    pub status: Status,
    /// Why it was skipped or not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The smoke checks, in plan order.
    pub checks: Vec<CheckResult>,
    /// The deposit rate against its baseline (`None`: not configured, or not reached).
    pub deposit_rate: Option<RateCheck>,
}

impl Verification {
    pub fn skipped(reason: impl Into<String>) -> Self {
        Self {
            status: Status::Skipped,
            reason: Some(reason.into()),
            checks: Vec::new(),
            deposit_rate: None,
        }
    }

    pub fn not_run(reason: impl Into<String>) -> Self {
        Self {
            status: Status::NotRun,
            ..Self::skipped(reason)
        }
    }

    /// Builds the verdict from the results. Pure.
    pub fn judged(checks: Vec<CheckResult>, deposit_rate: Option<RateCheck>) -> Self {
        let failed = checks.iter().any(|c| c.result == Verdict::Fail)
            || deposit_rate.as_ref().is_some_and(|r| !r.passed());
        Self {
            status: if failed {
                Status::Failed
            } else {
                Status::Passed
            },
            reason: None,
            checks,
            deposit_rate,
        }
    }

    /// `name: evidence` of every failure, `; `-joined.
    pub fn failure_summary(&self) -> String {
        let mut failures: Vec<String> = self
            .checks
            .iter()
            .filter(|c| c.result == Verdict::Fail)
            .map(|c| format!("{}: {}", c.name, c.evidence))
            .collect();
        if let Some(rate) = self.deposit_rate.as_ref().filter(|r| !r.passed()) {
            failures.push(format!("deposit-rate: {}", rate.evidence));
        }
        failures.join("; ")
    }

    /// 0 unless it failed; 3 when every failure was a dependency out of reach, else 1.
    pub fn exit_status(&self) -> ExitStatus {
        if self.status != Status::Failed {
            return ExitStatus::Success;
        }
        let smoke_unreachable = self
            .checks
            .iter()
            .filter(|c| c.result == Verdict::Fail)
            .all(|c| c.unreachable);
        let rate_unreachable = self
            .deposit_rate
            .as_ref()
            .filter(|r| !r.passed())
            .is_none_or(|r| r.unreachable);
        if smoke_unreachable && rate_unreachable {
            ExitStatus::Unreachable
        } else {
            ExitStatus::VerificationFailed
        }
    }
}

/// When the incident started, for the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incident {
    /// Unix seconds the revision rolled back from was deployed, when known.
    pub started: Option<i64>,
    /// Unix seconds the rollback began.
    pub rollback_started: i64,
}

impl Incident {
    /// The instant the baseline is read at, and why. Pure.
    pub fn baseline_at(&self, spec: &BaselineSpec) -> (i64, BaselineSource) {
        match self.started {
            Some(started) => (started, BaselineSource::RevisionDeployed),
            None => (
                self.rollback_started
                    .saturating_sub(i64::try_from(spec.lookback.as_secs()).unwrap_or(i64::MAX)),
                BaselineSource::Lookback,
            ),
        }
    }
}

/// Runs the verification of `component` after its rollback rolled out.
pub async fn verify(
    client: &kube::Client,
    environment: &Environment,
    component: &Component,
    incident: Incident,
    output: &Output,
) -> Verification {
    let checks = match smoke::after_change(client, environment, &component.name).await {
        Ok(report) => {
            report.print_checks(output);
            report.checks
        }
        // The component was resolved from this environment: planning cannot fail, but if it
        // did, say so as a failed check rather than pass silently.
        Err(error) => vec![CheckResult {
            name: format!("smoke/{}", component.name),
            category: Category::Cluster,
            component: Some(component.name.clone()),
            result: Verdict::Fail,
            duration_ms: 0,
            evidence: error.to_string(),
            unreachable: false,
        }],
    };
    let deposit_rate = match &environment.recovery.deposit_rate_baseline {
        None => None,
        Some(spec) => {
            let (at, source) = incident.baseline_at(spec);
            output.info(format!(
                "waiting up to {}s for the deposit rate to return to its baseline",
                spec.window.as_secs()
            ));
            let rate = match &environment.prometheus_url {
                None => RateCheck::not_started(
                    &spec.query,
                    at,
                    source,
                    format!(
                        "`recovery.deposit_rate_baseline` is configured but environment `{}` has no `prometheus_url`",
                        environment.name
                    ),
                ),
                Some(url) => match Prometheus::new(url, Duration::from_secs(10)) {
                    Ok(prometheus) => {
                        let source_edge = PromRates {
                            prometheus,
                            query: spec.query.clone(),
                        };
                        baseline::check(&source_edge, spec, at, source).await
                    }
                    Err(error) => RateCheck::not_started(
                        &spec.query,
                        at,
                        source,
                        format!("configuring the Prometheus client: {error}"),
                    ),
                },
            };
            output.check(
                if rate.passed() {
                    CheckState::Ok
                } else {
                    CheckState::Fail
                },
                "deposit rate",
                &rate.evidence,
            );
            Some(rate)
        }
    };
    Verification::judged(checks, deposit_rate)
}

/// The one [`RateSource`] over Prometheus and the wall clock.
struct PromRates {
    prometheus: Prometheus,
    query: String,
}

impl RateSource for PromRates {
    fn now(&self) -> i64 {
        chrono::Utc::now().timestamp()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    async fn rate(&self, at: Option<i64>) -> Result<Option<f64>, RateError> {
        let samples = match at {
            Some(at) => self.prometheus.query_at(&self.query, at).await,
            None => self.prometheus.query(&self.query).await,
        }
        .map_err(|error| RateError {
            unreachable: error.is_unreachable(),
            message: error.to_string(),
        })?;
        let values: Vec<f64> = samples.iter().filter_map(|s| s.finite()).collect();
        Ok((!values.is_empty()).then(|| values.iter().sum()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, result: Verdict, unreachable: bool) -> CheckResult {
        CheckResult {
            name: name.to_owned(),
            category: Category::Cluster,
            component: Some("webhook".to_owned()),
            result,
            duration_ms: 1,
            evidence: format!("{name} evidence"),
            unreachable,
        }
    }

    fn rate(result: Verdict, unreachable: bool) -> RateCheck {
        RateCheck {
            query: "q".to_owned(),
            baseline_at: 0,
            baseline_source: BaselineSource::Lookback,
            baseline: Some(1.0),
            threshold: Some(0.8),
            last: Some(0.1),
            result,
            waited_seconds: 60,
            evidence: "stayed low".to_owned(),
            unreachable,
        }
    }

    #[test]
    fn any_failure_fails_and_only_unreachable_failures_exit_3() {
        let passed = Verification::judged(
            vec![check("pods-ready/webhook", Verdict::Pass, false)],
            Some(rate(Verdict::Pass, false)),
        );
        assert_eq!(
            (passed.status, passed.exit_status()),
            (Status::Passed, ExitStatus::Success)
        );

        let smoke_failed = Verification::judged(
            vec![
                check("pods-ready/webhook", Verdict::Pass, false),
                check("metrics/webhook", Verdict::Fail, false),
            ],
            None,
        );
        assert_eq!(smoke_failed.status, Status::Failed);
        assert_eq!(smoke_failed.exit_status(), ExitStatus::VerificationFailed);
        assert_eq!(
            smoke_failed.failure_summary(),
            "metrics/webhook: metrics/webhook evidence"
        );

        let rate_low = Verification::judged(
            vec![check("pods-ready/webhook", Verdict::Pass, false)],
            Some(rate(Verdict::Fail, false)),
        );
        assert_eq!(rate_low.exit_status(), ExitStatus::VerificationFailed);
        assert_eq!(rate_low.failure_summary(), "deposit-rate: stayed low");

        let out_of_reach = Verification::judged(
            vec![check("metrics/webhook", Verdict::Fail, true)],
            Some(rate(Verdict::Fail, true)),
        );
        assert_eq!(out_of_reach.exit_status(), ExitStatus::Unreachable);
        let mixed = Verification::judged(
            vec![check("metrics/webhook", Verdict::Fail, true)],
            Some(rate(Verdict::Fail, false)),
        );
        assert_eq!(mixed.exit_status(), ExitStatus::VerificationFailed);

        assert_eq!(
            Verification::skipped("--no-verify").exit_status(),
            ExitStatus::Success
        );
    }

    #[test]
    fn the_baseline_is_read_when_the_bad_revision_arrived_or_a_lookback_before_the_rollback() {
        let spec = BaselineSpec {
            query: "q".to_owned(),
            window: Duration::from_secs(600),
            tolerance: 0.8,
            interval: Duration::from_secs(15),
            lookback: Duration::from_secs(1800),
        };
        let known = Incident {
            started: Some(5_000),
            rollback_started: 9_000,
        };
        assert_eq!(
            known.baseline_at(&spec),
            (5_000, BaselineSource::RevisionDeployed)
        );
        let unknown = Incident {
            started: None,
            rollback_started: 9_000,
        };
        assert_eq!(
            unknown.baseline_at(&spec),
            (7_200, BaselineSource::Lookback)
        );
    }
}
