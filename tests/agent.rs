//! `k1s agent --simulate N` joins a server as k3s agents do: the join token from
//! `k1s token create --join` pins the server's CA, each simulated node gets its own kubelet
//! certificate, registers, and runs the pods scheduled to it; a token pinning another CA is
//! refused, and SIGTERM stops the agent cleanly. `k1s agent` without `--simulate` runs a real
//! kubelet on a containerd of its own: its pods run, their logs and exec go through the server,
//! and `kubectl top` sees them from the server's scrapes of the agent's kubelet.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{eventually, ok, Server};

fn agent(dir: &std::path::Path, server: &Server, token: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_k1s"))
        .args(["agent", "--data-dir"])
        .arg(dir)
        .args(["--server", &format!("https://127.0.0.1:{}", server.port)])
        .args([
            "--token",
            token,
            "--simulate",
            "2",
            "--simulated-node-prefix",
            "edge-",
            "--kubelet-port",
            "0",
            "--node-ip",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent")
}

fn token(s: &Server) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_k1s"))
        .args(["token", "create", "--join", "--kubeconfig"])
        .arg(&s.kubeconfig)
        .output()
        .expect("k1s token create");
    assert!(o.status.success(), "token create: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn a_simulating_agent_joins_registers_its_nodes_and_runs_their_pods() {
    let s = Server::start_with(&["--disable-kubelet", "--metric-resolution", "2s"]);
    let dir = tempfile::tempdir().expect("tmp");
    let token = token(&s);
    assert!(token.starts_with("K10") && token.contains("::"), "{token}");

    // A token pinning another CA: the agent refuses the server.
    let wrong = format!("K10{}{}", "0".repeat(64), &token[67..]);
    let mut bad = agent(dir.path(), &s, &wrong);
    let status = wait_exit(&mut bad, "the agent did not refuse the CA");
    assert!(!status.success());
    let err = std::io::read_to_string(bad.stderr.take().expect("stderr")).unwrap_or_default();
    assert!(err.contains("does not match the token's hash"), "{err}");

    let mut good = agent(dir.path(), &s, &token);
    eventually(&s, &["get", "nodes", "-o", "name"], |o| {
        o.contains("node/edge-0000") && o.contains("node/edge-0001")
    });
    ok(
        &s,
        &[
            "wait",
            "--for=condition=Ready",
            "node/edge-0000",
            "node/edge-0001",
            "--timeout=30s",
        ],
    );
    ok(
        &s,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=4",
        ],
    );
    let nodes = eventually(
        &s,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
        ],
        |o| o.lines().count() == 4,
    );
    assert!(nodes.lines().all(|n| n.starts_with("edge-")), "{nodes}");
    // Each node acts as itself.
    assert!(dir.path().join("agent/nodes/edge-0001.crt").exists());

    // The agent serves its nodes' usage as KWOK does; the server scrapes it for metrics.k8s.io.
    let path = ok(
        &s,
        &[
            "get",
            "node",
            "edge-0000",
            "-o",
            r"jsonpath={.metadata.annotations.metrics\.k8s\.io/resource-metrics-path}",
        ],
    );
    assert_eq!(path, "/metrics/nodes/edge-0000/metrics/resource");
    ok(
        &s,
        &[
            "annotate",
            "pods",
            "-l",
            "app=web",
            "simulated.k1s.io/cpu-usage=250m",
            "simulated.k1s.io/memory-usage=64Mi",
        ],
    );
    // Through the API server's nodes/proxy, as any kubelet's metrics.
    let text = ok(
        &s,
        &[
            "get",
            "--raw",
            &format!("/api/v1/nodes/edge-0000/proxy{path}"),
        ],
    );
    assert!(text.contains("node_cpu_usage_seconds_total "), "{text}");
    let start = Instant::now();
    let top = loop {
        let o = common::server::text(&s.kubectl(&["top", "pod", "-l", "app=web", "--no-headers"]));
        if o.lines().count() == 4
            && o.lines()
                .all(|l| l.contains(" 250m ") && l.contains("64Mi"))
        {
            break o;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "kubectl top never showed the simulated usage: {o}\n{}",
            s.diagnose()
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(top.lines().count(), 4, "{top}");
    let node = ok(&s, &["top", "node", "edge-0000", "--no-headers"]);
    assert!(node.starts_with("edge-0000"), "{node}");

    let pid = good.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = wait_exit(&mut good, "the agent did not stop");
    assert!(status.success(), "{status:?}");
}

/// The agent's log, printed when the test fails.
struct AgentLog(std::path::PathBuf);

impl Drop for AgentLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("the agent's last log lines:");
            for l in tail.iter().rev() {
                eprintln!("  {l}");
            }
        }
    }
}

