//! What the simulated nodes report to `metrics.k8s.io`: each running container uses what its
//! pod's `simulated.k1s.io/cpu-usage` and `simulated.k1s.io/memory-usage` annotations say, else
//! the configured default (`--simulated-pod-usage`, cpu=1m,memory=1Mi), and a node uses what its
//! pods use. Changing the annotation of a pod changes its usage, which is how tests drive the
//! HorizontalPodAutoscaler.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

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

/// A running container's usage: a steady rate since `since`, on top of what it used before.
struct Counter {
    name: String,
    nanocores: u64,
    memory_bytes: u64,
    since: Instant,
    /// CPU time used before `since`.
    used_ns: u64,
}

impl Counter {
    /// Cumulative CPU time at `now`, as a kubelet's `container_cpu_usage_seconds_total`.
    fn used_at(&self, now: Instant) -> u64 {
        let secs = now.saturating_duration_since(self.since).as_secs_f64();
        self.used_ns + (self.nanocores as f64 * secs) as u64
    }
}

struct Running {
    node: String,
    namespace: String,
    name: String,
    containers: Vec<Counter>,
}

#[derive(Default)]
struct State {
    /// By pod uid.
    pods: HashMap<String, Running>,
    /// By node: CPU time of the pods that have stopped, so node counters never go back.
    gone_ns: HashMap<String, u64>,
}

impl State {
    fn remove(&mut self, uid: &str, now: Instant) {
        if let Some(r) = self.pods.remove(uid) {
            let used: u64 = r.containers.iter().map(|c| c.used_at(now)).sum();
            *self.gone_ns.entry(r.node).or_default() += used;
        }
    }
}

/// The running pods of the simulated nodes and their usage: rates, working sets and the
/// cumulative CPU counters a kubelet's `/metrics/resource` carries.
pub struct Usage {
    nodes: Vec<String>,
    default: (u64, u64),
    state: Mutex<State>,
}

impl Usage {
    pub fn new(nodes: Vec<String>, default: (u64, u64)) -> Usage {
        Usage {
            nodes,
            default,
            state: Mutex::new(State::default()),
        }
    }

    /// Records a pod of a simulated node as it now is: running pods use resources, others not.
    pub fn observe(&self, pod: &Pod) {
        let now = Instant::now();
        let uid = pod.uid().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let running = matches!(phase, None | Some("Pending") | Some("Running"))
            && pod.metadata.deletion_timestamp.is_none();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(node), true) = (node, running) else {
            state.remove(&uid, now);
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
        if state.pods.get(&uid).is_some_and(|r| r.node != node) {
            state.remove(&uid, now);
        }
        let running = state.pods.entry(uid).or_insert_with(|| Running {
            node,
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            containers: Vec::new(),
        });
        let names = pod.spec.iter().flat_map(|s| s.containers.iter());
        let mut containers = Vec::new();
        for c in names {
            let before = running
                .containers
                .iter()
                .position(|k| k.name == c.name)
                .map(|i| running.containers.swap_remove(i));
            let used_ns = before.as_ref().map_or(0, |k| k.used_at(now));
            containers.push(Counter {
                name: c.name.clone(),
                nanocores: cpu,
                memory_bytes: memory,
                since: now,
                used_ns,
            });
        }
        running.containers = containers;
    }

    /// Forgets a pod that is gone.
    pub fn forget(&self, uid: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.remove(uid, Instant::now());
    }
}

impl Source for Usage {
    fn samples(&self) -> Vec<NodeUsage> {
        self.build(None)
    }
}

impl Usage {
    /// The sample of node `node` now (None: not one of these nodes).
    pub fn sample(&self, node: &str) -> Option<NodeUsage> {
        self.build(Some(node)).pop()
    }

    /// Samples of every node, or of `only`.
    fn build(&self, only: Option<&str>) -> Vec<NodeUsage> {
        let now = Instant::now();
        let timestamp = SystemTime::now();
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_node: HashMap<&str, NodeUsage> = self
            .nodes
            .iter()
            .filter(|n| only.is_none_or(|o| o == n.as_str()))
            .map(|n| {
                let sample = NodeUsage {
                    node: n.clone(),
                    timestamp,
                    window: WINDOW,
                    cpu_nanocores: 0,
                    memory_bytes: 0,
                    cpu_usage_ns: state.gone_ns.get(n).copied().unwrap_or(0),
                    pods: Vec::new(),
                };
                (n.as_str(), sample)
            })
            .collect();
        for r in state.pods.values() {
            let Some(n) = by_node.get_mut(r.node.as_str()) else {
                continue;
            };
            let containers: Vec<ContainerUsage> = r
                .containers
                .iter()
                .map(|c| ContainerUsage {
                    name: c.name.clone(),
                    cpu_nanocores: c.nanocores,
                    memory_bytes: c.memory_bytes,
                    cpu_usage_ns: c.used_at(now),
                    ..Default::default()
                })
                .collect();
            for c in &containers {
                n.cpu_nanocores += c.cpu_nanocores;
                n.memory_bytes += c.memory_bytes;
                n.cpu_usage_ns += c.cpu_usage_ns;
            }
            n.pods.push(PodUsage {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                uid: String::new(),
                containers,
            });
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

    #[test]
    fn cpu_counters_grow_at_the_rate_and_node_counters_never_go_back() {
        let u = Usage::new(vec!["sim-0".into()], defaults(&BTreeMap::new()));
        u.observe(&pod("p1", "Running", json!({CPU_USAGE: "1"})));
        std::thread::sleep(Duration::from_millis(50));
        let first = u.samples().remove(0);
        let c = &first.pods[0].containers[0];
        // 1 core for at least 50 ms.
        assert!(c.cpu_usage_ns >= 50_000_000, "{}", c.cpu_usage_ns);
        // A new rate keeps what was used.
        u.observe(&pod("p1", "Running", json!({CPU_USAGE: "0"})));
        let second = u.samples().remove(0);
        assert!(second.pods[0].containers[0].cpu_usage_ns >= c.cpu_usage_ns);
        u.forget("p1");
        let third = u.samples().remove(0);
        assert!(third.pods.is_empty());
        assert!(third.cpu_usage_ns >= second.cpu_usage_ns);
    }
}
