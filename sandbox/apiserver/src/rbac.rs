//! Authorization as kube-apiserver's RBAC authorizer decides it: request attributes (verb,
//! group, resource, subresource, name, namespace, or a non-resource path), rules matched the way
//! `plugin/pkg/auth/authorizer/rbac` matches them (`*`, `resource/subresource`, `*/subresource`,
//! resourceNames, nonResourceURLs with a trailing `*`), bindings' subjects (User, Group,
//! ServiceAccount), ClusterRole aggregation, and the `system:masters` bypass. Also the bootstrap
//! policy the server starts with: `cluster-admin`, `admin`, `edit`, `view` and the discovery and
//! self-review roles, with Kubernetes' rule sets.
//!
//! Pure functions over JSON objects; [`crate::handlers::State`] supplies the stored bindings.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleRef, Subject};
use serde_json::{Value, json};

use crate::auth::{AUTHENTICATED_GROUP, MASTERS_GROUP, UNAUTHENTICATED_GROUP, UserInfo};
use crate::query::{Query, ResourcePath};
use crate::selector::LabelSelector;
use crate::status::ApiError;

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// What a request asks to do, as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// Who asks.
    pub user: UserInfo,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or the
    /// lower-case HTTP method for a non-resource path.
    pub verb: String,
    /// Whether the request addresses a resource (else a non-resource path).
    pub resource_request: bool,
    /// The request path (what nonResourceURLs match).
    pub path: String,
    /// Namespace (empty at cluster scope).
    pub namespace: String,
    /// API group (empty for core).
    pub api_group: String,
    /// Resource plural.
    pub resource: String,
    /// Subresource (`status`, `scale`, `log`, `proxy`, `token`), empty if none.
    pub subresource: String,
    /// Object name, empty if none.
    pub name: String,
}

impl Attributes {
    /// A non-resource request.
    pub fn non_resource(user: UserInfo, method: &str, path: &str) -> Self {
        Self {
            user,
            verb: method.to_ascii_lowercase(),
            resource_request: false,
            path: path.to_owned(),
            namespace: String::new(),
            api_group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            name: String::new(),
        }
    }

    /// A resource request, with the verb derived from the method as the real request-info
    /// resolver derives it (GET → get/list/watch, POST → create, PUT → update, PATCH → patch,
    /// DELETE → delete/deletecollection). A list or watch whose field selector pins
    /// `metadata.name` is authorized against that name, as on a real server.
    pub fn resource(
        user: UserInfo,
        method: &str,
        path: &str,
        target: &ResourcePath,
        query: &Query,
    ) -> Self {
        let mut name = target.name.clone().unwrap_or_default();
        let verb = match method {
            "GET" | "HEAD" if query.flag("watch") => "watch",
            "GET" | "HEAD" if name.is_empty() => "list",
            "GET" | "HEAD" => "get",
            "POST" => "create",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" if name.is_empty() => "deletecollection",
            "DELETE" => "delete",
            other => return Self::non_resource(user, other, path),
        };
        if matches!(verb, "list" | "watch")
            && let Some(selector) = query.get("fieldSelector")
            && let Some(pinned) = selector
                .strip_prefix("metadata.name=")
                .or_else(|| selector.strip_prefix("metadata.name=="))
            && !pinned.contains(',')
        {
            pinned.clone_into(&mut name);
        }
        // A namespace's own path is scoped to it: `admin` bound in `team` may read namespace `team`.
        let namespace = match (
            &target.namespace,
            target.group.as_str(),
            target.resource.as_str(),
        ) {
            (Some(namespace), _, _) => namespace.clone(),
            (None, "", "namespaces") => name.clone(),
            (None, _, _) => String::new(),
        };
        Self {
            user,
            verb: verb.to_owned(),
            resource_request: true,
            path: path.to_owned(),
            namespace,
            api_group: target.group.clone(),
            resource: target.resource.clone(),
            subresource: target.subresource.clone().unwrap_or_default(),
            name,
        }
    }

    /// The 403 the real server answers when no rule allows the request.
    pub fn forbidden(&self) -> ApiError {
        let user = &self.user.name;
        if !self.resource_request {
            return ApiError::forbidden(
                "",
                "",
                "",
                &format!(
                    "User \"{user}\" cannot {} path \"{}\"",
                    self.verb, self.path
                ),
            );
        }
        let resource = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace \"{}\"", self.namespace)
        };
        ApiError::forbidden(
            &self.api_group,
            &self.resource,
            &self.name,
            &format!(
                "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
                self.verb, self.api_group
            ),
        )
    }
}

