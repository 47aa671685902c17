//! InterPodAffinity: a pod's required pod affinity admits only nodes in a topology domain
//! (the value of `topologyKey`) that already runs a pod its term selects (the first pod of a
//! group that selects itself may go anywhere); its required anti-affinity refuses domains that
//! run such a pod; and the required anti-affinity of pods already placed refuses the domains
//! around them to a pod they select. Preferred terms add (affinity) or subtract
//! (anti-affinity) their weight for each node in a domain that runs a selected pod. Terms look
//! in the pod's own namespace unless they name `namespaces`.

use std::collections::HashSet;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use kube::ResourceExt;

use crate::scheduler::cache::{Cache, NodeInfo, PodInfo};
use crate::scheduler::framework::{Plugin, Rejection};

/// Whether `term` of a pod in namespace `owner_ns` selects `other`.
fn selects(term: &PodAffinityTerm, owner_ns: &str, other: &Pod) -> bool {
    if other.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let ns = other.namespace().unwrap_or_default();
    let in_ns = match term.namespaces.as_ref().filter(|n| !n.is_empty()) {
        Some(list) => list.contains(&ns),
        // An empty namespaceSelector ({}) means every namespace.
        None => {
            ns == owner_ns
                || term
                    .namespace_selector
                    .as_ref()
                    .is_some_and(|s| s.match_labels.is_none() && s.match_expressions.is_none())
        }
    };
    in_ns
        && term.label_selector.is_some()
        && crate::labels::matches(term.label_selector.as_ref(), other.labels())
}

#[derive(Default)]
struct State {
    uid: String,
    /// Per required affinity term: the domains running a selected pod.
    affinity: Vec<HashSet<String>>,
    /// Whether the pod selects itself with every required affinity term.
    selects_itself: bool,
    /// Per required anti-affinity term: the domains running a selected pod.
    anti: Vec<HashSet<String>>,
    /// `(key, value)` domains that placed pods' anti-affinity keeps this pod out of.
    forbidden: HashSet<(String, String)>,
    /// Preferred terms: (topology key, weight, domains running a selected pod).
    preferred: Vec<(String, i64, HashSet<String>)>,
}

#[derive(Default)]
pub struct InterPodAffinity {
    state: Mutex<State>,
}

fn required(pod: &Pod) -> (Vec<PodAffinityTerm>, Vec<PodAffinityTerm>) {
    let aff = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let pick = |terms: Option<&Vec<PodAffinityTerm>>| terms.cloned().unwrap_or_default();
    (
        pick(aff.and_then(|a| a.pod_affinity.as_ref()).and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })),
        pick(
            aff.and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
        ),
    )
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn prefilter(&self, pod: &PodInfo, cache: &Cache) {
        let ns = pod.pod.namespace().unwrap_or_default();
        let (aff_terms, anti_terms) = required(&pod.pod);
        let aff = pod.pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let mut preferred_terms: Vec<(PodAffinityTerm, i64)> = Vec::new();
        for w in aff
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
        {
            preferred_terms.push((w.pod_affinity_term.clone(), i64::from(w.weight)));
        }
        for w in aff
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
        {
            preferred_terms.push((w.pod_affinity_term.clone(), -i64::from(w.weight)));
        }
        let mut state = State {
            uid: pod.uid.clone(),
            affinity: vec![HashSet::new(); aff_terms.len()],
            selects_itself: aff_terms.iter().all(|t| selects(t, &ns, &pod.pod)),
            anti: vec![HashSet::new(); anti_terms.len()],
            forbidden: HashSet::new(),
            preferred: preferred_terms
                .iter()
                .map(|(t, w)| (t.topology_key.clone(), *w, HashSet::new()))
                .collect(),
        };
        let own_terms =
            !(aff_terms.is_empty() && anti_terms.is_empty() && preferred_terms.is_empty());
        for node in cache.nodes.values() {
            if !own_terms && node.anti_affinity == 0 {
                continue;
            }
            let labels = node.labels();
            for other in node.pods.values() {
                let theirs = &other.pod;
                let value = |key: &str| labels.get(key).cloned();
                for (i, t) in aff_terms.iter().enumerate() {
                    if selects(t, &ns, theirs) {
                        state.affinity[i].extend(value(&t.topology_key));
                    }
                }
                for (i, t) in anti_terms.iter().enumerate() {
                    if selects(t, &ns, theirs) {
                        state.anti[i].extend(value(&t.topology_key));
                    }
                }
                for (i, (t, _)) in preferred_terms.iter().enumerate() {
                    if selects(t, &ns, theirs) {
                        state.preferred[i].2.extend(value(&t.topology_key));
                    }
                }
                if theirs
                    .spec
                    .as_ref()
                    .and_then(|s| s.affinity.as_ref())
                    .is_none()
                {
                    continue;
                }
                let their_ns = theirs.namespace().unwrap_or_default();
                for t in required(theirs).1 {
                    if selects(&t, &their_ns, &pod.pod) {
                        if let Some(v) = value(&t.topology_key) {
                            state.forbidden.insert((t.topology_key.clone(), v));
                        }
                    }
                }
            }
        }
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.uid != pod.uid {
            return None;
        }
        let labels = node.labels();
        let (aff_terms, anti_terms) = required(&pod.pod);
        // With no selected pod anywhere, a pod that selects itself starts the group.
        let nobody = state.affinity.iter().all(HashSet::is_empty);
        if !(nobody && state.selects_itself) {
            for (i, t) in aff_terms.iter().enumerate() {
                let ok = labels
                    .get(&t.topology_key)
                    .is_some_and(|v| state.affinity[i].contains(v));
                if !ok {
                    return Some(Rejection::unresolvable(
                        "node(s) didn't match pod affinity rules",
                    ));
                }
            }
        }
        for (i, t) in anti_terms.iter().enumerate() {
            if labels
                .get(&t.topology_key)
                .is_some_and(|v| state.anti[i].contains(v))
            {
                return Some(Rejection::resolvable(vec![
                    "node(s) didn't match pod anti-affinity rules".into(),
                ]));
            }
        }
        if state
            .forbidden
            .iter()
            .any(|(k, v)| labels.get(k) == Some(v))
        {
            return Some(Rejection::resolvable(vec![
                "node(s) didn't satisfy existing pods anti-affinity rules".into(),
            ]));
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
        let labels = node.labels();
        state
            .preferred
            .iter()
            .filter(|(key, _, domains)| labels.get(key).is_some_and(|v| domains.contains(v)))
            .map(|(_, w, _)| *w)
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        let (min, max) = (
            scores.iter().copied().min().unwrap_or(0),
            scores.iter().copied().max().unwrap_or(0),
        );
        for s in scores.iter_mut() {
            *s = if max == min {
                0
            } else {
                100 * (*s - min) / (max - min)
            };
        }
    }

    fn weight(&self) -> i64 {
        2
    }
}
