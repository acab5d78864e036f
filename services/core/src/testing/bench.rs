//! Benchmark support (feature `testing`): the durable cluster benchmarks measure on, its commit
//! counter, and what `pgbench` commits per second there (the physical limit a figure is put
//! beside).

use std::path::PathBuf;

use sqlx::{Connection as _, PgConnection, PgPool};

/// The admin URL variable of the durable benchmark cluster.
pub const BENCH_DATABASE_URL_ENV: &str = "PSCTL_BENCH_DATABASE_URL";
const FIX: &str = "run `eval \"$(scripts/postgres.sh start-durable)\"` first: it starts the durable \
                   benchmark cluster (port 55442) and exports PSCTL_BENCH_DATABASE_URL";

/// The admin URL of the durable cluster, after checking that it is one.
pub async fn durable_admin_url() -> String {
    let url = match std::env::var(BENCH_DATABASE_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{BENCH_DATABASE_URL_ENV} is not set. This benchmark measures on a durable PostgreSQL \
             (fsync, synchronous_commit, full_page_writes on) and never uses the test cluster: {FIX}"
        ),
    };
    let mut admin = PgConnection::connect(&url).await.unwrap_or_else(|error| {
        panic!("cannot connect to {BENCH_DATABASE_URL_ENV}: {error}; {FIX}")
    });
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings
         WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes') ORDER BY name",
    )
    .fetch_all(&mut admin)
    .await
    .expect("read the durability settings");
    let off: Vec<String> = settings
        .iter()
        .filter(|(_, value)| value != "on")
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    assert!(
        settings.len() == 3 && off.is_empty(),
        "{BENCH_DATABASE_URL_ENV} points at a cluster that is not durable ({}): the figure would not \
         reflect production; {FIX}",
        off.join(", ")
    );
    let _ = admin.close().await;
    eprintln!("durable cluster: fsync=on synchronous_commit=on full_page_writes=on");
    url
}

/// Commits of this database so far (every session's, as the statistics system counts them).
pub async fn commits(pool: &PgPool) -> i64 {
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await
        .expect("clear the statistics snapshot");
    sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .expect("read xact_commit")
}

/// The pgbench of the installed server (same major version), or the one on PATH.
fn pgbench() -> PathBuf {
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin/pgbench"))
        .filter(|path| path.is_file())
        .collect();
    versioned.sort_by_key(|path| {
        path.components()
            .nth(4)
            .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(path) = versioned.pop() {
        return path;
    }
    let on_path = std::process::Command::new("pgbench")
        .arg("--version")
        .output();
    match on_path {
        Ok(output) if output.status.success() => PathBuf::from("pgbench"),
        _ => panic!(
            "pgbench is not installed: run scripts/bootstrap.sh (it installs Debian's postgresql-contrib) \
             or `apt-get install postgresql-contrib`"
        ),
    }
}

/// Runs pgbench against `url` with `clients` clients, one-row UPDATE per transaction; returns
/// its transactions (= commits) per second, excluding connection time.
pub fn pgbench_tps(url: &str, clients: usize, seconds: u32) -> f64 {
    let pgbench = pgbench();
    let init = std::process::Command::new(&pgbench)
        .args(["-i", "-q", "-s", "1", url])
        .output()
        .expect("run pgbench -i");
    assert!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let script =
        std::env::temp_dir().join(format!("pgbench-one-row-update-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "\\set aid random(1, 100000)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n",
    )
    .expect("write the pgbench script");
    let clients = clients.to_string();
    let seconds = seconds.to_string();
    let args = [
        "-n",
        "-M",
        "prepared",
        "-c",
        &clients,
        "-j",
        &clients,
        "-T",
        &seconds,
        "-f",
        script.to_str().expect("utf-8 path"),
    ];
    eprintln!("pgbench {} <durable cluster>", args.join(" "));
    let run = std::process::Command::new(&pgbench)
        .args(args)
        .arg(url)
        .output()
        .expect("run pgbench");
    let _ = std::fs::remove_file(&script);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "pgbench failed: {out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    out.lines()
        .find_map(|line| {
            line.strip_prefix("tps = ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `tps = ` line in pgbench's output:\n{out}"))
}
