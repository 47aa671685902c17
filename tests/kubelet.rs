//! The kubelet of `k1s server` on the containerd it supervises, driven with stock kubectl: the
//! node registers with real capacity and gets a pod CIDR from node IPAM; an image imported from
//! `DATA_DIR/agent/images/` serves a Deployment of busybox httpd reached at every pod's IP on the
//! node's bridge; containers restart with CrashLoopBackOff, pods finish Succeeded or Failed by
//! their restart policy, a missing image is ErrImagePull then ImagePullBackOff; a restarted
//! server adopts the running pods without restarting them; deleted pods are stopped and gone;
//! pods live in cgroups by QoS class with their limits; RuntimeClasses pick the OCI runtime.

#[path = "kubelet/admission.rs"]
mod admission;
#[path = "kubelet/cgroups.rs"]
mod cgroups;
#[path = "kubelet/claims.rs"]
mod claims;
mod common;
#[path = "kubelet/container_logs.rs"]
mod container_logs;
#[path = "kubelet/debugging.rs"]
mod debugging;
#[path = "kubelet/eviction.rs"]
mod eviction;
#[path = "kubelet/exits.rs"]
mod exits;
#[path = "kubelet/handlers.rs"]
mod handlers;
#[path = "kubelet/kubelet_api.rs"]
mod kubelet_api;
#[path = "kubelet/lifecycle.rs"]
mod lifecycle;
#[path = "kubelet/local_storage.rs"]
mod local_storage;
#[path = "kubelet/pod_details.rs"]
mod pod_details;
#[path = "kubelet/pull.rs"]
mod pull;
#[path = "kubelet/resize.rs"]
mod resize;
#[path = "kubelet/runtime_class.rs"]
mod runtime_class;
#[path = "kubelet/sandbox_loss.rs"]
mod sandbox_loss;
#[path = "kubelet/security.rs"]
mod security;
#[path = "kubelet/volumes.rs"]
mod volumes;

use std::io::{Read, Write};
use std::time::Duration;

use common::node::{network, node_dir};
use common::server::{eventually, ok, within, write, Server};

fn get(ip: &str, path: &str) -> String {
    get_at(&format!("{ip}:8080"), path)
}

fn get_at(addr: &str, path: &str) -> String {
    let Ok(addr) = addr.parse() else {
        return String::new();
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn jsonpath(s: &Server, what: &str, path: &str) -> String {
    ok(s, &["get", what, "-o", &format!("jsonpath={path}")])
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: k1s.local/busybox:1
        command: [sh, -c]
        args: ["echo served-by-$(POD_NAME) > /www/index.html; exec httpd -f -p 8080 -h /www"]
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
"#;

const ONE_SHOTS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: registry-creds}
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{"auths":{"127.0.0.1:1":{"username":"edge","password":"s3cret"}}}'
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sh, -c, "echo crashing; exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: done}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sh, -c, "echo hello from done; echo second line"]}
---
apiVersion: v1
kind: Pod
metadata: {name: failed}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sh, -c, "exit 1"]}
---
apiVersion: v1
kind: Pod
metadata: {name: ticker}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sh, -c, "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]}
---
apiVersion: v1
kind: Pod
metadata: {name: missing}
spec:
  terminationGracePeriodSeconds: 1
  imagePullSecrets: [{name: registry-creds}]
  containers:
  - {name: c, image: "127.0.0.1:1/nothing/here:1"}
"#;

