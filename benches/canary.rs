//! Canary gate simulation: psctl's Beta-Binomial gate against a threshold gate of the kind Argo
//! Rollouts and Flagger ship, on the same seeded synthetic traffic.
//!
//! One canary step at 10 % weight: each minute the canary serves `n` requests and stable `9n`;
//! each request fails with the track's rate. Stable fails at 0.5 % (the runbook's target); the
//! canary at 1× (equal), 2× or 5× that. The step bakes 5 minutes.
//! - psctl: evaluates every minute on the step's cumulative counts, aborts after 2 failed
//!   evaluations in a row or on the 1 %-over-5-minutes guardrail, advances after the bake on a
//!   conclusive pass, extends the bake up to 15 minutes while inconclusive, then pauses.
//! - threshold: every minute, a window whose canary error rate is above 1 % is a failed check;
//!   2 failed checks (cumulative, as those tools count them) abort; after the bake it promotes.
//!
//! Printed per scenario: abort rate (false aborts when equal, detections otherwise), median
//! minutes to abort, how many runs ended paused for a human (inconclusive), and how many were
//! promoted (for a worse canary: a bad release reaching the next step unnoticed). The last line is
//! the false-abort rate of psctl's gate for equal rates at 100 requests a minute.
//!
//! `cargo bench -p psctl --bench canary` (set `CANARY_SIM_RUNS` to change the run count).

use std::time::Duration;

use psctl::canary::gate::{
    GatePolicy, Observation, StepDecision, StepTally, TrackFigures, decide, evaluate,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution};

const STABLE_RATE: f64 = 0.005;
const STABLE_SHARE: f64 = 9.0;
const BAKE_MINUTES: u32 = 5;
const THRESHOLD_RATE: f64 = 0.01;
const THRESHOLD_FAILURE_LIMIT: u32 = 2;
const SEED: u64 = 0x5eed_cafe;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Aborted(u32),
    Promoted,
    Paused,
}

struct Minute {
    canary_requests: u64,
    canary_failures: u64,
    stable_requests: u64,
    stable_failures: u64,
}

fn traffic(rng: &mut StdRng, per_minute: u64, canary_rate: f64, minutes: u32) -> Vec<Minute> {
    let stable_per_minute = (per_minute as f64 * STABLE_SHARE) as u64;
    let canary = Binomial::new(per_minute, canary_rate).expect("valid binomial");
    let stable = Binomial::new(stable_per_minute, STABLE_RATE).expect("valid binomial");
    (0..minutes)
        .map(|_| Minute {
            canary_requests: per_minute,
            canary_failures: canary.sample(rng),
            stable_requests: stable_per_minute,
            stable_failures: stable.sample(rng),
        })
        .collect()
}

fn psctl_gate(policy: &GatePolicy, minutes: &[Minute]) -> Ending {
    let bake = Duration::from_secs(u64::from(BAKE_MINUTES) * 60);
    let guardrail_minutes = (policy.guardrail_window.as_secs() / 60).max(1) as usize;
    let mut tally = StepTally::default();
    let (mut cr, mut cf, mut sr, mut sf) = (0u64, 0u64, 0u64, 0u64);
    for (i, minute) in minutes.iter().enumerate() {
        cr += minute.canary_requests;
        cf += minute.canary_failures;
        sr += minute.stable_requests;
        sf += minute.stable_failures;
        let recent = &minutes[(i + 1).saturating_sub(guardrail_minutes)..=i];
        let guard_requests: u64 = recent.iter().map(|m| m.canary_requests).sum();
        let guard_failures: u64 = recent.iter().map(|m| m.canary_failures).sum();
        let observation = Observation {
            canary: TrackFigures::new(cr as f64, cf as f64, 120.0),
            stable: TrackFigures::new(sr as f64, sf as f64, 120.0),
            canary_guardrail: TrackFigures::new(
                guard_requests as f64,
                guard_failures as f64,
                120.0,
            ),
        };
        let evaluation = evaluate(policy, &observation);
        let elapsed = Duration::from_secs(60 * (i as u64 + 1));
        match decide(policy, &mut tally, &evaluation, elapsed, bake) {
            StepDecision::Continue => {}
            StepDecision::Advance => return Ending::Promoted,
            StepDecision::Abort { .. } => return Ending::Aborted(i as u32 + 1),
            StepDecision::Pause { .. } => return Ending::Paused,
        }
    }
    Ending::Paused
}

