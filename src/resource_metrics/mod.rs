//! Resource usage as kubelets report it on `/metrics/resource` and metrics-server serves it on
//! `metrics.k8s.io`: CPU in nanocores and memory working set in bytes, per node and per
//! container, with the time and window of the sample.
//!
//! k1s serves `metrics.k8s.io` itself. Kubelets in this process (the simulated nodes and the
//! real kubelet of `k1s server`) register a [`Source`] with the process's [`Sources`], which the
//! API server reads at request time; the kubelets of agents are scraped on `/metrics/resource`
//! as metrics-server does ([`prometheus`] is that format, written and read).

pub mod prometheus;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// The Node annotation naming the path of the node's `/metrics/resource` on its kubelet port,
/// which metrics-server 0.7+ honours (KWOK's fake nodes use it; so do k1s agents' simulated
/// nodes).
pub const RESOURCE_METRICS_PATH: &str = "metrics.k8s.io/resource-metrics-path";

/// One container's usage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    pub name: String,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
    /// Cumulative CPU time in nanoseconds (0 when not known).
    pub cpu_usage_ns: u64,
    /// The writable layer's bytes and inodes (0 when not known).
    pub rootfs_bytes: u64,
    pub rootfs_inodes: u64,
    /// When the container started, in nanoseconds since the Unix epoch (0 when not known).
    pub start_unix_ns: i64,
}

/// One pod's usage, by container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    /// The pod's uid, where the sampler knows it ("" otherwise).
    pub uid: String,
    pub containers: Vec<ContainerUsage>,
}

/// One node's usage and that of its pods, as one sample.
#[derive(Clone, Debug)]
pub struct NodeUsage {
    pub node: String,
    pub timestamp: SystemTime,
    /// The interval the CPU rate was measured over.
    pub window: Duration,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
    /// Cumulative CPU time in nanoseconds (0 when not known).
    pub cpu_usage_ns: u64,
    pub pods: Vec<PodUsage>,
}

/// Containers gathered into their pods (by namespace and name), pods in name order.
pub fn group_pods(
    containers: impl IntoIterator<Item = ((String, String), ContainerUsage)>,
) -> Vec<PodUsage> {
    let mut pods: std::collections::BTreeMap<(String, String), Vec<ContainerUsage>> =
        std::collections::BTreeMap::new();
    for (pod, c) in containers {
        pods.entry(pod).or_default().push(c);
    }
    pods.into_iter()
        .map(|((namespace, name), containers)| PodUsage {
            namespace,
            name,
            uid: String::new(),
            containers,
        })
        .collect()
}

/// A kubelet that reports its node's usage.
pub trait Source: Send + Sync {
    /// The latest sample of every node this source runs.
    fn samples(&self) -> Vec<NodeUsage>;
}

/// The usage sources of this process.
#[derive(Clone, Default)]
pub struct Sources(Arc<RwLock<Vec<Arc<dyn Source>>>>);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.read().map(|s| s.len()).unwrap_or(0);
        write!(f, "Sources({n})")
    }
}

impl Sources {
    /// Adds a source; it reports until the returned guard is dropped (a kubelet that stops and
    /// starts again registers anew, so its node is not counted twice).
    pub fn register(&self, source: Arc<dyn Source>) -> Registered {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(source.clone());
        Registered {
            sources: self.clone(),
            source,
        }
    }

    /// Every node's latest sample.
    pub fn samples(&self) -> Vec<NodeUsage> {
        let sources = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        sources.iter().flat_map(|s| s.samples()).collect()
    }
}

/// A registered [`Source`]; dropping it removes the source.
#[must_use = "the source is removed when this is dropped"]
pub struct Registered {
    sources: Sources,
    source: Arc<dyn Source>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sources
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| !Arc::ptr_eq(s, &self.source));
    }
}

/// CPU as metrics-server prints it (`12345n`).
pub fn format_cpu(nanocores: u64) -> String {
    format!("{nanocores}n")
}

/// Memory as metrics-server prints it (`2048Ki`, rounded down to KiB).
pub fn format_memory(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Source for Fixed {
        fn samples(&self) -> Vec<NodeUsage> {
            vec![NodeUsage {
                node: "n".into(),
                timestamp: SystemTime::UNIX_EPOCH,
                window: Duration::from_secs(10),
                cpu_nanocores: 5,
                memory_bytes: 4096,
                cpu_usage_ns: 0,
                pods: vec![],
            }]
        }
    }

    #[test]
    fn sources_report_every_registered_node() {
        let s = Sources::default();
        assert!(s.samples().is_empty());
        let a = s.register(Arc::new(Fixed));
        let b = s.register(Arc::new(Fixed));
        assert_eq!(s.samples().len(), 2);
        drop(a);
        assert_eq!(s.samples().len(), 1);
        drop(b);
        assert!(s.samples().is_empty());
        assert_eq!(format_cpu(250_000_000), "250000000n");
        assert_eq!(format_memory(1_048_576 + 100), "1024Ki");
    }
}
