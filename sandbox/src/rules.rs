//! Alerting rules from the API server's `PrometheusRule` objects, loaded into the sandbox's
//! Prometheus the way the Prometheus Operator loads them: one rule file per object, each object
//! checked on its own (an invalid one is left out and logged, never breaking the others), and a
//! configuration reload whenever the set of files changes.
//!
//! The sandbox's Prometheus selects every `PrometheusRule` in every namespace (an operator's
//! `ruleSelector: {}` and `ruleNamespaceSelector: {}`). Files are named `<namespace>-<name>.yml`
//! under `<state>/prometheus/rules/`, which `prometheus.yml` includes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use tokio::sync::Mutex;

use crate::serve::Health;
use crate::settings::Layout;

/// How often the rules are listed (the operator reacts to a watch within seconds).
const RESYNC: Duration = Duration::from_secs(3);

/// The `monitoring.coreos.com/v1` `PrometheusRule` resource.
fn prometheus_rules() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
        "prometheusrules",
    )
}

/// The rule file of one object: its `spec.groups`, as Prometheus reads rule files. `None` when
/// the object has no groups to load.
pub fn rule_file(object: &DynamicObject) -> Option<String> {
    let groups = object.data.get("spec")?.get("groups")?;
    if groups.as_array().is_none_or(Vec::is_empty) {
        return None;
    }
    crate::yaml::to_string(&serde_json::json!({ "groups": groups })).ok()
}

/// `<namespace>-<name>.yml`: unique per object, since names are DNS labels without `/`.
pub fn file_name(object: &DynamicObject) -> String {
    format!(
        "{}-{}.yml",
        object.metadata.namespace.as_deref().unwrap_or("default"),
        object.metadata.name.as_deref().unwrap_or("unnamed")
    )
}

/// `promtool check rules FILE`: whether Prometheus would accept the file. The error is
/// promtool's own message.
async fn check(path: &Path) -> Result<(), String> {
    let output = tokio::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(path)
        .output()
        .await
        .map_err(|error| format!("cannot run promtool: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// What one pass over the objects left: how many are loaded, and the rule files promtool
/// refused (by file name, with the text refused), so an unchanged invalid object is checked and
/// logged once, not at every pass.
#[derive(Default)]
struct Synced {
    loaded: usize,
    refused: BTreeMap<String, String>,
}

/// Writes the files of the objects that pass `promtool`, removes the others, and tells whether
/// anything changed.
async fn sync(dir: &Path, objects: &[DynamicObject], state: &mut Synced) -> bool {
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for object in objects {
        if let Some(text) = rule_file(object) {
            wanted.insert(file_name(object), text);
        }
    }
    let mut changed = false;
    let mut kept = 0;
    for (name, text) in &wanted {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text) {
            kept += 1;
            continue;
        }
        if state.refused.get(name) == Some(text) {
            continue;
        }
        // Checked under a name Prometheus does not load, then moved into place.
        let candidate = dir.join(format!(".{name}.check"));
        if let Err(error) = std::fs::write(&candidate, text) {
            tracing::warn!(%error, file = %candidate.display(), "cannot write a rule file");
            continue;
        }
        match check(&candidate).await {
            Ok(()) => match std::fs::rename(&candidate, &path) {
                Ok(()) => {
                    state.refused.remove(name);
                    kept += 1;
                    changed = true;
                }
                Err(error) => {
                    tracing::warn!(%error, file = %path.display(), "cannot install a rule file")
                }
            },
            Err(message) => {
                let _ = std::fs::remove_file(&candidate);
                if path.exists() {
                    let _ = std::fs::remove_file(&path);
                    changed = true;
                }
                tracing::warn!(rule = %name, %message, "PrometheusRule refused: promtool rejects it");
                state.refused.insert(name.clone(), text.clone());
            }
        }
    }
    for stale in files(dir) {
        let name = stale
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !wanted.contains_key(&name) && std::fs::remove_file(&stale).is_ok() {
            changed = true;
        }
    }
    state.refused.retain(|name, _| wanted.contains_key(name));
    state.loaded = kept;
    changed
}

/// The `*.yml` files Prometheus loads from `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
                .collect()
        })
        .unwrap_or_default()
}

