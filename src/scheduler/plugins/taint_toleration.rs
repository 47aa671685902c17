//! TaintToleration: a node's NoSchedule and NoExecute taints keep out pods that do not tolerate
//! them; PreferNoSchedule taints a pod does not tolerate lower the node's score.

use crate::scheduler::cache::{NodeInfo, PodInfo};
use crate::scheduler::framework::{default_normalize, Plugin, Rejection};
use crate::taints::{tolerates, untolerated};

pub struct TaintToleration;

fn taints(node: &NodeInfo) -> &[k8s_openapi::api::core::v1::Taint] {
    node.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

fn tolerations(pod: &PodInfo) -> &[k8s_openapi::api::core::v1::Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
        untolerated(taints(node), tolerations(pod), &["NoSchedule", "NoExecute"])
            .map(|_| Rejection::unresolvable("node(s) had untolerated taint(s)"))
    }

    fn scores(&self) -> bool {
        true
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let prefer: Vec<_> = tolerations(pod)
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .collect();
        taints(node)
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .filter(|taint| !prefer.iter().any(|t| tolerates(t, taint)))
            .count() as i64
    }

    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, true);
    }

    fn weight(&self) -> i64 {
        3
    }
}
