//! Request paths and query strings: percent-decoding, the parameters of list/watch/delete/patch,
//! and the split of an API path into group, version, namespace, resource, name and subresource.

use std::collections::HashMap;

use crate::status::ApiError;

/// Decodes `%XX` escapes and `+` (as space, per form encoding).
pub fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        index += 3;
                    }
                    None => {
                        out.push(b'%');
                        index += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters, decoded; the last value wins for repeated keys.
#[derive(Debug, Clone, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for pair in raw
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(key), percent_decode(value));
        }
        Self(map)
    }

    /// One parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean parameter (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    /// An integer parameter; malformed values are a 400 naming the parameter.
    pub fn integer(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value for query parameter {key}: {text:?} is not an integer"
                ))
            }),
        }
    }

    /// Whether `dryRun=All` was asked for.
    pub fn dry_run(&self) -> bool {
        self.get("dryRun").is_some_and(|value| value == "All")
    }
}

/// A request path under `/api/v1` or `/apis/{group}/{version}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    /// Group, empty for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from `namespaces/{ns}/...`, if any.
    pub namespace: Option<String>,
    /// Resource plural.
    pub resource: String,
    /// Object name, if addressed.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, `log`, `proxy`), if any.
    pub subresource: Option<String>,
    /// Remaining path after a `proxy` subresource (without leading slash).
    pub rest: String,
}

/// Splits `/api/v1/...` and `/apis/{g}/{v}/...` paths. `is_namespaced` tells whether a resource
/// name of this group/version is namespaced, to tell `namespaces/{ns}/pods` apart from
/// `namespaces/{name}/status`. Returns `None` for discovery roots and unknown shapes.
pub fn split_path(
    path: &str,
    is_namespaced: &dyn Fn(&str, &str, &str) -> bool,
) -> Option<ResourcePath> {
    let trimmed = path.trim_start_matches('/');
    let segments: Vec<&str> = trimmed.split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => {
            (String::new(), (*version).to_owned(), rest)
        }
        ["apis", group, version, rest @ ..] if !rest.is_empty() => {
            ((*group).to_owned(), (*version).to_owned(), rest)
        }
        _ => return None,
    };
    let decode = |segment: &str| percent_decode(segment);
    let (namespace, rest) = match rest {
        ["namespaces", namespace, resource, tail @ ..]
            if is_namespaced(&group, &version, resource) =>
        {
            (Some(decode(namespace)), {
                let mut rest = vec![*resource];
                rest.extend_from_slice(tail);
                rest
            })
        }
        other => (None, other.to_vec()),
    };
    let resource = rest
        .first()
        .filter(|resource| !resource.is_empty())?
        .to_string();
    let name = rest
        .get(1)
        .filter(|name| !name.is_empty())
        .map(|name| decode(name));
    let subresource = rest.get(2).map(|sub| (*sub).to_owned());
    let tail = if rest.len() > 3 {
        rest[3..].join("/")
    } else {
        String::new()
    };
    if subresource.as_deref() != Some("proxy") && rest.len() > 3 {
        return None;
    }
    Some(ResourcePath {
        group,
        version,
        namespace,
        resource,
        name,
        subresource,
        rest: tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespaced(_: &str, _: &str, resource: &str) -> bool {
        resource != "namespaces" && resource != "status"
    }

    #[test]
    fn splits_namespaced_cluster_and_subresource_paths() {
        let path = split_path(
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            &namespaced,
        )
        .expect("resource path");
        assert_eq!(path.group, "apps");
        assert_eq!(path.namespace.as_deref(), Some("default"));
        assert_eq!(path.resource, "deployments");
        assert_eq!(path.name.as_deref(), Some("web"));
        assert_eq!(path.subresource.as_deref(), Some("scale"));
        let status =
            split_path("/api/v1/namespaces/team-a/status", &namespaced).expect("namespace status");
        assert_eq!(status.namespace, None);
        assert_eq!(status.resource, "namespaces");
        assert_eq!(status.name.as_deref(), Some("team-a"));
        assert_eq!(status.subresource.as_deref(), Some("status"));
        let proxy = split_path(
            "/api/v1/namespaces/default/services/web:8001/proxy/metrics/x",
            &namespaced,
        )
        .expect("proxy");
        assert_eq!(proxy.name.as_deref(), Some("web:8001"));
        assert_eq!(proxy.rest, "metrics/x");
        assert!(split_path("/api/v1", &namespaced).is_none());
        assert!(split_path("/api/v1/pods/a/status/extra", &namespaced).is_none());
    }

    #[test]
    fn decodes_selectors_in_queries() {
        let query = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctrack+in+%28canary%29&watch=1&limit=5",
        ));
        assert_eq!(
            query.get("labelSelector"),
            Some("app=web,track in (canary)")
        );
        assert!(query.flag("watch"));
        assert_eq!(query.integer("limit").expect("integer"), Some(5));
        assert!(Query::parse(Some("limit=x")).integer("limit").is_err());
        assert_eq!(percent_decode("100%"), "100%");
    }
}
