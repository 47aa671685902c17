//! Security contexts on real containers: users and groups with fsGroup owning the volumes,
//! seccomp RuntimeDefault, dropped capabilities, a read-only root, sysctls, and runAsNonRoot
//! refusing an image that runs as root. A subPath a container turned into a symlink out of its
//! volume is refused; one that stays inside is followed and bound.

use super::common::server::{eventually, ok, within, write, Server};
use super::jsonpath;

const SECURE: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: locked}
stringData: {key: k3y}
---
apiVersion: v1
kind: Pod
metadata: {name: secure}
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsUser: 1000
    runAsGroup: 1000
    fsGroup: 2000
    supplementalGroups: [3000]
    seccompProfile: {type: RuntimeDefault}
    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "80"}]
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: sec, secret: {secretName: locked, defaultMode: 0400}}
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: sec, mountPath: /etc/sec}
---
apiVersion: v1
kind: Pod
metadata: {name: non-root}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsNonRoot: true}
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sleep, "3600"]}
"#;

pub fn security(s: &Server, tmp: &std::path::Path) {
    ok(s, &["apply", "-f", &write(tmp, "secure.yaml", SECURE)]);
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/secure",
            "--timeout=60s",
        ],
    );
    let sh = |cmd: &str| ok(s, &["exec", "secure", "--", "sh", "-c", cmd]);
    assert_eq!(sh("id -u; id -g"), "1000\n1000\n");
    let groups = sh("id -G");
    assert!(
        groups.contains("2000") && groups.contains("3000"),
        "fsGroup and supplementalGroups: {groups}"
    );
    assert_eq!(sh("stat -c %g /scratch"), "2000\n", "fsGroup owns emptyDir");
    sh("echo written > /scratch/f");
    assert_eq!(
        sh("stat -L -c '%g %a' /etc/sec/key"),
        "2000 440\n",
        "fsGroup can read the secret"
    );
    assert_eq!(sh("cat /etc/sec/key"), "k3y");
    assert_eq!(
        sh("grep Seccomp: /proc/self/status | tr -d '\\t'"),
        "Seccomp:2\n",
        "RuntimeDefault filters syscalls"
    );
    assert_eq!(
        sh("grep CapEff /proc/self/status | tr -d '\\t'"),
        "CapEff:0000000000000000\n"
    );
    assert_eq!(
        sh("grep NoNewPrivs /proc/self/status | tr -d '\\t'"),
        "NoNewPrivs:1\n"
    );
    let o = s.kubectl(&["exec", "secure", "--", "touch", "/x"]);
    assert!(!o.status.success(), "a read-only root filesystem");
    assert_eq!(
        sh("cat /proc/sys/net/ipv4/ip_unprivileged_port_start"),
        "80\n",
        "the pod's sysctl"
    );

    let why = eventually(
        s,
        &[
            "get",
            "pod",
            "non-root",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        |o| o == "CreateContainerConfigError",
    );
    assert_eq!(why, "CreateContainerConfigError");
    let msg = jsonpath(
        s,
        "pod/non-root",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(
        msg.starts_with(
            "container has runAsNonRoot and image will run as root (pod: \"non-root_default("
        ),
        "{msg}"
    );
    ok(s, &["delete", "pod", "secure", "non-root", "--wait=false"]);
}

const SUBPATHS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: subpaths}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: v, emptyDir: {}}]
  initContainers:
  - name: plant
    image: k1s.local/busybox:1
    command: [sh, -c, "mkdir -p /v/data && echo inside > /v/data/f && ln -s data /v/inside && ln -s /etc /v/escape"]
    volumeMounts: [{name: v, mountPath: /v}]
  containers:
  - {name: fine, image: k1s.local/busybox:1, command: [sleep, "3600"], volumeMounts: [{name: v, mountPath: /mnt, subPath: inside}]}
  - {name: evil, image: k1s.local/busybox:1, command: [sleep, "3600"], volumeMounts: [{name: v, mountPath: /mnt, subPath: escape}]}
"#;

/// subPath symlinks: inside the volume followed, out of it refused (CVE-2017-1002101).
pub fn subpaths(s: &Server, tmp: &std::path::Path, data_dir: &std::path::Path) {
    ok(s, &["apply", "-f", &write(tmp, "subpaths.yaml", SUBPATHS)]);
    let state = |name: &str, field: &str| {
        jsonpath(
            s,
            "pod/subpaths",
            &format!("{{.status.containerStatuses[?(@.name==\"{name}\")].state.{field}}}"),
        )
    };
    eventually(
        s,
        &[
            "get",
            "pod",
            "subpaths",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"evil\")].state.waiting.reason}",
        ],
        |o| o == "CreateContainerConfigError",
    );
    assert_eq!(
        state("evil", "waiting.message"),
        "failed to prepare subPath for volumeMount \"v\" of container \"evil\""
    );
    within(30, "the fine container running", || {
        !state("fine", "running").is_empty()
    });
    assert_eq!(
        ok(
            s,
            &["exec", "subpaths", "-c", "fine", "--", "cat", "/mnt/f"]
        ),
        "inside\n"
    );
    let uid = jsonpath(s, "pod/subpaths", "{.metadata.uid}");
    let pod_dir = data_dir.join("agent/pods").join(&uid);
    let mounted = || {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .contains(&uid)
    };
    assert!(mounted(), "the subPath is bound under {pod_dir:?}");
    ok(s, &["delete", "pod", "subpaths", "--wait=true"]);
    within(30, "the pod's mounts and files gone", || {
        !mounted() && !pod_dir.exists()
    });
}
