//! Every pod's allocation on this node (its containers' and its own cpu and memory, its
//! effective requests, other resources and host ports), kept in a checkpoint file that is
//! written durably, and the admission of new pods and resizes against the node's allocatable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};

use super::ResizeError;
use crate::kubelet::pods::admit::Refusal;
use crate::placement::ports_conflict;

/// One pod's allocation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// Cpu and memory requests and limits, by container name (init and app containers).
    pub containers: BTreeMap<String, ResourceRequirements>,
    /// The pod's own cpu and memory requests and limits (PodLevelResources), when it sets any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ResourceRequirements>,
    /// The pod's effective requests (millicpu, bytes; overhead included), as upstream's
    /// admission counts them.
    pub cpu_request: i64,
    pub memory_request: i64,
    /// The pod's requests of other resources (ephemeral storage, extended resources,
    /// hugepages), in whole units, for admission.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, i64>,
    /// The host ports the pod holds, for admission.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<crate::placement::HostPort>,
}

/// Why a resize waits: `Deferred` or `Infeasible`, and upstream's message.
pub type Pending = (String, String);

/// Every pod's allocation on this node, with the node's allocatable cpu and memory and its
/// most pods (`--max-pods`).
pub struct Allocations {
    path: PathBuf,
    allocatable: (i64, i64),
    max_pods: i64,
    pods: Mutex<HashMap<String, Allocation>>,
}

/// The other checks of a pod's admission, which come after its resources in upstream's
/// order: node affinity (before host ports) and taints (after them).
#[derive(Default)]
pub struct Predicates {
    pub affinity: Option<Refusal>,
    pub taints: Option<Refusal>,
}

