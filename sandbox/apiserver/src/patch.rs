//! The four patch types: JSON merge patch (RFC 7386) and JSON patch (RFC 6902) via the
//! `json-patch` crate, strategic merge patch for the built-in kinds (lists merged by their
//! Kubernetes merge keys, `$patch`/`$retainKeys`/`$deleteFromPrimitiveList` directives), and
//! server-side apply approximated as "create if absent, else strategic merge of the applied
//! configuration".

use serde_json::{Map, Value};

use crate::status::ApiError;

/// A patch request body, by content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`
    Merge,
    /// `application/json-patch+json`
    Json,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchKind {
    /// The patch type a `Content-Type` names.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml"
            | "application/apply-patch+json"
            | "application/apply-patch+cbor" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Parses a patch body (YAML for apply, JSON otherwise).
pub fn parse_body(kind: PatchKind, body: &[u8]) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Apply => crate::yaml::from_slice(body)
            .map_err(|error| ApiError::bad_request(format!("error decoding YAML: {error}"))),
        _ => serde_json::from_slice(body)
            .map_err(|error| ApiError::bad_request(format!("error decoding patch: {error}"))),
    }
}

/// Applies `patch` of `kind` to `target`. `custom` resources refuse strategic merge (as the real
/// server does: they have no merge keys), which makes kubectl fall back to merge patches.
pub fn apply(
    kind: PatchKind,
    target: &Value,
    patch: &Value,
    custom: bool,
) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Merge => {
            let mut out = target.clone();
            json_patch::merge(&mut out, patch);
            Ok(out)
        }
        PatchKind::Json => {
            let operations: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(|error| ApiError::bad_request(format!("the server rejected our request due to an error in our request: invalid JSON patch: {error}")))?;
            let mut out = target.clone();
            json_patch::patch(&mut out, &operations)
                .map_err(|error| ApiError::invalid_patch(&error.to_string()))?;
            Ok(out)
        }
        PatchKind::Strategic if custom => Err(ApiError::unsupported_media_type(
            "application/strategic-merge-patch+json",
        )),
        PatchKind::Strategic => Ok(strategic_merge(target, patch, "")),
        PatchKind::Apply if custom => {
            let mut out = target.clone();
            json_patch::merge(&mut out, patch);
            Ok(out)
        }
        PatchKind::Apply => Ok(strategic_merge(target, patch, "")),
    }
}

impl ApiError {
    /// 422 for a JSON patch whose operations do not apply.
    pub fn invalid_patch(problem: &str) -> Self {
        Self {
            code: 422,
            reason: "Invalid",
            message: format!(
                "the server rejected our request due to an error in our request: {problem}"
            ),
            details: None,
            list_continue: None,
        }
    }
}

/// The merge key of a list field of the built-in kinds, by field name (the element shape
/// disambiguates `ports`, which merges on `containerPort` in pods and on `port` in services).
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ports" => Some(
            if sample.is_some_and(|item| item.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            },
        ),
        _ => None,
    }
}

/// Lists of scalars merged as sets rather than replaced.
fn merges_as_set(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge of `patch` into `target`; `field` is the name of the field holding them.
pub fn strategic_merge(target: &Value, patch: &Value, field: &str) -> Value {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => Value::Object(merge_maps(target, patch)),
        (Value::Array(target), Value::Array(patch)) => merge_lists(target, patch, field),
        (_, patch) => strip_directives(patch),
    }
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !key.starts_with('$'))
                .map(|(key, value)| (key.clone(), strip_directives(value)))
                .filter(|(_, value)| !value.is_null())
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|item| item.get("$patch").and_then(Value::as_str) != Some("delete"))
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_maps(target: &Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            return patch
                .iter()
                .filter(|(key, _)| !key.starts_with('$'))
                .map(|(key, value)| (key.clone(), strip_directives(value)))
                .collect();
        }
        Some("delete") => return Map::new(),
        _ => {}
    }
    let mut out = target.clone();
    for (key, value) in patch {
        if let Some(list_field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(existing)), Value::Array(remove)) =
                (out.get_mut(list_field), value)
            {
                existing.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            out.remove(key);
            continue;
        }
        let merged = match out.get(key) {
            Some(existing) => strategic_merge(existing, value, key),
            None => strip_directives(value),
        };
        out.insert(key.clone(), merged);
    }
    if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|key, _| keep.contains(&key.as_str()));
    }
    out
}

