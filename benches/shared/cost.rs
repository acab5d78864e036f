//! What a psctl command costs the API server, and how that grows with a size: shared by the
//! benchmarks that count requests (`scaling.rs`, `deploy_scaling.rs`, each with
//! `#[path = "shared/cost.rs"] mod cost;`).
//!
//! - [`Requests`]: the rows of `GET /_sandbox/requests?user=NAME` (one per User-Agent, verb and
//!   resource), summed and described as `verb resource count, ...`;
//! - [`growth`]: the growth in requests over the sizes, and its `scaling_<name>_requests=` line.

// Each benchmark uses its part.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// The requests one identity made, as the sandbox API server counted them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requests {
    rows: Vec<Value>,
}

impl Requests {
    /// From the body of `GET /_sandbox/requests?user=NAME`.
    pub fn from_report(report: &Value) -> Self {
        Self {
            rows: report["requests"].as_array().cloned().unwrap_or_default(),
        }
    }

    /// Only the rows sent with a User-Agent for which `keep` holds.
    pub fn of_clients(&self, keep: impl Fn(&str) -> bool) -> Self {
        Self {
            rows: self
                .rows
                .iter()
                .filter(|row| keep(row["user_agent"].as_str().unwrap_or_default()))
                .cloned()
                .collect(),
        }
    }

    /// The User-Agents seen, in the server's order.
    pub fn clients(&self) -> Vec<String> {
        let mut clients: Vec<String> = Vec::new();
        for row in &self.rows {
            let agent = row["user_agent"].as_str().unwrap_or_default().to_owned();
            if !clients.contains(&agent) {
                clients.push(agent);
            }
        }
        clients
    }

    /// Every request counted.
    pub fn total(&self) -> u64 {
        self.rows.iter().filter_map(|r| r["count"].as_u64()).sum()
    }

    /// `verb resource count, ...`, whatever client sent them (rows of several User-Agents with
    /// the same verb and resource are added up), in the server's order: verb, API group,
    /// resource, subresource, path.
    pub fn breakdown(&self) -> String {
        let mut merged: BTreeMap<(String, String, String, String, String), u64> = BTreeMap::new();
        for row in &self.rows {
            let field = |name: &str| row[name].as_str().unwrap_or_default().to_owned();
            *merged
                .entry((
                    field("verb"),
                    field("group"),
                    field("resource"),
                    field("subresource"),
                    field("path"),
                ))
                .or_insert(0) += row["count"].as_u64().unwrap_or_default();
        }
        merged
            .into_iter()
            .map(|((verb, _, resource, subresource, path), count)| {
                let what = match (resource.as_str(), subresource.as_str()) {
                    ("", _) => path,
                    (resource, "") => resource.to_owned(),
                    (resource, sub) => format!("{resource}/{sub}"),
                };
                format!("{verb} {what} {count}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One size's figure.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub size: u64,
    pub requests: u64,
    pub wall: Duration,
}

/// Above this exponent (or this ratio of the last marginal cost to the first) the requests grow
/// worse than linearly.
const WORSE: f64 = 1.15;

/// The growth of requests over `points` (ascending sizes):
///
/// - `constant` when equal at every size;
/// - `pages-of-<N>` when a list is read in chunks of `page` items and the requests are a
///   constant plus one per chunk at every size (linear in the size, one request per `page`
///   items);
/// - otherwise from the exponent `b` of `requests ∝ size^b` between the smallest and the largest
///   size, and, with three sizes or more, from the marginal cost (requests added per unit of size)
///   between consecutive sizes: `worse than linear` when `b` is above 1.15 or the last marginal
///   cost is over 1.15 times the first (a cost of `a + c·size²` has a small exponent when `a` is
///   large, but its marginal cost grows); `linear` when the marginal cost holds (a constant plus
///   so much per unit, whatever the constant: its exponent can be well below 1); `sublinear`
///   when it falls below the first by more than that, or, with two sizes, when `b` is below 0.5.
pub fn growth(unit: &str, points: &[Point], page: Option<u32>) -> String {
    let first = points[0];
    let last = points[points.len() - 1];
    #[allow(clippy::cast_precision_loss)]
    let exponent = |from: f64, to: f64| {
        (to.max(f64::MIN_POSITIVE) / from.max(f64::MIN_POSITIVE)).ln()
            / (last.size as f64 / first.size as f64).ln()
    };
    #[allow(clippy::cast_precision_loss)]
    let request_exponent = exponent(first.requests as f64, last.requests as f64);
    let pages = |page: u64| {
        let besides = |point: &Point| point.requests.checked_sub(point.size.div_ceil(page));
        let first = besides(&points[0])?;
        points
            .iter()
            .all(|point| besides(point) == Some(first))
            .then_some(first)
    };
    #[allow(clippy::cast_precision_loss)]
    let marginal: Vec<f64> = points
        .windows(2)
        .map(|pair| {
            (pair[1].requests as f64 - pair[0].requests as f64)
                / (pair[1].size as f64 - pair[0].size as f64)
        })
        .collect();
    let marginal_text = marginal
        .iter()
        .map(|m| format!("{m:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    if points.iter().all(|point| point.requests == first.requests) {
        "constant".to_owned()
    } else if let Some(page) = page.map(u64::from)
        && let Some(besides) = pages(page)
    {
        format!(
            "pages-of-{page} ({besides} + one per {page} {unit}, exponent {request_exponent:.2})"
        )
    } else if marginal.len() < 2 {
        if request_exponent < 0.5 {
            format!("sublinear (exponent {request_exponent:.2})")
        } else if request_exponent <= WORSE {
            format!("linear (exponent {request_exponent:.2})")
        } else {
            format!("worse than linear (exponent {request_exponent:.2})")
        }
    } else {
        let (first_marginal, last_marginal) = (marginal[0], marginal[marginal.len() - 1]);
        let detail =
            format!("exponent {request_exponent:.2}, requests per {unit} added: {marginal_text}");
        if request_exponent > WORSE || last_marginal > first_marginal.max(0.0) * WORSE {
            format!("worse than linear ({detail})")
        } else if last_marginal * WORSE < first_marginal {
            format!("sublinear ({detail})")
        } else {
            format!("linear ({detail})")
        }
    }
}

/// `scaling_<name>_requests=<growth> (requests a/b/c at <unit> x/y/z; wall time exponent e)`.
pub fn growth_line(name: &str, unit: &str, points: &[Point], page: Option<u32>) -> String {
    let first = points[0];
    let last = points[points.len() - 1];
    let join = |values: Vec<String>| values.join("/");
    #[allow(clippy::cast_precision_loss)]
    let wall_exponent = (last.wall.as_secs_f64().max(f64::MIN_POSITIVE)
        / first.wall.as_secs_f64().max(f64::MIN_POSITIVE))
    .ln()
        / (last.size as f64 / first.size as f64).ln();
    format!(
        "scaling_{name}_requests={} (requests {} at {unit} {}; wall time exponent {wall_exponent:.2})",
        growth(unit, points, page),
        join(points.iter().map(|p| p.requests.to_string()).collect()),
        join(points.iter().map(|p| p.size.to_string()).collect()),
    )
}
