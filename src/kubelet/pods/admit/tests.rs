use super::*;
use serde_json::Value;

fn pod(v: Value) -> Pod {
    let mut base = json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    });
    merge(&mut base, v);
    serde_json::from_value(base).expect("pod")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn sysctls(names: &[&str]) -> Pod {
    let list: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "value": "1"}))
        .collect();
    pod(json!({"spec": {"securityContext": {"sysctls": list}}}))
}

#[test]
fn safe_sysctls_pass_unsafe_ones_need_the_flag() {
    let safe = Sysctls::new(&[]).expect("safe");
    assert_eq!(
        safe.admit(&sysctls(&[
            "kernel.shm_rmid_forced",
            "net.ipv4.tcp_syncookies"
        ])),
        None
    );
    let r = safe.admit(&sysctls(&["kernel.msgmax"])).expect("refused");
    assert_eq!(r.reason, "SysctlForbidden");
    assert_eq!(
        r.message,
        "forbidden sysctl: \"kernel.msgmax\" not allowlisted"
    );

    let allowed = Sysctls::new(&["kernel.msg*".into(), "net.core.somaxconn".into()]).expect("flag");
    assert_eq!(
        allowed.admit(&sysctls(&["kernel.msgmax", "net/core/somaxconn"])),
        None
    );
    assert!(allowed.admit(&sysctls(&["net.core.rmem_max"])).is_some());

    // A network sysctl in a pod on the host's network would change the host's.
    let mut host = sysctls(&["net.ipv4.ip_local_port_range"]);
    host.spec.as_mut().expect("spec").host_network = Some(true);
    assert_eq!(
        safe.admit(&host).expect("refused").message,
        "forbidden sysctl: \"net.ipv4.ip_local_port_range\" not allowed with host net enabled"
    );
}

#[test]
fn the_allowlist_takes_only_namespaced_sysctls() {
    assert!(matches!(
        Sysctls::new(&["vm.swappiness".into()]),
        Err(AdmitError::Unnamespaced(n)) if n == "vm.swappiness"
    ));
    assert!(matches!(
        Sysctls::new(&["Net.Core".into()]),
        Err(AdmitError::Pattern(_))
    ));
    assert!(Sysctls::new(&[
        "net.*".into(),
        "fs.mqueue.msg_max".into(),
        "kernel.sem".into()
    ])
    .is_ok());
    assert_eq!(
        normalize("net/ipv4/conf/eth0.1/rp_filter"),
        "net.ipv4.conf.eth0/1.rp_filter"
    );
    assert_eq!(
        normalize("net.ipv4.conf.eth0/1.rp_filter"),
        "net.ipv4.conf.eth0/1.rp_filter"
    );
}

#[test]
fn pressure_refuses_besteffort_pods_under_memory_pressure_and_all_under_disk_pressure() {
    let best_effort = pod(json!({}));
    let burstable = pod(
        json!({"spec": {"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"memory": "1Mi"}}}]}}),
    );
    let memory = Pressure {
        memory: true,
        ..Default::default()
    };
    assert_eq!(pressure(&burstable, memory), None);
    let r = pressure(&best_effort, memory).expect("refused");
    assert_eq!(r.reason, "Evicted");
    assert_eq!(r.message, "The node had condition: [MemoryPressure]. ");
    let tolerant = pod(json!({"spec": {"tolerations": [
        {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}]}}));
    assert_eq!(pressure(&tolerant, memory), None);

    let disk = Pressure {
        memory: true,
        disk: true,
        ..Default::default()
    };
    assert_eq!(
        pressure(&burstable, disk).expect("refused").message,
        "The node had condition: [MemoryPressure DiskPressure]. "
    );
    let critical = pod(json!({"spec": {"priority": 2_000_001_000}}));
    assert_eq!(pressure(&critical, disk), None);
    assert_eq!(pressure(&best_effort, Pressure::default()), None);
}

#[test]
fn pods_for_another_os_are_refused() {
    assert_eq!(os(&pod(json!({"spec": {"os": {"name": "linux"}}}))), None);
    assert_eq!(
        os(&pod(json!({"spec": {"os": {"name": "windows"}}})))
            .expect("os")
            .reason,
        "PodOSNotSupported"
    );
    assert_eq!(
        os(&pod(
            json!({"metadata": {"labels": {"kubernetes.io/os": "windows"}}})
        ))
        .expect("label")
        .reason,
        "PodOSSelectorNodeLabelDoesNotMatch"
    );
}

#[test]
fn affinity_and_noexecute_taints_are_checked_against_the_node() {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1", "labels": {"disk": "ssd"}},
        "spec": {"taints": [
            {"key": "dedicated", "value": "db", "effect": "NoExecute"},
            {"key": "soft", "effect": "NoSchedule"},
        ]},
    }))
    .expect("node");
    let tolerates = json!([{"key": "dedicated", "operator": "Exists"}]);
    let p = pod(json!({"spec": {"nodeSelector": {"disk": "ssd"}, "tolerations": tolerates}}));
    assert_eq!(affinity(&p, &node), None);
    // NoSchedule taints are the scheduler's business, not the kubelet's.
    assert_eq!(taints(&p, &node), None);

    let p = pod(json!({"spec": {"nodeSelector": {"disk": "hdd"}}}));
    assert_eq!(
        affinity(&p, &node).expect("affinity").message,
        "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
    );
    let r = taints(&p, &node).expect("taint");
    assert_eq!(r.reason, "TaintToleration");
    assert_eq!(
        r.message,
        "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"
    );
    let static_pod =
        pod(json!({"metadata": {"annotations": {"kubernetes.io/config.source": "file"}}}));
    assert_eq!(taints(&static_pod, &node), None);
}
