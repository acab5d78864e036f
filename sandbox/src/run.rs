//! Dispatch: parse, resolve the state directory and settings, run one command, map the outcome
//! to an exit code (0 ok, 1 a part is down, 2 usage, 3 something unreachable or failing).

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command, Format, UpArgs};
use crate::settings::{Layout, Settings, repo_root};

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs its parts at info; one-shot commands speak through their own progress lines.
    let default_level = if matches!(cli.command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(3)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let layout = Layout::resolve(cli.state_dir)?;
    match cli.command {
        Command::Up(args) => {
            let options = crate::up::UpOptions {
                repo: repo_root(args.repo.clone()),
                bootstrap: !args.no_bootstrap,
                tools: !args.no_tools,
            };
            let previous = layout.load_settings().unwrap_or_default();
            let settings = merge(previous, args);
            let elapsed = crate::up::up(&layout, &settings, &options).await?;
            eprintln!();
            eprintln!("psctl-sandbox: up in {:.1}s", elapsed.as_secs_f64());
            eprintln!(
                "  API server  {}   (context `psctl-sandbox` in {})",
                settings.api_url(),
                layout.kubeconfig().display()
            );
            eprintln!(
                "  registry    {}   Prometheus {}",
                settings.registry(),
                settings.prometheus_url()
            );
            eprintln!("  database    {}", settings.database_url_host());
            eprintln!(
                "load it with:  eval \"$(psctl-sandbox --state-dir {} env)\"",
                layout.root.display()
            );
            println!("sandbox_up_seconds={:.1} s", elapsed.as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        Command::Down(args) => {
            for line in crate::down::down(&layout, args.purge)? {
                eprintln!("psctl-sandbox: {line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => {
            let settings = layout.load_settings()?;
            let parts = crate::status::collect(&layout, &settings).await;
            match args.output {
                Format::Table => print!("{}", crate::status::table(&parts)),
                Format::Json => println!("{}", serde_json::to_string_pretty(&parts)?),
            }
            Ok(if parts.iter().all(|part| part.up) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Env => {
            let settings = layout.load_settings()?;
            print!(
                "{}",
                crate::env::export_lines(&crate::env::variables(&layout, &settings))
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Fault(command) => {
            let settings = layout.load_settings()?;
            let line = crate::fault::apply(&layout, &settings, command).await?;
            println!("{}", line.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            crate::serve::run(&layout).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Flags given to `up` override what the previous `up` recorded, which overrides defaults.
fn merge(previous: Settings, args: UpArgs) -> Settings {
    let UpArgs {
        repo: _,
        no_bootstrap: _,
        no_tools: _,
        api_port,
        control_port,
        registry_port,
        prometheus_port,
        alertmanager_port,
        postgres_port,
        merchant_port,
        binance_port,
        postgres_admin_url,
        database,
        network,
        node,
        controller_sync_delay_ms,
    } = args;
    Settings {
        api_port: api_port.unwrap_or(previous.api_port),
        control_port: control_port.unwrap_or(previous.control_port),
        registry_port: registry_port.unwrap_or(previous.registry_port),
        prometheus_port: prometheus_port.unwrap_or(previous.prometheus_port),
        alertmanager_port: alertmanager_port.unwrap_or(previous.alertmanager_port),
        postgres_port: postgres_port.unwrap_or(previous.postgres_port),
        merchant_port: merchant_port.unwrap_or(previous.merchant_port),
        binance_port: binance_port.unwrap_or(previous.binance_port),
        postgres_admin_url: postgres_admin_url.unwrap_or(previous.postgres_admin_url),
        database: database.unwrap_or(previous.database),
        network: network.unwrap_or(previous.network),
        node: node.unwrap_or(previous.node),
        controller_sync_delay_ms: controller_sync_delay_ms
            .unwrap_or(previous.controller_sync_delay_ms),
    }
}
