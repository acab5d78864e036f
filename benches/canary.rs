//! Canary gate simulation: psctl's Beta-Binomial gate against a threshold gate of the kind Argo
//! Rollouts and Flagger ship, on the same seeded synthetic traffic.
//!
//! Traffic. One canary step at 10 % weight, simulated in 30-second slots: each slot the canary
//! serves `n / 2` requests and stable `9n / 2` (`n` requests a minute). Each request fails with
//! its track's rate (stable 0.5 %, the runbook's target) and takes a latency drawn from a
//! log-normal distribution with σ = 0.6 and a p95 of 120 ms (median 45 ms) for stable. Each
//! request's latency is counted into the buckets of `webhook_delivery_duration_seconds` (the
//! webhook worker's histogram, psctl's default latency metric), because bucket counts are all
//! Prometheus keeps; every p95 a gate sees is `histogram_quantile(0.95, …)` of those counts,
//! computed as Prometheus does (linear interpolation inside a bucket). With these buckets a true
//! p95 of 120 ms reads as about 170 ms, for both tracks alike.
//!
//! Scenarios: the canary equal to stable; failing at 2× or 5× stable's rate; or with every
//! latency doubled (so its p95 is 2× stable's) at stable's error rate. Each at 10, 100 and 1,000
//! canary requests a minute, `CANARY_SIM_RUNS` runs each (default 2,000). A run's random stream
//! is seeded from the scenario and the request rate, and both gates judge the very same slots.
//!
//! The gates, each at its usual cadence:
//! - psctl: `GatePolicy::default()` with psctl's default run shape, bake 300 s and an
//!   evaluation every 30 s (`interval`). Each evaluation gets what the runner's queries return:
//!   both tracks' requests, failures and p95 since the step started, and the canary's requests
//!   and failures over the trailing 300 s guardrail window. `evaluate` and `decide` then do the
//!   rest: 2 failed evaluations in a row abort (a p95 breach is a failed evaluation, nothing
//!   else), the guardrail aborts at once, inconclusive extends the bake to 900 s, then pauses.
//! - threshold: a check every 60 s over the last 60 s (Flagger's documented `interval: 1m`).
//!   A check fails when the canary's error rate is above 1 % (`request-success-rate` min 99) or
//!   its p95 is above 500 ms (the fixed `request-duration` max of 500 ms in Flagger's docs, which
//!   Flagger applies to p99; fed the same p95 here, and equal to psctl's absolute ceiling).
//!   2 failed checks, counted cumulatively as those tools count them, abort; after 5 checks
//!   (the 300 s bake) it promotes. It never pauses.
//!
//! The headline, for 100 canary requests a minute, is printed on one line (`headline at 100
//! req/min: psctl <figures> | threshold <figures>`), then once more one figure a line, each
//! `name=value`, each psctl figure followed by the threshold gate's on the same runs
//! (`threshold_` prefix), as the last eight lines:
//! - `false_abort_rate`: share of equal-canary runs that ended aborted, at any point of the step.
//! - `healthy_paused_rate`: share of equal-canary runs that ended paused for a human.
//! - `detect_5x_rate`: share of 5×-error runs aborted within two evaluation windows, a window
//!   being one evaluation interval of that gate: by the 2nd evaluation at 60 s for psctl, by the
//!   2nd check at 120 s for the threshold gate. Two is the fewest failed evaluations either
//!   gate aborts on; psctl's guardrail alone can abort on the first, which counts too.
//! - `detect_latency_2x_rate`: share of 2×-p95 runs ended by the latency gate, at any point of
//!   the step: aborted with the latency gate failing in the evaluation (or check) that decided
//!   the abort. Neither gate can pause on latency (a breach is a failure, never inconclusive),
//!   so no pauses are counted.
//!
//! `cargo bench -p psctl --bench canary` (set `CANARY_SIM_RUNS` to change the run count; run by
//! `cargo test --bench canary`, the quick mode CI uses, the default is 50 runs).

use std::time::Duration;

use psctl::canary::gate::{
    GateOutcome, GatePolicy, Observation, StepDecision, StepTally, TrackFigures, decide, evaluate,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution, Normal};

