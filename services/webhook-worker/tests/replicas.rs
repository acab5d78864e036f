//! Two worker replicas sharing their rate limits through a real Redis (`PSCTL_TEST_REDIS_URL`)
//! deliver one merchant's backlog to a sink that records when each request arrived: together
//! they never send the merchant more than its 10 requests/s, and they do send about that.

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use problemsolver_webhook_worker::metrics::Metrics;
use problemsolver_webhook_worker::ratelimit::{Limiter, SharedLimits};
use problemsolver_webhook_worker::worker::Worker;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn redis_url() -> String {
    std::env::var("PSCTL_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "PSCTL_TEST_REDIS_URL is not set: start Redis with `eval \"$(scripts/redis.sh start)\"` \
             (or run scripts/test.sh)"
        )
    })
}

/// Arrival times are taken by the sink, after the request crossed the loopback and the sink's
/// scheduler: two requests granted 100 ms apart can arrive a few ms closer. The exact check on
/// Redis's clock is in shared_ratelimit.rs; here a window 20 ms shorter than a second absorbs
/// that jitter.
const JITTER_US: u64 = 20_000;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_together_keep_a_merchant_at_ten_per_second() {
    let db = common::TestDb::new().await;
    let sink = common::sink().await;
    let merchant = common::merchant(&db.pool, &sink.url("/hook")).await;
    common::enqueue(&db.pool, merchant, 80, 5).await;

    let prefix = format!("{{psctl-test-{}}}", Uuid::new_v4());
    let endpoint_rps = NonZeroU32::new(10).unwrap();
    let global_rps = NonZeroU32::new(1000).unwrap();
    let token = CancellationToken::new();
    let mut handles = Vec::new();
    for replica in 0..2 {
        let mut config = common::config(&format!("replica-{replica}"));
        config.batch_size = 5;
        config.per_endpoint_rps = endpoint_rps;
        config.global_rps = global_rps;
        let shared = SharedLimits::connect(&redis_url(), &prefix, global_rps, endpoint_rps)
            .expect("valid URL");
        shared.ping().await.expect("Redis answers");
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let worker = Arc::new(
            Worker::new(
                db.pool.clone(),
                config,
                metrics,
                Arc::new(common::PlainOpener),
            )
            .unwrap()
            .with_limiter(Limiter::shared(
                shared,
                global_rps,
                endpoint_rps,
                NonZeroU32::new(2).unwrap(),
            )),
        );
        let token = token.clone();
        handles.push(tokio::spawn(async move { worker.run(token, false).await }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    token.cancel();
    let mut delivered = Vec::new();
    for handle in handles {
        delivered.push(handle.await.unwrap().delivered);
    }

    let arrivals: Vec<u64> = sink
        .deliveries()
        .iter()
        .map(|d| {
            assert!(d.verified, "{d:?}");
            d.arrived_unix_us
        })
        .collect();
    assert_eq!(arrivals.len() as u64, delivered.iter().sum::<u64>());
    let busiest = max_in_window(&arrivals, 1_000_000 - JITTER_US);
    assert!(
        busiest <= 10,
        "{busiest} requests reached the merchant within one second (limit 10); per replica {delivered:?}"
    );
    // About 4 s at 10/s; both replicas took part.
    assert!(
        arrivals.len() >= 30,
        "only {} delivered in 4 s",
        arrivals.len()
    );
    assert!(
        delivered.iter().all(|d| *d > 0),
        "per replica {delivered:?}"
    );
    db.drop_db().await;
}
