//! Prometheus HTTP API client: instant queries, the scrape-target list and the loaded rules.
//!
//! Thin by design: it sends the request, decodes the documented JSON envelope
//! (`{"status": "success", "data": …}`) and classifies failures. Interpreting the figures is
//! the caller's business (`canary::gate`, `smoke`). A sample whose value is NaN or infinite is
//! kept as `f64` so the caller decides; [`Sample::finite`] is the usual filter.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a Prometheus request produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// Connection refused, DNS failure, timeout: the server could not be asked (exit 3).
    #[error("Prometheus at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error envelope or a non-2xx status (a bad query, say).
    #[error("Prometheus rejected the request ({error_type}): {message}")]
    Rejected { error_type: String, message: String },
    /// The server answered something that is not the documented API.
    #[error("Prometheus answered something unexpected: {0}")]
    Protocol(String),
}

impl PromError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PromError::Unreachable { .. })
    }
}

/// One series of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value when it is a real number (not NaN, not ±Inf).
    pub fn finite(&self) -> Option<f64> {
        self.value.is_finite().then_some(self.value)
    }
}

/// One scrape target as `/api/v1/targets` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub scrape_url: String,
    /// `up`, `down` or `unknown`.
    pub health: String,
    pub last_error: String,
    pub labels: BTreeMap<String, String>,
}

impl Target {
    pub fn is_up(&self) -> bool {
        self.health == "up"
    }
}

/// One rule group as `/api/v1/rules` reports it: the file it was loaded from and its rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleGroup {
    pub name: String,
    pub file: String,
    #[serde(default)]
    pub rules: Vec<LoadedRule>,
}

/// One loaded rule: its name (the `alert` or `record` of the rule file), `alerting` or
/// `recording`, and its evaluation health (`ok`, `err`, `unknown`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedRule {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub health: String,
    #[serde(rename = "lastError", default)]
    pub last_error: String,
}

/// A Prometheus server reached over HTTP.
#[derive(Debug, Clone)]
pub struct Prometheus {
    base: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:9090`); each request is bounded
    /// by `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, PromError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .build()
            .map_err(|e| PromError::Protocol(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Evaluates `promql` at the current time and returns its instant vector. A scalar result
    /// is returned as one sample without labels.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, PromError> {
        let data: QueryData = self.get("/api/v1/query", &[("query", promql)]).await?;
        decode_query(data)
    }

    /// Evaluates `promql` at `unix_seconds` (the API's `time` parameter), as it would have
    /// answered then: what a rate was before an incident, say.
    pub async fn query_at(
        &self,
        promql: &str,
        unix_seconds: i64,
    ) -> Result<Vec<Sample>, PromError> {
        let time = unix_seconds.to_string();
        let data: QueryData = self
            .get("/api/v1/query", &[("query", promql), ("time", &time)])
            .await?;
        decode_query(data)
    }

    /// Every active scrape target.
    pub async fn targets(&self) -> Result<Vec<Target>, PromError> {
        let data: TargetsData = self.get("/api/v1/targets", &[("state", "active")]).await?;
        Ok(data
            .active_targets
            .into_iter()
            .map(|t| Target {
                scrape_url: t.scrape_url,
                health: t.health,
                last_error: t.last_error,
                labels: t.labels,
            })
            .collect())
    }

    /// Every rule group Prometheus has loaded from its rule files.
    pub async fn rules(&self) -> Result<Vec<RuleGroup>, PromError> {
        let data: RulesData = self.get("/api/v1/rules", &[]).await?;
        Ok(data.groups)
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, PromError> {
        let url =
            url::Url::parse_with_params(&format!("{}{path}", self.base), query).map_err(|e| {
                PromError::Unreachable {
                    url: self.base.clone(),
                    reason: format!("not a valid URL: {e}"),
                }
            })?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| PromError::Unreachable {
                url: self.base.clone(),
                reason: error_chain(&e),
            })?;
        let status = response.status();
        let body = response.text().await.map_err(|e| PromError::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        })?;
        decode_envelope(status.as_u16(), &body)
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[derive(Deserialize)]
struct Envelope<T> {
    status: String,
    data: Option<T>,
    #[serde(rename = "errorType", default)]
    error_type: String,
    #[serde(default)]
    error: String,
}

/// Decodes the API envelope; public for tests of callers that replay recorded answers.
pub fn decode_envelope<T: for<'de> Deserialize<'de>>(
    http_status: u16,
    body: &str,
) -> Result<T, PromError> {
    let envelope: Envelope<T> = serde_json::from_str(body).map_err(|e| {
        let start: String = body.chars().take(120).collect();
        PromError::Protocol(format!("HTTP {http_status}, {e}: {start}"))
    })?;
    if envelope.status != "success" {
        return Err(PromError::Rejected {
            error_type: if envelope.error_type.is_empty() {
                format!("HTTP {http_status}")
            } else {
                envelope.error_type
            },
            message: envelope.error,
        });
    }
    envelope
        .data
        .ok_or_else(|| PromError::Protocol("a success envelope without data".into()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorItem {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

fn parse_value(text: &str) -> Result<f64, PromError> {
    // Prometheus writes "NaN", "+Inf" and "-Inf"; Rust's parser accepts "NaN", "inf", "+inf".
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        other => other
            .parse()
            .map_err(|_| PromError::Protocol(format!("sample value {other:?} is not a number"))),
    }
}

/// Turns a query's `data` into samples (vector or scalar; a matrix is refused: use an instant
/// query).
pub fn decode_query(data: QueryData) -> Result<Vec<Sample>, PromError> {
    match data.result_type.as_str() {
        "vector" => {
            let items: Vec<VectorItem> = serde_json::from_value(data.result)
                .map_err(|e| PromError::Protocol(format!("vector result: {e}")))?;
            items
                .into_iter()
                .map(|item| {
                    Ok(Sample {
                        labels: item.metric,
                        value: parse_value(&item.value.1)?,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, value): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| PromError::Protocol(format!("scalar result: {e}")))?;
            Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: parse_value(&value)?,
            }])
        }
        other => Err(PromError::Protocol(format!(
            "result type {other:?}: psctl only sends instant queries"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetsData {
    #[serde(default)]
    active_targets: Vec<RawTarget>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTarget {
    #[serde(default)]
    scrape_url: String,
    #[serde(default)]
    health: String,
    #[serde(default)]
    last_error: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RulesData {
    #[serde(default)]
    groups: Vec<RuleGroup>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_answer_decodes_groups_files_and_rule_names() {
        let body = r#"{"status":"success","data":{"groups":[{"name":"problemsolver-poller",
            "file":"/var/lib/prometheus/rules/apps-problemsolver-poller.yml","interval":15,
            "rules":[{"state":"inactive","name":"PollerDown","query":"up == 0","duration":300,
                      "health":"ok","type":"alerting","alerts":[]},
                     {"name":"job:up:sum","query":"sum(up)","health":"err",
                      "lastError":"bad","type":"recording"}]}]}}"#;
        let data: RulesData = decode_envelope(200, body).unwrap();
        assert_eq!(data.groups.len(), 1);
        let group = &data.groups[0];
        assert_eq!(
            group.file,
            "/var/lib/prometheus/rules/apps-problemsolver-poller.yml"
        );
        assert_eq!(
            group.rules,
            [
                LoadedRule {
                    name: "PollerDown".into(),
                    kind: "alerting".into(),
                    health: "ok".into(),
                    last_error: String::new(),
                },
                LoadedRule {
                    name: "job:up:sum".into(),
                    kind: "recording".into(),
                    health: "err".into(),
                    last_error: "bad".into(),
                },
            ]
        );
    }

    #[test]
    fn a_vector_answer_decodes_with_labels_and_special_values() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"track":"canary"},"value":[1700000000.1,"12.5"]},
            {"metric":{"track":"stable"},"value":[1700000000.1,"NaN"]},
            {"metric":{},"value":[1700000000.1,"+Inf"]}]}}"#;
        let data: QueryData = decode_envelope(200, body).unwrap();
        let samples = decode_query(data).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels["track"], "canary");
        assert_eq!(samples[0].finite(), Some(12.5));
        assert!(samples[1].value.is_nan());
        assert_eq!(samples[1].finite(), None);
        assert_eq!(samples[2].finite(), None);
    }

