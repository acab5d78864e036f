//! Rendering a [`SmokeReport`]: the table (every check, then the summary line), JSON (the
//! report's serde form, documented in docs/smoke.md), JUnit XML for CI systems, and GitHub
//! Actions annotations and job summary.

use std::fmt::Write as _;

use super::{SmokeReport, Verdict};
use crate::output::github::{self, markdown_cell};
use crate::output::{Render, Style, table};

impl Render for SmokeReport {
    fn render_table(&self, style: &Style) -> String {
        let mut text = table::render(
            &["CHECK", "CATEGORY", "RESULT", "DURATION", "EVIDENCE"],
            self.checks.iter().map(|check| {
                let result = match check.result {
                    Verdict::Pass => "pass",
                    Verdict::Fail => "FAIL",
                    Verdict::Skipped => "skipped",
                };
                let code = match check.result {
                    Verdict::Pass => "32",
                    Verdict::Fail => "31;1",
                    Verdict::Skipped => "2",
                };
                let result = style.paint_data(code, result);
                [
                    check.name.clone(),
                    check.category.to_string(),
                    result,
                    format_ms(check.duration_ms),
                    check.evidence.clone(),
                ]
            }),
        );
        text.push('\n');
        text.push_str(&self.summary_line());
        text.push('\n');
        text
    }

    fn render_junit(&self) -> Option<String> {
        Some(junit(self))
    }
}

fn format_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// GitHub Actions annotations: one `::error` per failed check, titled `smoke failed: <check>`,
/// or `smoke unreachable: <check>` when the check could not be judged.
pub fn annotations(report: &SmokeReport) -> String {
    report
        .failures()
        .map(|check| {
            let kind = if check.unreachable {
                "unreachable"
            } else {
                "failed"
            };
            github::error_annotation(&format!("smoke {kind}: {}", check.name), &check.evidence)
        })
        .collect()
}

/// The job summary: a heading naming the environment, the summary line, and a markdown table of
/// every check (failures first, so they are seen without scrolling).
pub fn step_summary(report: &SmokeReport) -> String {
    let mut markdown = format!(
        "## psctl smoke: {} (namespace {})\n\n{}\n\n| check | category | result | evidence |\n| --- | --- | --- | --- |\n",
        markdown_cell(&report.environment),
        markdown_cell(&report.namespace),
        report.summary_line()
    );
    let mut checks: Vec<_> = report.checks.iter().collect();
    checks.sort_by_key(|check| check.result != Verdict::Fail);
    for check in checks {
        let result = match (check.result, check.unreachable) {
            (Verdict::Pass, _) => "pass",
            (Verdict::Fail, false) => "**FAIL**",
            (Verdict::Fail, true) => "**unreachable**",
            (Verdict::Skipped, _) => "skipped",
        };
        let _ = writeln!(
            markdown,
            "| {} | {} | {result} | {} |",
            markdown_cell(&check.name),
            check.category,
            markdown_cell(&check.evidence)
        );
    }
    markdown
}

