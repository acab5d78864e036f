//! The PromQL of a canary evaluation, built as plain strings (values a test or `--dry-run` can
//! read), and the decoding of Prometheus' answers into [`TrackFigures`] per track.
//!
//! Every query is scoped to the component's pods (namespace plus the component's label
//! selector) and grouped by the `track` label, so canary and stable are measured by the same
//! expression over the same window. No I/O here.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::canary::gate::TrackFigures;
use crate::prom::Sample;

/// The label that tells the tracks apart, as the chart and the scrape configuration set it.
pub const TRACK_LABEL: &str = "track";
pub const CANARY_TRACK: &str = "canary";
pub const STABLE_TRACK: &str = "stable";

/// Shortest window queried. Prometheus needs two samples of a counter inside the window to
/// compute `increase`; three scrape intervals (5 s in the sandbox, 15 s in the chart's
/// ServiceMonitor) leave room for one missed scrape.
pub const MIN_WINDOW: Duration = Duration::from_secs(30);

/// Which metrics measure a component's requests, failures and latency. The defaults are the
/// webhook worker's (`services/webhook-worker/src/metrics.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricNames {
    /// A counter of requests, one series per outcome label.
    pub requests: String,
    /// The label matcher that selects failed requests among `requests`' series.
    pub failure_matcher: String,
    /// A histogram of request durations in seconds (the name without `_bucket`).
    pub latency_histogram: String,
}

impl Default for MetricNames {
    fn default() -> Self {
        Self {
            requests: "webhook_deliveries_total".to_owned(),
            failure_matcher: "status=\"failure\"".to_owned(),
            latency_histogram: "webhook_delivery_duration_seconds".to_owned(),
        }
    }
}

/// Which series belong to the component: its namespace and its pods' labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// PromQL label matchers, e.g. `namespace="default"`, `app="problemsolver-webhook"`.
    matchers: Vec<String>,
}

impl Scope {
    /// The scope of `namespace` and a Kubernetes equality selector such as
    /// `app=problemsolver-webhook` (`k=v`, `k==v` and `k!=v` terms, comma-separated).
    pub fn new(namespace: &str, selector: &str) -> Result<Self, String> {
        let mut matchers = vec![format!("namespace=\"{}\"", escape(namespace))];
        for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, operator, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, "!=", v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, "=", v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, "=", v)
            } else {
                return Err(format!(
                    "selector term `{term}` is not `label=value`; canary queries need equality selectors"
                ));
            };
            let key = key.trim();
            let valid_key = !key.is_empty()
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !key.starts_with(|c: char| c.is_ascii_digit());
            if !valid_key {
                return Err(format!(
                    "selector label `{key}` cannot be a Prometheus label name (letters, digits and `_`)"
                ));
            }
            matchers.push(format!("{key}{operator}\"{}\"", escape(value.trim())));
        }
        Ok(Self { matchers })
    }

    fn with(&self, extra: &str) -> String {
        let mut all = self.matchers.clone();
        if !extra.is_empty() {
            all.push(extra.to_owned());
        }
        format!("{{{}}}", all.join(","))
    }
}

/// Escapes a label value for a double-quoted PromQL string.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A window as a PromQL range, in whole seconds, never shorter than [`MIN_WINDOW`].
pub fn range(window: Duration) -> String {
    format!("{}s", window.max(MIN_WINDOW).as_secs())
}

/// The three queries of one window, each returning one series per track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowQueries {
    pub requests: String,
    pub failures: String,
    /// p95 in milliseconds.
    pub p95_ms: String,
}

/// The queries over `window` (counted back from the evaluation time).
pub fn window_queries(names: &MetricNames, scope: &Scope, window: Duration) -> WindowQueries {
    let range = range(window);
    WindowQueries {
        requests: format!(
            "sum by ({TRACK_LABEL}) (increase({}{}[{range}]))",
            names.requests,
            scope.with("")
        ),
        failures: format!(
            "sum by ({TRACK_LABEL}) (increase({}{}[{range}]))",
            names.requests,
            scope.with(&names.failure_matcher)
        ),
        p95_ms: format!(
            "1000 * histogram_quantile(0.95, sum by (le, {TRACK_LABEL}) (rate({}_bucket{}[{range}])))",
            names.latency_histogram,
            scope.with("")
        ),
    }
}

