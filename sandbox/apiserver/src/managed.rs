//! Field ownership as the real API server keeps it (structured-merge-diff behind
//! `metadata.managedFields`): every write records which manager owns which fields, server-side
//! apply replaces the applier's previous applied set, prunes fields it stops applying that no one
//! else owns, and refuses (409) to change a field another manager owns unless forced.
//!
//! Field sets are kept as sets of paths whose elements are already in the `fieldsV1` spelling
//! (`f:name`, `k:{"name":"app"}`, `v:"x"`, `i:0`), so the wire format is a direct rendering of the
//! set as a tree (`.` marks a node that is itself a member and has children).
//!
//! The schema knowledge is that of the built-in kinds the sandbox serves: lists with
//! `+listType=map` are associative by their `+listMapKey`s (containers, env, volumes,
//! volumeMounts, imagePullSecrets, container and service ports keyed by port and protocol with
//! protocol defaulting to `TCP`, conditions, ownerReferences, ...), `finalizers` is a set, every
//! other list is atomic, and `selector` / `nodeSelector` are atomic (`+structType=atomic`,
//! `+mapType=atomic`). Custom resources without a schema follow the same defaults (every list
//! atomic), as structured-merge-diff's deduced schema does.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::status::ApiError;

/// A path from the object root, each element in `fieldsV1` spelling.
pub type Path = Vec<String>;
/// A set of paths.
pub type FieldSet = BTreeSet<Path>;

/// Who writes: the manager name and the subresource written through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    /// `fieldManager`, or the User-Agent's first token.
    pub manager: String,
    /// `scale` or `status`; `None` for the object itself.
    pub subresource: Option<String>,
    /// The request named its manager (`fieldManager`), as server-side apply requires.
    pub explicit: bool,
}

impl Writer {
    /// The manager of a request: the `fieldManager` parameter, else the User-Agent up to its
    /// first `/` (the real server's `prefixFromUserAgent`, at most 128 characters).
    pub fn from_request(field_manager: Option<&str>, user_agent: Option<&str>) -> Self {
        let explicit = field_manager.is_some_and(|name| !name.is_empty());
        let manager = match field_manager.filter(|name| !name.is_empty()) {
            Some(name) => name.to_owned(),
            None => user_agent
                .unwrap_or_default()
                .split('/')
                .next()
                .unwrap_or_default()
                .chars()
                .take(128)
                .collect(),
        };
        Self {
            manager,
            subresource: None,
            explicit,
        }
    }

    /// A server-internal writer (bootstrap objects, the default ServiceAccount).
    pub fn internal(manager: &str) -> Self {
        Self {
            manager: manager.to_owned(),
            subresource: None,
            explicit: true,
        }
    }

    /// The same writer through `subresource`.
    #[must_use]
    pub fn through(mut self, subresource: &str) -> Self {
        self.subresource = Some(subresource.to_owned());
        self
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: String,
    fields: FieldSet,
}

impl Entry {
    /// The real server's manager identifier: Apply entries do not include the apiVersion.
    fn identity(&self) -> (String, String, String, String) {
        (
            self.manager.clone(),
            self.operation.clone(),
            self.subresource.clone(),
            if self.operation == "Apply" {
                String::new()
            } else {
                self.api_version.clone()
            },
        )
    }

