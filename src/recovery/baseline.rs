//! Whether the deposit rate came back: the rate before the incident (the baseline) is read
//! once, then the current rate every interval until it reaches `tolerance` × baseline or the
//! window ends. The loop is written over [`RateSource`] (clock, sleep, Prometheus), so it runs
//! in tests on scripted figures and a fake clock.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::settings::BaselineSpec;
use crate::smoke::Verdict;

/// Why a rate could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateError {
    pub message: String,
    /// Prometheus could not be asked (as opposed to: it refused the query).
    pub unreachable: bool,
}

/// The edges of the check.
pub trait RateSource {
    /// Unix seconds.
    fn now(&self) -> i64;
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()>;
    /// The query's series summed, evaluated at `at` (unix seconds) or now; `None` when the query
    /// returned no finite series.
    fn rate(&self, at: Option<i64>) -> impl Future<Output = Result<Option<f64>, RateError>>;
}

/// Where the baseline instant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineSource {
    /// The moment the revision being rolled back from was deployed: the incident's start.
    RevisionDeployed,
    /// The rollback's start minus `lookback` (the incident's start is unknown, e.g. `--undo`).
    Lookback,
}

/// The `deposit_rate` entry of the rollback's verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateCheck {
    pub query: String,
    /// Unix seconds the baseline was evaluated at.
    pub baseline_at: i64,
    pub baseline_source: BaselineSource,
    /// The summed rate then (`None`: the query returned nothing at that time).
    pub baseline: Option<f64>,
    /// `tolerance` × baseline: the rate that counts as recovered.
    pub threshold: Option<f64>,
    /// The last rate read during the window.
    pub last: Option<f64>,
    /// `pass` or `fail`.
    pub result: Verdict,
    /// Seconds from the first read of the current rate to the verdict.
    pub waited_seconds: u64,
    pub evidence: String,
    /// The failure is Prometheus out of reach, not a rate that stayed low.
    pub unreachable: bool,
}

impl RateCheck {
    pub fn passed(&self) -> bool {
        self.result == Verdict::Pass
    }

    /// A check that could not start (no Prometheus configured, a client that cannot be
    /// built): failed, with why.
    pub fn not_started(
        query: &str,
        baseline_at: i64,
        baseline_source: BaselineSource,
        evidence: String,
    ) -> Self {
        Self {
            query: query.to_owned(),
            baseline_at,
            baseline_source,
            baseline: None,
            threshold: None,
            last: None,
            result: Verdict::Fail,
            waited_seconds: 0,
            evidence,
            unreachable: false,
        }
    }
}

