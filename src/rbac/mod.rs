//! The least-privilege permissions psctl and the Helm it drives need in one environment, as a
//! namespaced Role (and, for a subject, its RoleBinding): pure functions from the environment and
//! the kinds its charts render to the rules, and the YAML `psctl rbac` prints. Every rule names
//! the code that needs it; `docs/rbac.md` explains them.
//!
//! No I/O here except reading chart templates in [`chart_kinds`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::error::{Classify, ExitStatus};
use serde_json::{Value, json};

/// The name of the Role and RoleBinding.
pub const ROLE_NAME: &str = "psctl";

/// Verbs Helm needs on every kind a chart renders (install, upgrade with server-side apply,
/// rollback, uninstall, and reading the live objects).
const HELM_VERBS: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// One rule, with why psctl needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// API groups.
    pub api_groups: Vec<String>,
    /// Resources (`resource` or `resource/subresource`).
    pub resources: Vec<String>,
    /// Object names the rule is limited to (empty: any).
    pub resource_names: Vec<String>,
    /// Verbs, in Kubernetes' usual order.
    pub verbs: Vec<String>,
    /// Who needs it, for the comment above the rule.
    pub why: String,
}

/// Who the RoleBinding binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Subject {
    /// `system:serviceaccount:NS:NAME`.
    ServiceAccount {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// `User:NAME`.
    User(String),
}

/// Why a subject or a chart cannot be turned into rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RbacError {
    /// The subject is neither form.
    #[error("`{0}` is not a subject: give `system:serviceaccount:NAMESPACE:NAME` or `User:NAME`")]
    Subject(String),
    /// A chart renders a kind psctl does not know the resource of.
    #[error(
        "chart `{chart}` renders kind `{kind}`, whose API group and resource psctl does not know"
    )]
    UnknownKind {
        /// The chart.
        chart: String,
        /// The kind.
        kind: String,
    },
    /// A chart template cannot be read.
    #[error("cannot read the templates of chart `{chart}`: {reason}")]
    Chart {
        /// The chart.
        chart: String,
        /// The I/O error.
        reason: String,
    },
}

impl Classify for RbacError {
    fn exit_status(&self) -> ExitStatus {
        ExitStatus::Usage
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Self::UnknownKind { .. } => vec![
                "add the kind to `resource_of` in src/rbac/mod.rs, with its API group and resource"
                    .to_owned(),
            ],
            _ => Vec::new(),
        }
    }
}

impl Subject {
    /// Parses `system:serviceaccount:NS:NAME` or `User:NAME`.
    pub fn parse(text: &str) -> Result<Self, RbacError> {
        let refuse = || RbacError::Subject(text.to_owned());
        if let Some(rest) = text.strip_prefix("system:serviceaccount:") {
            let (namespace, name) = rest.split_once(':').ok_or_else(refuse)?;
            if namespace.is_empty() || name.is_empty() || name.contains(':') {
                return Err(refuse());
            }
            return Ok(Self::ServiceAccount {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        }
        match text.strip_prefix("User:") {
            Some(name) if !name.is_empty() => Ok(Self::User(name.to_owned())),
            _ => Err(refuse()),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::ServiceAccount { namespace, name } => {
                json!({ "kind": "ServiceAccount", "name": name, "namespace": namespace })
            }
            Self::User(name) => {
                json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name })
            }
        }
    }
}

/// The API group and resource of a kind a chart may render.
fn resource_of(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "ConfigMap" => ("", "configmaps"),
        "Secret" => ("", "secrets"),
        "Service" => ("", "services"),
        "ServiceAccount" => ("", "serviceaccounts"),
        "Deployment" => ("apps", "deployments"),
        "StatefulSet" => ("apps", "statefulsets"),
        "Job" => ("batch", "jobs"),
        "CronJob" => ("batch", "cronjobs"),
        "HorizontalPodAutoscaler" => ("autoscaling", "horizontalpodautoscalers"),
        "PodDisruptionBudget" => ("policy", "poddisruptionbudgets"),
        "NetworkPolicy" => ("networking.k8s.io", "networkpolicies"),
        "Ingress" => ("networking.k8s.io", "ingresses"),
        "ServiceMonitor" => ("monitoring.coreos.com", "servicemonitors"),
        "PrometheusRule" => ("monitoring.coreos.com", "prometheusrules"),
        _ => return None,
    })
}

