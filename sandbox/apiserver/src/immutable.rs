//! The fields kube-apiserver's update validation refuses to change once an object exists, with
//! its 422 `Invalid` answers (`pkg/apis/apps/validation`, `pkg/apis/batch/validation`,
//! `pkg/apis/core/validation`):
//!
//! - Deployment, ReplicaSet, DaemonSet: `spec.selector` (`field is immutable`). A chart whose
//!   upgrade changes a selector label fails on a real cluster; here too.
//! - StatefulSet: any `spec` field but `replicas`, `ordinals`, `template`, `updateStrategy`,
//!   `persistentVolumeClaimRetentionPolicy` and `minReadySeconds` (`Forbidden`).
//! - Job: `spec.selector` and `spec.template`.
//! - Secret: `type`, always; ConfigMap and Secret marked `immutable: true`: `data` (and a
//!   ConfigMap's `binaryData`) and the mark itself (`Forbidden`).
//! - Service: a set `spec.clusterIP` (`spec.clusterIPs[0]`, `may not change once set`), unless
//!   the Service is or becomes `ExternalName`.
//!
//! Values are compared as the real server's semantic equality does: an empty list or map equals
//! an absent one. The rendered bad value follows Go's `%#v` for the selector and the strings the
//! real messages show; a Job's template is rendered as JSON (the real message prints the whole
//! Go struct). Pods are not covered: the sandbox's kubelet binds a pod by patching
//! `spec.nodeName`, which the real server allows only through `pods/binding`.

use serde_json::Value;

use crate::status::ApiError;

/// One refused field, as a `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    field: String,
    reason: &'static str,
    /// What follows the field in the message: `Invalid value: …: field is immutable`.
    message: String,
}

impl Problem {
    fn invalid(field: &str, value: String, detail: &str) -> Self {
        Self {
            field: field.to_owned(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {value}: {detail}"),
        }
    }

    fn forbidden(field: &str, detail: &str) -> Self {
        Self {
            field: field.to_owned(),
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {detail}"),
        }
    }
}

/// Checks a replacement of `old` by `new` (both with defaults applied) of kind `kind` in API
/// group `group`; the 422 the real server answers when it changes an immutable field.
pub fn check(kind: &str, group: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    let problems = problems(kind, group, old, new);
    if problems.is_empty() {
        return Ok(());
    }
    Err(refusal(kind, group, name_of(new), &problems))
}

fn problems(kind: &str, group: &str, old: &Value, new: &Value) -> Vec<Problem> {
    let changed = |pointer: &str| !same(old.pointer(pointer), new.pointer(pointer));
    let mut problems = Vec::new();
    match (group, kind) {
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") | ("batch", "Job") => {
            if changed("/spec/selector") {
                problems.push(Problem::invalid(
                    "spec.selector",
                    go_label_selector(new.pointer("/spec/selector")),
                    "field is immutable",
                ));
            }
            if kind == "Job" && changed("/spec/template") {
                problems.push(Problem::invalid(
                    "spec.template",
                    new.pointer("/spec/template")
                        .map_or_else(|| "null".to_owned(), Value::to_string),
                    "field is immutable",
                ));
            }
        }
        ("apps", "StatefulSet") => {
            const UPDATABLE: [&str; 6] = [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ];
            let rest = |object: &Value| {
                let mut spec = object.get("spec").cloned().unwrap_or(Value::Null);
                if let Some(map) = spec.as_object_mut() {
                    map.retain(|key, _| !UPDATABLE.contains(&key.as_str()));
                }
                spec
            };
            if !same(Some(&rest(old)), Some(&rest(new))) {
                problems.push(Problem::forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', \
                     'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and \
                     'minReadySeconds' are forbidden",
                ));
            }
        }
        ("", "Secret" | "ConfigMap") => {
            if old.get("immutable") == Some(&Value::Bool(true)) {
                const BECAUSE: &str = "field is immutable when `immutable` is set";
                if new.get("immutable") != Some(&Value::Bool(true)) {
                    problems.push(Problem::forbidden("immutable", BECAUSE));
                }
                if changed("/data") {
                    problems.push(Problem::forbidden("data", BECAUSE));
                }
                if kind == "ConfigMap" && changed("/binaryData") {
                    problems.push(Problem::forbidden("binaryData", BECAUSE));
                }
            }
            if kind == "Secret" && changed("/type") {
                let shown = new.get("type").and_then(Value::as_str).unwrap_or_default();
                problems.push(Problem::invalid(
                    "type",
                    format!("{shown:?}"),
                    "field is immutable",
                ));
            }
        }
        ("", "Service") => {
            let external =
                |object: &Value| object.pointer("/spec/type") == Some(&Value::from("ExternalName"));
            let primary = |object: &Value| {
                object
                    .pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .filter(|address| !address.is_empty())
                    .map(str::to_owned)
            };
            if !external(old)
                && !external(new)
                && let (Some(before), Some(after)) = (primary(old), primary(new))
                && before != after
            {
                let addresses: Vec<String> = new
                    .pointer("/spec/clusterIPs")
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .filter_map(Value::as_str)
                            .map(|address| format!("{address:?}"))
                            .collect()
                    })
                    .unwrap_or_else(|| vec![format!("{after:?}")]);
                problems.push(Problem::invalid(
                    "spec.clusterIPs[0]",
                    format!("[]string{{{}}}", addresses.join(", ")),
                    "may not change once set",
                ));
            }
        }
        _ => {}
    }
    problems
}

