//! Pod details as upstream's kubelet handles them, on the real node: a pod on the host's
//! network (the node's IP as pod IP, probes against it, the node's /etc/hosts with its
//! aliases), `activeDeadlineSeconds` (DeadlineExceeded), a non-root container writing its
//! emptyDir (0777) and its termination message, a hostname cut to 63 characters with its
//! subdomain's FQDN in /etc/hosts, readiness gates holding Ready back, and the node Ready
//! while its runtime is.

use std::path::Path;

use super::common::server::{eventually, ok, write, Server};

const HOST_NETWORK: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: on-host}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  hostAliases: [{ip: 10.9.8.7, hostnames: [aliased.example]}]
  containers:
  - name: web
    image: k1s.local/busybox:1
    command: [sh, -c, 'echo "ip=$POD_IP"; mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 18082 -h /www']
    env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
    readinessProbe:
      httpGet: {port: 18082, path: /index.html}
      periodSeconds: 1
"#;

const DEADLINE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: short-lived}
spec:
  activeDeadlineSeconds: 3
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sleep, "3600"]}
"#;

const NON_ROOT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: non-root}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  volumes: [{name: cache, emptyDir: {}}]
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sh, -c, 'stat -c "mode=%a" /cache && touch /cache/f && echo written > /dev/termination-log']
    volumeMounts: [{name: cache, mountPath: /cache}]
"#;

const LONG_NAME: &str = "a-pod-whose-name-is-longer-than-a-hostname-may-be-so-the-kubelet-cuts-it";

const GATED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: gated}
spec:
  terminationGracePeriodSeconds: 1
  readinessGates: [{conditionType: example.com/gate}]
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sleep, "3600"]}
"#;

