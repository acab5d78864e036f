//! The release as the engine returns it (Helm's `release.Release` JSON), reduced to what the
//! CLI prints, and the printers for Helm's table/JSON/YAML formats. Pure: printers write into
//! any `Write`, so tests render into a buffer.

use chrono::{DateTime, FixedOffset};
use serde_json::{Value, json};
use std::io::{self, Write};

/// One revision of a release.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub revision: u64,
    pub status: String,
    pub description: String,
    pub last_deployed: Option<DateTime<FixedOffset>>,
    pub chart_name: String,
    pub chart_version: String,
    pub app_version: String,
    pub notes: String,
    pub manifest: String,
    /// The full JSON the engine returned, for `status -o json`.
    pub raw: Value,
}

fn text(value: &Value, path: &[&str]) -> String {
    let mut current = value;
    for key in path {
        match current.get(key) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

impl Release {
    /// Reads a release from the engine's JSON. Field names follow Helm's release JSON; the
    /// flat spellings are accepted too because the engine's summaries use them.
    pub fn from_json(raw: Value) -> Self {
        let revision = ["version", "revision"]
            .iter()
            .find_map(|key| match raw.get(key) {
                Some(Value::Number(n)) => n.as_u64(),
                Some(Value::String(s)) => s.parse().ok(),
                _ => None,
            })
            .unwrap_or(0);
        let first = |candidates: &[&[&str]]| {
            candidates
                .iter()
                .map(|path| text(&raw, path))
                .find(|value| !value.is_empty())
                .unwrap_or_default()
        };
        let deployed = first(&[&["info", "last_deployed"], &["updated"], &["last_deployed"]]);
        let mut chart_name = first(&[&["chart", "metadata", "name"], &["chart_name"]]);
        let mut chart_version = first(&[&["chart", "metadata", "version"], &["chart_version"]]);
        // Summaries name the chart as "<name>-<version>".
        if chart_name.is_empty()
            && let Some(combined) = raw.get("chart").and_then(Value::as_str)
        {
            match combined.rsplit_once('-') {
                Some((name, version)) if chart_version.is_empty() => {
                    chart_name = name.to_string();
                    chart_version = version.to_string();
                }
                _ => chart_name = combined.to_string(),
            }
        }
        Self {
            name: text(&raw, &["name"]),
            namespace: text(&raw, &["namespace"]),
            revision,
            status: first(&[&["info", "status"], &["status"]]),
            description: first(&[&["info", "description"], &["description"]]),
            last_deployed: DateTime::parse_from_rfc3339(&deployed).ok(),
            chart_name,
            chart_version,
            app_version: first(&[&["chart", "metadata", "appVersion"], &["app_version"]]),
            notes: first(&[&["info", "notes"], &["notes"]]),
            manifest: text(&raw, &["manifest"]),
            raw,
        }
    }

    /// `<chart>-<version>`, as Helm's tables print it.
    pub fn chart(&self) -> String {
        if self.chart_version.is_empty() {
            self.chart_name.clone()
        } else {
            format!("{}-{}", self.chart_name, self.chart_version)
        }
    }

    fn updated_ansi(&self) -> String {
        // Helm prints times in Go's ANSIC layout.
        self.last_deployed
            .map(|t| t.format("%a %b %e %H:%M:%S %Y").to_string())
            .unwrap_or_default()
    }

    fn updated_rfc3339(&self) -> String {
        self.last_deployed
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
            .unwrap_or_default()
    }

    fn updated_go_string(&self) -> String {
        self.last_deployed
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.f %z").to_string())
            .unwrap_or_default()
    }
}

/// Parses the engine's answer as one release.
pub fn parse_one(text: &str) -> Result<Release, serde_json::Error> {
    Ok(Release::from_json(serde_json::from_str(text)?))
}

/// Parses the engine's answer as a list of releases (`null` is an empty list).
pub fn parse_many(text: &str) -> Result<Vec<Release>, serde_json::Error> {
    let value: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text)?
    };
    Ok(match value {
        Value::Array(items) => items.into_iter().map(Release::from_json).collect(),
        Value::Null => Vec::new(),
        other => vec![Release::from_json(other)],
    })
}

