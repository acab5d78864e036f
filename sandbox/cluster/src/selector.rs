//! Label selector matching (matchLabels and matchExpressions), shared by the controllers.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`. An empty selector matches everything, as in the API.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let labels_ok = selector.match_labels.as_ref().is_none_or(|wanted| {
        wanted
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    });
    let expressions_ok = selector
        .match_expressions
        .as_ref()
        .is_none_or(|expressions| {
            expressions.iter().all(|expression| {
                let values = expression.values.clone().unwrap_or_default();
                let actual = labels.get(&expression.key);
                match expression.operator.as_str() {
                    "In" => actual.is_some_and(|value| values.contains(value)),
                    "NotIn" => actual.is_none_or(|value| !values.contains(value)),
                    "Exists" => actual.is_some(),
                    "DoesNotExist" => actual.is_none(),
                    // An operator the API would have rejected selects nothing rather than everything.
                    _ => false,
                }
            })
        });
    labels_ok && expressions_ok
}

/// Whether `labels` contain every pair of a map selector (Services use this form).
pub fn map_selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// Renders a selector as a label-selector query string for list calls.
pub fn selector_query(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default().join(",");
        parts.push(match expression.operator.as_str() {
            "In" => format!("{} in ({values})", expression.key),
            "NotIn" => format!("{} notin ({values})", expression.key),
            "Exists" => expression.key.clone(),
            _ => format!("!{}", expression.key),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn match_labels_and_expressions() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "track".to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec!["stable".to_owned(), "canary".to_owned()]),
                },
                LabelSelectorRequirement {
                    key: "debug".to_owned(),
                    operator: "DoesNotExist".to_owned(),
                    values: None,
                },
            ]),
        };
        assert!(selector_matches(
            &selector,
            Some(&labels(&[("app", "web"), ("track", "canary")]))
        ));
        assert!(!selector_matches(
            &selector,
            Some(&labels(&[("app", "web"), ("track", "dev")]))
        ));
        assert!(!selector_matches(
            &selector,
            Some(&labels(&[
                ("app", "web"),
                ("track", "stable"),
                ("debug", "1")
            ]))
        ));
        assert!(!selector_matches(&selector, None));
        assert!(
            selector_matches(&LabelSelector::default(), None),
            "empty selector selects everything"
        );
        assert_eq!(
            selector_query(&selector),
            "app=web,track in (stable,canary),!debug"
        );
    }
}
