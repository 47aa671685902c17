use std::collections::HashSet;
use std::path::Path;

use super::*;
use crate::kubelet::pods::admit::Refusal;

fn pod(cpu: &str, memory: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "uid": "u1", "generation": 2},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {
            "requests": {"cpu": cpu, "memory": memory, "ephemeral-storage": "1Gi"},
            "limits": {"memory": memory}}}]},
    }))
    .expect("pod")
}

fn allocations(dir: &Path) -> Allocations {
    Allocations::load(&dir.join("state.json"), (2000, 1 << 30), 110)
}

#[test]
fn a_pod_is_allocated_what_its_spec_asks_and_the_checkpoint_keeps_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = allocations(dir.path());
    let want = desired(&pod("500m", "64Mi"));
    assert_eq!(want.cpu_request, 500);
    assert_eq!(want.memory_request, 64 << 20);
    let c = &want.containers["c"];
    assert!(c
        .requests
        .as_ref()
        .expect("requests")
        .get("ephemeral-storage")
        .is_none());
    a.set("u1", want.clone()).expect("set");
    assert_eq!(allocations(dir.path()).get("u1"), Some(want));
    a.retain(&HashSet::new());
    assert_eq!(allocations(dir.path()).get("u1"), None);
}

#[test]
fn a_resize_past_the_node_is_infeasible_past_whats_free_deferred() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = allocations(dir.path());
    a.set("other", desired(&pod("1500m", "64Mi"))).expect("set");
    let (reason, message) = a
        .check("u1", &desired(&pod("3", "64Mi")))
        .expect("infeasible");
    assert_eq!(reason, "Infeasible");
    assert_eq!(
        message,
        "Node didn't have enough capacity: cpu, requested: 3000, capacity: 2000"
    );
    let (reason, message) = a
        .check("u1", &desired(&pod("1", "64Mi")))
        .expect("deferred");
    assert_eq!(reason, "Deferred");
    assert_eq!(
        message,
        "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"
    );
    assert_eq!(a.check("u1", &desired(&pod("500m", "64Mi"))), None);
    // Its own allocation does not count against it.
    a.set("u1", desired(&pod("500m", "64Mi"))).expect("set");
    assert_eq!(a.check("u1", &desired(&pod("500m", "128Mi"))), None);
}

#[test]
fn the_allocated_pod_keeps_its_other_resources() {
    let spec = pod("1", "128Mi");
    let old = desired(&pod("500m", "64Mi"));
    let p = apply(&spec, &old);
    let r = p.spec.expect("spec").containers[0]
        .resources
        .clone()
        .expect("r");
    let req = r.requests.expect("requests");
    assert_eq!(req["cpu"].0, "500m");
    assert_eq!(req["memory"].0, "64Mi");
    assert_eq!(req["ephemeral-storage"].0, "1Gi");
    assert_eq!(r.limits.expect("limits")["memory"].0, "64Mi");
}

#[test]
fn decreases_go_first_at_each_amounts_lower() {
    let q = |v: &str| Quantity(v.into());
    let rr = |cpu: &str, mem: Option<&str>| ResourceRequirements {
        requests: Some([("cpu".to_string(), q(cpu))].into()),
        limits: mem.map(|m| [("memory".to_string(), q(m))].into()),
        claims: None,
    };
    // cpu up, memory down: the memory first, the cpu as it was.
    let low = lower(&rr("100m", Some("128Mi")), &rr("200m", Some("64Mi")));
    assert_eq!(low, rr("100m", Some("64Mi")));
    // A limit that was not there is no limit: the lower is the new one.
    let low = lower(&rr("100m", None), &rr("100m", Some("64Mi")));
    assert_eq!(low, rr("100m", Some("64Mi")));
}

#[test]
fn the_pods_own_resources_are_allocated_and_inherited_by_containers_without_limits() {
    let level = |cpu: &str, memory: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u1", "generation": 3},
            "spec": {
                "resources": {"requests": {"cpu": cpu}, "limits": {"memory": memory}},
                "containers": [
                    {"name": "own", "image": "busybox", "resources": {"limits": {"memory": "16Mi"}}},
                    {"name": "bare", "image": "busybox"}]},
        }))
        .expect("pod")
    };
    let was = desired(&level("200m", "64Mi"));
    let now = desired(&level("400m", "128Mi"));
    assert_eq!(
        now.cpu_request, 400,
        "the pod's requests stand for its containers'"
    );
    assert_ne!(was, now);
    assert_eq!(was.containers, now.containers, "only the pod's own changed");
    // Held at what was allocated while the resize waits.
    let held = apply(&level("400m", "128Mi"), &was);
    let r = held
        .spec
        .as_ref()
        .and_then(|s| s.resources.clone())
        .expect("r");
    assert_eq!(r.requests.expect("requests")["cpu"].0, "200m");
    assert_eq!(r.limits.expect("limits")["memory"].0, "64Mi");
    // A container without a limit runs within the pod's; one with its own keeps it.
    let own = cpu_memory(now.containers.get("own"));
    assert_eq!(
        effective(&own, now.pod.as_ref()).limits.expect("l")["memory"].0,
        "16Mi"
    );
    let bare = cpu_memory(now.containers.get("bare"));
    assert_eq!(
        effective(&bare, now.pod.as_ref()).limits.expect("l")["memory"].0,
        "128Mi"
    );
    // The status figures: the pod's requests, its own limits.
    let v = pod_resources(&level("400m", "128Mi"));
    assert_eq!(v["requests"]["cpu"], "400m");
    assert_eq!(v["limits"]["memory"], "128Mi");
    assert!(v["limits"].get("cpu").is_none(), "{v}");
    let s: Value = serde_json::from_str(&summary(&level("400m", "128Mi"), None)).expect("json");
    assert_eq!(s["resources"]["requests"]["cpu"], "400m");
}