/// Reads a pod's log over a WebSocket with the official Python client's websocket-client;
/// the subprotocol the server chose and the bytes.
fn websocket_log(s: &Server, pod: &str, protocol: &str) -> String {
    const SCRIPT: &str = r#"
import sys, websocket
from kubernetes import client, config
config.load_kube_config()
c = client.Configuration.get_default_copy()
url = c.host.replace("https://", "wss://") + "/api/v1/namespaces/default/pods/" + sys.argv[1] + "/log"
headers = ["Authorization: " + c.api_key["authorization"]] if c.api_key.get("authorization") else []
ws = websocket.create_connection(url, subprotocols=[sys.argv[2]], header=headers,
    sslopt={"ca_certs": c.ssl_ca_cert, "certfile": c.cert_file, "keyfile": c.key_file})
out = b""
while True:
    op, data = ws.recv_data(control_frame=True)
    if op == websocket.ABNF.OPCODE_CLOSE:
        break
    out += data
print(ws.subprotocol, out)
"#;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("K1S_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/python/bin/python"));
    let o = std::process::Command::new(python)
        .args(["-c", SCRIPT, pod, protocol])
        .env("KUBECONFIG", &s.kubeconfig)
        .output()
        .expect("run the Python client (make deps installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// An exec over a WebSocket with `protocol`, as the conformance tests and kubectl 1.37 send
/// it: `messages` (channel, text) go out, and the subprotocol the server chose comes back
/// with the text received on each channel, once the server closes.
pub fn websocket_exec(
    s: &Server,
    path: &str,
    protocol: &str,
    messages: &[(u8, &str)],
) -> (String, std::collections::BTreeMap<u8, String>) {
    const SCRIPT: &str = r#"
import sys, json, websocket
from kubernetes import client, config
config.load_kube_config()
c = client.Configuration.get_default_copy()
url = c.host.replace("https://", "wss://") + sys.argv[1]
headers = ["Authorization: " + c.api_key["authorization"]] if c.api_key.get("authorization") else []
ws = websocket.create_connection(url, subprotocols=[sys.argv[2]], header=headers,
    sslopt={"ca_certs": c.ssl_ca_cert, "certfile": c.cert_file, "keyfile": c.key_file})
for channel, text in json.loads(sys.argv[3]):
    ws.send_binary(bytes([channel]) + text.encode())
got = {}
while True:
    op, data = ws.recv_data(control_frame=True)
    if op == websocket.ABNF.OPCODE_CLOSE:
        break
    if data:
        got[data[0]] = got.get(data[0], "") + data[1:].decode()
print(json.dumps([ws.subprotocol, got]))
"#;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("K1S_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/python/bin/python"));
    let sent = serde_json::to_string(messages).expect("messages");
    let o = std::process::Command::new(python)
        .args(["-c", SCRIPT, path, protocol, &sent])
        .env("KUBECONFIG", &s.kubeconfig)
        .output()
        .expect("run the Python client (make deps installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (chosen, got): (String, std::collections::BTreeMap<String, String>) =
        serde_json::from_slice(&o.stdout).expect("the script's answer");
    let got = got
        .into_iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
        .collect();
    (chosen, got)
}

fn get(s: &Server, pod: &str, path: &str) -> String {
    ok(s, &["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

pub fn pod_details(s: &Server, tmp: &Path) {
    let ready = r#"{.status.conditions[?(@.type=="Ready")].reason}"#;
    assert_eq!(
        ok(
            s,
            &["get", "node", "edge-1", "-o", &format!("jsonpath={ready}")]
        ),
        "KubeletReady"
    );
    let long = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {LONG_NAME}}}\nspec:\n  restartPolicy: Never\n  subdomain: sub\n  containers:\n  - {{name: c, image: k1s.local/busybox:1, command: [sh, -c, 'hostname; grep sub /etc/hosts']}}\n"
    );
    let all = [HOST_NETWORK, DEADLINE, NON_ROOT, GATED, &long].join("---\n");
    ok(s, &["apply", "-f", &write(tmp, "details.yaml", &all)]);

    // On the host's network: the node's IP, probed there, the node's hosts file.
    eventually(
        s,
        &[
            "get",
            "pod",
            "on-host",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        |o| o == "True",
    );
    let host_ip = get(s, "on-host", "{.status.hostIP}");
    assert_eq!(get(s, "on-host", "{.status.podIP}"), host_ip);
    assert_eq!(get(s, "on-host", "{.status.podIPs[0].ip}"), host_ip);
    let logs = ok(s, &["logs", "on-host"]);
    assert!(logs.contains(&format!("ip={host_ip}")), "{logs}");
    let hosts = ok(s, &["exec", "on-host", "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file (host network).\n"),
        "{hosts}"
    );
    assert!(hosts.contains("10.9.8.7\taliased.example"), "{hosts}");

    // Past its active deadline: stopped and failed.
    let failed = eventually(
        s,
        &[
            "get",
            "pod",
            "short-lived",
            "-o",
            "jsonpath={.status.phase}|{.status.reason}|{.status.message}",
        ],
        |o| o.starts_with("Failed|"),
    );
    assert_eq!(
        failed,
        "Failed|DeadlineExceeded|Pod was active on the node longer than the specified deadline"
    );

    // A non-root container writes its emptyDir and its termination message.
    eventually(
        s,
        &["get", "pod", "non-root", "-o", "jsonpath={.status.phase}"],
        |o| o == "Succeeded",
    );
    assert_eq!(ok(s, &["logs", "non-root"]).trim(), "mode=777");
    assert_eq!(
        get(
            s,
            "non-root",
            "{.status.containerStatuses[0].state.terminated.message}"
        ),
        "written\n"
    );
    // Its log over a WebSocket, as the conformance test reads it.
    for (protocol, want) in [
        ("binary.k8s.io", "binary.k8s.io b'mode=777\\n'"),
        (
            "base64.binary.k8s.io",
            "base64.binary.k8s.io b'bW9kZT03NzcK'",
        ),
    ] {
        assert_eq!(websocket_log(s, "non-root", protocol), want);
    }

    // A long name makes a 63-character hostname; the subdomain names it in /etc/hosts.
    eventually(
        s,
        &["get", "pod", LONG_NAME, "-o", "jsonpath={.status.phase}"],
        |o| o == "Succeeded",
    );
    let out = ok(s, &["logs", LONG_NAME]);
    let short = &LONG_NAME[..63];
    assert_eq!(short.len(), 63);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(short), "{out}");
    assert!(
        lines.next().is_some_and(
            |l| l.ends_with(&format!("\t{short}.sub.default.svc.cluster.local\t{short}"))
        ),
        "{out}"
    );

    // A readiness gate holds Ready back until its condition is True.
    let why = eventually(
        s,
        &["get", "pod", "gated", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}|{.status.conditions[?(@.type==\"Ready\")].message}|{.status.conditions[?(@.type==\"ContainersReady\")].status}"],
        |o| o.ends_with("|True"),
    );
    assert_eq!(
        why,
        "ReadinessGatesNotReady|corresponding condition of pod readiness gate \"example.com/gate\" does not exist.|True"
    );
    ok(
        s,
        &[
            "patch",
            "pod",
            "gated",
            "--subresource=status",
            "--type=strategic",
            "-p",
            r#"{"status":{"conditions":[{"type":"example.com/gate","status":"True"}]}}"#,
        ],
    );
    eventually(
        s,
        &[
            "get",
            "pod",
            "gated",
            "-o",
            &format!("jsonpath={ready}|{{.status.conditions[?(@.type==\"Ready\")].status}}"),
        ],
        |o| o == "|True",
    );

    ok(
        s,
        &[
            "delete",
            "pod",
            "on-host",
            "short-lived",
            "non-root",
            "gated",
            LONG_NAME,
            "--wait=true",
        ],
    );
}
