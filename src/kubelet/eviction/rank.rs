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

/// The pod's memory request (all containers), in bytes.
pub(super) fn memory_request(p: &Pod) -> u64 {
    p.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("memory"))
                .filter_map(|q| crate::quantity::milli(&q.0))
                .map(|m| u64::try_from(m / 1000).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// The pods to evict for `signal`, first first: upstream's `rankMemoryPressure` (usage over
/// requests, then priority, then usage above requests); for the other signals, by priority.
/// `usage`: memory in bytes by `namespace/name`.
pub fn rank<'a>(pods: &'a [Pod], usage: &HashMap<String, u64>, signal: Signal) -> Vec<&'a Pod> {
    let mut out: Vec<&Pod> = pods
        .iter()
        .filter(|p| priority(p) < CRITICAL_PRIORITY)
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
    out.sort_by_key(|p| {
        let (u, r) = (used(p) as i128, memory_request(p) as i128);
        if signal == Signal::MemoryAvailable {
            (u <= r, priority(p), std::cmp::Reverse(u - r))
        } else {
            (false, priority(p), std::cmp::Reverse(0))
        }
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
    if t.signal == Signal::MemoryAvailable {
        let used = usage
            .get(&format!(
                "{}/{}",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            ))
            .copied()
            .unwrap_or(0);
        m.push_str(&format!(
            "Pod was using {}Ki, request is {}Ki, has larger consumption of memory. ",
            used / 1024,
            memory_request(pod) / 1024
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
}
