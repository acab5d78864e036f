//! Poll-window planning (pure): from the checkpoint minus an overlap up to "now" on Binance's
//! clock, cut into windows shorter than Binance's 90-day limit; and the re-check windows that
//! fetch unresolved deposits again, however old they are.

/// The longest `endTime - startTime` Binance accepts: "time between startTime and endTime must
/// be less than 90 days", so a window of exactly 90 days is refused (-1127), and would be
/// refused again every cycle after an outage of 90 days or more.
pub const MAX_WINDOW_MS: i64 = 90 * 24 * 60 * 60 * 1000 - 1;

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

/// A re-check window and the unresolved deposits (by `deposit_raw.id`) it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recheck {
    pub window: Window,
    pub deposit_ids: Vec<i64>,
}

/// Groups unresolved deposits `(id, insertTime ms)` into at most `max_windows` windows, each
/// spanning at most `max_span_ms` of insert times (Binance filters history by `insertTime`, so
/// a window from the first to the last insert time of a group returns every deposit of the
/// group). Deposits come in re-check priority order (least recently re-checked first); the
/// groups keep that priority, and deposits beyond the window budget wait for the next cycle.
pub fn recheck_windows(
    unresolved: &[(i64, i64)],
    max_span_ms: i64,
    max_windows: usize,
) -> Vec<Recheck> {
    let max_span_ms = max_span_ms.clamp(0, MAX_WINDOW_MS);
    let mut groups: Vec<Recheck> = Vec::new();
    for &(id, at) in unresolved {
        // Join a window that can stretch to cover this deposit within the span limit.
        if let Some(group) = groups
            .iter_mut()
            .find(|g| at.max(g.window.end_ms) - at.min(g.window.start_ms) <= max_span_ms)
        {
            group.window.start_ms = group.window.start_ms.min(at);
            group.window.end_ms = group.window.end_ms.max(at);
            group.deposit_ids.push(id);
            continue;
        }
        if groups.len() == max_windows {
            continue;
        }
        groups.push(Recheck {
            window: Window {
                start_ms: at,
                end_ms: at,
            },
            deposit_ids: vec![id],
        });
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 60 * 60 * 1000;

    #[test]
    fn recheck_groups_nearby_deposits_and_respects_the_budget() {
        let unresolved = [
            (1, 10 * HOUR),
            (2, 10 * HOUR + 5),
            (3, 50 * HOUR),
            (4, 9 * HOUR + 10),
            (5, 100 * HOUR),
            (6, 200 * HOUR),
        ];
        let windows = recheck_windows(&unresolved, HOUR, 3);
        assert_eq!(
            windows,
            vec![
                Recheck {
                    window: Window {
                        start_ms: 9 * HOUR + 10,
                        end_ms: 10 * HOUR + 5
                    },
                    deposit_ids: vec![1, 2, 4]
                },
                Recheck {
                    window: Window {
                        start_ms: 50 * HOUR,
                        end_ms: 50 * HOUR
                    },
                    deposit_ids: vec![3]
                },
                Recheck {
                    window: Window {
                        start_ms: 100 * HOUR,
                        end_ms: 100 * HOUR
                    },
                    deposit_ids: vec![5]
                },
            ]
        );
        // Every window stays within the span; deposit 6 waits for a later cycle.
        assert!(
            windows
                .iter()
                .all(|r| r.window.end_ms - r.window.start_ms <= HOUR)
        );
        assert!(recheck_windows(&[], HOUR, 3).is_empty());
        assert!(recheck_windows(&unresolved, HOUR, 0).is_empty());
    }

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
                .all(|w| w.end_ms - w.start_ms < 90 * DAY && w.start_ms <= w.end_ms)
        );
        // The longest window the planner cuts is the longest Binance accepts.
        assert_eq!(windows[0].end_ms - windows[0].start_ms, 90 * DAY - 1);
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
