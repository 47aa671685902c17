//! The eviction manager, as the upstream kubelet's: every 10 s it observes the node's signals
//! (`memory.available`, `nodefs.available`, `nodefs.inodesFree`, `imagefs.available`,
//! `imagefs.inodesFree`, `pid.available`) against the hard thresholds (`--eviction-hard`,
//! upstream's defaults), reports MemoryPressure, DiskPressure and PIDPressure on the node
//! (held for `--eviction-pressure-transition-period` after the signal recovers), and while a
//! memory or disk threshold is crossed evicts one pod per pass: never a critical one; first
//! those using more than they request, then the lowest priority, then the most above its
//! request. The pod's worker kills it and reports it Failed with reason `Evicted`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::stats::Latest;

/// How often signals are observed (upstream's eviction monitoring interval).
const PERIOD: Duration = Duration::from_secs(10);
pub use crate::cli::kubelet::DEFAULT_EVICTION_HARD as DEFAULT_HARD;
/// Pods at or above this priority (system-cluster-critical and up) are never evicted.
const CRITICAL_PRIORITY: i32 = 2_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum EvictionError {
    #[error("--eviction-hard: {0}")]
    Threshold(String),
}

/// What a threshold watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    ImagefsInodesFree,
    PidAvailable,
}

impl Signal {
    fn parse(s: &str) -> Option<Signal> {
        Some(match s {
            "memory.available" => Signal::MemoryAvailable,
            "nodefs.available" => Signal::NodefsAvailable,
            "nodefs.inodesFree" => Signal::NodefsInodesFree,
            "imagefs.available" => Signal::ImagefsAvailable,
            "imagefs.inodesFree" => Signal::ImagefsInodesFree,
            "pid.available" => Signal::PidAvailable,
            _ => return None,
        })
    }

    /// The resource named in an eviction message.
    fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodefsAvailable | Signal::ImagefsAvailable => "ephemeral-storage",
            Signal::NodefsInodesFree | Signal::ImagefsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }
}

/// A level: an absolute quantity or a share of the capacity.
#[derive(Debug, Clone, PartialEq)]
pub enum Level {
    Quantity(u64, String),
    Percent(f64),
}

/// One hard threshold: `signal<level`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub level: Level,
}

impl Threshold {
    fn limit(&self, capacity: u64) -> u64 {
        match &self.level {
            Level::Quantity(q, _) => *q,
            Level::Percent(p) => (capacity as f64 * p / 100.0) as u64,
        }
    }

    fn shown(&self) -> String {
        match &self.level {
            Level::Quantity(_, text) => text.clone(),
            Level::Percent(p) => format!("{p}%"),
        }
    }
}

/// Parses `--eviction-hard` (`signal<quantity` or `signal<percent%`, comma-separated).
pub fn parse(spec: &str) -> Result<Vec<Threshold>, EvictionError> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (name, value) = item
                .split_once('<')
                .ok_or_else(|| EvictionError::Threshold(format!("{item:?}: want SIGNAL<VALUE")))?;
            let signal = Signal::parse(name.trim()).ok_or_else(|| {
                EvictionError::Threshold(format!("{name:?} is not an eviction signal"))
            })?;
            let value = value.trim();
            let level = if let Some(p) = value.strip_suffix('%') {
                let p: f64 = p
                    .parse()
                    .ok()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| {
                        EvictionError::Threshold(format!("{value:?} is not a percentage"))
                    })?;
                Level::Percent(p)
            } else {
                let milli = crate::quantity::milli(value)
                    .filter(|m| *m >= 0)
                    .ok_or_else(|| {
                        EvictionError::Threshold(format!("{value:?} is not a quantity"))
                    })?;
                Level::Quantity(
                    u64::try_from(milli / 1000).unwrap_or(u64::MAX),
                    value.to_string(),
                )
            };
            Ok(Threshold { signal, level })
        })
        .collect()
}

/// One signal's observation: what is available of what capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

/// Reads the node's signals; [`System`] from /proc and the filesystems, fakes in tests.
pub trait Probe: Send + Sync {
    fn observe(&self) -> HashMap<Signal, Observation>;
}