fn contains(list: Option<&Vec<String>>, wanted: &str) -> bool {
    list.is_some_and(|items| items.iter().any(|item| item == "*" || item == wanted))
}

fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    rule.resources.iter().flatten().any(|resource| {
        resource == "*"
            || resource == combined
            || (!subresource.is_empty()
                && resource.len() == subresource.len() + 2
                && resource.starts_with("*/")
                && resource.ends_with(subresource))
    })
}

fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    match &rule.resource_names {
        None => true,
        Some(names) if names.is_empty() => true,
        Some(names) => names.iter().any(|allowed| allowed == name),
    }
}

fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().flatten().any(|url| {
        url == "*"
            || url == path
            || url
                .strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// Whether `rule` allows the request (kube-apiserver's `RuleAllows`).
pub fn rule_allows(attributes: &Attributes, rule: &PolicyRule) -> bool {
    let verb = rule
        .verbs
        .iter()
        .any(|verb| verb == "*" || *verb == attributes.verb);
    if !verb {
        return false;
    }
    if attributes.resource_request {
        let combined = if attributes.subresource.is_empty() {
            attributes.resource.clone()
        } else {
            format!("{}/{}", attributes.resource, attributes.subresource)
        };
        contains(rule.api_groups.as_ref(), &attributes.api_group)
            && resource_matches(rule, &combined, &attributes.subresource)
            && resource_name_matches(rule, &attributes.name)
    } else {
        non_resource_url_matches(rule, &attributes.path)
    }
}

/// Whether `subject` names `user`; ServiceAccount subjects without a namespace take the
/// binding's (`binding_namespace`, empty for ClusterRoleBindings).
pub fn applies_to(subject: &Subject, user: &UserInfo, binding_namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.name == subject.name,
        "Group" => user.in_group(&subject.name),
        "ServiceAccount" => {
            let namespace = subject
                .namespace
                .as_deref()
                .filter(|namespace| !namespace.is_empty())
                .unwrap_or(binding_namespace);
            !namespace.is_empty()
                && user.name == crate::auth::service_account_user(namespace, &subject.name)
        }
        _ => false,
    }
}

/// A binding as the resolver needs it (ClusterRoleBinding or RoleBinding).
#[derive(Debug, Clone)]
pub struct Binding {
    /// `ClusterRoleBinding` or `RoleBinding`.
    pub kind: &'static str,
    /// Name.
    pub name: String,
    /// Namespace (empty for ClusterRoleBindings).
    pub namespace: String,
    /// What it grants.
    pub role_ref: RoleRef,
    /// To whom.
    pub subjects: Vec<Subject>,
}

impl Binding {
    /// Reads a stored ClusterRoleBinding or RoleBinding; `None` if it is malformed.
    pub fn from_object(kind: &'static str, object: &Value) -> Option<Self> {
        let role_ref: RoleRef = serde_json::from_value(object.get("roleRef")?.clone()).ok()?;
        let subjects: Vec<Subject> = match object.get("subjects") {
            None | Some(Value::Null) => Vec::new(),
            Some(list) => serde_json::from_value(list.clone()).ok()?,
        };
        Some(Self {
            kind,
            name: object.pointer("/metadata/name")?.as_str()?.to_owned(),
            namespace: object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            role_ref,
            subjects,
        })
    }

    /// The subject of this binding that names `user`, if any.
    pub fn subject_for(&self, user: &UserInfo) -> Option<&Subject> {
        self.subjects
            .iter()
            .find(|subject| applies_to(subject, user, &self.namespace))
    }

    /// `ClusterRoleBinding "x" of ClusterRole "y" to Group "z"`, the real authorizer's wording.
    pub fn describe(&self, subject: &Subject) -> String {
        let binding = if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        };
        let who = match subject.kind.as_str() {
            "ServiceAccount" => {
                let namespace = subject.namespace.as_deref().unwrap_or(&self.namespace);
                format!("ServiceAccount \"{namespace}/{}\"", subject.name)
            }
            kind => format!("{kind} \"{}\"", subject.name),
        };
        format!(
            "{} \"{binding}\" of {} \"{}\" to {who}",
            self.kind, self.role_ref.kind, self.role_ref.name
        )
    }
}

