//! The rate limits shared through a real Redis (`redis-server`, started by `scripts/redis.sh`,
//! URL in `PSCTL_TEST_REDIS_URL`): two limiter instances, each with its own connection, stand for
//! two worker replicas hammering the same endpoints. Every grant carries Redis's clock, so the
//! checks are exact: no endpoint and not the whole worker ever gets more than its rate in any
//! one-second window, and the limiter does let that rate through (it is not just refusing).
//! Without Redis the conservative local share decides, counted in the metrics.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use problemsolver_webhook_worker::metrics::Metrics;
use problemsolver_webhook_worker::ratelimit::{Backend, Decision, Limiter, SharedLimits};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use uuid::Uuid;

fn redis_url() -> String {
    std::env::var("PSCTL_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "PSCTL_TEST_REDIS_URL is not set: start Redis with `eval \"$(scripts/redis.sh start)\"` \
             (or run scripts/test.sh)"
        )
    })
}

fn rps(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// A key prefix of this test alone.
fn prefix() -> String {
    format!("{{psctl-test-{}}}", Uuid::new_v4())
}

/// The most grants any window of `window_us` (half-open) holds.
fn max_in_window(times: &[u64], window_us: u64) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= window_us {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// Grants per replica and endpoint: (replica, endpoint, Redis time in µs).
type Grants = Arc<Mutex<Vec<(usize, Uuid, u64)>>>;

/// `tasks` callers per replica, each asking for the endpoints in turn until `run_for` is over.
async fn hammer(
    replicas: &[SharedLimits],
    endpoints: &[Uuid],
    tasks: usize,
    run_for: Duration,
) -> Vec<(usize, Uuid, u64)> {
    let grants: Grants = Arc::default();
    let deadline = Instant::now() + run_for;
    let mut handles = Vec::new();
    for (replica, limits) in replicas.iter().enumerate() {
        for task in 0..tasks {
            let limits = limits.clone();
            let endpoints = endpoints.to_vec();
            let grants = Arc::clone(&grants);
            handles.push(tokio::spawn(async move {
                let mut turn = task;
                while Instant::now() < deadline {
                    let endpoint = endpoints[turn % endpoints.len()];
                    turn += 1;
                    match limits.try_acquire(&endpoint).await.expect("Redis answers") {
                        Decision::Granted { at_us, wait } => {
                            grants.lock().unwrap().push((replica, endpoint, at_us));
                            // Like the worker: send at the scheduled time.
                            tokio::time::sleep(wait).await;
                        }
                        // Like the worker: a full global schedule is waited out, an endpoint
                        // refusal moves on (the row would be put back).
                        Decision::Global { wait } => tokio::time::sleep(wait).await,
                        Decision::Endpoint { wait } => {
                            tokio::time::sleep(wait.min(Duration::from_millis(5))).await;
                        }
                    }
                }
            }));
        }
    }
    for handle in handles {
        handle.await.unwrap();
    }
    Arc::try_unwrap(grants).unwrap().into_inner().unwrap()
}

async fn replicas(prefix: &str, global: u32, endpoint: u32) -> Vec<SharedLimits> {
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let limits = SharedLimits::connect(&redis_url(), prefix, rps(global), rps(endpoint))
            .expect("valid URL");
        limits.ping().await.expect("Redis answers PING");
        replicas.push(limits);
    }
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_never_send_one_endpoint_more_than_its_rate() {
    let prefix = prefix();
    let replicas = replicas(&prefix, 1000, 10).await;
    let endpoints: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let run_for = Duration::from_secs(3);
    let grants = hammer(&replicas, &endpoints, 8, run_for).await;

    for endpoint in &endpoints {
        let times: Vec<u64> = grants
            .iter()
            .filter(|(_, e, _)| e == endpoint)
            .map(|(_, _, at)| *at)
            .collect();
        let by_replica: HashMap<usize, usize> = grants
            .iter()
            .filter(|(_, e, _)| e == endpoint)
            .fold(HashMap::new(), |mut counts, (replica, _, _)| {
                *counts.entry(*replica).or_default() += 1;
                counts
            });
        // Both replicas delivered to this endpoint: the budget really is shared.
        assert_eq!(by_replica.len(), 2, "{by_replica:?}");
        let busiest = max_in_window(&times, 1_000_000);
        assert!(
            busiest <= 10,
            "{busiest} grants in one second to one endpoint (limit 10)"
        );
        let mut sorted = times.clone();
        sorted.sort_unstable();
        let closest = sorted.windows(2).map(|w| w[1] - w[0]).min().unwrap();
        assert!(
            closest >= 100_000,
            "two grants {closest} µs apart (interval 100 ms)"
        );
        // And the rate is actually granted: 3 s at 10/s is 30 (first at 0 s); allow slack for
        // scheduling.
        assert!(
            times.len() >= 25,
            "only {} grants in 3 s at 10/s",
            times.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_never_exceed_the_global_rate() {
    let prefix = prefix();
    // 40 endpoints at 100/s could take 4,000/s; the global 200/s is what binds.
    let replicas = replicas(&prefix, 200, 100).await;
    let endpoints: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let run_for = Duration::from_secs(3);
    let grants = hammer(&replicas, &endpoints, 16, run_for).await;
    let times: Vec<u64> = grants.iter().map(|(_, _, at)| *at).collect();
    let busiest = max_in_window(&times, 1_000_000);
    assert!(
        busiest <= 200,
        "{busiest} grants in one second (global limit 200)"
    );
    assert!(
        times.len() >= 540,
        "only {} grants in 3 s at 200/s",
        times.len()
    );
    // Sends are scheduled on Redis's clock at least one global interval (5 ms) apart.
    let mut sorted = times.clone();
    sorted.sort_unstable();
    let closest = sorted.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    assert!(
        closest >= 5_000,
        "two sends {closest} µs apart (interval 5 ms)"
    );
    for replica in 0..2 {
        let share = grants.iter().filter(|(r, _, _)| *r == replica).count();
        assert!(
            share > 100,
            "replica {replica} got {share} of {}",
            times.len()
        );
    }
}

#[tokio::test]
async fn a_refusal_takes_nothing_and_says_how_long_to_wait() {
    let prefix = prefix();
    let replicas = replicas(&prefix, 1000, 10).await;
    let endpoint = Uuid::new_v4();
    assert!(matches!(
        replicas[0].try_acquire(&endpoint).await.unwrap(),
        Decision::Granted { .. }
    ));
    let Decision::Endpoint { wait } = replicas[1].try_acquire(&endpoint).await.unwrap() else {
        panic!("the other replica must see the endpoint's grant");
    };
    assert!(
        wait > Duration::from_millis(50) && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    // Another endpoint is free at once (1 ms global interval).
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert!(matches!(
        replicas[1].try_acquire(&Uuid::new_v4()).await.unwrap(),
        Decision::Granted { .. }
    ));
    tokio::time::sleep(wait).await;
    assert!(matches!(
        replicas[1].try_acquire(&endpoint).await.unwrap(),
        Decision::Granted { .. }
    ));
}

#[tokio::test]
async fn unreachable_redis_falls_back_to_the_conservative_share_and_counts_it() {
    // A port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let shared = SharedLimits::connect(
        &format!("redis://127.0.0.1:{port}/0"),
        &prefix(),
        rps(1000),
        rps(10),
    )
    .expect("a valid URL connects lazily");
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let limiter = Limiter::shared(shared, rps(1000), rps(10), rps(5)).with_metrics(metrics);
    assert_eq!(limiter.configured_backend(), Backend::Redis);

    let endpoint = Uuid::new_v4();
    // Deliveries go on: the first is admitted by the fallback...
    limiter.admit(&endpoint).await.expect("the fallback admits");
    // ...at 10/s over 5 replicas, 2/s: the next one is 500 ms away, never unlimited.
    let wait = limiter.admit(&endpoint).await.unwrap_err();
    assert!(
        wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
        "{wait:?}"
    );
    assert!(limiter.redis_errors() >= 1);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    for line in [
        "webhook_rate_limiter{backend=\"local_fallback\"} 1",
        "webhook_rate_limiter{backend=\"redis\"} 0",
        "webhook_rate_limiter{backend=\"local\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    let errors: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("webhook_rate_limiter_redis_errors_total "))
        .expect("the error counter is exposed")
        .parse()
        .unwrap();
    assert!(errors >= 1, "{text}");
}

#[tokio::test]
async fn a_malformed_url_is_a_configuration_error_that_hides_the_url() {
    let error =
        SharedLimits::connect("redis://:hunter2@[::1", &prefix(), rps(1), rps(1)).unwrap_err();
    assert!(error.is_configuration());
    let text = error.to_string();
    assert!(
        text.contains("REDIS_URL") && !text.contains("hunter2"),
        "{text}"
    );
}