/// The kinds a chart's templates declare (`kind:` at the start of a line), whether or not a
/// condition renders them: the Role must cover every values combination.
pub fn chart_kinds(chart: &Path) -> Result<BTreeSet<String>, RbacError> {
    let failed = |reason: String| RbacError::Chart {
        chart: chart.display().to_string(),
        reason,
    };
    let dir = chart.join("templates");
    let mut kinds = BTreeSet::new();
    let entries =
        std::fs::read_dir(&dir).map_err(|error| failed(format!("{}: {error}", dir.display())))?;
    for entry in entries {
        let path = entry.map_err(|error| failed(error.to_string()))?.path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|error| failed(format!("{}: {error}", path.display())))?;
        kinds.extend(kinds_in(&text));
    }
    Ok(kinds)
}

/// The `kind:` values of one template's top-level objects.
pub fn kinds_in(template: &str) -> BTreeSet<String> {
    template
        .lines()
        .filter_map(|line| line.strip_prefix("kind:"))
        .map(|kind| kind.trim().trim_matches('"').to_owned())
        .filter(|kind| !kind.is_empty() && !kind.contains("{{"))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str], why: &str) -> Rule {
    Rule {
        api_groups: strings(groups),
        resources: strings(resources),
        resource_names: strings(names),
        verbs: strings(verbs),
        why: why.to_owned(),
    }
}

/// The rules psctl (from what it calls: `src/lock`, `src/rollout`, `src/commands`, `src/smoke`,
/// `src/helm`) and Helm (on `chart_kinds`: chart directory name → kinds it renders) need.
pub fn required_rules(
    chart_kinds: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<Rule>, RbacError> {
    let mut rules = vec![
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[],
            &["create"],
            "the deploy lock (src/lock): every mutating command creates the Lease psctl-deploy",
        ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["psctl-deploy"],
            &["get", "update", "delete"],
            "the deploy lock: read, renew, take over when expired, release; canary status reads the holder",
        ),
        rule(
            &[""],
            &["secrets"],
            &[],
            &["get", "list", "create", "update", "patch", "delete"],
            "Helm's release storage (sh.helm.release.v1.*: history, rollback, --unstick), the runtime Secret (secrets apply/status, deploy preflight)",
        ),
        rule(
            &[""],
            &["configmaps"],
            &[],
            &["get", "list", "create", "update", "patch", "delete"],
            "canary and playbook run state (psctl-canary-*, psctl-run-*)",
        ),
        rule(
            &["apps"],
            &["deployments"],
            &[],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
            "rollout tracking (watch), kill-switch (patch), rollback --undo (update), canary Deployment (create, delete)",
        ),
        rule(
            &["apps"],
            &["deployments/scale"],
            &[],
            &["get", "update", "patch"],
            "canary steps scale the canary and stable Deployments",
        ),
        rule(
            &["apps"],
            &["replicasets"],
            &[],
            &["get", "list", "watch"],
            "rollout tracking, smoke checks and rollback --undo read the ReplicaSet history",
        ),
        rule(
            &[""],
            &["pods"],
            &[],
            &["get", "list", "watch"],
            "rollout diagnosis (CrashLoopBackOff, ImagePullBackOff...), smoke checks",
        ),
        rule(
            &[""],
            &["pods/log"],
            &[],
            &["get"],
            "the last log lines of a failing pod",
        ),
        rule(
            &[""],
            &["pods/proxy", "services/proxy"],
            &[],
            &["get"],
            "metrics scraped through the API server's proxy (smoke, deploy verification)",
        ),
        rule(
            &[""],
            &["events"],
            &[],
            &["get", "list", "watch"],
            "events of a failing rollout",
        ),
        rule(
            &["events.k8s.io"],
            &["events"],
            &[],
            &["create", "patch"],
            "a Kubernetes Event for every audited change (src/events); a repeated one is patched into a series",
        ),
        rule(
            &["monitoring.coreos.com"],
            &["prometheusrules", "servicemonitors"],
            &[],
            &["list"],
            "smoke's monitoring checks find each component's ServiceMonitor and PrometheusRules",
        ),
        rule(
            &[""],
            &["namespaces"],
            &[],
            &["get"],
            "deploy preflight checks the environment's namespace (granted for this namespace only)",
        ),
    ];
    let mut helm: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for (chart, kinds) in chart_kinds {
        for kind in kinds {
            let (group, resource) = resource_of(kind).ok_or_else(|| RbacError::UnknownKind {
                chart: chart.clone(),
                kind: kind.clone(),
            })?;
            let entry = helm.entry(group).or_default();
            entry.0.insert(resource);
            entry.1.insert(chart.as_str());
        }
    }
    for (group, (resources, charts)) in helm {
        let resources: Vec<&str> = resources.into_iter().collect();
        let charts: Vec<&str> = charts.into_iter().collect();
        rules.push(rule(
            &[group],
            &resources,
            &[],
            HELM_VERBS,
            &format!(
                "Helm installs, upgrades, rolls back and uninstalls what chart(s) {} render",
                charts.join(", ")
            ),
        ));
    }
    Ok(rules)
}

