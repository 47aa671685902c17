//! Eviction under memory pressure: a server whose hard threshold cannot be met
//! (`memory.available<1000Ti`) reports MemoryPressure and evicts its pods one per pass,
//! the BestEffort pod (using more than it requests) before the Guaranteed one.

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
    let dir = s.stop();
    let mut flags = flags.to_vec();
    flags.extend(["--eviction-hard", "memory.available<1000Ti"]);
    let s = Server::with_kubelet_in(dir, &flags);
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
    let taints = jsonpath(&s, "node/edge-1", "{.spec.taints[*].key}");
    assert!(
        taints.contains("node.kubernetes.io/memory-pressure"),
        "{taints}"
    );
    ok(&s, &["delete", "pod", "besteffort", "guaranteed"]);
    s
}
