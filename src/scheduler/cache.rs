//! What the scheduler knows of the cluster: each node with the pods on it and what they request
//! (including pods it has assumed onto a node while their binding is on its way), and what each
//! pending pod asks for, computed once per pod.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use crate::quantity::milli;

/// Quantities by resource name, in thousandths (cpu in millicores, memory in milli-bytes).
pub type Resources = BTreeMap<String, i128>;

/// The hasher of [`NodeInfo::groups`]: a group number is a hash, taken as it is.
#[derive(Default)]
pub struct GroupHasher(u64);

impl Hasher for GroupHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Requests a pod without any is counted with when spreading load (upstream's non-zero
/// defaults): 100m CPU and 200 MiB.
pub const DEFAULT_CPU: i128 = 100;
pub const DEFAULT_MEMORY: i128 = 200 * 1024 * 1024 * 1000;

/// The topology keys of upstream's default spread constraints. The cache numbers their label
/// values, so spreading counts pods per domain without comparing strings for every node.
pub const TOPOLOGY_KEYS: [&str; 2] = ["kubernetes.io/hostname", "topology.kubernetes.io/zone"];

/// A host port a pod uses: (protocol, host IP, port).
pub use crate::placement::HostPort;

/// A pod, with what scheduling needs of it worked out.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub uid: String,
    pub requests: Resources,
    /// CPU and memory with the non-zero defaults, for scoring.
    pub nonzero_cpu: i128,
    pub nonzero_memory: i128,
    pub ports: Vec<HostPort>,
    pub priority: i32,
    /// A hash of the namespace and the labels: pods of one template share it.
    pub group: u64,
    /// Whether the pod has required pod anti-affinity terms.
    pub anti_affinity: bool,
}

/// The hash pods with the same namespace and labels share.
pub fn group_of(ns: &str, labels: &BTreeMap<String, String>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ns.hash(&mut h);
    labels.hash(&mut h);
    h.finish()
}

fn quantities(
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Resources {
    list.into_iter()
        .flatten()
        .filter_map(|(k, q)| milli(&q.0).map(|v| (k.clone(), v)))
        .collect()
}

/// A container's requests as upstream counts them once a resize may be under way: the most of
/// its spec, what the kubelet allocated and what is applied (without the spec while the
/// kubelet finds the resize infeasible).
fn container_requests(
    pod: &Pod,
    c: &k8s_openapi::api::core::v1::Container,
    init: bool,
) -> Resources {
    let spec = quantities(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    let Some(status) = pod.status.as_ref() else {
        return spec;
    };
    let statuses = if init {
        status.init_container_statuses.as_ref()
    } else {
        status.container_statuses.as_ref()
    };
    let Some(s) = statuses
        .into_iter()
        .flatten()
        .find(|s| s.name == c.name)
        .filter(|s| s.resources.is_some() || s.allocated_resources.is_some())
    else {
        return spec;
    };
    let infeasible = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "PodResizePending" && c.reason.as_deref() == Some("Infeasible"));
    let mut out = if infeasible { Resources::new() } else { spec };
    max(&mut out, &quantities(s.allocated_resources.as_ref()));
    max(
        &mut out,
        &quantities(s.resources.as_ref().and_then(|r| r.requests.as_ref())),
    );
    out
}

/// A pod's own requests (PodLevelResources), as upstream counts them once a resize may be
/// under way: the most of its spec, what the kubelet allocated and what its cgroup has
/// (without the spec while the kubelet finds the resize infeasible).
fn pod_level_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref().and_then(|s| s.resources.as_ref()) else {
        return Resources::new();
    };
    let status = pod.status.as_ref();
    let infeasible = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "PodResizePending" && c.reason.as_deref() == Some("Infeasible"));
    let mut out = if infeasible {
        Resources::new()
    } else {
        quantities(spec.requests.as_ref())
    };
    if let Some(s) = status {
        max(&mut out, &quantities(s.allocated_resources.as_ref()));
        max(
            &mut out,
            &quantities(s.resources.as_ref().and_then(|r| r.requests.as_ref())),
        );
    }
    // Only what the pod asks for itself stands for its containers' (the kubelet reports the
    // rest of its figures from the containers).
    let asked = spec.requests.as_ref();
    out.retain(|k, _| {
        crate::quota::pod_level_resource(k) && asked.is_some_and(|r| r.contains_key(k))
    });
    out
}

