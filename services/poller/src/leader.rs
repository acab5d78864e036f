//! Leadership: exactly one active poller, decided by a session-level Postgres advisory lock held
//! on a dedicated connection. Losing that connection loses the lock (Postgres releases it), so
//! the lock connection is checked every cycle before any work.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// The advisory-lock key every poller replica contends for.
pub const POLLER_LOCK_KEY: i64 = 0x7073_706f_6c6c_6572; // "pspoller"

pub struct Leadership {
    options: PgConnectOptions,
    key: i64,
    connection: Option<PgConnection>,
    leader: bool,
}

impl Leadership {
    pub fn new(options: PgConnectOptions, key: i64) -> Self {
        Leadership {
            options: options.application_name("problemsolver-poller-lock"),
            key,
            connection: None,
            leader: false,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// Confirms or tries to take leadership. Errors mean the database is unreachable; leadership
    /// is then considered lost (a standby elsewhere may take over).
    pub async fn refresh(&mut self) -> Result<bool, sqlx::Error> {
        let result = self.refresh_inner().await;
        if result.is_err() {
            self.leader = false;
            // The session (and any lock it held) is gone or unusable; start over next time.
            if let Some(connection) = self.connection.take() {
                let _ = connection.close().await;
            }
        }
        result
    }

    async fn refresh_inner(&mut self) -> Result<bool, sqlx::Error> {
        let connection = match self.connection.as_mut() {
            Some(connection) => connection,
            None => self.connection.insert(self.options.connect().await?),
        };
        if self.leader {
            sqlx::query("SELECT 1").execute(&mut *connection).await?;
            return Ok(true);
        }
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut *connection)
            .await?;
        if acquired {
            tracing::info!("acquired the poller advisory lock: this replica is the leader");
        }
        self.leader = acquired;
        Ok(acquired)
    }

    /// Releases the lock (on shutdown) so a standby takes over at once.
    pub async fn release(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            if self.leader {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(self.key)
                    .execute(&mut connection)
                    .await;
            }
            let _ = connection.close().await;
        }
        self.leader = false;
    }
}