/// Writes rows as Helm's tab-aligned tables do (columns padded, separated by a tab).
fn write_table(out: &mut dyn Write, rows: &[Vec<String>]) -> io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}\t", width = widths[index]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn write_structured(out: &mut dyn Write, value: &Value, yaml: bool) -> io::Result<()> {
    if yaml {
        let text = crate::yaml::to_string(value).map_err(io::Error::other)?;
        write!(out, "{text}")
    } else {
        writeln!(out, "{value}")
    }
}

/// `helm history` output: oldest first, the last `max` revisions.
pub fn write_history(
    out: &mut dyn Write,
    releases: &[Release],
    max: usize,
    format: crate::cli::OutputFormat,
) -> io::Result<()> {
    let mut sorted: Vec<&Release> = releases.iter().collect();
    sorted.sort_by_key(|r| r.revision);
    let start = sorted.len().saturating_sub(max);
    let shown = &sorted[start..];
    match format {
        crate::cli::OutputFormat::Table => {
            let mut rows = vec![
                [
                    "REVISION",
                    "UPDATED",
                    "STATUS",
                    "CHART",
                    "APP VERSION",
                    "DESCRIPTION",
                ]
                .map(String::from)
                .to_vec(),
            ];
            rows.extend(shown.iter().map(|r| {
                vec![
                    r.revision.to_string(),
                    r.updated_ansi(),
                    r.status.clone(),
                    r.chart(),
                    r.app_version.clone(),
                    r.description.clone(),
                ]
            }));
            write_table(out, &rows)
        }
        format => {
            let items: Vec<Value> = shown
                .iter()
                .map(|r| {
                    json!({
                        "revision": r.revision,
                        "updated": r.updated_rfc3339(),
                        "status": r.status,
                        "chart": r.chart(),
                        "app_version": r.app_version,
                        "description": r.description,
                    })
                })
                .collect();
            write_structured(
                out,
                &Value::Array(items),
                format == crate::cli::OutputFormat::Yaml,
            )
        }
    }
}

/// Which releases `helm list` shows, in which order (Helm's `action.List`).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// The states asked for with `--deployed`, `--failed`...; `None`: Helm's default
    /// (deployed and failed), or every state with `--all`.
    pub states: Option<Vec<&'static str>>,
    pub all: bool,
    pub filter: Option<regex::Regex>,
    pub reverse: bool,
    pub max: usize,
}

impl ListQuery {
    pub fn from_args(args: &crate::cli::ListArgs) -> anyhow::Result<Self> {
        let flags = [
            (args.deployed, &["deployed"][..]),
            (args.failed, &["failed"][..]),
            (
                args.pending,
                &["pending-install", "pending-upgrade", "pending-rollback"][..],
            ),
            (args.superseded, &["superseded"][..]),
            (args.uninstalled, &["uninstalled"][..]),
            (args.uninstalling, &["uninstalling"][..]),
        ];
        let asked: Vec<&'static str> = flags
            .iter()
            .filter(|(on, _)| *on)
            .flat_map(|(_, states)| states.iter().copied())
            .collect();
        let filter = args
            .filter
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        Ok(Self {
            states: (!args.all && !asked.is_empty()).then_some(asked),
            all: args.all,
            filter,
            reverse: args.reverse,
            max: args.max,
        })
    }

    /// The releases to print: matching the name filter and the states, sorted by name
    /// (reversed with `--reverse`), at most `max` of them (0: no limit).
    pub fn select(&self, releases: Vec<Release>) -> Vec<Release> {
        let mut selected: Vec<Release> = releases
            .into_iter()
            .filter(|release| {
                self.filter
                    .as_ref()
                    .is_none_or(|filter| filter.is_match(&release.name))
            })
            .filter(|release| match &self.states {
                Some(states) => states.contains(&release.status.as_str()),
                None if self.all => true,
                None => matches!(release.status.as_str(), "deployed" | "failed"),
            })
            .collect();
        selected.sort_by(|a, b| a.name.cmp(&b.name).then(a.namespace.cmp(&b.namespace)));
        if self.reverse {
            selected.reverse();
        }
        if self.max > 0 {
            selected.truncate(self.max);
        }
        selected
    }
}

