//! `events.k8s.io/v1` Events: the same objects as core `v1` Events, as kube-apiserver serves
//! them. There is one storage (the core resource's); a request through `events.k8s.io/v1` has
//! its body converted to the core form on the way in and every object it gets back converted to
//! the `events.k8s.io/v1` form on the way out, so an Event written through either version is
//! read, listed, watched, patched and deleted through both.
//!
//! The conversion is kubernetes' `pkg/apis/events/v1` one: `regarding` ↔ `involvedObject`,
//! `note` ↔ `message`, `reportingController` ↔ `reportingComponent`, `deprecatedSource` ↔
//! `source`, `deprecatedFirstTimestamp`/`deprecatedLastTimestamp`/`deprecatedCount` ↔
//! `firstTimestamp`/`lastTimestamp`/`count`; the other fields (`eventTime`, `series`, `action`,
//! `reason`, `type`, `related`, `reportingInstance`, `metadata`) are the same in both. Writes
//! through `events.k8s.io/v1` get that version's strict validation (kubernetes'
//! `ValidateEventCreate`/`ValidateEventUpdate`): `eventTime`, `reportingController`,
//! `reportingInstance`, `action` and `reason` are required, the deprecated fields must stay
//! unset, and an update may change only `series` (and metadata).
//!
//! Differences, each stricter: a server-side apply through `events.k8s.io/v1` is refused (415),
//! and a strategic merge patch is applied as a JSON merge patch (an Event has no list with a
//! merge key, so the two differ only in `$patch` directives, which are refused).

use std::sync::Arc;

use futures::StreamExt as _;
use http::{Method, Request};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use crate::handlers::{DeleteOptions, Part, State};
use crate::patch::PatchKind;
use crate::query::{Query, ResourcePath, percent_decode};
use crate::resources::ResourceInfo;
use crate::server::{self, Body};
use crate::status::ApiError;
use crate::{table, watch as watches};

/// The group served here.
pub const GROUP: &str = "events.k8s.io";
/// Its one version.
pub const VERSION: &str = "v1";
const API_VERSION: &str = "events.k8s.io/v1";

/// Field renames, core name first.
const RENAMES: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// The fields both versions share unchanged.
const SHARED: [&str; 8] = [
    "metadata",
    "eventTime",
    "series",
    "action",
    "reason",
    "type",
    "related",
    "reportingInstance",
];

/// The discovery entry of `events.k8s.io/v1` `events` (short name `ev`, like the core one).
pub fn resource_info() -> ResourceInfo {
    ResourceInfo {
        group: GROUP.to_owned(),
        version: VERSION.to_owned(),
        plural: "events".to_owned(),
        singular: "event".to_owned(),
        kind: "Event".to_owned(),
        namespaced: true,
        short_names: vec!["ev".to_owned()],
        subresources: Vec::new(),
        categories: Vec::new(),
        custom: false,
        create_only: false,
    }
}

/// Whether requests for `info` are served by this module rather than by their own storage.
pub fn serves(info: &ResourceInfo) -> bool {
    info.group == GROUP && info.plural == "events"
}

fn convert(object: &Value, to_events: bool, api_version: &str) -> Value {
    let Some(fields) = object.as_object() else {
        return object.clone();
    };
    let mut out = Map::new();
    out.insert("kind".to_owned(), json!("Event"));
    out.insert("apiVersion".to_owned(), json!(api_version));
    for (core, events) in RENAMES {
        let (from, to) = if to_events {
            (core, events)
        } else {
            (events, core)
        };
        if let Some(value) = fields.get(from) {
            out.insert(to.to_owned(), value.clone());
        }
    }
    for shared in SHARED {
        if let Some(value) = fields.get(shared) {
            out.insert(shared.to_owned(), value.clone());
        }
    }
    Value::Object(out)
}

/// A core `v1` Event in its `events.k8s.io/v1` form. Fields neither version has are dropped, as
/// decoding into the typed object drops them.
pub fn to_events_v1(core: &Value) -> Value {
    convert(core, true, API_VERSION)
}

/// An `events.k8s.io/v1` Event in its core `v1` form (the storage form).
pub fn to_core_v1(event: &Value) -> Value {
    convert(event, false, "v1")
}

