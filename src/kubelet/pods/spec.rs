//! From a Pod to CRI configurations, as the kubelet's `kuberuntime` builds them: the sandbox
//! (metadata, hostname, log directory, host ports, namespaces, the labels the kubelet finds its
//! pods by) and each container (command and args with `$(VAR)` expansion, env, working dir,
//! log path, resources as cgroup limits, oom_score_adj by QoS class, security context).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;

use crate::kubelet::cri::api;

pub use crate::kubelet::cri::{
    LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
};

/// What sandbox and container configs depend on besides the pod.
#[derive(Debug, Clone)]
pub struct Env {
    /// Root of the pods' log directories (`/var/log/pods`).
    pub pod_log_dir: PathBuf,
    /// The node's memory, for Burstable pods' oom_score_adj.
    pub memory_bytes: u64,
    /// The lowest oom_score_adj this process may give (its own, without CAP_SYS_RESOURCE).
    pub min_oom_score_adj: i64,
    pub node_name: String,
    pub host_ip: String,
    /// The node's allocatable CPU and memory, for downward-API limits a container does not
    /// set (upstream reads them from the Node's `status.allocatable`).
    pub allocatable: Allocatable,
    /// Where pods' volumes and kubelet-managed files live (`DATA_DIR/agent/pods`).
    pub pods_dir: PathBuf,
    /// Cluster DNS and the node's resolver, for pods' resolv.conf.
    pub dns: super::dns::ClusterDns,
    /// The kernel's huge page sizes (bytes): each container gets a limit for every one.
    pub hugepage_sizes: Vec<u64>,
}

/// A node's allocatable CPU (millicores) and memory (bytes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocatable {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
}

impl Env {
    /// Where `Localhost` seccomp profiles are read from (`DATA_DIR/agent/seccomp`).
    pub fn seccomp_dir(&self) -> PathBuf {
        self.pods_dir
            .parent()
            .map_or_else(|| PathBuf::from("seccomp"), |p| p.join("seccomp"))
    }
}

/// `NAMESPACE_NAME_UID` under the log root, as the kubelet names it.
pub fn log_dir(env: &Env, pod: &Pod) -> PathBuf {
    env.pod_log_dir.join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ))
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

pub fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    let spec = pod.spec.as_ref();
    let mode = |host: bool, shared: bool| {
        if host {
            api::NamespaceMode::Node as i32
        } else if shared {
            api::NamespaceMode::Pod as i32
        } else {
            api::NamespaceMode::Container as i32
        }
    };
    api::NamespaceOption {
        network: mode(host_network(pod), true),
        pid: mode(
            spec.and_then(|s| s.host_pid).unwrap_or(false),
            spec.and_then(|s| s.share_process_namespace)
                .unwrap_or(false),
        ),
        ipc: mode(spec.and_then(|s| s.host_ipc).unwrap_or(false), true),
        ..Default::default()
    }
}

/// The pod's hostname and domain, as upstream's `GeneratePodHostNameAndDomain`: its
/// `hostname` or its name, cut to 63 characters (without a trailing `-` or `.`), and with a
/// `subdomain` the domain `SUB.NS.svc.CLUSTER_DOMAIN`.
pub fn hostname_and_domain(env: &Env, pod: &Pod) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let mut hostname = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.name_any());
    if hostname.len() > 63 {
        hostname.truncate(63);
        let kept = hostname.trim_end_matches(['-', '.']).len();
        hostname.truncate(kept);
    }
    let domain = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
        .map(|sub| {
            let ns = pod.namespace().unwrap_or_default();
            format!("{sub}.{ns}.svc.{}", env.dns.domain)
        });
    (hostname, domain)
}

/// The name the pod's kernel gets: its hostname, or with `setHostnameAsFQDN` its fully
/// qualified name, which may be at most 64 characters (upstream's message otherwise).
pub fn kernel_hostname(env: &Env, pod: &Pod) -> Result<String, String> {
    let (hostname, domain) = hostname_and_domain(env, pod);
    let fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    match domain {
        Some(d) if fqdn => {
            let full = format!("{hostname}.{d}");
            if full.len() > 64 {
                return Err(format!(
                    "failed to construct FQDN from pod hostname and cluster domain, FQDN {full} is too long (64 characters is the max, {} characters requested)",
                    full.len()
                ));
            }
            Ok(full)
        }
        _ => Ok(hostname),
    }
}