const STABLE_RATE: f64 = 0.005;
const STABLE_SHARE: u64 = 9;
/// psctl's default bake and evaluation interval (`settings/file.rs`).
const BAKE_SECS: u64 = 300;
const INTERVAL_SECS: u64 = 30;
/// The threshold gate checks once a minute, so once every two slots.
const CHECK_SLOTS: usize = 2;
const THRESHOLD_RATE: f64 = 0.01;
const THRESHOLD_P95_MS: f64 = 500.0;
const THRESHOLD_FAILURE_LIMIT: u32 = 2;
/// Stable's latency: log-normal with this σ and this p95.
const LATENCY_SIGMA: f64 = 0.6;
const STABLE_P95_MS: f64 = 120.0;
/// The standard normal's 95th percentile.
const Z_95: f64 = 1.644_853_6;
/// `DURATION_BUCKETS` of the webhook worker (`services/webhook-worker/src/metrics.rs`), in ms;
/// the implicit `+Inf` bucket follows.
const BUCKETS_MS: [f64; 12] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 7500.0, 10000.0,
];
const BUCKET_COUNT: usize = BUCKETS_MS.len() + 1;
const SEED: u64 = 0x5eed_cafe;

/// One track's traffic: counts, and latencies as histogram bucket counts (not cumulative).
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    requests: u64,
    failures: u64,
    buckets: [u64; BUCKET_COUNT],
}

impl Track {
    fn add(&mut self, other: &Track) {
        self.requests += other.requests;
        self.failures += other.failures;
        for (total, count) in self.buckets.iter_mut().zip(other.buckets) {
            *total += count;
        }
    }

    fn sum<'a>(tracks: impl Iterator<Item = &'a Track>) -> Track {
        let mut total = Track::default();
        for track in tracks {
            total.add(track);
        }
        total
    }

    fn p95_ms(&self) -> f64 {
        histogram_quantile(0.95, &self.buckets)
    }

    fn figures(&self) -> TrackFigures {
        TrackFigures::new(self.requests as f64, self.failures as f64, self.p95_ms())
    }
}

/// Prometheus' `histogram_quantile` over per-bucket counts: find the bucket holding the rank,
/// interpolate linearly inside it; a rank in `+Inf` yields the highest finite bound.
fn histogram_quantile(quantile: f64, buckets: &[u64; BUCKET_COUNT]) -> f64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return f64::NAN;
    }
    let rank = quantile * total as f64;
    let mut below = 0u64;
    for (index, upper) in BUCKETS_MS.iter().enumerate() {
        let within = buckets[index];
        if (below + within) as f64 >= rank {
            let lower = if index == 0 {
                0.0
            } else {
                BUCKETS_MS[index - 1]
            };
            return lower + (upper - lower) * (rank - below as f64) / within as f64;
        }
        below += within;
    }
    BUCKETS_MS[BUCKETS_MS.len() - 1]
}

/// 30 seconds of both tracks.
struct Slot {
    canary: Track,
    stable: Track,
}

/// Draws the slots of one scenario.
struct TrafficSource {
    canary_requests: u64,
    stable_requests: u64,
    canary_failures: Binomial,
    stable_failures: Binomial,
    /// The natural log of a request's latency in ms: normal, so the latency is log-normal.
    canary_log_latency: Normal<f64>,
    stable_log_latency: Normal<f64>,
}

impl TrafficSource {
    fn new(per_minute: u64, error_multiplier: f64, latency_multiplier: f64) -> Self {
        let canary_requests = per_minute * INTERVAL_SECS / 60;
        let stable_requests = canary_requests * STABLE_SHARE;
        let stable_mu = STABLE_P95_MS.ln() - Z_95 * LATENCY_SIGMA;
        let log_latency =
            |mu: f64| Normal::new(mu, LATENCY_SIGMA).expect("valid normal parameters");
        Self {
            canary_requests,
            stable_requests,
            canary_failures: Binomial::new(canary_requests, STABLE_RATE * error_multiplier)
                .expect("valid binomial"),
            stable_failures: Binomial::new(stable_requests, STABLE_RATE).expect("valid binomial"),
            canary_log_latency: log_latency(stable_mu + latency_multiplier.ln()),
            stable_log_latency: log_latency(stable_mu),
        }
    }

