//! The kubelet's own Node: registered with this machine's capacity (CPUs, memory from
//! /proc/meminfo, ephemeral storage of the data dir's filesystem, 110 pods) less
//! `--kube-reserved`, its addresses, nodeInfo (kernel, OS image, machine and boot IDs, the
//! runtime's version), and the four conditions, posted again every minute; its Lease renewed
//! every 10 s ([`super::lease`]). The pod CIDR comes from node IPAM, which the kubelet waits for
//! before it builds the pod network.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeRuntimeHandler,
    NodeRuntimeHandlerFeatures, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

/// Pods per node, as the kubelet's `maxPods` default.
pub const MAX_PODS: u32 = 110;

/// What the node reports about itself.
#[derive(Debug, Clone)]
pub struct Facts {
    pub name: String,
    pub address: IpAddr,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    /// `containerd://1.6.20`.
    pub runtime_version: String,
    /// The runtime's handlers (`status.runtimeHandlers`), as RuntimeClasses name them.
    pub runtime_handlers: Vec<NodeRuntimeHandler>,
    /// Reserved for system daemons and k1s itself (`--kube-reserved`), by resource name.
    pub reserved: BTreeMap<String, u64>,
    /// The most pods the node runs (`--max-pods`).
    pub max_pods: u32,
    /// What the hard eviction thresholds hold back (memory, ephemeral-storage), in bytes.
    pub eviction_reserved: BTreeMap<String, u64>,
    /// Pre-allocated huge pages, by resource name (`hugepages-2Mi`), in bytes.
    pub hugepages: BTreeMap<String, u64>,
    /// The kubelet API's port.
    pub kubelet_port: u16,
    /// The eviction manager's conditions.
    pub pressure: std::sync::Arc<std::sync::RwLock<super::eviction::Pressure>>,
    /// The container runtime's health, for Ready (None: not watched, always ready).
    pub health: Option<super::runtime_health::Shared>,
    /// Each condition's last status and when it took it, for `lastTransitionTime`.
    transitions: std::sync::Arc<std::sync::Mutex<BTreeMap<String, (String, Timestamp)>>>,
}

