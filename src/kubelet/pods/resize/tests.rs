use super::*;

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
    Allocations::load(&dir.join("state.json"), (2000, 1 << 30))
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
    a.admit("one", desired(&pod("1500m", "64Mi")))
        .expect("fits");
    let (resource, message) = a
        .admit("two", desired(&pod("1", "64Mi")))
        .expect_err("no room");
    assert_eq!(resource, "cpu");
    assert_eq!(
        message,
        "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"
    );
    assert_eq!(a.get("two"), None);
    // A pod that asks for nothing always fits.
    let none = Allocation::default();
    a.admit("three", none.clone()).expect("fits");
    assert_eq!(a.get("three"), Some(none));
}
