//! The kubelet's admission on the real node, as upstream's admit handlers: pods bound to the
//! node by hand (or placed by the scheduler) that the node cannot take are failed with the
//! handler's reason and a `Pod was rejected: ...` message, with an event: a sysctl not
//! allowlisted, a node selector the node does not match, an extended resource all taken, a
//! host port in use.

use std::path::Path;

use super::common::server::{eventually, ok, write, Server};

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: unsafe-sysctl}
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    sysctls: [{name: kernel.msgmax, value: "65536"}]
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere}
spec:
  nodeName: edge-1
  nodeSelector: {disk: hdd}
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: dongle-1}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    ports: [{containerPort: 80, hostPort: 18080}]
    resources:
      requests: {example.com/dongle: "1"}
      limits: {example.com/dongle: "1"}
"#;

const BOUND_BY_HAND: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: dongle-2}
spec:
  nodeName: edge-1
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    resources:
      requests: {example.com/dongle: "1"}
      limits: {example.com/dongle: "1"}
---
apiVersion: v1
kind: Pod
metadata: {name: port-clash}
spec:
  nodeName: edge-1
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    ports: [{containerPort: 81, hostPort: 18080}]
"#;

fn rejected(s: &Server, pod: &str) -> String {
    eventually(
        s,
        &[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.phase}|{.status.reason}|{.status.message}",
        ],
        |o| o.starts_with("Failed|"),
    )
}

pub fn admission(s: &Server, tmp: &Path) {
    let dongles = r#"{"status":{"capacity":{"example.com/dongle":"1"},"allocatable":{"example.com/dongle":"1"}}}"#;
    ok(
        s,
        &[
            "patch",
            "node",
            "edge-1",
            "--subresource=status",
            "--type=merge",
            "-p",
            dongles,
        ],
    );
    ok(s, &["apply", "-f", &write(tmp, "admission.yaml", PODS)]);
    assert_eq!(
        rejected(s, "unsafe-sysctl"),
        "Failed|SysctlForbidden|Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted"
    );
    eventually(
        s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=unsafe-sysctl",
            "-o",
            "jsonpath={range .items[*]}{.reason}|{.source.component}|{.message}{\"\\n\"}{end}",
        ],
        |o| {
            o.contains(
                "SysctlForbidden|kubelet|forbidden sysctl: \"kernel.msgmax\" not allowlisted",
            )
        },
    );
    assert_eq!(
        rejected(s, "elsewhere"),
        "Failed|NodeAffinity|Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
    );
    eventually(
        s,
        &["get", "pod", "dongle-1", "-o", "jsonpath={.status.phase}"],
        |o| o == "Running",
    );
    ok(
        s,
        &["apply", "-f", &write(tmp, "bound.yaml", BOUND_BY_HAND)],
    );
    assert_eq!(
        rejected(s, "dongle-2"),
        "Failed|OutOfexample.com/dongle|Pod was rejected: Node didn't have enough resource: example.com/dongle, requested: 1, used: 1, capacity: 1"
    );
    assert_eq!(
        rejected(s, "port-clash"),
        "Failed|NodePorts|Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
    );
    ok(
        s,
        &[
            "delete",
            "pod",
            "unsafe-sysctl",
            "elsewhere",
            "dongle-1",
            "dongle-2",
            "port-clash",
            "--wait=true",
        ],
    );
    let none = r#"{"status":{"capacity":{"example.com/dongle":null},"allocatable":{"example.com/dongle":null}}}"#;
    ok(
        s,
        &[
            "patch",
            "node",
            "edge-1",
            "--subresource=status",
            "--type=merge",
            "-p",
            none,
        ],
    );
}
