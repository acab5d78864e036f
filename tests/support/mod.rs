//! The one harness of psctl's integration and end-to-end tests, included by each test file with
//! `mod support;` (and by the sandbox benchmarks with `#[path]`):
//!
//! - [`Psctl`]: one way to run the real binary, with an environment cleared of everything a
//!   developer's shell or the sandbox exports, so a test passes only what it means to;
//! - [`sandbox::Sandbox`]: a namespace and a migrated database of a test's own on the sandbox,
//!   a least-privilege ServiceAccount bound to what `psctl rbac` prints, and the kubeconfig
//!   every psctl invocation uses; removed when the value is dropped, also when an assertion
//!   fails;
//! - [`db`]: a throwaway database on the test PostgreSQL, dropped the same way, and seed data;
//! - [`images`]: service and deliberately broken images pushed to the sandbox registry;
//! - [`cluster`]: questions the tests ask the cluster (is this revision serving?) and states
//!   they provoke (a release stuck in `pending-upgrade`).

#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod db;
pub mod images;
pub mod sandbox;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use sandbox::Sandbox;

/// The psctl checkout (the crate's manifest directory).
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Variables a psctl child keeps from the test's environment: what finding programs (`docker`,
/// `helm`, `cargo`), the home directory and temporary files need. Everything else (`KUBECONFIG`,
/// `PSCTL_*`, `DATABASE_URL`, `HELM_DRIVER`, `RUST_LOG`, colour settings...) is dropped.
const KEPT: [&str; 10] = [
    "PATH",
    "HOME",
    "USER",
    "TMPDIR",
    "LANG",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "PSCTL_PG_BINDIR",
];

/// One invocation of the real `psctl` binary.
pub struct Psctl {
    command: Command,
}

impl Default for Psctl {
    fn default() -> Self {
        Self::new()
    }
}

impl Psctl {
    /// `psctl` in the checkout, stdin closed, `NO_COLOR=1`, and only [`KEPT`] inherited.
    pub fn new() -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_psctl"));
        command.env_clear();
        for name in KEPT {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .env("NO_COLOR", "1")
            .current_dir(ROOT)
            .stdin(Stdio::null());
        Self { command }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// `--config FILE`.
    pub fn config(self, path: &Path) -> Self {
        self.arg("--config").arg(path)
    }

    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(name, value);
        self
    }

    pub fn env_remove(mut self, name: impl AsRef<OsStr>) -> Self {
        self.command.env_remove(name);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// The prepared command, to spawn or to hand to `tokio::process::Command::from`.
    pub fn into_command(self) -> Command {
        self.command
    }

    /// Runs to completion.
    pub fn run(mut self) -> Run {
        let output = self.command.output().expect("run the psctl binary");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON (`-o json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    pub fn parts(self) -> (i32, String, String) {
        (self.code, self.stdout, self.stderr)
    }
}

/// The `-o json` report on stdout.
pub fn report(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// The check called `name` in a smoke report.
pub fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in {report:#}"))
}

/// The profile directory this test binary was built into (`target/debug`), where `cargo build`
/// of the services from [`ROOT`] puts their binaries too.
pub fn profile_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_psctl"))
        .parent()
        .expect("the psctl binary lives in a directory")
        .to_path_buf()
}

/// Runs `cleanup` to completion on a runtime of its own in another thread: usable from `Drop`,
/// also while the test's own runtime is unwinding from a failed assertion. Errors are printed,
/// never raised (a panic during a panic would abort the test binary).
pub(crate) fn run_detached<F>(what: &str, cleanup: F)
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let what = what.to_owned();
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the cleanup");
        runtime.block_on(cleanup)
    })
    .join();
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("cleanup of {what} failed: {error}"),
        Err(_) => eprintln!("cleanup of {what} panicked"),
    }
}

/// A name unique to this process and call, for namespaces and databases.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// insta settings for output of the real binary: this checkout's path becomes `[ROOT]` and
/// temporary directories `[TMP]`, so snapshots hold what is stable from run to run.
pub fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(ROOT), "[ROOT]");
    settings.add_filter(r"/[^\s`'\x22]*/\.tmp[A-Za-z0-9]{6}", "[TMP]");
    settings
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}
