//! The eviction manager, as the upstream kubelet's: every 10 s it observes the node's signals
//! (`memory.available`, `nodefs.available`, `nodefs.inodesFree`, `imagefs.available`,
//! `imagefs.inodesFree`, `pid.available`; [`signals`]) against the hard thresholds
//! (`--eviction-hard`, upstream's defaults) and the soft ones (`--eviction-soft`), reports
//! MemoryPressure, DiskPressure and PIDPressure on the node as soon as one is crossed (held for
//! `--eviction-pressure-transition-period` after the signal recovers), and while a memory or
//! disk threshold is met (a soft one: crossed for its whole grace period) evicts one pod per
//! pass, ranked as upstream ranks them ([`rank`]; memory by working sets, disk by writable
//! layers, logs and disk-backed emptyDirs): never a critical one. A met threshold holds
//! until `--eviction-minimum-reclaim` more than its level is available. Each pass that acts
//! records EvictionThresholdMet on the node. Under disk pressure unused images go first. The pod's worker stops it (hard: at once; soft: within
//! `--eviction-max-pod-grace-period`) and reports it Failed with reason `Evicted`. Before
//! any threshold, pods past an emptyDir `sizeLimit` or their `ephemeral-storage` limits are
//! evicted at once ([`local`]), as upstream's `localStorageEviction`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::stats::Latest;

mod local;
mod rank;
pub mod signals;

use rank::message;
pub use rank::{is_critical, rank};
pub use signals::{
    crossed, parse, parse_soft, unresolved, with_min_reclaim, EvictionError, Observation, Probe,
    Signal, System, Threshold,
};

/// How often signals are observed (upstream's eviction monitoring interval).
const PERIOD: Duration = Duration::from_secs(10);
pub use crate::cli::kubelet::DEFAULT_EVICTION_HARD as DEFAULT_HARD;

/// The node conditions the eviction manager reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
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

/// A pod the manager chose: the message its status gets and its grace period in seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    pub message: String,
    pub grace: i64,
}

/// Pods the manager chose, by uid; the workers act.
pub type Evictions = Arc<Mutex<HashMap<String, Eviction>>>;

/// The crossed thresholds that are met: hard ones at once, soft ones once crossed for their
/// grace period. `seen` holds when each was first seen crossed, and forgets recovered ones.
fn grace_met(
    crossed: &[(Threshold, Observation)],
    seen: &mut HashMap<(Signal, bool), Instant>,
    now: Instant,
) -> Vec<(Threshold, Observation)> {
    seen.retain(|(s, soft), _| {
        crossed
            .iter()
            .any(|(t, _)| t.signal == *s && t.grace.is_some() == *soft)
    });
    crossed
        .iter()
        .filter(|(t, _)| {
            let since = *seen.entry((t.signal, t.grace.is_some())).or_insert(now);
            t.grace.is_none_or(|g| now.duration_since(since) >= g)
        })
        .cloned()
        .collect()
}

/// The grace period of a pod evicted for `t`: 1 s for a hard threshold (upstream's
/// immediateEvictionGracePeriodSeconds); for a soft one the pod's own (default 30 s), at most
/// `max` unless `max` is negative, as upstream's.
fn pod_grace(t: &Threshold, own: Option<i64>, max: i64) -> i64 {
    if t.grace.is_none() {
        return 1;
    }
    let own = own.unwrap_or(30).max(0);
    if max < 0 {
        own
    } else {
        own.min(max)
    }
}

/// What the manager runs with.
pub struct Manager {
    pub client: Client,
    pub node: String,
    pub thresholds: Vec<Threshold>,
    pub transition: Duration,
    pub probe: Arc<dyn Probe>,
    pub usage: Latest,
    pub pressure: Arc<RwLock<Pressure>>,
    pub evictions: Evictions,
    /// Node-level reclaim under disk pressure: unused images go before any pod.
    pub images: Option<Arc<crate::kubelet::images::gc::Collector>>,
    /// `--eviction-max-pod-grace-period`, for soft evictions.
    pub max_pod_grace: i64,
    /// Records the node's EvictionThresholdMet events, about the node.
    pub events: Option<(
        crate::events::Recorder,
        k8s_openapi::api::core::v1::ObjectReference,
    )>,
}