    #[test]
    fn a_scalar_answer_is_one_unlabelled_sample() {
        let body = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        let samples = decode_query(decode_envelope(200, body).unwrap()).unwrap();
        assert_eq!(
            samples,
            vec![Sample {
                labels: BTreeMap::new(),
                value: 3.0
            }]
        );
    }

    #[test]
    fn an_error_envelope_is_a_rejection_with_the_servers_words() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let error = decode_envelope::<QueryData>(400, body).err().unwrap();
        assert!(matches!(error, PromError::Rejected { .. }));
        assert_eq!(
            error.to_string(),
            "Prometheus rejected the request (bad_data): parse error at char 4"
        );
    }

    #[test]
    fn html_from_a_proxy_is_a_protocol_error_not_a_panic() {
        let error = decode_envelope::<QueryData>(502, "<html>Bad gateway</html>")
            .err()
            .unwrap();
        assert!(matches!(error, PromError::Protocol(_)));
        assert!(error.to_string().contains("HTTP 502"));
    }

    #[test]
    fn a_matrix_is_refused() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        let error = decode_query(decode_envelope(200, body).unwrap())
            .err()
            .unwrap();
        assert!(error.to_string().contains("matrix"));
    }

    #[test]
    fn targets_decode() {
        let body = r#"{"status":"success","data":{"activeTargets":[{"scrapeUrl":"http://10.0.0.1:8001/metrics",
            "health":"up","lastError":"","labels":{"app":"problemsolver-webhook","track":"stable"},
            "discoveredLabels":{}}],"droppedTargets":[]}}"#;
        let data: TargetsData = decode_envelope(200, body).unwrap();
        assert_eq!(data.active_targets.len(), 1);
        assert_eq!(data.active_targets[0].health, "up");
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let prom =
            Prometheus::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let error = prom.query("up").await.err().unwrap();
        assert!(error.is_unreachable(), "{error}");
    }
}
