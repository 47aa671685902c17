//! A pod whose sandbox dies (its pause process killed, as a power loss leaves every pod), as
//! upstream's kubelet handles it: `SandboxChanged`, the old containers stopped but kept, so
//! a restarting pod counts the restart and runs its init containers again in a new sandbox,
//! while a pod with restartPolicy Never is not started again and fails.

use super::common::server::{eventually, ok, write, Server};

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: loses-sandbox}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, emptyDir: {}}]
  initContainers:
  - name: count
    image: k1s.local/busybox:1
    command: [sh, -c, 'echo run >> /data/inits']
    volumeMounts: [{name: data, mountPath: /data}]
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 1; done']
    volumeMounts: [{name: data, mountPath: /data}]
---
apiVersion: v1
kind: Pod
metadata: {name: never-again}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sh, -c, 'trap "exit 3" TERM; while true; do sleep 1; done']
"#;

fn get(s: &Server, pod: &str, path: &str) -> String {
    ok(s, &["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

/// Kills the pause process of the pod with `uid` (found by its cgroup), as a test may: the
/// pod is one this test made.
fn kill_pause(uid: &str) {
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if comm.trim() == "pause" && cgroup.contains(uid) {
            let o = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .output()
                .expect("kill");
            assert!(o.status.success(), "{o:?}");
            killed += 1;
        }
    }
    assert_eq!(killed, 1, "the pause process of pod {uid}");
}

pub fn sandbox_loss(s: &Server, tmp: &std::path::Path) {
    let file = write(tmp, "sandbox-loss.yaml", PODS);
    ok(s, &["apply", "-f", &file]);
    for pod in ["loses-sandbox", "never-again"] {
        eventually(
            s,
            &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
            |p| p == "Running",
        );
    }
    for pod in ["loses-sandbox", "never-again"] {
        kill_pause(&get(s, pod, "{.metadata.uid}"));
    }

    // The restarting pod: a new sandbox, the init container again, the restart counted.
    eventually(
        s,
        &[
            "get",
            "pod",
            "loses-sandbox",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}",
        ],
        |o| o == "1 true",
    );
    assert_eq!(
        get(
            s,
            "loses-sandbox",
            "{.status.initContainerStatuses[0].restartCount}"
        ),
        "1"
    );
    let inits = ok(s, &["exec", "loses-sandbox", "--", "cat", "/data/inits"]);
    assert_eq!(inits, "run\nrun\n");
    // Its previous run is still there to read.
    let last = get(
        s,
        "loses-sandbox",
        "{.status.containerStatuses[0].lastState.terminated.reason}",
    );
    assert!(!last.is_empty(), "lastState: {last}");
    assert!(!get(s, "loses-sandbox", "{.status.podIP}").is_empty());
    let events = ok(
        s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=loses-sandbox,reason=SandboxChanged",
            "-o",
            "jsonpath={.items[*].message}",
        ],
    );
    assert!(
        events.contains("Pod sandbox changed, it will be killed and re-created."),
        "{events}"
    );

    // The pod that never restarts: stopped, not started again, Failed.
    eventually(
        s,
        &[
            "get",
            "pod",
            "never-again",
            "-o",
            "jsonpath={.status.phase}",
        ],
        |p| p == "Failed",
    );
    assert_eq!(
        get(
            s,
            "never-again",
            "{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "0 3"
    );
    ok(
        s,
        &[
            "delete",
            "pod",
            "loses-sandbox",
            "never-again",
            "--wait=true",
        ],
    );
}
