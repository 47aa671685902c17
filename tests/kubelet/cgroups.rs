//! Pods' cgroups on the real machine: a pod's cgroup under its QoS class's in the node's
//! `kubepods` (under the test's `--cgroup-root`), with the pod's limits in the kernel's files,
//! its containers inside it, and gone once the pod is deleted.

use std::path::PathBuf;

use k1s::kubelet::cgroups::fs::Layout;

use super::common::server::{ok, within, write, Server};
use super::jsonpath;

const LIMITED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: limited}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: a
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    resources:
      requests: {cpu: 100m, memory: 16Mi}
      limits: {cpu: 300m, memory: 48Mi}
  - name: b
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    resources:
      requests: {cpu: 100m}
      limits: {cpu: 200m, memory: 16Mi}
"#;

/// Resources for the pod as a whole (PodLevelResources): containers without limits of their own
/// run within the pod's.
const POD_LEVEL: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: pod-level}
spec:
  terminationGracePeriodSeconds: 1
  resources:
    limits: {cpu: 400m, memory: 40Mi}
  containers:
  - name: a
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    env:
    - name: MEM
      valueFrom: {resourceFieldRef: {resource: limits.memory}}
    resources:
      requests: {cpu: 100m, memory: 8Mi}
  - name: b
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
"#;

/// The file of `controller` for the cgroup `name`, on this machine's layout.
fn file(layout: &Layout, controller: &str, name: &str, v1: &str, v2: &str) -> PathBuf {
    let rel = name.trim_start_matches('/');
    match layout {
        Layout::V1 { controllers, .. } => controllers[controller].join(rel).join(v1),
        Layout::V2 { root } => root.join(rel).join(v2),
    }
}

fn read(p: &PathBuf) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The pod `limited` (Burstable, every container limited) and a BestEffort web pod `web`.
pub fn cgroups(s: &Server, tmp: &std::path::Path, root: &str, web: &str) {
    let layout = Layout::detect().expect("cgroups are mounted");
    let kubepods = format!("{root}/kubepods");

    // The node's: kubepods limited to the capacity less --kube-reserved (none here), the QoS
    // classes under it; the reported allocatable also holds back the hard eviction threshold.
    let node_memory = file(
        &layout,
        "memory",
        &kubepods,
        "memory.limit_in_bytes",
        "memory.max",
    );
    let kib = |field: &str| -> u64 {
        let q = jsonpath(s, "node/edge-1", &format!("{{.status.{field}.memory}}"));
        q.trim_end_matches("Ki").parse().expect("Ki")
    };
    assert_eq!(
        read(&node_memory),
        (kib("capacity") * 1024).to_string(),
        "{node_memory:?}"
    );
    // The test server's memory.available<1Mi.
    assert_eq!(kib("allocatable"), kib("capacity") - 1024);
    let best = file(
        &layout,
        "cpu",
        &format!("{kubepods}/besteffort"),
        "cpu.shares",
        "cpu.weight",
    );
    let least = if matches!(layout, Layout::V1 { .. }) {
        "2"
    } else {
        "1"
    };
    assert_eq!(read(&best), least, "{best:?}");

    // A BestEffort pod lives under besteffort.
    let uid = jsonpath(s, &format!("pod/{web}"), "{.metadata.uid}");
    let dir = file(
        &layout,
        "memory",
        &format!("{kubepods}/besteffort/pod{uid}"),
        "",
        "",
    );
    assert!(dir.is_dir(), "{dir:?}");

    // A Burstable pod whose containers all have limits: the pod is held to their sum.
    ok(s, &["apply", "-f", &write(tmp, "limited.yaml", LIMITED)]);
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/limited",
            "--timeout=60s",
        ],
    );
    let uid = jsonpath(s, "pod/limited", "{.metadata.uid}");
    let pod = format!("{kubepods}/burstable/pod{uid}");
    let memory = file(
        &layout,
        "memory",
        &pod,
        "memory.limit_in_bytes",
        "memory.max",
    );
    assert_eq!(read(&memory), (64 * 1024 * 1024).to_string(), "{memory:?}");
    match layout {
        Layout::V1 { .. } => {
            let quota = file(&layout, "cpu", &pod, "cpu.cfs_quota_us", "");
            assert_eq!(read(&quota), "50000", "{quota:?}");
            let shares = file(&layout, "cpu", &pod, "cpu.shares", "");
            assert_eq!(read(&shares), "204", "{shares:?}");
        }
        Layout::V2 { .. } => {
            let max = file(&layout, "cpu", &pod, "", "cpu.max");
            assert_eq!(read(&max), "50000 100000", "{max:?}");
        }
    }
    // Its sandbox and both containers run inside it.
    let pod_dir = file(&layout, "memory", &pod, "", "");
    let busy = std::fs::read_dir(&pod_dir)
        .expect("pod cgroup")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter(|e| !read(&e.path().join("cgroup.procs")).is_empty())
        .count();
    assert_eq!(busy, 3, "pause and two containers in {pod_dir:?}");

    // Deleted, the pod's cgroup goes.
    ok(s, &["delete", "pod", "limited", "--wait=true"]);
    within(40, "the deleted pod's cgroup to go", || !pod_dir.exists());

    // Pod-level resources: the pod's requests default from its containers', its cgroup holds
    // its limits, and a container without limits of its own gets the pod's.
    ok(
        s,
        &["apply", "-f", &write(tmp, "pod-level.yaml", POD_LEVEL)],
    );
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/pod-level",
            "--timeout=60s",
        ],
    );
    assert_eq!(
        jsonpath(
            s,
            "pod/pod-level",
            "{.spec.resources.requests.cpu}|{.spec.resources.requests.memory}|{.status.qosClass}"
        ),
        "100m|8Mi|Burstable"
    );
    let uid = jsonpath(s, "pod/pod-level", "{.metadata.uid}");
    let pod = format!("{kubepods}/burstable/pod{uid}");
    let forty = (40 * 1024 * 1024).to_string();
    let memory = file(
        &layout,
        "memory",
        &pod,
        "memory.limit_in_bytes",
        "memory.max",
    );
    assert_eq!(read(&memory), forty, "{memory:?}");
    let id = jsonpath(
        s,
        "pod/pod-level",
        "{.status.containerStatuses[?(@.name==\"b\")].containerID}",
    );
    let id = id.trim_start_matches("containerd://");
    let b = file(
        &layout,
        "memory",
        &format!("{pod}/{id}"),
        "memory.limit_in_bytes",
        "memory.max",
    );
    assert_eq!(read(&b), forty, "{b:?}");
    let env = ok(
        s,
        &[
            "exec",
            "pod-level",
            "-c",
            "a",
            "--",
            "sh",
            "-c",
            "echo $MEM",
        ],
    );
    assert_eq!(env.trim(), forty);
    ok(s, &["delete", "pod", "pod-level", "--wait=true"]);
}
