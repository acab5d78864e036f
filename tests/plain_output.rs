//! Colour belongs to terminals only: the real binary, with stdout and stderr redirected to
//! files, writes no ANSI escape (0x1b) in either, even without `NO_COLOR`; and a table
//! redirected to a file stays plain while stderr, still a terminal, keeps its colour.

mod support;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use support::Psctl;

/// A kubeconfig and a psctl.yaml whose cluster and Prometheus listen on nothing.
struct Unreachable {
    dir: tempfile::TempDir,
}

impl Unreachable {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n\
             users: [{name: u, user: {}}]\ncontexts: [{name: ctx, context: {cluster: c, user: u}}]\ncurrent-context: ctx\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("psctl.yaml"),
            format!(
                "environments:\n  e:\n    kube_context: ctx\n    kubeconfig: {}\n    prometheus_url: http://127.0.0.1:9\n",
                kubeconfig.display()
            ),
        )
        .unwrap();
        Self { dir }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("psctl.yaml")
    }
}

/// Runs psctl with stdout and stderr redirected to files and the colour variables unset;
/// returns the exit code and both files' bytes.
fn psctl_to_files(args: &[&str], config: &Path) -> (i32, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let status = Psctl::new()
        .args(args)
        .env_remove("NO_COLOR")
        .env("PSCTL_CONFIG", config)
        .into_command()
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .status()
        .expect("run psctl");
    (
        status.code().unwrap_or(-1),
        std::fs::read(out_path).unwrap(),
        std::fs::read(err_path).unwrap(),
    )
}

fn assert_no_escape(what: &str, bytes: &[u8]) {
    assert!(
        !bytes.contains(&0x1b),
        "{what} contains an ANSI escape:\n{}",
        String::from_utf8_lossy(bytes)
    );
}

#[test]
fn commands_redirected_to_files_write_no_ansi_escapes() {
    let environment = Unreachable::new();
    for (args, expected_code) in [
        (&["--help"][..], 0),
        (&["smoke", "--help"][..], 0),
        (&["history"][..], 3),
        (&["smoke", "--timeout", "2s"][..], 3),
        (&["no-such-command"][..], 2),
    ] {
        let (code, stdout, stderr) = psctl_to_files(args, &environment.config());
        let line = args.join(" ");
        assert_eq!(
            code,
            expected_code,
            "psctl {line}: {}",
            String::from_utf8_lossy(&stderr)
        );
        assert!(
            !stdout.is_empty() || !stderr.is_empty(),
            "psctl {line} printed nothing"
        );
        assert_no_escape(&format!("stdout of `psctl {line}`"), &stdout);
        assert_no_escape(&format!("stderr of `psctl {line}`"), &stderr);
    }
}

/// `psctl smoke > report.txt` typed at a terminal: stderr is the terminal (a pseudo-terminal
/// made by util-linux `script`), stdout a file.
#[test]
fn a_report_redirected_to_a_file_is_plain_while_the_terminal_keeps_colour() {
    let environment = Unreachable::new();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.txt");
    let line = format!(
        "'{}' smoke --timeout 2s --config '{}' > '{}'",
        env!("CARGO_BIN_EXE_psctl"),
        environment.config().display(),
        report.display()
    );
    let terminal = Command::new("script")
        .args(["--quiet", "--return", "--command", &line, "/dev/null"])
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("PSCTL_ENV")
        .env_remove("DATABASE_URL")
        .env_remove("PROMETHEUS_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs psctl on a pseudo-terminal");
    assert_eq!(
        terminal.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&terminal.stdout)
    );
    let table = std::fs::read(&report).unwrap();
    let text = String::from_utf8_lossy(&table);
    assert!(
        text.contains("CHECK") && text.contains("FAIL"),
        "no smoke table in the file:\n{text}"
    );
    assert_no_escape("the redirected smoke report", &table);
    // The same run's stderr went to the terminal, where colour is wanted: proof that the file
    // is plain because of its own stream, not because colour was off altogether.
    assert!(
        terminal.stdout.contains(&0x1b),
        "stderr on a terminal lost its colour:\n{}",
        String::from_utf8_lossy(&terminal.stdout)
    );
}