/// Where the resolver reads roles from.
pub trait RoleSource {
    /// Every stored ClusterRole.
    fn cluster_roles(&self) -> Vec<Value>;
    /// A Role in a namespace.
    fn role(&self, namespace: &str, name: &str) -> Option<Value>;
    /// Every ClusterRoleBinding.
    fn cluster_role_bindings(&self) -> Vec<Value>;
    /// The RoleBindings of a namespace.
    fn role_bindings(&self, namespace: &str) -> Vec<Value>;
}

fn rules_of(object: &Value) -> Vec<PolicyRule> {
    object
        .get("rules")
        .and_then(|rules| serde_json::from_value(rules.clone()).ok())
        .unwrap_or_default()
}

fn selector_string(selector: &Value) -> String {
    let mut terms = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in labels {
            terms.push(format!("{key}={}", value.as_str().unwrap_or_default()));
        }
    }
    for expression in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expression["key"].as_str().unwrap_or_default();
        let values = expression["values"]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        terms.push(match expression["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "DoesNotExist" => format!("!{key}"),
            _ => key.to_owned(),
        });
    }
    terms.join(",")
}

/// The effective rules of a ClusterRole: its own, or, when it aggregates, the union of the
/// ClusterRoles its selectors pick (what the aggregation controller writes into `rules`).
fn cluster_role_rules(roles: &[Value], role: &Value, depth: usize) -> Vec<PolicyRule> {
    let Some(selectors) = role
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
    else {
        return rules_of(role);
    };
    if depth > 4 {
        return rules_of(role);
    }
    let name = role.pointer("/metadata/name");
    let mut rules = Vec::new();
    for candidate in roles {
        if candidate.pointer("/metadata/name") == name {
            continue;
        }
        let picked = selectors.iter().any(|selector| {
            LabelSelector::parse(&selector_string(selector))
                .is_ok_and(|parsed| parsed.matches(candidate))
        });
        if picked {
            for rule in cluster_role_rules(roles, candidate, depth + 1) {
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
    }
    rules
}

/// The rules a binding grants (none when its role does not exist, as the real resolver treats
/// a dangling reference).
fn binding_rules(source: &dyn RoleSource, roles: &[Value], binding: &Binding) -> Vec<PolicyRule> {
    match binding.role_ref.kind.as_str() {
        "ClusterRole" => roles
            .iter()
            .find(|role| {
                role.pointer("/metadata/name").and_then(Value::as_str)
                    == Some(binding.role_ref.name.as_str())
            })
            .map(|role| cluster_role_rules(roles, role, 0))
            .unwrap_or_default(),
        "Role" if !binding.namespace.is_empty() => source
            .role(&binding.namespace, &binding.role_ref.name)
            .map(|role| rules_of(&role))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Visits every (binding description, rule) that applies to `user` in `namespace`: the
/// ClusterRoleBindings first, then the namespace's RoleBindings. The visitor returns `false` to
/// stop.
fn visit_rules(
    source: &dyn RoleSource,
    user: &UserInfo,
    namespace: &str,
    visitor: &mut dyn FnMut(&str, &PolicyRule) -> bool,
) {
    let roles = source.cluster_roles();
    let mut bindings: Vec<Binding> = source
        .cluster_role_bindings()
        .iter()
        .filter_map(|object| Binding::from_object("ClusterRoleBinding", object))
        .collect();
    if !namespace.is_empty() {
        bindings.extend(
            source
                .role_bindings(namespace)
                .iter()
                .filter_map(|object| Binding::from_object("RoleBinding", object)),
        );
    }
    for binding in &bindings {
        let Some(subject) = binding.subject_for(user) else {
            continue;
        };
        let description = binding.describe(subject);
        for rule in binding_rules(source, &roles, binding) {
            if !visitor(&description, &rule) {
                return;
            }
        }
    }
}

/// An authorization decision and the reason the real server would give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// `RBAC: allowed by ...`, or empty.
    pub reason: String,
}

/// Decides a request: `system:masters` always may (the real server's privileged-group
/// authorizer runs before RBAC), everyone else needs a rule.
pub fn authorize(source: &dyn RoleSource, attributes: &Attributes) -> Decision {
    if attributes.user.in_group(MASTERS_GROUP) {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let mut reason = None;
    visit_rules(
        source,
        &attributes.user,
        &attributes.namespace,
        &mut |description, rule| {
            if rule_allows(attributes, rule) {
                reason = Some(format!("RBAC: allowed by {description}"));
                false
            } else {
                true
            }
        },
    );
    Decision {
        allowed: reason.is_some(),
        reason: reason.unwrap_or_default(),
    }
}

/// Every rule that applies to `user` in `namespace`, split into resource and non-resource rules
/// (the status of a SelfSubjectRulesReview).
pub fn rules_review(source: &dyn RoleSource, user: &UserInfo, namespace: &str) -> Value {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    visit_rules(source, user, namespace, &mut |_, rule| {
        if rule.resources.as_ref().is_some_and(|list| !list.is_empty()) {
            let mut entry = json!({
                "verbs": rule.verbs,
                "apiGroups": rule.api_groups.clone().unwrap_or_default(),
                "resources": rule.resources,
            });
            if let Some(names) = rule
                .resource_names
                .as_ref()
                .filter(|names| !names.is_empty())
            {
                entry["resourceNames"] = json!(names);
            }
            resource_rules.push(entry);
        }
        if let Some(urls) = rule
            .non_resource_urls
            .as_ref()
            .filter(|urls| !urls.is_empty())
        {
            non_resource_rules.push(json!({ "verbs": rule.verbs, "nonResourceURLs": urls }));
        }
        true
    });
    json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    })
}

/// Checks a Role or ClusterRole's rules and a binding's roleRef and subjects the way the real
/// validation does (the parts clients trip over).
pub fn validate(kind: &str, object: &Value) -> Result<(), ApiError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let invalid = |field: &str, problem: &str| ApiError::invalid(kind, GROUP, name, field, problem);
    match kind {
        "Role" | "ClusterRole" => {
            let rules: Vec<PolicyRule> = match object.get("rules") {
                None | Some(Value::Null) => Vec::new(),
                Some(rules) => serde_json::from_value(rules.clone())
                    .map_err(|error| invalid("rules", &format!("Invalid value: {error}")))?,
            };
            for (index, rule) in rules.iter().enumerate() {
                if rule.verbs.is_empty() {
                    return Err(invalid(
                        &format!("rules[{index}].verbs"),
                        "Required value: verbs must contain at least one value",
                    ));
                }
                let urls = rule
                    .non_resource_urls
                    .as_ref()
                    .is_some_and(|u| !u.is_empty());
                let resources = rule.resources.as_ref().is_some_and(|r| !r.is_empty());
                if urls && kind == "Role" {
                    return Err(invalid(
                        &format!("rules[{index}].nonResourceURLs"),
                        "Invalid value: namespaced rules cannot apply to non-resource URLs",
                    ));
                }
                if urls && resources {
                    return Err(invalid(
                        &format!("rules[{index}].nonResourceURLs"),
                        "Invalid value: rules cannot apply to both regular resources and non-resource URLs",
                    ));
                }
                if !urls && rule.api_groups.as_ref().is_none_or(Vec::is_empty) {
                    return Err(invalid(
                        &format!("rules[{index}].apiGroups"),
                        "Required value: resource rules must supply at least one api group",
                    ));
                }
                if !urls && !resources {
                    return Err(invalid(
                        &format!("rules[{index}].resources"),
                        "Required value: resource rules must supply at least one resource",
                    ));
                }
            }
            Ok(())
        }
        _ => {
            let role_ref: RoleRef = object
                .get("roleRef")
                .and_then(|value| serde_json::from_value(value.clone()).ok())
                .ok_or_else(|| invalid("roleRef", "Required value"))?;
            let allowed_kinds: &[&str] = if kind == "RoleBinding" {
                &["Role", "ClusterRole"]
            } else {
                &["ClusterRole"]
            };
            if !allowed_kinds.contains(&role_ref.kind.as_str()) {
                return Err(invalid(
                    "roleRef.kind",
                    &format!(
                        "Unsupported value: \"{}\": supported values: {}",
                        role_ref.kind,
                        allowed_kinds
                            .iter()
                            .map(|kind| format!("\"{kind}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if role_ref.name.is_empty() {
                return Err(invalid("roleRef.name", "Required value"));
            }
            let subjects: Vec<Subject> = match object.get("subjects") {
                None | Some(Value::Null) => Vec::new(),
                Some(list) => serde_json::from_value(list.clone())
                    .map_err(|error| invalid("subjects", &format!("Invalid value: {error}")))?,
            };
            for (index, subject) in subjects.iter().enumerate() {
                if !matches!(subject.kind.as_str(), "User" | "Group" | "ServiceAccount") {
                    return Err(invalid(
                        &format!("subjects[{index}].kind"),
                        &format!(
                            "Unsupported value: \"{}\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
                            subject.kind
                        ),
                    ));
                }
                if subject.name.is_empty() {
                    return Err(invalid(
                        &format!("subjects[{index}].name"),
                        "Required value",
                    ));
                }
                if subject.kind == "ServiceAccount"
                    && kind == "ClusterRoleBinding"
                    && subject.namespace.as_deref().is_none_or(str::is_empty)
                {
                    return Err(invalid(
                        &format!("subjects[{index}].namespace"),
                        "Required value",
                    ));
                }
            }
            Ok(())
        }
    }
}

/// Whether a binding update changes its roleRef, which the real server refuses.
pub fn role_ref_changed(old: &Value, new: &Value) -> bool {
    new.get("roleRef").is_some() && old.get("roleRef") != new.get("roleRef")
}

// ---------------------------------------------------------------------------------------------
// Bootstrap policy: the rule sets of Kubernetes 1.33's default ClusterRoles, including the
// `resource.k8s.io` claim rules that 1.33 adds to `edit` and `view` (there, behind the
// DynamicResourceAllocation feature gate).

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({ "apiGroups": groups, "resources": resources, "verbs": verbs })
}

fn url_rule(verbs: &[&str], urls: &[&str]) -> Value {
    json!({ "nonResourceURLs": urls, "verbs": verbs })
}

fn aggregate_to_admin() -> Vec<Value> {
    vec![
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
        ),
        rule(READ_WRITE, &[GROUP], &["rolebindings", "roles"]),
    ]
}

fn aggregate_to_edit() -> Vec<Value> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
        ),
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
        rule(
            WRITE,
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
            ],
        ),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(
            WRITE,
            &[""],
            &[
                "configmaps",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(WRITE, &["", "events.k8s.io"], &["events"]),
        rule(
            WRITE,
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
        rule(
            WRITE,
            &["extensions"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "ingresses",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
            ],
        ),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(
            WRITE,
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
        ),
        rule(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
        rule(
            WRITE,
            &["resource.k8s.io"],
            &["resourceclaims", "resourceclaimtemplates"],
        ),
    ]
}

fn aggregate_to_view() -> Vec<Value> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
            ],
        ),
        rule(
            READ,
            &[""],
            &[
                "bindings",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
        ),
        rule(READ, &[""], &["namespaces"]),
        rule(READ, &["", "events.k8s.io"], &["events"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
        ),
        rule(
            READ,
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        rule(
            READ,
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
        ),
        rule(
            READ,
            &["extensions"],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
            ],
        ),
        rule(
            READ,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(
            READ,
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
        ),
        rule(
            READ,
            &["resource.k8s.io"],
            &[
                "resourceclaims",
                "resourceclaims/status",
                "resourceclaimtemplates",
            ],
        ),
    ]
}

fn bootstrap_metadata(name: &str, aggregate_to: Option<&str>) -> Value {
    let mut labels = json!({ "kubernetes.io/bootstrapping": "rbac-defaults" });
    if let Some(target) = aggregate_to {
        labels[format!("rbac.authorization.k8s.io/aggregate-to-{target}")] = json!("true");
    }
    json!({
        "name": name,
        "labels": labels,
        "annotations": { "rbac.authorization.kubernetes.io/autoupdate": "true" },
    })
}

fn cluster_role(name: &str, aggregate_to: Option<&str>, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": bootstrap_metadata(name, aggregate_to),
        "rules": rules,
    })
}

fn aggregated_role(name: &str, aggregate_to: Option<&str>, from: &str, rules: Vec<Value>) -> Value {
    let mut role = cluster_role(name, aggregate_to, rules);
    role["aggregationRule"] = json!({
        "clusterRoleSelectors": [{ "matchLabels": { format!("rbac.authorization.k8s.io/aggregate-to-{from}"): "true" } }]
    });
    role
}

/// The ClusterRoles the server starts with. `admin`, `edit` and `view` aggregate as on a real
/// cluster; their stored `rules` are filled with the union, as the aggregation controller would.
pub fn bootstrap_cluster_roles() -> Vec<Value> {
    let view = aggregate_to_view();
    let edit: Vec<Value> = aggregate_to_edit()
        .into_iter()
        .chain(view.clone())
        .collect();
    let admin: Vec<Value> = aggregate_to_admin()
        .into_iter()
        .chain(edit.clone())
        .collect();
    vec![
        cluster_role(
            "cluster-admin",
            None,
            vec![rule(&["*"], &["*"], &["*"]), url_rule(&["*"], &["*"])],
        ),
        cluster_role(
            "system:discovery",
            None,
            vec![url_rule(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            None,
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            None,
            vec![url_rule(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        cluster_role(
            "system:aggregate-to-admin",
            Some("admin"),
            aggregate_to_admin(),
        ),
        cluster_role(
            "system:aggregate-to-edit",
            Some("edit"),
            aggregate_to_edit(),
        ),
        cluster_role(
            "system:aggregate-to-view",
            Some("view"),
            aggregate_to_view(),
        ),
        aggregated_role("admin", None, "admin", admin),
        aggregated_role("edit", Some("admin"), "edit", edit),
        aggregated_role("view", Some("edit"), "view", view),
    ]
}

/// The ClusterRoleBindings the server starts with.
pub fn bootstrap_cluster_role_bindings() -> Vec<Value> {
    let binding = |name: &str, groups: &[&str]| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": bootstrap_metadata(name, None),
            "roleRef": { "apiGroup": GROUP, "kind": "ClusterRole", "name": name },
            "subjects": groups.iter().map(|group| json!({ "apiGroup": GROUP, "kind": "Group", "name": group })).collect::<Vec<_>>(),
        })
    };
    vec![
        binding("cluster-admin", &[MASTERS_GROUP]),
        binding("system:discovery", &[AUTHENTICATED_GROUP]),
        binding("system:basic-user", &[AUTHENTICATED_GROUP]),
        binding(
            "system:public-info-viewer",
            &[AUTHENTICATED_GROUP, UNAUTHENTICATED_GROUP],
        ),
    ]
}

/// Reads a ClusterRole for tests and tools.
pub fn parse_cluster_role(object: &Value) -> Option<ClusterRole> {
    serde_json::from_value(object.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        roles: Vec<Value>,
        namespaced_roles: Vec<Value>,
        cluster_bindings: Vec<Value>,
        bindings: Vec<Value>,
    }

    impl RoleSource for Fixed {
        fn cluster_roles(&self) -> Vec<Value> {
            self.roles.clone()
        }
        fn role(&self, namespace: &str, name: &str) -> Option<Value> {
            self.namespaced_roles
                .iter()
                .find(|role| {
                    role["metadata"]["namespace"] == namespace && role["metadata"]["name"] == name
                })
                .cloned()
        }
        fn cluster_role_bindings(&self) -> Vec<Value> {
            self.cluster_bindings.clone()
        }
        fn role_bindings(&self, namespace: &str) -> Vec<Value> {
            self.bindings
                .iter()
                .filter(|binding| binding["metadata"]["namespace"] == namespace)
                .cloned()
                .collect()
        }
    }

    fn fixed(bindings: Vec<Value>, namespaced_roles: Vec<Value>) -> Fixed {
        Fixed {
            roles: bootstrap_cluster_roles(),
            namespaced_roles,
            cluster_bindings: bootstrap_cluster_role_bindings(),
            bindings,
        }
    }

    fn role_binding(namespace: &str, role_kind: &str, role: &str, subject: Value) -> Value {
        json!({
            "metadata": { "name": format!("{role}-binding"), "namespace": namespace },
            "roleRef": { "apiGroup": GROUP, "kind": role_kind, "name": role },
            "subjects": [subject],
        })
    }

    fn request(
        user: &UserInfo,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: &str,
    ) -> Attributes {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes {
            user: user.clone(),
            verb: verb.to_owned(),
            resource_request: true,
            path: String::new(),
            namespace: namespace.to_owned(),
            api_group: group.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            name: String::new(),
        }
    }

    fn policy(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: verbs.iter().map(|verb| (*verb).to_owned()).collect(),
            api_groups: Some(groups.iter().map(|group| (*group).to_owned()).collect()),
            resources: Some(
                resources
                    .iter()
                    .map(|resource| (*resource).to_owned())
                    .collect(),
            ),
            resource_names: (!names.is_empty())
                .then(|| names.iter().map(|name| (*name).to_owned()).collect()),
            non_resource_urls: None,
        }
    }

    #[test]
    fn rule_matching_follows_the_real_authorizer() {
        let user = UserInfo::service_account("team", "deployer", "u");
        let scale = request(&user, "update", "apps", "deployments/scale", "team");
        assert!(rule_allows(
            &scale,
            &policy(&["update"], &["apps"], &["deployments/scale"], &[])
        ));
        assert!(rule_allows(
            &scale,
            &policy(&["*"], &["apps"], &["*/scale"], &[])
        ));
        assert!(rule_allows(
            &scale,
            &policy(&["update"], &["*"], &["*"], &[])
        ));
        // A rule on the resource does not cover its subresources, nor the other way round.
        assert!(!rule_allows(
            &scale,
            &policy(&["update"], &["apps"], &["deployments"], &[])
        ));
        let main = request(&user, "update", "apps", "deployments", "team");
        assert!(!rule_allows(
            &main,
            &policy(&["update"], &["apps"], &["deployments/scale"], &[])
        ));
        assert!(!rule_allows(
            &main,
            &policy(&["update"], &["apps"], &["*/scale"], &[])
        ));
        assert!(!rule_allows(
            &main,
            &policy(&["update"], &[""], &["deployments"], &[])
        ));
        assert!(!rule_allows(
            &main,
            &policy(&["patch"], &["apps"], &["deployments"], &[])
        ));

        let mut named = request(&user, "get", "coordination.k8s.io", "leases", "team");
        named.name = "psctl-deploy".to_owned();
        let only = policy(
            &["get"],
            &["coordination.k8s.io"],
            &["leases"],
            &["psctl-deploy"],
        );
        assert!(rule_allows(&named, &only));
        named.name = "other".to_owned();
        assert!(!rule_allows(&named, &only));
        // resourceNames cannot authorize a create (it has no name) or a list.
        let create = request(&user, "create", "coordination.k8s.io", "leases", "team");
        assert!(!rule_allows(
            &create,
            &policy(
                &["create"],
                &["coordination.k8s.io"],
                &["leases"],
                &["psctl-deploy"]
            )
        ));

        let path = |path: &str| Attributes::non_resource(user.clone(), "GET", path);
        let discovery = PolicyRule {
            verbs: vec!["get".to_owned()],
            non_resource_urls: Some(vec!["/apis/*".to_owned(), "/version".to_owned()]),
            ..PolicyRule::default()
        };
        assert!(rule_allows(&path("/apis/apps/v1"), &discovery));
        assert!(rule_allows(&path("/version"), &discovery));
        assert!(!rule_allows(&path("/version/x"), &discovery));
        assert!(!rule_allows(&path("/api"), &discovery));
    }

    #[test]
    fn bootstrap_roles_have_the_real_gaps() {
        let view_sa = json!({ "kind": "ServiceAccount", "name": "viewer", "namespace": "team" });
        let edit_sa = json!({ "kind": "ServiceAccount", "name": "editor" });
        let source = fixed(
            vec![
                role_binding("team", "ClusterRole", "view", view_sa),
                role_binding("team", "ClusterRole", "edit", edit_sa),
            ],
            vec![],
        );
        let viewer = UserInfo::service_account("team", "viewer", "1");
        let editor = UserInfo::service_account("team", "editor", "2");
        let allowed =
            |user: &UserInfo, verb: &str, group: &str, resource: &str, namespace: &str| {
                authorize(&source, &request(user, verb, group, resource, namespace)).allowed
            };
        assert!(allowed(&viewer, "list", "apps", "deployments", "team"));
        assert!(
            !allowed(&viewer, "get", "", "secrets", "team"),
            "view has no secrets"
        );
        assert!(!allowed(
            &viewer,
            "create",
            "coordination.k8s.io",
            "leases",
            "team"
        ));
        assert!(
            !allowed(&viewer, "list", "apps", "deployments", "other"),
            "bound in team only"
        );
        assert!(
            allowed(&editor, "get", "", "secrets", "team"),
            "a subject without namespace takes the binding's"
        );
        assert!(allowed(
            &editor,
            "patch",
            "apps",
            "deployments/scale",
            "team"
        ));
        assert!(allowed(
            &editor,
            "create",
            "coordination.k8s.io",
            "leases",
            "team"
        ));
        assert!(
            !allowed(&editor, "update", "apps", "deployments/status", "team"),
            "edit has no status writes"
        );
        assert!(
            !allowed(&editor, "create", GROUP, "roles", "team"),
            "edit cannot grant"
        );
        assert!(!allowed(&editor, "list", "", "nodes", ""));
        let admin = UserInfo::admin();
        assert!(allowed(&admin, "delete", "", "nodes", ""));
        // Discovery and self-review for anyone authenticated.
        assert!(
            authorize(
                &source,
                &Attributes::non_resource(viewer.clone(), "GET", "/apis/apps/v1")
            )
            .allowed
        );
        assert!(allowed(
            &viewer,
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            ""
        ));
        assert!(
            !authorize(
                &source,
                &Attributes::non_resource(UserInfo::anonymous(), "GET", "/api")
            )
            .allowed
        );
        assert!(
            authorize(
                &source,
                &Attributes::non_resource(UserInfo::anonymous(), "GET", "/healthz")
            )
            .allowed
        );
    }

    #[test]
    fn roles_groups_users_and_the_allow_reason() {
        let role = json!({
            "metadata": { "name": "lease-taker", "namespace": "team" },
            "rules": [{ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"] }],
        });
        let source = fixed(
            vec![
                role_binding(
                    "team",
                    "Role",
                    "lease-taker",
                    json!({ "kind": "Group", "name": "ops" }),
                ),
                role_binding(
                    "team",
                    "Role",
                    "missing",
                    json!({ "kind": "User", "name": "alice" }),
                ),
            ],
            vec![role],
        );
        let mut alice = UserInfo::service_account("x", "y", "z");
        alice.name = "alice".to_owned();
        let create = request(&alice, "create", "coordination.k8s.io", "leases", "team");
        assert!(
            !authorize(&source, &create).allowed,
            "a dangling roleRef grants nothing"
        );
        alice.groups.push("ops".to_owned());
        let decision = authorize(
            &source,
            &request(&alice, "create", "coordination.k8s.io", "leases", "team"),
        );
        assert!(decision.allowed);
        assert_eq!(
            decision.reason,
            "RBAC: allowed by RoleBinding \"team/lease-taker-binding\" of Role \"lease-taker\" to Group \"ops\""
        );
    }

    #[test]
    fn forbidden_messages_have_the_real_shape() {
        let user = UserInfo::service_account("team", "editor", "1");
        let create = request(&user, "create", "coordination.k8s.io", "leases", "team");
        let status = create.forbidden().to_status();
        assert_eq!(status["code"], 403);
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(
            status["message"],
            "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:team:editor\" cannot create resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"team\""
        );
        assert_eq!(
            status["details"],
            json!({ "group": "coordination.k8s.io", "kind": "leases" })
        );
        let mut get = request(&user, "get", "", "secrets", "team");
        get.name = "db".to_owned();
        assert_eq!(
            get.forbidden().message,
            "secrets \"db\" is forbidden: User \"system:serviceaccount:team:editor\" cannot get resource \"secrets\" in API group \"\" in the namespace \"team\""
        );
        let nodes = request(&user, "list", "", "nodes", "");
        assert!(nodes.forbidden().message.ends_with("at the cluster scope"));
        let path = Attributes::non_resource(user, "GET", "/metrics");
        assert_eq!(
            path.forbidden().message,
            "forbidden: User \"system:serviceaccount:team:editor\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn validation_refuses_what_the_real_server_refuses() {
        assert!(validate("ClusterRole", &bootstrap_cluster_roles()[0]).is_ok());
        let no_group = json!({ "metadata": { "name": "r" }, "rules": [{ "resources": ["pods"], "verbs": ["get"] }] });
        assert_eq!(
            validate("Role", &no_group).map_err(|error| error.code),
            Err(422)
        );
        let url_in_role = json!({ "metadata": { "name": "r" }, "rules": [{ "nonResourceURLs": ["/x"], "verbs": ["get"] }] });
        assert!(validate("Role", &url_in_role).is_err());
        assert!(validate("ClusterRole", &url_in_role).is_ok());
        let role_in_crb = json!({ "metadata": { "name": "b" }, "roleRef": { "apiGroup": GROUP, "kind": "Role", "name": "r" } });
        assert!(validate("ClusterRoleBinding", &role_in_crb).is_err());
        assert!(validate("RoleBinding", &role_in_crb).is_ok());
        assert!(validate("RoleBinding", &json!({ "metadata": { "name": "b" } })).is_err());
    }
}
