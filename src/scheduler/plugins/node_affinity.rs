//! NodeAffinity: the pod's `nodeSelector` and required node affinity decide which nodes it may
//! use; its preferred node affinity terms add their weights to the nodes they match.

use k8s_openapi::api::core::v1::NodeSelectorTerm;

use crate::placement;

use crate::scheduler::cache::{NodeInfo, PodInfo};
use crate::scheduler::framework::{default_normalize, Plugin, Rejection};

pub struct NodeAffinity;

/// Whether a node selector term matches the node (an empty term matches nothing).
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    placement::term_matches(term, &node.name, node.labels())
}

/// Whether the pod's nodeSelector and required node affinity admit the node.
pub fn required_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.pod
        .spec
        .as_ref()
        .is_none_or(|s| placement::affinity_admits(s, &node.name, node.labels()))
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
        (!required_matches(pod, node))
            .then(|| Rejection::unresolvable("node(s) didn't match Pod's node affinity/selector"))
    }

    fn scores(&self) -> bool {
        true
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        pod.pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|p| p.weight != 0 && term_matches(&p.preference, node))
            .map(|p| i64::from(p.weight))
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, false);
    }

    fn weight(&self) -> i64 {
        2
    }
}
