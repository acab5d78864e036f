//! `psctl evidence`'s collection: what an incident review needs before pods are replaced or
//! restarted: each component's pods (status and container states), the last log lines of
//! every container (and of its previous instance after a crash), the namespace's recent
//! events, each release's Helm history (`cluster.rs`), the poller checkpoint, recent system
//! events and the audit trail's rows of the window (`database.rs`); then a postmortem skeleton
//! (`postmortem.md`, `crate::postmortem`) built from them, linking every file, and an
//! `index.json`.
//!
//! Every item is attempted; one that cannot be read is recorded as skipped with the reason,
//! so a partial record is still written. Secrets, container environment values and
//! database credentials are never collected.

mod cluster;
mod database;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::db::DatabaseUrl;
use crate::error::{CommandError, ExitStatus, ResultExt as _};
use crate::output::{CheckState, Output, Render, Style, table};
use crate::postmortem;
use crate::settings::Environment;

/// One collected (or skipped) item.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub item: String,
    /// Path relative to the evidence directory; empty when skipped.
    pub file: String,
    /// collected or skipped.
    pub result: String,
    pub detail: String,
}

/// The `-o json` schema of `psctl evidence`.
#[derive(Debug, Serialize)]
pub struct EvidenceReport {
    pub environment: String,
    pub namespace: String,
    pub directory: String,
    pub collected_at: String,
    pub items: Vec<Item>,
}

impl Render for EvidenceReport {
    fn render_table(&self, _style: &Style) -> String {
        let rows = self.items.iter().map(|i| {
            [
                i.item.clone(),
                i.result.clone(),
                i.file.clone(),
                i.detail.clone(),
            ]
        });
        let mut text = table::render(&["ITEM", "RESULT", "FILE", "DETAIL"], rows);
        let skipped = self
            .items
            .iter()
            .filter(|i| i.result != "collected")
            .count();
        text.push_str(&format!(
            "Evidence written to {} ({} items, {} skipped)\n",
            self.directory,
            self.items.len(),
            skipped
        ));
        text
    }
}

/// Writes each item into the evidence directory (through the redactor) and keeps the list.
pub struct Collector<'a> {
    dir: PathBuf,
    items: Vec<Item>,
    output: &'a Output,
}

impl Collector<'_> {
    pub fn write(&mut self, item: &str, file: &str, contents: &str, detail: String) {
        let path = self.dir.join(file);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::write(&path, self.output.redactor().scrub(contents).as_bytes())
            });
        match written {
            Ok(()) => {
                self.output.check(CheckState::Ok, item, &detail);
                self.items.push(Item {
                    item: item.to_owned(),
                    file: file.to_owned(),
                    result: "collected".to_owned(),
                    detail,
                });
            }
            Err(error) => self.skip(item, format!("cannot write {}: {error}", path.display())),
        }
    }

    pub fn skip(&mut self, item: &str, reason: String) {
        self.output.check(CheckState::Skip, item, &reason);
        self.items.push(Item {
            item: item.to_owned(),
            file: String::new(),
            result: "skipped".to_owned(),
            detail: reason,
        });
    }

    pub fn json(&mut self, item: &str, file: &str, value: &impl Serialize, detail: String) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => self.write(item, file, &text, detail),
            Err(error) => self.skip(item, format!("cannot encode: {error}")),
        }
    }
}

/// What to collect, and where to write it.
pub struct Request<'a> {
    pub environment: &'a Environment,
    /// The database to read, or why there is none (the database items are then skipped).
    pub database: Result<DatabaseUrl, String>,
    pub dir: PathBuf,
    pub since: Duration,
    pub tail: u32,
    pub now: Timestamp,
}

/// Collects every item into the directory (created private), writes the postmortem skeleton
/// and `index.json`, and returns the report. Only a directory that cannot be written is an
/// error; an item that cannot be read is skipped.
pub async fn collect(
    request: Request<'_>,
    output: &Output,
) -> Result<EvidenceReport, CommandError> {
    let Request {
        environment,
        database,
        dir,
        since,
        tail,
        now,
    } = request;
    create_dir(&dir)?;
    let mut collector = Collector {
        dir: dir.clone(),
        items: Vec::new(),
        output,
    };
    let events = match crate::cluster::connect(environment).await {
        Ok(client) => {
            cluster::collect(&client, environment, since, tail, now, &mut collector).await
        }
        Err(error) => {
            collector.skip("cluster", error.to_string());
            None
        }
    };
    let audit = database::collect(database, output, environment, since, &mut collector).await;
    let links: Vec<postmortem::EvidenceLink> = collector
        .items
        .iter()
        .map(|i| postmortem::EvidenceLink {
            item: i.item.clone(),
            file: i.file.clone(),
            collected: i.result == "collected",
            detail: i.detail.clone(),
        })
        .collect();
    let collected_at = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let skeleton = postmortem::render(&postmortem::Inputs {
        environment: &environment.name,
        namespace: &environment.namespace,
        collected_at: &collected_at,
        since: &humantime(since),
        audit: audit.as_deref(),
        events: events.as_deref(),
        evidence: &links,
    });
    collector.write(
        "postmortem",
        "postmortem.md",
        &skeleton,
        "skeleton: timeline, commands run, evidence links".to_owned(),
    );

    let report = EvidenceReport {
        environment: environment.name.clone(),
        namespace: environment.namespace.clone(),
        directory: dir.display().to_string(),
        collected_at: now.to_string(),
        items: collector.items,
    };
    let index = serde_json::to_string_pretty(&report).context("encoding the evidence index")?;
    std::fs::write(dir.join("index.json"), index).or_exit(
        ExitStatus::Usage,
        format!("writing {}", dir.join("index.json").display()),
    )?;
    Ok(report)
}

pub fn default_dir(now: Timestamp) -> PathBuf {
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    PathBuf::from(format!("psctl-evidence-{stamp}"))
}

fn create_dir(dir: &Path) -> Result<(), CommandError> {
    std::fs::create_dir_all(dir).or_exit(
        ExitStatus::Usage,
        format!("creating the evidence directory {}", dir.display()),
    )?;
    // Logs may hold merchant identifiers: keep the directory private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

pub fn humantime(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_flag() {
        assert_eq!(humantime(Duration::from_secs(3600)), "1h");
        assert_eq!(humantime(Duration::from_secs(1800)), "30m");
        assert_eq!(humantime(Duration::from_secs(45)), "45s");
    }

    #[test]
    fn the_default_directory_is_timestamped() {
        let t: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        assert_eq!(
            default_dir(t),
            PathBuf::from("psctl-evidence-20261123T100000Z")
        );
    }
}
