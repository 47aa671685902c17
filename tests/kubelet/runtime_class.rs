//! RuntimeClasses: a pod of a class gets the class's overhead from admission, counted in its
//! cgroup, and runs on the class's handler; a pod of the `crun` class runs on crun where the
//! supervised containerd offers it (not on a hybrid cgroup machine whose v2 hierarchy has
//! controllers, which crun refuses), else its sandbox fails as upstream's would; a class that
//! does not exist or an overhead without a class is refused; a handler the runtime lacks fails
//! the sandbox with an event.

use k1s::kubelet::cgroups::fs::Layout;

use super::common::server::{eventually, ok, write, Server};
use super::jsonpath;

const CLASSES: &str = r#"
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: standard}
handler: runc
overhead: {podFixed: {cpu: 50m, memory: 8Mi}}
scheduling:
  nodeSelector: {kubernetes.io/os: linux}
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: elsewhere}
handler: nothing
---
apiVersion: v1
kind: Pod
metadata: {name: classed}
spec:
  runtimeClassName: standard
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    resources: {limits: {cpu: 100m, memory: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: on-crun}
spec:
  runtimeClassName: crun
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: no-handler}
spec:
  runtimeClassName: elsewhere
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sleep, "3600"]}
"#;

const REFUSED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: no-class}
spec:
  runtimeClassName: absent
  containers:
  - {name: c, image: k1s.local/busybox:1}
"#;

const OVERHEAD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: own-overhead}
spec:
  overhead: {cpu: 10m}
  containers:
  - {name: c, image: k1s.local/busybox:1}
"#;

/// Waits for a FailedCreatePodSandBox event of `pod` whose message holds `want`.
fn sandbox_failed(s: &Server, pod: &str, want: &str) {
    let selector = format!("involvedObject.name={pod},reason=FailedCreatePodSandBox");
    eventually(
        s,
        &[
            "get",
            "events",
            "--field-selector",
            &selector,
            "-o",
            "jsonpath={.items[*].message}",
        ],
        |o| o.contains("Failed to create pod sandbox") && o.contains(want),
    );
}

fn ready(s: &Server, pod: &str) {
    let out = s.kubectl(&[
        "wait",
        "--for=condition=Ready",
        &format!("pod/{pod}"),
        "--timeout=60s",
    ]);
    assert!(
        out.status.success(),
        "pod {pod} not Ready:\n{}",
        s.diagnose()
    );
}

/// Whether the pod's container's state is in `runtime`'s state directory.
fn ran_on(s: &Server, pod: &str, runtime: &str) -> bool {
    let cid = jsonpath(
        s,
        &format!("pod/{pod}"),
        "{.status.containerStatuses[0].containerID}",
    );
    let cid = cid.trim_start_matches("containerd://");
    let state = s
        ._dir
        .path()
        .join("agent/containerd/state")
        .join(runtime)
        .join("k8s.io");
    !cid.is_empty() && state.join(cid).is_dir()
}

pub fn runtime_classes(s: &Server, tmp: &std::path::Path, root: &str) {
    // The server made a class for each runtime it can offer besides runc, as k3s does.
    assert_eq!(jsonpath(s, "runtimeclass/crun", "{.handler}"), "crun");
    assert_eq!(jsonpath(s, "runtimeclass/youki", "{.handler}"), "youki");
    ok(s, &["apply", "-f", &write(tmp, "classes.yaml", CLASSES)]);
    ready(s, "classed");
    // Admission: the class's overhead and node selector.
    assert_eq!(jsonpath(s, "pod/classed", "{.spec.overhead.memory}"), "8Mi");
    assert_eq!(
        jsonpath(s, "pod/classed", "{.spec.nodeSelector.kubernetes\\.io/os}"),
        "linux"
    );
    assert!(ran_on(s, "classed", "runc"), "the class's handler, runc");
    // The pod's cgroup (Guaranteed) holds its limits and the overhead.
    let uid = jsonpath(s, "pod/classed", "{.metadata.uid}");
    let layout = Layout::detect().expect("cgroups");
    let rel = format!("{}/kubepods/pod{uid}", root.trim_start_matches('/'));
    let limit = match &layout {
        Layout::V1 { controllers, .. } => controllers["memory"]
            .join(&rel)
            .join("memory.limit_in_bytes"),
        Layout::V2 { root } => root.join(&rel).join("memory.max"),
    };
    let limit = std::fs::read_to_string(&limit).unwrap_or_default();
    assert_eq!(limit.trim(), (24 * 1024 * 1024).to_string(), "16Mi and 8Mi");

    // crun, where the supervised containerd offers it.
    let config = s._dir.path().join("agent/containerd/config.toml");
    let config = std::fs::read_to_string(config).unwrap_or_default();
    if config.contains("containerd.runtimes.crun]") {
        ready(s, "on-crun");
        assert!(ran_on(s, "on-crun", "crun"), "crun");
    } else {
        sandbox_failed(s, "on-crun", "no runtime for \"crun\" is configured");
    }
    // A handler the runtime does not have: the sandbox fails, as the event says.
    sandbox_failed(s, "no-handler", "no runtime for \"nothing\" is configured");
    // Refused at admission, in upstream's words.
    for (file, yaml, want) in [
        (
            "no-class.yaml",
            REFUSED,
            "pod rejected: RuntimeClass \"absent\" not found",
        ),
        (
            "own-overhead.yaml",
            OVERHEAD,
            "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead",
        ),
    ] {
        let out = s.kubectl(&["apply", "-f", &write(tmp, file, yaml)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{want} in {err}"
        );
    }
    ok(
        s,
        &[
            "delete",
            "pod",
            "classed",
            "on-crun",
            "no-handler",
            "--wait=true",
        ],
    );
}