/// Anything an `events.k8s.io/v1` request gets back: an Event, a list of them, a Table (its
/// rows' objects), a watch event, or a Status naming the resource.
pub fn outgoing(value: Value) -> Value {
    match value.get("kind").and_then(Value::as_str) {
        Some("Event") => to_events_v1(&value),
        Some("EventList") => {
            let mut list = value;
            list["apiVersion"] = json!(API_VERSION);
            if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
                for item in items.iter_mut() {
                    *item = to_events_v1(item);
                }
            }
            list
        }
        Some("Table") => {
            let mut table = value;
            if let Some(rows) = table.get_mut("rows").and_then(Value::as_array_mut) {
                for row in rows.iter_mut() {
                    if row.pointer("/object/kind").and_then(Value::as_str) == Some("Event") {
                        row["object"] = to_events_v1(&row["object"]);
                    }
                }
            }
            table
        }
        Some("Status") => {
            let mut status = value;
            if status.pointer("/details/kind").and_then(Value::as_str) == Some("events")
                && let Some(details) = status.get_mut("details").and_then(Value::as_object_mut)
            {
                details.insert("group".to_owned(), json!(GROUP));
            }
            status
        }
        _ => value,
    }
}

/// A core error about `events` restated for `events.k8s.io` (`events.events.k8s.io "x" not
/// found`), as the real server names the resource of the request.
pub fn regroup(mut error: ApiError) -> ApiError {
    let about_events = error
        .details
        .as_ref()
        .and_then(|details| details.get("kind"))
        .and_then(Value::as_str)
        == Some("events");
    if about_events {
        if let Some(details) = error.details.as_mut().and_then(Value::as_object_mut) {
            details.insert("group".to_owned(), json!(GROUP));
        }
        error.message = error
            .message
            .replacen("events \"", "events.events.k8s.io \"", 1);
    }
    error
}

/// One watch line (`{"type","object"}\n`, possibly several) in the `events.k8s.io/v1` form.
fn watch_line(bytes: &[u8]) -> bytes::Bytes {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        match serde_json::from_str::<Value>(body) {
            Ok(mut event) if event.get("object").is_some() => {
                let object = event["object"].take();
                event["object"] = outgoing(object);
                out.push_str(&event.to_string());
                out.push('\n');
            }
            _ => out.push_str(line),
        }
    }
    bytes::Bytes::from(out)
}