/// The pod sandbox's configuration for its `attempt`-th sandbox, in the cgroup `cgroup_parent`
/// (empty: the runtime's default).
pub fn sandbox(env: &Env, pod: &Pod, attempt: u32, cgroup_parent: &str) -> api::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let hostname = kernel_hostname(env, pod).unwrap_or_else(|_| hostname_and_domain(env, pod).0);
    let mut labels: HashMap<String, String> = pod.labels().clone().into_iter().collect();
    labels.insert(LABEL_POD_NAME.into(), pod.name_any());
    labels.insert(
        LABEL_POD_NAMESPACE.into(),
        pod.namespace().unwrap_or_default(),
    );
    labels.insert(LABEL_POD_UID.into(), pod.uid().unwrap_or_default());
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| api::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => api::Protocol::Udp as i32,
                Some("SCTP") => api::Protocol::Sctp as i32,
                _ => api::Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            namespace: pod.namespace().unwrap_or_default(),
            attempt,
        }),
        hostname: if host_network(pod) {
            String::new()
        } else {
            hostname
        },
        log_directory: log_dir(env, pod).to_string_lossy().into_owned(),
        port_mappings,
        labels,
        annotations: pod.annotations().clone().into_iter().collect(),
        dns_config: Some(super::dns::config(pod, &env.dns)),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_string(),
            security_context: Some(super::security::sandbox(pod, namespace_options(pod))),
            sysctls: super::security::sysctls(pod),
            resources: Some(pod_resources(pod, false)),
            overhead: pod_overhead(pod),
        }),
        ..Default::default()
    }
}

/// Expands `$(VAR)` from `vars`; `$$(VAR)` is a literal `$(VAR)`; unknown names stay as written,
/// as upstream's `expansion.Expand` does.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A downward-API field of the pod (`metadata.name`, `status.podIP`, ...).
pub fn field(pod: &Pod, env: &Env, pod_ip: &str, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    Some(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => env.node_name.clone(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => pod_ip.to_string(),
        "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => env.host_ip.clone(),
        p => {
            let key = |prefix: &str| {
                p.strip_prefix(prefix).map(|k| {
                    k.trim_start_matches("['")
                        .trim_end_matches("']")
                        .to_string()
                })
            };
            if let Some(k) = key("metadata.labels") {
                meta.labels.as_ref()?.get(&k)?.clone()
            } else if let Some(k) = key("metadata.annotations") {
                meta.annotations.as_ref()?.get(&k)?.clone()
            } else {
                return None;
            }
        }
    })
}

/// Values the caller read from the API for a container's environment.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// `envFrom` entries, in order, prefixes applied.
    pub env_from: Vec<(String, String)>,
    /// `env` entries with a `valueFrom` other than `fieldRef`, by name.
    pub values: HashMap<String, String>,
    /// Service variables ([`super::services`]): usable in `$(VAR)`, added after the
    /// container's own unless it sets the same name.
    pub services: Vec<(String, String)>,
}

