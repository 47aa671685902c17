//! A claim on the default `local-path` class, on the real node: provisioned when its first pod
//! is scheduled, created on the node as that pod starts, its data kept for the next pod and
//! removed from the node once the claim and its volume (reclaim policy Delete) are deleted. A
//! generic ephemeral volume: its claim made from the template, owned by the pod, and gone with
//! it; a claim of that name the pod does not own keeps the pod from being scheduled.

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
    // The kubelet holds the volume while its data is on the node.
    let finalizers = jsonpath(s, &format!("pv/{pv}"), "{.metadata.finalizers}");
    assert!(
        finalizers.contains("k1s.io/local-path-data"),
        "{finalizers}"
    );
    // Its node may get and patch the volume; another node may not, and no node learns
    // whether a volume name exists.
    let can = |node: &str, verb: &str, name: &str| {
        let o = s.kubectl(&[
            "auth",
            "can-i",
            verb,
            &format!("persistentvolumes/{name}"),
            "--as",
            &format!("system:node:{node}"),
            "--as-group",
            "system:nodes",
        ]);
        // "yes", or "no" with the authorizer's reason after it.
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(can(node, "get", &pv), "yes");
    assert_eq!(can(node, "patch", &pv), "yes");
    assert_eq!(can(node, "delete", &pv), "no");
    assert_eq!(can("elsewhere", "get", &pv), "no");
    assert_eq!(can(node, "get", "pvc-no-such-volume"), "no");
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
    eventually(s, &["get", "pv", "-o", "name"], |o| !o.contains(&pv));
}

const EPHEMERAL: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: scratchy}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    ephemeral:
      volumeClaimTemplate:
        metadata: {labels: {kind: scratch}}
        spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sh, -c, "echo scratch > /scratch/f; exec sleep 3600"], volumeMounts: [{name: scratch, mountPath: /scratch}]}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: clash-scratch}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: clash}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    ephemeral:
      volumeClaimTemplate:
        spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sleep, "3600"], volumeMounts: [{name: scratch, mountPath: /scratch}]}
"#;

pub fn generic_ephemeral_volume(s: &Server, tmp: &std::path::Path) {
    ok(
        s,
        &["apply", "-f", &write(tmp, "ephemeral.yaml", EPHEMERAL)],
    );
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/scratchy",
            "--timeout=60s",
        ],
    );
    let claim = jsonpath(
        s,
        "pvc/scratchy-scratch",
        "{.status.phase} {.metadata.labels.kind} {.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.metadata.ownerReferences[0].controller}",
    );
    assert_eq!(claim, "Bound scratch Pod/scratchy true");
    assert_eq!(
        ok(s, &["exec", "scratchy", "--", "cat", "/scratch/f"]),
        "scratch\n"
    );
    let pv = jsonpath(s, "pvc/scratchy-scratch", "{.spec.volumeName}");
    let path = jsonpath(s, &format!("pv/{pv}"), "{.spec.hostPath.path}");
    assert!(std::path::Path::new(&path).join("f").exists(), "{path}");
    // A claim of the same name the pod does not own: not used, and said so.
    let events = eventually(
        s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=clash",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
        |o| o.contains("FailedBinding") && o.contains("FailedScheduling"),
    );
    let not_owner =
        "PVC default/clash-scratch was not created for pod default/clash (pod is not owner)";
    assert!(
        events.contains(&format!("FailedBinding: {not_owner}")),
        "{events}"
    );
    assert!(events.contains(not_owner), "{events}");
    assert_eq!(jsonpath(s, "pod/clash", "{.spec.nodeName}"), "");
    // The claim goes with its pod, and the volume's data with the claim.
    ok(s, &["delete", "pod", "scratchy", "clash"]);
    within(60, "the ephemeral claim and its data gone", || {
        !std::path::Path::new(&path).exists()
    });
    let left = ok(s, &["get", "pvc", "-o", "name"]);
    assert_eq!(left.trim(), "persistentvolumeclaim/clash-scratch", "{left}");
    ok(s, &["delete", "pvc", "clash-scratch"]);
}