/// One permission to check before changing anything: a verb on a resource (maybe
/// `resource/subresource`, maybe one named object) in the environment's namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Access {
    /// The verb.
    pub verb: String,
    /// The API group.
    pub group: String,
    /// The resource plural.
    pub resource: String,
    /// The subresource, empty if none.
    pub subresource: String,
    /// The object's name, empty for any.
    pub name: String,
}

impl std::fmt::Display for Access {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} {}", self.verb, self.resource)?;
        if !self.subresource.is_empty() {
            write!(formatter, "/{}", self.subresource)?;
        }
        if !self.group.is_empty() {
            write!(formatter, ".{}", self.group)?;
        }
        if !self.name.is_empty() {
            write!(formatter, " named `{}`", self.name)?;
        }
        Ok(())
    }
}

/// Every (verb, resource, name) the rules grant, one check each, sorted and without repeats.
pub fn accesses(rules: &[Rule]) -> Vec<Access> {
    let mut out = BTreeSet::new();
    for rule in rules {
        let names: Vec<&str> = if rule.resource_names.is_empty() {
            vec![""]
        } else {
            rule.resource_names.iter().map(String::as_str).collect()
        };
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
                for verb in &rule.verbs {
                    for name in &names {
                        out.insert(Access {
                            verb: verb.clone(),
                            group: group.clone(),
                            resource: resource.to_owned(),
                            subresource: subresource.to_owned(),
                            name: (*name).to_owned(),
                        });
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The refusal when permissions are missing: one line per verb and resource.
pub fn refusal(namespace: &str, missing: &[Access]) -> String {
    let mut text = format!(
        "missing permissions in namespace `{namespace}`; nothing was changed. This identity cannot:"
    );
    for access in missing {
        text.push_str(&format!("\n  {access}"));
    }
    text
}

/// The rules for an environment: psctl's own and Helm's on the kinds of every component's chart
/// (keyed by the chart directory's name).
pub fn environment_rules(
    environment: &crate::settings::Environment,
) -> Result<Vec<Rule>, RbacError> {
    let mut charts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for component in &environment.components {
        let name = component
            .chart
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| component.chart.display().to_string());
        charts
            .entry(name)
            .or_default()
            .extend(chart_kinds(&component.chart)?);
    }
    required_rules(&charts)
}

/// What `psctl rbac` prints: the Role and, with a subject, the RoleBinding.
#[derive(Debug, Clone, Serialize)]
pub struct Permissions {
    /// The Role object.
    pub role: Value,
    /// The RoleBinding object, when a subject was given.
    #[serde(rename = "roleBinding", skip_serializing_if = "Option::is_none")]
    pub role_binding: Option<Value>,
    /// The rules with their reasons (for the YAML comments).
    #[serde(skip)]
    pub rules: Vec<Rule>,
}

/// Builds the objects for `namespace`.
pub fn permissions(namespace: &str, rules: Vec<Rule>, subject: Option<&Subject>) -> Permissions {
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": { "name": ROLE_NAME, "namespace": namespace },
        "rules": rules.iter().map(|rule| {
            let mut object = json!({ "apiGroups": rule.api_groups, "resources": rule.resources, "verbs": rule.verbs });
            if !rule.resource_names.is_empty() {
                object["resourceNames"] = json!(rule.resource_names);
            }
            object
        }).collect::<Vec<_>>(),
    });
    let role_binding = subject.map(|subject| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": { "name": ROLE_NAME, "namespace": namespace },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE_NAME },
            "subjects": [subject.to_json()],
        })
    });
    Permissions {
        role,
        role_binding,
        rules,
    }
}

fn quoted(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|item| format!("\"{item}\"")).collect();
    format!("[{}]", inner.join(", "))
}

