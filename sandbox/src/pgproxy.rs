//! The sandbox's Postgres endpoint: a TCP relay to the shared server, listening on loopback and
//! on the pod network's gateway so containers reach it. `fault postgres stop` turns it off
//! (open connections are cut, new ones refused at once) without touching the server, which
//! other test suites share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The on/off switch shared by the listeners and the control endpoint.
#[derive(Clone)]
pub struct Switch {
    enabled: Arc<AtomicBool>,
    changes: watch::Sender<bool>,
}

impl Default for Switch {
    fn default() -> Self {
        Self::new()
    }
}

impl Switch {
    pub fn new() -> Self {
        Self {
            enabled: Arc::new(AtomicBool::new(true)),
            changes: watch::channel(true).0,
        }
    }
    pub fn set(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
        self.changes.send_replace(enabled);
    }
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }
}

/// Binds every address, then relays each accepted connection to `upstream`.
pub async fn start(addrs: &[SocketAddr], upstream: String, switch: Switch) -> anyhow::Result<()> {
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| anyhow::anyhow!("cannot bind the Postgres endpoint to {addr}: {error} (port taken? pick another with --postgres-port)"))?;
        let upstream = upstream.clone();
        let switch = switch.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !switch.enabled() {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut off = switch.changes.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = off.wait_for(|enabled| !enabled) => {}
                    }
                });
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn relays_while_on_and_refuses_while_off() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 16];
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 || socket.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let switch = Switch::new();
        start(&[addr], upstream, switch.clone()).await.unwrap();

        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut reply = [0u8; 4];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"ping");

        switch.set(false);
        let mut rest = Vec::new();
        // The open connection is cut: reading ends (EOF or reset) instead of hanging.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_end(&mut rest),
        )
        .await
        .unwrap();
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(5), refused.read(&mut reply))
                .await
                .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)));
    }
}
