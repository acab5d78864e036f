//! problemsolver-webhook-worker: reads configuration, connects, serves /metrics /health /ready,
//! and runs the delivery loop until SIGTERM (or, with `--once`, until nothing is due).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use problemsolver_core::crypto::MasterKey;
use problemsolver_core::db::{self, PoolConfig};
use problemsolver_core::http::{MetricsServer, Readiness, Shutdown};
use problemsolver_core::{config, telemetry};
use problemsolver_webhook_worker::config::Args;
use problemsolver_webhook_worker::metrics::Metrics;
use problemsolver_webhook_worker::ratelimit::{Limiter, SharedLimits};
use problemsolver_webhook_worker::secrets::MasterKeyOpener;
use problemsolver_webhook_worker::ssrf::TargetPolicy;
use problemsolver_webhook_worker::worker::Worker;
use prometheus_client::registry::Registry;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(args)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logging and error reporting around the whole run, so a fatal error is reported too.
async fn start(args: Args) -> anyhow::Result<ExitCode> {
    let telemetry = telemetry::init("problemsolver-webhook-worker", env!("CARGO_PKG_VERSION"))?;
    let result = run(args).await;
    if let Err(error) = &result {
        tracing::error!("{error:#}");
    }
    drop(telemetry);
    result
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.worker_config()?;
    let database_url = config::env_secret("DATABASE_URL")?;
    let master_key = MasterKey::from_env()?;
    let limiter = match config::env_secret_optional("REDIS_URL")? {
        Some(url) => {
            let shared = SharedLimits::connect(
                url.expose(),
                &args.rate_limit_prefix,
                config.global_rps,
                config.per_endpoint_rps,
            )?;
            match shared.ping().await {
                Ok(()) => tracing::info!(
                    prefix = %args.rate_limit_prefix,
                    "rate limits shared by all replicas through Redis (REDIS_URL)"
                ),
                Err(error) if error.is_configuration() => {
                    return Err(anyhow::Error::new(error).context("connecting to `REDIS_URL`"));
                }
                Err(error) => tracing::warn!(
                    %error,
                    fallback_replicas = args.rate_limit_replicas.get(),
                    "Redis (REDIS_URL) does not answer yet: delivering under the conservative local share \
                     (the rates divided by WEBHOOK_RATE_LIMIT_REPLICAS) until it does"
                ),
            }
            Limiter::shared(
                shared,
                config.global_rps,
                config.per_endpoint_rps,
                args.rate_limit_replicas,
            )
        }
        None => {
            tracing::warn!(
                global_rps = config.global_rps.get(),
                endpoint_rps = config.per_endpoint_rps.get(),
                "REDIS_URL is not set: rate limits are per process, so N replicas together may send N times \
                 WEBHOOK_ENDPOINT_RPS to one merchant; set REDIS_URL to share them"
            );
            Limiter::local(config.global_rps, config.per_endpoint_rps)
        }
    };
    if config.client.policy == TargetPolicy::Insecure {
        tracing::warn!(
            "WEBHOOK_ALLOW_INSECURE_TARGETS=true: SSRF DEFENCE IS OFF. Plain http:// and private, loopback and \
             link-local targets are allowed. This setting is for the sandbox and tests only; never use it in production."
        );
    }

    let shutdown = Shutdown::on_signals();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    problemsolver_core::build_info::register(
        &mut registry,
        "webhook_worker",
        env!("CARGO_PKG_VERSION"),
        env!("BUILD_GIT_COMMIT"),
    );
    let readiness = Readiness::new("connecting to the database");
    let server = if args.once {
        None
    } else {
        let server =
            MetricsServer::bind(args.metrics_addr, Arc::new(registry), readiness.clone()).await?;
        tracing::info!(addr = ?server.local_addr(), "serving /metrics, /health and /ready");
        let stop = shutdown.clone();
        Some(tokio::spawn(async move { server.serve(stop).await }))
    };

    let pool_config = PoolConfig {
        max_connections: args.database_max_connections,
        application_name: "problemsolver-webhook-worker".to_owned(),
        ..PoolConfig::default()
    };
    let pool = db::connect(&database_url, &pool_config)
        .await
        .context("starting the webhook worker")?;
    readiness.set_ready();
    metrics.health.set(1);
    tokio::spawn(watch_database(
        pool.clone(),
        readiness.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    tracing::info!(
        worker_id = %config.worker_id,
        concurrency = config.concurrency,
        batch_size = config.batch_size,
        pipelines = config.pipelines,
        lease_secs = config.lease.as_secs(),
        batch_worst_case_secs = config.batch_worst_case().as_secs_f64(),
        global_rps = config.global_rps.get(),
        endpoint_rps = config.per_endpoint_rps.get(),
        rate_limiter = limiter.configured_backend().label(),
        once = args.once,
        "webhook worker starting"
    );
    let worker = Arc::new(
        Worker::new(
            pool.clone(),
            config,
            metrics,
            Arc::new(MasterKeyOpener(master_key)),
        )?
        .with_limiter(limiter),
    );
    tokio::spawn(Arc::clone(&worker).housekeeping(
        Duration::from_secs(args.queue_depth_interval_secs.max(1)),
        shutdown.token(),
    ));

    let token = shutdown.token();
    let running = {
        let worker = Arc::clone(&worker);
        tokio::spawn(async move { worker.run(token, args.once).await })
    };
    let totals = if args.once {
        running.await.context("the delivery loop failed")?
    } else {
        shutdown.triggered().await;
        readiness.set_not_ready("shutting down");
        let grace = Duration::from_secs(args.shutdown_grace_secs);
        match tokio::time::timeout(grace, running).await {
            Ok(joined) => joined.context("the delivery loop failed")?,
            Err(_) => {
                tracing::warn!(
                    grace_secs = args.shutdown_grace_secs,
                    "in-flight deliveries did not finish within the grace period; their leases will expire and the rows will be retried"
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    };
    shutdown.trigger();
    if let Some(server) = server {
        let _ = server.await;
    }
    pool.close().await;
    tracing::info!(
        claimed = totals.claimed,
        delivered = totals.delivered,
        failed = totals.failed,
        dead = totals.dead,
        disabled = totals.disabled,
        released = totals.released,
        lease_expiring = totals.lease_expiring,
        queue_errors = totals.queue_errors,
        "webhook worker stopped"
    );
    if totals.queue_errors > 0 && args.once {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps `/ready` and `worker_health_status` true to whether the database answers.
async fn watch_database(
    pool: sqlx::PgPool,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    loop {
        if db::ping(&pool, Duration::from_secs(2)).await {
            readiness.set_ready();
            metrics.health.set(1);
        } else {
            readiness.set_not_ready("database unreachable");
            metrics.health.set(0);
        }
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