/// This machine: /proc/meminfo, statvfs of the data dir (nodefs) and of containerd's root
/// (imagefs), the kernel's pid_max and its count of tasks.
pub struct System {
    pub nodefs: PathBuf,
    pub imagefs: PathBuf,
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn statvfs(path: &std::path::Path) -> Option<(Observation, Observation)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    Some((
        Observation {
            available: st.f_bavail * st.f_frsize,
            capacity: st.f_blocks * st.f_frsize,
        },
        Observation {
            available: st.f_favail,
            capacity: st.f_files,
        },
    ))
}

impl Probe for System {
    fn observe(&self) -> HashMap<Signal, Observation> {
        let mut out = HashMap::new();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        if let (Some(total), Some(avail)) = (
            meminfo_kib(&meminfo, "MemTotal:"),
            meminfo_kib(&meminfo, "MemAvailable:"),
        ) {
            out.insert(
                Signal::MemoryAvailable,
                Observation {
                    available: avail * 1024,
                    capacity: total * 1024,
                },
            );
        }
        for (path, bytes, inodes) in [
            (
                &self.nodefs,
                Signal::NodefsAvailable,
                Signal::NodefsInodesFree,
            ),
            (
                &self.imagefs,
                Signal::ImagefsAvailable,
                Signal::ImagefsInodesFree,
            ),
        ] {
            if let Some((b, i)) = statvfs(path) {
                out.insert(bytes, b);
                // Filesystems without inode limits (btrfs) report none.
                if i.capacity > 0 {
                    out.insert(inodes, i);
                }
            }
        }
        let max: Option<u64> = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let tasks: Option<u64> = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok());
        if let (Some(max), Some(tasks)) = (max, tasks) {
            out.insert(
                Signal::PidAvailable,
                Observation {
                    available: max.saturating_sub(tasks),
                    capacity: max,
                },
            );
        }
        out
    }
}

/// The node conditions the eviction manager reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

/// The thresholds crossed now, each with its observation.
pub fn crossed(
    thresholds: &[Threshold],
    obs: &HashMap<Signal, Observation>,
) -> Vec<(Threshold, Observation)> {
    thresholds
        .iter()
        .filter_map(|t| {
            let o = obs.get(&t.signal)?;
            (o.available < t.limit(o.capacity)).then(|| (t.clone(), *o))
        })
        .collect()
}

fn pressure_of(crossed: &[(Threshold, Observation)]) -> Pressure {
    let mut p = Pressure::default();
    for (t, _) in crossed {
        match t.signal {
            Signal::MemoryAvailable => p.memory = true,
            Signal::PidAvailable => p.pid = true,
            _ => p.disk = true,
        }
    }
    p
}

fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The pod's memory request (all containers), in bytes.
fn memory_request(p: &Pod) -> u64 {
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
fn message(t: &Threshold, o: &Observation, pod: &Pod, usage: &HashMap<String, u64>) -> String {
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

/// Pods the manager chose, by uid, with the message their status gets; the workers act.
pub type Evictions = Arc<Mutex<HashMap<String, String>>>;

/// What the manager runs with.
pub struct Manager {
    pub client: Client,
    pub node: String,
    pub thresholds: Vec<Threshold>,
    pub transition: Duration,
    pub probe: Box<dyn Probe>,
    pub usage: Latest,
    pub pressure: Arc<RwLock<Pressure>>,
    pub evictions: Evictions,
    /// Node-level reclaim under disk pressure: unused images go before any pod.
    pub images: Option<Arc<crate::kubelet::images::gc::Collector>>,
}

impl Manager {
    /// Observes and evicts every [`PERIOD`] until `stop`; `changed` hears of new conditions.
    pub async fn run(self, changed: watch::Sender<Pressure>, mut stop: watch::Receiver<bool>) {
        let mut last_seen: HashMap<&'static str, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(PERIOD);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let crossed = crossed(&self.thresholds, &self.probe.observe());
            let now_p = pressure_of(&crossed);
            let now = Instant::now();
            for (name, on) in [
                ("memory", now_p.memory),
                ("disk", now_p.disk),
                ("pid", now_p.pid),
            ] {
                if on {
                    last_seen.insert(name, now);
                }
            }
            let held = |name: &str| {
                last_seen
                    .get(name)
                    .is_some_and(|t| now - *t < self.transition)
            };
            let reported = Pressure {
                memory: now_p.memory || held("memory"),
                disk: now_p.disk || held("disk"),
                pid: now_p.pid || held("pid"),
            };
            let before = *self.pressure.read().unwrap_or_else(|p| p.into_inner());
            if before != reported {
                tracing::info!(node = %self.node, ?reported, "node pressure changed");
                *self.pressure.write().unwrap_or_else(|p| p.into_inner()) = reported;
                let _ = changed.send(reported);
            }
            // Memory first, then disk; PID pressure only taints the node.
            let Some((t, o)) = crossed
                .iter()
                .find(|(t, _)| t.signal == Signal::MemoryAvailable)
                .or_else(|| {
                    crossed
                        .iter()
                        .find(|(t, _)| t.signal != Signal::PidAvailable)
                })
            else {
                continue;
            };
            if self.reclaimed(t).await {
                continue;
            }
            self.evict_one(t, o).await;
        }
    }

    /// Under disk pressure, removes every unused image first, as upstream's node-level
    /// reclaim does; whether that was enough for `t`.
    async fn reclaimed(&self, t: &Threshold) -> bool {
        let disk = matches!(
            t.signal,
            Signal::NodefsAvailable
                | Signal::NodefsInodesFree
                | Signal::ImagefsAvailable
                | Signal::ImagefsInodesFree
        );
        let Some(images) = self.images.as_ref().filter(|_| disk) else {
            return false;
        };
        match images.free(u64::MAX).await {
            Ok(freed) => tracing::info!(freed, "eviction manager: reclaimed unused images"),
            Err(e) => tracing::warn!("eviction manager: reclaiming images: {e}"),
        }
        let again = crossed(&self.thresholds, &self.probe.observe());
        let relieved = !again.iter().any(|(x, _)| x.signal == t.signal);
        if relieved {
            tracing::info!(
                "eviction manager: able to reduce resource pressure without evicting pods"
            );
        }
        relieved
    }

    async fn evict_one(&self, t: &Threshold, o: &Observation) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.node));
        let pods = match api.list(&lp).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!("listing this node's pods for eviction: {e}");
                return;
            }
        };
        let usage: HashMap<String, u64> = self
            .usage
            .get()
            .map(|u| {
                u.pods
                    .iter()
                    .map(|p| {
                        (
                            format!("{}/{}", p.namespace, p.name),
                            p.containers.iter().map(|c| c.memory_bytes).sum(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let pending: Vec<String> = self
            .evictions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let candidates: Vec<Pod> = pods
            .into_iter()
            .filter(|p| !pending.contains(&p.uid().unwrap_or_default()))
            .collect();
        let Some(victim) = rank(&candidates, &usage, t.signal).into_iter().next() else {
            tracing::warn!(node = %self.node, "under {} pressure with no pod to evict", t.signal.resource());
            return;
        };
        let msg = message(t, o, victim, &usage);
        tracing::warn!(pod = %victim.name_any(), namespace = ?victim.namespace(), "evicting: {msg}");
        self.evictions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(victim.uid().unwrap_or_default(), msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_as_the_kubelet_flag() {
        let t = parse(DEFAULT_HARD).expect("defaults");
        assert_eq!(t.len(), 5);
        assert_eq!(t[0].signal, Signal::MemoryAvailable);
        assert_eq!(t[0].limit(0), 100 * 1024 * 1024);
        assert_eq!(t[1].limit(1000), 100, "10% of the capacity");
        assert!(parse("memory.available>1Gi").is_err());
        assert!(parse("cpu.available<1").is_err());
        assert!(parse("nodefs.available<120%").is_err());
    }

    #[test]
    fn crossing_a_threshold_is_pressure() {
        let t = parse("memory.available<1Gi,nodefs.available<10%").expect("parse");
        let mut obs = HashMap::new();
        obs.insert(
            Signal::MemoryAvailable,
            Observation {
                available: 2 << 30,
                capacity: 8 << 30,
            },
        );
        obs.insert(
            Signal::NodefsAvailable,
            Observation {
                available: 5,
                capacity: 100,
            },
        );
        let c = crossed(&t, &obs);
        assert_eq!(
            pressure_of(&c),
            Pressure {
                memory: false,
                disk: true,
                pid: false
            }
        );
    }

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