impl Allocations {
    /// The allocations in the checkpoint at `path` (none when it is missing or unreadable).
    pub fn load(path: &Path, allocatable: (i64, i64), max_pods: u32) -> Allocations {
        let pods = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), "ignoring the allocation checkpoint: {e}");
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        Allocations {
            path: path.to_path_buf(),
            allocatable,
            max_pods: i64::from(max_pods),
            pods: Mutex::new(pods),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Allocation>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the checkpoint durably: a new file, synced, renamed over the old.
    fn save(&self, pods: &HashMap<String, Allocation>) -> Result<(), ResizeError> {
        let body = serde_json::to_vec(pods)?;
        let tmp = self.path.with_extension("tmp");
        let err = |source| ResizeError::Checkpoint {
            path: self.path.display().to_string(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }

    pub fn get(&self, uid: &str) -> Option<Allocation> {
        self.lock().get(uid).cloned()
    }

    pub fn set(&self, uid: &str, a: Allocation) -> Result<(), ResizeError> {
        let mut pods = self.lock();
        pods.insert(uid.to_string(), a);
        self.save(&pods)
    }

    /// Forgets the pod `uid` (finished or gone).
    pub fn remove(&self, uid: &str) {
        let mut pods = self.lock();
        if pods.remove(uid).is_some() {
            if let Err(e) = self.save(&pods) {
                tracing::warn!("{e}");
            }
        }
    }

    /// Forgets every pod not in `live`.
    pub fn retain(&self, live: &HashSet<String>) {
        let mut pods = self.lock();
        let before = pods.len();
        pods.retain(|uid, _| live.contains(uid));
        if pods.len() != before {
            if let Err(e) = self.save(&pods) {
                tracing::warn!("{e}");
            }
        }
    }

    /// Whether the pod `uid` fits with `want`: none, or why not, as upstream words it.
    pub fn check(&self, uid: &str, want: &Allocation) -> Option<Pending> {
        let (cpu_cap, mem_cap) = self.allocatable;
        for (name, asked, cap) in [
            ("memory", want.memory_request, mem_cap),
            ("cpu", want.cpu_request, cpu_cap),
        ] {
            if asked > cap {
                return Some((
                    "Infeasible".into(),
                    format!("Node didn't have enough capacity: {name}, requested: {asked}, capacity: {cap}"),
                ));
            }
        }
        insufficient(&self.lock(), self.allocatable, uid, want)
            .map(|(_, message)| ("Deferred".into(), message))
    }

    /// Admits a pod the kubelet sees for the first time, as upstream's general predicates:
    /// allocated when its resources fit beside the other pods' (pods, cpu, memory, then the
    /// others the node's allocatable `offered` lists; extended resources the node does not
    /// list at all are left out, as upstream leaves cluster-level ones), its node affinity
    /// holds, its host ports are free and it tolerates the node's NoExecute taints; else the
    /// first refusal.
    pub fn admit(
        &self,
        uid: &str,
        want: Allocation,
        offered: Option<&BTreeMap<String, Quantity>>,
        predicates: Predicates,
    ) -> Result<(), Refusal> {
        let mut pods = self.lock();
        let others = || {
            pods.iter()
                .filter(|(other, _)| *other != uid)
                .map(|(_, a)| a)
        };
        let max_pods = offered
            .and_then(|o| o.get("pods"))
            .and_then(|q| crate::quantity::milli(&q.0))
            .map_or(self.max_pods, |m| {
                i64::try_from(m / 1000).unwrap_or(i64::MAX)
            });
        let count = i64::try_from(others().count()).unwrap_or(i64::MAX);
        if count + 1 > max_pods {
            return Err(out_of("pods", 1, count, max_pods));
        }
        if let Some((name, message)) = insufficient(&pods, self.allocatable, uid, &want) {
            return Err(Refusal {
                reason: format!("OutOf{name}"),
                message,
            });
        }
        if let Some(offered) = offered {
            let mut names: Vec<&String> = want.other.keys().collect();
            names.sort_by_key(|n| (n.as_str() != "ephemeral-storage", n.as_str()));
            for name in names {
                let asked = want.other[name];
                let cap = match offered.get(name.as_str()) {
                    Some(q) => crate::quantity::milli(&q.0)
                        .map_or(0, |m| i64::try_from(m / 1000).unwrap_or(i64::MAX)),
                    None if is_extended(name) => continue,
                    None => 0,
                };
                let used: i64 = others()
                    .filter_map(|a| a.other.get(name))
                    .fold(0i64, |s, v| s.saturating_add(*v));
                if asked > 0 && asked > cap.saturating_sub(used) {
                    return Err(out_of(name, asked, used, cap));
                }
            }
        }
        if let Some(r) = predicates.affinity {
            return Err(r);
        }
        let taken = want
            .host_ports
            .iter()
            .any(|p| others().any(|a| a.host_ports.iter().any(|u| ports_conflict(p, u))));
        if taken {
            return Err(Refusal::predicate(
                "NodePorts",
                "node(s) didn't have free ports for the requested pod ports",
            ));
        }
        if let Some(r) = predicates.taints {
            return Err(r);
        }
        pods.insert(uid.to_string(), want);
        if let Err(e) = self.save(&pods) {
            tracing::warn!("{e}");
        }
        Ok(())
    }
}

/// Whether `name` is an extended resource (a domain-prefixed name outside kubernetes.io).
fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/")
}

/// Upstream's `InsufficientResourceError` as a refusal.
fn out_of(name: &str, requested: i64, used: i64, capacity: i64) -> Refusal {
    Refusal {
        reason: format!("OutOf{name}"),
        message: format!(
            "Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
}

/// The first resource `want` does not find free beside the other pods' allocations, and
/// upstream's `InsufficientResourceError` message.
fn insufficient(
    pods: &HashMap<String, Allocation>,
    (cpu_cap, mem_cap): (i64, i64),
    uid: &str,
    want: &Allocation,
) -> Option<(String, String)> {
    let (mut cpu, mut mem) = (0i64, 0i64);
    for (other, a) in pods {
        if other != uid {
            cpu = cpu.saturating_add(a.cpu_request);
            mem = mem.saturating_add(a.memory_request);
        }
    }
    for (name, asked, used, cap) in [
        ("cpu", want.cpu_request, cpu, cpu_cap),
        ("memory", want.memory_request, mem, mem_cap),
    ] {
        if asked > 0 && asked.saturating_add(used) > cap {
            return Some((
                name.to_string(),
                format!("Node didn't have enough resource: {name}, requested: {asked}, used: {used}, capacity: {cap}"),
            ));
        }
    }
    None
}
