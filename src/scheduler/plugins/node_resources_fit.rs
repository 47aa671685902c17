//! NodeResourcesFit: a pod fits a node whose allocatable resources cover what the pods there
//! already request plus its own requests (cpu, memory, ephemeral storage, extended resources)
//! and that has room for one more pod. Scoring is upstream's default LeastAllocated (the
//! emptier node wins), and [`BalancedAllocation`] prefers nodes whose CPU and memory stay in
//! proportion.

use crate::scheduler::cache::{NodeInfo, PodInfo};
use crate::scheduler::framework::{Plugin, Rejection};

pub struct NodeResourcesFit;

/// One pod, in thousandths.
const POD: i128 = 1000;

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
        let mut reasons = Vec::new();
        if (node.pods.len() as i128 + 1) * POD > node.alloc_pods {
            reasons.push("Too many pods".to_string());
        }
        for (resource, want) in &pod.requests {
            if *want <= 0 {
                continue;
            }
            let (have, used) = match resource.as_str() {
                "cpu" => (node.alloc_cpu, node.used_cpu),
                "memory" => (node.alloc_memory, node.used_memory),
                r => (
                    node.allocatable.get(r).copied().unwrap_or(0),
                    node.requested.get(r).copied().unwrap_or(0),
                ),
            };
            if used + want > have {
                reasons.push(format!("Insufficient {resource}"));
            }
        }
        (!reasons.is_empty()).then(|| Rejection::resolvable(reasons))
    }

    fn scores(&self) -> bool {
        true
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let free = |alloc: i128, used: i128| -> i64 {
            if alloc <= 0 || used > alloc {
                return 0;
            }
            ((alloc - used) * 100 / alloc) as i64
        };
        let cpu = free(node.alloc_cpu, node.nonzero_cpu + pod.nonzero_cpu);
        let memory = free(node.alloc_memory, node.nonzero_memory + pod.nonzero_memory);
        (cpu + memory) / 2
    }
}

/// NodeResourcesBalancedAllocation: 100 when the node's CPU and memory would be equally used.
pub struct BalancedAllocation;

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn scores(&self) -> bool {
        true
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let fraction = |alloc: i128, used: i128| -> f64 {
            if alloc <= 0 {
                return 1.0;
            }
            (used as f64 / alloc as f64).min(1.0)
        };
        let cpu = fraction(node.alloc_cpu, node.nonzero_cpu + pod.nonzero_cpu);
        let memory = fraction(node.alloc_memory, node.nonzero_memory + pod.nonzero_memory);
        // The standard deviation of two fractions is half their difference.
        ((1.0 - (cpu - memory).abs() / 2.0) * 100.0) as i64
    }
}