impl Manager {
    /// Observes and evicts every [`PERIOD`] until `stop`; `changed` hears of new conditions.
    pub async fn run(self, changed: watch::Sender<Pressure>, mut stop: watch::Receiver<bool>) {
        let mut last_seen: HashMap<&'static str, Instant> = HashMap::new();
        let mut first_crossed: HashMap<(Signal, bool), Instant> = HashMap::new();
        // The thresholds met on the last pass: they hold until their minimum reclaim is back.
        let mut met_before: Vec<Threshold> = Vec::new();
        let mut tick = tokio::time::interval(PERIOD);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let obs = self.probe.observe();
            let mut crossed = crossed(&self.thresholds, &obs);
            for (t, o) in unresolved(&met_before, &obs) {
                if !crossed.iter().any(|(x, _)| *x == t) {
                    crossed.push((t, o));
                }
            }
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
            // Pods past their local storage limits go first, at once, as upstream's.
            if self.local_storage_evictions().await {
                continue;
            }
            // Memory first, then disk; PID pressure only taints the node.
            let met = grace_met(&crossed, &mut first_crossed, now);
            met_before = met.iter().map(|(t, _)| t.clone()).collect();
            let Some((t, o)) = met
                .iter()
                .find(|(t, _)| t.signal == Signal::MemoryAvailable)
                .or_else(|| met.iter().find(|(t, _)| t.signal != Signal::PidAvailable))
            else {
                continue;
            };
            if let Some((recorder, node)) = &self.events {
                let message = format!("Attempting to reclaim {}", t.signal.resource());
                recorder
                    .record(
                        node,
                        crate::events::Type::Warning,
                        "EvictionThresholdMet",
                        &message,
                    )
                    .await;
            }
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
        // Relieved once no threshold is met any more, minimum reclaims included, as upstream
        // checks after node-level reclaim.
        let relieved = unresolved(&self.thresholds, &self.probe.observe()).is_empty();
        if relieved {
            tracing::info!(
                "eviction manager: able to reduce resource pressure without evicting pods"
            );
        }
        relieved
    }

    /// What each pod uses of the resource `signal` measures, by `namespace/name`: memory
    /// working sets; bytes or inodes of writable layers, logs and disk-backed emptyDirs. As
    /// upstream's, a dedicated image filesystem counts only writable layers, and the node's
    /// filesystem then only logs and volumes.
    async fn usage_of(&self, pods: &[Pod], signal: Signal) -> HashMap<String, u64> {
        let key = |p: &Pod| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
        let latest = self.usage.get();
        let stats: HashMap<String, &crate::resource_metrics::PodUsage> = latest
            .iter()
            .flat_map(|u| u.pods.iter())
            .map(|p| (format!("{}/{}", p.namespace, p.name), p))
            .collect();
        let rootfs = |p: &Pod, inodes: bool| -> u64 {
            stats
                .get(&key(p))
                .map(|u| {
                    u.containers
                        .iter()
                        .map(|c| {
                            if inodes {
                                c.rootfs_inodes
                            } else {
                                c.rootfs_bytes
                            }
                        })
                        .sum()
                })
                .unwrap_or(0)
        };
        let (nodefs, imagefs, inodes) = match signal {
            Signal::MemoryAvailable | Signal::PidAvailable => {
                let memory = signal == Signal::MemoryAvailable;
                return pods
                    .iter()
                    .map(|p| {
                        let used = stats
                            .get(&key(p))
                            .filter(|_| memory)
                            .map(|u| u.containers.iter().map(|c| c.memory_bytes).sum())
                            .unwrap_or(0);
                        (key(p), used)
                    })
                    .collect();
            }
            Signal::NodefsAvailable => (true, false, false),
            Signal::NodefsInodesFree => (true, false, true),
            Signal::ImagefsAvailable => (false, true, false),
            Signal::ImagefsInodesFree => (false, true, true),
        };
        let probe = self.probe.clone();
        let owned: Vec<Pod> = pods.to_vec();
        let (dedicated, files) = tokio::task::spawn_blocking(move || {
            let dedicated = probe.dedicated_imagefs();
            let files: Vec<(u64, u64)> = if dedicated && imagefs {
                Vec::new()
            } else {
                owned.iter().map(|p| probe.pod_disk(p)).collect()
            };
            (dedicated, files)
        })
        .await
        .unwrap_or_default();
        pods.iter()
            .enumerate()
            .map(|(i, p)| {
                let file = files
                    .get(i)
                    .map_or(0, |(b, n)| if inodes { *n } else { *b });
                let layer = rootfs(p, inodes);
                let used = match (dedicated, nodefs) {
                    (false, _) => layer + file,
                    (true, true) => file,
                    (true, false) => layer,
                };
                (key(p), used)
            })
            .collect()
    }

