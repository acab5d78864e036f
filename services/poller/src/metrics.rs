//! The poller's Prometheus metrics, under the exact names the runbooks and psctl check.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct Metrics {
    /// Unix time of the last cycle that completed without error (poll and match).
    pub last_success_unixtime: Gauge,
    /// Successful deposits taken through the matching step (credited or recorded as unmatched).
    pub deposits_processed: Counter,
    /// Failed cycles plus deposits Binance sent that could not be parsed.
    pub deposits_errors: Counter,
    /// Sum of `allocation_collisions` of invoices seen for the first time.
    pub collisions: Counter,
    pub poll_duration: Histogram,
    pub consecutive_errors: Gauge,
    pub is_leader: Gauge,
    /// Credited deposits whose payment, ledger credit, invoice and webhook row were checked.
    pub reconciliation_checked: Counter,
    /// Of those, deposits whose records did not add up.
    pub reconciliation_mismatches: Counter,
    /// Deposits taken off the unprocessed list, by outcome (`credited`, `late`, `duplicate`, ...).
    pub deposit_outcomes: Family<Vec<(String, String)>, Counter>,
    /// Rows Binance sent that could not be parsed, stored or matched (first sighting each).
    pub deposits_quarantined: Counter,
    /// Deposits Binance has not finalised for longer than `DEPOSIT_STUCK_AFTER_SECS`.
    pub deposits_stuck: Gauge,
    /// Deposits not final yet (stored, unprocessed, not a success).
    pub deposits_unresolved: Gauge,
    /// Pending invoices that passed `expires_at` and were marked expired.
    pub invoices_expired: Counter,
}

impl Metrics {
    /// Counts one outcome of the matching step.
    pub fn count_outcome(&self, outcome: &str, count: u64) {
        self.deposit_outcomes
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc_by(count);
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            last_success_unixtime: Gauge::default(),
            deposits_processed: Counter::default(),
            deposits_errors: Counter::default(),
            collisions: Counter::default(),
            poll_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            consecutive_errors: Gauge::default(),
            is_leader: Gauge::default(),
            reconciliation_checked: Counter::default(),
            reconciliation_mismatches: Counter::default(),
            deposit_outcomes: Family::default(),
            deposits_quarantined: Counter::default(),
            deposits_stuck: Gauge::default(),
            deposits_unresolved: Gauge::default(),
            invoices_expired: Counter::default(),
        };
        registry.register(
            "problemsolver_poller_last_success_unixtime",
            "Unix time of the last successful poll-and-match cycle",
            metrics.last_success_unixtime.clone(),
        );
        // prometheus-client appends `_total` to counters.
        registry.register(
            "problemsolver_deposits_processed",
            "Successful deposits taken through matching",
            metrics.deposits_processed.clone(),
        );
        registry.register(
            "problemsolver_deposits_errors",
            "Failed poll cycles and unparsable deposits",
            metrics.deposits_errors.clone(),
        );
        registry.register(
            "problemsolver_collisions",
            "publish_amount allocation steps skipped because another pending invoice held them",
            metrics.collisions.clone(),
        );
        registry.register(
            "problemsolver_poll_duration_seconds",
            "Duration of one poll-and-match cycle",
            metrics.poll_duration.clone(),
        );
        registry.register(
            "problemsolver_poller_consecutive_errors",
            "Failed cycles since the last success",
            metrics.consecutive_errors.clone(),
        );
        registry.register(
            "problemsolver_poller_is_leader",
            "1 when this replica holds the poller lock",
            metrics.is_leader.clone(),
        );
        registry.register(
            "problemsolver_reconciliation_checked",
            "Credited deposits reconciled against payment, ledger credit, invoice and webhook row",
            metrics.reconciliation_checked.clone(),
        );
        registry.register(
            "problemsolver_reconciliation_mismatches",
            "Reconciled deposits whose records did not add up",
            metrics.reconciliation_mismatches.clone(),
        );
        registry.register(
            "problemsolver_deposit_outcomes",
            "Deposits taken off the unprocessed list, by outcome (only `credited` pays an invoice)",
            metrics.deposit_outcomes.clone(),
        );
        registry.register(
            "problemsolver_deposits_quarantined",
            "Deposits Binance sent that could not be parsed, stored or matched; kept for an operator",
            metrics.deposits_quarantined.clone(),
        );
        registry.register(
            "problemsolver_deposits_stuck",
            "Deposits Binance has not finalised for longer than DEPOSIT_STUCK_AFTER_SECS",
            metrics.deposits_stuck.clone(),
        );
        registry.register(
            "problemsolver_deposits_unresolved",
            "Stored deposits Binance has not finalised yet (re-checked every cycle)",
            metrics.deposits_unresolved.clone(),
        );
        registry.register(
            "problemsolver_invoices_expired",
            "Pending invoices marked expired after expires_at",
            metrics.invoices_expired.clone(),
        );
        metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_contract_names() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.deposits_processed.inc();
        metrics.count_outcome("late", 2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "problemsolver_poller_last_success_unixtime ",
            "problemsolver_deposits_processed_total 1",
            "problemsolver_deposits_errors_total ",
            "problemsolver_collisions_total ",
            "problemsolver_poll_duration_seconds_bucket",
            "problemsolver_poller_consecutive_errors ",
            "problemsolver_poller_is_leader ",
            "problemsolver_deposit_outcomes_total{outcome=\"late\"} 2",
            "problemsolver_deposits_quarantined_total ",
            "problemsolver_deposits_stuck ",
            "problemsolver_deposits_unresolved ",
            "problemsolver_invoices_expired_total ",
        ] {
            assert!(text.contains(name), "missing {name} in:\n{text}");
        }
    }
}