/// Field selector names of `events.k8s.io/v1` mapped to the storage's (kubernetes registers
/// the same conversion for the events group's field labels).
pub fn core_field_selector(selector: &str) -> String {
    selector
        .split(',')
        .map(|term| {
            let term = term.trim();
            let split = term.find(['=', '!']).unwrap_or(term.len());
            let (field, rest) = term.split_at(split);
            let field = field.trim();
            let mapped = if let Some(rest) = field.strip_prefix("regarding.") {
                format!("involvedObject.{rest}")
            } else if let Some(rest) = field.strip_prefix("deprecatedSource.") {
                format!("source.{rest}")
            } else {
                match field {
                    "reportingController" => "reportingComponent".to_owned(),
                    "note" => "message".to_owned(),
                    other => other.to_owned(),
                }
            };
            format!("{mapped}{rest}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The query of a request with its field selector restated for the storage.
fn core_query(raw: Option<&str>) -> Query {
    let rewritten = raw.map(|raw| {
        raw.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if percent_decode(key) == "fieldSelector" => format!(
                    "{key}={}",
                    percent_encode(&core_field_selector(&percent_decode(value)))
                ),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    Query::parse(rewritten.as_deref())
}

/// One problem found by validation: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path, as the real server names it.
    pub field: String,
    /// `FieldValueRequired` or `FieldValueInvalid`.
    pub reason: &'static str,
    /// Message after the field.
    pub message: String,
}

impl Problem {
    fn required(field: &str) -> Self {
        Self {
            field: field.to_owned(),
            reason: "FieldValueRequired",
            message: "Required value".to_owned(),
        }
    }

    fn invalid(field: &str, value: &str, detail: &str) -> Self {
        Self {
            field: field.to_owned(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {value:?}: {detail}"),
        }
    }
}

fn text<'a>(event: &'a Value, field: &str) -> &'a str {
    event.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn is_set(event: &Value, field: &str) -> bool {
    match event.get(field) {
        None | Some(Value::Null) => false,
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Number(number)) => number.as_i64() != Some(0),
        Some(Value::Object(map)) => map
            .values()
            .any(|value| !matches!(value, Value::Null) && value.as_str() != Some("")),
        Some(_) => true,
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// kubernetes' `IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 alphanumerics, `-`, `_` or `.`, beginning and ending alphanumeric.
fn is_qualified_name(value: &str) -> bool {
    let name = match value.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return false;
            }
            name
        }
        None => value,
    };
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Checks every Event gets, whichever version wrote it (kubernetes' `legacyValidateEvent`), on
/// an Event in its `events.k8s.io/v1` form.
fn legacy_problems(event: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let namespace = event
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let regarding_namespace = event
        .pointer("/regarding/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if is_set(event, "eventTime") {
        if regarding_namespace.is_empty() && !matches!(namespace, "default" | "kube-system") {
            problems.push(Problem::invalid(
                "involvedObject.namespace",
                regarding_namespace,
                "does not match event.namespace",
            ));
        }
        let controller = text(event, "reportingController");
        if controller.is_empty() {
            problems.push(Problem::required("reportingController"));
        } else if !is_qualified_name(controller) {
            problems.push(Problem::invalid(
                "reportingController",
                controller,
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ));
        }
        for (field, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            let value = text(event, field);
            if value.is_empty() {
                problems.push(Problem::required(field));
            } else if value.chars().count() > limit {
                problems.push(Problem::invalid(
                    field,
                    "",
                    &format!("can have at most {limit} characters"),
                ));
            }
        }
        if text(event, "note").chars().count() > 1024 {
            problems.push(Problem::invalid(
                "message",
                "",
                "can have at most 1024 characters",
            ));
        }
    } else if (regarding_namespace.is_empty() && !matches!(namespace, "" | "default"))
        || (!regarding_namespace.is_empty() && namespace != regarding_namespace)
    {
        problems.push(Problem::invalid(
            "involvedObject.namespace",
            regarding_namespace,
            "does not match event.namespace",
        ));
    }
    problems
}

fn series_problems(event: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(series) = event.get("series").filter(|series| !series.is_null()) {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            problems.push(Problem::invalid("series.count", "", "should be at least 2"));
        }
        if !is_set(series, "lastObservedTime") {
            problems.push(Problem::required("series.lastObservedTime"));
        }
    }
    problems
}

/// `events.k8s.io/v1`'s validation of a new Event (kubernetes' `ValidateEventCreate` for that
/// request version), on the Event as sent.
pub fn validate_create(event: &Value) -> Vec<Problem> {
    let mut problems = legacy_problems(event);
    let name = event
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !name.is_empty() && !is_dns_subdomain(name) {
        problems.push(Problem::invalid(
            "metadata.name",
            name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ));
    }
    problems.extend(series_problems(event));
    if !is_set(event, "eventTime") {
        problems.push(Problem::required("eventTime"));
    }
    let kind = text(event, "type");
    if !matches!(kind, "Normal" | "Warning") {
        problems.push(Problem::invalid(
            "type",
            "",
            &format!("has invalid value: {kind}"),
        ));
    }
    for (field, core) in [
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
        ("deprecatedSource", "source"),
    ] {
        if is_set(event, field) {
            problems.push(Problem::invalid(core, "", "needs to be unset"));
        }
    }
    problems
}

/// `events.k8s.io/v1`'s validation of a replacement (kubernetes' `ValidateEventUpdate`): what
/// an Event says is fixed once written; only `series` and metadata may change.
pub fn validate_update(new: &Value, old: &Value) -> Vec<Problem> {
    let mut problems = legacy_problems(new);
    if new.get("series") != old.get("series") {
        problems.extend(series_problems(new));
    }
    let same = |field: &str| {
        let normal = |event: &Value| event.get(field).filter(|v| !v.is_null()).cloned();
        normal(new) == normal(old)
    };
    for (field, core) in [
        ("regarding", "involvedObject"),
        ("reason", "reason"),
        ("note", "message"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
        ("type", "type"),
        ("eventTime", "eventTime"),
        ("action", "action"),
        ("related", "related"),
        ("reportingController", "reportingController"),
        ("reportingInstance", "reportingInstance"),
    ] {
        if !same(field) {
            problems.push(Problem::invalid(core, "", "field is immutable"));
        }
    }
    problems
}

/// The 422 for `problems` (None when there are none), shaped like the real one.
pub fn invalid(name: &str, problems: &[Problem]) -> Option<ApiError> {
    if problems.is_empty() {
        return None;
    }
    let causes: Vec<(&str, &str, &str)> = problems
        .iter()
        .map(|problem| {
            (
                problem.field.as_str(),
                problem.reason,
                problem.message.as_str(),
            )
        })
        .collect();
    Some(ApiError::invalid_causes("Event", GROUP, name, &causes))
}

fn name_in(event: &Value) -> &str {
    event
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn check_kind(event: &Value) -> Result<(), ApiError> {
    if !event.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an Event object",
        ));
    }
    let api_version = text(event, "apiVersion");
    let kind = text(event, "kind");
    if (!api_version.is_empty() && api_version != API_VERSION)
        || (!kind.is_empty() && kind != "Event")
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({API_VERSION})"
        )));
    }
    Ok(())
}

