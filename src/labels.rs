//! Label selectors as the API clients evaluate them (`metav1.LabelSelector`: matchLabels and
//! matchExpressions with In, NotIn, Exists, DoesNotExist), for controllers and the scheduler.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `selector` selects an object with `labels`. An empty selector selects everything;
/// a missing one (`None`) nothing, as upstream's `LabelSelectorAsSelector` reads them.
pub fn matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = selector else {
        return false;
    };
    let plain = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    plain
        && sel.match_expressions.iter().flatten().all(|e| {
            let have = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => !have.is_some_and(|v| values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// Whether an equality-only selector (a ReplicationController's or a Service's) selects
/// `labels`; an empty one selects nothing.
pub fn map_matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match_as_upstream() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "legacy", "operator": "DoesNotExist"}],
        }))
        .expect("selector");
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(matches(
            Some(&sel),
            &labels(&[("app", "web"), ("tier", "edge")])
        ));
        assert!(!matches(
            Some(&sel),
            &labels(&[("app", "web"), ("tier", "back")])
        ));
        assert!(!matches(
            Some(&sel),
            &labels(&[("app", "web"), ("tier", "edge"), ("legacy", "")])
        ));
        assert!(matches(Some(&LabelSelector::default()), &labels(&[])));
        assert!(!matches(None, &labels(&[("app", "web")])));
        assert!(map_matches(
            &labels(&[("app", "web")]),
            &labels(&[("app", "web"), ("x", "y")])
        ));
        assert!(!map_matches(&labels(&[]), &labels(&[("app", "web")])));
    }
}
