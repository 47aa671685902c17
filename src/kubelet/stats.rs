//! The node's and its containers' usage, sampled every 10 s as the kubelet's resource
//! analyzer does: container CPU as the rate of CRI's cumulative `usage_core_nano_seconds`
//! between samples and memory as the working set; the node's CPU from /proc/stat and memory
//! as MemTotal less MemAvailable. The last sample feeds `metrics.k8s.io` in this process
//! ([`crate::resource_metrics::Source`]) and the kubelet API's `/metrics/resource` (written by
//! [`crate::resource_metrics::prometheus`]) and `/stats/summary` ([`super::summary`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::cri::{Runtime, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};
use crate::resource_metrics::{group_pods, ContainerUsage, NodeUsage, Source};

/// How often usage is sampled (the kubelet's housekeeping interval for metrics).
pub const PERIOD: Duration = Duration::from_secs(10);

/// The latest sample, shared with whoever reports it.
#[derive(Clone, Default)]
pub struct Latest(Arc<RwLock<Option<NodeUsage>>>);

impl Latest {
    pub fn get(&self) -> Option<NodeUsage> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn set(&self, u: NodeUsage) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(u);
    }
}

impl Source for Latest {
    fn samples(&self) -> Vec<NodeUsage> {
        self.get().into_iter().collect()
    }
}

/// Busy and total jiffies of /proc/stat's `cpu` line.
fn cpu_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// MemTotal less MemAvailable, in bytes.
fn memory_used(meminfo: &str) -> u64 {
    let kb = |key: &str| super::eviction::signals::meminfo_kib(meminfo, key).unwrap_or(0);
    kb("MemTotal:").saturating_sub(kb("MemAvailable:")) * 1024
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Samples until `stop` turns true.
pub async fn run(
    node: String,
    runtime: Arc<dyn Runtime>,
    latest: Latest,
    mut stop: watch::Receiver<bool>,
) {
    let ticks = clock_ticks();
    let mut prev_cpu: Option<(u64, std::time::Instant)> = None;
    // Cumulative container CPU (ns) and its timestamp (ns), by container id.
    let mut prev: HashMap<String, (u64, i64)> = HashMap::new();
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = std::time::Instant::now();
        let node_cpu = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| cpu_jiffies(&s))
            .map(|(busy, _)| busy);
        let node_nanocores = match (node_cpu, prev_cpu) {
            (Some(busy), Some((was, at))) if busy >= was => {
                let secs = now.duration_since(at).as_secs_f64().max(0.001);
                ((busy - was) as f64 * 1e9 / ticks as f64 / secs) as u64
            }
            _ => 0,
        };
        if let Some(busy) = node_cpu {
            prev_cpu = Some((busy, now));
        }
        let stats = match runtime.list_container_stats().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("container stats: {e}");
                continue;
            }
        };
        // Start times, as upstream's CRI stats provider takes them: the containers' creation.
        let started: HashMap<String, i64> = runtime
            .list_containers(None)
            .await
            .map(|cs| cs.into_iter().map(|c| (c.id, c.created_at)).collect())
            .unwrap_or_default();
        let mut containers = Vec::new();
        let mut uids: HashMap<(String, String), String> = HashMap::new();
        let mut seen = HashMap::new();
        for s in stats {
            let Some(a) = s.attributes else { continue };
            let (Some(ns), Some(pod)) = (
                a.labels.get(LABEL_POD_NAMESPACE),
                a.labels.get(LABEL_POD_NAME),
            ) else {
                continue;
            };
            if let Some(uid) = a.labels.get(LABEL_POD_UID) {
                uids.insert((ns.clone(), pod.clone()), uid.clone());
            }
            let name = a.metadata.map(|m| m.name).unwrap_or_default();
            let cpu = s.cpu.unwrap_or_default();
            let used = cpu.usage_core_nano_seconds.map_or(0, |v| v.value);
            let nanocores = match (cpu.usage_nano_cores.map(|v| v.value), prev.get(&a.id)) {
                (Some(n), _) if n > 0 => n,
                (_, Some((was, at))) if used >= *was && cpu.timestamp > *at => {
                    ((used - was) as f64 / ((cpu.timestamp - at) as f64 / 1e9)) as u64
                }
                _ => 0,
            };
            seen.insert(a.id.clone(), (used, cpu.timestamp));
            let layer = s.writable_layer.as_ref().map_or((0, 0), |w| {
                (
                    w.used_bytes.as_ref().map_or(0, |v| v.value),
                    w.inodes_used.as_ref().map_or(0, |v| v.value),
                )
            });
            let memory = s
                .memory
                .and_then(|m| m.working_set_bytes)
                .map_or(0, |v| v.value);
            containers.push((
                (ns.clone(), pod.clone()),
                ContainerUsage {
                    name,
                    cpu_nanocores: nanocores,
                    memory_bytes: memory,
                    cpu_usage_ns: used,
                    rootfs_bytes: layer.0,
                    rootfs_inodes: layer.1,
                    start_unix_ns: started.get(&a.id).copied().unwrap_or(0),
                },
            ));
        }
        prev = seen;
        let memory = std::fs::read_to_string("/proc/meminfo")
            .map(|m| memory_used(&m))
            .unwrap_or(0);
        latest.set(NodeUsage {
            node: node.clone(),
            timestamp: SystemTime::now(),
            window: PERIOD,
            cpu_nanocores: node_nanocores,
            memory_bytes: memory,
            cpu_usage_ns: node_cpu.map_or(0, |busy| busy * (1_000_000_000 / ticks.max(1))),
            pods: group_pods(containers)
                .into_iter()
                .map(|mut p| {
                    p.uid = uids
                        .remove(&(p.namespace.clone(), p.name.clone()))
                        .unwrap_or_default();
                    p
                })
                .collect(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_the_kubelet_does() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(cpu_jiffies(stat), Some((161, 1181)));
        let meminfo = "MemTotal:       1000 kB\nMemFree: 10 kB\nMemAvailable:    400 kB\n";
        assert_eq!(memory_used(meminfo), 600 * 1024);
    }
}
