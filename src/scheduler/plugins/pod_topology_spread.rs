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

use crate::scheduler::cache::{Cache, NodeInfo, PodInfo, TOPOLOGY_KEYS};
use crate::scheduler::framework::{Plugin, Rejection};

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

/// One constraint's matching pods per eligible domain.
enum Counts {
    /// Domains of `TOPOLOGY_KEYS[key]`, by the cache's numbers (`None`: not eligible).
    Numbered {
        key: usize,
        counts: Vec<Option<i64>>,
    },
    /// Domains of any other key, by label value.
    Named(HashMap<String, i64>),
}

/// Matching pods per domain for one constraint, and what filter and score read of them.
struct Domains {
    counts: Counts,
    /// How many domains are eligible.
    len: usize,
    /// The fewest matching pods in an eligible domain.
    min: i64,
}

impl Domains {
    fn new(key: &str, cache: &Cache) -> Domains {
        let counts = match TOPOLOGY_KEYS.iter().position(|k| *k == key) {
            Some(k) => Counts::Numbered {
                key: k,
                counts: vec![None; cache.domain_count(k)],
            },
            None => Counts::Named(HashMap::new()),
        };
        Domains {
            counts,
            len: 0,
            min: 0,
        }
    }

    /// Counts `n` matching pods on `node` in its domain; false when the node lacks the key.
    fn add(&mut self, key: &str, node: &NodeInfo, n: impl FnOnce() -> i64) -> bool {
        match &mut self.counts {
            Counts::Numbered { key: k, counts } => {
                let Some(slot) = node.domains[*k].and_then(|d| counts.get_mut(d as usize)) else {
                    return false;
                };
                *slot.get_or_insert(0) += n();
            }
            Counts::Named(map) => {
                let Some(domain) = node.labels().get(key) else {
                    return false;
                };
                *map.entry(domain.clone()).or_insert(0) += n();
            }
        }
        true
    }

    /// Works out the number of eligible domains and the smallest count.
    fn finish(&mut self) {
        let (len, min) = match &self.counts {
            Counts::Numbered { counts, .. } => {
                let eligible = counts.iter().flatten();
                (eligible.clone().count(), eligible.min().copied())
            }
            Counts::Named(map) => (map.len(), map.values().min().copied()),
        };
        self.len = len;
        self.min = min.unwrap_or(0);
    }

    /// The matching pods in the node's domain; `None` when the node lacks the key.
    fn here(&self, key: &str, node: &NodeInfo) -> Option<i64> {
        match &self.counts {
            Counts::Numbered { key: k, counts } => {
                let d = node.domains[*k]?;
                Some(counts.get(d as usize).copied().flatten().unwrap_or(0))
            }
            Counts::Named(map) => Some(map.get(node.labels().get(key)?).copied().unwrap_or(0)),
        }
    }
}

#[derive(Default)]
struct State {
    uid: String,
    constraints: Vec<Constraint>,
    /// Per constraint: matching pods per domain (every eligible domain present).
    domains: Vec<Domains>,
}

impl State {
    fn min(&self, i: usize) -> i64 {
        let d = &self.domains[i];
        if (d.len as i64) < self.constraints[i].min_domains {
            return 0;
        }
        d.min
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
        // Upstream's defaults: hostname with maxSkew 3, zone with maxSkew 5.
        return TOPOLOGY_KEYS
            .into_iter()
            .zip([3, 5])
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
        let mut domains: Vec<Domains> = constraints
            .iter()
            .map(|c| Domains::new(&c.key, cache))
            .collect();
        if !constraints.is_empty() {
            let ns = pod.pod.namespace().unwrap_or_default();
            let default_spec = Default::default();
            let spec = pod.pod.spec.as_ref().unwrap_or(&default_spec);
            let selects_nodes = spec.node_selector.is_some()
                || spec
                    .affinity
                    .as_ref()
                    .is_some_and(|a| a.node_affinity.is_some());
            for node in cache.nodes.values() {
                if selects_nodes
                    && !crate::placement::affinity_admits(spec, &node.name, node.labels())
                {
                    continue;
                }
                // The default constraints share one group: counted once per node.
                let mut in_group = None;
                for (c, d) in constraints.iter().zip(domains.iter_mut()) {
                    d.add(&c.key, node, || match c.group {
                        Some(g) => *in_group
                            .get_or_insert_with(|| node.groups.get(&g).copied().unwrap_or(0)),
                        None => matching_pods(node, &ns, &c.selector),
                    });
                }
            }
            domains.iter_mut().for_each(Domains::finish);
        }
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = State {
            uid: pod.uid.clone(),
            constraints,
            domains,
        };
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.uid != pod.uid {
            return None;
        }
        for (i, c) in state.constraints.iter().enumerate().filter(|(_, c)| c.hard) {
            let Some(here) = state.domains[i].here(&c.key, node) else {
                return Some(Rejection::unresolvable(
                    "node(s) didn't match pod topology spread constraints (missing required label)",
                ));
            };
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
            let Some(here) = state.domains[i].here(&c.key, node) else {
                continue;
            };
            // Upstream weighs each constraint by log(domains + 2).
            let weight = ((state.domains[i].len + 2) as f64).ln();
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::json;
    use std::sync::Arc;

    fn node(name: &str, zone: Option<&str>) -> Arc<Node> {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if let Some(z) = zone {
            labels["topology.kubernetes.io/zone"] = json!(z);
        }
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                .unwrap_or_default(),
        )
    }

    fn pod(name: &str) -> Arc<PodInfo> {
        let pod: Pod = serde_json::from_value(json!({"metadata": {
            "name": name, "namespace": "default", "uid": name, "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                 "uid": "rs", "controller": true}]}}))
        .unwrap_or_default();
        Arc::new(PodInfo::new(Arc::new(pod)))
    }

    #[test]
    fn default_spreading_counts_per_numbered_domain() {
        let mut cache = Cache::default();
        cache.set_node(node("a1", Some("a")));
        cache.set_node(node("a2", Some("a")));
        cache.set_node(node("b1", Some("b")));
        cache.set_node(node("bare", None));
        cache.confirm(pod("p1"), "a1");
        cache.confirm(pod("p2"), "a2");
        cache.confirm(pod("p3"), "a2");
        let pts = PodTopologySpread::default();
        let next = pod("next");
        pts.prefilter(&next, &cache);
        let state = pts.state.lock().unwrap_or_else(|p| p.into_inner());
        let here =
            |i: usize, n: &str| state.domains[i].here(&state.constraints[i].key, &cache.nodes[n]);
        // Hostname: every node is a domain; the emptiest holds none.
        assert_eq!(state.constraints[0].key, "kubernetes.io/hostname");
        assert_eq!((here(0, "a2"), here(0, "b1")), (Some(2), Some(0)));
        assert_eq!((state.domains[0].len, state.min(0)), (4, 0));
        // Zone: a holds three, b none; the node without a zone is in no domain.
        assert_eq!(
            (here(1, "a1"), here(1, "b1"), here(1, "bare")),
            (Some(3), Some(0), None)
        );
        assert_eq!((state.domains[1].len, state.min(1)), (2, 0));
        drop(state);
        // Raw scores count pods (normalising reverses them): the emptier node has the lower.
        assert!(pts.score(&next, &cache.nodes["b1"]) < pts.score(&next, &cache.nodes["a2"]));
    }
}