    fn slot(&self, rng: &mut StdRng) -> Slot {
        Slot {
            canary: track(
                rng,
                self.canary_requests,
                &self.canary_failures,
                &self.canary_log_latency,
            ),
            stable: track(
                rng,
                self.stable_requests,
                &self.stable_failures,
                &self.stable_log_latency,
            ),
        }
    }
}

/// One track's slot: `requests` latencies drawn and counted into the histogram's buckets
/// (compared as logs, which spares an `exp` per request and orders them the same way).
fn track(rng: &mut StdRng, requests: u64, failures: &Binomial, log_latency: &Normal<f64>) -> Track {
    let log_bounds = BUCKETS_MS.map(f64::ln);
    let mut buckets = [0u64; BUCKET_COUNT];
    for _ in 0..requests {
        let log_ms = log_latency.sample(rng);
        let bucket = log_bounds
            .iter()
            .position(|upper| log_ms <= *upper)
            .unwrap_or(BUCKET_COUNT - 1);
        buckets[bucket] += 1;
    }
    Track {
        requests,
        failures: failures.sample(rng),
        buckets,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    /// `at_secs` into the step, after `evaluations` evaluations (or checks) of that gate.
    Aborted {
        at_secs: u64,
        evaluations: u32,
        by_latency: bool,
    },
    Promoted,
    Paused,
}

/// psctl's gate, fed after each slot exactly as the runner feeds it.
struct PsctlGate<'a> {
    policy: &'a GatePolicy,
    tally: StepTally,
    step: Track,
    stable: Track,
}

impl<'a> PsctlGate<'a> {
    fn new(policy: &'a GatePolicy) -> Self {
        Self {
            policy,
            tally: StepTally::default(),
            step: Track::default(),
            stable: Track::default(),
        }
    }

    fn after(&mut self, slots: &[Slot]) -> Option<Ending> {
        let latest = slots.last().expect("called after a slot");
        self.step.add(&latest.canary);
        self.stable.add(&latest.stable);
        let guardrail_slots = (self.policy.guardrail_window.as_secs() / INTERVAL_SECS).max(1);
        let recent = &slots[slots.len().saturating_sub(guardrail_slots as usize)..];
        let guardrail = Track::sum(recent.iter().map(|slot| &slot.canary));
        let observation = Observation {
            canary: self.step.figures(),
            stable: self.stable.figures(),
            canary_guardrail: TrackFigures {
                p95_ms: None,
                ..guardrail.figures()
            },
        };
        let evaluation = evaluate(self.policy, &observation);
        let elapsed = Duration::from_secs(INTERVAL_SECS * slots.len() as u64);
        let bake = Duration::from_secs(BAKE_SECS);
        match decide(self.policy, &mut self.tally, &evaluation, elapsed, bake) {
            StepDecision::Continue => None,
            StepDecision::Advance => Some(Ending::Promoted),
            StepDecision::Pause { .. } => Some(Ending::Paused),
            StepDecision::Abort { .. } => Some(Ending::Aborted {
                at_secs: elapsed.as_secs(),
                evaluations: self.tally.evaluations,
                by_latency: matches!(evaluation.latency, GateOutcome::Fail { .. }),
            }),
        }
    }
}

/// The threshold gate: every minute, the last minute's canary error rate and p95.
#[derive(Default)]
struct ThresholdGate {
    checks: u32,
    failed_checks: u32,
}

impl ThresholdGate {
    fn after(&mut self, slots: &[Slot]) -> Option<Ending> {
        if !slots.len().is_multiple_of(CHECK_SLOTS) {
            return None;
        }
        self.checks += 1;
        let window = Track::sum(slots[slots.len() - CHECK_SLOTS..].iter().map(|s| &s.canary));
        let error_rate = window.failures as f64 / window.requests.max(1) as f64;
        let slow = window.p95_ms() > THRESHOLD_P95_MS;
        if error_rate > THRESHOLD_RATE || slow {
            self.failed_checks += 1;
            if self.failed_checks >= THRESHOLD_FAILURE_LIMIT {
                return Some(Ending::Aborted {
                    at_secs: INTERVAL_SECS * slots.len() as u64,
                    evaluations: self.checks,
                    by_latency: slow,
                });
            }
        }
        let bake_checks = BAKE_SECS / (INTERVAL_SECS * CHECK_SLOTS as u64);
        (u64::from(self.checks) >= bake_checks).then_some(Ending::Promoted)
    }
}

