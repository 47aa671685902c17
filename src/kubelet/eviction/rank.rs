//! Which pod goes first, and what its status then says: upstream's ranking (for memory:
//! usage over requests, then priority, then usage above requests; otherwise priority) and
//! upstream's eviction message.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::signals::{Observation, Signal, Threshold};

/// Pods at or above this priority (system-cluster-critical and up) are never evicted.
const CRITICAL_PRIORITY: i32 = 2_000_000_000;

pub(super) fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether the pod is critical to the node, as upstream's `IsCriticalPod`: static or mirror,
/// or of system-critical priority. Such pods are never evicted nor refused for pressure.
pub fn is_critical(p: &Pod) -> bool {
    let static_or_mirror = p.metadata.annotations.as_ref().is_some_and(|a| {
        a.contains_key("kubernetes.io/config.mirror")
            || a.get("kubernetes.io/config.source")
                .is_some_and(|s| s != "api")
    });
    static_or_mirror || priority(p) >= CRITICAL_PRIORITY
}

/// The pod's request of `resource` (all containers), in bytes.
fn request(p: &Pod, resource: &str) -> u64 {
    p.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get(resource))
                .filter_map(|q| crate::quantity::milli(&q.0))
                .map(|m| u64::try_from(m / 1000).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// What a pod may use of the resource `signal` measures before it is a bigger consumer than
/// it asked for: memory and ephemeral-storage requests; nothing for inodes; none for PIDs
/// (ranked by priority alone).
fn allowance(p: &Pod, signal: Signal) -> Option<u64> {
    match signal {
        Signal::MemoryAvailable => Some(request(p, "memory")),
        Signal::NodefsAvailable | Signal::ImagefsAvailable => Some(request(p, "ephemeral-storage")),
        Signal::NodefsInodesFree | Signal::ImagefsInodesFree => Some(0),
        Signal::PidAvailable => None,
    }
}

/// The pods to evict for `signal`, first first, as upstream's rank functions: pods using more
/// than they request (memory, ephemeral-storage; any inodes), then lower priority, then the
/// larger use above requests; for PIDs by priority. `usage`: what each pod uses of the
/// signal's resource (bytes or inodes) by `namespace/name`.
pub fn rank<'a>(pods: &'a [Pod], usage: &HashMap<String, u64>, signal: Signal) -> Vec<&'a Pod> {
    let mut out: Vec<&Pod> = pods
        .iter()
        .filter(|p| !is_critical(p))
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            ) && p.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let used = |p: &Pod| {
        usage
            .get(&format!(
                "{}/{}",
                p.namespace().unwrap_or_default(),
                p.name_any()
            ))
            .copied()
            .unwrap_or(0)
    };
    out.sort_by_key(|p| match allowance(p, signal) {
        Some(r) => {
            let (u, r) = (used(p) as i128, r as i128);
            (u <= r, priority(p), std::cmp::Reverse(u - r))
        }
        None => (false, priority(p), std::cmp::Reverse(0)),
    });
    out
}

/// Upstream's eviction message.
pub(super) fn message(
    t: &Threshold,
    o: &Observation,
    pod: &Pod,
    usage: &HashMap<String, u64>,
) -> String {
    let mut m = format!(
        "The node was low on resource: {}. Threshold quantity: {}, available: {}Ki. ",
        t.signal.resource(),
        t.shown(),
        o.available / 1024
    );
    let bytes = matches!(
        t.signal,
        Signal::MemoryAvailable | Signal::NodefsAvailable | Signal::ImagefsAvailable
    );
    if let (true, Some(asked)) = (bytes, allowance(pod, t.signal)) {
        let used = usage
            .get(&format!(
                "{}/{}",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            ))
            .copied()
            .unwrap_or(0);
        m.push_str(&format!(
            "Pod was using {}Ki, request is {}Ki, has larger consumption of {}. ",
            used / 1024,
            asked / 1024,
            t.signal.resource()
        ));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::eviction::parse;

    fn pod(name: &str, priority: i32, request: Option<&str>) -> Pod {
        let resources = match request {
            Some(r) => serde_json::json!({"requests": {"memory": r}}),
            None => serde_json::json!({}),
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": name},
            "spec": {"priority": priority, "containers": [{"name": "c", "resources": resources}]},
            "status": {"phase": "Running"},
        }))
        .expect("pod")
    }

    #[test]
    fn memory_ranking_follows_upstream() {
        let pods = vec![
            pod("guaranteed", 0, Some("64Mi")),
            pod("besteffort", 0, None),
            pod("important-besteffort", 1000, None),
            pod("hog", 0, Some("10Mi")),
            pod("critical", 2_000_001_000, None),
        ];
        let mut usage = HashMap::new();
        usage.insert("ns/guaranteed".to_string(), 10 << 20);
        usage.insert("ns/besteffort".to_string(), 5 << 20);
        usage.insert("ns/important-besteffort".to_string(), 50 << 20);
        usage.insert("ns/hog".to_string(), 100 << 20);
        usage.insert("ns/critical".to_string(), 500 << 20);
        let order: Vec<String> = rank(&pods, &usage, Signal::MemoryAvailable)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(
            order,
            ["hog", "besteffort", "important-besteffort", "guaranteed"]
        );
        let msg = message(
            &parse("memory.available<100Mi").expect("t")[0],
            &Observation {
                available: 50 << 20,
                capacity: 1 << 30,
            },
            &pods[3],
            &usage,
        );
        assert!(msg.starts_with("The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. Pod was using 102400Ki, request is 10240Ki"), "{msg}");
    }

    #[test]
    fn disk_ranking_follows_ephemeral_storage_requests_then_priority_then_use() {
        let disk = |name: &str, priority: i32, request: Option<&str>| {
            let mut p = pod(name, priority, None);
            if let (Some(r), Some(spec)) = (request, p.spec.as_mut()) {
                spec.containers[0].resources = serde_json::from_value(
                    serde_json::json!({"requests": {"ephemeral-storage": r}}),
                )
                .ok();
            }
            p
        };
        let pods = vec![
            disk("within-request", 0, Some("1Gi")),
            disk("small", 0, None),
            disk("writer", 0, None),
            disk("important-writer", 100, None),
        ];
        let usage: HashMap<String, u64> = [
            ("ns/within-request", 500 << 20),
            ("ns/small", 1 << 20),
            ("ns/writer", 300 << 20),
            ("ns/important-writer", 900 << 20),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let order: Vec<String> = rank(&pods, &usage, Signal::NodefsAvailable)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(
            order,
            ["writer", "small", "important-writer", "within-request"]
        );
        let msg = message(
            &parse("nodefs.available<10%").expect("t")[1 - 1],
            &Observation {
                available: 1 << 30,
                capacity: 20 << 30,
            },
            &pods[2],
            &usage,
        );
        assert!(
            msg.ends_with("Pod was using 307200Ki, request is 0Ki, has larger consumption of ephemeral-storage. "),
            "{msg}"
        );
        // PIDs: priority alone.
        let order: Vec<String> = rank(&pods, &usage, Signal::PidAvailable)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(order[3], "important-writer");
    }
}