/// The YAML for `kubectl apply -f -`, each rule preceded by a comment saying who needs it.
pub fn render_yaml(environment: &str, namespace: &str, permissions: &Permissions) -> String {
    let mut out = format!(
        "# Least-privilege permissions of psctl (and the Helm it drives) for environment `{environment}`.\n\
         # Generated by `psctl rbac`; see docs/rbac.md.\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: {ROLE_NAME}\n  namespace: {namespace}\nrules:\n"
    );
    for rule in &permissions.rules {
        out.push_str(&format!("# {}\n", rule.why));
        out.push_str(&format!("- apiGroups: {}\n", quoted(&rule.api_groups)));
        out.push_str(&format!("  resources: {}\n", quoted(&rule.resources)));
        if !rule.resource_names.is_empty() {
            out.push_str(&format!(
                "  resourceNames: {}\n",
                quoted(&rule.resource_names)
            ));
        }
        out.push_str(&format!("  verbs: {}\n", quoted(&rule.verbs)));
    }
    if let Some(binding) = &permissions.role_binding {
        let subject = &binding["subjects"][0];
        out.push_str(&format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {ROLE_NAME}\n  namespace: {namespace}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: {ROLE_NAME}\nsubjects:\n- kind: {}\n  name: \"{}\"\n",
            subject["kind"].as_str().unwrap_or_default(),
            subject["name"].as_str().unwrap_or_default(),
        ));
        if let Some(subject_namespace) = subject["namespace"].as_str() {
            out.push_str(&format!("  namespace: {subject_namespace}\n"));
        }
        if let Some(group) = subject["apiGroup"].as_str() {
            out.push_str(&format!("  apiGroup: {group}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository_charts() -> BTreeMap<String, BTreeSet<String>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        ["poller", "webhook-worker"]
            .iter()
            .map(|chart| {
                (
                    (*chart).to_owned(),
                    chart_kinds(&root.join("charts").join(chart)).expect("chart readable"),
                )
            })
            .collect()
    }

    #[test]
    fn subjects_parse_in_both_forms_and_nothing_else() {
        assert_eq!(
            Subject::parse("system:serviceaccount:ci:deployer"),
            Ok(Subject::ServiceAccount {
                namespace: "ci".to_owned(),
                name: "deployer".to_owned()
            })
        );
        assert_eq!(
            Subject::parse("User:alice"),
            Ok(Subject::User("alice".to_owned()))
        );
        for bad in [
            "alice",
            "User:",
            "system:serviceaccount:ci",
            "system:serviceaccount::x",
            "Group:ops",
        ] {
            assert!(Subject::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_declare_kinds_and_unknown_kinds_are_refused() {
        let kinds = kinds_in(
            "{{- if .Values.x }}\napiVersion: v1\nkind: Service\n---\nkind: \"ConfigMap\"\n  kind: nested\n",
        );
        assert_eq!(
            kinds,
            BTreeSet::from(["ConfigMap".to_owned(), "Service".to_owned()])
        );
        let charts = BTreeMap::from([("c".to_owned(), BTreeSet::from(["Widget".to_owned()]))]);
        assert_eq!(
            required_rules(&charts),
            Err(RbacError::UnknownKind {
                chart: "c".to_owned(),
                kind: "Widget".to_owned()
            })
        );
    }

    #[test]
    fn output_for_the_repository_charts_is_pinned() {
        let rules = required_rules(&repository_charts()).expect("known kinds");
        let subject = Subject::parse("system:serviceaccount:ci:psctl").expect("subject");
        let permissions = permissions("default", rules, Some(&subject));
        let yaml = render_yaml("sandbox", "default", &permissions);
        // What is printed parses back to the objects built, so comments never change meaning.
        let documents: Vec<Value> = crate::yaml::Deserializer::from_str(&yaml)
            .map(|document| Value::deserialize(document).expect("valid YAML"))
            .collect();
        assert_eq!(documents[0], permissions.role);
        assert_eq!(Some(&documents[1]), permissions.role_binding.as_ref());
        insta::assert_snapshot!(yaml);
    }

    #[test]
    fn accesses_expand_rules_and_the_refusal_names_each() {
        let rules = vec![
            rule(
                &["coordination.k8s.io"],
                &["leases"],
                &["psctl-deploy"],
                &["get", "update"],
                "lock",
            ),
            rule(&["apps"], &["deployments/scale"], &[], &["patch"], "canary"),
            rule(
                &["apps"],
                &["deployments/scale"],
                &[],
                &["patch"],
                "repeated",
            ),
        ];
        let all = accesses(&rules);
        assert_eq!(all.len(), 3, "{all:?}");
        let texts: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            vec![
                "get leases.coordination.k8s.io named `psctl-deploy`",
                "patch deployments/scale.apps",
                "update leases.coordination.k8s.io named `psctl-deploy`",
            ]
        );
        let message = refusal("prod", &all[1..2]);
        assert_eq!(
            message,
            "missing permissions in namespace `prod`; nothing was changed. This identity cannot:\n  patch deployments/scale.apps"
        );
    }

    use serde::Deserialize as _;
}