/// The container's environment in order, with `$(VAR)` expanded against earlier entries.
/// Values from ConfigMaps, Secrets and resources are resolved by the caller into `resolved`.
pub fn environment(
    pod: &Pod,
    c: &Container,
    env: &Env,
    pod_ip: &str,
    resolved: &Resolved,
) -> Vec<(String, String)> {
    let mut vars: HashMap<String, String> = resolved.services.iter().cloned().collect();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: String, v: String, vars: &mut HashMap<String, String>| {
        if let Some(slot) = out.iter_mut().find(|(n, _)| *n == k) {
            slot.1 = v.clone();
        } else {
            out.push((k.clone(), v.clone()));
        }
        vars.insert(k, v);
    };
    for (k, v) in &resolved.env_from {
        set(k.clone(), v.clone(), &mut vars);
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(expand(v, &vars))
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field(pod, env, pod_ip, &f.field_path)
            } else {
                resolved.values.get(&e.name).cloned()
            }
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            set(e.name.clone(), v, &mut vars);
        }
    }
    for (k, v) in &resolved.services {
        if !out.iter().any(|(n, _)| n == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    out
}

fn milli(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<i128> {
    q.and_then(|q| crate::quantity::milli(&q.0))
}

/// A pod-level (`spec.resources`) limit of `name`, when the pod sets one.
pub fn pod_limit(pod: &Pod, name: &str) -> Option<i128> {
    let r = pod.spec.as_ref()?.resources.as_ref()?;
    milli(r.limits.as_ref()?.get(name)).filter(|v| *v > 0)
}

/// The pod's QoS class: as the API server decided it (pod-level resources included), else as
/// upstream computes it from the containers.
pub fn qos(pod: &Pod) -> &'static str {
    match pod.status.as_ref().and_then(|s| s.qos_class.as_deref()) {
        Some("Guaranteed") => return "Guaranteed",
        Some("Burstable") => return "Burstable",
        Some("BestEffort") => return "BestEffort",
        _ => {}
    }
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let mut any = false;
    let mut guaranteed = true;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        for res in ["cpu", "memory"] {
            let l = milli(lim.get(res));
            let q = milli(req.get(res)).or(l);
            if l.is_some() || q.is_some() {
                any = true;
            }
            if l.is_none() || l != q {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// oom_score_adj by QoS class (upstream's policy), never below what this process may set.
pub fn oom_score_adj(pod: &Pod, c: &Container, env: &Env) -> i64 {
    let adj = match qos(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let req = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| milli(r.get("memory")))
                .unwrap_or(0)
                / 1000;
            // A pod-level memory request beyond its containers' is shared out among them.
            let req = req + pod_level_memory_share(pod);
            let cap = i128::from(env.memory_bytes.max(1));
            (1000 - (1000 * req) / cap).clamp(3, 999) as i64
        }
    };
    adj.max(env.min_oom_score_adj)
}

/// The part of a pod-level memory request beyond its containers' that each container counts
/// for its oom_score_adj, as upstream's policy shares it out (bytes).
fn pod_level_memory_share(pod: &Pod) -> i128 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let Some(pod_req) = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| milli(r.get("memory")))
    else {
        return 0;
    };
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let sum: i128 = all
        .iter()
        .filter_map(|c| {
            milli(
                c.resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())?
                    .get("memory"),
            )
        })
        .sum();
    ((pod_req - sum).max(0) / 1000) / (all.len().max(1) as i128)
}

pub(super) fn resources(pod: &Pod, c: &Container, env: &Env) -> api::LinuxContainerResources {
    let r = c.resources.clone().unwrap_or_default();
    let req = r.requests.unwrap_or_default();
    let mut lim = r.limits.unwrap_or_default();
    // A container without a limit of its own runs within the pod's (PodLevelResources).
    for name in ["cpu", "memory"] {
        if !lim.contains_key(name) {
            if let Some(v) = pod_limit(pod, name) {
                lim.insert(
                    name.to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity(format!("{v}m")),
                );
            }
        }
    }
    let cpu_req = milli(req.get("cpu")).or(milli(lim.get("cpu")));
    let shares = cpu_req.map_or(2, |m| ((m * 1024) / 1000).max(2)) as i64;
    let period = 100_000i64;
    let quota = milli(lim.get("cpu")).map_or(0, |m| ((m * period as i128) / 1000).max(1000) as i64);
    let memory = milli(lim.get("memory")).map_or(0, |m| (m / 1000) as i64);
    api::LinuxContainerResources {
        cpu_period: if quota > 0 { period } else { 0 },
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: memory,
        oom_score_adj: oom_score_adj(pod, c, env),
        hugepage_limits: crate::kubelet::cgroups::limits::container_hugetlb(c, &env.hugepage_sizes)
            .into_iter()
            .map(|(page_size, limit)| api::HugepageLimit {
                page_size,
                limit: u64::try_from(limit).unwrap_or(0),
            })
            .collect(),
        ..Default::default()
    }
}

/// The pod's overhead as the runtime is told it, when it has one.
pub(super) fn pod_overhead(pod: &Pod) -> Option<api::LinuxContainerResources> {
    pod.spec
        .as_ref()
        .and_then(|s| s.overhead.as_ref())
        .map(|_| pod_resources(pod, true))
}

