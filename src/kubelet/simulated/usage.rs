//! What the simulated nodes report to `metrics.k8s.io`: each running container uses what its
//! pod's `simulated.k1s.io/cpu-usage` and `simulated.k1s.io/memory-usage` annotations say, else
//! the configured default (`--simulated-pod-usage`, cpu=1m,memory=1Mi), and a node uses what its
//! pods use. Changing the annotation of a pod changes its usage, which is how tests drive the
//! HorizontalPodAutoscaler.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::resource_metrics::{ContainerUsage, NodeUsage, PodUsage, Source};

/// Each container's CPU use (a quantity).
pub const CPU_USAGE: &str = "simulated.k1s.io/cpu-usage";
/// Each container's memory use (a quantity).
pub const MEMORY_USAGE: &str = "simulated.k1s.io/memory-usage";
/// The window reported with every sample, as a kubelet's 10 s housekeeping.
const WINDOW: Duration = Duration::from_secs(10);

/// Nanocores and bytes of a `cpu=..,memory=..` map (missing ones: 1m and 1Mi).
pub fn defaults(usage: &BTreeMap<String, String>) -> (u64, u64) {
    let cpu = usage.get("cpu").and_then(|q| cpu_nanocores(q));
    let memory = usage.get("memory").and_then(|q| memory_bytes(q));
    (cpu.unwrap_or(1_000_000), memory.unwrap_or(1 << 20))
}

fn cpu_nanocores(q: &str) -> Option<u64> {
    u64::try_from(crate::quantity::milli(q)?.max(0) * 1_000_000).ok()
}

fn memory_bytes(q: &str) -> Option<u64> {
    u64::try_from(crate::quantity::milli(q)?.max(0) / 1000).ok()
}

/// The running pods of the simulated nodes and their usage.
pub struct Usage {
    nodes: Vec<String>,
    default: (u64, u64),
    /// By pod uid: the node and the usage.
    pods: Mutex<HashMap<String, (String, PodUsage)>>,
}

impl Usage {
    pub fn new(nodes: Vec<String>, default: (u64, u64)) -> Usage {
        Usage {
            nodes,
            default,
            pods: Mutex::new(HashMap::new()),
        }
    }

    /// Records a pod of a simulated node as it now is: running pods use resources, others not.
    pub fn observe(&self, pod: &Pod) {
        let uid = pod.uid().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let running = matches!(phase, None | Some("Pending") | Some("Running"))
            && pod.metadata.deletion_timestamp.is_none();
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(node), true) = (node, running) else {
            pods.remove(&uid);
            return;
        };
        let annotations = pod.annotations();
        let cpu = annotations
            .get(CPU_USAGE)
            .and_then(|q| cpu_nanocores(q))
            .unwrap_or(self.default.0);
        let memory = annotations
            .get(MEMORY_USAGE)
            .and_then(|q| memory_bytes(q))
            .unwrap_or(self.default.1);
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| ContainerUsage {
                name: c.name.clone(),
                cpu_nanocores: cpu,
                memory_bytes: memory,
                cpu_usage_ns: 0,
            })
            .collect();
        let usage = PodUsage {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            containers,
        };
        pods.insert(uid, (node, usage));
    }

    /// Forgets a pod that is gone.
    pub fn forget(&self, uid: &str) {
        self.pods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}

impl Source for Usage {
    fn samples(&self) -> Vec<NodeUsage> {
        let now = SystemTime::now();
        let mut by_node: HashMap<&str, NodeUsage> = self
            .nodes
            .iter()
            .map(|n| {
                let sample = NodeUsage {
                    node: n.clone(),
                    timestamp: now,
                    window: WINDOW,
                    cpu_nanocores: 0,
                    memory_bytes: 0,
                    cpu_usage_ns: 0,
                    pods: Vec::new(),
                };
                (n.as_str(), sample)
            })
            .collect();
        let pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        for (node, pod) in pods.values() {
            if let Some(n) = by_node.get_mut(node.as_str()) {
                for c in &pod.containers {
                    n.cpu_nanocores += c.cpu_nanocores;
                    n.memory_bytes += c.memory_bytes;
                }
                n.pods.push(pod.clone());
            }
        }
        by_node.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, phase: &str, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid, "annotations": annotations},
            "spec": {"nodeName": "sim-0", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": phase},
        }))
        .expect("pod")
    }

    #[test]
    fn running_pods_use_their_annotations_or_the_default_and_nodes_add_them_up() {
        let u = Usage::new(
            vec!["sim-0".into(), "sim-1".into()],
            defaults(&BTreeMap::new()),
        );
        u.observe(&pod(
            "p1",
            "Running",
            json!({CPU_USAGE: "250m", MEMORY_USAGE: "64Mi"}),
        ));
        u.observe(&pod("p2", "Running", json!({})));
        u.observe(&pod("p3", "Succeeded", json!({})));
        let mut samples = u.samples();
        samples.sort_by(|a, b| a.node.cmp(&b.node));
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].pods.len(), 2);
        assert_eq!(samples[0].cpu_nanocores, 2 * 250_000_000 + 2 * 1_000_000);
        assert_eq!(samples[0].memory_bytes, 2 * (64 << 20) + 2 * (1 << 20));
        assert!(samples[1].pods.is_empty());
        u.observe(&pod("p1", "Failed", json!({})));
        u.forget("p2");
        assert!(u.samples().iter().all(|n| n.pods.is_empty()));
    }
}
