//! Pod admission, as upstream's kubelet admit handlers decide it for a pod the node sees for
//! the first time, in their order: the eviction manager (under memory pressure no BestEffort
//! pod, under disk or PID pressure no pod, critical pods always), the sysctl allowlist (the
//! safe sysctls and `--allowed-unsafe-sysctls`), the pod's OS, then upstream's general
//! predicates against the node: resources (pods, cpu, memory, ephemeral storage, extended
//! resources and hugepages, beside the pods already admitted; see [`super::resize`]), node
//! affinity and selector, host ports, and NoExecute taints. A pod refused is failed with the
//! handler's reason and message, as upstream's `rejectPod`.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde_json::json;

use super::resize::{Allocation, Predicates};
use super::worker::{Shared, State};
use crate::events::Type;
use crate::kubelet::eviction::Pressure;

#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("sysctl {0:?} must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?(\\*)?$")]
    Pattern(String),
    #[error("the sysctls {0:?} are not known to be namespaced")]
    Unnamespaced(String),
}

/// Why a pod is not admitted: upstream's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub message: String,
}

impl Refusal {
    fn new(reason: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A failed scheduler predicate, worded as upstream's `PredicateFailureError`.
    pub fn predicate(name: &str, desc: &str) -> Refusal {
        Refusal::new(name, format!("Predicate {name} failed: {desc}"))
    }
}

/// Upstream's safe sysctls: allowed in every pod (each in the pod's network or IPC namespace).
const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The namespace a sysctl lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    Ipc,
    Net,
}

impl Namespace {
    fn name(self) -> &'static str {
        match self {
            Namespace::Ipc => "ipc",
            Namespace::Net => "net",
        }
    }
}

/// The namespace of a (normalized) sysctl or sysctl prefix, as upstream's `GetNamespace`.
fn namespace_of(name: &str) -> Option<Namespace> {
    if name == "kernel.sem" {
        return Some(Namespace::Ipc);
    }
    [
        ("kernel.shm", Namespace::Ipc),
        ("kernel.msg", Namespace::Ipc),
        ("fs.mqueue.", Namespace::Ipc),
        ("net.", Namespace::Net),
    ]
    .into_iter()
    .find(|(p, _)| name.starts_with(p))
    .map(|(_, ns)| ns)
}

/// A sysctl name with `/` separators in upstream's dotted form (`net/ipv4/conf/eth0.1/x` is
/// `net.ipv4.conf.eth0/1.x`).
pub fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// Whether `s` is a sysctl name or a name ending in `*`, as upstream's `IsValidSysctlPattern`.
fn valid_pattern(s: &str) -> bool {
    let body = s.strip_suffix('*').unwrap_or(s);
    let segment = |seg: &str| {
        let b = seg.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_'))
    };
    if s.len() > 253 {
        return false;
    }
    let wild = s.ends_with('*');
    let parts: Vec<&str> = body.split(['.', '/']).collect();
    match parts.split_last() {
        Some((last, rest)) => {
            rest.iter().all(|p| segment(p)) && (segment(last) || (wild && last.is_empty()))
        }
        None => false,
    }
}

/// The sysctls pods may set on this node: the safe ones and `--allowed-unsafe-sysctls`
/// (names, or prefixes ending in `*`), each checked against the pod's host namespaces.
#[derive(Debug, Clone, Default)]
pub struct Sysctls {
    exact: HashMap<String, Namespace>,
    prefixes: Vec<(String, Namespace)>,
}

impl Sysctls {
    /// The allowlist with `unsafe_allowed` besides the safe sysctls.
    pub fn new(unsafe_allowed: &[String]) -> Result<Sysctls, AdmitError> {
        let mut out = Sysctls::default();
        for s in SAFE_SYSCTLS
            .iter()
            .map(|s| s.to_string())
            .chain(unsafe_allowed.iter().cloned())
        {
            if !valid_pattern(&s) {
                return Err(AdmitError::Pattern(s));
            }
            let name = normalize(&s);
            let (name, prefixed) = match name.find('*') {
                Some(i) => (name[..i].to_string(), true),
                None => (name, false),
            };
            let ns = namespace_of(&name).ok_or_else(|| AdmitError::Unnamespaced(name.clone()))?;
            if prefixed {
                out.prefixes.push((name, ns));
            } else {
                out.exact.insert(name, ns);
            }
        }
        Ok(out)
    }

    fn validate(&self, sysctl: &str, host_net: bool, host_ipc: bool) -> Result<(), String> {
        let name = normalize(sysctl);
        let ns = self.exact.get(&name).copied().or_else(|| {
            self.prefixes
                .iter()
                .find(|(p, _)| name.starts_with(p.as_str()))
                .map(|(_, ns)| *ns)
        });
        match ns {
            None => Err(format!("{name:?} not allowlisted")),
            Some(ns)
                if (ns == Namespace::Ipc && host_ipc) || (ns == Namespace::Net && host_net) =>
            {
                Err(format!(
                    "{name:?} not allowed with host {} enabled",
                    ns.name()
                ))
            }
            Some(_) => Ok(()),
        }
    }