/// Reads the baseline at `baseline_at`, then waits up to `spec.window` for the current rate to
/// reach `spec.tolerance` × baseline.
pub async fn check<S: RateSource>(
    source: &S,
    spec: &BaselineSpec,
    baseline_at: i64,
    baseline_source: BaselineSource,
) -> RateCheck {
    let mut result = RateCheck {
        query: spec.query.clone(),
        baseline_at,
        baseline_source,
        baseline: None,
        threshold: None,
        last: None,
        result: Verdict::Fail,
        waited_seconds: 0,
        evidence: String::new(),
        unreachable: false,
    };
    let baseline = match source.rate(Some(baseline_at)).await {
        Ok(Some(value)) => value,
        Ok(None) => {
            result.evidence = format!(
                "the query returned no data at the baseline time ({}); check the query, and that Prometheus keeps data that old",
                rfc3339(baseline_at)
            );
            return result;
        }
        Err(error) => {
            result.evidence = format!("reading the baseline: {}", error.message);
            result.unreachable = error.unreachable;
            return result;
        }
    };
    result.baseline = Some(baseline);
    if baseline <= 0.0 {
        result.threshold = Some(0.0);
        result.result = Verdict::Pass;
        result.evidence = format!(
            "the rate was {} before the incident ({}): there is nothing to return to",
            figure(baseline),
            rfc3339(baseline_at)
        );
        return result;
    }
    let threshold = baseline * spec.tolerance;
    result.threshold = Some(threshold);
    let started = source.now();
    let deadline = started.saturating_add(seconds(spec.window));
    loop {
        let last_error = match source.rate(None).await {
            Ok(Some(value)) => {
                result.last = Some(value);
                if value >= threshold {
                    result.result = Verdict::Pass;
                    result.waited_seconds = elapsed(started, source.now());
                    result.evidence = format!(
                        "the rate is {} after {}s, at least {} ({:.0}% of the baseline {} at {})",
                        figure(value),
                        result.waited_seconds,
                        figure(threshold),
                        spec.tolerance * 100.0,
                        figure(baseline),
                        rfc3339(baseline_at)
                    );
                    return result;
                }
                None
            }
            Ok(None) => None,
            Err(error) => Some(error),
        };
        let now = source.now();
        if now >= deadline {
            result.waited_seconds = elapsed(started, now);
            let seen = match (&last_error, result.last) {
                (Some(error), _) => format!("the last read failed: {}", error.message),
                (None, Some(value)) => format!("it is {}", figure(value)),
                (None, None) => "the query returns no data now".to_owned(),
            };
            // Unreachable only when no read of the current rate ever succeeded.
            result.unreachable =
                result.last.is_none() && last_error.as_ref().is_some_and(|e| e.unreachable);
            result.evidence = format!(
                "the rate did not return to {} ({:.0}% of the baseline {} at {}) within {}s: {seen}",
                figure(threshold),
                spec.tolerance * 100.0,
                figure(baseline),
                rfc3339(baseline_at),
                seconds(spec.window)
            );
            return result;
        }
        let remaining = Duration::from_secs(u64::try_from(deadline - now).unwrap_or(0));
        source.sleep(spec.interval.min(remaining)).await;
    }
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

fn elapsed(from: i64, to: i64) -> u64 {
    u64::try_from(to.saturating_sub(from)).unwrap_or(0)
}

fn figure(value: f64) -> String {
    format!("{value:.4}/s")
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(|| unix.to_string(), |t| t.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    use super::*;

    /// Scripted rates on a fake clock: `baseline` answers the read at a time, `current` the
    /// reads of now, one per call (the last one repeats).
    struct Script {
        clock: Cell<i64>,
        baseline: Result<Option<f64>, RateError>,
        current: RefCell<VecDeque<Result<Option<f64>, RateError>>>,
        asked_at: RefCell<Vec<Option<i64>>>,
    }

    impl Script {
        fn new(
            baseline: Result<Option<f64>, RateError>,
            current: Vec<Result<Option<f64>, RateError>>,
        ) -> Self {
            Self {
                clock: Cell::new(1_000_000),
                baseline,
                current: RefCell::new(current.into()),
                asked_at: RefCell::new(Vec::new()),
            }
        }
    }

    impl RateSource for Script {
        fn now(&self) -> i64 {
            self.clock.get()
        }

        async fn sleep(&self, duration: Duration) {
            self.clock.set(self.clock.get() + seconds(duration));
        }

        async fn rate(&self, at: Option<i64>) -> Result<Option<f64>, RateError> {
            self.asked_at.borrow_mut().push(at);
            if at.is_some() {
                return self.baseline.clone();
            }
            let mut current = self.current.borrow_mut();
            if current.len() > 1 {
                current.pop_front().unwrap()
            } else {
                current.front().cloned().unwrap()
            }
        }
    }

    fn spec() -> BaselineSpec {
        BaselineSpec {
            query: "sum(rate(problemsolver_deposits_processed_total[5m]))".to_owned(),
            window: Duration::from_secs(120),
            tolerance: 0.8,
            interval: Duration::from_secs(30),
            lookback: Duration::from_secs(1800),
        }
    }

    fn down() -> RateError {
        RateError {
            message: "Prometheus at http://p is unreachable: connection refused".to_owned(),
            unreachable: true,
        }
    }

    #[tokio::test]
    async fn the_rate_back_above_the_threshold_passes_as_soon_as_it_is_seen() {
        let source = Script::new(
            Ok(Some(2.0)),
            vec![Ok(Some(0.5)), Ok(Some(1.0)), Ok(Some(1.7)), Ok(Some(0.1))],
        );
        let result = check(&source, &spec(), 900_000, BaselineSource::RevisionDeployed).await;
        assert!(result.passed(), "{result:?}");
        assert_eq!(result.baseline, Some(2.0));
        assert_eq!(result.threshold, Some(1.6));
        assert_eq!(result.last, Some(1.7));
        assert_eq!(result.waited_seconds, 60);
        assert!(
            result.evidence.contains("1.7000/s after 60s"),
            "{}",
            result.evidence
        );
        // The baseline was read at the incident's start, every other read at "now".
        assert_eq!(
            source.asked_at.borrow().as_slice(),
            [Some(900_000), None, None, None]
        );
    }

    #[tokio::test]
    async fn a_rate_that_stays_low_fails_at_the_end_of_the_window() {
        let source = Script::new(Ok(Some(2.0)), vec![Ok(Some(0.4))]);
        let result = check(&source, &spec(), 900_000, BaselineSource::Lookback).await;
        assert_eq!(result.result, Verdict::Fail);
        assert!(!result.unreachable);
        assert_eq!(result.waited_seconds, 120);
        assert_eq!(result.last, Some(0.4));
        assert!(
            result
                .evidence
                .starts_with("the rate did not return to 1.6000/s (80% of the baseline 2.0000/s"),
            "{}",
            result.evidence
        );
        assert!(
            result.evidence.ends_with("within 120s: it is 0.4000/s"),
            "{}",
            result.evidence
        );
        // Reads at 0, 30, 60, 90 and 120 s: the window's last instant is read too.
        assert_eq!(source.asked_at.borrow().len(), 1 + 5);
    }

    #[tokio::test]
    async fn no_baseline_data_fails_and_a_zero_baseline_passes_without_waiting() {
        let source = Script::new(Ok(None), vec![Ok(Some(5.0))]);
        let result = check(&source, &spec(), 900_000, BaselineSource::RevisionDeployed).await;
        assert_eq!(result.result, Verdict::Fail);
        assert!(
            result.evidence.contains("no data at the baseline time"),
            "{}",
            result.evidence
        );
        assert_eq!(source.asked_at.borrow().len(), 1);

        let source = Script::new(Ok(Some(0.0)), vec![Ok(None)]);
        let result = check(&source, &spec(), 900_000, BaselineSource::RevisionDeployed).await;
        assert!(result.passed(), "{result:?}");
        assert!(
            result.evidence.contains("nothing to return to"),
            "{}",
            result.evidence
        );
        assert_eq!(source.asked_at.borrow().len(), 1);
    }

    #[tokio::test]
    async fn prometheus_out_of_reach_is_unreachable_only_when_nothing_was_read() {
        let source = Script::new(Err(down()), vec![Ok(Some(5.0))]);
        let result = check(&source, &spec(), 900_000, BaselineSource::RevisionDeployed).await;
        assert!(
            result.unreachable && result.result == Verdict::Fail,
            "{result:?}"
        );

        let source = Script::new(Ok(Some(2.0)), vec![Err(down())]);
        let result = check(&source, &spec(), 900_000, BaselineSource::RevisionDeployed).await;
        assert!(
            result.unreachable && result.result == Verdict::Fail,
            "{result:?}"
        );
        assert!(
            result.evidence.contains("the last read failed: Prometheus"),
            "{}",
            result.evidence
        );

        // A low rate was read, then Prometheus went away: the rate said no, not the network.
        let source = Script::new(Ok(Some(2.0)), vec![Ok(Some(0.1)), Err(down())]);
        let result = check(&source, &spec(), 900_000, BaselineSource::RevisionDeployed).await;
        assert!(
            !result.unreachable && result.result == Verdict::Fail,
            "{result:?}"
        );
    }
}