fn add(into: &mut Resources, r: &Resources) {
    for (k, v) in r {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn max(into: &mut Resources, r: &Resources) {
    for (k, v) in r {
        let e = into.entry(k.clone()).or_default();
        *e = (*e).max(*v);
    }
}

/// A pod's effective requests, as upstream's `PodRequests`: its containers plus its sidecars,
/// or the largest init container (with the sidecars started before it) when that is more, or
/// its pod-level requests where it sets them, plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::new();
    };
    let mut sum = Resources::new();
    for c in &spec.containers {
        add(&mut sum, &container_requests(pod, c, false));
    }
    let mut sidecars = Resources::new();
    let mut init_peak = Resources::new();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(pod, c, true);
        if c.restart_policy.as_deref() == Some("Always") {
            add(&mut sidecars, &r);
            max(&mut init_peak, &sidecars);
        } else {
            let mut during = r;
            add(&mut during, &sidecars);
            max(&mut init_peak, &during);
        }
    }
    add(&mut sum, &sidecars);
    max(&mut sum, &init_peak);
    // A pod's own requests (PodLevelResources) stand for its containers'.
    for (k, v) in pod_level_requests(pod) {
        sum.insert(k, v);
    }
    for (k, q) in spec.overhead.iter().flatten() {
        if let Some(v) = milli(&q.0) {
            *sum.entry(k.clone()).or_default() += v;
        }
    }
    sum.retain(|_, v| *v > 0);
    sum
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let requests = pod_requests(&pod);
        let spec = pod.spec.as_ref();
        let ports = spec.map(crate::placement::host_ports).unwrap_or_default();
        PodInfo {
            uid: pod.uid().unwrap_or_default(),
            nonzero_cpu: requests.get("cpu").copied().unwrap_or(DEFAULT_CPU),
            nonzero_memory: requests.get("memory").copied().unwrap_or(DEFAULT_MEMORY),
            requests,
            ports,
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            group: group_of(&pod.namespace().unwrap_or_default(), pod.labels()),
            anti_affinity: spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .is_some_and(|t| !t.is_empty()),
            pod,
        }
    }
}

/// One node and what is placed on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub allocatable: Resources,
    pub requested: Resources,
    pub nonzero_cpu: i128,
    pub nonzero_memory: i128,
    pub pods: HashMap<String, Arc<PodInfo>>,
    pub ports: HashSet<HostPort>,
    /// Pods per [`PodInfo::group`] (read for every node for every pod scheduled: the group is
    /// a hash already, so it is its own hash).
    pub groups: HashMap<u64, i64, BuildHasherDefault<GroupHasher>>,
    /// Pods with required anti-affinity.
    pub anti_affinity: usize,
    /// The node's domain number for each of [`TOPOLOGY_KEYS`] (`None`: no such label).
    pub domains: [Option<u32>; 2],
    /// Allocatable cpu, memory and pods (in thousandths), read for every pod scheduled.
    pub alloc_cpu: i128,
    pub alloc_memory: i128,
    pub alloc_pods: i128,
    /// Requested cpu and memory (`requested`'s), read for every pod scheduled.
    pub used_cpu: i128,
    pub used_memory: i128,
}

impl NodeInfo {
    fn new(node: Arc<Node>) -> NodeInfo {
        let mut info = NodeInfo {
            name: node.name_any(),
            allocatable: Resources::new(),
            node,
            requested: Resources::new(),
            nonzero_cpu: 0,
            nonzero_memory: 0,
            pods: HashMap::new(),
            ports: HashSet::new(),
            groups: HashMap::default(),
            anti_affinity: 0,
            domains: [None; 2],
            alloc_cpu: 0,
            used_cpu: 0,
            used_memory: 0,
            alloc_memory: 0,
            alloc_pods: 0,
        };
        info.set_node(info.node.clone());
        info
    }