/// How the `helm list` table is printed.
#[derive(Debug, Clone, Copy)]
pub struct ListStyle {
    /// Names only (`-q`).
    pub short: bool,
    /// The header row (`--no-headers` turns it off).
    pub headers: bool,
}

/// `helm list` output, in the order given.
pub fn write_list(
    out: &mut dyn Write,
    releases: &[Release],
    style: ListStyle,
    format: crate::cli::OutputFormat,
) -> io::Result<()> {
    let sorted: Vec<&Release> = releases.iter().collect();
    if style.short {
        for release in sorted {
            writeln!(out, "{}", release.name)?;
        }
        return Ok(());
    }
    match format {
        crate::cli::OutputFormat::Table => {
            let mut rows = Vec::new();
            if style.headers {
                rows.push(
                    [
                        "NAME",
                        "NAMESPACE",
                        "REVISION",
                        "UPDATED",
                        "STATUS",
                        "CHART",
                        "APP VERSION",
                    ]
                    .map(String::from)
                    .to_vec(),
                );
            }
            rows.extend(sorted.iter().map(|r| {
                vec![
                    r.name.clone(),
                    r.namespace.clone(),
                    r.revision.to_string(),
                    r.updated_go_string(),
                    r.status.clone(),
                    r.chart(),
                    r.app_version.clone(),
                ]
            }));
            write_table(out, &rows)
        }
        format => {
            // Helm's list JSON carries the revision as a string.
            let items: Vec<Value> = sorted
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name,
                        "namespace": r.namespace,
                        "revision": r.revision.to_string(),
                        "updated": r.updated_go_string(),
                        "status": r.status,
                        "chart": r.chart(),
                        "app_version": r.app_version,
                    })
                })
                .collect();
            write_structured(
                out,
                &Value::Array(items),
                format == crate::cli::OutputFormat::Yaml,
            )
        }
    }
}

/// The values of a stored revision: what the user supplied (`config`), or with `all` those
/// coalesced over the chart's defaults, as Helm's `GetValues` action computes them.
pub fn revision_values(recorded: &Value, all: bool) -> Value {
    let config = recorded.get("config").cloned().unwrap_or(Value::Null);
    if !all {
        return config;
    }
    let defaults = recorded
        .pointer("/chart/values")
        .cloned()
        .unwrap_or(Value::Null);
    coalesce(defaults, config)
}

/// Helm's `CoalesceTables`: `overrides` over `defaults`, maps merged key by key, a `null`
/// override deleting the key.
fn coalesce(defaults: Value, overrides: Value) -> Value {
    match (defaults, overrides) {
        (Value::Object(mut base), Value::Object(over)) => {
            for (key, value) in over {
                if value.is_null() {
                    base.remove(&key);
                    continue;
                }
                let merged = match base.remove(&key) {
                    Some(existing) => coalesce(existing, value),
                    None => value,
                };
                base.insert(key, merged);
            }
            Value::Object(base)
        }
        (defaults, Value::Null) => defaults,
        (_, overrides) => overrides,
    }
}

/// `helm get hooks`: every hook's manifest with its source path, as Helm prints them.
pub fn write_hooks(out: &mut dyn Write, release: &Value) -> io::Result<()> {
    for hook in release
        .get("hooks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        writeln!(
            out,
            "---\n# Source: {}\n{}",
            text(hook, &["path"]),
            text(hook, &["manifest"])
        )?;
    }
    Ok(())
}

