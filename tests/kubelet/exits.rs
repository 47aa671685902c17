//! How containers end, on the real node: one past its memory limit is OOMKilled (exit 137, as
//! containerd reports the cgroup's OOM kill), and a failed one whose policy is
//! `FallbackToLogsOnError` has the end of its log as its termination message.

use super::common::server::{eventually, ok, write, Server};
use super::jsonpath;

const ENDINGS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sh, -c, "echo filling; dd if=/dev/zero of=/dev/null bs=64M count=1"]
    resources: {limits: {memory: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: fallback}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: k1s.local/busybox:1
    terminationMessagePolicy: FallbackToLogsOnError
    command: [sh, -c, "echo first words; echo last words; exit 3"]
  - name: fine
    image: k1s.local/busybox:1
    terminationMessagePolicy: FallbackToLogsOnError
    command: [sh, -c, "echo all good"]
"#;

pub fn endings(s: &Server, tmp: &std::path::Path) {
    ok(s, &["apply", "-f", &write(tmp, "endings.yaml", ENDINGS)]);
    for pod in ["oom", "fallback"] {
        eventually(
            s,
            &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
            |o| o == "Failed",
        );
    }
    let oom = jsonpath(
        s,
        "pod/oom",
        "{.status.containerStatuses[0].state.terminated.reason}/{.status.containerStatuses[0].state.terminated.exitCode}",
    );
    assert_eq!(oom, "OOMKilled/137");
    let status = |name: &str, field: &str| {
        jsonpath(
            s,
            "pod/fallback",
            &format!(
                "{{.status.containerStatuses[?(@.name==\"{name}\")].state.terminated.{field}}}"
            ),
        )
    };
    assert_eq!(status("c", "exitCode"), "3");
    assert_eq!(status("c", "message"), "first words\nlast words\n");
    // Only a failure falls back to the log.
    assert_eq!(status("fine", "exitCode"), "0");
    assert_eq!(status("fine", "message"), "");
    ok(s, &["delete", "pod", "oom", "fallback", "--wait=false"]);
}
