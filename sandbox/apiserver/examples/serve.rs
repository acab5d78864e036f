//! Runs the emulated API server alone on `127.0.0.1:<port>` (first argument, default 6443) until
//! Ctrl-C: handy for poking at it with kubectl without the rest of the sandbox.

use std::net::SocketAddr;

use psctl_sandbox_apiserver::{ApiServer, ApiServerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(text) => text.parse().map_err(|_| {
            anyhow::anyhow!("the port `{text}` is not a number between 0 and 65535")
        })?,
        None => 6443,
    };
    let server = ApiServer::start(ApiServerConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], port)),
        ..ApiServerConfig::default()
    })
    .await?;
    println!("{}", server.url());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