/// Each track's value in an instant vector. A track without a series is absent; a NaN or
/// infinite value is kept as `None` so the gate engine treats it as missing data.
pub fn by_track(samples: &[Sample]) -> BTreeMap<String, Option<f64>> {
    samples
        .iter()
        .filter_map(|sample| {
            let track = sample.labels.get(TRACK_LABEL)?;
            Some((track.clone(), sample.finite()))
        })
        .collect()
}

/// One track's figures from the three answers of [`window_queries`].
pub fn track_figures(
    track: &str,
    requests: &BTreeMap<String, Option<f64>>,
    failures: &BTreeMap<String, Option<f64>>,
    p95_ms: &BTreeMap<String, Option<f64>>,
) -> TrackFigures {
    TrackFigures {
        requests: requests.get(track).copied().flatten(),
        failures: failures.get(track).copied().flatten(),
        p95_ms: p95_ms.get(track).copied().flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(track: Option<&str>, value: f64) -> Sample {
        Sample {
            labels: track
                .map(|t| BTreeMap::from([(TRACK_LABEL.to_owned(), t.to_owned())]))
                .unwrap_or_default(),
            value,
        }
    }

    #[test]
    fn queries_are_scoped_to_the_component_and_grouped_by_track() {
        let scope = Scope::new("payments", "app=problemsolver-webhook").unwrap();
        let queries = window_queries(&MetricNames::default(), &scope, Duration::from_secs(95));
        assert_eq!(
            queries.requests,
            "sum by (track) (increase(webhook_deliveries_total{namespace=\"payments\",app=\"problemsolver-webhook\"}[95s]))"
        );
        assert_eq!(
            queries.failures,
            "sum by (track) (increase(webhook_deliveries_total{namespace=\"payments\",app=\"problemsolver-webhook\",status=\"failure\"}[95s]))"
        );
        assert_eq!(
            queries.p95_ms,
            "1000 * histogram_quantile(0.95, sum by (le, track) (rate(webhook_delivery_duration_seconds_bucket{namespace=\"payments\",app=\"problemsolver-webhook\"}[95s])))"
        );
    }

    #[test]
    fn a_young_step_is_queried_over_the_minimum_window() {
        assert_eq!(range(Duration::from_secs(4)), "30s");
        assert_eq!(range(Duration::from_millis(61_900)), "61s");
    }

    #[test]
    fn selectors_become_matchers_and_bad_ones_are_refused() {
        let scope = Scope::new("ns", "app=a, tier!=batch,team==pay").unwrap();
        assert_eq!(
            scope.with(""),
            "{namespace=\"ns\",app=\"a\",tier!=\"batch\",team=\"pay\"}"
        );
        assert!(
            Scope::new("ns", "app in (a,b)")
                .unwrap_err()
                .contains("`app in (a")
        );
        assert!(
            Scope::new("ns", "app.kubernetes.io/name=x")
                .unwrap_err()
                .contains("Prometheus label name")
        );
        // A quote in a value cannot break out of the string.
        assert_eq!(
            Scope::new("n\"s", "").unwrap().with(""),
            "{namespace=\"n\\\"s\"}"
        );
    }

    #[test]
    fn answers_decode_per_track_with_nan_and_absent_series_missing() {
        let requests = by_track(&[
            sample(Some("canary"), 120.0),
            sample(Some("stable"), 1080.0),
        ]);
        let failures = by_track(&[sample(Some("canary"), f64::NAN), sample(None, 3.0)]);
        let p95 = by_track(&[sample(Some("stable"), 42.5)]);
        let canary = track_figures(CANARY_TRACK, &requests, &failures, &p95);
        assert_eq!(canary.requests, Some(120.0));
        assert_eq!(canary.failures, None, "NaN is missing data");
        assert_eq!(canary.p95_ms, None, "no series is missing data");
        let stable = track_figures(STABLE_TRACK, &requests, &failures, &p95);
        assert_eq!(
            stable,
            TrackFigures {
                requests: Some(1080.0),
                failures: None,
                p95_ms: Some(42.5),
            }
        );
    }
}
