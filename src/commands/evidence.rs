//! `psctl evidence`: gathers what an incident review needs before pods are replaced or
//! restarted: each component's pods (status and container states), the last log lines of
//! every container (and of its previous instance after a crash), the namespace's recent
//! events, each release's Helm history, the poller checkpoint, recent system events and the
//! audit trail's rows of the window; then a postmortem skeleton (`postmortem.md`,
//! `crate::postmortem`) built from them, linking every file.
//!
//! Every item is attempted; one that cannot be read is recorded as skipped with the reason,
//! so a partial record is still written. Secrets, container environment values and
//! database credentials are never collected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, LogParams};
use serde::Serialize;
use sqlx::Row as _;

use super::db::resolve_target;
use crate::cli::EvidenceArgs;
use crate::cluster;
use crate::error::{CommandError, CommandResult, ExitStatus, ResultExt as _};
use crate::helm::storage::read_revisions;
use crate::output::{CheckState, Output, Render, Style, table};
use crate::postmortem;
use crate::rollout::track::pod_lines;
use crate::settings::{Environment, GlobalSettings};

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

struct Collector<'a> {
    dir: PathBuf,
    items: Vec<Item>,
    output: &'a Output,
}

impl Collector<'_> {
    fn write(&mut self, item: &str, file: &str, contents: &str, detail: String) {
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

    fn skip(&mut self, item: &str, reason: String) {
        self.output.check(CheckState::Skip, item, &reason);
        self.items.push(Item {
            item: item.to_owned(),
            file: String::new(),
            result: "skipped".to_owned(),
            detail: reason,
        });
    }

    fn json(&mut self, item: &str, file: &str, value: &impl Serialize, detail: String) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => self.write(item, file, &text, detail),
            Err(error) => self.skip(item, format!("cannot encode: {error}")),
        }
    }
}

pub async fn run(args: EvidenceArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let EvidenceArgs { dir, since, tail } = args;
    let environment = global.environment()?;
    let now = Timestamp::now();
    let dir = dir.unwrap_or_else(|| default_dir(now));
    if global.dry_run {
        output.info(format!(
            "would write evidence for `{}` (namespace `{}`, last {}) into {}",
            environment.name,
            environment.namespace,
            humantime(since),
            dir.display()
        ));
        return Ok(ExitStatus::Success);
    }
    create_dir(&dir)?;
    let mut collector = Collector {
        dir: dir.clone(),
        items: Vec::new(),
        output,
    };

    let events = match cluster::connect(&environment).await {
        Ok(client) => {
            collect_cluster(&client, &environment, since, tail, now, &mut collector).await
        }
        Err(error) => {
            collector.skip("cluster", error.to_string());
            None
        }
    };
    let audit = collect_database(global, output, &environment, since, &mut collector).await;
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
    output
        .data(&report)
        .context("writing the evidence report")?;
    if report.items.iter().all(|i| i.result != "collected") {
        return Err(CommandError::unreachable(anyhow::anyhow!(
            "no evidence could be collected: neither the cluster nor the database answered"
        )));
    }
    Ok(ExitStatus::Success)
}

fn default_dir(now: Timestamp) -> PathBuf {
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

fn humantime(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

async fn collect_cluster(
    client: &kube::Client,
    environment: &Environment,
    since: Duration,
    tail: u32,
    now: Timestamp,
    collector: &mut Collector<'_>,
) -> Option<Vec<postmortem::EventLine>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &environment.namespace);
    for component in &environment.components {
        let list = match pods
            .list(&ListParams::default().labels(&component.selector))
            .await
        {
            Ok(list) => list.items,
            Err(error) => {
                collector.skip(
                    &format!("pods {}", component.name),
                    cluster::describe(&error),
                );
                continue;
            }
        };
        let summary: Vec<PodSummary> = list.iter().map(pod_summary).collect();
        collector.json(
            &format!("pods {}", component.name),
            &format!("{}/pods.json", component.name),
            &summary,
            format!("{} pods", list.len()),
        );
        for line in pod_lines(&list).values() {
            tracing::debug!("{line}");
        }
        for pod in &list {
            collect_logs(&pods, component.name.as_str(), pod, since, tail, collector).await;
        }
    }

    let events: Api<Event> = Api::namespaced(client.clone(), &environment.namespace);
    let timeline = match events.list(&ListParams::default()).await {
        Ok(list) => {
            let cutoff = now.as_second() - since.as_secs() as i64;
            let mut lines: Vec<(i64, String, String)> = list
                .items
                .iter()
                .filter_map(|event| {
                    let at = event_time(event)?;
                    (at >= cutoff).then(|| (at, event_line(event), event_summary(event)))
                })
                .collect();
            lines.sort();
            let text: String = lines.iter().map(|(_, l, _)| format!("{l}\n")).collect();
            let count = text.lines().count();
            collector.write("events", "events.txt", &text, format!("{count} events"));
            Some(
                lines
                    .into_iter()
                    .map(|(at, _, text)| postmortem::EventLine { at, text })
                    .collect(),
            )
        }
        Err(error) => {
            collector.skip("events", cluster::describe(&error));
            None
        }
    };

    let releases: Vec<String> = environment
        .components
        .iter()
        .map(|c| c.release.clone())
        .collect();
    match read_revisions(client, &environment.namespace, &releases).await {
        Ok(revisions) => collector.json(
            "helm history",
            "helm-history.json",
            &revisions,
            format!("{} revisions", revisions.len()),
        ),
        Err(error) => collector.skip("helm history", format!("{:#}", error.error())),
    }
    timeline
}

