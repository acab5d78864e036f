//! Delivery rate limits: one global budget for the process and one per endpoint (merchant).
//!
//! The global limit is waited for (it only smooths the process's own output); the per-endpoint
//! limit is checked without waiting, so one slow-rate merchant never holds a delivery slot: its
//! row is put back with a short delay instead.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Global and per-endpoint token buckets.
pub struct RateLimits<K: Eq + Hash + Clone> {
    global: DefaultDirectRateLimiter,
    per_endpoint: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Eq + Hash + Clone> std::fmt::Debug for RateLimits<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone> RateLimits<K> {
    /// Limits in requests per second; the burst of each bucket equals its rate.
    pub fn new(global_rps: NonZeroU32, per_endpoint_rps: NonZeroU32) -> Self {
        Self {
            global: RateLimiter::direct(Quota::per_second(global_rps)),
            per_endpoint: RateLimiter::keyed(Quota::per_second(per_endpoint_rps)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a per-endpoint token, or says how long until one is available.
    pub fn try_endpoint(&self, key: &K) -> Result<(), Duration> {
        self.per_endpoint
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Waits for a global token.
    pub async fn global(&self) {
        self.global.until_ready().await;
    }

    /// Drops per-endpoint buckets that are full again, bounding memory by active endpoints.
    pub fn forget_idle(&self) {
        self.per_endpoint.retain_recent();
        self.per_endpoint.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rps(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn per_endpoint_limit_is_per_key() {
        let limits = RateLimits::new(rps(1000), rps(2));
        assert!(limits.try_endpoint(&"a").is_ok());
        assert!(limits.try_endpoint(&"a").is_ok());
        let wait = limits.try_endpoint(&"a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(limits.try_endpoint(&"b").is_ok());
    }

    #[tokio::test]
    async fn global_limit_paces_callers() {
        let limits: RateLimits<&str> = RateLimits::new(rps(20), rps(1000));
        let started = std::time::Instant::now();
        for _ in 0..30 {
            limits.global().await;
        }
        // A burst of 20, then 10 more at 20/s: at least ~0.45 s.
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    }
}
