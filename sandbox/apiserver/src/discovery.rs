//! Discovery documents: `/version`, `/api`, `/apis`, and the per-group-version resource lists.
//!
//! Only the legacy (unaggregated) JSON forms are served: clients asking for aggregated discovery
//! (`as=APIGroupDiscoveryList`) also accept plain JSON and fall back to the legacy walk when the
//! answer's content type is not the aggregated one, which is what kubectl and client-go do.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::resources::ResourceInfo;

/// `/version`.
pub fn version(git_version: &str) -> Value {
    let numbers: Vec<&str> = git_version
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .collect();
    json!({
        "major": numbers.first().copied().unwrap_or("1"),
        "minor": numbers.get(1).copied().unwrap_or("0"),
        "gitVersion": git_version,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

/// `/apis`: every non-core group with its versions.
pub fn groups(resources: &[ResourceInfo]) -> Value {
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for info in resources.iter().filter(|info| !info.group.is_empty()) {
        let versions = by_group.entry(&info.group).or_default();
        if !versions.contains(&info.version.as_str()) {
            versions.push(&info.version);
        }
    }
    let groups: Vec<Value> = by_group
        .into_iter()
        .map(|(group, versions)| {
            let entries: Vec<Value> = versions.iter().map(|version| json!({ "groupVersion": format!("{group}/{version}"), "version": version })).collect();
            json!({ "name": group, "versions": entries, "preferredVersion": entries[0] })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/{group}`: one group, or `None` if unknown.
pub fn group(resources: &[ResourceInfo], name: &str) -> Option<Value> {
    let list = groups(resources);
    let found = list["groups"]
        .as_array()?
        .iter()
        .find(|group| group["name"] == name)?
        .clone();
    let mut found = found;
    found["kind"] = json!("APIGroup");
    found["apiVersion"] = json!("v1");
    Some(found)
}

/// `/api/v1` or `/apis/{group}/{version}`, or `None` if nothing is served there.
pub fn resource_list(resources: &[ResourceInfo], group: &str, version: &str) -> Option<Value> {
    let entries: Vec<Value> = resources
        .iter()
        .filter(|info| info.group == group && info.version == version)
        .flat_map(ResourceInfo::api_resources)
        .collect();
    if entries.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries }),
    )
}

/// `/openapi/v3`: one entry per served group-version.
///
/// The OpenAPI documents served are minimal: they declare, for each kind, a PATCH operation that
/// accepts `fieldValidation`, which is what kubectl checks before sending objects with
/// server-side field validation instead of downloading full schemas to validate client-side.
/// No schemas are served, so kubectl computes strategic merge patches from its built-in types.
pub fn openapi_v3_root(resources: &[ResourceInfo]) -> Value {
    let mut paths = serde_json::Map::new();
    for info in resources {
        let key = if info.group.is_empty() {
            format!("api/{}", info.version)
        } else {
            format!("apis/{}/{}", info.group, info.version)
        };
        let url = format!(
            "/openapi/v3/{key}?hash={}",
            openapi_hash(resources, &info.group, &info.version)
        );
        paths.insert(key, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

fn openapi_hash(resources: &[ResourceInfo], group: &str, version: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for info in resources
        .iter()
        .filter(|info| info.group == group && info.version == version)
    {
        info.plural.hash(&mut hasher);
        info.kind.hash(&mut hasher);
    }
    format!("{:016X}", hasher.finish())
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`, or `None` if nothing is served.
pub fn openapi_v3_group_version(
    resources: &[ResourceInfo],
    group: &str,
    version: &str,
    server_version: &str,
) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for info in resources
        .iter()
        .filter(|info| info.group == group && info.version == version && !info.create_only)
    {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let path = if info.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", info.plural)
        } else {
            format!("{prefix}/{}/{{name}}", info.plural)
        };
        paths.insert(
            path,
            json!({
                "patch": {
                    "operationId": format!("patch{}", info.kind),
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": { "group": group, "version": version, "kind": info.kind },
                    "parameters": [
                        { "name": "dryRun", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
                        { "name": "fieldManager", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
                        { "name": "fieldValidation", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
                        { "name": "force", "in": "query", "schema": { "type": "boolean", "uniqueItems": true } }
                    ],
                    "responses": { "200": { "description": "OK" } }
                }
            }),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": server_version },
        "paths": paths,
        "components": { "schemas": {} },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtin;

    #[test]
    fn groups_and_resource_lists_cover_the_builtins() {
        let resources = builtin();
        let list = groups(&resources);
        let names: Vec<&str> = list["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .filter_map(|group| group["name"].as_str())
            .collect();
        assert!(
            names.contains(&"apps")
                && names.contains(&"coordination.k8s.io")
                && !names.contains(&"")
        );
        let core = resource_list(&resources, "", "v1").expect("core served");
        let pods = core["resources"]
            .as_array()
            .expect("list")
            .iter()
            .find(|entry| entry["name"] == "pods")
            .expect("pods");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert!(resource_list(&resources, "apps", "v2").is_none());
        assert_eq!(version("v1.33.0")["minor"], "33");
        assert_eq!(version("v1.33.0")["gitVersion"], "v1.33.0");
    }

    #[test]
    // The pushes are conditional (each macro expands to nothing but one), which the lint cannot see.
    #[allow(clippy::vec_init_then_push)]
    fn the_reported_version_is_the_one_k8s_openapi_compiles() {
        // Exactly one of these expands: the one of the enabled `v1_*` feature.
        let mut compiled: Vec<&str> = Vec::new();
        k8s_openapi::k8s_if_1_33! { compiled.push("33"); }
        k8s_openapi::k8s_if_1_34! { compiled.push("34"); }
        k8s_openapi::k8s_if_1_35! { compiled.push("35"); }
        k8s_openapi::k8s_if_1_36! { compiled.push("36"); }
        k8s_openapi::k8s_if_1_37! { compiled.push("37"); }
        let reported = version(crate::KUBERNETES_VERSION);
        assert_eq!(reported["major"], "1");
        assert_eq!(
            compiled,
            [reported["minor"].as_str().expect("minor is a string")],
            "KUBERNETES_VERSION must follow the k8s-openapi feature"
        );
    }
}