#[derive(Debug, Serialize)]
struct PodSummary {
    name: String,
    phase: String,
    node: String,
    track: Option<String>,
    containers: Vec<ContainerSummary>,
}

#[derive(Debug, Serialize)]
struct ContainerSummary {
    name: String,
    image: String,
    ready: bool,
    restarts: i32,
    state: String,
    last_state: String,
}

/// Status only: the spec (with its env) is deliberately not copied.
fn pod_summary(pod: &Pod) -> PodSummary {
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| ContainerSummary {
            name: c.name,
            image: c.image,
            ready: c.ready,
            restarts: c.restart_count,
            state: describe_state(c.state.as_ref()),
            last_state: describe_state(c.last_state.as_ref()),
        })
        .collect();
    PodSummary {
        name: pod.metadata.name.clone().unwrap_or_default(),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        track: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("track").cloned()),
        containers,
    }
}

fn describe_state(state: Option<&k8s_openapi::api::core::v1::ContainerState>) -> String {
    let Some(state) = state else {
        return String::new();
    };
    if let Some(running) = &state.running {
        return format!(
            "running since {}",
            running
                .started_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default()
        );
    }
    if let Some(waiting) = &state.waiting {
        return format!(
            "waiting: {} {}",
            waiting.reason.clone().unwrap_or_default(),
            waiting.message.clone().unwrap_or_default()
        )
        .trim_end()
        .to_owned();
    }
    if let Some(terminated) = &state.terminated {
        return format!(
            "terminated: {} (exit {})",
            terminated.reason.clone().unwrap_or_default(),
            terminated.exit_code
        );
    }
    String::new()
}

async fn collect_logs(
    pods: &Api<Pod>,
    component: &str,
    pod: &Pod,
    since: Duration,
    tail: u32,
    collector: &mut Collector<'_>,
) {
    let Some(name) = pod.metadata.name.as_deref() else {
        return;
    };
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    for status in statuses {
        let mut instances = vec![false];
        if status.restart_count > 0 {
            instances.push(true);
        }
        for previous in instances {
            let params = LogParams {
                container: Some(status.name.clone()),
                tail_lines: Some(i64::from(tail)),
                since_seconds: (!previous).then_some(since.as_secs() as i64),
                previous,
                ..LogParams::default()
            };
            let which = if previous { "previous" } else { "current" };
            let item = format!("logs {name}/{} ({which})", status.name);
            let file = format!(
                "{component}/logs/{name}.{}{}.log",
                status.name,
                if previous { ".previous" } else { "" }
            );
            match pods.logs(name, &params).await {
                Ok(text) => {
                    let lines = text.lines().count();
                    collector.write(&item, &file, &text, format!("{lines} lines"));
                }
                Err(error) => collector.skip(&item, cluster::describe(&error)),
            }
        }
    }
}

