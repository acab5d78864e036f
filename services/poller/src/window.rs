//! Poll-window planning (pure): from the checkpoint minus an overlap up to "now" on Binance's
//! clock, cut into windows no longer than Binance's 90-day limit.

/// Binance refuses deposit-history queries spanning more than 90 days.
pub const MAX_WINDOW_MS: i64 = 90 * 24 * 60 * 60 * 1000;

/// An inclusive `[start_ms, end_ms]` range of Binance `insertTime`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// Windows to fetch, oldest first. Without a checkpoint the poller looks back
/// `initial_lookback_ms`; with one it restarts `overlap_ms` before it, so deposits that appear late
/// in Binance's history (or were on a page boundary while new rows arrived) are seen again; the
/// idempotent upsert makes the overlap harmless.
pub fn plan(
    checkpoint_ms: Option<i64>,
    now_ms: i64,
    overlap_ms: i64,
    initial_lookback_ms: i64,
) -> Vec<Window> {
    let start = match checkpoint_ms {
        Some(checkpoint) => checkpoint.saturating_sub(overlap_ms.max(0)),
        None => now_ms.saturating_sub(initial_lookback_ms.max(0)),
    }
    .min(now_ms);
    let mut windows = Vec::new();
    let mut window_start = start;
    loop {
        let window_end = window_start.saturating_add(MAX_WINDOW_MS).min(now_ms);
        windows.push(Window {
            start_ms: window_start,
            end_ms: window_end,
        });
        if window_end >= now_ms {
            return windows;
        }
        // Bounds are inclusive, so the next window starts one millisecond later.
        window_start = window_end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 60 * 60 * 1000;

    #[test]
    fn recent_checkpoint_is_one_overlapping_window() {
        let windows = plan(Some(1_000_000), 2_000_000, 600_000, DAY);
        assert_eq!(
            windows,
            vec![Window {
                start_ms: 400_000,
                end_ms: 2_000_000
            }]
        );
    }

    #[test]
    fn no_checkpoint_looks_back() {
        let now = 400 * DAY;
        assert_eq!(
            plan(None, now, 0, 7 * DAY),
            vec![Window {
                start_ms: now - 7 * DAY,
                end_ms: now
            }]
        );
    }

    #[test]
    fn long_gaps_are_split_at_ninety_days_without_holes() {
        let now = 1000 * DAY;
        let windows = plan(Some(now - 200 * DAY), now, 0, 0);
        assert_eq!(windows.len(), 3);
        assert_eq!(windows[0].start_ms, now - 200 * DAY);
        assert_eq!(windows.last().map(|w| w.end_ms), Some(now));
        for pair in windows.windows(2) {
            assert_eq!(pair[1].start_ms, pair[0].end_ms + 1);
        }
        assert!(
            windows
                .iter()
                .all(|w| w.end_ms - w.start_ms <= MAX_WINDOW_MS && w.start_ms <= w.end_ms)
        );
    }

    #[test]
    fn checkpoint_in_the_future_is_clamped() {
        assert_eq!(
            plan(Some(5_000), 1_000, 0, 0),
            vec![Window {
                start_ms: 1_000,
                end_ms: 1_000
            }]
        );
    }
}