#[test]
fn the_kubelet_runs_pods_on_containerd() {
    let dir = tempfile::tempdir().expect("tmp");
    let (bridge, pods_cidr) = network(0);
    let (_, service_cidr) = network(20);
    let cleanup = node_dir(dir.path(), &bridge, &service_cidr);
    let logs = dir.path().join("pod-logs");
    let logs = logs.to_str().expect("utf8").to_string();
    let cluster_dns = service_cidr.replace(".0.0/16", ".0.10");
    let cgroup_root = cleanup.cgroup_root();
    let flags = [
        "--cgroup-root",
        &cgroup_root,
        "--cluster-dns",
        &cluster_dns,
        "--node-name",
        "edge-1",
        "--cluster-cidr",
        &pods_cidr,
        "--service-cidr",
        &service_cidr,
        "--pod-bridge",
        &bridge,
        "--pod-log-dir",
        &logs,
        "--container-log-max-size",
        "64Ki",
        "--container-log-max-files",
        "3",
    ];
    let s = Server::with_kubelet_in(dir, &flags);

    // The node: registered, Ready, with this machine's capacity and a pod CIDR from IPAM.
    eventually(
        &s,
        &["get", "node", "edge-1", "-o", "jsonpath={.spec.podCIDR}"],
        |o| o.ends_with(".0/24"),
    );
    // Outbound NAT for the node's pods: one chain for the node, none per pod.
    let pod_cidr = jsonpath(&s, "node/edge-1", "{.spec.podCIDR}");
    within(10, "the node's masquerade chain", || {
        let o = std::process::Command::new("iptables")
            .args(["-w", "-t", "nat", "-S", &format!("K1S-MASQ-{bridge}")])
            .output()
            .expect("iptables");
        let rules = String::from_utf8_lossy(&o.stdout);
        rules.contains(&format!("-d {pod_cidr} -j RETURN")) && rules.contains("-j MASQUERADE")
    });
    let info = jsonpath(
        &s,
        "node/edge-1",
        "{.status.nodeInfo.containerRuntimeVersion}",
    );
    assert!(info.starts_with("containerd://"), "{info}");
    // The handlers RuntimeClasses may name, runc first; "" is containerd's default.
    let handlers = jsonpath(&s, "node/edge-1", "{.status.runtimeHandlers[*].name}");
    assert!(handlers.starts_with("runc"), "{handlers}");
    let cpus = jsonpath(&s, "node/edge-1", "{.status.capacity.cpu}");
    assert_eq!(
        cpus,
        std::thread::available_parallelism()
            .expect("cpus")
            .get()
            .to_string()
    );

    // A Deployment of busybox httpd: every pod serves at its own IP.
    let tmp = tempfile::tempdir().expect("tmp");
    ok(&s, &["apply", "-f", &write(tmp.path(), "web.yaml", WEB)]);
    ok(
        &s,
        &["rollout", "status", "deployment/web", "--timeout=90s"],
    );
    let names = jsonpath(&s, "pods", "{.items[*].metadata.name}");
    let names: Vec<&str> = names.split_whitespace().collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let mut first = Vec::new();
    for name in &names {
        let ip = jsonpath(&s, &format!("pod/{name}"), "{.status.podIP}");
        assert!(
            ip.starts_with(pods_cidr.trim_end_matches(".0.0/16")),
            "{ip} in {pods_cidr}"
        );
        let mut body = String::new();
        within(30, &format!("pod {name} answering at {ip}"), || {
            body = get(&ip, "/index.html");
            body.contains("200 OK")
        });
        assert!(body.contains(&format!("served-by-{name}")), "{body}");
        let cid = jsonpath(
            &s,
            &format!("pod/{name}"),
            "{.status.containerStatuses[0].containerID}",
        );
        assert!(cid.starts_with("containerd://"), "{cid}");
        first.push((name.to_string(), ip, cid));
    }
    let phase = jsonpath(&s, &format!("pod/{}", names[0]), "{.status.phase}");
    assert_eq!(phase, "Running");
    cgroups::cgroups(&s, tmp.path(), &cgroup_root, names[0]);
    runtime_class::runtime_classes(&s, tmp.path(), &cgroup_root);
    resize::resize_in_place(&s, tmp.path(), &cgroup_root);
    resize::pod_level_resize(&s, tmp.path(), &cgroup_root);
    admission::admission(&s, tmp.path());
    pod_details::pod_details(&s, tmp.path());
    container_logs::container_logs(&s, tmp.path(), std::path::Path::new(&logs));
    sandbox_loss::sandbox_loss(&s, tmp.path());
    local_storage::local_storage(&s, tmp.path());

    // The kubelet's events, as `kubectl describe pod` shows them, and the node's.
    let about = format!("involvedObject.name={}", names[0]);
    let events = eventually(
        &s,
        &[
            "get", "events", "--field-selector", &about, "-o",
            "jsonpath={range .items[*]}{.reason}|{.source.component}|{.involvedObject.fieldPath}|{.message}{\"\\n\"}{end}",
        ],
        |o| o.contains("Started|"),
    );
    for want in [
        "Pulled|kubelet|spec.containers{httpd}|Container image \"k1s.local/busybox:1\" already present on machine",
        "Created|kubelet|spec.containers{httpd}|Container created",
        "Started|kubelet|spec.containers{httpd}|Container started",
    ] {
        assert!(events.contains(want), "{want} in\n{events}");
    }
    let node_events = ok(
        &s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Node,involvedObject.name=edge-1",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
    );
    assert!(
        node_events.contains("Starting: Starting kubelet."),
        "{node_events}"
    );
    assert!(
        node_events.contains("NodeReady: Node edge-1 status is now: NodeReady"),
        "{node_events}"
    );

    // exec (kubectl's WebSocket, or its SPDY fallback), with stdin and exit codes; port-forward.
    let web = first[0].0.clone();
    let served = ok(&s, &["exec", &web, "--", "cat", "/www/index.html"]);
    assert_eq!(served, format!("served-by-{web}\n"));
    // kubectl's WebSocket is answered: it does not fall back to SPDY (said at -v=4)...
    let said = s.kubectl(&["exec", "-v=4", &web, "--", "echo", "over-websocket"]);
    let text = common::server::text(&said);
    assert!(said.status.success(), "{text}");
    assert!(text.contains("over-websocket"), "{text}");
    assert!(!text.to_lowercase().contains("fallback"), "{text}");
    // v5 closes stdin with its CLOSE signal (255), so `cat` ends; the status comes on 3.
    let (chosen, got) = pod_details::websocket_exec(
        &s,
        &format!(
            "/api/v1/namespaces/default/pods/{web}/exec?command=cat&stdin=true&stdout=true&stderr=true"
        ),
        "v5.channel.k8s.io",
        &[(0, "through v5\n"), (255, "\u{0}")],
    );
    assert_eq!(chosen, "v5.channel.k8s.io");
    assert_eq!(
        got.get(&1).map(String::as_str),
        Some("through v5\n"),
        "{got:?}"
    );
    assert!(
        got.get(&3).is_some_and(|s| s.contains("Success")),
        "{got:?}"
    );
    // ...and SPDY still works for clients that ask for it.
    let spdy = std::process::Command::new(common::server::kubectl())
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["exec", &web, "--", "echo", "over-spdy"])
        .output()
        .expect("kubectl exec over spdy");
    assert_eq!(String::from_utf8_lossy(&spdy.stdout), "over-spdy\n");
    let mut child = std::process::Command::new(common::server::kubectl())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["exec", "-i", &web, "--", "sh", "-c", "tr a-z A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl exec -i");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"through stdin\n")
        .expect("write");
    let out = child.wait_with_output().expect("exec output");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "THROUGH STDIN\n");
    // Megabytes both ways, past SPDY's 64 KiB initial windows.
    let big = s.kubectl(&[
        "exec",
        &web,
        "--",
        "sh",
        "-c",
        "head -c 3000000 /dev/zero | tr '\\0' a",
    ]);
    assert_eq!(
        big.stdout.len(),
        3_000_000,
        "{}",
        common::server::text(&big)
    );
    assert!(big.stdout.iter().all(|&b| b == b'a'));
    let mut child = std::process::Command::new(common::server::kubectl())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["exec", "-i", &web, "--", "wc", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl exec -i");
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || stdin.write_all(&vec![b'x'; 2_000_000]));
    let out = child.wait_with_output().expect("exec output");
    feeder.join().expect("feeder").expect("write stdin");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2000000");
    let code = s.kubectl(&["exec", &web, "--", "sh", "-c", "exit 7"]);
    assert_eq!(
        code.status.code(),
        Some(7),
        "{}",
        common::server::text(&code)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut forward = std::process::Command::new(common::server::kubectl())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args([
            "port-forward",
            "-v=4",
            &format!("pod/{web}"),
            &format!("{port}:8080"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let mut body = String::new();
    within(20, "a request through kubectl port-forward", || {
        body = get_at(&format!("127.0.0.1:{port}"), "/index.html");
        body.contains("200 OK")
    });
    let _ = forward.kill();
    let forwarded = forward.wait_with_output().expect("port-forward output");
    assert!(body.contains(&format!("served-by-{web}")), "{body}");
    // Through the WebSocket tunnel, not the SPDY fallback.
    let said = String::from_utf8_lossy(&forwarded.stderr).to_lowercase();
    assert!(!said.contains("fallback"), "{said}");

    debugging::debugging(&s, tmp.path(), &web);
    volumes::volumes_and_config(&s, tmp.path(), &cluster_dns);
    security::security(&s, tmp.path());
    security::subpaths(&s, tmp.path(), s._dir.path());
    pull::image_pull_secrets(&s, tmp.path());
    lifecycle::probes(&s, tmp.path());
    lifecycle::init_containers(&s, tmp.path());
    lifecycle::hooks(&s, tmp.path());
    handlers::http_and_sleep_hooks(&s, tmp.path());
    handlers::grpc_probe(&s, tmp.path(), "edge-1");
    exits::endings(&s, tmp.path());
    claims::local_path_claim(&s, tmp.path(), "edge-1");
    claims::generic_ephemeral_volume(&s, tmp.path());
    container_logs::log_options(&s, tmp.path());

    // kubectl top, from the kubelet's CRI stats; the kubelet API's stats endpoints.
    let top = eventually(&s, &["top", "pods"], |o| {
        o.contains(&web) && o.contains("Mi")
    });
    assert!(top.contains("CPU(cores)"), "{top}");
    let nodes = eventually(&s, &["top", "node", "edge-1"], |o| o.contains("edge-1"));
    assert!(nodes.contains('%'), "{nodes}");
    let summary = ok(
        &s,
        &["get", "--raw", "/api/v1/nodes/edge-1/proxy/stats/summary"],
    );
    assert!(summary.contains("\"nodeName\":\"edge-1\""), "{summary}");
    let summary: serde_json::Value = serde_json::from_str(&summary).expect("summary json");
    let node = &summary["node"];
    for path in [
        "/fs/capacityBytes",
        "/fs/availableBytes",
        "/runtime/imageFs/capacityBytes",
        "/runtime/imageFs/usedBytes",
        "/rlimit/maxpid",
        "/memory/availableBytes",
        "/cpu/usageCoreNanoSeconds",
    ] {
        assert!(
            node.pointer(path)
                .and_then(|v| v.as_u64())
                .is_some_and(|n| n > 0),
            "{path} in {node}"
        );
    }
    assert!(node["startTime"].is_string(), "{node}");
    let served = summary["pods"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["podRef"]["name"] == web.as_str()))
        .unwrap_or_else(|| panic!("{web} in {summary}"));
    assert!(
        served["podRef"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() > 8),
        "{served}"
    );
    // The pod's own network namespace, which served requests above.
    assert_eq!(served["network"]["name"], "eth0", "{served}");
    assert!(
        served["network"]["rxBytes"].as_u64().is_some_and(|n| n > 0),
        "{served}"
    );
    let c = &served["containers"][0];
    assert!(
        c["rootfs"]["capacityBytes"].as_u64().is_some_and(|n| n > 0),
        "{c}"
    );
    assert!(c["logs"]["usedBytes"].is_u64(), "{c}");
    assert!(
        served["ephemeral-storage"]["usedBytes"].is_u64(),
        "{served}"
    );
    kubelet_api::bearer_tokens(&s, tmp.path());
    kubelet_api::views(&s);

    // Restarts, finished pods, a missing image.
    ok(
        &s,
        &[
            "apply",
            "-f",
            &write(tmp.path(), "one-shots.yaml", ONE_SHOTS),
        ],
    );
    eventually(
        &s,
        &["get", "pod", "done", "-o", "jsonpath={.status.phase}"],
        |o| o == "Succeeded",
    );
    eventually(
        &s,
        &["get", "pod", "failed", "-o", "jsonpath={.status.phase}"],
        |o| o == "Failed",
    );
    let exit = jsonpath(
        &s,
        "pod/failed",
        "{.status.containerStatuses[0].state.terminated.exitCode}",
    );
    assert_eq!(exit, "1");
    eventually(
        &s,
        &[
            "get",
            "pod",
            "crash",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        |o| o == "CrashLoopBackOff",
    );
    let last = jsonpath(
        &s,
        "pod/crash",
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
    );
    assert_eq!(last, "3");
    let restarts: u32 = jsonpath(
        &s,
        "pod/crash",
        "{.status.containerStatuses[0].restartCount}",
    )
    .parse()
    .expect("restart count");
    assert!(restarts >= 1, "restarted {restarts} times");
    eventually(
        &s,
        &[
            "get",
            "pod",
            "missing",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        |o| o == "ErrImagePull" || o == "ImagePullBackOff",
    );
    // Logs through the API server and the kubelet API: whole, tail, previous, follow, errors.
    assert_eq!(ok(&s, &["logs", "done"]), "hello from done\nsecond line\n");
    assert_eq!(ok(&s, &["logs", "done", "--tail=1"]), "second line\n");
    let stamped = ok(&s, &["logs", "done", "--timestamps"]);
    assert!(
        stamped.starts_with("20") && stamped.contains("Z hello from done"),
        "{stamped}"
    );
    assert_eq!(ok(&s, &["logs", "crash", "--previous"]), "crashing\n");
    let o = s.kubectl(&["logs", "done", "-c", "nope"]);
    assert!(!o.status.success());
    let err = common::server::text(&o);
    assert!(
        err.contains("container nope is not valid for pod done"),
        "{err}"
    );
    eventually(
        &s,
        &["get", "pod", "ticker", "-o", "jsonpath={.status.phase}"],
        |o| o == "Running",
    );
    let followed = std::process::Command::new("timeout")
        .arg("3")
        .arg(common::server::kubectl())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["logs", "-f", "ticker"])
        .output()
        .expect("kubectl logs -f");
    let out = String::from_utf8_lossy(&followed.stdout);
    let ticks = out.lines().filter(|l| l.starts_with("tick ")).count();
    assert!(ticks >= 10, "kept following: {out}");
    let msg = jsonpath(
        &s,
        "pod/missing",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(msg.contains("127.0.0.1:1/nothing/here:1"), "{msg}");
    eventually(
        &s,
        &[
            "get",
            "pod",
            "missing",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        |o| o == "ImagePullBackOff",
    );
    // Their events: a pull that failed, its back-off; a container that crashes, its back-off.
    let events = eventually(
        &s,
        &[
            "get", "events", "-o",
            "jsonpath={range .items[*]}{.involvedObject.name} {.type} {.reason}: {.message}{\"\\n\"}{end}",
        ],
        |o| o.contains("missing Warning Failed: Error: ImagePullBackOff"),
    );
    for want in [
        "missing Normal Pulling: Pulling image \"127.0.0.1:1/nothing/here:1\"",
        "missing Warning Failed: Failed to pull image \"127.0.0.1:1/nothing/here:1\": ",
        "missing Warning Failed: Error: ErrImagePull",
        "missing Normal BackOff: Back-off pulling image \"127.0.0.1:1/nothing/here:1\"",
        "crash Warning BackOff: Back-off restarting failed container c in pod crash_default(",
    ] {
        assert!(events.contains(want), "{want} in\n{events}");
    }

    // The server restarts; its kubelet adopts the running pods as they are.
    let dir = s.stop();
    for (name, ip, _) in &first {
        assert!(
            get(ip, "/index.html").contains(&format!("served-by-{name}")),
            "{name} kept serving"
        );
    }
    let s = Server::with_kubelet_in(dir, &flags);
    eventually(
        &s,
        &[
            "get",
            "node",
            "edge-1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        |o| o == "True",
    );
    std::thread::sleep(Duration::from_secs(3));
    for (name, ip, cid) in &first {
        let now = jsonpath(
            &s,
            &format!("pod/{name}"),
            "{.status.containerStatuses[0].containerID}",
        );
        assert_eq!(&now, cid, "{name} kept its container");
        let restarts = jsonpath(
            &s,
            &format!("pod/{name}"),
            "{.status.containerStatuses[0].restartCount}",
        );
        assert_eq!(restarts, "0");
        assert_eq!(&jsonpath(&s, &format!("pod/{name}"), "{.status.podIP}"), ip);
    }

    // Deleting stops and removes the pods.
    ok(&s, &["delete", "deployment", "web"]);
    ok(
        &s,
        &[
            "delete",
            "pod",
            "crash",
            "done",
            "failed",
            "ticker",
            "missing",
            "--wait=false",
        ],
    );
    eventually(&s, &["get", "pods", "-o", "name"], |o| o.trim().is_empty());
    for (_, ip, _) in &first {
        within(10, "the deleted pod to stop serving", || {
            !get(ip, "/index.html").contains("200 OK")
        });
    }
    let s = eviction::eviction(s, tmp.path(), &flags);
    drop(s);
    drop(cleanup);
}
