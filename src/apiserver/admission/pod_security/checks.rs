//! The Pod Security Standards' checks (baseline and restricted), each returning upstream's
//! "forbidden reason (detail)" when a pod spec fails it.

use serde_json::Value;

/// One failed check: what is forbidden and what the pod does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The check's ID, which orders the message as upstream orders it.
    pub id: &'static str,
    pub reason: String,
    pub detail: String,
}

/// Every container of a pod spec, with its securityContext.
fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|f| spec[*f].as_array().into_iter().flatten())
        .collect()
}

fn name(c: &Value) -> String {
    c["name"].as_str().unwrap_or_default().to_string()
}

/// `container "a"` or `containers "a", "b"`.
fn which(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    if names.len() == 1 {
        format!("container {}", quoted[0])
    } else {
        format!("containers {}", quoted.join(", "))
    }
}

fn failure(id: &'static str, reason: &str, detail: String) -> Option<Failure> {
    Some(Failure {
        id,
        reason: reason.to_string(),
        detail,
    })
}

fn host_namespaces(spec: &Value) -> Option<Failure> {
    let set: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|f| spec[**f] == true)
        .map(|f| format!("{f}=true"))
        .collect();
    if set.is_empty() {
        return None;
    }
    failure("hostNamespaces", "host namespaces", set.join(", "))
}

fn privileged(spec: &Value) -> Option<Failure> {
    let bad: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| c["securityContext"]["privileged"] == true)
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    failure(
        "privileged",
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            which(&bad)
        ),
    )
}

const DEFAULT_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added(c: &Value) -> Vec<String> {
    c["securityContext"]["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// `container "c" must not include "X" in securityContext.capabilities.add`, for every
/// container adding capabilities that `allowed` refuses.
fn forbidden_adds(spec: &Value, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    let mut details = Vec::new();
    for c in containers(spec) {
        let bad: Vec<String> = added(c)
            .into_iter()
            .filter(|cap| !allowed(cap))
            .map(|cap| format!("{cap:?}"))
            .collect();
        if !bad.is_empty() {
            details.push(format!(
                "container {:?} must not include {} in securityContext.capabilities.add",
                name(c),
                bad.join(", ")
            ));
        }
    }
    details
}

fn capabilities_baseline(spec: &Value) -> Option<Failure> {
    let details = forbidden_adds(spec, |cap| DEFAULT_CAPABILITIES.contains(&cap));
    if details.is_empty() {
        return None;
    }
    failure(
        "capabilities_baseline",
        "non-default capabilities",
        details.join("; "),
    )
}

fn capabilities_restricted(spec: &Value) -> Option<Failure> {
    let mut no_drop = Vec::new();
    let mut details = Vec::new();
    for c in containers(spec) {
        let drops_all = c["securityContext"]["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            no_drop.push(name(c));
        }
    }
    if !no_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            which(&no_drop)
        ));
    }
    details.extend(forbidden_adds(spec, |cap| cap == "NET_BIND_SERVICE"));
    if details.is_empty() {
        return None;
    }
    failure(
        "capabilities_restricted",
        "unrestricted capabilities",
        details.join("; "),
    )
}

fn volume_names_where(spec: &Value, pred: impl Fn(&Value) -> bool) -> Vec<String> {
    spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| pred(v))
        .map(name)
        .collect()
}

fn host_path_volumes(spec: &Value) -> Option<Failure> {
    let bad = volume_names_where(spec, |v| v.get("hostPath").is_some());
    if bad.is_empty() {
        return None;
    }
    let quoted: Vec<String> = bad.iter().map(|n| format!("{n:?}")).collect();
    let noun = if bad.len() == 1 { "volume" } else { "volumes" };
    failure(
        "hostPathVolumes",
        "hostPath volumes",
        format!("{noun} {}", quoted.join(", ")),
    )
}

fn host_ports(spec: &Value) -> Option<Failure> {
    let mut details = Vec::new();
    for c in containers(spec) {
        let ports: Vec<String> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["hostPort"].as_i64().filter(|h| *h != 0))
            .map(|h| h.to_string())
            .collect();
        if !ports.is_empty() {
            let noun = if ports.len() == 1 {
                "hostPort"
            } else {
                "hostPorts"
            };
            details.push(format!(
                "{} uses {noun} {}",
                which(&[name(c)]),
                ports.join(", ")
            ));
        }
    }
    if details.is_empty() {
        return None;
    }
    failure("hostPorts", "hostPort", details.join("; "))
}

fn proc_mount(spec: &Value) -> Option<Failure> {
    let bad: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| {
            c["securityContext"]["procMount"]
                .as_str()
                .is_some_and(|p| p != "Default")
        })
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    failure(
        "procMount",
        "procMount",
        format!(
            "{} must not set securityContext.procMount to \"Unmasked\"",
            which(&bad)
        ),
    )
}

fn seccomp_type(v: &Value) -> Option<&str> {
    v["securityContext"]["seccompProfile"]["type"].as_str()
}

fn seccomp_baseline(spec: &Value) -> Option<Failure> {
    let mut details = Vec::new();
    if seccomp_type(spec) == Some("Unconfined") {
        details.push(
            "pod must not set securityContext.seccompProfile.type to \"Unconfined\"".to_string(),
        );
    }
    let bad: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| seccomp_type(c) == Some("Unconfined"))
        .map(name)
        .collect();
    if !bad.is_empty() {
        details.push(format!(
            "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
            which(&bad)
        ));
    }
    if details.is_empty() {
        return None;
    }
    failure(
        "seccompProfile_baseline",
        "seccompProfile",
        details.join("; "),
    )
}