fn merge_lists(target: &[Value], patch: &[Value], field: &str) -> Value {
    if patch
        .iter()
        .any(|item| item.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Value::Array(
            patch
                .iter()
                .filter(|item| item.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
    }
    if merges_as_set(field) {
        let mut out = target.to_vec();
        for item in patch {
            if !out.contains(item) {
                out.push(item.clone());
            }
        }
        return Value::Array(out);
    }
    let Some(key) = merge_key(field, patch.first().or(target.first())) else {
        return Value::Array(patch.iter().map(strip_directives).collect());
    };
    let mut out = target.to_vec();
    for item in patch {
        let identity = item.get(key);
        let position = identity.and_then(|identity| {
            out.iter()
                .position(|existing| existing.get(key) == Some(identity))
        });
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(index), true) => {
                out.remove(index);
            }
            (None, true) => {}
            (Some(index), false) => out[index] = strategic_merge(&out[index], item, field),
            (None, false) => out.push(strip_directives(item)),
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": { "name": "p", "labels": { "a": "1" }, "finalizers": ["x"] },
            "spec": { "containers": [
                { "name": "app", "image": "app:1", "env": [{ "name": "A", "value": "1" }, { "name": "B", "value": "2" }], "ports": [{ "containerPort": 80 }] },
                { "name": "side", "image": "side:1" }
            ]}
        })
    }

    #[test]
    fn strategic_merge_merges_containers_and_env_by_name() {
        let patch = json!({ "spec": { "containers": [{ "name": "app", "image": "app:2", "env": [{ "name": "B", "value": "3" }, { "name": "C", "value": "4" }] }] } });
        let out = apply(PatchKind::Strategic, &pod(), &patch, false).expect("applies");
        let containers = out["spec"]["containers"].as_array().expect("list");
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["image"], "app:2");
        assert_eq!(
            containers[0]["env"],
            json!([{ "name": "A", "value": "1" }, { "name": "B", "value": "3" }, { "name": "C", "value": "4" }])
        );
        assert_eq!(containers[0]["ports"], json!([{ "containerPort": 80 }]));
        assert_eq!(containers[1]["image"], "side:1");
    }

    #[test]
    fn strategic_directives_delete_replace_and_retain() {
        let patch = json!({ "spec": { "containers": [{ "name": "side", "$patch": "delete" }] }, "metadata": { "labels": { "$patch": "replace", "b": "2" }, "$deleteFromPrimitiveList/finalizers": ["x"] } });
        let out = apply(PatchKind::Strategic, &pod(), &patch, false).expect("applies");
        assert_eq!(out["spec"]["containers"].as_array().map(Vec::len), Some(1));
        assert_eq!(out["metadata"]["labels"], json!({ "b": "2" }));
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        let retain = json!({ "spec": { "$retainKeys": ["containers"], "hostname": "h" } });
        let out = apply(PatchKind::Strategic, &pod(), &retain, false).expect("applies");
        assert!(out["spec"].get("hostname").is_none());
        let null = json!({ "metadata": { "labels": { "a": null } } });
        let out = apply(PatchKind::Strategic, &pod(), &null, false).expect("applies");
        assert_eq!(out["metadata"]["labels"], json!({}));
    }

    #[test]
    fn merge_patch_replaces_lists_and_json_patch_follows_operations() {
        let merge = json!({ "spec": { "containers": [{ "name": "only" }] } });
        let out = apply(PatchKind::Merge, &pod(), &merge, false).expect("applies");
        assert_eq!(out["spec"]["containers"], json!([{ "name": "only" }]));
        let ops = json!([{ "op": "replace", "path": "/spec/containers/1/image", "value": "side:2" }, { "op": "test", "path": "/metadata/name", "value": "p" }]);
        let out = apply(PatchKind::Json, &pod(), &ops, false).expect("applies");
        assert_eq!(out["spec"]["containers"][1]["image"], "side:2");
        let failing = json!([{ "op": "test", "path": "/metadata/name", "value": "q" }]);
        assert_eq!(
            apply(PatchKind::Json, &pod(), &failing, false)
                .expect_err("test op fails")
                .code,
            422
        );
    }

    #[test]
    fn custom_resources_refuse_strategic_merge() {
        let error = apply(PatchKind::Strategic, &json!({}), &json!({}), true).expect_err("refused");
        assert_eq!(error.code, 415);
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml; charset=utf-8"),
            Ok(PatchKind::Apply)
        );
    }
}
