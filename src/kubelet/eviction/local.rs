//! Local ephemeral storage limits, as upstream's `localStorageEviction` enforces them on
//! every pass before any threshold: a disk-backed emptyDir past its `sizeLimit`, then a pod
//! past the sum of its containers' `ephemeral-storage` limits (writable layers, logs and
//! emptyDirs), then a container past its own limit (its writable layer and logs). Such a pod
//! is evicted at once, with upstream's message.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

const RESOURCE: &str = "ephemeral-storage";

/// What a pod uses of local storage, in bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LocalUsage {
    /// Each container's writable layer, by name (from the runtime's stats).
    pub rootfs: HashMap<String, u64>,
    /// Each container's log files, by name.
    pub logs: HashMap<String, u64>,
    /// Each disk-backed emptyDir, by volume name.
    pub empty_dirs: HashMap<String, u64>,
}

/// A quantity in whole bytes.
fn bytes(q: &str) -> Option<u64> {
    crate::quantity::milli(q).map(|m| u64::try_from(m.max(0) / 1000).unwrap_or(u64::MAX))
}

fn limit_of(c: &Container) -> Option<(u64, String)> {
    let q = c.resources.as_ref()?.limits.as_ref()?.get(RESOURCE)?;
    Some((bytes(&q.0)?, q.0.clone()))
}

/// The names of the pod's disk-backed emptyDirs.
pub(super) fn disk_volumes(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| {
            v.empty_dir
                .as_ref()
                .is_some_and(|e| e.medium.as_deref() != Some("Memory"))
        })
        .map(|v| v.name.as_str())
}

/// Whether the pod asks for anything this module enforces (otherwise its files need not be
/// measured).
pub fn has_limits(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let sized = spec.volumes.iter().flatten().any(|v| {
        v.empty_dir
            .as_ref()
            .is_some_and(|e| e.size_limit.is_some() && e.medium.as_deref() != Some("Memory"))
    });
    sized
        || spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| limit_of(c).is_some())
}

/// The eviction message when the pod is past one of its local storage limits.
/// The eviction signals upstream counts these evictions under.
pub const EMPTY_DIR_LIMIT: &str = "emptydirfs.limit";
pub const POD_LIMIT: &str = "ephemeralpodfs.limit";
pub const CONTAINER_LIMIT: &str = "ephemeralcontainerfs.limit";

pub fn exceeded(pod: &Pod, usage: &LocalUsage) -> Option<(&'static str, String)> {
    let spec = pod.spec.as_ref()?;
    // emptyDir sizeLimit.
    for v in spec.volumes.iter().flatten() {
        let Some(e) = v
            .empty_dir
            .as_ref()
            .filter(|e| e.medium.as_deref() != Some("Memory"))
        else {
            continue;
        };
        let Some(limit) = e.size_limit.as_ref() else {
            continue;
        };
        let Some(max) = bytes(&limit.0) else {
            continue;
        };
        if usage.empty_dirs.get(&v.name).copied().unwrap_or(0) > max {
            return Some((
                EMPTY_DIR_LIMIT,
                format!(
                    "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                    v.name, limit.0
                ),
            ));
        }
    }
    // The pod's total: its containers' limits summed, the largest init container's if more.
    let regular: Vec<(u64, String)> = spec.containers.iter().filter_map(limit_of).collect();
    let init_max = spec
        .init_containers
        .iter()
        .flatten()
        .filter_map(limit_of)
        .map(|(b, _)| b)
        .max();
    if !regular.is_empty() || init_max.is_some() {
        let sum: u64 = regular.iter().map(|(b, _)| b).sum();
        let limit = sum.max(init_max.unwrap_or(0));
        let used: u64 = usage.rootfs.values().sum::<u64>()
            + usage.logs.values().sum::<u64>()
            + disk_volumes(pod)
                .filter_map(|name| usage.empty_dirs.get(name))
                .sum::<u64>();
        if used > limit {
            let shown = match regular.as_slice() {
                [(_, one)] if init_max.is_none_or(|m| m <= sum) => one.clone(),
                _ => crate::kubelet::node::binary(limit),
            };
            return Some((
                POD_LIMIT,
                format!(
                    "Pod ephemeral local storage usage exceeds the total limit of containers {shown}. "
                ),
            ));
        }
    }
    // Each container's own.
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let Some((limit, shown)) = limit_of(c) else {
            continue;
        };
        let used = usage.rootfs.get(&c.name).copied().unwrap_or(0)
            + usage.logs.get(&c.name).copied().unwrap_or(0);
        if used > limit {
            return Some((
                CONTAINER_LIMIT,
                format!(
                    "Container {} exceeded its local ephemeral storage limit {shown:?}. ",
                    c.name
                ),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: serde_json::Value) -> Pod {
        serde_json::from_value(yaml).expect("pod")
    }

    #[test]
    fn limits_are_checked_in_upstreams_order() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Mi"}},
                            {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "1Ki"}}],
                "containers": [
                    {"name": "a", "resources": {"limits": {"ephemeral-storage": "2Mi"}}},
                    {"name": "b"},
                ],
            },
        }));
        assert!(has_limits(&p));
        let mut u = LocalUsage::default();
        assert_eq!(exceeded(&p, &u), None);
        // A memory-backed emptyDir is not disk.
        u.empty_dirs.insert("ram".into(), 1 << 30);
        assert_eq!(exceeded(&p, &u), None);
        u.empty_dirs.clear();
        u.empty_dirs.insert("data".into(), 2 << 20);
        assert_eq!(
            exceeded(&p, &u).map(|e| e.1).as_deref(),
            Some("Usage of EmptyDir volume \"data\" exceeds the limit \"1Mi\". ")
        );
        u.empty_dirs.insert("data".into(), 1 << 20);
        u.rootfs.insert("b".into(), 2 << 20);
        assert_eq!(
            exceeded(&p, &u).map(|e| e.1).as_deref(),
            Some("Pod ephemeral local storage usage exceeds the total limit of containers 2Mi. ")
        );
        // One container past its own limit, the pod's total not (two limits).
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "resources": {"limits": {"ephemeral-storage": "1Mi"}}},
                {"name": "b", "resources": {"limits": {"ephemeral-storage": "8Mi"}}},
            ]},
        }));
        let mut u = LocalUsage::default();
        u.logs.insert("a".into(), 2 << 20);
        assert_eq!(
            exceeded(&p, &u).map(|e| e.1).as_deref(),
            Some("Container a exceeded its local ephemeral storage limit \"1Mi\". ")
        );
        let none = pod(serde_json::json!({"spec": {"containers": [{"name": "a"}]}}));
        assert!(!has_limits(&none));
    }
}
