//! Retry scheduling: exponential back-off with jitter, and `Retry-After` parsing.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The longest `Retry-After` the worker honours; a merchant asking for more gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Exponential back-off: `base * 2^(attempt-1)` capped at `max`, with "equal jitter" (half fixed,
/// half random) so retries of many rows that failed together spread out instead of stampeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of the delay after the `attempt`-th failed attempt (1-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exponent).min(self.max)
    }

    /// The delay after the `attempt`-th failure; `unit` is a uniform sample in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay before the next attempt, honouring the merchant's `Retry-After` when it asks
    /// for longer than the back-off would wait.
    pub fn next_delay(&self, attempt: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let computed = self.delay(attempt, unit);
        match retry_after {
            Some(asked) => computed.max(asked.min(MAX_RETRY_AFTER)),
            None => computed,
        }
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date (RFC 9110). Dates in the past mean
/// "now"; unparseable values are ignored.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?;
    let delta = date.with_timezone(&Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Backoff = Backoff {
        base: Duration::from_secs(2),
        max: Duration::from_secs(60),
    };

    #[test]
    fn grows_exponentially_then_caps() {
        let ceilings: Vec<u64> = (1..=7).map(|a| POLICY.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(POLICY.ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_between_half_and_full_ceiling() {
        assert_eq!(POLICY.delay(3, 0.0), Duration::from_secs(4));
        assert_eq!(POLICY.delay(3, 0.5), Duration::from_secs(6));
        assert!(POLICY.delay(3, 0.999) < Duration::from_secs(8));
        assert_eq!(POLICY.delay(3, 7.0), Duration::from_secs(8));
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let asked = Some(Duration::from_secs(30));
        assert_eq!(POLICY.next_delay(1, 0.0, asked), Duration::from_secs(30));
        assert_eq!(
            POLICY.next_delay(6, 0.0, Some(Duration::from_secs(1))),
            Duration::from_secs(30)
        );
        let huge = Some(Duration::from_secs(10 * 24 * 3600));
        assert_eq!(POLICY.next_delay(1, 0.0, huge), MAX_RETRY_AFTER);
    }

    #[test]
    fn parses_both_retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