/// The pod's resources as a whole without its overhead, or (`overhead_only`) the overhead
/// alone, as upstream tells the runtime (for NRI plugins and the like).
pub(super) fn pod_resources(pod: &Pod, overhead_only: bool) -> api::LinuxContainerResources {
    use crate::kubelet::cgroups::limits;
    let t = if overhead_only {
        let (all, bare) = (limits::totals(pod, true), limits::totals(pod, false));
        limits::PodTotals {
            cpu_request: all.cpu_request - bare.cpu_request,
            memory_request: all.memory_request - bare.memory_request,
            cpu_limit: all.cpu_limit.zip(bare.cpu_limit).map(|(a, b)| a - b),
            memory_limit: all.memory_limit.zip(bare.memory_limit).map(|(a, b)| a - b),
        }
    } else {
        limits::totals(pod, false)
    };
    let l = limits::limits_of(pod, t, -1);
    api::LinuxContainerResources {
        cpu_period: if l.cpu_quota.is_some() {
            limits::CPU_PERIOD
        } else {
            0
        },
        cpu_quota: l.cpu_quota.unwrap_or(0),
        cpu_shares: l.cpu_shares.unwrap_or(0),
        memory_limit_in_bytes: l.memory_bytes.unwrap_or(0),
        ..Default::default()
    }
}

/// A container's configuration for its `attempt`-th run.
pub fn container(
    pod: &Pod,
    c: &Container,
    env: &Env,
    attempt: u32,
    pod_ip: &str,
    resolved: &Resolved,
    mounts: Vec<api::Mount>,
) -> api::ContainerConfig {
    let envs = environment(pod, c, env, pod_ip, resolved);
    let vars: HashMap<String, String> = envs.iter().cloned().collect();
    let mut labels = HashMap::new();
    labels.insert(LABEL_POD_NAME.to_string(), pod.name_any());
    labels.insert(
        LABEL_POD_NAMESPACE.to_string(),
        pod.namespace().unwrap_or_default(),
    );
    labels.insert(LABEL_POD_UID.to_string(), pod.uid().unwrap_or_default());
    labels.insert(LABEL_CONTAINER_NAME.to_string(), c.name.clone());
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(api::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: c
            .command
            .iter()
            .flatten()
            .map(|s| expand(s, &vars))
            .collect(),
        args: c.args.iter().flatten().map(|s| expand(s, &vars)).collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: envs
            .into_iter()
            .map(|(key, value)| api::KeyValue { key, value })
            .collect(),
        labels,
        mounts,
        log_path: Path::new(&c.name)
            .join(format!("{attempt}.log"))
            .to_string_lossy()
            .into_owned(),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(resources(pod, c, env)),
            security_context: Some(super::security::container(pod, c, env)),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn expansion_follows_upstream() {
        let vars: HashMap<String, String> =
            [("A".to_string(), "1".to_string())].into_iter().collect();
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("a$b", &vars), "a$b");
    }

    fn pod(resources: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources,
                "env": [{"name": "A", "value": "a"}, {"name": "B", "value": "$(A)-b"},
                        {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}],
                "args": ["$(B)", "$(N)"]}]}
        }))
        .expect("pod")
    }

    pub(crate) fn env() -> Env {
        Env {
            pod_log_dir: "/var/log/pods".into(),
            memory_bytes: 1 << 30,
            min_oom_score_adj: 0,
            node_name: "n1".into(),
            host_ip: "10.0.0.1".into(),
            allocatable: Allocatable {
                cpu_milli: 2000,
                memory_bytes: 1 << 30,
            },
            pods_dir: "/var/lib/k1s/agent/pods".into(),
            dns: Default::default(),
            hugepage_sizes: vec![2 << 20],
        }
    }

    #[test]
    fn containers_get_env_args_and_qos_limits() {
        let p = pod(serde_json::json!({"limits": {"cpu": "500m", "memory": "64Mi"}}));
        assert_eq!(qos(&p), "Guaranteed");
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let cfg = container(
            &p,
            c,
            &env(),
            2,
            "10.42.0.5",
            &Resolved::default(),
            Vec::new(),
        );
        assert_eq!(cfg.args, ["a-b", "p"]);
        let env_of = |k: &str| {
            cfg.envs
                .iter()
                .find(|e| e.key == k)
                .map(|e| e.value.clone())
        };
        assert_eq!(env_of("L").as_deref(), Some("x"));
        assert_eq!(cfg.log_path, "c/2.log");
        let r = cfg.linux.and_then(|l| l.resources).expect("resources");
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(r.oom_score_adj, 0, "never below this process's own");
        let huge: Vec<(String, u64)> = r
            .hugepage_limits
            .iter()
            .map(|h| (h.page_size.clone(), h.limit))
            .collect();
        assert_eq!(huge, [("2MB".to_string(), 0)], "no huge pages asked for");
        assert_eq!(qos(&pod(serde_json::json!({}))), "BestEffort");
        assert_eq!(
            qos(&pod(serde_json::json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
    }
}
