//! `psctl smoke` on a GitHub Actions runner, end to end with the real binary: each failed check
//! is an `::error title=…::` annotation on stderr, the job summary file gets a markdown table,
//! and the JUnit report counts unreachable dependencies as errors, not failures.

mod support;

use support::Psctl;

/// A psctl.yaml whose cluster and Prometheus listen on nothing, in a temporary directory.
fn unreachable_environment() -> tempfile::TempDir {
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
    dir
}

fn smoke(dir: &tempfile::TempDir, extra: &[&str]) -> (i32, String, String) {
    Psctl::new()
        .args(["smoke", "--timeout", "2s"])
        .args(extra)
        .env("PSCTL_CONFIG", dir.path().join("psctl.yaml"))
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", dir.path().join("summary.md"))
        .run()
        .parts()
}

#[test]
fn failed_checks_are_annotated_and_summarised() {
    let dir = unreachable_environment();
    std::fs::write(dir.path().join("summary.md"), "## an earlier step\n").unwrap();
    let (code, stdout, stderr) = smoke(&dir, &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(!stdout.contains("::error"), "annotations belong on stderr");
    let annotations: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("::error"))
        .collect();
    assert!(!annotations.is_empty(), "{stderr}");
    for line in &annotations {
        assert!(
            line.starts_with("::error title=smoke unreachable%3A "),
            "{line}"
        );
        // Title and message are separated by the only unescaped `::` after the command.
        let (title, message) = line["::error title=".len()..].split_once("::").unwrap();
        assert!(!title.contains(':') && !title.contains(','), "{title}");
        assert!(!message.is_empty(), "{line}");
    }
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(
        summary.starts_with("## an earlier step\n## psctl smoke: e (namespace default)\n"),
        "{summary}"
    );
    assert!(summary.contains("| check | category | result | evidence |"));
    assert_eq!(
        summary.matches("| **unreachable** |").count(),
        annotations.len(),
        "one summary row per annotation:\n{summary}"
    );
}

#[test]
fn junit_reports_unreachable_checks_as_errors() {
    use quick_xml::events::Event;
    let dir = unreachable_environment();
    let (code, stdout, stderr) = smoke(&dir, &["-o", "junit"]);
    assert_eq!(code, 3, "{stderr}");
    let mut reader = quick_xml::Reader::from_str(&stdout);
    let (mut errors, mut failures, mut declared) = (0, 0, None);
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                b"error" => errors += 1,
                b"failure" => failures += 1,
                b"testsuites" => {
                    let attribute = |name: &[u8]| {
                        e.attributes()
                            .map(|a| a.unwrap())
                            .find(|a| a.key.as_ref() == name)
                            .map(|a| a.unescape_value().unwrap().parse::<usize>().unwrap())
                            .unwrap()
                    };
                    declared = Some((attribute(b"errors"), attribute(b"failures")));
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(errors > 0, "{stdout}");
    assert_eq!(failures, 0, "{stdout}");
    assert_eq!(declared, Some((errors, 0)), "{stdout}");
}