fn seccomp_restricted(spec: &Value) -> Option<Failure> {
    let ok = |t: Option<&str>| matches!(t, Some("RuntimeDefault" | "Localhost"));
    let pod = seccomp_type(spec);
    let mut details = Vec::new();
    if pod.is_some() && !ok(pod) {
        details.push(format!(
            "pod must not set securityContext.seccompProfile.type to {:?}",
            pod.unwrap_or_default()
        ));
    }
    let explicit_bad: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| seccomp_type(c).is_some() && !ok(seccomp_type(c)))
        .map(name)
        .collect();
    if !explicit_bad.is_empty() {
        details.push(format!(
            "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
            which(&explicit_bad)
        ));
    }
    if !ok(pod) && pod.is_none() {
        let unset: Vec<String> = containers(spec)
            .into_iter()
            .filter(|c| seccomp_type(c).is_none())
            .map(name)
            .collect();
        if !unset.is_empty() {
            details.push(format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                which(&unset)
            ));
        }
    }
    if details.is_empty() {
        return None;
    }
    failure(
        "seccompProfile_restricted",
        "seccompProfile",
        details.join("; "),
    )
}

const SAFE_SYSCTLS: [&str; 9] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
];

fn sysctls(spec: &Value) -> Option<Failure> {
    let bad: Vec<String> = spec["securityContext"]["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n) && *n != "net.ipv4.tcp_keepalive_probes")
        .map(str::to_string)
        .collect();
    if bad.is_empty() {
        return None;
    }
    failure("sysctls", "forbidden sysctls", bad.join(", "))
}

const ALLOWED_VOLUMES: [&str; 9] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn restricted_volumes(spec: &Value) -> Option<Failure> {
    let mut details = Vec::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let Some(obj) = v.as_object() else { continue };
        for (k, _) in obj.iter().filter(|(k, _)| k.as_str() != "name") {
            if !ALLOWED_VOLUMES.contains(&k.as_str()) {
                details.push(format!(
                    "volume {:?} uses restricted volume type {k:?}",
                    name(v)
                ));
            }
        }
    }
    if details.is_empty() {
        return None;
    }
    failure(
        "restrictedVolumes",
        "restricted volume types",
        details.join(", "),
    )
}

fn allow_privilege_escalation(spec: &Value) -> Option<Failure> {
    let bad: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| c["securityContext"]["allowPrivilegeEscalation"] != false)
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    failure(
        "allowPrivilegeEscalation",
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            which(&bad)
        ),
    )
}

fn run_as_non_root(spec: &Value) -> Option<Failure> {
    let pod = spec["securityContext"]["runAsNonRoot"].as_bool();
    let mut details = Vec::new();
    if pod == Some(false) {
        details.push("pod must not set securityContext.runAsNonRoot=false".to_string());
    }
    let explicit_false: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| c["securityContext"]["runAsNonRoot"] == false)
        .map(name)
        .collect();
    if !explicit_false.is_empty() {
        details.push(format!(
            "{} must not set securityContext.runAsNonRoot=false",
            which(&explicit_false)
        ));
    }
    if pod != Some(true) {
        let unset: Vec<String> = containers(spec)
            .into_iter()
            .filter(|c| c["securityContext"]["runAsNonRoot"].is_null())
            .map(name)
            .collect();
        if !unset.is_empty() && pod.is_none() {
            details.push(format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                which(&unset)
            ));
        }
    }
    if details.is_empty() {
        return None;
    }
    failure("runAsNonRoot", "runAsNonRoot != true", details.join("; "))
}

fn run_as_user(spec: &Value) -> Option<Failure> {
    let mut details = Vec::new();
    if spec["securityContext"]["runAsUser"] == 0 {
        details.push("pod must not set runAsUser=0".to_string());
    }
    let bad: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| c["securityContext"]["runAsUser"] == 0)
        .map(name)
        .collect();
    if !bad.is_empty() {
        details.push(format!("{} must not set runAsUser=0", which(&bad)));
    }
    if details.is_empty() {
        return None;
    }
    failure("runAsUser", "runAsUser=0", details.join("; "))
}

/// The checks of a level, in upstream's order (by check ID).
pub fn check(spec: &Value, restricted: bool) -> Vec<Failure> {
    let mut out: Vec<Failure> = [
        host_namespaces(spec),
        privileged(spec),
        if restricted {
            None
        } else {
            capabilities_baseline(spec)
        },
        host_path_volumes(spec),
        host_ports(spec),
        proc_mount(spec),
        if restricted {
            None
        } else {
            seccomp_baseline(spec)
        },
        sysctls(spec),
    ]
    .into_iter()
    .flatten()
    .collect();
    if restricted {
        out.extend(
            [
                restricted_volumes(spec),
                allow_privilege_escalation(spec),
                run_as_non_root(spec),
                run_as_user(spec),
                seccomp_restricted(spec),
                capabilities_restricted(spec),
            ]
            .into_iter()
            .flatten(),
        );
    }
    out.sort_by(|a, b| a.id.cmp(b.id));
    out
}
