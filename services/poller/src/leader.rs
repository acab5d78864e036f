//! Leadership: exactly one active poller, decided by a session-level Postgres advisory lock held
//! on a dedicated connection. Losing that connection loses the lock (Postgres releases it).
//!
//! A leader can lose its session without noticing: a half-open TCP connection, a frozen
//! process, a backend terminated by an operator. So the lock session is bounded on both sides:
//! - the server ends it when the leader goes quiet: `idle_session_timeout` is the session
//!   timeout, and TCP keepalives (`tcp_keepalives_*`) detect a vanished peer;
//! - the leader proves it still holds the session with a heartbeat every third of that timeout,
//!   each with its own deadline, and stops counting itself leader as soon as one fails or the
//!   last success is older than the session timeout (a process that slept cannot know whether
//!   the server already let the lock go).
//!
//! A standby therefore takes the lock at most one session timeout (plus one poll interval for
//! its next attempt) after a leader stops answering, and a leader that lost the lock stops
//! before its next Binance request ([`Leadership::is_leader`] is checked at every safe point).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// The advisory-lock key every poller replica contends for.
pub const POLLER_LOCK_KEY: i64 = 0x7073_706f_6c6c_6572; // "pspoller"

/// How long the server keeps a silent leader's session, and so the lock.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Held {
    connection: Option<PgConnection>,
    /// When the lock was last confirmed on the server.
    confirmed_at: Option<Instant>,
}

pub struct Leadership {
    options: PgConnectOptions,
    key: i64,
    session_timeout: Duration,
    held: Arc<Mutex<Held>>,
    leader: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
}

/// The lock session's server-side limits for a session timeout (whole seconds, at least 3).
pub fn session_parameters(session_timeout: Duration) -> Vec<(&'static str, String)> {
    let secs = session_timeout.as_secs().max(3);
    let probe = (secs / 3).max(1);
    vec![
        ("idle_session_timeout", format!("{}", secs * 1000)),
        ("statement_timeout", format!("{}", probe * 1000)),
        ("tcp_keepalives_idle", probe.to_string()),
        ("tcp_keepalives_interval", probe.to_string()),
        ("tcp_keepalives_count", "2".to_owned()),
    ]
}

impl Leadership {
    pub fn new(options: PgConnectOptions, key: i64) -> Self {
        Self::with_session_timeout(options, key, DEFAULT_SESSION_TIMEOUT)
    }

    pub fn with_session_timeout(
        options: PgConnectOptions,
        key: i64,
        session_timeout: Duration,
    ) -> Self {
        let session_timeout = session_timeout.max(Duration::from_secs(3));
        let options = options
            .application_name("problemsolver-poller-lock")
            .options(session_parameters(session_timeout));
        Leadership {
            options,
            key,
            session_timeout,
            held: Arc::new(Mutex::new(Held::default())),
            leader: Arc::new(AtomicBool::new(false)),
            heartbeat: None,
        }
    }

    /// The deadline of one check (connect, lock attempt, heartbeat).
    fn probe_timeout(&self) -> Duration {
        self.session_timeout / 3
    }

