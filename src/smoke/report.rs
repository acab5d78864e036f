//! Rendering a [`SmokeReport`]: the table (every check, then the summary line), JSON (the
//! report's serde form, documented in docs/smoke.md) and JUnit XML for CI systems.

use std::fmt::Write as _;

use super::{SmokeReport, Verdict};
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

/// JUnit XML: one `<testsuite>` per category (in plan order), one `<testcase>` per check with
/// `classname="smoke.<category>"`; failures carry the evidence as message and body, skipped
/// checks their reason; passing checks the evidence as `<system-out>`.
pub fn junit(report: &SmokeReport) -> String {
    let mut categories = Vec::new();
    for check in &report.checks {
        if !categories.contains(&check.category) {
            categories.push(check.category);
        }
    }
    let seconds = |ms: u64| format!("{:.3}", ms as f64 / 1000.0);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"psctl smoke {}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
        escape(&report.environment),
        report.summary.total,
        report.summary.failed,
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
        let _ = writeln!(
            xml,
            "  <testsuite name=\"smoke.{category}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
            checks.len(),
            count(Verdict::Fail),
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
                Verdict::Fail => {
                    let kind = if check.unreachable {
                        "unreachable"
                    } else {
                        "failed"
                    };
                    let _ = writeln!(
                        xml,
                        "><failure type=\"{kind}\" message=\"{evidence}\">{evidence}</failure></testcase>"
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
        let mut skipped = 0;
        let mut suites = 0;
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
                        b"testsuite" => suites += 1,
                        b"testcase" => testcases.push(attr(b"name").unwrap()),
                        b"failure" => failures.push(attr(b"message").unwrap()),
                        b"skipped" => skipped += 1,
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(suites, 4);
        assert_eq!(
            testcases,
            [
                "pods-ready/poller",
                "metrics/webhook",
                "prometheus-targets/webhook",
                "functional/deposit-to-paid"
            ]
        );
        assert_eq!(failures[0], "missing required metric(s) <x> & \"y\"");
        assert_eq!(skipped, 1);
        assert!(
            xml.contains("<testsuites name=\"psctl smoke sandbox\" tests=\"4\" failures=\"2\"")
        );
        assert!(xml.contains("failure type=\"unreachable\""));
    }
}
