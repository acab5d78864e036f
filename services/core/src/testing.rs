//! Test support (feature `testing`): a fresh, uniquely named, migrated database per test, made
//! from the admin URL in `PSCTL_TEST_DATABASE_URL`. A missing variable fails the test loudly;
//! nothing is skipped.

pub mod bench;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::Secret;

/// The admin URL variable the test suite reads.
pub const TEST_DATABASE_URL_ENV: &str = "PSCTL_TEST_DATABASE_URL";

/// A throw-away database. Call [`TestDb::drop_db`] at the end of the test to remove it.
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    admin_url: String,
    url: String,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The admin URL; panics (failing the test) with the fix when unset.
pub fn admin_url() -> String {
    match std::env::var(TEST_DATABASE_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{TEST_DATABASE_URL_ENV} is not set: this test needs PostgreSQL. Run `eval \"$(scripts/postgres.sh start)\"` \
             (or scripts/test.sh), which exports {TEST_DATABASE_URL_ENV}=postgres://postgres@127.0.0.1:55432/postgres"
        ),
    }
}

fn with_database(admin_url: &str, database: &str) -> String {
    match url::Url::parse(admin_url) {
        Ok(mut parsed) => {
            parsed.set_path(&format!("/{database}"));
            parsed.to_string()
        }
        Err(error) => panic!(
            "the admin URL ({TEST_DATABASE_URL_ENV}, or the benchmark's own) is not a valid URL: {error}"
        ),
    }
}

impl TestDb {
    /// Creates and migrates a new database named `<prefix>_<random>`.
    pub async fn new(prefix: &str) -> TestDb {
        Self::with_pool_size(prefix, 8).await
    }

    pub async fn with_pool_size(prefix: &str, max_connections: u32) -> TestDb {
        Self::on_server(&admin_url(), prefix, max_connections).await
    }

    /// Like [`TestDb::with_pool_size`], on the server of `admin_url` instead of
    /// `PSCTL_TEST_DATABASE_URL` (benchmarks use a durable cluster of their own).
    pub async fn on_server(admin_url: &str, prefix: &str, max_connections: u32) -> TestDb {
        let admin_url = admin_url.to_owned();
        let clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let name = format!("t_{clean}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "cannot connect to the admin URL ({TEST_DATABASE_URL_ENV}, or the benchmark's own): {error}"
                )
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|error| panic!("CREATE DATABASE {name} failed: {error}"));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(&url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to test database {name}: {error}"));
        crate::db::migrate(&pool)
            .await
            .unwrap_or_else(|error| panic!("migrating test database {name} failed: {error}"));
        TestDb {
            pool,
            name,
            admin_url,
            url,
        }
    }

    /// URL of this database (for child processes under test).
    pub fn url(&self) -> Secret<String> {
        Secret::new(self.url.clone())
    }

    /// Closes the pool and drops the database.
    pub async fn drop_db(self) {
        self.pool.close().await;
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            let _ = sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut admin)
                .await;
            let _ = admin.close().await;
        }
    }
}