/// Bytes as a binary-SI quantity (`64Mi`, `1Gi`; `0`).
pub(crate) fn binary(bytes: u64) -> String {
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// The huge pages pre-allocated per page size, from `dir` (`/sys/kernel/mm/hugepages`): each
/// `hugepages-<N>kB/nr_hugepages`, as resource name (`hugepages-2Mi`) and bytes.
fn hugepages(dir: &Path) -> BTreeMap<String, u64> {
    use super::cgroups::{fs::hugepage_sizes, limits::hugepages_resource};
    hugepage_sizes(dir)
        .into_iter()
        .map(|size| {
            let file = dir
                .join(format!("hugepages-{}kB", size / 1024))
                .join("nr_hugepages");
            let pages: u64 = std::fs::read_to_string(file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            (hugepages_resource(size), pages.saturating_mul(size))
        })
        .collect()
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// MemTotal of /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn pretty_name(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

fn fs_size(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_blocks * st.f_frsize
    }
}

impl Facts {
    /// Reads this machine's facts.
    pub fn gather(
        name: &str,
        address: IpAddr,
        data_dir: &Path,
        runtime_version: &str,
        reserved: BTreeMap<String, u64>,
        kubelet_port: u16,
    ) -> Facts {
        Facts {
            name: name.to_string(),
            address,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_bytes: mem_total(&read_trim("/proc/meminfo")),
            storage_bytes: fs_size(data_dir),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            os_image: pretty_name(&read_trim("/etc/os-release")),
            machine_id: read_trim("/etc/machine-id"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            runtime_version: runtime_version.to_string(),
            runtime_handlers: Vec::new(),
            reserved,
            max_pods: MAX_PODS,
            eviction_reserved: BTreeMap::new(),
            hugepages: hugepages(Path::new(super::cgroups::fs::HUGEPAGES_DIR)),
            kubelet_port,
            pressure: Default::default(),
            health: None,
            transitions: Default::default(),
        }
    }

    fn capacity(&self) -> BTreeMap<String, Quantity> {
        let mut out: BTreeMap<String, Quantity> = [
            ("cpu", self.cpus.to_string()),
            ("memory", format!("{}Ki", self.memory_bytes / 1024)),
            (
                "ephemeral-storage",
                format!("{}Ki", self.storage_bytes / 1024),
            ),
            ("pods", self.max_pods.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v)))
        .collect();
        for (name, bytes) in &self.hugepages {
            out.insert(name.clone(), Quantity(binary(*bytes)));
        }
        out
    }

    /// Allocatable CPU (millicores) and memory (bytes) for the pods' cgroup: the capacity
    /// less `--kube-reserved`, as upstream's node allocatable enforcement.
    pub fn allocatable_cpu_memory(&self) -> (i64, i64) {
        let less =
            |k: &str, total: u64| total.saturating_sub(self.reserved.get(k).copied().unwrap_or(0));
        let cpu = less("cpu", u64::from(self.cpus) * 1000);
        let memory = less("memory", self.memory_bytes);
        (
            i64::try_from(cpu).unwrap_or(i64::MAX),
            i64::try_from(memory).unwrap_or(i64::MAX),
        )
    }

    /// The reported allocatable CPU (millicores) and memory (bytes), which pods are admitted
    /// against.
    pub fn schedulable_cpu_memory(&self) -> (i64, i64) {
        let (cpu, _) = self.allocatable_cpu_memory();
        (
            cpu,
            i64::try_from(self.allocatable_memory()).unwrap_or(i64::MAX),
        )
    }

    /// Memory less `--kube-reserved`, the hard eviction threshold and the huge pages.
    fn allocatable_memory(&self) -> u64 {
        let held: u64 = ["memory"]
            .iter()
            .flat_map(|k| [self.reserved.get(*k), self.eviction_reserved.get(*k)])
            .flatten()
            .chain(self.hugepages.values())
            .fold(0, |a, b| a.saturating_add(*b));
        self.memory_bytes.saturating_sub(held)
    }

    /// The capacity less what `--kube-reserved` and the hard eviction thresholds hold back,
    /// and memory less the huge pages, as upstream's node allocatable.
    fn allocatable(&self) -> BTreeMap<String, Quantity> {
        let less = |k: &str, total: u64| {
            total
                .saturating_sub(self.reserved.get(k).copied().unwrap_or(0))
                .saturating_sub(self.eviction_reserved.get(k).copied().unwrap_or(0))
        };
        let millicpu = less("cpu", u64::from(self.cpus) * 1000);
        let mut out: BTreeMap<String, Quantity> = [
            ("cpu", format!("{millicpu}m")),
            ("memory", format!("{}Ki", self.allocatable_memory() / 1024)),
            (
                "ephemeral-storage",
                format!("{}Ki", less("ephemeral-storage", self.storage_bytes) / 1024),
            ),
            ("pods", self.max_pods.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v)))
        .collect();
        for (name, bytes) in &self.hugepages {
            out.insert(name.clone(), Quantity(binary(less(name, *bytes))));
        }
        out
    }

    /// Takes the conditions' statuses and transition times from the stored Node.
    pub fn adopt_transitions(&self, node: &Node) {
        let mut transitions = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
        let conditions = node
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten());
        for c in conditions {
            if let Some(at) = &c.last_transition_time {
                transitions.insert(c.type_.clone(), (c.status.clone(), at.0));
            }
        }
    }

    /// The node's status as of now.
    pub fn status(&self) -> NodeStatus {
        let now = Timestamp::now();
        let mut transitions = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
        let mut cond = |ty: &str, status: &str, reason: &str, message: &str| {
            let since = match transitions.get(ty) {
                Some((was, at)) if was == status => *at,
                _ => {
                    transitions.insert(ty.to_string(), (status.to_string(), now));
                    now
                }
            };
            NodeCondition {
                type_: ty.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(Time(since)),
            }
        };
        let p = *self.pressure.read().unwrap_or_else(|e| e.into_inner());
        let not_ready = self.health.as_ref().and_then(|h| {
            h.lock()
                .unwrap_or_else(|e| e.into_inner())
                .problem(std::time::Instant::now())
        });
        NodeStatus {
            capacity: Some(self.capacity()),
            allocatable: Some(self.allocatable()),
            conditions: Some(conditions(p, not_ready.as_deref(), &mut cond)),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: self.address.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: self.name.clone(),
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(self.kubelet_port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: super::images::oci::oci_arch().into(),
                boot_id: self.boot_id.clone(),
                container_runtime_version: self.runtime_version.clone(),
                kernel_version: self.kernel.clone(),
                kube_proxy_version: String::new(),
                kubelet_version: format!("v1.37.0-k1s-{}", env!("CARGO_PKG_VERSION")),
                machine_id: self.machine_id.clone(),
                operating_system: "linux".into(),
                os_image: self.os_image.clone(),
                system_uuid: self.machine_id.clone(),
                ..Default::default()
            }),
            runtime_handlers: (!self.runtime_handlers.is_empty())
                .then(|| self.runtime_handlers.clone()),
            ..Default::default()
        }
    }
}