    fn from_json(value: &Value) -> Option<Self> {
        let text = |field: &str| {
            value
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let mut fields = FieldSet::new();
        if let Some(tree) = value.get("fieldsV1") {
            decode(tree, &mut Vec::new(), &mut fields);
        }
        let operation = text("operation");
        if operation.is_empty() && text("manager").is_empty() {
            return None;
        }
        Some(Self {
            manager: text("manager"),
            operation,
            api_version: text("apiVersion"),
            time: value.get("time").and_then(Value::as_str).map(str::to_owned),
            subresource: text("subresource"),
            fields,
        })
    }

    fn to_json(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("manager".into(), json!(self.manager));
        entry.insert("operation".into(), json!(self.operation));
        entry.insert("apiVersion".into(), json!(self.api_version));
        if let Some(time) = &self.time {
            entry.insert("time".into(), json!(time));
        }
        entry.insert("fieldsType".into(), json!("FieldsV1"));
        entry.insert("fieldsV1".into(), encode(&self.fields));
        if !self.subresource.is_empty() {
            entry.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(entry)
    }
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

// ---------------------------------------------------------------------------------------------
// fieldsV1

/// Renders a set as the `fieldsV1` tree.
pub fn encode(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    fn render(node: &Node) -> Value {
        let mut map = Map::new();
        if node.member && !node.children.is_empty() {
            map.insert(".".into(), json!({}));
        }
        for (name, child) in &node.children {
            map.insert(name.clone(), render(child));
        }
        Value::Object(map)
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for element in path {
            node = node.children.entry(element.clone()).or_default();
        }
        node.member = true;
    }
    render(&root)
}

fn decode(tree: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(map) = tree.as_object() else { return };
    if map.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (name, child) in map {
        if name == "." {
            out.insert(prefix.clone());
            continue;
        }
        prefix.push(name.clone());
        decode(child, prefix, out);
        prefix.pop();
    }
}

/// A path as the real server prints it in conflicts: `.spec.replicas`,
/// `.spec.template.spec.containers[name="app"].image`, `.metadata.finalizers[="x"]`.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = fields
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else if let Some(index) = element.strip_prefix("i:") {
            out.push_str(&format!("[{index}]"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Schema of the built-in kinds

#[derive(Debug, Clone, PartialEq, Eq)]
enum ListKind {
    /// `+listType=map` with these keys (in the order the schema lists them).
    Map(&'static [&'static str]),
    /// `+listType=set`.
    Set,
    /// `+listType=atomic`, and every list without a marker.
    Atomic,
}

fn list_kind(field: &str, items: &[Value]) -> ListKind {
    let sample = items.first();
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "secrets" => ListKind::Map(&["name"]),
        "volumeMounts" => ListKind::Map(&["mountPath"]),
        "volumeDevices" => ListKind::Map(&["devicePath"]),
        "hostAliases" => ListKind::Map(&["ip"]),
        "conditions" => ListKind::Map(&["type"]),
        "ownerReferences" => ListKind::Map(&["uid"]),
        "topologySpreadConstraints" => ListKind::Map(&["topologyKey", "whenUnsatisfiable"]),
        "ports" if sample.is_some_and(|item| item.get("containerPort").is_some()) => {
            ListKind::Map(&["containerPort", "protocol"])
        }
        "ports" if sample.is_some_and(|item| item.get("port").is_some()) => {
            ListKind::Map(&["port", "protocol"])
        }
        "finalizers" => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

/// Fields whose value is owned as a whole (`+structType=atomic`, `+mapType=atomic`).
fn atomic_field(field: &str) -> bool {
    matches!(field, "selector" | "nodeSelector")
}

/// The key element of an associative list item; missing key fields take their schema default
/// (`protocol: TCP`) or are left out, as structured-merge-diff does.
fn key_element(item: &Value, keys: &[&str]) -> Option<String> {
    let mut fields = Map::new();
    for key in keys {
        match item.get(*key) {
            Some(value) => {
                fields.insert((*key).to_owned(), value.clone());
            }
            None if *key == "protocol" => {
                fields.insert((*key).to_owned(), json!("TCP"));
            }
            None => {}
        }
    }
    if fields.is_empty() {
        return None;
    }
    let sorted: BTreeMap<_, _> = fields.into_iter().collect();
    Some(format!(
        "k:{}",
        serde_json::to_string(&sorted).unwrap_or_default()
    ))
}

fn value_element(value: &Value) -> String {
    format!("v:{}", serde_json::to_string(value).unwrap_or_default())
}

/// The elements of a list's items, in order (items without a key are indexed).
fn list_elements(kind: &ListKind, items: &[Value]) -> Vec<String> {
    items
        .iter()
        .enumerate()
        .map(|(index, item)| match kind {
            ListKind::Map(keys) => key_element(item, keys).unwrap_or_else(|| format!("i:{index}")),
            ListKind::Set => value_element(item),
            ListKind::Atomic => format!("i:{index}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sets of objects and comparisons

/// The fields an applied configuration sets (structured-merge-diff's `ToFieldSet`).
pub fn fields_of(value: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(value, &mut Vec::new(), "", &mut out);
    out
}

fn collect(value: &Value, path: &mut Path, field: &str, out: &mut FieldSet) {
    match value {
        Value::Object(_) if atomic_field(field) => {
            out.insert(path.clone());
        }
        Value::Object(map) => {
            for (name, child) in map {
                path.push(format!("f:{name}"));
                if child.is_null() || child.as_object().is_some_and(Map::is_empty) {
                    out.insert(path.clone());
                }
                collect(child, path, name, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            let kind = list_kind(field, items);
            if kind == ListKind::Atomic {
                out.insert(path.clone());
                return;
            }
            for (element, item) in list_elements(&kind, items).into_iter().zip(items) {
                path.push(element);
                if matches!(kind, ListKind::Map(_)) {
                    collect(item, path, "", out);
                }
                out.insert(path.clone());
                path.pop();
            }
        }
        Value::Null => {}
        _ => {
            out.insert(path.clone());
        }
    }
}

/// Every node of `value` at `path` (an added or removed subtree).
fn every_node(value: &Value, path: &mut Path, field: &str, out: &mut FieldSet) {
    out.insert(path.clone());
    match value {
        Value::Object(_) if atomic_field(field) => {}
        Value::Object(map) => {
            for (name, child) in map {
                path.push(format!("f:{name}"));
                every_node(child, path, name, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            let kind = list_kind(field, items);
            if kind == ListKind::Atomic {
                return;
            }
            for (element, item) in list_elements(&kind, items).into_iter().zip(items) {
                path.push(element);
                every_node(item, path, "", out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// What changed between two versions of an object.
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

/// Compares `old` with `new` (structured-merge-diff's `Compare`).
pub fn compare(old: &Value, new: &Value) -> Comparison {
    let mut comparison = Comparison::default();
    walk(Some(old), Some(new), &mut Vec::new(), "", &mut comparison);
    comparison.added.remove(&Vec::new());
    comparison.removed.remove(&Vec::new());
    comparison.modified.remove(&Vec::new());
    comparison
}

fn walk(
    old: Option<&Value>,
    new: Option<&Value>,
    path: &mut Path,
    field: &str,
    out: &mut Comparison,
) {
    match (old, new) {
        (None | Some(Value::Null), None | Some(Value::Null)) => {}
        (None | Some(Value::Null), Some(new)) => every_node(new, path, field, &mut out.added),
        (Some(old), None | Some(Value::Null)) => every_node(old, path, field, &mut out.removed),
        (Some(Value::Object(a)), Some(Value::Object(b))) if !atomic_field(field) => {
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for name in names {
                path.push(format!("f:{name}"));
                walk(a.get(name), b.get(name), path, name, out);
                path.pop();
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            let kind = list_kind(field, if b.is_empty() { a } else { b });
            if kind == ListKind::Atomic {
                if a != b {
                    out.modified.insert(path.clone());
                }
                return;
            }
            let left: BTreeMap<String, &Value> =
                list_elements(&kind, a).into_iter().zip(a).collect();
            let right: BTreeMap<String, &Value> =
                list_elements(&kind, b).into_iter().zip(b).collect();
            let elements: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
            for element in elements {
                path.push(element.clone());
                walk(
                    left.get(element).copied(),
                    right.get(element).copied(),
                    path,
                    "",
                    out,
                );
                path.pop();
            }
        }
        (Some(a), Some(b)) => {
            if a != b {
                out.modified.insert(path.clone());
            }
        }
    }
}

/// Removes the node at `path` from `value` (a field, an associative list item or a set value).
fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = value;
    let mut field = String::new();
    for element in parents {
        let next = match step(node, element, &field) {
            Some(next) => next,
            None => return,
        };
        if let Some(name) = element.strip_prefix("f:") {
            field = name.to_owned();
        } else {
            field.clear();
        }
        node = next;
    }
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(map) = node.as_object_mut() {
            map.remove(name);
        }
    } else if let Value::Array(items) = node {
        let kind = list_kind(&field, items);
        let elements = list_elements(&kind, items);
        if let Some(index) = elements.iter().position(|element| element == last) {
            items.remove(index);
        }
    }
}

fn step<'a>(node: &'a mut Value, element: &str, field: &str) -> Option<&'a mut Value> {
    if let Some(name) = element.strip_prefix("f:") {
        return node.as_object_mut()?.get_mut(name);
    }
    let Value::Array(items) = node else {
        return None;
    };
    let kind = list_kind(field, items);
    let index = list_elements(&kind, items)
        .iter()
        .position(|candidate| candidate == element)?;
    items.get_mut(index)
}

// ---------------------------------------------------------------------------------------------
// The object's entries

/// Which fields of a write are tracked: the real server ignores the server-set metadata, and
/// status for writes to the main resource of kinds with a status subresource (and everything but
/// status for writes through `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The object (status ignored when it has a status subresource).
    Main { status_subresource: bool },
    /// Through `/status`.
    Status,
}

fn ignored(path: &[String], scope: Scope) -> bool {
    const META: [&str; 10] = [
        "f:name",
        "f:namespace",
        "f:creationTimestamp",
        "f:selfLink",
        "f:uid",
        "f:generation",
        "f:managedFields",
        "f:resourceVersion",
        "f:deletionTimestamp",
        "f:deletionGracePeriodSeconds",
    ];
    match path.first().map(String::as_str) {
        Some("f:apiVersion" | "f:kind") => true,
        Some("f:metadata") => {
            path.len() == 1
                || path
                    .get(1)
                    .is_some_and(|second| META.contains(&second.as_str()))
        }
        Some("f:status") => matches!(
            scope,
            Scope::Main {
                status_subresource: true
            }
        ),
        _ => scope == Scope::Status,
    }
}

fn filter(set: FieldSet, scope: Scope) -> FieldSet {
    set.into_iter()
        .filter(|path| !path.is_empty() && !ignored(path, scope))
        .collect()
}

fn entries_of(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| entries.iter().filter_map(Entry::from_json).collect())
        .unwrap_or_default()
}

fn store_entries(object: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|entry| !entry.fields.is_empty());
    // The real server's order: operation, then time, manager, apiVersion, subresource.
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::to_json).collect()),
        );
    }
}

fn api_version_of(object: &Value, fallback: &str) -> String {
    object
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|version| !version.is_empty())
        .unwrap_or(fallback)
        .to_owned()
}

/// The entries an update starts from: those the request carries when it changed them (a client
/// may set `managedFields`; `[{}]` clears them), else the live object's.
fn base_entries(old: Option<&Value>, new: &Value) -> Vec<Entry> {
    let sent = new.pointer("/metadata/managedFields");
    let live = old.and_then(|old| old.pointer("/metadata/managedFields"));
    match sent.and_then(Value::as_array) {
        Some(entries) if !entries.is_empty() && sent != live => {
            entries.iter().filter_map(Entry::from_json).collect()
        }
        _ => old.map(entries_of).unwrap_or_default(),
    }
}

/// The shape an object of a built-in kind has before its first write: the non-pointer structs
/// (`metadata`, `spec`, `status`, the pod template's `metadata` and `spec`, the Deployment
/// strategy) exist even when empty, so a create does not claim them as added nodes.
fn skeleton(new: &Value) -> Value {
    let mut out = json!({});
    for path in [
        "/metadata",
        "/spec",
        "/status",
        "/spec/template",
        "/spec/template/metadata",
        "/spec/template/spec",
        "/spec/strategy",
    ] {
        if new.pointer(path).is_some_and(Value::is_object) {
            let mut node = &mut out;
            for part in path.trim_start_matches('/').split('/') {
                node = &mut node[part];
                if !node.is_object() {
                    *node = json!({});
                }
            }
        }
    }
    out
}

/// Records an Update by `writer` turning `old` (absent for a create) into `new`: the writer
/// becomes owner of every field it added or changed, which other managers lose (an update is
/// always forced), and removed fields leave every manager. A write that changes nothing keeps
/// the entries as they were.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    writer: &Writer,
    scope: Scope,
    default_api_version: &str,
) {
    let mut entries = base_entries(old, new);
    let sent_changed = old.is_some_and(|old| {
        new.pointer("/metadata/managedFields") != old.pointer("/metadata/managedFields")
            && new
                .pointer("/metadata/managedFields")
                .and_then(Value::as_array)
                .is_some_and(|entries| !entries.is_empty())
    });
    if new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|sent| sent.len() == 1 && sent[0].as_object().is_some_and(Map::is_empty))
    {
        entries.clear();
    }
    let before = old.cloned().unwrap_or_else(|| skeleton(new));
    let comparison = compare(&before, new);
    let added = filter(comparison.added, scope);
    let modified = filter(comparison.modified, scope);
    let removed = filter(comparison.removed, scope);
    if added.is_empty() && modified.is_empty() && removed.is_empty() {
        if !sent_changed && let Some(old) = old {
            match old.pointer("/metadata/managedFields") {
                Some(live) => new["metadata"]["managedFields"] = live.clone(),
                None => {
                    if let Some(map) = new["metadata"].as_object_mut() {
                        map.remove("managedFields");
                    }
                }
            }
        } else {
            store_entries(new, entries);
        }
        return;
    }
    let api_version = api_version_of(new, default_api_version);
    let subresource = writer.subresource.clone().unwrap_or_default();
    let own = Entry {
        manager: writer.manager.clone(),
        operation: "Update".into(),
        api_version: api_version.clone(),
        time: Some(now()),
        subresource,
        fields: FieldSet::new(),
    };
    let own_identity = own.identity();
    let changed: FieldSet = added.union(&modified).cloned().collect();
    if changed.is_empty() {
        // Only removals: they leave every manager, and the writer gains nothing.
        for entry in &mut entries {
            entry.fields = entry.fields.difference(&removed).cloned().collect();
        }
        store_entries(new, entries);
        return;
    }
    let mut previous = FieldSet::new();
    entries.retain_mut(|entry| {
        if entry.identity() == own_identity {
            previous = std::mem::take(&mut entry.fields);
            return false;
        }
        entry.fields = entry
            .fields
            .difference(&changed)
            .filter(|path| !removed.contains(*path))
            .cloned()
            .collect();
        true
    });
    let mut fields: FieldSet = previous.difference(&removed).cloned().collect();
    fields.extend(changed);
    entries.push(Entry { fields, ..own });
    store_entries(new, entries);
}

/// Associative-list items an applied configuration repeats, in structured-merge-diff's words
/// (`.spec.template.spec.containers[name="app"].env: duplicate entries for key
/// [name="FOO"]`). An apply cannot carry them, although a create or update may.
pub fn duplicate_keys(config: &Value) -> Vec<String> {
    let mut found = Vec::new();
    duplicates_in(config, &mut String::new(), "", &mut found);
    found
}

fn duplicates_in(value: &Value, path: &mut String, field: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(_) if atomic_field(field) => {}
        Value::Object(map) => {
            for (name, child) in map {
                let length = path.len();
                path.push('.');
                path.push_str(name);
                duplicates_in(child, path, name, found);
                path.truncate(length);
            }
        }
        Value::Array(items) => {
            let ListKind::Map(keys) = list_kind(field, items) else {
                return;
            };
            let mut seen = BTreeSet::new();
            let mut reported = BTreeSet::new();
            for item in items {
                let Some(element) = key_element(item, keys) else {
                    continue;
                };
                let spelled = key_spelling(item, keys);
                if !seen.insert(element.clone()) && reported.insert(element) {
                    found.push(format!("{path}: duplicate entries for key [{spelled}]"));
                }
                let length = path.len();
                path.push_str(&format!("[{spelled}]"));
                duplicates_in(item, path, "", found);
                path.truncate(length);
            }
        }
        _ => {}
    }
}

/// `name="app"` or `containerPort=80,protocol="TCP"`: a key as structured-merge-diff prints it.
fn key_spelling(item: &Value, keys: &[&str]) -> String {
    keys.iter()
        .filter_map(|key| {
            let value = match item.get(*key) {
                Some(value) => value.clone(),
                None if *key == "protocol" => json!("TCP"),
                None => return None,
            };
            Some(format!("{key}={value}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A server-side apply of `config` by `writer` onto `live` (absent: the object is created).
/// Returns the merged object with its managed fields, before defaulting; `merge` merges the
/// configuration into the live object.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    writer: &Writer,
    force: bool,
    scope: Scope,
    merge: impl Fn(&Value, &Value) -> Value,
) -> Result<Value, ApiError> {
    let duplicates = duplicate_keys(config);
    if !duplicates.is_empty() {
        // structured-merge-diff's error is no metav1.Status: kube-apiserver answers 500 with
        // reason Unknown and the error's text, and logs "not an metav1.Status".
        let reference = format!(
            "{}{}; {}, Kind={}",
            config["metadata"]["namespace"]
                .as_str()
                .map(|namespace| format!("{namespace}/"))
                .unwrap_or_default(),
            config["metadata"]["name"].as_str().unwrap_or_default(),
            config["apiVersion"].as_str().unwrap_or_default(),
            config["kind"].as_str().unwrap_or_default(),
        );
        return Err(ApiError::unknown(format!(
            "failed to create typed patch object ({reference}): {}",
            if duplicates.len() == 1 {
                duplicates[0].clone()
            } else {
                format!("errors:\n  {}", duplicates.join("\n  "))
            }
        )));
    }
    let mut entries = live.map(entries_of).unwrap_or_default();
    let applied = filter(fields_of(config), scope);
    let subresource = writer.subresource.clone().unwrap_or_default();
    let own = Entry {
        manager: writer.manager.clone(),
        operation: "Apply".into(),
        api_version: api_version_of(config, ""),
        time: Some(now()),
        subresource,
        fields: applied.clone(),
    };
    let own_identity = own.identity();
    let last = entries
        .iter()
        .find(|entry| entry.identity() == own_identity)
        .map(|entry| entry.fields.clone())
        .unwrap_or_default();
    let mut merged = match live {
        Some(live) => {
            let mut without = live.clone();
            if let Some(map) = without["metadata"].as_object_mut() {
                map.remove("managedFields");
            }
            merge(&without, config)
        }
        None => config.clone(),
    };
    // Prune: fields this manager applied before and applies no more, that no one else owns.
    let kept: FieldSet = entries
        .iter()
        .filter(|entry| entry.identity() != own_identity)
        .flat_map(|entry| entry.fields.iter().cloned())
        .chain(applied.iter().cloned())
        .collect();
    let mut dropped: Vec<&Path> = last
        .difference(&applied)
        .filter(|path| !kept.iter().any(|owned| owned.starts_with(path)))
        .collect();
    // Outermost first: an associative list item goes whole, before its key field could go.
    dropped.sort_by_key(|path| path.len());
    for path in dropped {
        remove_path(&mut merged, path);
    }
    let before = match live {
        Some(live) => live.clone(),
        None => json!({}),
    };
    let comparison = compare(&before, &merged);
    let changed: FieldSet = filter(comparison.added, scope)
        .union(&filter(comparison.modified, scope))
        .cloned()
        .collect();
    let removed = filter(comparison.removed, scope);
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for entry in &entries {
        if entry.identity() == own_identity {
            continue;
        }
        for path in entry.fields.intersection(&changed) {
            conflicts.push((describe(entry), path.clone()));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    // An apply that changes nothing keeps the entry's time (the object stays as it was).
    let own = if live.is_some() && changed.is_empty() && removed.is_empty() {
        let time = entries
            .iter()
            .find(|entry| entry.identity() == own_identity)
            .and_then(|entry| entry.time.clone());
        Entry { time, ..own }
    } else {
        own
    };
    entries.retain_mut(|entry| {
        if entry.identity() == own_identity {
            return false;
        }
        entry.fields = entry
            .fields
            .iter()
            .filter(|path| !changed.contains(*path) && !removed.contains(*path))
            .cloned()
            .collect();
        true
    });
    entries.push(own);
    if !merged.get("metadata").is_some_and(Value::is_object) {
        merged["metadata"] = json!({});
    }
    store_entries(&mut merged, entries);
    Ok(merged)
}

/// A manager as conflicts name it: `"helm"` for an applier, `"kubectl" using apps/v1` for an
/// updater (the identifier carries no time).
fn describe(entry: &Entry) -> String {
    if entry.operation == "Update" {
        format!("{:?} using {}", entry.manager, entry.api_version)
    } else {
        format!("{:?}", entry.manager)
    }
}

/// The 409 the real server answers to a conflicting apply.
fn conflict_error(conflicts: &[(String, Path)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(manager, path)| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {manager}"),
                "field": display(path),
            })
        })
        .collect();
    let message = if let [(manager, path)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {manager}: {}",
            display(path)
        )
    } else {
        let mut by_manager: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (manager, path) in conflicts {
            by_manager
                .entry(manager.as_str())
                .or_default()
                .push(display(path));
        }
        let lines: Vec<String> = by_manager
            .iter()
            .flat_map(|(manager, paths)| {
                std::iter::once(format!("conflicts with {manager}:"))
                    .chain(paths.iter().map(|path| format!("- {path}")))
            })
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError {
        code: 409,
        reason: "Conflict",
        message,
        details: Some(json!({ "causes": causes })),
        list_continue: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": "web", "labels": { "app": "web" } },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "app", "image": image, "ports": [{ "containerPort": 80 }] }] }
                }
            }
        })
    }

    fn merge(live: &Value, config: &Value) -> Value {
        crate::patch::strategic_merge(live, config, "")
    }

    fn writer(name: &str) -> Writer {
        Writer::internal(name)
    }

    #[test]
    fn an_apply_repeating_a_keyed_item_is_refused_as_structured_merge_diff_does() {
        let mut config = deployment(1, "img:1");
        config["spec"]["template"]["spec"]["containers"][0]["env"] = json!([
            { "name": "FOO", "value": "x" },
            { "name": "BAR", "value": "y" },
            { "name": "FOO", "value": "z" },
            { "name": "FOO", "value": "again" },
        ]);
        config["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{ "containerPort": 80 }, { "containerPort": 80, "protocol": "TCP" }]);
        assert_eq!(
            duplicate_keys(&config),
            vec![
                ".spec.template.spec.containers[name=\"app\"].env: duplicate entries for key [name=\"FOO\"]",
                ".spec.template.spec.containers[name=\"app\"].ports: duplicate entries for key [containerPort=80,protocol=\"TCP\"]",
            ]
        );
        let error = apply(
            None,
            &config,
            &writer("helm"),
            false,
            Scope::Main {
                status_subresource: true,
            },
            merge,
        )
        .expect_err("duplicates");
        assert_eq!((error.code, error.reason), (500, ""));
        assert!(
            error.message.starts_with(
                "failed to create typed patch object (web; apps/v1, Kind=Deployment): errors:"
            ),
            "{}",
            error.message
        );
        // Atomic lists may repeat anything; so may a create or an update (not checked here).
        let mut args = deployment(1, "img:1");
        args["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["-v", "-v"]);
        assert!(duplicate_keys(&args).is_empty());
    }

    const MAIN: Scope = Scope::Main {
        status_subresource: true,
    };

    #[test]
    fn applied_fields_render_in_the_real_fields_v1_shape() {
        let fields = fields_of(&deployment(2, "web:1"));
        let rendered = encode(&filter(fields, MAIN));
        assert_eq!(
            rendered,
            json!({
                "f:metadata": { "f:labels": { "f:app": {} } },
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": { "f:labels": { "f:app": {} } },
                        "f:spec": { "f:containers": { "k:{\"name\":\"app\"}": {
                            ".": {}, "f:image": {}, "f:name": {},
                            "f:ports": { "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": { ".": {}, "f:containerPort": {} } }
                        } } }
                    }
                }
            })
        );
        let mut decoded = FieldSet::new();
        decode(&rendered, &mut Vec::new(), &mut decoded);
        assert_eq!(encode(&decoded), rendered);
    }

    #[test]
    fn apply_then_scale_then_reapply_conflicts_until_forced() {
        let applied = apply(
            None,
            &deployment(2, "web:1"),
            &writer("helm"),
            false,
            MAIN,
            merge,
        )
        .expect("first apply");
        let mut scaled = applied.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(
            Some(&applied),
            &mut scaled,
            &writer("kubectl").through("scale"),
            MAIN,
            "apps/v1",
        );
        let entries = entries_of(&scaled);
        let scale = entries
            .iter()
            .find(|entry| entry.subresource == "scale")
            .expect("scale entry");
        assert_eq!(
            encode(&scale.fields),
            json!({ "f:spec": { "f:replicas": {} } })
        );
        let helm = entries.iter().find(|e| e.manager == "helm").expect("helm");
        assert!(
            !helm
                .fields
                .contains(&vec!["f:spec".into(), "f:replicas".into()])
        );

        let error = apply(
            Some(&scaled),
            &deployment(3, "web:1"),
            &writer("helm"),
            false,
            MAIN,
            merge,
        )
        .expect_err("conflict");
        assert_eq!(error.code, 409);
        assert_eq!(
            error.message,
            "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas"
        );
        assert_eq!(
            error.details.as_ref().unwrap()["causes"][0]["reason"],
            "FieldManagerConflict"
        );

        // The same value is shared, not a conflict.
        let shared = apply(
            Some(&scaled),
            &deployment(5, "web:1"),
            &writer("helm"),
            false,
            MAIN,
            merge,
        )
        .expect("same value");
        let owners: Vec<_> = entries_of(&shared)
            .into_iter()
            .filter(|e| {
                e.fields
                    .contains(&vec!["f:spec".into(), "f:replicas".into()])
            })
            .map(|e| e.manager)
            .collect();
        assert_eq!(owners, vec!["helm".to_owned(), "kubectl".to_owned()]);

        let forced = apply(
            Some(&scaled),
            &deployment(3, "web:1"),
            &writer("helm"),
            true,
            MAIN,
            merge,
        )
        .expect("forced");
        assert_eq!(forced["spec"]["replicas"], 3);
        assert!(entries_of(&forced).iter().all(|e| e.subresource != "scale"));
    }

    #[test]
    fn fields_a_manager_stops_applying_are_pruned_unless_someone_else_owns_them() {
        let applied = apply(
            None,
            &deployment(2, "web:1"),
            &writer("helm"),
            false,
            MAIN,
            merge,
        )
        .expect("apply");
        let mut without = deployment(2, "web:1");
        without["spec"].as_object_mut().unwrap().remove("replicas");
        without["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("labels");
        let pruned = apply(
            Some(&applied),
            &without,
            &writer("helm"),
            false,
            MAIN,
            merge,
        )
        .expect("apply");
        assert!(pruned["spec"].get("replicas").is_none());
        assert!(
            pruned["metadata"]
                .get("labels")
                .is_none_or(|l| l.get("app").is_none())
        );

        // Another applier sets the same label value: shared, so helm's withdrawal keeps it.
        let label = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web", "labels": { "app": "web" } } });
        let shared = apply(
            Some(&applied),
            &label,
            &writer("labeller"),
            false,
            MAIN,
            merge,
        )
        .expect("shared");
        let kept =
            apply(Some(&shared), &without, &writer("helm"), false, MAIN, merge).expect("apply");
        assert_eq!(kept["metadata"]["labels"]["app"], "web");
        assert!(kept["spec"].get("replicas").is_none());
        let labeller = entries_of(&kept)
            .into_iter()
            .find(|e| e.manager == "labeller")
            .expect("labeller");
        assert_eq!(
            encode(&labeller.fields),
            json!({ "f:metadata": { "f:labels": { "f:app": {} } } })
        );
    }

    #[test]
    fn updates_own_what_they_change_and_clear_with_an_empty_entry() {
        let created = {
            let mut object = deployment(1, "web:1");
            record_update(
                None,
                &mut object,
                &writer("kubectl-create"),
                MAIN,
                "apps/v1",
            );
            object
        };
        let entry = &entries_of(&created)[0];
        assert_eq!(entry.operation, "Update");
        let rendered = encode(&entry.fields);
        assert_eq!(rendered["f:metadata"]["f:labels"]["."], json!({}));
        assert!(rendered["f:spec"].get(".").is_none());
        assert_eq!(
            rendered["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["."],
            json!({})
        );
        let mut cleared = created.clone();
        cleared["metadata"]["managedFields"] = json!([{}]);
        record_update(Some(&created), &mut cleared, &writer("x"), MAIN, "apps/v1");
        assert!(cleared["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn conflicts_with_several_fields_group_by_manager() {
        let error = conflict_error(&[
            ("\"a\"".into(), vec!["f:spec".into(), "f:replicas".into()]),
            (
                "\"a\"".into(),
                vec!["f:metadata".into(), "f:finalizers".into(), "v:\"x\"".into()],
            ),
        ]);
        assert_eq!(
            error.message,
            "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.replicas\n- .metadata.finalizers[=\"x\"]"
        );
        assert_eq!(
            display(&[
                "f:spec".into(),
                "f:containers".into(),
                "k:{\"name\":\"app\"}".into(),
                "f:image".into()
            ]),
            ".spec.containers[name=\"app\"].image"
        );
    }
}
