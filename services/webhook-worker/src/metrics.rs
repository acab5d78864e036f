//! The worker's Prometheus metrics, named as the runbooks and dashboards expect.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Buckets from 5 ms to 10 s: merchants answer in tens of milliseconds, slow ones near the timeout.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: &'static str,
}

/// Handles to every metric the worker updates.
#[derive(Clone, Debug)]
pub struct Metrics {
    deliveries: Family<StatusLabel, Counter>,
    pub dead_letters: Counter,
    pub delivery_duration: Histogram,
    pub queue_depth: Gauge,
    pub health: Gauge,
    pub breaker_opens: Counter,
    /// 1 for the rate limiter deciding now (`redis`, `local` or `local_fallback`), 0 for the others.
    rate_limiter: Family<BackendLabel, Gauge>,
    /// Redis calls of the shared rate limiter that failed (each decided by the local fallback).
    pub rate_limiter_redis_errors: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            deliveries: Family::default(),
            dead_letters: Counter::default(),
            delivery_duration: Histogram::new(DURATION_BUCKETS),
            queue_depth: Gauge::default(),
            health: Gauge::default(),
            breaker_opens: Counter::default(),
            rate_limiter: Family::default(),
            rate_limiter_redis_errors: Counter::default(),
        };
        // prometheus-client appends `_total` to counters.
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (one per HTTP attempt)",
            metrics.deliveries.clone(),
        );
        registry.register(
            "webhook_dead_letters",
            "Webhooks that exhausted their attempts and were marked dead",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "webhook_delivery_duration_seconds",
            "Duration of one webhook delivery attempt",
            metrics.delivery_duration.clone(),
        );
        registry.register(
            "webhook_queue_depth",
            "Webhooks pending or being delivered",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "worker_health_status",
            "1 when the worker can reach its database and deliver, 0 otherwise",
            metrics.health.clone(),
        );
        registry.register(
            "circuit_breaker_opens",
            "Times a per-endpoint circuit breaker opened",
            metrics.breaker_opens.clone(),
        );
        registry.register(
            "webhook_rate_limiter",
            "1 for the rate limiter deciding now: redis (shared by all replicas), local (per process, no REDIS_URL) or local_fallback (Redis unreachable: the conservative per-replica share)",
            metrics.rate_limiter.clone(),
        );
        registry.register(
            "webhook_rate_limiter_redis_errors",
            "Calls to the shared rate limiter in Redis that failed and were decided by the local fallback",
            metrics.rate_limiter_redis_errors.clone(),
        );
        metrics.set_rate_limiter(crate::ratelimit::Backend::Local);
        // Both series exist from the start so dashboards and rate() see zeros, not gaps.
        metrics.deliveries_with(true);
        metrics.deliveries_with(false);
        metrics
    }

    fn deliveries_with(&self, success: bool) -> Counter {
        let status = if success { "success" } else { "failure" };
        self.deliveries
            .get_or_create(&StatusLabel { status })
            .clone()
    }

    /// Attempts counted so far with this outcome.
    pub fn attempts(&self, success: bool) -> u64 {
        self.deliveries_with(success).get()
    }

    /// Marks `backend` as the rate limiter deciding now.
    pub fn set_rate_limiter(&self, backend: crate::ratelimit::Backend) {
        for each in crate::ratelimit::Backend::ALL {
            self.rate_limiter
                .get_or_create(&BackendLabel {
                    backend: each.label(),
                })
                .set(i64::from(each == backend));
        }
    }

    /// Counts one attempt.
    pub fn attempt(&self, success: bool) {
        self.deliveries_with(success).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn exposes_the_contract_names() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.attempt(true);
        metrics.attempt(false);
        metrics.attempt(false);
        metrics.dead_letters.inc();
        metrics.breaker_opens.inc();
        metrics.queue_depth.set(7);
        metrics.health.set(1);
        metrics.delivery_duration.observe(0.02);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "webhook_deliveries_total{status=\"success\"} 1",
            "webhook_deliveries_total{status=\"failure\"} 2",
            "webhook_dead_letters_total 1",
            "circuit_breaker_opens_total 1",
            "webhook_queue_depth 7",
            "worker_health_status 1",
            "webhook_rate_limiter{backend=\"local\"} 1",
            "webhook_rate_limiter{backend=\"redis\"} 0",
            "webhook_rate_limiter{backend=\"local_fallback\"} 0",
            "webhook_rate_limiter_redis_errors_total 0",
            "webhook_delivery_duration_seconds_bucket{le=\"0.005\"} 0",
            "webhook_delivery_duration_seconds_bucket{le=\"10.0\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
    }
}