/// The Node's runtime handlers: those the runtime reports (CRI `Status`, containerd 2 and
/// CRI-O), else, for the containerd k1s configured itself (1.6 and 1.7 report none), the
/// handlers it was given and the default one, named `""` as containerd names it.
pub fn runtime_handlers(
    reported: &[crate::kubelet::cri::api::RuntimeHandler],
    configured: &[String],
) -> Vec<NodeRuntimeHandler> {
    if !reported.is_empty() {
        return reported
            .iter()
            .map(|h| NodeRuntimeHandler {
                name: Some(h.name.clone()),
                features: h.features.map(|f| NodeRuntimeHandlerFeatures {
                    recursive_read_only_mounts: Some(f.recursive_read_only_mounts),
                    user_namespaces: Some(f.user_namespaces),
                }),
            })
            .collect();
    }
    configured
        .iter()
        .map(String::as_str)
        .chain((!configured.is_empty()).then_some(""))
        .map(|name| NodeRuntimeHandler {
            name: Some(name.to_string()),
            // Recursive read-only mounts need containerd 2; user namespaces are not offered.
            features: Some(NodeRuntimeHandlerFeatures {
                recursive_read_only_mounts: Some(false),
                user_namespaces: Some(false),
            }),
        })
        .collect()
}

/// Creates the Node (or takes over the existing one) and posts its status.
pub async fn register(client: &Client, facts: &Facts) -> Result<(), kube::Error> {
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), facts.name.clone());
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert(
        "kubernetes.io/arch".to_string(),
        super::images::oci::oci_arch().to_string(),
    );
    let node = Node {
        metadata: ObjectMeta {
            name: Some(facts.name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: None,
        status: Some(facts.status()),
    };
    let api: Api<Node> = Api::all(client.clone());
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // A node registered before (a restarted kubelet): conditions that have not changed
            // keep their lastTransitionTime, as upstream's status setters keep them.
            if let Some(existing) = api.get_opt(&facts.name).await? {
                facts.adopt_transitions(&existing);
            }
        }
        Err(e) => return Err(e),
    }
    post_status(client, facts).await
}