#[test]
fn a_real_agent_runs_pods_on_its_own_containerd_and_reports_usage() {
    use common::node::{network, node_dir};
    let (bridge, pods_cidr) = network(3);
    let (_, service_cidr) = network(23);
    let s = Server::start_with(&[
        "--disable-kubelet",
        "--metric-resolution",
        "2s",
        "--cluster-cidr",
        &pods_cidr,
        "--service-cidr",
        &service_cidr,
    ]);
    let dir = tempfile::tempdir().expect("tmp");
    let cleanup = node_dir(dir.path(), &bridge, &service_cidr);
    let log_path = dir.path().join("agent.log");
    let _log = AgentLog(log_path.clone());
    let mut agent = Command::new(env!("CARGO_BIN_EXE_k1s"))
        .args(["agent", "--data-dir"])
        .arg(dir.path())
        .args(["--server", &format!("https://127.0.0.1:{}", s.port)])
        .args(["--token", &token(&s)])
        .args(["--node-name", "edge-2", "--node-ip", "127.0.0.1"])
        .args(["--pod-bridge", &bridge, "--kubelet-port", "0"])
        .args(["--cgroup-root", &cleanup.cgroup_root()])
        .args(common::server::TEST_EVICTION_HARD)
        .arg("--pod-log-dir")
        .arg(dir.path().join("pod-logs"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("start the agent");

    eventually(&s, &["get", "nodes", "-o", "name"], |o| {
        o.contains("node/edge-2")
    });
    ok(
        &s,
        &[
            "wait",
            "--for=condition=Ready",
            "node/edge-2",
            "--timeout=60s",
        ],
    );
    let manifest = common::server::write(
        dir.path(),
        "busy.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: busy}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: busy
    image: k1s.local/busybox:1
    command: [sh, -c, 'echo started on $(hostname); while :; do :; done']
"#,
    );
    ok(&s, &["apply", "-f", &manifest]);
    let ready = s.kubectl(&["wait", "--for=condition=Ready", "pod/busy", "--timeout=60s"]);
    assert!(
        ready.status.success(),
        "pod/busy never got Ready: {}\n{}",
        common::server::text(&ready),
        s.diagnose()
    );
    assert_eq!(
        ok(
            &s,
            &["get", "pod", "busy", "-o", "jsonpath={.spec.nodeName}"]
        ),
        "edge-2"
    );
    // Logs and exec go through the server to the agent's kubelet.
    eventually(&s, &["logs", "busy"], |o| o.starts_with("started on busy"));
    assert_eq!(ok(&s, &["exec", "busy", "--", "echo", "hi"]).trim(), "hi");

    // The server scrapes the agent's kubelet: two scrapes (2 s apart here) give the rates.
    let start = Instant::now();
    let top = loop {
        let o = common::server::text(&s.kubectl(&["top", "pod", "busy", "--no-headers"]));
        if o.starts_with("busy") {
            break o;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "kubectl top pod never answered: {o}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    // The pod spins: it uses a good part of a core.
    let millicores: u64 = top
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.trim_end_matches('m').parse().ok())
        .unwrap_or(0);
    assert!(millicores > 100, "{top}");
    let node = ok(&s, &["top", "node", "edge-2", "--no-headers"]);
    assert!(node.starts_with("edge-2") && node.contains('%'), "{node}");
    ok(
        &s,
        &["delete", "pod", "busy", "--wait=true", "--timeout=60s"],
    );

    let pid = agent.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = wait_exit(&mut agent, "the agent did not stop");
    assert!(status.success(), "{status:?}");
    drop(cleanup);
}

/// Waits up to 20 s for `child` to exit; panics with `what` if it does not.
fn wait_exit(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