    /// Whether this replica still leads: the heartbeat has not failed and the lock was confirmed
    /// less than a session timeout ago. Checked before every Binance request and write batch.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
            && self
                .held
                .try_lock()
                .map(|held| {
                    held.confirmed_at
                        .is_some_and(|at| at.elapsed() < self.session_timeout)
                })
                // The heartbeat holds the mutex for at most one probe: trust the flag meanwhile.
                .unwrap_or(true)
    }

    /// The process id of the lock session's backend (for tests and diagnostics).
    pub async fn backend_pid(&self) -> Option<i32> {
        let mut held = self.held.lock().await;
        let connection = held.connection.as_mut()?;
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(connection)
            .await
            .ok()
    }

    /// Confirms or tries to take leadership. Errors mean the database is unreachable (or did not
    /// answer in time); leadership is then considered lost (a standby elsewhere may take over).
    pub async fn refresh(&mut self) -> Result<bool, sqlx::Error> {
        let probe = self.probe_timeout();
        let mut held = self.held.lock().await;
        let result = match tokio::time::timeout(probe, self.refresh_inner(&mut held)).await {
            Ok(result) => result,
            Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the lock session did not answer within {probe:?}"),
            ))),
        };
        match result {
            Ok(true) => {
                held.confirmed_at = Some(Instant::now());
                drop(held);
                if !self.leader.swap(true, Ordering::SeqCst) {
                    tracing::info!(
                        session_timeout_s = self.session_timeout.as_secs(),
                        "acquired the poller advisory lock: this replica is the leader"
                    );
                }
                self.ensure_heartbeat();
                Ok(true)
            }
            Ok(false) => {
                self.leader.store(false, Ordering::SeqCst);
                Ok(false)
            }
            Err(error) => {
                if self.leader.swap(false, Ordering::SeqCst) {
                    tracing::error!(%error, "lost the poller lock session: no longer the leader");
                }
                held.confirmed_at = None;
                // The session (and any lock it held) is gone or unusable; start over next time.
                // Dropping the socket is enough for the server, and a dead one cannot answer a
                // polite goodbye.
                drop(held.connection.take());
                Err(error)
            }
        }
    }

    async fn refresh_inner(&self, held: &mut Held) -> Result<bool, sqlx::Error> {
        let connection = match held.connection.as_mut() {
            Some(connection) => connection,
            None => held.connection.insert(self.options.connect().await?),
        };
        if self.leader.load(Ordering::SeqCst) {
            // Still our session, so still our lock: prove the session is alive.
            sqlx::query("SELECT 1").execute(&mut *connection).await?;
            return Ok(true);
        }
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut *connection)
            .await
    }

    fn ensure_heartbeat(&mut self) {
        if self
            .heartbeat
            .as_ref()
            .is_some_and(|task| !task.is_finished())
        {
            return;
        }
        let held = Arc::clone(&self.held);
        let leader = Arc::clone(&self.leader);
        let every = self.session_timeout / 3;
        let probe = self.probe_timeout();
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if !leader.load(Ordering::SeqCst) {
                    return;
                }
                let mut held = held.lock().await;
                let Some(connection) = held.connection.as_mut() else {
                    leader.store(false, Ordering::SeqCst);
                    return;
                };
                let alive =
                    tokio::time::timeout(probe, sqlx::query("SELECT 1").execute(&mut *connection))
                        .await;
                match alive {
                    Ok(Ok(_)) => held.confirmed_at = Some(Instant::now()),
                    failed => {
                        let reason = match failed {
                            Ok(Err(error)) => error.to_string(),
                            _ => format!("no answer within {probe:?}"),
                        };
                        leader.store(false, Ordering::SeqCst);
                        held.confirmed_at = None;
                        drop(held.connection.take());
                        tracing::error!(%reason, "poller lock heartbeat failed: no longer the leader");
                        return;
                    }
                }
            }
        }));
    }

    /// Releases the lock (on shutdown) so a standby takes over at once.
    pub async fn release(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
        let mut held = self.held.lock().await;
        if let Some(mut connection) = held.connection.take() {
            if self.leader.load(Ordering::SeqCst) {
                let _ = tokio::time::timeout(
                    self.probe_timeout(),
                    sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(self.key)
                        .execute(&mut connection),
                )
                .await;
            }
            let _ = tokio::time::timeout(self.probe_timeout(), connection.close()).await;
        }
        held.confirmed_at = None;
        self.leader.store(false, Ordering::SeqCst);
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_limits_follow_the_timeout() {
        let params = session_parameters(Duration::from_secs(30));
        let get = |name: &str| {
            params
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.clone())
        };
        assert_eq!(get("idle_session_timeout").as_deref(), Some("30000"));
        assert_eq!(get("statement_timeout").as_deref(), Some("10000"));
        assert_eq!(get("tcp_keepalives_idle").as_deref(), Some("10"));
        // Never below three seconds, so the probe is at least one second.
        let tiny = session_parameters(Duration::from_millis(10));
        assert!(tiny.contains(&("idle_session_timeout", "3000".to_owned())));
    }
}