/// The release summary printed by `status`, `install` and `upgrade`.
pub fn write_status(
    out: &mut dyn Write,
    release: &Release,
    format: crate::cli::OutputFormat,
) -> io::Result<()> {
    match format {
        crate::cli::OutputFormat::Table => {
            writeln!(out, "NAME: {}", release.name)?;
            if !release.updated_ansi().is_empty() {
                writeln!(out, "LAST DEPLOYED: {}", release.updated_ansi())?;
            }
            writeln!(out, "NAMESPACE: {}", release.namespace)?;
            writeln!(out, "STATUS: {}", release.status)?;
            writeln!(out, "REVISION: {}", release.revision)?;
            writeln!(out, "DESCRIPTION: {}", release.description)?;
            writeln!(out, "TEST SUITE: None")?;
            if !release.notes.trim().is_empty() {
                writeln!(out, "NOTES:\n{}", release.notes.trim_end())?;
            }
            Ok(())
        }
        format => {
            // Helm prints the release without the chart's files and templates.
            let mut value = release.raw.clone();
            if let Some(chart) = value.get_mut("chart").and_then(Value::as_object_mut) {
                chart.remove("templates");
                chart.remove("files");
            }
            write_structured(out, &value, format == crate::cli::OutputFormat::Yaml)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::OutputFormat;

    fn sample(revision: u64, status: &str) -> Value {
        json!({
            "name": "web",
            "namespace": "default",
            "version": revision,
            "info": {
                "status": status,
                "description": format!("rev {revision}"),
                "last_deployed": "2026-11-23T10:00:00.5+00:00",
                "notes": "hello"
            },
            "chart": {"metadata": {"name": "poller", "version": "0.1.0", "appVersion": "1.2"},
                      "templates": [{"name": "x"}]},
            "manifest": "---\nkind: A\n"
        })
    }

    #[test]
    fn reads_helm_release_json() {
        let release = Release::from_json(sample(3, "deployed"));
        assert_eq!(release.revision, 3);
        assert_eq!(release.chart(), "poller-0.1.0");
        assert_eq!(release.app_version, "1.2");
        assert_eq!(release.status, "deployed");
        assert_eq!(release.description, "rev 3");
        assert!(release.last_deployed.is_some());
    }

    #[test]
    fn reads_flat_summaries() {
        let release = Release::from_json(json!({
            "name": "web", "revision": "2", "status": "superseded",
            "chart": "poller-0.1.0", "app_version": "1.2", "updated": "2026-11-23T10:00:00Z"
        }));
        assert_eq!(
            (
                release.revision,
                release.chart_name.as_str(),
                release.chart_version.as_str()
            ),
            (2, "poller", "0.1.0")
        );
        assert_eq!(release.status, "superseded");
    }

    #[test]
    fn history_json_is_helms_shape_and_honours_max() {
        let releases = vec![
            Release::from_json(sample(2, "deployed")),
            Release::from_json(sample(1, "superseded")),
            Release::from_json(sample(3, "failed")),
        ];
        let mut out = Vec::new();
        write_history(&mut out, &releases, 2, OutputFormat::Json).unwrap();
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            parsed,
            json!([
                {"revision": 2, "updated": "2026-11-23T10:00:00.500+00:00", "status": "deployed",
                 "chart": "poller-0.1.0", "app_version": "1.2", "description": "rev 2"},
                {"revision": 3, "updated": "2026-11-23T10:00:00.500+00:00", "status": "failed",
                 "chart": "poller-0.1.0", "app_version": "1.2", "description": "rev 3"},
            ])
        );
    }

    #[test]
    fn history_table_has_helms_columns() {
        let mut out = Vec::new();
        write_history(
            &mut out,
            &[Release::from_json(sample(1, "deployed"))],
            256,
            OutputFormat::Table,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split('\t').map(str::trim).collect();
        assert_eq!(
            header,
            [
                "REVISION",
                "UPDATED",
                "STATUS",
                "CHART",
                "APP VERSION",
                "DESCRIPTION"
            ]
        );
        let row: Vec<&str> = lines.next().unwrap().split('\t').map(str::trim).collect();
        assert_eq!(
            row,
            [
                "1",
                "Mon Nov 23 10:00:00 2026",
                "deployed",
                "poller-0.1.0",
                "1.2",
                "rev 1"
            ]
        );
    }

    #[test]
    fn list_json_carries_revision_as_string() {
        let mut out = Vec::new();
        write_list(
            &mut out,
            &[Release::from_json(sample(4, "deployed"))],
            ListStyle {
                short: false,
                headers: true,
            },
            OutputFormat::Json,
        )
        .unwrap();
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed[0]["revision"], "4");
        assert_eq!(parsed[0]["name"], "web");
        assert_eq!(parsed[0]["chart"], "poller-0.1.0");
    }

    fn named(name: &str, status: &str) -> Release {
        let mut raw = sample(1, status);
        raw["name"] = json!(name);
        Release::from_json(raw)
    }

    #[test]
    fn list_shows_deployed_and_failed_by_default_and_the_states_asked_for() {
        let releases = vec![
            named("web", "deployed"),
            named("api", "failed"),
            named("old", "uninstalled"),
            named("next", "pending-upgrade"),
        ];
        let names = |query: &ListQuery| {
            query
                .select(releases.clone())
                .into_iter()
                .map(|release| release.name)
                .collect::<Vec<_>>()
        };
        let default = ListQuery {
            max: 256,
            ..ListQuery::default()
        };
        assert_eq!(names(&default), ["api", "web"]);
        let all = ListQuery {
            all: true,
            ..default.clone()
        };
        assert_eq!(names(&all), ["api", "next", "old", "web"]);
        let pending = ListQuery {
            states: Some(vec![
                "pending-install",
                "pending-upgrade",
                "pending-rollback",
            ]),
            ..default.clone()
        };
        assert_eq!(names(&pending), ["next"]);
        let filtered = ListQuery {
            filter: Some(regex::Regex::new("^w").unwrap()),
            reverse: true,
            all: true,
            ..default.clone()
        };
        assert_eq!(names(&filtered), ["web"]);
        let reversed = ListQuery {
            reverse: true,
            max: 1,
            ..default
        };
        assert_eq!(names(&reversed), ["web"]);
    }

    #[test]
    fn revision_values_coalesce_over_the_chart_defaults() {
        let recorded = json!({
            "config": {"replicas": 3, "image": {"tag": "v2"}, "debug": null},
            "chart": {"values": {"replicas": 1, "image": {"repository": "web", "tag": "v1"}, "debug": true}},
        });
        assert_eq!(revision_values(&recorded, false), recorded["config"]);
        assert_eq!(
            revision_values(&recorded, true),
            json!({"replicas": 3, "image": {"repository": "web", "tag": "v2"}})
        );
    }

    #[test]
    fn hooks_print_with_their_source() {
        let mut out = Vec::new();
        write_hooks(
            &mut out,
            &json!({"hooks": [{"path": "demo/templates/job.yaml", "manifest": "kind: Job"}]}),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "---\n# Source: demo/templates/job.yaml\nkind: Job\n"
        );
    }

    #[test]
    fn status_json_drops_chart_templates_and_table_shows_notes() {
        let release = Release::from_json(sample(1, "deployed"));
        let mut out = Vec::new();
        write_status(&mut out, &release, OutputFormat::Json).unwrap();
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        assert!(parsed["chart"].get("templates").is_none());
        assert_eq!(parsed["info"]["status"], "deployed");
        let mut out = Vec::new();
        write_status(&mut out, &release, OutputFormat::Table).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("STATUS: deployed\nREVISION: 1\n"), "{text}");
        assert!(text.ends_with("NOTES:\nhello\n"), "{text}");
    }

    #[test]
    fn empty_answers_are_empty_lists() {
        assert!(parse_many("null").unwrap().is_empty());
        assert!(parse_many("").unwrap().is_empty());
        assert_eq!(parse_many("[]").unwrap().len(), 0);
    }
}