    /// The uids of the pods chosen before.
    fn pending(&self) -> Vec<String> {
        self.evictions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Evicts (grace 0) every pod past an emptyDir `sizeLimit` or an `ephemeral-storage`
    /// limit; whether any was.
    async fn local_storage_evictions(&self) -> bool {
        let api: Api<Pod> = Api::all(self.client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.node));
        let Ok(pods) = api.list(&lp).await.map(|l| l.items) else {
            return false;
        };
        let pending = self.pending();
        let limited: Vec<Pod> = pods
            .into_iter()
            .filter(|p| {
                local::has_limits(p)
                    && !pending.contains(&p.uid().unwrap_or_default())
                    && !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Failed" | "Succeeded")
                    )
            })
            .collect();
        if limited.is_empty() {
            return false;
        }
        let latest = self.usage.get();
        let probe = self.probe.clone();
        let measured = tokio::task::spawn_blocking(move || {
            limited
                .into_iter()
                .map(|p| {
                    let files = probe.local_usage(&p);
                    (p, files)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut evicted = false;
        for (p, (logs, empty_dirs)) in measured {
            let rootfs = latest
                .iter()
                .flat_map(|u| u.pods.iter())
                .find(|u| Some(&u.namespace) == p.namespace().as_ref() && u.name == p.name_any())
                .map(|u| {
                    u.containers
                        .iter()
                        .map(|c| (c.name.clone(), c.rootfs_bytes))
                        .collect()
                })
                .unwrap_or_default();
            let usage = local::LocalUsage {
                rootfs,
                logs,
                empty_dirs,
            };
            let Some((signal, message)) = local::exceeded(&p, &usage) else {
                continue;
            };
            crate::kubelet::metrics::kubelet().inc(
                &crate::kubelet::metrics::EVICTIONS,
                &[signal],
                1.0,
            );
            tracing::warn!(pod = %p.name_any(), namespace = ?p.namespace(), "evicting: {message}");
            self.evictions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.uid().unwrap_or_default(), Eviction { message, grace: 0 });
            evicted = true;
        }
        evicted
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
        let usage = self.usage_of(&pods, t.signal).await;
        let pending = self.pending();
        // One at a time, as upstream waits for its victim's cleanup: while a pod chosen before is
        // still stopping (a soft eviction's grace period), nobody else goes.
        let stopping = pods.iter().any(|p| {
            pending.contains(&p.uid().unwrap_or_default())
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        });
        if stopping {
            return;
        }
        let candidates: Vec<Pod> = pods
            .into_iter()
            .filter(|p| !pending.contains(&p.uid().unwrap_or_default()))
            .collect();
        let Some(victim) = rank(&candidates, &usage, t.signal).into_iter().next() else {
            tracing::warn!(node = %self.node, "under {} pressure with no pod to evict", t.signal.resource());
            return;
        };
        let message = message(t, o, victim, &usage);
        let own = victim
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds);
        let grace = pod_grace(t, own, self.max_pod_grace);
        tracing::warn!(pod = %victim.name_any(), namespace = ?victim.namespace(), grace, "evicting: {message}");
        crate::kubelet::metrics::kubelet().inc(
            &crate::kubelet::metrics::EVICTIONS,
            &[t.signal.name()],
            1.0,
        );
        self.evictions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                victim.uid().unwrap_or_default(),
                Eviction { message, grace },
            );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn soft_thresholds_act_after_their_grace_period() {
        let mut t = parse("memory.available<1Gi").expect("hard");
        t.extend(parse_soft("nodefs.available<20%", "nodefs.available=90s").expect("soft"));
        let obs: HashMap<Signal, Observation> = [
            (
                Signal::MemoryAvailable,
                Observation {
                    available: 512 << 20,
                    capacity: 8 << 30,
                },
            ),
            (
                Signal::NodefsAvailable,
                Observation {
                    available: 10,
                    capacity: 100,
                },
            ),
        ]
        .into_iter()
        .collect();
        let t0 = Instant::now();
        let mut seen = HashMap::new();
        let c = crossed(&t, &obs);
        let met = grace_met(&c, &mut seen, t0);
        assert_eq!(met.len(), 1, "the hard one at once");
        assert_eq!(met[0].0.signal, Signal::MemoryAvailable);
        let met = grace_met(&c, &mut seen, t0 + Duration::from_secs(60));
        assert_eq!(met.len(), 1, "the soft one still in its grace period");
        let met = grace_met(&c, &mut seen, t0 + Duration::from_secs(91));
        assert_eq!(met.len(), 2);
        // Recovering resets the clock.
        grace_met(&[], &mut seen, t0 + Duration::from_secs(92));
        let met = grace_met(&c, &mut seen, t0 + Duration::from_secs(93));
        assert_eq!(met.len(), 1);
        assert_eq!(pod_grace(&t[1], Some(60), 30), 30);
        assert_eq!(pod_grace(&t[1], Some(10), 30), 10);
        assert_eq!(pod_grace(&t[1], None, -1), 30, "negative: the pod's own");
        assert_eq!(pod_grace(&t[0], Some(60), 30), 1, "hard: at once");
    }
}
