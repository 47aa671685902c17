//! PodTopologySpread: a pod's `topologySpreadConstraints` keep the pods its selector picks
//! spread across the values of a node label. `DoNotSchedule` constraints filter: a node whose
//! domain would then exceed `maxSkew` over the emptiest eligible domain is refused (a node
//! without the label too); `ScheduleAnyway` constraints score: emptier domains score higher.
//! Pods without constraints get upstream's system defaults (spread by hostname, maxSkew 3, and by
//! zone, maxSkew 5, both ScheduleAnyway) over the pods of the same controller. Only nodes the
//! pod's node affinity admits count (`nodeAffinityPolicy: Honor`); taints do not
//! (`nodeTaintsPolicy: Ignore`).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::ResourceExt;

use crate::scheduler::cache::{Cache, NodeInfo, PodInfo};
use crate::scheduler::framework::{Plugin, Rejection};

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

struct Constraint {
    /// For the system defaults: the pods of the same template, counted by group.
    group: Option<u64>,
    key: String,
    max_skew: i64,
    hard: bool,
    selector: LabelSelector,
    min_domains: i64,
    /// Whether the pod itself matches the selector (it then counts where it goes).
    self_match: bool,
}

#[derive(Default)]
struct State {
    uid: String,
    constraints: Vec<Constraint>,
    /// Per constraint: matching pods per domain (every eligible domain present).
    counts: Vec<HashMap<String, i64>>,
}

impl State {
    fn min(&self, i: usize) -> i64 {
        let c = &self.counts[i];
        if (c.len() as i64) < self.constraints[i].min_domains {
            return 0;
        }
        c.values().copied().min().unwrap_or(0)
    }
}

#[derive(Default)]
pub struct PodTopologySpread {
    state: Mutex<State>,
}

fn constraints(pod: &PodInfo) -> Vec<Constraint> {
    let labels = pod.pod.labels();
    let spec = pod.pod.spec.as_ref();
    let explicit = spec
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .filter(|c| !c.is_empty());
    let Some(explicit) = explicit else {
        // System defaults, over the pods of the same controller (its template's labels).
        let controlled = pod.pod.owner_references().iter().any(|r| {
            r.controller == Some(true)
                && matches!(
                    r.kind.as_str(),
                    "ReplicaSet" | "StatefulSet" | "ReplicationController"
                )
        });
        if !controlled || labels.is_empty() {
            return Vec::new();
        }
        let selector = LabelSelector {
            match_labels: Some(labels.clone()),
            match_expressions: None,
        };
        return [(HOSTNAME, 3), (ZONE, 5)]
            .into_iter()
            .map(|(key, max_skew)| Constraint {
                group: Some(pod.group),
                key: key.into(),
                max_skew,
                hard: false,
                selector: selector.clone(),
                min_domains: 1,
                self_match: true,
            })
            .collect();
    };
    explicit
        .iter()
        .map(|c| {
            let mut selector = c.label_selector.clone().unwrap_or_default();
            // matchLabelKeys: the pod's own values for those keys join the selector.
            for key in c.match_label_keys.iter().flatten() {
                if let Some(v) = labels.get(key) {
                    selector
                        .match_expressions
                        .get_or_insert_with(Vec::new)
                        .push(LabelSelectorRequirement {
                            key: key.clone(),
                            operator: "In".into(),
                            values: Some(vec![v.clone()]),
                        });
                }
            }
            let self_match = crate::labels::matches(Some(&selector), labels);
            Constraint {
                group: None,
                key: c.topology_key.clone(),
                max_skew: i64::from(c.max_skew.max(1)),
                hard: c.when_unsatisfiable == "DoNotSchedule",
                selector,
                min_domains: i64::from(c.min_domains.unwrap_or(1).max(1)),
                self_match,
            }
        })
        .collect()
}

fn matching_pods(node: &NodeInfo, ns: &str, selector: &LabelSelector) -> i64 {
    node.pods
        .values()
        .filter(|p| {
            p.pod.metadata.deletion_timestamp.is_none()
                && p.pod.namespace().as_deref() == Some(ns)
                && crate::labels::matches(Some(selector), p.pod.labels())
        })
        .count() as i64
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn prefilter(&self, pod: &PodInfo, cache: &Cache) {
        let constraints = constraints(pod);
        let mut counts = vec![HashMap::new(); constraints.len()];
        if !constraints.is_empty() {
            let ns = pod.pod.namespace().unwrap_or_default();
            let spec = pod.pod.spec.clone().unwrap_or_default();
            for node in cache.nodes.values() {
                if !crate::placement::affinity_admits(&spec, &node.name, node.labels()) {
                    continue;
                }
                for (i, c) in constraints.iter().enumerate() {
                    let Some(domain) = node.labels().get(&c.key) else {
                        continue;
                    };
                    let n = match c.group {
                        Some(g) => node.groups.get(&g).copied().unwrap_or(0),
                        None => matching_pods(node, &ns, &c.selector),
                    };
                    *counts[i].entry(domain.clone()).or_insert(0) += n;
                }
            }
        }
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = State {
            uid: pod.uid.clone(),
            constraints,
            counts,
        };
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.uid != pod.uid {
            return None;
        }
        for (i, c) in state.constraints.iter().enumerate().filter(|(_, c)| c.hard) {
            let Some(domain) = node.labels().get(&c.key) else {
                return Some(Rejection::unresolvable(
                    "node(s) didn't match pod topology spread constraints (missing required label)",
                ));
            };
            let here = state.counts[i].get(domain).copied().unwrap_or(0);
            let skew = here + i64::from(c.self_match) - state.min(i);
            if skew > c.max_skew {
                return Some(Rejection::resolvable(vec![
                    "node(s) didn't match pod topology spread constraints".into(),
                ]));
            }
        }
        None
    }

    fn scores(&self) -> bool {
        true
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.uid != pod.uid {
            return 0;
        }
        let mut total = 0f64;
        for (i, c) in state
            .constraints
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.hard)
        {
            let Some(domain) = node.labels().get(&c.key) else {
                continue;
            };
            // Upstream weighs each constraint by log(domains + 2).
            let weight = ((state.counts[i].len() + 2) as f64).ln();
            let here = state.counts[i].get(domain).copied().unwrap_or(0);
            total += (here + c.max_skew - 1) as f64 * weight;
        }
        total.round() as i64
    }

    fn normalize(&self, scores: &mut [i64]) {
        // Fewer matching pods is better: the emptiest domain gets 100.
        let (min, max) = (
            scores.iter().copied().min().unwrap_or(0),
            scores.iter().copied().max().unwrap_or(0),
        );
        for s in scores.iter_mut() {
            *s = if max == min {
                100
            } else {
                100 * (max - *s) / (max - min)
            };
        }
    }

    fn weight(&self) -> i64 {
        2
    }
}