fn has_directive(patch: &Value) -> bool {
    match patch {
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.starts_with('$') || has_directive(value)),
        Value::Array(items) => items.iter().any(has_directive),
        _ => false,
    }
}

/// `patch` of `kind` applied to `current` (both in the `events.k8s.io/v1` form).
pub fn apply_patch(kind: PatchKind, current: &Value, patch: &Value) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Merge => {
            let mut out = current.clone();
            json_patch::merge(&mut out, patch);
            Ok(out)
        }
        PatchKind::Strategic if has_directive(patch) => Err(ApiError::bad_request(
            "strategic merge patch directives ($patch, $retainKeys, ...) are not supported on events.events.k8s.io in this sandbox; send a JSON merge patch",
        )),
        PatchKind::Strategic => {
            let mut out = current.clone();
            json_patch::merge(&mut out, patch);
            Ok(out)
        }
        PatchKind::Json => {
            let operations: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|error| ApiError::bad_request(format!("invalid JSON patch: {error}")))?;
            let mut out = current.clone();
            json_patch::patch(&mut out, &operations)
                .map_err(|error| ApiError::invalid_patch(&error.to_string()))?;
            Ok(out)
        }
        PatchKind::Apply => Err(ApiError::unsupported_media_type(
            "application/apply-patch+yaml",
        )),
    }
}

fn core_info(state: &State) -> Result<ResourceInfo, ApiError> {
    state
        .find("", "v1", "events")
        .ok_or_else(|| ApiError::internal("core events are not registered"))
}

/// Serves one request for `events.k8s.io/v1` `events` from the core storage.
pub async fn resource(
    state: &Arc<State>,
    request: Request<Incoming>,
    target: ResourcePath,
) -> Result<http::Response<Body>, ApiError> {
    serve(state, request, target).await.map_err(regroup)
}

