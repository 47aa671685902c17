//! Local ephemeral storage limits, as upstream's eviction manager enforces them: a pod that
//! fills a disk-backed emptyDir past its `sizeLimit`, and one whose writable layer grows past
//! its container's `ephemeral-storage` limit, are evicted at once with upstream's messages.

use super::common::server::{eventually, ok, write, Server};

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: fills-empty-dir}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, emptyDir: {sizeLimit: 1Mi}}]
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sh, -c, 'dd if=/dev/zero of=/data/f bs=1024 count=3072; sleep 3600']
    volumeMounts: [{name: data, mountPath: /data}]
---
apiVersion: v1
kind: Pod
metadata: {name: fills-rootfs}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sh, -c, 'dd if=/dev/zero of=/big bs=1024 count=3072; sleep 3600']
    resources: {limits: {ephemeral-storage: 1Mi}}
"#;

pub fn local_storage(s: &Server, tmp: &std::path::Path) {
    ok(s, &["apply", "-f", &write(tmp, "local-storage.yaml", PODS)]);
    for (pod, message) in [
        (
            "fills-empty-dir",
            "Usage of EmptyDir volume \"data\" exceeds the limit \"1Mi\". ",
        ),
        (
            "fills-rootfs",
            "Pod ephemeral local storage usage exceeds the total limit of containers 1Mi. ",
        ),
    ] {
        let got = eventually(
            s,
            &[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.phase}|{.status.reason}|{.status.message}",
            ],
            |o| o.starts_with("Failed|"),
        );
        assert_eq!(got, format!("Failed|Evicted|{message}"), "{pod}");
    }
    ok(
        s,
        &[
            "delete",
            "pod",
            "fills-empty-dir",
            "fills-rootfs",
            "--wait=true",
        ],
    );
}
