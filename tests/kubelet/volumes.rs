//! Volumes (emptyDir, configMap, secret, downwardAPI, projected token, subPath), environment
//! from ConfigMaps and Secrets, service variables, DNS settings and termination messages.

use super::common::server::{eventually, ok, within, write, Server};
use super::jsonpath;

const VOLUMES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: links}
spec:
  selector: {app: nothing}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: no-links}
spec:
  terminationGracePeriodSeconds: 1
  enableServiceLinks: false
  dnsPolicy: None
  dnsConfig:
    nameservers: [127.0.0.2]
    searches: [edge.example]
    options: [{name: ndots, value: "2"}]
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sleep, "3600"]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello, mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: volumes, labels: {app: vol}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: cfg, configMap: {name: settings}}
  - {name: sec, secret: {secretName: creds, defaultMode: 0400}}
  - {name: scratch, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 16Mi}}
  - name: info
    downwardAPI:
      items:
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: mem_limit, resourceFieldRef: {containerName: c, resource: limits.memory, divisor: 1Mi}}
      - {path: cpu_limit, resourceFieldRef: {containerName: c, resource: limits.cpu, divisor: 1m}}
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sh, -c, "sleep 3600"]
    resources: {limits: {memory: 32Mi}}
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: MESSAGE, value: "$(GREETING) world"}
    envFrom:
    - {prefix: CFG_, configMapRef: {name: settings}}
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: sec, mountPath: /etc/sec}
    - {name: scratch, mountPath: /scratch}
    - {name: scratch, mountPath: /sub, subPath: deeper}
    - {name: mem, mountPath: /mem}
    - {name: info, mountPath: /etc/info}
---
apiVersion: v1
kind: Pod
metadata: {name: last-words}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sh, -c, "echo goodbye > /dev/termination-log; exit 2"]}
---
apiVersion: v1
kind: Pod
metadata: {name: needs-config}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    env:
    - {name: X, valueFrom: {configMapKeyRef: {name: absent, key: x}}}
---
apiVersion: v1
kind: Pod
metadata: {name: needs-volume}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    volumeMounts: [{name: cfg, mountPath: /cfg}]
  volumes:
  - {name: cfg, configMap: {name: absent-too}}
"#;

/// Volumes, env from ConfigMaps and Secrets, service variables, DNS settings, termination
/// messages.
pub fn volumes_and_config(s: &Server, tmp: &std::path::Path, cluster_dns: &str) {
    ok(s, &["apply", "-f", &write(tmp, "volumes.yaml", VOLUMES)]);
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/volumes",
            "--timeout=60s",
        ],
    );
    let sh = |cmd: &str| ok(s, &["exec", "volumes", "--", "sh", "-c", cmd]);
    assert_eq!(sh("cat /etc/cfg/greeting"), "hello");
    // Service variables: the API server's always, the namespace's with service links.
    let links_ip = jsonpath(s, "service/links", "{.spec.clusterIP}");
    assert_eq!(
        sh("echo $KUBERNETES_SERVICE_PORT $LINKS_SERVICE_PORT_HTTP $LINKS_PORT"),
        format!("443 8080 tcp://{links_ip}:8080\n")
    );
    assert!(!sh("echo $KUBERNETES_SERVICE_HOST").trim().is_empty());
    let resolv = sh("cat /etc/resolv.conf");
    assert!(
        resolv.contains(&format!("nameserver {cluster_dns}")),
        "{resolv}"
    );
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/no-links",
            "--timeout=60s",
        ],
    );
    let env = ok(s, &["exec", "no-links", "--", "env"]);
    assert!(env.contains("KUBERNETES_SERVICE_HOST="), "{env}");
    assert!(!env.contains("LINKS_"), "{env}");
    let resolv = ok(s, &["exec", "no-links", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("nameserver 127.0.0.2")
            && resolv.contains("search edge.example")
            && resolv.contains("ndots:2")
            && !resolv.contains("cluster.local"),
        "{resolv}"
    );
    ok(s, &["delete", "pod", "no-links", "--wait=false"]);
    assert_eq!(sh("cat /etc/sec/password"), "s3cret");
    assert_eq!(sh("stat -L -c %a /etc/sec/password"), "400\n");
    assert_eq!(
        sh("echo $GREETING $PASSWORD $MESSAGE $CFG_mode"),
        "hello s3cret hello world fast\n"
    );
    sh("echo kept > /scratch/deeper/file");
    assert_eq!(
        sh("cat /sub/file"),
        "kept\n",
        "subPath of the same emptyDir"
    );
    assert!(
        sh("grep ' /mem ' /proc/mounts").contains("tmpfs"),
        "Memory emptyDir is tmpfs"
    );
    assert_eq!(sh("cat /etc/info/name"), "volumes");
    assert_eq!(sh("cat /etc/info/labels"), "app=\"vol\"\n");
    assert_eq!(sh("cat /etc/info/mem_limit"), "32");
    // Without a CPU limit of its own, the container reads the node's allocatable CPU.
    let allocatable = ok(
        s,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.allocatable.cpu}",
        ],
    );
    let milli = match allocatable.trim().strip_suffix('m') {
        Some(m) => m.to_string(),
        None => format!("{}", allocatable.trim().parse::<u64>().unwrap_or(0) * 1000),
    };
    assert_eq!(
        sh("cat /etc/info/cpu_limit"),
        milli,
        "allocatable {allocatable}"
    );
    let token = sh("cat /var/run/secrets/kubernetes.io/serviceaccount/token");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert_eq!(
        sh("cat /var/run/secrets/kubernetes.io/serviceaccount/namespace"),
        "default"
    );
    assert!(
        sh("cat /etc/hosts").contains("\tvolumes\n"),
        "managed /etc/hosts"
    );
    // An update reaches the mounted file.
    ok(
        s,
        &[
            "patch",
            "configmap",
            "settings",
            "-p",
            r#"{"data":{"greeting":"updated"}}"#,
        ],
    );
    within(40, "the ConfigMap update to reach the volume", || {
        s.kubectl(&["exec", "volumes", "--", "cat", "/etc/cfg/greeting"])
            .stdout
            .starts_with(b"updated")
    });
    eventually(
        s,
        &["get", "pod", "last-words", "-o", "jsonpath={.status.phase}"],
        |o| o == "Failed",
    );
    let words = jsonpath(
        s,
        "pod/last-words",
        "{.status.containerStatuses[0].state.terminated.message}",
    );
    assert_eq!(words, "goodbye\n");
    eventually(
        s,
        &[
            "get",
            "pod",
            "needs-config",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting}",
        ],
        |o| {
            o.contains("CreateContainerConfigError")
                && o.contains("configmap \\\"absent\\\" not found")
        },
    );
    // A volume whose ConfigMap is missing: the pod waits in ContainerCreating, with upstream's
    // FailedMount event.
    eventually(
        s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=needs-volume,reason=FailedMount",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        |o| {
            o.contains(
                "MountVolume.SetUp failed for volume \"cfg\" : configmap \"absent-too\" not found",
            )
        },
    );
    let waiting = ok(
        s,
        &[
            "get",
            "pod",
            "needs-volume",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
    );
    assert_eq!(waiting, "ContainerCreating");
    ok(
        s,
        &[
            "delete",
            "pod",
            "volumes",
            "last-words",
            "needs-config",
            "needs-volume",
            "--wait=false",
        ],
    );
}
