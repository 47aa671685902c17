//! Container lifecycle on the real node: startup, readiness and liveness probes; init
//! containers in order with a sidecar beside them; postStart and preStop hooks with graceful
//! termination, regular containers stopped before sidecars.

use super::common::server::{eventually, ok, write, Server};
use super::jsonpath;
use std::time::Duration;

const PROBED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: k1s.local/busybox:1
    command: [sh, -c, "touch /tmp/alive; exec httpd -f -p 8080 -h /www"]
    ports: [{name: http, containerPort: 8080}]
    startupProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
    readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 1}
    livenessProbe: {exec: {command: [test, -f, /tmp/alive]}, periodSeconds: 1, failureThreshold: 2}
"#;

/// Startup, readiness and liveness probes.
pub fn probes(s: &Server, tmp: &std::path::Path) {
    ok(s, &["apply", "-f", &write(tmp, "probed.yaml", PROBED)]);
    let field = |path: &str| jsonpath(s, "pod/probed", path);
    eventually(
        s,
        &[
            "get",
            "pod",
            "probed",
            "-o",
            "jsonpath={.status.containerStatuses[0].started}",
        ],
        |o| o == "true",
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        field("{.status.containerStatuses[0].ready}"),
        "false",
        "no /ready yet"
    );
    ok(s, &["exec", "probed", "--", "touch", "/www/ready"]);
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/probed",
            "--timeout=30s",
        ],
    );
    ok(s, &["exec", "probed", "--", "rm", "/tmp/alive"]);
    eventually(
        s,
        &[
            "get",
            "pod",
            "probed",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        |o| o == "1",
    );
    // The new run has no /www/ready: not ready, yet running.
    eventually(
        s,
        &[
            "get",
            "pod",
            "probed",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.running}",
        ],
        |o| !o.is_empty(),
    );
    assert_eq!(field("{.status.containerStatuses[0].ready}"), "false");
    // Failed probes are Unhealthy events; the failed liveness probe's restart is Killing.
    let events = ok(
        s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=probed",
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}",
        ],
    );
    for want in [
        "Warning Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 404",
        "Warning Unhealthy: Liveness probe failed: ",
        "Normal Killing: Container web failed liveness probe, will be restarted",
    ] {
        assert!(events.contains(want), "{want} in\n{events}");
    }
    ok(s, &["delete", "pod", "probed", "--wait=false"]);
}

const INITS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: inits}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: work, emptyDir: {}}]
  initContainers:
  - {name: first, image: k1s.local/busybox:1, command: [sh, -c, "echo first >> /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
  - name: sidecar
    image: k1s.local/busybox:1
    restartPolicy: Always
    command: [sh, -c, "echo sidecar >> /work/order; exec sleep 3600"]
    volumeMounts: [{name: work, mountPath: /work}]
  - {name: second, image: k1s.local/busybox:1, command: [sh, -c, "echo second >> /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - {name: main, image: k1s.local/busybox:1, command: [sh, -c, "echo main >> /work/order; exec sleep 3600"], volumeMounts: [{name: work, mountPath: /work}]}
---
apiVersion: v1
kind: Pod
metadata: {name: init-fails}
spec:
  restartPolicy: Never
  initContainers:
  - {name: broken, image: k1s.local/busybox:1, command: [sh, -c, "exit 5"]}
  containers:
  - {name: main, image: k1s.local/busybox:1, command: ["true"]}
"#;

/// Init containers in order, a sidecar that keeps running, a failed init.
pub fn init_containers(s: &Server, tmp: &std::path::Path) {
    ok(s, &["apply", "-f", &write(tmp, "inits.yaml", INITS)]);
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/inits",
            "--timeout=60s",
        ],
    );
    let order = ok(
        s,
        &["exec", "inits", "-c", "main", "--", "cat", "/work/order"],
    );
    assert_eq!(order, "first\nsidecar\nsecond\nmain\n");
    let states = jsonpath(s, "pod/inits", "{range .status.initContainerStatuses[*]}{.name}={.ready}/{.state.terminated.reason}{.state.running.startedAt}{\"\\n\"}{end}");
    let lines: Vec<&str> = states.lines().collect();
    assert_eq!(lines.len(), 3, "{states}");
    assert_eq!(lines[0], "first=true/Completed");
    assert!(lines[1].starts_with("sidecar=true/20"), "{states}");
    assert_eq!(lines[2], "second=true/Completed");
    eventually(
        s,
        &["get", "pod", "init-fails", "-o", "jsonpath={.status.phase}"],
        |o| o == "Failed",
    );
    let reason = jsonpath(
        s,
        "pod/init-fails",
        "{.status.containerStatuses[0].state.waiting.reason}",
    );
    assert_eq!(reason, "PodInitializing");
    ok(s, &["delete", "pod", "inits", "init-fails", "--wait=false"]);
}

fn hooked(dir: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 20
  volumes: [{{name: out, hostPath: {{path: "{dir}", type: DirectoryOrCreate}}}}]
  initContainers:
  - name: side
    image: k1s.local/busybox:1
    restartPolicy: Always
    command: [sh, -c, "trap 'echo side-term >> /out/log; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      preStop: {{exec: {{command: [sh, -c, "echo side-pre-stop >> /out/log"]}}}}
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sh, -c, "trap 'echo term >> /out/log; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, "echo started > /tmp/post-start"]}}}}
      preStop: {{exec: {{command: [sh, -c, "echo pre-stop >> /out/log"]}}}}
"#
    )
}

/// postStart and preStop hooks, SIGTERM before SIGKILL, sidecars stopped last.
pub fn hooks(s: &Server, tmp: &std::path::Path) {
    let dir = tmp.join("hook-out");
    let yaml = hooked(dir.to_str().expect("utf8"));
    ok(s, &["apply", "-f", &write(tmp, "hooked.yaml", &yaml)]);
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/hooked",
            "--timeout=60s",
        ],
    );
    assert_eq!(
        ok(s, &["exec", "hooked", "--", "cat", "/tmp/post-start"]),
        "started\n"
    );
    let started = std::time::Instant::now();
    ok(
        s,
        &["delete", "pod", "hooked", "--wait=true", "--timeout=60s"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the TERM trap ended it early"
    );
    let log = std::fs::read_to_string(dir.join("log")).expect("hook output");
    // The sidecar stops after the regular container, as upstream orders it.
    assert_eq!(
        log, "pre-stop\nterm\nside-pre-stop\nside-term\n",
        "preStop, then SIGTERM; the sidecar last"
    );
}