/// The real server's semantic equality: null, `[]` and `{}` equal an absent value, at any depth.
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    normal(a) == normal(b)
}

fn normal(value: Option<&Value>) -> Option<Value> {
    match value? {
        Value::Null => None,
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .map(|item| normal(Some(item)).unwrap_or(Value::Null))
                .collect(),
        )),
        Value::Object(map) => {
            let kept: serde_json::Map<String, Value> = map
                .iter()
                .filter_map(|(key, value)| normal(Some(value)).map(|value| (key.clone(), value)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        other => Some(other.clone()),
    }
}

/// Go's `%#v` of a `*metav1.LabelSelector` as the real message prints it (the pointer's value;
/// map keys sorted, as Go's fmt sorts them).
fn go_label_selector(selector: Option<&Value>) -> String {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return "null".to_owned();
    };
    let labels = match selector.get("matchLabels").and_then(Value::as_object) {
        Some(map) => {
            let mut pairs: Vec<(&String, String)> = map
                .iter()
                .map(|(key, value)| (key, value.as_str().unwrap_or_default().to_owned()))
                .collect();
            pairs.sort();
            let shown: Vec<String> = pairs
                .iter()
                .map(|(key, value)| format!("{key:?}:{value:?}"))
                .collect();
            format!("map[string]string{{{}}}", shown.join(", "))
        }
        None => "map[string]string(nil)".to_owned(),
    };
    let expressions = match selector.get("matchExpressions").and_then(Value::as_array) {
        Some(list) => {
            let shown: Vec<String> = list
                .iter()
                .map(|requirement| {
                    let text = |field: &str| {
                        requirement
                            .get(field)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let values = match requirement.get("values").and_then(Value::as_array) {
                        Some(values) => format!(
                            "[]string{{{}}}",
                            values
                                .iter()
                                .map(|v| format!("{:?}", v.as_str().unwrap_or_default()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        None => "[]string(nil)".to_owned(),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{values}}}",
                        text("key"),
                        text("operator")
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", shown.join(", "))
        }
        None => "[]v1.LabelSelectorRequirement(nil)".to_owned(),
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{expressions}}}")
}

fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The 422 for `problems`, shaped like the real one.
fn refusal(kind: &str, group: &str, name: &str, problems: &[Problem]) -> ApiError {
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
    ApiError::invalid_causes(kind, group, name, &causes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(labels: Value) -> Value {
        json!({
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {}},
        })
    }

    #[test]
    fn a_deployment_selector_change_is_refused_with_the_real_message() {
        let old = deployment(json!({"app": "web"}));
        let new = deployment(json!({"app": "web", "version": "v2"}));
        let error = check("Deployment", "apps", &old, &new).unwrap_err();
        assert_eq!(error.code, 422);
        assert_eq!(error.reason, "Invalid");
        assert_eq!(
            error.message,
            "Deployment.apps \"web\" is invalid: spec.selector: Invalid value: \
             v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"version\":\"v2\"}, \
             MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        );
        let details = error.details.unwrap();
        assert_eq!(details["group"], "apps");
        assert_eq!(details["causes"][0]["field"], "spec.selector");
        assert_eq!(details["causes"][0]["reason"], "FieldValueInvalid");
    }

    #[test]
    fn everything_else_of_a_deployment_may_change_and_empty_equals_absent() {
        let old = deployment(json!({"app": "web"}));
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["template"] = json!({"metadata": {"labels": {"app": "web", "v": "2"}}});
        new["spec"]["selector"]["matchExpressions"] = json!([]);
        assert!(check("Deployment", "apps", &old, &new).is_ok());
        // A custom resource named Deployment in another group is not apps'.
        let moved = deployment(json!({"app": "other"}));
        assert!(check("Deployment", "example.com", &old, &moved).is_ok());
    }

    #[test]
    fn expressions_render_as_go_prints_them() {
        let selector =
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert_eq!(
            go_label_selector(Some(&selector)),
            "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:\
             []v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"tier\", \
             Operator:\"In\", Values:[]string{\"a\", \"b\"}}}}"
        );
    }

    #[test]
    fn a_statefulset_may_change_only_the_listed_fields() {
        let old = json!({"metadata": {"name": "db"}, "spec": {
            "replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {}, "revisionHistoryLimit": 10}});
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(3);
        scaled["spec"]["minReadySeconds"] = json!(5);
        assert!(check("StatefulSet", "apps", &old, &scaled).is_ok());
        let mut renamed = old.clone();
        renamed["spec"]["revisionHistoryLimit"] = json!(3);
        let error = check("StatefulSet", "apps", &old, &renamed).unwrap_err();
        assert!(
            error.message.starts_with(
                "StatefulSet.apps \"db\" is invalid: spec: Forbidden: updates to statefulset spec"
            ),
            "{}",
            error.message
        );
        assert_eq!(
            error.details.unwrap()["causes"][0]["reason"],
            "FieldValueForbidden"
        );
    }

    #[test]
    fn an_immutable_secret_keeps_its_data_and_its_mark_and_no_secret_changes_type() {
        let old = json!({"metadata": {"name": "s"}, "type": "Opaque", "immutable": true,
            "data": {"k": "dg=="}});
        let mut same_data = old.clone();
        same_data["metadata"]["labels"] = json!({"a": "b"});
        assert!(check("Secret", "", &old, &same_data).is_ok());

        let mut changed = old.clone();
        changed["data"]["k"] = json!("dzI=");
        changed["immutable"] = json!(false);
        let error = check("Secret", "", &old, &changed).unwrap_err();
        assert_eq!(
            error.message,
            "Secret \"s\" is invalid: [immutable: Forbidden: field is immutable when `immutable` \
             is set, data: Forbidden: field is immutable when `immutable` is set]"
        );
        assert!(error.details.unwrap().get("group").is_none());

        let mutable = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
        let mut retyped = mutable.clone();
        retyped["type"] = json!("kubernetes.io/tls");
        retyped["data"]["k"] = json!("dzI=");
        let error = check("Secret", "", &mutable, &retyped).unwrap_err();
        assert_eq!(
            error.message,
            "Secret \"s\" is invalid: type: Invalid value: \"kubernetes.io/tls\": field is immutable"
        );
        let mut rewritten = mutable.clone();
        rewritten["data"]["k"] = json!("dzI=");
        assert!(check("Secret", "", &mutable, &rewritten).is_ok());
    }

    #[test]
    fn an_immutable_config_map_keeps_binary_data_too() {
        let old =
            json!({"metadata": {"name": "c"}, "immutable": true, "binaryData": {"b": "AA=="}});
        let mut changed = old.clone();
        changed["binaryData"] = json!({});
        let error = check("ConfigMap", "", &old, &changed).unwrap_err();
        assert!(
            error.message.contains("binaryData: Forbidden"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_set_cluster_ip_may_not_change_unless_external_name() {
        let service = |address: &str, kind: &str| {
            json!({"metadata": {"name": "api"}, "spec": {"type": kind, "clusterIP": address,
                "clusterIPs": [address]}})
        };
        let error = check(
            "Service",
            "",
            &service("10.96.0.10", "ClusterIP"),
            &service("None", "ClusterIP"),
        )
        .unwrap_err();
        assert_eq!(
            error.message,
            "Service \"api\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"None\"}: \
             may not change once set"
        );
        assert!(
            check(
                "Service",
                "",
                &service("10.96.0.10", "ClusterIP"),
                &service("10.96.0.10", "NodePort")
            )
            .is_ok()
        );
        assert!(
            check(
                "Service",
                "",
                &service("10.96.0.10", "ClusterIP"),
                &service("", "ExternalName")
            )
            .is_ok()
        );
    }

    #[test]
    fn a_job_template_is_fixed() {
        let old = json!({"metadata": {"name": "migrate"}, "spec": {"template": {"spec": {"containers": [{"name": "m", "image": "a"}]}}}});
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("b");
        let error = check("Job", "batch", &old, &new).unwrap_err();
        assert!(
            error
                .message
                .starts_with("Job.batch \"migrate\" is invalid: spec.template: Invalid value: {"),
            "{}",
            error.message
        );
        assert!(error.message.ends_with(": field is immutable"));
    }
}
