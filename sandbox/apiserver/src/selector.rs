//! Label selectors (`a=b,c!=d,e in (x,y),f notin (z),g,!h`) and field selectors
//! (`metadata.name=x,status.phase!=Running`) parsed from query strings and matched against JSON
//! objects.

use serde_json::Value;

use crate::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_terms(input: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    for (index, character) in input.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&input[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    terms.push(&input[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .collect()
}

fn parse_set(key: &str, rest: &str, selector: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: found '{rest}', expected: '(' for key {key} in selector {selector:?}")))?;
    Ok(inner
        .split(',')
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(selector: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_terms(selector) {
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_owned())
            } else if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once("==") {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once('=') {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, rest)) = term.split_once(" notin ") {
                Requirement::NotIn(key.trim().to_owned(), parse_set(key, rest, selector)?)
            } else if let Some((key, rest)) = term.split_once(" in ") {
                Requirement::In(key.trim().to_owned(), parse_set(key, rest, selector)?)
            } else if term.contains(' ') || term.contains('(') {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: {term:?} in selector {selector:?}"
                )));
            } else {
                Requirement::Exists(term.to_owned())
            };
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| {
            labels
                .and_then(|labels| labels.get(key))
                .and_then(Value::as_str)
        };
        self.requirements
            .iter()
            .all(|requirement| match requirement {
                Requirement::Equals(key, value) => label(key) == Some(value.as_str()),
                Requirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
                Requirement::In(key, values) => {
                    label(key).is_some_and(|found| values.iter().any(|value| value == found))
                }
                Requirement::NotIn(key, values) => {
                    label(key).is_none_or(|found| !values.iter().any(|value| value == found))
                }
                Requirement::Exists(key) => label(key).is_some(),
                Requirement::NotExists(key) => label(key).is_none(),
            })
    }
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter (`=`, `==`, `!=` terms).
    pub fn parse(selector: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in selector
            .split(',')
            .map(str::trim)
            .filter(|term| !term.is_empty())
        {
            let (field, equal, value) = if let Some((field, value)) = term.split_once("!=") {
                (field, false, value)
            } else if let Some((field, value)) = term.split_once("==") {
                (field, true, value)
            } else if let Some((field, value)) = term.split_once('=') {
                (field, true, value)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{selector}'; can't understand '{term}'"
                )));
            };
            requirements.push((field.trim().to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self { requirements })
    }

    /// Whether every field term holds. A field the object lacks compares as the empty string,
    /// as the real server's field sets do (`spec.nodeName=` selects unscheduled pods).
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, equal, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let found = match object.pointer(&pointer) {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (found == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({ "metadata": { "name": "x", "labels": labels }, "status": { "phase": "Running" } })
    }

    #[test]
    fn equality_and_set_based_label_terms() {
        let object = labelled(json!({ "app": "web", "track": "canary" }));
        let check = |selector: &str| {
            LabelSelector::parse(selector)
                .expect("parses")
                .matches(&object)
        };
        assert!(check("app=web"));
        assert!(check("app==web,track"));
        assert!(!check("app!=web"));
        assert!(check("track in (stable, canary)"));
        assert!(!check("track notin (canary)"));
        assert!(check("!missing,app"));
        assert!(!check("!track"));
        assert!(check(""));
        assert!(!check("tier in (db)"));
        assert!(check("tier notin (db)"));
    }

    #[test]
    fn malformed_label_selector_is_a_bad_request() {
        let error = LabelSelector::parse("app in web").expect_err("must fail");
        assert_eq!(error.code, 400);
    }

    #[test]
    fn field_terms_compare_paths() {
        let object = labelled(json!({}));
        let check = |selector: &str| {
            FieldSelector::parse(selector)
                .expect("parses")
                .matches(&object)
        };
        assert!(check("metadata.name=x,status.phase=Running"));
        assert!(!check("status.phase!=Running"));
        assert!(check("spec.nodeName="));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