    /// Refuses a pod setting a sysctl not allowed here (`SysctlForbidden`).
    pub fn admit(&self, pod: &Pod) -> Option<Refusal> {
        let spec = pod.spec.as_ref()?;
        let sysctls = spec.security_context.as_ref()?.sysctls.as_ref()?;
        let (net, ipc) = (
            spec.host_network.unwrap_or(false),
            spec.host_ipc.unwrap_or(false),
        );
        sysctls.iter().find_map(|s| {
            self.validate(&s.name, net, ipc)
                .err()
                .map(|e| Refusal::new("SysctlForbidden", format!("forbidden sysctl: {e}")))
        })
    }
}

/// The eviction manager's admission: under memory pressure alone BestEffort pods are refused
/// (unless they tolerate the memory-pressure taint), under any other pressure every pod;
/// critical pods always pass.
pub fn pressure(pod: &Pod, p: Pressure) -> Option<Refusal> {
    if !(p.memory || p.disk || p.pid) || crate::kubelet::eviction::is_critical(pod) {
        return None;
    }
    if p.memory && !p.disk && !p.pid {
        if super::spec::qos(pod) != "BestEffort" {
            return None;
        }
        let taint = k8s_openapi::api::core::v1::Taint {
            key: "node.kubernetes.io/memory-pressure".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default();
        // Tolerating the memory-pressure taint admits it.
        crate::taints::untolerated(std::slice::from_ref(&taint), tolerations, &["NoSchedule"])?;
    }
    let conditions: Vec<&str> = [
        (p.memory, "MemoryPressure"),
        (p.disk, "DiskPressure"),
        (p.pid, "PIDPressure"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    Some(Refusal::new(
        "Evicted",
        format!("The node had condition: [{}]. ", conditions.join(" ")),
    ))
}

/// Refuses a pod for another OS: labelled `kubernetes.io/os` other than linux
/// (`PodOSSelectorNodeLabelDoesNotMatch`), or with `spec.os.name` other than linux
/// (`PodOSNotSupported`).
pub fn os(pod: &Pod) -> Option<Refusal> {
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/os"));
    if label.is_some_and(|os| os != "linux") {
        return Some(Refusal::new(
            "PodOSSelectorNodeLabelDoesNotMatch",
            "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label",
        ));
    }
    let field = pod
        .spec
        .as_ref()
        .and_then(|s| s.os.as_ref())
        .map(|o| o.name.as_str());
    field.filter(|os| *os != "linux").map(|_| {
        Refusal::new(
            "PodOSNotSupported",
            "Failed to admit pod as the OS field doesn't match node OS",
        )
    })
}

/// Refuses a pod whose node selector or required node affinity the node does not match.
pub fn affinity(pod: &Pod, node: &Node) -> Option<Refusal> {
    let spec = pod.spec.as_ref()?;
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    (!crate::placement::affinity_admits(spec, name, &labels)).then(|| {
        Refusal::predicate(
            "NodeAffinity",
            "node(s) didn't match Pod's node affinity/selector",
        )
    })
}

/// Refuses a pod (not a static one) that does not tolerate one of the node's NoExecute taints.
pub fn taints(pod: &Pod, node: &Node) -> Option<Refusal> {
    let is_static = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.source"))
        .is_some_and(|s| s != "api");
    let spec = pod.spec.as_ref()?;
    let taints = node.spec.as_ref()?.taints.as_deref()?;
    (!is_static && crate::placement::untolerated_taint(spec, taints, &["NoExecute"]).is_some())
        .then(|| {
            Refusal::predicate(
                "TaintToleration",
                "node(s) had taints that the pod didn't tolerate",
            )
        })
}

impl Shared {
    /// Admits a pod this node sees for the first time (allocating `want` to it), or the first
    /// admit handler's refusal.
    pub(super) fn admission(&self, pod: &Pod, uid: &str, want: Allocation) -> Result<(), Refusal> {
        let p = *self.pressure.read().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = pressure(pod, p)
            .or_else(|| self.sysctls.admit(pod))
            .or_else(|| os(pod))
        {
            return Err(r);
        }
        let node = self.node.get(&ObjectRef::new(&self.env.node_name));
        let predicates = node
            .as_deref()
            .map_or_else(Predicates::default, |n| Predicates {
                affinity: affinity(pod, n),
                taints: taints(pod, n),
            });
        let offered = node
            .as_deref()
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.allocatable.as_ref());
        self.allocations.admit(uid, want, offered, predicates)
    }

    /// Fails a pod the node cannot admit, as upstream's `rejectPod`.
    pub(super) async fn reject(&self, pod: &Pod, st: &mut State, r: &Refusal) {
        tracing::info!(pod = %pod.name_any(), reason = %r.reason, "{}", r.message);
        self.event(pod, None, Type::Warning, &r.reason, &r.message)
            .await;
        let body = json!({"status": {
            "phase": "Failed", "reason": r.reason,
            "message": format!("Pod was rejected: {}", r.message),
        }});
        self.post_status(pod, st, body).await;
    }
}

#[cfg(test)]
mod tests;
