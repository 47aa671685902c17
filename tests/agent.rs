//! `k1s agent --simulate N` joins a server as k3s agents do: the join token from
//! `k1s token create --join` pins the server's CA, each simulated node gets its own kubelet
//! certificate, registers, and runs the pods scheduled to it; a token pinning another CA is
//! refused, and SIGTERM stops the agent cleanly.

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
    let s = Server::start_with(&["--disable-kubelet"]);
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

    let pid = good.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = wait_exit(&mut good, "the agent did not stop");
    assert!(status.success(), "{status:?}");
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