#[test]
fn the_event_summary_is_upstreams_shape() {
    let s: Value = serde_json::from_str(&summary(&pod("1", "64Mi"), Some("boom"))).expect("json");
    assert_eq!(s["generation"], 2);
    assert_eq!(s["containers"][0]["name"], "c");
    assert_eq!(s["containers"][0]["resources"]["requests"]["cpu"], "1");
    assert_eq!(s["error"], "boom");
}

#[test]
fn a_new_pod_is_admitted_only_where_it_fits() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = allocations(dir.path());
    let admit = |uid, want| a.admit(uid, want, None, Predicates::default());
    admit("one", desired(&pod("1500m", "64Mi"))).expect("fits");
    let r = admit("two", desired(&pod("1", "64Mi"))).expect_err("no room");
    assert_eq!(r.reason, "OutOfcpu");
    assert_eq!(
        r.message,
        "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"
    );
    assert_eq!(a.get("two"), None);
    // A pod that asks for nothing always fits.
    let none = Allocation::default();
    admit("three", none.clone()).expect("fits");
    assert_eq!(a.get("three"), Some(none));
}

fn offered(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

#[test]
fn admission_counts_pods_other_resources_and_host_ports_in_upstreams_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = allocations(dir.path());
    let node = offered(&[
        ("pods", "2"),
        ("ephemeral-storage", "3Gi"),
        ("example.com/dongle", "2"),
    ]);
    let with = |extra: Value| -> Allocation {
        let mut p = pod("100m", "16Mi");
        let mut v = serde_json::to_value(&p).expect("pod");
        let c = &mut v["spec"]["containers"][0];
        for (k, q) in extra["requests"].as_object().into_iter().flatten() {
            c["resources"]["requests"][k] = q.clone();
            c["resources"]["limits"][k] = q.clone();
        }
        c["ports"] = extra["ports"].clone();
        p = serde_json::from_value(v).expect("pod");
        desired(&p)
    };
    let first = with(json!({
        "requests": {"example.com/dongle": "1"},
        "ports": [{"containerPort": 80, "hostPort": 8080}],
    }));
    assert_eq!(first.other["example.com/dongle"], 1);
    assert_eq!(first.other["ephemeral-storage"], 1 << 30);
    assert_eq!(
        first.host_ports,
        vec![("TCP".to_string(), "0.0.0.0".to_string(), 8080)]
    );
    a.admit("one", first, Some(&node), Predicates::default())
        .expect("fits");

    let r = a
        .admit(
            "two",
            with(json!({"requests": {"example.com/dongle": "2"}})),
            Some(&node),
            Predicates::default(),
        )
        .expect_err("one dongle left");
    assert_eq!(r.reason, "OutOfexample.com/dongle");
    assert_eq!(
        r.message,
        "Node didn't have enough resource: example.com/dongle, requested: 2, used: 1, capacity: 2"
    );
    // Extended resources the node does not list are the cluster's: left out.
    let cluster = with(json!({"requests": {"example.org/licence": "5"}}));
    // Resources come before the other predicates, ports before taints.
    let affinity = Some(Refusal::predicate("NodeAffinity", "no"));
    let r = a
        .admit(
            "two",
            with(json!({"requests": {"ephemeral-storage": "3Gi"}})),
            Some(&node),
            Predicates {
                affinity: affinity.clone(),
                taints: None,
            },
        )
        .expect_err("disk");
    assert_eq!(r.reason, "OutOfephemeral-storage");
    let r = a
        .admit(
            "two",
            cluster.clone(),
            Some(&node),
            Predicates {
                affinity,
                taints: None,
            },
        )
        .expect_err("affinity");
    assert_eq!(r.message, "Predicate NodeAffinity failed: no");
    let clash =
        with(json!({"ports": [{"containerPort": 81, "hostPort": 8080, "hostIP": "127.0.0.1"}]}));
    let taints = Some(Refusal::predicate("TaintToleration", "no"));
    let r = a
        .admit(
            "two",
            clash,
            Some(&node),
            Predicates {
                affinity: None,
                taints: taints.clone(),
            },
        )
        .expect_err("port");
    assert_eq!(
        r.message,
        "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
    );
    let r = a
        .admit(
            "two",
            cluster.clone(),
            Some(&node),
            Predicates {
                affinity: None,
                taints,
            },
        )
        .expect_err("taint");
    assert_eq!(r.reason, "TaintToleration");
    a.admit("two", cluster.clone(), Some(&node), Predicates::default())
        .expect("fits");
    // The node's pods capacity: two.
    let r = a
        .admit(
            "three",
            Allocation::default(),
            Some(&node),
            Predicates::default(),
        )
        .expect_err("full");
    assert_eq!(r.reason, "OutOfpods");
    assert_eq!(
        r.message,
        "Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2"
    );
    // Without the Node object, --max-pods.
    a.admit("three", Allocation::default(), None, Predicates::default())
        .expect("110 pods");
}
