//! The ClusterRole aggregation controller, as upstream's: a ClusterRole with an
//! `aggregationRule` gets the rules of every ClusterRole its selectors match (in name order,
//! each rule once), written by server-side apply as `clusterrole-aggregation-controller`.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::json;
use tokio::sync::watch;

const MANAGER: &str = "clusterrole-aggregation-controller";

/// The rules `role` should have: those of every other role its selectors match.
pub fn aggregated_rules(role: &ClusterRole, all: &[ClusterRole]) -> Option<Vec<PolicyRule>> {
    let rule = role.aggregation_rule.as_ref()?;
    let mut sorted: Vec<&ClusterRole> = all.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out: Vec<PolicyRule> = Vec::new();
    for sel in rule.cluster_role_selectors.iter().flatten() {
        let Ok(selector) = Selector::try_from(sel.clone()) else {
            continue;
        };
        for other in &sorted {
            if other.metadata.name == role.metadata.name {
                continue;
            }
            let labels: BTreeMap<String, String> =
                other.metadata.labels.clone().unwrap_or_default();
            if !selector.matches(&labels) {
                continue;
            }
            for r in other.rules.iter().flatten() {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
    }
    Some(out)
}

/// Brings every aggregated role up to date; returns how many were written.
async fn sync_all(api: &Api<ClusterRole>, all: &[ClusterRole]) -> usize {
    let mut written = 0;
    for role in all {
        let Some(want) = aggregated_rules(role, all) else {
            continue;
        };
        let have = role.rules.clone().unwrap_or_default();
        if want == have {
            continue;
        }
        let Some(name) = role.metadata.name.as_deref() else {
            continue;
        };
        let patch = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": want,
        });
        let params = PatchParams::apply(MANAGER).force();
        match api.patch(name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => written += 1,
            Err(e) => tracing::warn!(role = name, error = %e, "aggregating cluster role rules"),
        }
    }
    written
}

/// Follows ClusterRoles and keeps the aggregated ones up to date until `stop` turns true.
pub async fn run(client: kube::Client, mut stop: watch::Receiver<bool>) {
    let api: Api<ClusterRole> = Api::all(client);
    let (reader, writer) = reflector::store();
    let mut events = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default()).default_backoff(),
    )
    .inspect(|e| {
        if let Err(e) = e {
            tracing::debug!(error = %e, "watching cluster roles");
        }
    })
    .boxed();
    loop {
        if !super::next_burst(&mut events, &mut stop).await {
            return;
        }
        if !super::ready(&reader) {
            continue;
        }
        let all: Vec<ClusterRole> = reader.state().iter().map(|r| (**r).clone()).collect();
        let n = sync_all(&api, &all).await;
        if n > 0 {
            tracing::debug!(roles = n, "aggregated cluster roles updated");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::AggregationRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn role(name: &str, labels: &[(&str, &str)], verbs: &[&str]) -> ClusterRole {
        ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            rules: Some(vec![PolicyRule {
                verbs: verbs.iter().map(|v| v.to_string()).collect(),
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["pods".into()]),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn aggregation_collects_matching_rules_once_in_name_order() {
        let mut edit = role("edit", &[], &[]);
        edit.rules = None;
        edit.aggregation_rule = Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some([("agg".to_string(), "edit".to_string())].into()),
                ..Default::default()
            }]),
        });
        let b = role("b", &[("agg", "edit")], &["get"]);
        let a = role("a", &[("agg", "edit")], &["list"]);
        let dup = role("c", &[("agg", "edit")], &["get"]);
        let other = role("d", &[("agg", "view")], &["watch"]);
        let all = vec![edit.clone(), b, a, dup, other];
        let rules = aggregated_rules(&edit, &all).expect("aggregated");
        let verbs: Vec<&str> = rules.iter().map(|r| r.verbs[0].as_str()).collect();
        assert_eq!(verbs, vec!["list", "get"]);
        assert!(aggregated_rules(&all[1], &all).is_none());
    }
}