    fn set_node(&mut self, node: Arc<Node>) {
        self.allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .into_iter()
            .flatten()
            .filter_map(|(k, q)| milli(&q.0).map(|v| (k.clone(), v)))
            .collect();
        let get = |r: &str| self.allocatable.get(r).copied().unwrap_or(0);
        (self.alloc_cpu, self.alloc_memory, self.alloc_pods) =
            (get("cpu"), get("memory"), get("pods"));
        self.node = node;
    }

    /// Counts a pod on this node.
    pub fn add(&mut self, p: Arc<PodInfo>) {
        add(&mut self.requested, &p.requests);
        self.nonzero_cpu += p.nonzero_cpu;
        self.nonzero_memory += p.nonzero_memory;
        self.ports.extend(p.ports.iter().cloned());
        *self.groups.entry(p.group).or_insert(0) += 1;
        self.anti_affinity += usize::from(p.anti_affinity);
        if let Some(old) = self.pods.insert(p.uid.clone(), p) {
            // Replaced without a remove: undo the old one's share.
            for (k, v) in &old.requests {
                if let Some(e) = self.requested.get_mut(k) {
                    *e -= v;
                }
            }
            self.nonzero_cpu -= old.nonzero_cpu;
            self.nonzero_memory -= old.nonzero_memory;
            self.forget_group(&old);
        }
        self.note_used();
    }

    fn note_used(&mut self) {
        let get = |r: &str| self.requested.get(r).copied().unwrap_or(0);
        (self.used_cpu, self.used_memory) = (get("cpu"), get("memory"));
    }

    /// Stops counting a pod on this node.
    pub fn remove(&mut self, uid: &str) {
        let Some(p) = self.pods.remove(uid) else {
            return;
        };
        for (k, v) in &p.requests {
            if let Some(e) = self.requested.get_mut(k) {
                *e -= v;
            }
        }
        self.nonzero_cpu -= p.nonzero_cpu;
        self.nonzero_memory -= p.nonzero_memory;
        self.forget_group(&p);
        self.note_used();
        self.ports = self
            .pods
            .values()
            .flat_map(|p| p.ports.iter().cloned())
            .collect();
    }

    fn forget_group(&mut self, p: &PodInfo) {
        if let Some(n) = self.groups.get_mut(&p.group) {
            *n -= 1;
            if *n <= 0 {
                self.groups.remove(&p.group);
            }
        }
        self.anti_affinity -= usize::from(p.anti_affinity);
    }

    /// The node's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node.labels()
    }
}

/// Nodes and the pods placed on them.
#[derive(Default)]
pub struct Cache {
    pub nodes: HashMap<String, NodeInfo>,
    /// Node names in a stable order, for round-robin search.
    pub order: Vec<String>,
    /// Where each placed pod is, and whether it is only assumed so far.
    placed: HashMap<String, (String, bool)>,
    /// Placed pods whose node is not known (yet).
    orphans: HashMap<String, Arc<PodInfo>>,
    /// Per [`TOPOLOGY_KEYS`] entry: each label value seen on a node, numbered from 0.
    domain_ids: [HashMap<String, u32>; 2],
}