async fn serve(
    state: &Arc<State>,
    request: Request<Incoming>,
    target: ResourcePath,
) -> Result<http::Response<Body>, ApiError> {
    let core = core_info(state)?;
    let query = core_query(request.uri().query());
    let namespace = target.namespace.as_deref();
    let method = request.method().clone();
    let headers = request.headers().clone();
    let content_type = server::content_type(&headers);
    let dry_run = query.dry_run();
    // Field ownership is recorded as for any other write (the manager of the request).
    let writer = crate::managed::Writer::from_request(
        query.get("fieldManager"),
        headers
            .get(http::header::USER_AGENT)
            .and_then(|agent| agent.to_str().ok()),
    );
    let as_table = headers
        .get(http::header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(table::wants_table)
        .then(|| table::Include::from_query(query.get("includeObject")));
    let respond = |code: u16, value: Value| server::json_response(code, &outgoing(value));
    if target.subresource.is_some() {
        return Err(ApiError::no_route(request.uri().path()));
    }
    let Some(name) = target.name.clone() else {
        return match method {
            Method::GET if query.flag("watch") => {
                let stream = watches::start(state, &core, namespace, &query, as_table)?;
                let converted = stream
                    .map(|chunk| chunk.map(|bytes| watch_line(&bytes)))
                    .boxed();
                Ok(server::stream_response("application/json", converted))
            }
            Method::GET => match as_table {
                Some(include) => {
                    let page = state.select_page(&core, namespace, &query)?;
                    Ok(respond(200, table::page(&core, &page, include)))
                }
                None => Ok(respond(200, state.list(&core, namespace, &query)?)),
            },
            Method::POST => {
                let body = server::read_body(request.into_body()).await?;
                let event = server::decode_object(&content_type, &body)?;
                check_kind(&event)?;
                if let Some(error) = invalid(name_in(&event), &validate_create(&event)) {
                    return Err(error);
                }
                Ok(respond(
                    201,
                    state.create_as(
                        &core,
                        namespace,
                        to_core_v1(&event),
                        dry_run,
                        crate::handlers::Ownership::Update(&writer),
                    )?,
                ))
            }
            Method::DELETE => {
                let body = server::read_body(request.into_body()).await?;
                let options = DeleteOptions::from_request(
                    &query,
                    server::decode_delete_options(&content_type, &body).as_ref(),
                )?;
                Ok(respond(
                    200,
                    state.delete_collection(&core, namespace, &query, &options)?,
                ))
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on a collection of events.{GROUP}"
            ))),
        };
    };
    match method {
        Method::GET => {
            let object = state.get(&core, namespace, &name)?;
            match as_table {
                Some(include) => Ok(respond(
                    200,
                    table::table(&core, &[object], None, include, true),
                )),
                None => Ok(respond(200, (*object).clone())),
            }
        }
        Method::PUT => {
            let body = server::read_body(request.into_body()).await?;
            let event = server::decode_object(&content_type, &body)?;
            check_kind(&event)?;
            let stored = match state.get(&core, namespace, &name) {
                Ok(current) => {
                    let old = to_events_v1(&current);
                    if let Some(error) = invalid(&name, &validate_update(&event, &old)) {
                        return Err(error);
                    }
                    state.update(
                        &core,
                        namespace,
                        &name,
                        to_core_v1(&event),
                        Part::Main,
                        dry_run,
                        &writer,
                    )?
                }
                Err(_) => {
                    // An update of an absent Event creates it, as for core Events.
                    if let Some(error) = invalid(&name, &validate_create(&event)) {
                        return Err(error);
                    }
                    state.update(
                        &core,
                        namespace,
                        &name,
                        to_core_v1(&event),
                        Part::Main,
                        dry_run,
                        &writer,
                    )?
                }
            };
            Ok(respond(stored.0, stored.1))
        }
        Method::PATCH => {
            let kind = PatchKind::from_content_type(&content_type)?;
            let body = server::read_body(request.into_body()).await?;
            let patch = crate::patch::parse_body(kind, &body)?;
            let pinned = patch.pointer("/metadata/resourceVersion").is_some();
            // A patch applies to the object as it is now: on a concurrent write, read it again
            // and re-apply (as the real server's GuaranteedUpdate does), unless the patch itself
            // names the resourceVersion it expects.
            let mut attempts = 0;
            loop {
                attempts += 1;
                let current = state.get(&core, namespace, &name)?;
                let old = to_events_v1(&current);
                let mut patched = apply_patch(kind, &old, &patch)?;
                check_kind(&patched)?;
                if !pinned && patched.get("metadata").is_some_and(Value::is_object) {
                    patched["metadata"]["resourceVersion"] =
                        old["metadata"]["resourceVersion"].clone();
                }
                if let Some(error) = invalid(&name, &validate_update(&patched, &old)) {
                    return Err(error);
                }
                match state.update(
                    &core,
                    namespace,
                    &name,
                    to_core_v1(&patched),
                    Part::Main,
                    dry_run,
                    &writer,
                ) {
                    Err(error) if error.reason == "Conflict" && !pinned && attempts < 5 => {}
                    result => {
                        let (code, stored) = result?;
                        return Ok(respond(code, stored));
                    }
                }
            }
        }
        Method::DELETE => {
            let body = server::read_body(request.into_body()).await?;
            let options = DeleteOptions::from_request(
                &query,
                server::decode_delete_options(&content_type, &body).as_ref(),
            )?;
            Ok(respond(
                200,
                state.delete(&core, namespace, &name, &options)?,
            ))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on events.{GROUP}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core_event() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": { "name": "web.1", "namespace": "team", "resourceVersion": "7" },
            "involvedObject": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "team", "uid": "u-1" },
            "reason": "Deployed",
            "message": "deployed revision 2",
            "source": { "component": "kubelet", "host": "node-1" },
            "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:01:00Z",
            "count": 3,
            "type": "Normal",
            "eventTime": "2026-01-01T00:00:00.000001Z",
            "series": { "count": 2, "lastObservedTime": "2026-01-01T00:01:00.000001Z" },
            "action": "Deploy",
            "related": { "kind": "Secret", "name": "s" },
            "reportingComponent": "psctl",
            "reportingInstance": "host-1",
        })
    }

    #[test]
    fn every_field_converts_both_ways_and_back_unchanged() {
        let core = core_event();
        let events = to_events_v1(&core);
        assert_eq!(events["apiVersion"], "events.k8s.io/v1");
        assert_eq!(events["regarding"], core["involvedObject"]);
        assert_eq!(events["note"], "deployed revision 2");
        assert_eq!(events["reportingController"], "psctl");
        assert_eq!(events["reportingInstance"], "host-1");
        assert_eq!(events["deprecatedSource"], core["source"]);
        assert_eq!(events["deprecatedFirstTimestamp"], core["firstTimestamp"]);
        assert_eq!(events["deprecatedLastTimestamp"], core["lastTimestamp"]);
        assert_eq!(events["deprecatedCount"], 3);
        for shared in SHARED {
            assert_eq!(events[shared], core[shared], "{shared}");
        }
        for core_only in [
            "involvedObject",
            "message",
            "source",
            "count",
            "reportingComponent",
        ] {
            assert!(events.get(core_only).is_none(), "{core_only} leaked");
        }
        assert_eq!(to_core_v1(&events), core);
    }

    #[test]
    fn absent_fields_stay_absent_and_unknown_ones_are_dropped() {
        let events = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": { "name": "x" }, "note": "n", "bogus": 1,
        });
        let core = to_core_v1(&events);
        assert_eq!(
            core,
            json!({ "apiVersion": "v1", "kind": "Event", "metadata": { "name": "x" }, "message": "n" })
        );
    }

    #[test]
    fn lists_tables_watch_lines_and_statuses_go_out_in_the_requested_version() {
        let list =
            outgoing(json!({ "kind": "EventList", "apiVersion": "v1", "items": [core_event()] }));
        assert_eq!(list["apiVersion"], API_VERSION);
        assert_eq!(list["items"][0]["note"], "deployed revision 2");
        let table =
            outgoing(json!({ "kind": "Table", "rows": [{ "cells": [], "object": core_event() }] }));
        assert_eq!(table["rows"][0]["object"]["apiVersion"], API_VERSION);
        let line = watch_line(
            format!("{}\n", json!({ "type": "ADDED", "object": core_event() })).as_bytes(),
        );
        let parsed: Value = serde_json::from_slice(line.trim_ascii_end()).unwrap();
        assert_eq!(parsed["type"], "ADDED");
        assert_eq!(parsed["object"]["regarding"]["name"], "web");
        let status =
            outgoing(json!({ "kind": "Status", "details": { "name": "x", "kind": "events" } }));
        assert_eq!(status["details"]["group"], GROUP);
    }

    #[test]
    fn errors_name_the_events_group() {
        let error = regroup(ApiError::not_found("", "events", "x"));
        assert_eq!(error.message, "events.events.k8s.io \"x\" not found");
        assert_eq!(error.details.unwrap()["group"], GROUP);
        let other = regroup(ApiError::not_found("", "namespaces", "team"));
        assert_eq!(other.message, "namespaces \"team\" not found");
    }

    #[test]
    fn field_selectors_are_restated_for_the_storage() {
        assert_eq!(
            core_field_selector("regarding.name=web,reportingController!=psctl,type=Warning"),
            "involvedObject.name=web,reportingComponent!=psctl,type=Warning"
        );
        assert_eq!(
            core_field_selector("deprecatedSource.component==kubelet"),
            "source.component==kubelet"
        );
        let query = core_query(Some("fieldSelector=regarding.kind%3DDeployment&limit=5"));
        assert_eq!(
            query.get("fieldSelector"),
            Some("involvedObject.kind=Deployment")
        );
        assert_eq!(query.get("limit"), Some("5"));
    }

    fn new_event() -> Value {
        to_events_v1(&json!({
            "metadata": { "name": "web.1", "namespace": "team" },
            "involvedObject": { "kind": "Deployment", "name": "web", "namespace": "team" },
            "reason": "Deployed", "type": "Normal", "action": "Deploy",
            "eventTime": "2026-01-01T00:00:00.000001Z",
            "reportingComponent": "psctl", "reportingInstance": "host-1",
        }))
    }

    #[test]
    fn a_well_formed_new_event_is_valid() {
        assert_eq!(validate_create(&new_event()), []);
    }

    #[test]
    fn creation_requires_what_the_real_server_requires() {
        let mut event = new_event();
        for field in [
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
        ] {
            event.as_object_mut().unwrap().remove(field);
        }
        let fields: Vec<String> = validate_create(&event)
            .into_iter()
            .map(|problem| problem.field)
            .collect();
        // Without eventTime the legacy checks of old-style events apply instead.
        assert_eq!(fields, ["eventTime"]);

        let mut event = new_event();
        for field in [
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
        ] {
            event.as_object_mut().unwrap().remove(field);
        }
        event["type"] = json!("Info");
        event["deprecatedCount"] = json!(1);
        event["note"] = json!("x".repeat(1025));
        let fields: Vec<String> = validate_create(&event)
            .into_iter()
            .map(|problem| problem.field)
            .collect();
        assert_eq!(
            fields,
            [
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
                "message",
                "type",
                "count"
            ]
        );
        let error = invalid("web.1", &validate_create(&event)).unwrap();
        assert_eq!(error.code, 422);
        assert!(
            error.message.starts_with(
                "Event.events.k8s.io \"web.1\" is invalid: [reportingController: Required value"
            ),
            "{}",
            error.message
        );
    }

    #[test]
    fn reporting_controller_must_be_a_qualified_name() {
        let mut event = new_event();
        event["reportingController"] = json!("psctl deploy");
        assert_eq!(validate_create(&event)[0].field, "reportingController");
        event["reportingController"] = json!("example.com/psctl");
        assert_eq!(validate_create(&event), []);
    }

    #[test]
    fn a_regarding_object_in_another_namespace_is_refused() {
        let mut event = new_event();
        event["regarding"]["namespace"] = json!("");
        assert_eq!(validate_create(&event)[0].field, "involvedObject.namespace");
    }

    #[test]
    fn an_update_may_grow_the_series_but_not_rewrite_the_event() {
        let old = new_event();
        let mut grown = old.clone();
        grown["series"] = json!({ "count": 2, "lastObservedTime": "2026-01-01T00:02:00.000001Z" });
        assert_eq!(validate_update(&grown, &old), []);
        grown["series"]["count"] = json!(1);
        assert_eq!(validate_update(&grown, &old)[0].field, "series.count");
        let mut rewritten = old.clone();
        rewritten["note"] = json!("something else");
        rewritten["reason"] = json!("Other");
        let fields: Vec<String> = validate_update(&rewritten, &old)
            .into_iter()
            .map(|problem| problem.field)
            .collect();
        assert_eq!(fields, ["reason", "message"]);
    }

    #[test]
    fn patches_apply_to_the_requested_version() {
        let old = new_event();
        let patched = apply_patch(
            PatchKind::Merge,
            &old,
            &json!({ "series": { "count": 2, "lastObservedTime": "t" } }),
        )
        .unwrap();
        assert_eq!(patched["series"]["count"], 2);
        assert_eq!(to_core_v1(&patched)["series"]["count"], 2);
        let patched = apply_patch(
            PatchKind::Json,
            &old,
            &json!([{ "op": "replace", "path": "/reason", "value": "X" }]),
        )
        .unwrap();
        assert_eq!(patched["reason"], "X");
        assert!(apply_patch(PatchKind::Strategic, &old, &json!({ "$patch": "replace" })).is_err());
        assert_eq!(
            apply_patch(PatchKind::Apply, &old, &json!({}))
                .unwrap_err()
                .code,
            415
        );
    }
}
