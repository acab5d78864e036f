//! `problemsolver-poller`: parse flags, read the environment, run the loop or one cycle.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use problemsolver_core::db::{self, PoolConfig};
use problemsolver_core::http::{MetricsServer, Readiness, Shutdown};
use problemsolver_poller::binance::BinanceClient;
use problemsolver_poller::config::{Config, ENVIRONMENT_HELP};
use problemsolver_poller::leader::{Leadership, POLLER_LOCK_KEY};
use problemsolver_poller::metrics::Metrics;
use problemsolver_poller::service::{CycleOutcome, Poller};
use prometheus_client::registry::Registry;

/// `--version`: the crate version and the git commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_GIT_COMMIT"),
    ")"
);

/// Polls Binance deposit history and credits matching invoices (payment, ledger entry, webhook).
///
/// One replica at a time is active (Postgres advisory lock); others stay healthy and idle.
#[derive(Debug, Parser)]
#[command(name = "problemsolver-poller", version = VERSION, after_help = ENVIRONMENT_HELP)]
struct Cli {
    /// Run one poll-and-match cycle, print its summary as JSON on stdout, and exit (no HTTP
    /// server). Exits 1 if the cycle failed or another replica holds the lock.
    #[arg(long)]
    once: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(start(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Logging and error reporting around the whole run, so a fatal error is reported too.
async fn start(cli: Cli) -> anyhow::Result<ExitCode> {
    let telemetry =
        problemsolver_core::telemetry::init("problemsolver-poller", env!("CARGO_PKG_VERSION"))
            .context("logging configuration")?;
    let result = run(cli).await;
    if let Err(error) = &result {
        tracing::error!("{error:#}");
    }
    drop(telemetry);
    result
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::from_env()?;
    let pool_config = PoolConfig {
        max_connections: config.database_max_connections,
        application_name: "problemsolver-poller".to_owned(),
        ..PoolConfig::default()
    };
    let pool = db::connect(&config.database_url, &pool_config).await?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    problemsolver_core::build_info::register(
        &mut registry,
        "problemsolver_poller",
        env!("CARGO_PKG_VERSION"),
        env!("BUILD_GIT_COMMIT"),
    );
    let readiness = Readiness::new("first cycle has not run yet");
    let binance = BinanceClient::new(
        &config.binance_api_base,
        config.binance_api_key.clone(),
        config.binance_api_secret.clone(),
        config.settings.recv_window_ms,
    )?;
    let leadership = Leadership::with_session_timeout(
        db::connect_options(&config.database_url)?,
        POLLER_LOCK_KEY,
        config.settings.leader_session_timeout,
    );
    let mut poller = Poller::new(
        pool,
        binance,
        leadership,
        metrics,
        readiness.clone(),
        config.settings.clone(),
    );
    let shutdown = Shutdown::on_signals();

    if cli.once {
        let outcome = poller.cycle(&shutdown).await;
        poller.shutdown().await;
        return match outcome {
            Ok(CycleOutcome::Led(report)) => {
                println!("{}", serde_json::to_string(&report)?);
                Ok(ExitCode::SUCCESS)
            }
            Ok(CycleOutcome::Standby) => {
                eprintln!("error: another poller holds the leadership lock; nothing was done");
                Ok(ExitCode::from(1))
            }
            Err(error) => {
                eprintln!("error: cycle failed: {error}");
                Ok(ExitCode::from(1))
            }
        };
    }

    let server = MetricsServer::bind(config.metrics_addr, Arc::new(registry), readiness).await?;
    tracing::info!(addr = %config.metrics_addr, base = %config.binance_api_base, "problemsolver-poller starting");
    let server_task = tokio::spawn(server.serve(shutdown.clone()));
    poller.run(shutdown.clone()).await;
    shutdown.trigger();
    server_task.await.context("metrics server task")??;
    tracing::info!("problemsolver-poller stopped");
    Ok(ExitCode::SUCCESS)
}