impl Cache {
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.name_any();
        match self.nodes.get_mut(&name) {
            Some(info) => info.set_node(node),
            None => {
                let mut info = NodeInfo::new(node);
                let waiting: Vec<String> = self
                    .orphans
                    .iter()
                    .filter(|(_, p)| {
                        p.pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
                            == Some(name.as_str())
                    })
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in waiting {
                    if let Some(p) = self.orphans.remove(&uid) {
                        info.add(p);
                    }
                }
                self.nodes.insert(name.clone(), info);
                self.order.push(name.clone());
            }
        }
        self.number_domains(&name);
    }

    /// Numbers the node's topology domains (a value keeps its number for the cache's life).
    fn number_domains(&mut self, name: &str) {
        let Some(info) = self.nodes.get_mut(name) else {
            return;
        };
        for (i, key) in TOPOLOGY_KEYS.iter().enumerate() {
            info.domains[i] = info.node.labels().get(*key).map(|value| {
                let ids = &mut self.domain_ids[i];
                match ids.get(value) {
                    Some(id) => *id,
                    None => {
                        let id = ids.len() as u32;
                        ids.insert(value.clone(), id);
                        id
                    }
                }
            });
        }
    }

    /// How many values of `TOPOLOGY_KEYS[i]` have numbers: the size of a table indexed by them.
    pub fn domain_count(&self, i: usize) -> usize {
        self.domain_ids[i].len()
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.remove(name) {
            for (uid, p) in info.pods {
                self.orphans.insert(uid, p);
            }
        }
        self.order.retain(|n| n != name);
    }

    /// Places (or moves) a pod the API says is bound to `node`.
    pub fn confirm(&mut self, p: Arc<PodInfo>, node: &str) {
        self.remove_pod(&p.uid);
        self.placed.insert(p.uid.clone(), (node.to_string(), false));
        match self.nodes.get_mut(node) {
            Some(info) => info.add(p),
            None => {
                self.orphans.insert(p.uid.clone(), p);
            }
        }
    }

    /// Places a pod the scheduler chose a node for, before its binding is stored.
    pub fn assume(&mut self, p: Arc<PodInfo>, node: &str) {
        self.confirm(p.clone(), node);
        self.placed.insert(p.uid.clone(), (node.to_string(), true));
    }

    /// Whether a pod is placed (assumed or confirmed).
    pub fn is_placed(&self, uid: &str) -> bool {
        self.placed.contains_key(uid)
    }

    pub fn remove_pod(&mut self, uid: &str) {
        if let Some((node, _)) = self.placed.remove(uid) {
            if let Some(info) = self.nodes.get_mut(&node) {
                info.remove(uid);
            }
        }
        self.orphans.remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_count_sidecars_and_the_largest_init_container() {
        let pod: Pod = serde_json::from_value(json!({"spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "200m", "memory": "64Mi"}}}],
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "setup", "resources": {"requests": {"cpu": "1"}}},
            ],
            "overhead": {"cpu": "10m"},
        }}))
        .expect("pod");
        let r = pod_requests(&pod);
        // max(200m + 100m sidecar, 1 + 100m while the sidecar runs) + 10m overhead.
        assert_eq!(r["cpu"], 1110);
        assert_eq!(r["memory"], 64 * 1024 * 1024 * 1000);
        let info = PodInfo::new(Arc::new(pod));
        assert_eq!(info.nonzero_cpu, 1110);
    }

    #[test]
    fn resized_and_pod_level_requests_count() {
        // A resize under way: the most of the spec and what was allocated.
        let pod: Pod = serde_json::from_value(json!({
            "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"containerStatuses": [{"name": "a", "image": "x", "imageID": "", "ready": true,
                "restartCount": 0, "allocatedResources": {"cpu": "300m"}}]},
        }))
        .expect("pod");
        assert_eq!(pod_requests(&pod)["cpu"], 300);
        // Pod-level requests stand for the containers'.
        let pod: Pod = serde_json::from_value(json!({"spec": {
            "resources": {"requests": {"cpu": "1"}},
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Mi"}}}],
        }}))
        .expect("pod");
        let r = pod_requests(&pod);
        assert_eq!(r["cpu"], 1000);
        assert_eq!(r["memory"], 1024 * 1024 * 1000);
        // A pod-level resize under way: the most of the spec, the allocated and the applied;
        // the spec left out while the kubelet finds it infeasible.
        let resizing = |reason: &str| -> Pod {
            serde_json::from_value(json!({
                "spec": {"resources": {"requests": {"cpu": "2"}},
                    "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Mi"}}}]},
                "status": {"allocatedResources": {"cpu": "500m", "memory": "512Mi"},
                    "resources": {"requests": {"cpu": "700m"}},
                    "conditions": [{"type": "PodResizePending", "status": "True", "reason": reason}]},
            }))
            .expect("pod")
        };
        assert_eq!(pod_requests(&resizing("Deferred"))["cpu"], 2000);
        assert_eq!(pod_requests(&resizing("Infeasible"))["cpu"], 700);
        assert_eq!(
            pod_requests(&resizing("Deferred"))["memory"],
            1024 * 1024 * 1000,
            "memory is the containers' where the pod asks for none itself"
        );
    }
}
