//! Kubernetes' restart and image-pull back-off: nothing before the first retry of a crash, then
//! `base` doubling up to `max` (10 s to 5 min in a real kubelet; the base is configurable so
//! tests are fast). A container that ran long enough resets its back-off.

use std::time::Duration;

/// The back-off schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First non-zero delay.
    pub base: Duration,
    /// Cap.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// `base * 2^(n-1)` for the n-th consecutive failure (n ≥ 1), capped at `max`; zero for n = 0.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Delay before restarting a container that has exited `exits` times in a row: the first
    /// restart is immediate, as in the real kubelet, later ones back off.
    pub fn crash_delay(&self, exits: u32) -> Duration {
        self.delay(exits.saturating_sub(1))
    }

    /// Delay before retrying a pull that has failed `failures` times in a row.
    pub fn pull_delay(&self, failures: u32) -> Duration {
        self.delay(failures)
    }

    /// A container that ran this long without exiting starts its back-off afresh.
    pub fn reset_after(&self) -> Duration {
        self.max * 2
    }
}

/// Renders a delay the way Go prints durations in kubelet messages (`10s`, `2m40s`, `5m0s`).
pub fn go_duration(delay: Duration) -> String {
    let seconds = delay.as_secs();
    if seconds >= 60 {
        format!("{}m{}s", seconds / 60, seconds % 60)
    } else if delay.subsec_millis() > 0 && seconds == 0 {
        format!("{}ms", delay.as_millis())
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_back_off_is_immediate_then_doubles_from_ten_seconds_to_five_minutes() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (1..=8)
            .map(|exits| backoff.crash_delay(exits).as_secs())
            .collect();
        assert_eq!(delays, vec![0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            backoff.crash_delay(1000),
            Duration::from_secs(300),
            "no overflow on long crash loops"
        );
        assert_eq!(backoff.reset_after(), Duration::from_secs(600));
    }

    #[test]
    fn pull_back_off_starts_at_base() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<u128> = (1..=6)
            .map(|failures| backoff.pull_delay(failures).as_millis())
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn go_style_durations() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(160)), "2m40s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_millis(200)), "200ms");
    }
}
