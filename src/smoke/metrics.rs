//! Metrics checks: the component's `/metrics` read through the API server's proxy (service
//! proxy, or each pod's proxy when a pod selector narrows the run), parsed with
//! prometheus-parse, checked for validity and for the required names; and the freshness of the
//! poller's last-success gauge. Parsing and judging are pure ([`Exposition`], [`judge_endpoint`],
//! [`judge_freshness`]).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::{Outcome, pod_selector};
use crate::cluster::describe;
use crate::settings::{Component, MetricsSpec};

/// A parsed text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposition {
    /// Metric families and sample names present (a family declared with `# TYPE` counts even
    /// without samples: a counter never incremented has no sample yet).
    pub names: BTreeSet<String>,
    /// Samples: name, labels (`k="v"` text) and value.
    pub samples: Vec<(String, f64)>,
    /// Lines that are neither comments nor valid samples, with their line number.
    pub invalid: Vec<(usize, String)>,
}

impl Exposition {
    /// Parses `text` with prometheus-parse, recording lines it cannot read as samples.
    pub fn parse(text: &str) -> Self {
        let mut names = BTreeSet::new();
        let mut invalid = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix('#') {
                // `# TYPE name kind` declares a family; OpenMetrics counters add `_total`.
                let mut words = rest.split_whitespace();
                if words.next() == Some("TYPE")
                    && let Some(name) = words.next()
                {
                    names.insert(name.to_owned());
                    names.insert(format!("{name}_total"));
                }
                continue;
            }
            match prometheus_parse::LineInfo::parse(trimmed) {
                prometheus_parse::LineInfo::Sample {
                    metric_name, value, ..
                } if parse_value(value).is_some() => {
                    names.insert(metric_name.to_owned());
                }
                _ => invalid.push((index + 1, shorten(trimmed))),
            }
        }
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let samples = prometheus_parse::Scrape::parse(lines)
            .map(|scrape| {
                scrape
                    .samples
                    .into_iter()
                    .filter_map(|sample| {
                        let value = match sample.value {
                            prometheus_parse::Value::Counter(v)
                            | prometheus_parse::Value::Gauge(v)
                            | prometheus_parse::Value::Untyped(v) => v,
                            _ => return None,
                        };
                        Some((sample.metric, value))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            names,
            samples,
            invalid,
        }
    }

    /// Required names absent from the exposition.
    pub fn missing(&self, required: &[String]) -> Vec<String> {
        required
            .iter()
            .filter(|name| !self.names.contains(name.as_str()))
            .cloned()
            .collect()
    }

    /// Sum of every sample of `name` (all label sets); `None` when there is none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let values: Vec<f64> = self
            .samples
            .iter()
            .filter(|(metric, _)| metric == name)
            .map(|(_, value)| *value)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// Largest sample of `name`.
    pub fn max(&self, name: &str) -> Option<f64> {
        self.samples
            .iter()
            .filter(|(metric, _)| metric == name)
            .map(|(_, value)| *value)
            .reduce(f64::max)
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

fn shorten(line: &str) -> String {
    let mut text: String = line.chars().take(80).collect();
    if line.chars().count() > 80 {
        text.push('…');
    }
    text
}

/// Required metric names absent from a Prometheus text exposition. A counter that has never
/// been incremented has a `# TYPE` line but no sample, so declared families count as present.
pub fn missing_metrics(exposition: &str, required: &[String]) -> Vec<String> {
    Exposition::parse(exposition).missing(required)
}

/// The verdict on one scraped endpoint: valid, non-empty, every required name present. Pure.
pub fn judge_endpoint(source: &str, text: &str, spec: &MetricsSpec) -> Outcome {
    let exposition = Exposition::parse(text);
    if let Some((line, content)) = exposition.invalid.first() {
        return Outcome::fail(format!(
            "{source}: invalid exposition: {} line(s) are not samples, first at line {line}: `{content}`",
            exposition.invalid.len()
        ));
    }
    if exposition.names.is_empty() {
        return Outcome::fail(format!(
            "{source}: the endpoint answered without any metric"
        ));
    }
    let missing = exposition.missing(&spec.required);
    if !missing.is_empty() {
        return Outcome::fail(format!(
            "{source}: missing required metric(s) {}; the running image does not export them (wrong image, or the configuration's `metrics.required` names a metric that does not exist)",
            missing.join(", ")
        ));
    }
    Outcome::pass(format!(
        "{source}: valid exposition, {} series, {}/{} required metrics present",
        exposition.samples.len(),
        spec.required.len(),
        spec.required.len()
    ))
}

/// Reads the component's metrics endpoint and judges it. Without a pod selector the endpoint
/// is read through the Service proxy (as Prometheus' users see it); with one, through the proxy
/// of every selected pod, all of which must pass.
pub async fn endpoint(
    client: &kube::Client,
    namespace: &str,
    component: &Component,
    pods: Option<&str>,
) -> Outcome {
    let Some(spec) = &component.metrics else {
        return Outcome::skip(format!(
            "component `{}` has no metrics endpoint configured",
            component.name
        ));
    };
    if pods.is_none() {
        let source = format!("service {}:{}{}", spec.service, spec.port, spec.path);
        return match scrape(client, &service_proxy_path(namespace, spec)).await {
            Ok(text) => judge_endpoint(&source, &text, spec),
            Err(outcome) => with_source(outcome, &source),
        };
    }
    let scraped = match scrape_pods(client, namespace, component, spec, pods).await {
        Ok(scraped) => scraped,
        Err(outcome) => return outcome,
    };
    let mut passes = Vec::new();
    for (pod, text) in scraped {
        let source = format!("pod {pod}:{}{}", spec.port, spec.path);
        let outcome = match text {
            Ok(text) => judge_endpoint(&source, &text, spec),
            Err(outcome) => with_source(outcome, &source),
        };
        if outcome.verdict != super::Verdict::Pass {
            return outcome;
        }
        passes.push(outcome.evidence);
    }
    Outcome::pass(passes.join("; "))
}

/// The freshness gauge, the newest over the component's pods (only the poller leader
/// advances it), is at most `max_age` old. Pure.
pub fn judge_freshness(metric: &str, newest: Option<f64>, now: f64, max_age: Duration) -> Outcome {
    match newest {
        None => Outcome::fail(format!(
            "`{metric}` is not exported by any pod: is this the poller image?"
        )),
        Some(value) if value <= 0.0 => Outcome::fail(format!(
            "`{metric}` is 0: no poll cycle has succeeded since the pods started; check the poller's logs (database, Binance credentials)"
        )),
        Some(value) => {
            let age = (now - value).max(0.0);
            if age <= max_age.as_secs_f64() {
                Outcome::pass(format!(
                    "last successful poll {age:.0}s ago (limit {}s)",
                    max_age.as_secs()
                ))
            } else {
                Outcome::fail(format!(
                    "last successful poll {age:.0}s ago, older than the {}s limit: the poller is stuck or failing; check its logs and `problemsolver_poller_consecutive_errors`",
                    max_age.as_secs()
                ))
            }
        }
    }
}

/// Reads `metric` from every pod of the component and judges the newest value.
pub async fn freshness(
    client: &kube::Client,
    namespace: &str,
    component: &Component,
    pods: Option<&str>,
    metric: &str,
    max_age: Duration,
) -> Outcome {
    let Some(spec) = &component.metrics else {
        return Outcome::skip(format!(
            "component `{}` has no metrics endpoint configured",
            component.name
        ));
    };
    let scraped = match scrape_pods(client, namespace, component, spec, pods).await {
        Ok(scraped) => scraped,
        Err(outcome) => return outcome,
    };
    let mut newest: Option<f64> = None;
    let mut errors = Vec::new();
    for (pod, text) in scraped {
        match text {
            Ok(text) => {
                if let Some(value) = Exposition::parse(&text).max(metric) {
                    newest = Some(newest.map_or(value, |n| n.max(value)));
                }
            }
            Err(outcome) => errors.push(format!("pod {pod}: {}", outcome.evidence)),
        }
    }
    if newest.is_none() && !errors.is_empty() {
        return Outcome::fail(errors.join("; "));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    judge_freshness(metric, newest, now, max_age)
}

/// Sum of `metric` over every pod of `components` (a counter incremented by whichever pod
/// leads). `Err` carries why it could not be read.
pub async fn sum_over_pods(
    client: &kube::Client,
    namespace: &str,
    components: &[&Component],
    metric: &str,
) -> Result<f64, String> {
    let mut total = 0.0;
    let mut seen = false;
    for component in components {
        let Some(spec) = &component.metrics else {
            continue;
        };
        let scraped = scrape_pods(client, namespace, component, spec, None)
            .await
            .map_err(|o| o.evidence)?;
        for (pod, text) in scraped {
            let text = text.map_err(|o| format!("pod {pod}: {}", o.evidence))?;
            if let Some(value) = Exposition::parse(&text).sum(metric) {
                total += value;
                seen = true;
            }
        }
    }
    if seen {
        Ok(total)
    } else {
        Err(format!("no pod exports `{metric}`"))
    }
}

/// `/api/v1/namespaces/{ns}/services/{service}:{port}/proxy{path}`.
pub fn service_proxy_path(namespace: &str, spec: &MetricsSpec) -> String {
    format!(
        "/api/v1/namespaces/{namespace}/services/{}:{}/proxy{}",
        spec.service, spec.port, spec.path
    )
}

/// `/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy{path}`.
pub fn pod_proxy_path(namespace: &str, pod: &str, spec: &MetricsSpec) -> String {
    format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}:{}/proxy{}",
        spec.port, spec.path
    )
}

type PodScrape = (String, Result<String, Outcome>);

/// Scrapes every running, non-terminating pod of the component through its pod proxy.
async fn scrape_pods(
    client: &kube::Client,
    namespace: &str,
    component: &Component,
    spec: &MetricsSpec,
    pods: Option<&str>,
) -> Result<Vec<PodScrape>, Outcome> {
    let selector = pod_selector(component, pods);
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|error| match error {
            kube::Error::Api(_) if !super::server_error(&error) => {
                Outcome::fail(format!("listing pods `{selector}`: {}", describe(&error)))
            }
            _ => Outcome::unreachable(format!(
                "the API server is unreachable (listing pods `{selector}`): {}",
                describe(&error)
            )),
        })?;
    let names: Vec<String> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Running")
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    if names.is_empty() {
        return Err(Outcome::fail(format!(
            "no running pod matches `{selector}` in namespace `{namespace}`"
        )));
    }
    let scrapes = names.into_iter().map(|pod| async move {
        let text = scrape(client, &pod_proxy_path(namespace, &pod, spec)).await;
        (pod, text)
    });
    Ok(futures::future::join_all(scrapes).await)
}

/// GET through the API server; errors become outcomes (API answers fail, transport errors are
/// "unreachable").
async fn scrape(client: &kube::Client, path: &str) -> Result<String, Outcome> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| Outcome::fail(format!("building the request for {path}: {e}")))?;
    client
        .request_text(request)
        .await
        .map_err(|error| match error {
            kube::Error::Api(_) => Outcome::fail(format!(
                "the proxy answered {}: no Ready pod behind it, or the port/path is wrong",
                describe(&error)
            )),
            _ => Outcome::unreachable(format!(
                "the API server is unreachable: {}",
                describe(&error)
            )),
        })
}

