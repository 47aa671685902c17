//! In-place pod resize on the real machine, as `kubectl patch --subresource resize` drives it:
//! the running container's cgroup changes without a restart, a container whose resize policy
//! says RestartContainer restarts once with its new limit, the pod's cgroup follows, the status
//! shows what was allocated and applied, a resize past the node waits as Infeasible, and the
//! API refuses what upstream refuses. A pod bound by hand past what is free is rejected.

use std::path::PathBuf;

use k1s::kubelet::cgroups::fs::Layout;

use super::common::server::{eventually, ok, text, within, write, Server};
use super::jsonpath;

const RESIZABLE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: resizable}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: a
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    resources:
      requests: {cpu: 100m, memory: 16Mi}
      limits: {cpu: 200m, memory: 32Mi}
  - name: b
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    resizePolicy:
    - {resourceName: memory, restartPolicy: RestartContainer}
    resources:
      requests: {cpu: 50m, memory: 8Mi}
      limits: {cpu: 100m, memory: 16Mi}
"#;

/// Bound to the node by hand past its allocatable: the kubelet rejects it.
const TOO_BIG: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: too-big}
spec:
  nodeName: edge-1
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sleep, "3600"], resources: {requests: {cpu: "1000"}}}
"#;

fn read(p: &PathBuf) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The memory limit file of the cgroup `name` (v1 or v2).
fn memory_file(layout: &Layout, name: &str) -> PathBuf {
    let rel = name.trim_start_matches('/');
    match layout {
        Layout::V1 { controllers, .. } => controllers["memory"]
            .join(rel)
            .join("memory.limit_in_bytes"),
        Layout::V2 { root } => root.join(rel).join("memory.max"),
    }
}

/// `path` of the status of container `name` of pod `pod`.
fn container_of(s: &Server, pod: &str, name: &str, path: &str) -> String {
    jsonpath(
        s,
        &format!("pod/{pod}"),
        &format!("{{.status.containerStatuses[?(@.name==\"{name}\")]{path}}}"),
    )
}

fn container(s: &Server, name: &str, path: &str) -> String {
    container_of(s, "resizable", name, path)
}

/// Patches pod `pod` through its resize subresource.
fn resize_pod(s: &Server, pod: &str, patch: &str) -> std::process::Output {
    s.kubectl(&[
        "patch",
        "pod",
        pod,
        "--subresource",
        "resize",
        "--patch",
        patch,
    ])
}

fn resize(s: &Server, patch: &str) -> std::process::Output {
    resize_pod(s, "resizable", patch)
}

/// Applies the Burstable pod `pod` from `manifest` and waits for it to be Ready; its cgroup.
fn start_burstable(
    s: &Server,
    tmp: &std::path::Path,
    root: &str,
    pod: &str,
    manifest: &str,
) -> String {
    ok(
        s,
        &["apply", "-f", &write(tmp, &format!("{pod}.yaml"), manifest)],
    );
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=60s",
        ],
    );
    let uid = jsonpath(s, &format!("pod/{pod}"), "{.metadata.uid}");
    format!("{root}/kubepods/burstable/pod{uid}")
}

/// The memory limit file of container `name` of pod `pod`, in the pod's cgroup.
fn container_memory(
    s: &Server,
    layout: &Layout,
    pod: &str,
    pod_cgroup: &str,
    name: &str,
) -> PathBuf {
    let id = container_of(s, pod, name, ".containerID");
    let id = id.trim_start_matches("containerd://").to_string();
    memory_file(layout, &format!("{pod_cgroup}/{id}"))
}

