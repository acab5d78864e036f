//! Per-endpoint circuit breakers: stop hammering a merchant that keeps failing.
//!
//! Closed → (N consecutive failures) → Open for a cool-down → Half-open: one probe is let through;
//! its success closes the breaker, its failure opens it again. Time is passed in, so the state
//! machine is tested without clocks.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

/// What the caller may do with a delivery to this endpoint now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Deliver normally.
    Allowed,
    /// Deliver as the single half-open probe.
    Probe,
    /// Do not deliver; try again no earlier than after this long.
    Rejected(Duration),
}

/// Breaker thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

/// Breakers for many endpoints, keyed by `K` (the merchant id in the worker).
#[derive(Debug)]
pub struct Breakers<K> {
    policy: BreakerPolicy,
    states: HashMap<K, State>,
}

impl<K: Eq + Hash + Clone> Breakers<K> {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            states: HashMap::new(),
        }
    }

    /// Asks to deliver to `key` at `now`.
    pub fn permit(&mut self, key: &K, now: Instant) -> Permit {
        let state = self
            .states
            .entry(key.clone())
            .or_insert(State::Closed { failures: 0 });
        match *state {
            State::Closed { .. } => Permit::Allowed,
            State::Open { until } if now < until => Permit::Rejected(until - now),
            State::Open { .. }
            | State::HalfOpen {
                probe_in_flight: false,
            } => {
                *state = State::HalfOpen {
                    probe_in_flight: true,
                };
                Permit::Probe
            }
            // Another probe is out; its outcome decides. Check back after a short while.
            State::HalfOpen {
                probe_in_flight: true,
            } => Permit::Rejected(self.policy.open_for.min(Duration::from_secs(1))),
        }
    }

    /// Records a delivery outcome. Returns `true` when this outcome opened the breaker.
    pub fn record(&mut self, key: &K, success: bool, now: Instant) -> bool {
        let open = State::Open {
            until: now + self.policy.open_for,
        };
        let state = self
            .states
            .entry(key.clone())
            .or_insert(State::Closed { failures: 0 });
        match (*state, success) {
            (_, true) => {
                *state = State::Closed { failures: 0 };
                false
            }
            (State::Closed { failures }, false) => {
                let failures = failures + 1;
                if failures >= self.policy.failure_threshold {
                    *state = open;
                    true
                } else {
                    *state = State::Closed { failures };
                    false
                }
            }
            (State::HalfOpen { .. }, false) => {
                *state = open;
                true
            }
            // A late failure from before the breaker opened changes nothing.
            (State::Open { .. }, false) => false,
        }
    }

    /// Hands back a probe permit that was not used (the delivery was deferred for another
    /// reason), so the next caller can probe instead.
    pub fn abandon_probe(&mut self, key: &K) {
        if let Some(state) = self.states.get_mut(key)
            && *state
                == (State::HalfOpen {
                    probe_in_flight: true,
                })
        {
            *state = State::HalfOpen {
                probe_in_flight: false,
            };
        }
    }

    /// Whether the breaker of `key` is open (rejecting) at `now`.
    pub fn is_open(&self, key: &K, now: Instant) -> bool {
        matches!(self.states.get(key), Some(State::Open { until }) if now < *until)
    }

    /// Forgets closed breakers with no failures, so the map does not grow with every merchant ever seen.
    pub fn forget_healthy(&mut self) {
        self.states
            .retain(|_, state| *state != State::Closed { failures: 0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failure_threshold: 3,
        open_for: Duration::from_secs(30),
    };

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let mut breakers = Breakers::new(POLICY);
        let t0 = Instant::now();
        assert!(!breakers.record(&"m", false, t0));
        assert!(!breakers.record(&"m", false, t0));
        assert_eq!(breakers.permit(&"m", t0), Permit::Allowed);
        assert!(breakers.record(&"m", false, t0));
        assert!(breakers.is_open(&"m", t0));
        assert_eq!(
            breakers.permit(&"m", t0 + Duration::from_secs(10)),
            Permit::Rejected(Duration::from_secs(20))
        );
        // Other endpoints are unaffected.
        assert_eq!(breakers.permit(&"other", t0), Permit::Allowed);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut breakers = Breakers::new(POLICY);
        let t0 = Instant::now();
        breakers.record(&"m", false, t0);
        breakers.record(&"m", false, t0);
        breakers.record(&"m", true, t0);
        assert!(!breakers.record(&"m", false, t0));
        assert!(!breakers.record(&"m", false, t0));
        assert!(!breakers.is_open(&"m", t0));
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_outcome_decides() {
        let mut breakers = Breakers::new(POLICY);
        let t0 = Instant::now();
        for _ in 0..3 {
            breakers.record(&"m", false, t0);
        }
        let later = t0 + Duration::from_secs(31);
        assert_eq!(breakers.permit(&"m", later), Permit::Probe);
        assert!(matches!(breakers.permit(&"m", later), Permit::Rejected(_)));
        // The probe fails: open again, counted as a new opening.
        assert!(breakers.record(&"m", false, later));
        assert!(matches!(breakers.permit(&"m", later), Permit::Rejected(_)));
        let much_later = later + Duration::from_secs(31);
        assert_eq!(breakers.permit(&"m", much_later), Permit::Probe);
        breakers.abandon_probe(&"m");
        assert_eq!(
            breakers.permit(&"m", much_later),
            Permit::Probe,
            "an abandoned probe is offered again"
        );
        assert!(!breakers.record(&"m", true, much_later));
        assert_eq!(breakers.permit(&"m", much_later), Permit::Allowed);
    }

    #[test]
    fn forget_healthy_keeps_failing_endpoints() {
        let mut breakers = Breakers::new(POLICY);
        let t0 = Instant::now();
        breakers.record(&"ok", true, t0);
        breakers.record(&"bad", false, t0);
        breakers.forget_healthy();
        assert_eq!(breakers.states.len(), 1);
        assert!(breakers.states.contains_key("bad"));
    }
}