fn with_source(outcome: Outcome, source: &str) -> Outcome {
    Outcome {
        evidence: format!("{source}: {}", outcome.evidence),
        ..outcome
    }
}

#[cfg(test)]
mod tests {
    use super::super::Verdict;
    use super::*;

    const WEBHOOK: &str = "# HELP webhook_deliveries Deliveries.\n# TYPE webhook_deliveries counter\n\
        webhook_deliveries_total{status=\"delivered\"} 3\nwebhook_deliveries_total{status=\"failed\"} 1\n\
        # TYPE webhook_queue_depth gauge\nwebhook_queue_depth 3\nworker_health_status{x=\"1\"} 1\n\
        # TYPE circuit_breaker_opens counter\ncircuit_breaker_opens_total 0\n# EOF\n";

    fn spec(required: &[&str]) -> MetricsSpec {
        MetricsSpec {
            service: "problemsolver-webhook-metrics".into(),
            port: 8001,
            path: "/metrics".into(),
            required: required.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn required_metrics_accept_declared_counters_without_samples() {
        let text = "# HELP webhook_deliveries Deliveries.\n# TYPE webhook_deliveries counter\n\
                    # TYPE webhook_queue_depth gauge\nwebhook_queue_depth 3\nworker_health_status{x=\"1\"} 1\n";
        let required: Vec<String> = [
            "webhook_deliveries_total",
            "webhook_queue_depth",
            "worker_health_status",
            "circuit_breaker_opens_total",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            missing_metrics(text, &required),
            ["circuit_breaker_opens_total"]
        );
    }

    #[test]
    fn a_healthy_endpoint_passes_with_its_counts() {
        let outcome = judge_endpoint(
            "service s:8001/metrics",
            WEBHOOK,
            &spec(&["webhook_deliveries_total", "webhook_queue_depth"]),
        );
        assert_eq!(
            outcome,
            Outcome::pass(
                "service s:8001/metrics: valid exposition, 5 series, 2/2 required metrics present"
            )
        );
    }

    #[test]
    fn a_missing_required_name_fails_naming_it() {
        let outcome = judge_endpoint(
            "service s:8001/metrics",
            WEBHOOK,
            &spec(&["webhook_queue_depth", "webhook_smoke_sentinel_total"]),
        );
        assert_eq!(outcome.verdict, Verdict::Fail);
        assert!(
            outcome.evidence.starts_with(
                "service s:8001/metrics: missing required metric(s) webhook_smoke_sentinel_total;"
            ),
            "{}",
            outcome.evidence
        );
    }

    #[test]
    fn an_invalid_line_makes_the_exposition_invalid() {
        let text = format!("{WEBHOOK}webhook_queue_depth three\n<html>oops</html>\n");
        let outcome = judge_endpoint("e", &text, &spec(&[]));
        assert_eq!(outcome.verdict, Verdict::Fail);
        assert_eq!(
            outcome.evidence,
            "e: invalid exposition: 2 line(s) are not samples, first at line 11: `webhook_queue_depth three`"
        );
        let empty = judge_endpoint("e", "\n", &spec(&[]));
        assert_eq!(
            empty.evidence,
            "e: the endpoint answered without any metric"
        );
    }

    #[test]
    fn sums_cover_every_label_set() {
        let exposition = Exposition::parse(WEBHOOK);
        assert_eq!(exposition.sum("webhook_deliveries_total"), Some(4.0));
        assert_eq!(exposition.max("webhook_queue_depth"), Some(3.0));
        assert_eq!(exposition.sum("absent"), None);
    }

    #[test]
    fn freshness_judges_the_age_of_the_newest_success() {
        let limit = Duration::from_secs(60);
        let metric = "problemsolver_poller_last_success_unixtime";
        assert_eq!(
            judge_freshness(metric, Some(1_000.0), 1_012.0, limit),
            Outcome::pass("last successful poll 12s ago (limit 60s)")
        );
        let stale = judge_freshness(metric, Some(1_000.0), 1_400.0, limit);
        assert!(
            stale
                .evidence
                .starts_with("last successful poll 400s ago, older than the 60s limit"),
            "{}",
            stale.evidence
        );
        assert!(
            judge_freshness(metric, Some(0.0), 1_400.0, limit)
                .evidence
                .contains("no poll cycle has succeeded")
        );
        assert_eq!(
            judge_freshness(metric, None, 1.0, limit).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn proxy_paths() {
        let spec = spec(&[]);
        assert_eq!(
            service_proxy_path("apps", &spec),
            "/api/v1/namespaces/apps/services/problemsolver-webhook-metrics:8001/proxy/metrics"
        );
        assert_eq!(
            pod_proxy_path("apps", "web-1", &spec),
            "/api/v1/namespaces/apps/pods/web-1:8001/proxy/metrics"
        );
    }
}