/// Runs both gates on one stream of slots, drawing slots only while either gate still runs.
fn run_both(policy: &GatePolicy, source: &TrafficSource, rng: &mut StdRng) -> (Ending, Ending) {
    // psctl ends at the bake limit at the latest, or one evaluation later when the limit
    // falls in a failure streak; the cap only guards against a loop.
    let cap = 4 * (BAKE_SECS as f64 * policy.max_bake_factor / INTERVAL_SECS as f64) as usize;
    let mut slots = Vec::with_capacity(cap);
    let mut psctl = PsctlGate::new(policy);
    let mut threshold = ThresholdGate::default();
    let (mut ours, mut theirs) = (None, None);
    while (ours.is_none() || theirs.is_none()) && slots.len() < cap {
        slots.push(source.slot(rng));
        if ours.is_none() {
            ours = psctl.after(&slots);
        }
        if theirs.is_none() {
            theirs = threshold.after(&slots);
        }
    }
    (
        ours.unwrap_or(Ending::Paused),
        theirs.unwrap_or(Ending::Paused),
    )
}

#[derive(Default)]
struct Tally {
    runs: u32,
    /// Seconds into the step of each abort.
    aborted_at: Vec<u64>,
    aborted_within_two: u32,
    aborted_by_latency: u32,
    paused: u32,
    promoted: u32,
}

impl Tally {
    fn add(&mut self, ending: Ending) {
        self.runs += 1;
        match ending {
            Ending::Aborted {
                at_secs,
                evaluations,
                by_latency,
            } => {
                self.aborted_at.push(at_secs);
                self.aborted_within_two += u32::from(evaluations <= 2);
                self.aborted_by_latency += u32::from(by_latency);
            }
            Ending::Paused => self.paused += 1,
            Ending::Promoted => self.promoted += 1,
        }
    }

    fn share(&self, count: u32) -> f64 {
        f64::from(count) / f64::from(self.runs.max(1))
    }

    fn aborted(&self) -> f64 {
        self.share(self.aborted_at.len() as u32)
    }

    fn median_seconds(&mut self) -> String {
        if self.aborted_at.is_empty() {
            return "-".to_string();
        }
        self.aborted_at.sort_unstable();
        self.aborted_at[self.aborted_at.len() / 2].to_string()
    }
}

struct Scenario {
    label: &'static str,
    error_multiplier: f64,
    latency_multiplier: f64,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        label: "equal",
        error_multiplier: 1.0,
        latency_multiplier: 1.0,
    },
    Scenario {
        label: "2x errors",
        error_multiplier: 2.0,
        latency_multiplier: 1.0,
    },
    Scenario {
        label: "5x errors",
        error_multiplier: 5.0,
        latency_multiplier: 1.0,
    },
    Scenario {
        label: "2x p95",
        error_multiplier: 1.0,
        latency_multiplier: 2.0,
    },
];

const HEADLINE_PER_MINUTE: u64 = 100;

/// `runs` runs of one scenario at `per_minute` canary requests a minute, both gates on each.
fn simulate(policy: &GatePolicy, scenario: usize, per_minute: u64, runs: u32) -> (Tally, Tally) {
    let mut rng = StdRng::seed_from_u64(SEED ^ (per_minute << 8) ^ scenario as u64);
    let Scenario {
        error_multiplier,
        latency_multiplier,
        ..
    } = SCENARIOS[scenario];
    let source = TrafficSource::new(per_minute, error_multiplier, latency_multiplier);
    let mut ours = Tally::default();
    let mut theirs = Tally::default();
    for _ in 0..runs {
        let (psctl, threshold) = run_both(policy, &source, &mut rng);
        ours.add(psctl);
        theirs.add(threshold);
    }
    (ours, theirs)
}