pub fn resize_in_place(s: &Server, tmp: &std::path::Path, root: &str) {
    let layout = Layout::detect().expect("cgroups are mounted");
    let pod_cgroup = start_burstable(s, tmp, root, "resizable", RESIZABLE);
    let cgroup_of = |name: &str| container_memory(s, &layout, "resizable", &pod_cgroup, name);
    let mib = |n: u64| (n << 20).to_string();
    assert_eq!(read(&cgroup_of("a")), mib(32));
    assert_eq!(read(&memory_file(&layout, &pod_cgroup)), mib(48));
    assert_eq!(container(s, "a", ".allocatedResources.cpu"), "100m");
    assert_eq!(container(s, "a", ".resources.limits.memory"), "32Mi");
    assert_eq!(
        jsonpath(s, "pod/resizable", "{.status.observedGeneration}"),
        "1"
    );

    // The resize subresource reads as the pod.
    let got = ok(
        s,
        &[
            "get",
            "pod",
            "resizable",
            "--subresource",
            "resize",
            "-o",
            "jsonpath={.metadata.name}",
        ],
    );
    assert_eq!(got, "resizable");

    // What upstream refuses.
    let o = resize(
        s,
        r#"{"spec":{"containers":[{"name":"a","resources":{"requests":{"cpu":"200m","memory":"32Mi"}}},{"name":"b","resources":{"requests":{"cpu":"100m","memory":"16Mi"}}}]}}"#,
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("Pod QOS Class may not change as a result of resizing"),
        "{}",
        text(&o)
    );
    let o = s.kubectl(&[
        "patch",
        "pod",
        "resizable",
        "--patch",
        r#"{"spec":{"containers":[{"name":"a","resources":{"limits":{"memory":"64Mi"}}}]}}"#,
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("pod updates may not change fields other than"),
        "{}",
        text(&o)
    );

    // More memory and cpu for a, in place; more memory for b, by a restart.
    let o = resize(
        s,
        r#"{"spec":{"containers":[{"name":"a","resources":{"requests":{"cpu":"150m"},"limits":{"cpu":"300m","memory":"64Mi"}}},{"name":"b","resources":{"limits":{"memory":"24Mi"}}}]}}"#,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(jsonpath(s, "pod/resizable", "{.metadata.generation}"), "2");
    within(30, "a's cgroup to hold 64Mi", || {
        read(&cgroup_of("a")) == mib(64)
    });
    within(30, "b to restart with 24Mi", || {
        container(s, "b", ".restartCount") == "1" && read(&cgroup_of("b")) == mib(24)
    });
    assert_eq!(container(s, "a", ".restartCount"), "0");
    assert_eq!(read(&memory_file(&layout, &pod_cgroup)), mib(88));
    eventually(
        s,
        &[
            "get",
            "pod",
            "resizable",
            "-o",
            "jsonpath={.status.observedGeneration}|{.status.conditions[*].type}|{.status.containerStatuses[?(@.name==\"a\")].resources.limits.memory}",
        ],
        |o| o.starts_with("2|") && !o.contains("PodResize") && o.ends_with("|64Mi"),
    );
    assert_eq!(container(s, "a", ".allocatedResources.cpu"), "150m");

    // A memory limit below what the container uses is not set: the resize stays in progress
    // with upstream's error until the usage drops.
    ok(
        s,
        &[
            "exec",
            "resizable",
            "-c",
            "a",
            "--",
            "sh",
            "-c",
            "head -c 40m /dev/zero > /dev/shm/fill",
        ],
    );
    let o = resize(
        s,
        r#"{"spec":{"containers":[{"name":"a","resources":{"limits":{"memory":"32Mi"}}}]}}"#,
    );
    assert!(o.status.success(), "{}", text(&o));
    let error = eventually(
        s,
        &[
            "get",
            "pod",
            "resizable",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodResizeInProgress\")].reason}|{.status.conditions[?(@.type==\"PodResizeInProgress\")].message}",
        ],
        |o| o.starts_with("Error|"),
    );
    assert!(
        error.contains(
            "attempting to set container \"a\" memory limit (33554432) below current usage"
        ),
        "{error}"
    );
    assert_eq!(read(&cgroup_of("a")), mib(64));
    ok(
        s,
        &["exec", "resizable", "-c", "a", "--", "rm", "/dev/shm/fill"],
    );
    within(30, "a's cgroup to hold 32Mi", || {
        read(&cgroup_of("a")) == mib(32)
    });
    eventually(
        s,
        &[
            "get",
            "pod",
            "resizable",
            "-o",
            "jsonpath={.status.conditions[*].type}",
        ],
        |o| !o.contains("PodResize"),
    );

    // Past the node's allocatable: the resize waits, the containers keep what they have.
    let o = resize(
        s,
        r#"{"spec":{"containers":[{"name":"a","resources":{"requests":{"cpu":"1000"},"limits":{"cpu":"1000"}}}]}}"#,
    );
    assert!(o.status.success(), "{}", text(&o));
    let pending = eventually(
        s,
        &[
            "get",
            "pod",
            "resizable",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodResizePending\")].reason}|{.status.conditions[?(@.type==\"PodResizePending\")].message}",
        ],
        |o| o.starts_with("Infeasible|"),
    );
    assert!(
        pending.contains("Node didn't have enough capacity: cpu, requested: 1000050"),
        "{pending}"
    );
    assert_eq!(container(s, "a", ".allocatedResources.cpu"), "150m");
    // Back within the node: allocated, and the condition goes.
    let o = resize(
        s,
        r#"{"spec":{"containers":[{"name":"a","resources":{"requests":{"cpu":"100m"},"limits":{"cpu":"200m"}}}]}}"#,
    );
    assert!(o.status.success(), "{}", text(&o));
    eventually(
        s,
        &[
            "get",
            "pod",
            "resizable",
            "-o",
            "jsonpath={.status.conditions[*].type}|{.status.containerStatuses[?(@.name==\"a\")].allocatedResources.cpu}",
        ],
        |o| !o.contains("PodResize") && o.ends_with("|100m"),
    );
    ok(s, &["delete", "pod", "resizable", "--wait=true"]);

    // The node admits only pods that fit beside the others, as upstream's kubelet.
    ok(s, &["apply", "-f", &write(tmp, "too-big.yaml", TOO_BIG)]);
    let rejected = eventually(
        s,
        &[
            "get",
            "pod",
            "too-big",
            "-o",
            "jsonpath={.status.phase}|{.status.reason}|{.status.message}",
        ],
        |o| o.starts_with("Failed|"),
    );
    assert!(
        rejected.starts_with(
            "Failed|OutOfcpu|Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: "
        ),
        "{rejected}"
    );
    ok(s, &["delete", "pod", "too-big", "--wait=true"]);
}

/// A pod with resources of its own: the container without a limit runs within the pod's.
const POD_LEVEL: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: pod-level-resize}
spec:
  terminationGracePeriodSeconds: 1
  resources:
    requests: {cpu: 100m, memory: 16Mi}
    limits: {cpu: 200m, memory: 48Mi}
  containers:
  - name: own
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    resources:
      requests: {cpu: 50m, memory: 8Mi}
      limits: {memory: 16Mi}
  - name: bare
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
"#;

/// The CPU quota file of the cgroup `name` (v1 or v2), and what it holds for `quota` µs.
fn cpu_quota(layout: &Layout, name: &str, quota: u64) -> (PathBuf, String) {
    let rel = name.trim_start_matches('/');
    match layout {
        Layout::V1 { controllers, .. } => (
            controllers["cpu"].join(rel).join("cpu.cfs_quota_us"),
            quota.to_string(),
        ),
        Layout::V2 { root } => (root.join(rel).join("cpu.max"), format!("{quota} 100000")),
    }
}

/// In-place resize of a pod's own resources (PodLevelResources, beta since 1.36): the pod's
/// cgroup and the containers that inherit its limits follow, without restarts, and the pod's
/// status shows what was allocated and applied.
pub fn pod_level_resize(s: &Server, tmp: &std::path::Path, root: &str) {
    let layout = Layout::detect().expect("cgroups are mounted");
    let pod_cgroup = start_burstable(s, tmp, root, "pod-level-resize", POD_LEVEL);
    let cgroup_of =
        |name: &str| container_memory(s, &layout, "pod-level-resize", &pod_cgroup, name);
    let mib = |n: u64| (n << 20).to_string();
    let status = || {
        jsonpath(
            s,
            "pod/pod-level-resize",
            "{.status.allocatedResources.cpu}|{.status.resources.limits.memory}|{.status.resources.limits.cpu}",
        )
    };
    assert_eq!(read(&memory_file(&layout, &pod_cgroup)), mib(48));
    assert_eq!(read(&cgroup_of("bare")), mib(48), "the pod's limit");
    assert_eq!(read(&cgroup_of("own")), mib(16));
    assert_eq!(status(), "100m|48Mi|200m");

    // Limits cannot be taken away.
    let resize = |patch: &str| resize_pod(s, "pod-level-resize", patch);
    let o = resize(r#"{"spec":{"resources":{"limits":{"memory":null}}}}"#);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("pod-level resource limits cannot be removed"),
        "{}",
        text(&o)
    );

    // More cpu and memory for the pod: its cgroup and the container without limits follow.
    let o = resize(
        r#"{"spec":{"resources":{"requests":{"cpu":"150m"},"limits":{"cpu":"300m","memory":"96Mi"}}}}"#,
    );
    assert!(o.status.success(), "{}", text(&o));
    within(30, "the pod's cgroup to hold 96Mi", || {
        read(&memory_file(&layout, &pod_cgroup)) == mib(96)
    });
    within(30, "the container without limits to hold 96Mi", || {
        read(&cgroup_of("bare")) == mib(96)
    });
    let (file, want) = cpu_quota(&layout, &pod_cgroup, 30_000);
    assert_eq!(read(&file), want, "{}", file.display());
    assert_eq!(read(&cgroup_of("own")), mib(16));
    eventually(
        s,
        &[
            "get",
            "pod",
            "pod-level-resize",
            "-o",
            "jsonpath={.status.observedGeneration}|{.status.conditions[*].type}|{.status.resources.limits.memory}",
        ],
        |o| o.starts_with("2|") && !o.contains("PodResize") && o.ends_with("|96Mi"),
    );
    assert_eq!(status(), "150m|96Mi|300m");
    let restarts = jsonpath(
        s,
        "pod/pod-level-resize",
        "{.status.containerStatuses[*].restartCount}",
    );
    assert_eq!(restarts, "0 0");

    // A pod memory limit below what the pod's cgroup uses is refused until it fits.
    ok(
        s,
        &[
            "exec",
            "pod-level-resize",
            "-c",
            "bare",
            "--",
            "sh",
            "-c",
            "head -c 40m /dev/zero > /dev/shm/fill",
        ],
    );
    let o = resize(r#"{"spec":{"resources":{"limits":{"memory":"32Mi"}}}}"#);
    assert!(o.status.success(), "{}", text(&o));
    let error = eventually(
        s,
        &[
            "get",
            "pod",
            "pod-level-resize",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodResizeInProgress\")].reason}|{.status.conditions[?(@.type==\"PodResizeInProgress\")].message}",
        ],
        |o| o.starts_with("Error|"),
    );
    assert!(
        error.contains("attempting to set pod memory limit (33554432) below current usage"),
        "{error}"
    );
    assert_eq!(read(&memory_file(&layout, &pod_cgroup)), mib(96));
    ok(
        s,
        &[
            "exec",
            "pod-level-resize",
            "-c",
            "bare",
            "--",
            "rm",
            "/dev/shm/fill",
        ],
    );
    within(30, "the pod's cgroup to hold 32Mi", || {
        read(&memory_file(&layout, &pod_cgroup)) == mib(32)
    });
    ok(s, &["delete", "pod", "pod-level-resize", "--wait=true"]);
}
