//! The kinds the server knows: the built-in core/apps/... resources and those defined at runtime
//! by CustomResourceDefinitions. Discovery documents and request routing both read this table.

use serde_json::{Value, json};

/// One servable resource of one group/version.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceInfo {
    /// API group; empty for core.
    pub group: String,
    /// Version served (each resource is served at exactly one version here).
    pub version: String,
    /// Plural, lower-case name used in paths.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind of one object.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// kubectl short names (`deploy`, `po`, ...).
    pub short_names: Vec<String>,
    /// Subresources served: `status`, `scale`, `log`, `proxy`.
    pub subresources: Vec<String>,
    /// Discovery categories (`all`).
    pub categories: Vec<String>,
    /// Whether the resource comes from a CRD (no strategic merge patch, free-form schema).
    pub custom: bool,
    /// Whether the resource only answers `create` (reviews: nothing is stored).
    pub create_only: bool,
}

impl ResourceInfo {
    fn builtin(
        (group, version, plural, kind): (&str, &str, &str, &str),
        namespaced: bool,
        short: &[&str],
        subresources: &[&str],
        all: bool,
    ) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_lowercase(),
            kind: kind.to_owned(),
            namespaced,
            short_names: short.iter().map(|name| (*name).to_owned()).collect(),
            subresources: subresources.iter().map(|name| (*name).to_owned()).collect(),
            categories: if all {
                vec!["all".to_owned()]
            } else {
                Vec::new()
            },
            custom: false,
            create_only: false,
        }
    }

    fn review(group: &str, plural: &str, kind: &str) -> Self {
        Self {
            create_only: true,
            ..Self::builtin((group, "v1", plural, kind), false, &[], &[], false)
        }
    }

    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether `name` is a served subresource.
    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|served| served == name)
    }

    /// The `APIResource` entries (the resource and its subresources) of a legacy discovery list.
    pub fn api_resources(&self) -> Vec<Value> {
        let verbs = if self.create_only {
            json!(["create"])
        } else {
            json!([
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ])
        };
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut out = vec![main];
        for sub in &self.subresources {
            let (kind, verbs, group, version) = match sub.as_str() {
                "status" => (
                    self.kind.clone(),
                    json!(["get", "patch", "update"]),
                    None,
                    None,
                ),
                "scale" => (
                    "Scale".to_owned(),
                    json!(["get", "patch", "update"]),
                    Some("autoscaling"),
                    Some("v1"),
                ),
                "log" => ("Pod".to_owned(), json!(["get"]), None, None),
                "token" => (
                    "TokenRequest".to_owned(),
                    json!(["create"]),
                    Some("authentication.k8s.io"),
                    Some("v1"),
                ),
                "proxy" => (
                    if self.kind == "Pod" {
                        "PodProxyOptions"
                    } else {
                        "ServiceProxyOptions"
                    }
                    .to_owned(),
                    json!(["create", "delete", "get", "patch", "update"]),
                    None,
                    None,
                ),
                _ => continue,
            };
            let mut entry = json!({
                "name": format!("{}/{sub}", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let (Some(group), Some(version)) = (group, version) {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            out.push(entry);
        }
        out
    }
}

/// The built-in resources, served from the start.
pub fn builtin() -> Vec<ResourceInfo> {
    use ResourceInfo as R;
    vec![
        R::builtin(
            ("", "v1", "pods", "Pod"),
            true,
            &["po"],
            &["status", "log", "proxy"],
            true,
        ),
        R::builtin(
            ("", "v1", "services", "Service"),
            true,
            &["svc"],
            &["status", "proxy"],
            true,
        ),
        R::builtin(
            ("", "v1", "endpoints", "Endpoints"),
            true,
            &["ep"],
            &[],
            false,
        ),
        R::builtin(("", "v1", "secrets", "Secret"), true, &[], &[], false),
        R::builtin(
            ("", "v1", "configmaps", "ConfigMap"),
            true,
            &["cm"],
            &[],
            false,
        ),
        R::builtin(("", "v1", "events", "Event"), true, &["ev"], &[], false),
        R::builtin(
            ("", "v1", "serviceaccounts", "ServiceAccount"),
            true,
            &["sa"],
            &["token"],
            false,
        ),
        R::builtin(
            ("", "v1", "namespaces", "Namespace"),
            false,
            &["ns"],
            &["status"],
            false,
        ),
        R::builtin(
            ("", "v1", "nodes", "Node"),
            false,
            &["no"],
            &["status"],
            false,
        ),
        R::builtin(
            ("apps", "v1", "deployments", "Deployment"),
            true,
            &["deploy"],
            &["status", "scale"],
            true,
        ),
        R::builtin(
            ("apps", "v1", "replicasets", "ReplicaSet"),
            true,
            &["rs"],
            &["status", "scale"],
            true,
        ),
        crate::event_versions::resource_info(),
        R::builtin(
            ("coordination.k8s.io", "v1", "leases", "Lease"),
            true,
            &[],
            &[],
            false,
        ),
        R::builtin(
            (
                "policy",
                "v1",
                "poddisruptionbudgets",
                "PodDisruptionBudget",
            ),
            true,
            &["pdb"],
            &["status"],
            false,
        ),
        R::builtin(
            (
                "autoscaling",
                "v2",
                "horizontalpodautoscalers",
                "HorizontalPodAutoscaler",
            ),
            true,
            &["hpa"],
            &["status"],
            true,
        ),
        R::builtin(
            (
                "networking.k8s.io",
                "v1",
                "networkpolicies",
                "NetworkPolicy",
            ),
            true,
            &["netpol"],
            &[],
            false,
        ),
        R::builtin(
            ("rbac.authorization.k8s.io", "v1", "roles", "Role"),
            true,
            &[],
            &[],
            false,
        ),
        R::builtin(
            (
                "rbac.authorization.k8s.io",
                "v1",
                "rolebindings",
                "RoleBinding",
            ),
            true,
            &[],
            &[],
            false,
        ),
        R::builtin(
            (
                "rbac.authorization.k8s.io",
                "v1",
                "clusterroles",
                "ClusterRole",
            ),
            false,
            &[],
            &[],
            false,
        ),
        R::builtin(
            (
                "rbac.authorization.k8s.io",
                "v1",
                "clusterrolebindings",
                "ClusterRoleBinding",
            ),
            false,
            &[],
            &[],
            false,
        ),
        R::review(
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
        ),
        R::review(
            "authorization.k8s.io",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
        ),
        R::review(
            "authentication.k8s.io",
            "selfsubjectreviews",
            "SelfSubjectReview",
        ),
        R::builtin(
            (
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
            ),
            false,
            &["crd", "crds"],
            &["status"],
            false,
        ),
    ]
}

/// The resource a CustomResourceDefinition object defines (its storage/served version), if the
/// object is well-formed.
pub fn from_crd(crd: &Value) -> Option<ResourceInfo> {
    let spec = crd.get("spec")?;
    let names = spec.get("names")?;
    let versions = spec.get("versions")?.as_array()?;
    let version = versions
        .iter()
        .find(|version| version.get("storage").and_then(Value::as_bool) == Some(true))
        .or_else(|| versions.first())?;
    let strings = |value: Option<&Value>| -> Vec<String> {
        value
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let kind = names.get("kind")?.as_str()?.to_owned();
    let mut subresources = Vec::new();
    if let Some(sub) = version.get("subresources") {
        if sub.get("status").is_some() {
            subresources.push("status".to_owned());
        }
        if sub.get("scale").is_some() {
            subresources.push("scale".to_owned());
        }
    }
    Some(ResourceInfo {
        group: spec.get("group")?.as_str()?.to_owned(),
        version: version.get("name")?.as_str()?.to_owned(),
        plural: names.get("plural")?.as_str()?.to_owned(),
        singular: names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| kind.to_lowercase()),
        kind,
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        short_names: strings(names.get("shortNames")),
        subresources,
        categories: strings(names.get("categories")),
        custom: true,
        create_only: false,
    })
}

/// The prometheus-operator CRDs registered at start (ServiceMonitor, PrometheusRule), with
/// schemas that accept anything: the sandbox stores them, it does not validate them.
pub fn preinstalled_crds() -> Vec<Value> {
    [("servicemonitors", "ServiceMonitor", "servicemonitor", "smon"), ("prometheusrules", "PrometheusRule", "prometheusrule", "promrule")]
        .iter()
        .map(|(plural, kind, singular, short)| {
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": { "name": format!("{plural}.monitoring.coreos.com") },
                "spec": {
                    "group": "monitoring.coreos.com",
                    "scope": "Namespaced",
                    "names": { "plural": plural, "singular": singular, "kind": kind, "listKind": format!("{kind}List"), "shortNames": [short], "categories": ["prometheus-operator"] },
                    "versions": [{
                        "name": "v1", "served": true, "storage": true,
                        "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } }
                    }]
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_defines_a_namespaced_resource_with_subresources() {
        let mut crd = preinstalled_crds().remove(0);
        crd["spec"]["versions"][0]["subresources"] = json!({ "status": {} });
        let info = from_crd(&crd).expect("well-formed CRD");
        assert_eq!(info.group, "monitoring.coreos.com");
        assert_eq!(info.plural, "servicemonitors");
        assert_eq!(info.kind, "ServiceMonitor");
        assert!(info.namespaced && info.custom);
        assert_eq!(info.subresources, vec!["status"]);
        assert_eq!(info.short_names, vec!["smon"]);
    }

    #[test]
    fn discovery_lists_scale_as_autoscaling_v1() {
        let deployments = builtin()
            .into_iter()
            .find(|info| info.plural == "deployments")
            .expect("built in");
        let entries = deployments.api_resources();
        let scale = entries
            .iter()
            .find(|entry| entry["name"] == "deployments/scale")
            .expect("scale listed");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(entries[0]["shortNames"], json!(["deploy"]));
    }
}