/// Keeps `<state>/prometheus/rules/` equal to the valid `PrometheusRule` objects and reloads
/// Prometheus after each change.
pub async fn keep_rules(
    client: kube::Client,
    layout: Layout,
    prometheus_url: String,
    health: Arc<Mutex<Health>>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &prometheus_rules());
    let dir = layout.prometheus_rules_dir();
    if let Err(error) = std::fs::create_dir_all(&dir) {
        tracing::warn!(%error, dir = %dir.display(), "cannot create the rule directory");
    }
    let http = reqwest::Client::new();
    let mut reload_pending = true;
    let mut state = Synced::default();
    loop {
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                if sync(&dir, &list.items, &mut state).await {
                    reload_pending = true;
                }
                health.lock().await.rules = state.loaded;
            }
            Err(error) => tracing::warn!(%error, "cannot list PrometheusRules"),
        }
        if reload_pending {
            // Prometheus may be stopped (a fault): reload once it answers again.
            let reloaded = http
                .post(format!("{prometheus_url}/-/reload"))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            reload_pending = !reloaded;
        }
        tokio::time::sleep(RESYNC).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(namespace: &str, name: &str, spec: serde_json::Value) -> DynamicObject {
        let mut object = DynamicObject::new(name, &prometheus_rules()).within(namespace);
        object.data = serde_json::json!({ "spec": spec });
        object
    }

    #[test]
    fn a_rule_file_holds_the_objects_groups_as_prometheus_reads_them() {
        let rule = object(
            "shop",
            "poller",
            serde_json::json!({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0", "for": "1m"}]}]}),
        );
        assert_eq!(file_name(&rule), "shop-poller.yml");
        let text = rule_file(&rule).unwrap();
        let parsed: serde_json::Value = crate::yaml::from_str(&text).unwrap();
        assert_eq!(parsed["groups"][0]["rules"][0]["alert"], "A");
        assert_eq!(parsed["groups"][0]["rules"][0]["for"], "1m");
        assert!(rule_file(&object("shop", "empty", serde_json::json!({"groups": []}))).is_none());
        assert!(rule_file(&object("shop", "none", serde_json::json!({}))).is_none());
    }

    #[tokio::test]
    async fn invalid_objects_are_left_out_and_stale_files_removed() {
        if which_promtool().is_none() {
            panic!(
                "promtool is missing: install the Debian package prometheus (scripts/bootstrap.sh)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let good = object(
            "a",
            "good",
            serde_json::json!({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0"}]}]}),
        );
        let bad = object(
            "a",
            "bad",
            serde_json::json!({"groups": [{"name": "g", "rules": [{"alert": "B", "expr": "sum(("}]}]}),
        );
        let mut state = Synced::default();
        assert!(sync(dir.path(), &[good.clone(), bad.clone()], &mut state).await);
        assert_eq!(state.loaded, 1);
        assert!(dir.path().join("a-good.yml").exists());
        assert!(!dir.path().join("a-bad.yml").exists());
        assert!(state.refused.contains_key("a-bad.yml"));
        // Nothing changed: no reload needed.
        assert!(!sync(dir.path(), &[good.clone(), bad], &mut state).await);
        // The objects are deleted: the file goes, and so does the memory of the refusal.
        assert!(sync(dir.path(), &[], &mut state).await);
        assert_eq!(state.loaded, 0);
        assert!(state.refused.is_empty());
        assert!(files(dir.path()).is_empty());
    }

    fn which_promtool() -> Option<PathBuf> {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|dir| Path::new(dir).join("promtool"))
            .find(|candidate| candidate.is_file())
    }
}