fn main() {
    // `cargo test --bench canary` (no `--bench` argument) is the quick mode CI uses.
    let full = std::env::args().any(|arg| arg == "--bench");
    let runs: u32 = std::env::var("CANARY_SIM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 2000 } else { 50 });
    let policy = GatePolicy::default();
    let started = std::time::Instant::now();

    println!(
        "canary gate simulation: {runs} seeded runs per row, stable error rate {:.1}%, stable p95 \
         {STABLE_P95_MS:.0} ms (log-normal, sigma {LATENCY_SIGMA}); psctl evaluates every \
         {INTERVAL_SECS} s, bakes {BAKE_SECS} s, extends to {:.0} s while inconclusive; the \
         threshold gate checks every {} s and promotes after {BAKE_SECS} s",
        STABLE_RATE * 100.0,
        BAKE_SECS as f64 * policy.max_bake_factor,
        INTERVAL_SECS * CHECK_SLOTS as u64,
    );
    println!(
        "{:<10} {:>7} {:<10} {:>8} {:>10} {:>10} {:>8} {:>7} {:>8}",
        "canary",
        "req/min",
        "gate",
        "aborted",
        "in_2_evals",
        "by_latency",
        "median_s",
        "paused",
        "promoted"
    );

    // Rows are independent and each seeds its own stream, so they run on every core and print
    // the same figures whatever the core count.
    let rows: Vec<(usize, u64)> = (0..SCENARIOS.len())
        .flat_map(|index| [10u64, 100, 1000].map(|per_minute| (index, per_minute)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results: Vec<(usize, Tally, Tally)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let (rows, policy) = (&rows, &policy);
                scope.spawn(move || {
                    (worker..rows.len())
                        .step_by(threads)
                        .map(|row| {
                            let (index, per_minute) = rows[row];
                            let (ours, theirs) = simulate(policy, index, per_minute, runs);
                            (row, ours, theirs)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a simulation thread panicked"))
            .collect()
    });
    results.sort_by_key(|(row, _, _)| *row);

    // (psctl, threshold) tallies at the headline rate, by scenario.
    let mut headline: Vec<(Tally, Tally)> = Vec::new();
    for (row, mut ours, mut theirs) in results {
        let (index, per_minute) = rows[row];
        for (name, tally) in [("psctl", &mut ours), ("threshold", &mut theirs)] {
            let percent = |share: f64| format!("{:.1}%", 100.0 * share);
            println!(
                "{:<10} {:>7} {:<10} {:>8} {:>10} {:>10} {:>8} {:>7} {:>8}",
                SCENARIOS[index].label,
                per_minute,
                name,
                percent(tally.aborted()),
                percent(tally.share(tally.aborted_within_two)),
                percent(tally.share(tally.aborted_by_latency)),
                tally.median_seconds(),
                percent(tally.share(tally.paused)),
                percent(tally.share(tally.promoted)),
            );
        }
        if per_minute == HEADLINE_PER_MINUTE {
            headline.push((ours, theirs));
        }
    }
    eprintln!("simulated in {:.1} s", started.elapsed().as_secs_f64());

    let [equal, _, five_times, slow] = &headline[..] else {
        unreachable!("one headline row per scenario");
    };
    let figures = [
        ("false_abort_rate", equal.0.aborted(), equal.1.aborted()),
        (
            "healthy_paused_rate",
            equal.0.share(equal.0.paused),
            equal.1.share(equal.1.paused),
        ),
        (
            "detect_5x_rate",
            five_times.0.share(five_times.0.aborted_within_two),
            five_times.1.share(five_times.1.aborted_within_two),
        ),
        (
            "detect_latency_2x_rate",
            slow.0.share(slow.0.aborted_by_latency),
            slow.1.share(slow.1.aborted_by_latency),
        ),
    ];
    // The headline on one line, psctl's gate beside the threshold gate, then one figure a line.
    let side = |pick: fn(&(&str, f64, f64)) -> f64| {
        figures
            .iter()
            .map(|figure| format!("{}={:.4}", figure.0, pick(figure)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "headline at {HEADLINE_PER_MINUTE} req/min: psctl {} | threshold {}",
        side(|figure| figure.1),
        side(|figure| figure.2)
    );
    for (name, ours, theirs) in figures {
        println!("{name}={ours:.4}");
        println!("threshold_{name}={theirs:.4}");
    }
}
