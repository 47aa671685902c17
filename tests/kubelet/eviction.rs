//! Eviction under memory pressure: a server whose soft threshold cannot be met
//! (`memory.available<1000Ti`, grace period 5 s) reports MemoryPressure at once and then
//! evicts its pods one per pass,
//! the BestEffort pod (using more than it requests) before the Guaranteed one. The restarted
//! kubelet's image collector (thresholds at 1 % / 0 %, no minimum age) removes an unused image
//! that was imported by hand, keeps the pinned ones (pause, the air-gapped busybox), and
//! reports that it could not free all it wanted.

use super::common::server::{eventually, ok, write, Server};
use super::jsonpath;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: besteffort}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: guaranteed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    resources:
      requests: {cpu: 10m, memory: 32Mi}
      limits: {cpu: 10m, memory: 32Mi}
"#;

/// Starts pods on `s`, restarts it with `flags` plus an impossible memory threshold, and
/// watches the evictions; returns the restarted server.
pub fn eviction(s: Server, tmp: &std::path::Path, flags: &[&str]) -> Server {
    ok(&s, &["apply", "-f", &write(tmp, "evictable.yaml", PODS)]);
    for p in ["pod/besteffort", "pod/guaranteed"] {
        ok(&s, &["wait", "--for=condition=Ready", p, "--timeout=60s"]);
    }
    // An image imported by hand, which no container uses (its own config, so its own id).
    let spare = tmp.join("spare.tar");
    let layer = k1s::kubelet::images::oci::busybox_layer(
        std::path::Path::new("/bin/busybox"),
        &["sh".to_string()],
    )
    .expect("layer");
    let run = k1s::kubelet::images::oci::RunConfig {
        cmd: vec!["sh".into(), "-c".into(), "echo spare".into()],
        ..Default::default()
    };
    let tar = k1s::kubelet::images::oci::image_layout("k1s.local/spare:1", &run, &layer)
        .expect("spare image");
    std::fs::write(&spare, tar).expect("spare image");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_k1s"))
        .args(["images", "import", "--data-dir"])
        .arg(s._dir.path())
        .arg(&spare)
        .output()
        .expect("k1s images import");
    assert!(o.status.success(), "{o:?}");
    let socket = s._dir.path().join("agent/containerd/containerd.sock");
    let images = || {
        let o = std::process::Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", "k8s.io", "images", "ls", "-q"])
            .output()
            .expect("ctr images ls");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(images().contains("k1s.local/spare:1"), "{}", images());
    let dir = s.stop();
    let mut flags = flags.to_vec();
    flags.extend([
        "--eviction-soft",
        "memory.available<1000Ti",
        "--eviction-soft-grace-period",
        "memory.available=5s",
        "--eviction-max-pod-grace-period",
        "1",
        "--eviction-minimum-reclaim",
        "memory.available=1Mi",
        "--image-gc-high-threshold",
        "1",
        "--image-gc-low-threshold",
        "0",
        "--minimum-image-gc-age",
        "0s",
    ]);
    let s = Server::with_kubelet_in(dir, &flags);
    super::common::server::within(30, "the unused image collected", || {
        !images().contains("k1s.local/spare:1")
    });
    let left = images();
    assert!(left.contains("k1s.local/busybox:1"), "{left}");
    assert!(left.contains("pause"), "{left}");
    eventually(
        &s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Node,reason=FreeDiskSpaceFailed",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        |o| {
            o.starts_with("Failed to garbage collect required amount of images. Attempted to free ")
        },
    );
    eventually(
        &s,
        &[
            "get",
            "node",
            "edge-1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"MemoryPressure\")].status}",
        ],
        |o| o == "True",
    );
    eventually(
        &s,
        &[
            "get",
            "pod",
            "besteffort",
            "-o",
            "jsonpath={.status.reason}",
        ],
        |o| o == "Evicted",
    );
    let phase = jsonpath(&s, "pod/guaranteed", "{.status.phase}");
    assert_eq!(
        phase, "Running",
        "the Guaranteed pod goes after the BestEffort one"
    );
    assert_eq!(jsonpath(&s, "pod/besteffort", "{.status.phase}"), "Failed");
    let msg = jsonpath(&s, "pod/besteffort", "{.status.message}");
    assert!(
        msg.starts_with("The node was low on resource: memory. Threshold quantity: 1000Ti"),
        "{msg}"
    );
    let target = jsonpath(
        &s,
        "pod/besteffort",
        "{.status.conditions[?(@.type==\"DisruptionTarget\")].reason}",
    );
    assert_eq!(target, "TerminationByKubelet");
    eventually(
        &s,
        &[
            "get",
            "pod",
            "guaranteed",
            "-o",
            "jsonpath={.status.reason}",
        ],
        |o| o == "Evicted",
    );
    let met = ok(
        &s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Node,reason=EvictionThresholdMet",
            "-o",
            "jsonpath={.items[*].message}",
        ],
    );
    assert!(met.contains("Attempting to reclaim memory"), "{met}");
    let taints = jsonpath(&s, "node/edge-1", "{.spec.taints[*].key}");
    assert!(
        taints.contains("node.kubernetes.io/memory-pressure"),
        "{taints}"
    );
    ok(&s, &["delete", "pod", "besteffort", "guaranteed"]);
    s
}