fn event_time(event: &Event) -> Option<i64> {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .or_else(|| event.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
}

fn event_line(event: &Event) -> String {
    let at = event_time(event)
        .and_then(|s| Timestamp::from_second(s).ok())
        .map(|t| t.to_string())
        .unwrap_or_default();
    format!("{at} {}", event_summary(event))
}

/// An event without its time: type, object, reason, message and count.
fn event_summary(event: &Event) -> String {
    let object = format!(
        "{}/{}",
        event.involved_object.kind.clone().unwrap_or_default(),
        event.involved_object.name.clone().unwrap_or_default()
    );
    format!(
        "{} {object} {}: {} (x{})",
        event.type_.clone().unwrap_or_default(),
        event.reason.clone().unwrap_or_default(),
        event.message.clone().unwrap_or_default().replace('\n', " "),
        event.count.unwrap_or(1)
    )
}

/// The database items; returns the audit rows of the window for the postmortem (`None` when
/// the audit trail could not be read).
async fn collect_database(
    global: &GlobalSettings,
    output: &Output,
    environment: &Environment,
    since: Duration,
    collector: &mut Collector<'_>,
) -> Option<Vec<crate::audit::AuditRow>> {
    let target = match resolve_target(global, output) {
        Ok(target) => target,
        Err(error) => {
            collector.skip("database", format!("{:#}", error.error()));
            return None;
        }
    };
    let pool = match crate::db::connect(&target.url, Duration::from_secs(5)).await {
        Ok(pool) => pool,
        Err(error) => {
            collector.skip(
                "database",
                output.redactor().scrub(&error.to_string()).into_owned(),
            );
            return None;
        }
    };
    let checkpoint = sqlx::query(
        "SELECT name, last_insert_time::text AS last_insert_time,
                last_success_at::text AS last_success_at, updated_at::text AS updated_at
           FROM poller_checkpoint ORDER BY name",
    )
    .fetch_all(&pool)
    .await;
    match checkpoint {
        Ok(rows) => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    serde_json::json!({
                        "name": row.get::<String, _>("name"),
                        "last_insert_time": row.get::<Option<String>, _>("last_insert_time"),
                        "last_success_at": row.get::<Option<String>, _>("last_success_at"),
                        "updated_at": row.get::<Option<String>, _>("updated_at"),
                    })
                })
                .collect();
            let detail = format!("{} checkpoints", rows.len());
            collector.json(
                "poller checkpoint",
                "db/poller-checkpoint.json",
                &rows,
                detail,
            );
        }
        Err(error) => collector.skip("poller checkpoint", error.to_string()),
    }
    let events = sqlx::query(
        "SELECT id, source, kind, severity, message, details::text AS details,
                created_at::text AS created_at
           FROM system_events
          WHERE created_at >= now() - make_interval(secs => $1)
          ORDER BY id DESC LIMIT 1000",
    )
    .bind(since.as_secs_f64())
    .fetch_all(&pool)
    .await;
    match events {
        Ok(rows) => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    serde_json::json!({
                        "id": row.get::<i64, _>("id"),
                        "source": row.get::<String, _>("source"),
                        "kind": row.get::<String, _>("kind"),
                        "severity": row.get::<String, _>("severity"),
                        "message": row.get::<String, _>("message"),
                        "details": row.get::<Option<String>, _>("details"),
                        "created_at": row.get::<Option<String>, _>("created_at"),
                    })
                })
                .collect();
            let detail = format!("{} events (newest 1000 at most)", rows.len());
            collector.json("system events", "db/system-events.json", &rows, detail);
        }
        Err(error) => collector.skip("system events", error.to_string()),
    }
    let audit = match crate::audit::since(
        &pool,
        &environment.name,
        chrono::TimeDelta::from_std(since)
            .ok()
            .and_then(|window| chrono::Utc::now().checked_sub_signed(window))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
        AUDIT_ROWS,
    )
    .await
    {
        Ok(rows) => {
            let detail = format!("{} rows (oldest first, {AUDIT_ROWS} at most)", rows.len());
            collector.json("audit trail", "db/audit.json", &rows, detail);
            Some(rows)
        }
        Err(error) => {
            collector.skip("audit trail", error.to_string());
            None
        }
    };
    pool.close().await;
    audit
}

/// Audit rows of the window collected at most (the newest).
const AUDIT_ROWS: i64 = 1000;

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

    #[test]
    fn a_pod_summary_keeps_states_and_drops_the_spec() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w-1", "labels": {"track": "canary"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "worker", "image": "x:1",
                "env": [{"name": "DATABASE_URL", "value": "postgres://u:hunter2@db/x"}]}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "worker", "image": "x:1",
                "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]}
        }))
        .unwrap();
        let summary = serde_json::to_string(&pod_summary(&pod)).unwrap();
        assert!(summary.contains("waiting: CrashLoopBackOff"), "{summary}");
        assert!(summary.contains("terminated: Error (exit 1)"), "{summary}");
        assert!(summary.contains("\"track\":\"canary\""), "{summary}");
        assert!(!summary.contains("hunter2"), "{summary}");
    }
}