/// JUnit XML: one `<testsuite>` per category (in plan order), one `<testcase>` per check with
/// `classname="smoke.<category>"`. A check that judged and said no is a `<failure>`; one whose
/// dependency was out of reach is an `<error>` (counted in `errors=`), as JUnit readers
/// distinguish a broken test environment from a failed test. Both carry the evidence as
/// message and body; skipped checks their reason; passing checks the evidence as `<system-out>`.
pub fn junit(report: &SmokeReport) -> String {
    let mut categories = Vec::new();
    for check in &report.checks {
        if !categories.contains(&check.category) {
            categories.push(check.category);
        }
    }
    let seconds = |ms: u64| format!("{:.3}", ms as f64 / 1000.0);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let errors = report.failures().filter(|c| c.unreachable).count();
    let _ = writeln!(
        xml,
        "<testsuites name=\"psctl smoke {}\" tests=\"{}\" failures=\"{}\" errors=\"{errors}\" skipped=\"{}\" time=\"{}\">",
        escape(&report.environment),
        report.summary.total,
        report.summary.failed - errors,
        report.summary.skipped,
        seconds(report.duration_ms)
    );
    for category in categories {
        let checks: Vec<_> = report
            .checks
            .iter()
            .filter(|c| c.category == category)
            .collect();
        let count = |verdict| checks.iter().filter(|c| c.result == verdict).count();
        let errors = checks
            .iter()
            .filter(|c| c.result == Verdict::Fail && c.unreachable)
            .count();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"smoke.{category}\" tests=\"{}\" failures=\"{}\" errors=\"{errors}\" skipped=\"{}\" time=\"{}\">",
            checks.len(),
            count(Verdict::Fail) - errors,
            count(Verdict::Skipped),
            seconds(checks.iter().map(|c| c.duration_ms).max().unwrap_or(0))
        );
        let _ = writeln!(
            xml,
            "    <properties><property name=\"environment\" value=\"{}\"/><property name=\"namespace\" value=\"{}\"/></properties>",
            escape(&report.environment),
            escape(&report.namespace)
        );
        for check in checks {
            let _ = write!(
                xml,
                "    <testcase name=\"{}\" classname=\"smoke.{category}\" time=\"{}\"",
                escape(&check.name),
                seconds(check.duration_ms)
            );
            let evidence = escape(&check.evidence);
            match check.result {
                Verdict::Pass => {
                    let _ = writeln!(xml, "><system-out>{evidence}</system-out></testcase>");
                }
                Verdict::Fail if check.unreachable => {
                    let _ = writeln!(
                        xml,
                        "><error type=\"unreachable\" message=\"{evidence}\">{evidence}</error></testcase>"
                    );
                }
                Verdict::Fail => {
                    let _ = writeln!(
                        xml,
                        "><failure type=\"failed\" message=\"{evidence}\">{evidence}</failure></testcase>"
                    );
                }
                Verdict::Skipped => {
                    let _ = writeln!(xml, "><skipped message=\"{evidence}\"/></testcase>");
                }
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// XML text/attribute escaping; characters XML 1.0 cannot carry at all are replaced.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Category, CheckResult};
    use super::*;

    fn report() -> SmokeReport {
        let check = |name: &str, category, result, evidence: &str, unreachable| CheckResult {
            name: name.to_owned(),
            category,
            component: None,
            result,
            duration_ms: 1234,
            evidence: evidence.to_owned(),
            unreachable,
        };
        SmokeReport::new(
            "sandbox",
            "default",
            vec![
                check(
                    "pods-ready/poller",
                    Category::Cluster,
                    Verdict::Pass,
                    "1/1 pods Ready",
                    false,
                ),
                check(
                    "metrics/webhook",
                    Category::Metrics,
                    Verdict::Fail,
                    "missing required metric(s) <x> & \"y\"",
                    false,
                ),
                check(
                    "prometheus-targets/webhook",
                    Category::Monitoring,
                    Verdict::Fail,
                    "Prometheus at http://127.0.0.1:1 is unreachable",
                    true,
                ),
                check(
                    "functional/deposit-to-paid",
                    Category::Functional,
                    Verdict::Skipped,
                    "no database URL\u{1}",
                    false,
                ),
            ],
            Duration::from_millis(2500),
        )
    }

    #[test]
    fn the_table_lists_every_check_then_the_summary_line() {
        let text = report().render_table(&Style::PLAIN);
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        assert!(lines[0].contains("CHECK") && lines[0].contains("EVIDENCE"));
        assert!(lines[2].contains("metrics/webhook") && lines[2].contains("FAIL"));
        assert!(lines[2].contains("1.2s"));
        assert_eq!(
            *lines.last().unwrap(),
            "Total: 4  Passed: 1  Failed: 2  Skipped: 1"
        );
    }

    /// Coloured cells must not push columns out of line: tabled measures them without their
    /// escape codes (its `ansi` feature).
    #[test]
    fn a_coloured_table_aligns_like_a_plain_one() {
        let coloured = Style {
            color_stdout: true,
            ..Style::PLAIN
        };
        let text = report().render_table(&coloured);
        assert!(text.contains("\u{1b}[31;1mFAIL\u{1b}[0m"), "{text:?}");
        assert_eq!(
            strip_ansi(&text),
            report().render_table(&Style::PLAIN),
            "{text}"
        );
    }

    fn strip_ansi(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn the_json_schema_is_stable() {
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(
            json["summary"],
            serde_json::json!({"total": 4, "passed": 1, "failed": 2, "skipped": 1})
        );
        assert_eq!(
            json["checks"][2],
            serde_json::json!({
                "name": "prometheus-targets/webhook", "category": "monitoring", "component": null,
                "result": "fail", "duration_ms": 1234,
                "evidence": "Prometheus at http://127.0.0.1:1 is unreachable", "unreachable": true,
            })
        );
        assert_eq!(json["duration_ms"], 2500);
    }

    /// Parses the XML back with a real XML parser and checks the JUnit structure.
    #[test]
    fn junit_is_well_formed_xml_with_one_testcase_per_check() {
        use quick_xml::events::Event;
        let xml = junit(&report());
        let mut reader = quick_xml::Reader::from_str(&xml);
        let mut testcases = Vec::new();
        let mut failures = Vec::new();
        let mut errors = Vec::new();
        let mut skipped = 0;
        let mut suites = Vec::new();
        loop {
            match reader.read_event().expect("well-formed XML") {
                Event::Start(e) | Event::Empty(e) => {
                    let attr = |name: &[u8]| {
                        e.attributes()
                            .map(|a| a.unwrap())
                            .find(|a| a.key.as_ref() == name)
                            .map(|a| a.unescape_value().unwrap().into_owned())
                    };
                    match e.name().as_ref() {
                        b"testsuite" => suites.push((
                            attr(b"name").unwrap(),
                            attr(b"failures").unwrap(),
                            attr(b"errors").unwrap(),
                        )),
                        b"testsuites" => assert_eq!(
                            (attr(b"failures").unwrap(), attr(b"errors").unwrap()),
                            ("1".to_owned(), "1".to_owned())
                        ),
                        b"testcase" => testcases.push(attr(b"name").unwrap()),
                        b"failure" => failures.push(attr(b"message").unwrap()),
                        b"error" => errors.push(attr(b"message").unwrap()),
                        b"skipped" => skipped += 1,
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(suites.len(), 4);
        let counts = |name: &str| {
            suites
                .iter()
                .find(|(suite, _, _)| suite == name)
                .map(|(_, failures, errors)| (failures.as_str(), errors.as_str()))
                .unwrap()
        };
        assert_eq!(counts("smoke.metrics"), ("1", "0"));
        assert_eq!(counts("smoke.monitoring"), ("0", "1"));
        assert_eq!(
            testcases,
            [
                "pods-ready/poller",
                "metrics/webhook",
                "prometheus-targets/webhook",
                "functional/deposit-to-paid"
            ]
        );
        // A judged failure is a <failure>, an unreachable dependency an <error>.
        assert_eq!(failures, ["missing required metric(s) <x> & \"y\""]);
        assert_eq!(errors, ["Prometheus at http://127.0.0.1:1 is unreachable"]);
        assert_eq!(skipped, 1);
    }

    #[test]
    fn github_annotations_name_each_failed_check() {
        assert_eq!(
            annotations(&report()),
            "::error title=smoke failed%3A metrics/webhook::missing required metric(s) <x> & \"y\"\n\
             ::error title=smoke unreachable%3A prometheus-targets/webhook::Prometheus at http://127.0.0.1:1 is unreachable\n"
        );
        let passing = SmokeReport::new("sandbox", "default", vec![], Duration::ZERO);
        assert_eq!(annotations(&passing), "");
    }

    #[test]
    fn the_job_summary_is_a_markdown_table_failures_first() {
        let markdown = step_summary(&report());
        let lines: Vec<&str> = markdown.lines().collect();
        assert_eq!(
            lines,
            [
                "## psctl smoke: sandbox (namespace default)",
                "",
                "Total: 4  Passed: 1  Failed: 2  Skipped: 1",
                "",
                "| check | category | result | evidence |",
                "| --- | --- | --- | --- |",
                "| metrics/webhook | metrics | **FAIL** | missing required metric(s) &lt;x&gt; &amp; \"y\" |",
                "| prometheus-targets/webhook | monitoring | **unreachable** | Prometheus at http://127.0.0.1:1 is unreachable |",
                "| pods-ready/poller | cluster | pass | 1/1 pods Ready |",
                "| functional/deposit-to-paid | functional | skipped | no database URL\u{1} |",
            ]
        );
    }
}
