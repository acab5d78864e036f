//! Runs the emulated API server alone on `127.0.0.1:<port>` (first argument, default 6443) until
//! Ctrl-C: handy for poking at it with kubectl without the rest of the sandbox. It writes a
//! kubeconfig holding the administrator's token (0600, in the temporary directory) and prints
//! its path; the token itself is never printed. A second argument `always-allow` turns RBAC off
//! for debugging (authentication stays on).

use std::net::SocketAddr;

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;

use psctl_sandbox_apiserver::{ApiServer, ApiServerConfig, Authorization};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(text) => text.parse().map_err(|_| {
            anyhow::anyhow!("the port `{text}` is not a number between 0 and 65535")
        })?,
        None => 6443,
    };
    let authorization = match std::env::args().nth(2).as_deref() {
        None => Authorization::Rbac,
        Some("always-allow") => Authorization::AlwaysAllow,
        Some(other) => anyhow::bail!("unknown mode `{other}`: give `always-allow` or nothing"),
    };
    let server = ApiServer::start(ApiServerConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], port)),
        authorization,
        ..ApiServerConfig::default()
    })
    .await?;
    let path = std::env::temp_dir().join(format!("psctl-sandbox-apiserver-{port}.kubeconfig"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    write!(
        file,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster: {{server: \"{}\"}}\nusers:\n- name: sandbox\n  user: {{token: \"{}\"}}\ncontexts:\n- name: sandbox\n  context: {{cluster: sandbox, user: sandbox, namespace: default}}\ncurrent-context: sandbox\n",
        server.url(),
        server.admin_token()
    )?;
    println!("{}", server.url());
    println!("KUBECONFIG={}", path.display());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