/// Posts the node's status.
pub async fn post_status(client: &Client, facts: &Facts) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let status = json!({"status": facts.status()});
    api.patch_status(&facts.name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Waits until node IPAM has given the node a pod CIDR.
pub async fn pod_cidr(
    client: &Client,
    name: &str,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<String> {
    let api: Api<Node> = Api::all(client.clone());
    loop {
        match api.get(name).await {
            Ok(n) => {
                if let Some(c) = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                    return Some(c);
                }
            }
            Err(e) => tracing::warn!(node = name, "reading the node for its pod CIDR: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = stop.changed() => return None,
        }
    }
}

/// The conditions a kubelet posts under pressure `p`, with upstream's reasons and messages;
/// `cond` makes each one from its type, status, reason and message (and sets its times).
pub fn conditions(
    p: super::eviction::Pressure,
    not_ready: Option<&str>,
    mut cond: impl FnMut(&str, &str, &str, &str) -> NodeCondition,
) -> Vec<NodeCondition> {
    type Words = (&'static str, &'static str);
    let table: [(&str, bool, Words, Words); 3] = [
        (
            "MemoryPressure",
            p.memory,
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
        ),
        (
            "DiskPressure",
            p.disk,
            ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ),
        (
            "PIDPressure",
            p.pid,
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ),
    ];
    let mut out: Vec<NodeCondition> = table
        .iter()
        .map(|(ty, on, yes, no)| match on {
            true => cond(ty, "True", yes.0, yes.1),
            false => cond(ty, "False", no.0, no.1),
        })
        .collect();
    out.push(match not_ready {
        Some(why) => cond("Ready", "False", "KubeletNotReady", why),
        None => cond(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_read_per_page_size() {
        let dir = tempfile::tempdir().expect("tmp");
        for (size, pages) in [("2048kB", "3"), ("1048576kB", "0")] {
            let d = dir.path().join(format!("hugepages-{size}"));
            std::fs::create_dir(&d).expect("dir");
            std::fs::write(d.join("nr_hugepages"), pages).expect("write");
        }
        let h = hugepages(dir.path());
        assert_eq!(h["hugepages-2Mi"], 6 << 20);
        assert_eq!(h["hugepages-1Gi"], 0);
        assert_eq!(binary(0), "0");
        assert_eq!(binary(6 << 20), "6Mi");
        assert_eq!(binary(1500), "1500");
    }

    #[test]
    fn memory_and_os_image_are_read_as_the_kubelet_does() {
        assert_eq!(
            mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            24_576_000 * 1024
        );
        assert_eq!(
            pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
    }

    #[test]
    fn allocatable_is_capacity_less_reserved() {
        let mut reserved = BTreeMap::new();
        reserved.insert("cpu".to_string(), 250);
        reserved.insert("memory".to_string(), 256 << 20);
        let f = Facts {
            name: "n".into(),
            address: "10.0.0.1".parse().expect("ip"),
            cpus: 2,
            memory_bytes: 1 << 30,
            storage_bytes: 10 << 30,
            kernel: String::new(),
            os_image: String::new(),
            machine_id: String::new(),
            boot_id: String::new(),
            runtime_version: String::new(),
            runtime_handlers: Vec::new(),
            reserved,
            max_pods: MAX_PODS,
            eviction_reserved: BTreeMap::from([("memory".to_string(), 100 << 20)]),
            hugepages: BTreeMap::from([("hugepages-2Mi".to_string(), 64 << 20)]),
            kubelet_port: 10250,
            pressure: Default::default(),
            health: None,
            transitions: Default::default(),
        };
        let a = f.allocatable();
        assert_eq!(a["cpu"].0, "1750m");
        // 1 Gi less 256 Mi reserved, 100 Mi for the eviction threshold, 64 Mi of huge pages.
        assert_eq!(a["memory"].0, format!("{}Ki", (604u64 << 20) / 1024));
        assert_eq!(a["hugepages-2Mi"].0, "64Mi");
        assert_eq!(f.capacity()["hugepages-2Mi"].0, "64Mi");
        assert_eq!(f.capacity()["cpu"].0, "2");
        assert_eq!(f.allocatable_cpu_memory(), (1750, 768 << 20));
        assert_eq!(f.schedulable_cpu_memory(), (1750, 604 << 20));

        // A condition keeps its transition time until its status changes.
        let since = |f: &Facts, ty: &str| {
            f.status()
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == ty)
                .and_then(|c| c.last_transition_time)
                .map(|t| t.0)
        };
        let first = since(&f, "DiskPressure");
        assert!(first.is_some());
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(since(&f, "DiskPressure"), first);
        f.pressure.write().expect("lock").disk = true;
        assert!(since(&f, "DiskPressure") > first);
        assert_eq!(since(&f, "Ready"), since(&f, "Ready"));

        // A restarted kubelet keeps the stored times of conditions that did not change.
        let stored: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T03:04:05Z"},
                {"type": "MemoryPressure", "status": "True",
                 "lastTransitionTime": "2026-01-02T03:04:05Z"},
            ]},
        }))
        .expect("node");
        f.adopt_transitions(&stored);
        let then: Timestamp = "2026-01-02T03:04:05Z".parse().expect("time");
        assert_eq!(since(&f, "Ready"), Some(then));
        assert!(
            since(&f, "MemoryPressure") > Some(then),
            "False now: a new transition"
        );
    }

    #[test]
    fn runtime_handlers_are_the_runtimes_or_those_k1s_configured() {
        use crate::kubelet::cri::api;
        let names = |h: Vec<NodeRuntimeHandler>| -> Vec<String> {
            h.into_iter().filter_map(|h| h.name).collect()
        };
        let configured = vec!["runc".to_string(), "crun".to_string()];
        assert_eq!(
            names(runtime_handlers(&[], &configured)),
            ["runc", "crun", ""]
        );
        // A runtime of the user's own that reports none: none, as upstream.
        assert!(runtime_handlers(&[], &[]).is_empty());
        let reported = [api::RuntimeHandler {
            name: "kata".into(),
            features: Some(api::RuntimeHandlerFeatures {
                recursive_read_only_mounts: true,
                user_namespaces: true,
            }),
        }];
        let h = runtime_handlers(&reported, &configured);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].name.as_deref(), Some("kata"));
        let f = h[0].features.clone().unwrap_or_default();
        assert_eq!(f.user_namespaces, Some(true));
    }
}