fn threshold_gate(minutes: &[Minute]) -> Ending {
    let mut failed_checks = 0;
    for (i, minute) in minutes.iter().take(BAKE_MINUTES as usize).enumerate() {
        let rate = minute.canary_failures as f64 / minute.canary_requests.max(1) as f64;
        if rate > THRESHOLD_RATE {
            failed_checks += 1;
            if failed_checks >= THRESHOLD_FAILURE_LIMIT {
                return Ending::Aborted(i as u32 + 1);
            }
        }
    }
    Ending::Promoted
}

struct Tally {
    aborted: Vec<u32>,
    paused: u32,
    promoted: u32,
    runs: u32,
}

impl Tally {
    fn new() -> Self {
        Self {
            aborted: Vec::new(),
            paused: 0,
            promoted: 0,
            runs: 0,
        }
    }

    fn add(&mut self, ending: Ending) {
        self.runs += 1;
        match ending {
            Ending::Aborted(minute) => self.aborted.push(minute),
            Ending::Paused => self.paused += 1,
            Ending::Promoted => self.promoted += 1,
        }
    }

    fn abort_rate(&self) -> f64 {
        self.aborted.len() as f64 / f64::from(self.runs.max(1))
    }

    fn median_minutes(&mut self) -> String {
        if self.aborted.is_empty() {
            return "-".to_string();
        }
        self.aborted.sort_unstable();
        self.aborted[self.aborted.len() / 2].to_string()
    }
}

fn main() {
    let runs: u32 = std::env::var("CANARY_SIM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let policy = GatePolicy::default();
    let max_minutes = (f64::from(BAKE_MINUTES) * policy.max_bake_factor).ceil() as u32;
    let started = std::time::Instant::now();

    println!(
        "canary gate simulation: {runs} seeded runs per scenario, stable error rate {:.1}%, \
         bake {BAKE_MINUTES} min (psctl extends to {max_minutes} min while inconclusive)",
        STABLE_RATE * 100.0
    );
    println!(
        "{:<9} {:>8} {:<10} {:>11} {:>11} {:>8} {:>9}",
        "canary", "req/min", "gate", "abort_rate", "median_min", "paused", "promoted"
    );

    let mut headline = None;
    for (label, multiplier) in [("equal", 1.0), ("2x worse", 2.0), ("5x worse", 5.0)] {
        for per_minute in [10u64, 100, 1000] {
            let mut rng = StdRng::seed_from_u64(SEED ^ (per_minute << 8) ^ multiplier as u64);
            let mut ours = Tally::new();
            let mut theirs = Tally::new();
            for _ in 0..runs {
                let minutes = traffic(&mut rng, per_minute, STABLE_RATE * multiplier, max_minutes);
                ours.add(psctl_gate(&policy, &minutes));
                theirs.add(threshold_gate(&minutes));
            }
            for (name, tally) in [("psctl", &mut ours), ("threshold", &mut theirs)] {
                let share =
                    |count: u32| format!("{:.1}%", 100.0 * f64::from(count) / f64::from(runs));
                println!(
                    "{:<9} {:>8} {:<10} {:>10.2}% {:>11} {:>8} {:>9}",
                    label,
                    per_minute,
                    name,
                    100.0 * tally.abort_rate(),
                    tally.median_minutes(),
                    share(tally.paused),
                    share(tally.promoted),
                );
            }
            if multiplier == 1.0 && per_minute == 100 {
                headline = Some((ours.abort_rate(), theirs.abort_rate()));
            }
        }
    }
    let (ours, theirs) = headline.expect("the equal-rates, 100 requests scenario ran");
    eprintln!("simulated in {:.1} s", started.elapsed().as_secs_f64());
    println!("threshold_gate_false_abort_rate={theirs:.4}");
    println!("false_abort_rate={ours:.4}");
}
