//! A claim on the default `local-path` class, on the real node: provisioned when its first pod
//! is scheduled, created on the node as that pod starts, its data kept for the next pod and
//! removed from the node once the claim and its volume (reclaim policy Delete) are deleted.

use super::common::server::{eventually, ok, within, write, Server};
use super::jsonpath;

const CLAIMED: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: keep}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  volumes: [{name: d, persistentVolumeClaim: {claimName: keep}}]
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sh, -c, "echo kept > /data/file"], volumeMounts: [{name: d, mountPath: /data}]}
"#;

const READER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  restartPolicy: Never
  volumes: [{name: d, persistentVolumeClaim: {claimName: keep, readOnly: true}}]
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [cat, /data/file], volumeMounts: [{name: d, mountPath: /data}]}
"#;

pub fn local_path_claim(s: &Server, tmp: &std::path::Path, node: &str) {
    ok(s, &["apply", "-f", &write(tmp, "claimed.yaml", CLAIMED)]);
    eventually(
        s,
        &["get", "pod", "writer", "-o", "jsonpath={.status.phase}"],
        |o| o == "Succeeded",
    );
    let bound = jsonpath(
        s,
        "pvc/keep",
        "{.status.phase} {.spec.storageClassName} {.metadata.annotations.volume\\.kubernetes\\.io/selected-node}",
    );
    assert_eq!(bound, format!("Bound local-path {node}"));
    let pv = jsonpath(s, "pvc/keep", "{.spec.volumeName}");
    let path = jsonpath(s, &format!("pv/{pv}"), "{.spec.hostPath.path}");
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&path).join("file")).ok(),
        Some("kept\n".to_string()),
        "{path}"
    );
    ok(s, &["delete", "pod", "writer"]);
    ok(s, &["apply", "-f", &write(tmp, "reader.yaml", READER)]);
    eventually(
        s,
        &["get", "pod", "reader", "-o", "jsonpath={.status.phase}"],
        |o| o == "Succeeded",
    );
    assert_eq!(ok(s, &["logs", "reader"]), "kept\n");
    ok(s, &["delete", "pod", "reader"]);
    ok(s, &["delete", "pvc", "keep"]);
    within(
        60,
        "the deleted volume's data removed from the node",
        || !std::path::Path::new(&path).exists(),
    );
    let pvs = ok(s, &["get", "pv", "-o", "name"]);
    assert!(!pvs.contains(&pv), "{pvs}");
}
