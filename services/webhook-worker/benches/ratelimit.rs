//! Decisions per second of the shared rate limiter against a real Redis (`scripts/redis.sh
//! start`, URL in `PSCTL_TEST_REDIS_URL`): two limiter instances with their own connections
//! (two replicas), 32 concurrent callers each, asking for 1,000 endpoints in turn for 10 s. Every
//! call is one `EVALSHA` of the GCRA script, so the figure is the limiter's own cost per delivery
//! decision, granted or refused. Rates are set high (1,000,000/s global, 1,000/s per endpoint) so
//! that most calls are grants that write both cells; a second run with the runbook's rates
//! (1,000/s, 10/s) shows the limiter holding 1,000 grants/s while it answers the refusals. Like the
//! worker, a caller waits for its grant's scheduled send time.
//!
//! The last lines are `decisions_per_s=N`, `granted_per_s=G` and the p99 latency per decision,
//! for each run.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use problemsolver_webhook_worker::ratelimit::{Decision, SharedLimits};
use uuid::Uuid;

const REPLICAS: usize = 2;
const CALLERS: usize = 32;
const ENDPOINTS: usize = 1000;
const RUN: Duration = Duration::from_secs(10);

async fn run(url: &str, global: u32, endpoint: u32) {
    let prefix = format!("{{psctl-bench-{}}}", Uuid::new_v4());
    let endpoints: Arc<Vec<Uuid>> = Arc::new((0..ENDPOINTS).map(|_| Uuid::new_v4()).collect());
    let decisions = Arc::new(AtomicU64::new(0));
    let granted = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    let started = Instant::now();
    for _ in 0..REPLICAS {
        let limits = SharedLimits::connect(
            url,
            &prefix,
            NonZeroU32::new(global).unwrap(),
            NonZeroU32::new(endpoint).unwrap(),
        )
        .expect("valid REDIS URL");
        limits.ping().await.expect("Redis answers");
        for caller in 0..CALLERS {
            let limits = limits.clone();
            let endpoints = Arc::clone(&endpoints);
            let decisions = Arc::clone(&decisions);
            let granted = Arc::clone(&granted);
            handles.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut turn = caller * 31;
                while started.elapsed() < RUN {
                    let endpoint = endpoints[turn % endpoints.len()];
                    turn += 1;
                    let asked = Instant::now();
                    let decision = limits.try_acquire(&endpoint).await.expect("Redis answers");
                    latencies.push(asked.elapsed());
                    decisions.fetch_add(1, Ordering::Relaxed);
                    match decision {
                        // As the worker does: wait for the scheduled send time, or for room in
                        // the global schedule; an endpoint refusal moves on to the next row.
                        Decision::Granted { wait, .. } => {
                            granted.fetch_add(1, Ordering::Relaxed);
                            if !wait.is_zero() {
                                tokio::time::sleep(wait).await;
                            }
                        }
                        Decision::Global { wait } => tokio::time::sleep(wait).await,
                        Decision::Endpoint { .. } => {}
                    }
                }
                latencies
            }));
        }
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let p99 = latencies[latencies.len() * 99 / 100];
    let decisions = decisions.load(Ordering::Relaxed);
    let granted = granted.load(Ordering::Relaxed);
    println!(
        "rates global={global}/s endpoint={endpoint}/s: {REPLICAS} replicas x {CALLERS} callers, {ENDPOINTS} endpoints, {elapsed:.1} s"
    );
    println!("decisions_per_s={:.0}", decisions as f64 / elapsed);
    println!("granted_per_s={:.0}", granted as f64 / elapsed);
    println!("p99_decision_ms={:.3}", p99.as_secs_f64() * 1000.0);
}

#[tokio::main]
async fn main() {
    let url = std::env::var("PSCTL_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!("PSCTL_TEST_REDIS_URL is not set: `eval \"$(scripts/redis.sh start)\"`")
    });
    run(&url, 1_000_000, 1_000).await;
    run(&url, 1_000, 10).await;
}
