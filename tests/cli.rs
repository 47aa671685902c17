//! The `k1s` binary as a user runs it: flags, config file, start-up and a clean SIGTERM stop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use k1s::testing::etcd::EtcdServer;

fn k1s() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_k1s"));
    c.env("RUST_LOG", "info");
    c
}

fn run(args: &[&str]) -> Output {
    k1s().args(args).output().expect("run k1s")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_names_kubernetes_and_parts() {
    let o = run(&["version"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Kubernetes v1.37"), "{out}");
    assert!(
        out.contains("apiserver") && out.contains("kubelet"),
        "{out}"
    );
}

#[test]
fn bad_flag_is_one_line_and_exit_2() {
    let o = run(&["server", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
    let o = run(&["server", "--https-listen-port", "http"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("https-listen-port"), "{}", stderr(&o));
    // The kubelet's flags are checked before anything starts.
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().to_str().expect("utf8");
    for (args, want) in [
        (
            &["--eviction-soft", "memory.available<1Gi"][..],
            "--eviction-soft-grace-period: grace period must be specified",
        ),
        (
            &[
                "--image-gc-high-threshold",
                "50",
                "--image-gc-low-threshold",
                "60",
            ],
            "--image-gc-low-threshold (60) must be less than --image-gc-high-threshold (50)",
        ),
        (
            &["--node-name", "Edge_1"],
            "node name \"Edge_1\" from --node-name",
        ),
        (
            &["--eviction-minimum-reclaim", "cpu=1"],
            "--eviction-minimum-reclaim: \"cpu\" is not an eviction signal",
        ),
    ] {
        let mut all = vec!["server", "--data-dir", data];
        all.extend(args);
        let o = run(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn bad_config_file_names_the_key_and_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "disable-kubelet: true\ncompaction-interval: soon\n").expect("write");
    let o = run(&["server", "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("key `compaction-interval`"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    std::fs::write(&cfg, "[not, a, mapping]\n").expect("write");
    let o = run(&["server", "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected a mapping"), "{}", stderr(&o));
}

#[test]
fn kubeconfig_before_the_api_server_says_so() {
    let o = run(&["kubeconfig", "--write-kubeconfig", "/nonexistent/k1s.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no admin kubeconfig"), "{}", stderr(&o));
}

/// A started server and a channel of its log lines.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = k1s()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start k1s server");
        let err = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server { child, lines }
    }

    fn wait_for(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("server never logged {needle:?}"),
            }
        }
    }

    /// SIGTERM, then the exit code.
    fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        for _ in 0..200 {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("server did not stop within 10 s of SIGTERM");
    }
}

#[test]
fn server_starts_on_the_embedded_store_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().to_str().expect("utf8");
    let kc = dir.path().join("k.yaml");
    let kc = kc.to_str().expect("utf8");
    let api = [
        "--https-listen-port",
        "0",
        "--bind-address",
        "127.0.0.1",
        "--write-kubeconfig",
        kc,
    ];
    let mut args = vec![
        "server",
        "--disable-kubelet",
        "--data-dir",
        data,
        "--log-format",
        "json",
    ];
    args.extend(api);
    let s = Server::start(&args);
    let line = s.wait_for("store ready");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
    assert_eq!(v["fields"]["backend"], "embedded", "{line}");
    s.wait_for("k1s server running");
    assert_eq!(s.terminate(), Some(0));
    assert!(dir.path().join("server/db/state.redb").exists());
    assert!(
        dir.path().join("k.yaml").exists(),
        "admin kubeconfig written"
    );
    // A second start opens the same store.
    let mut args = vec!["server", "--disable-kubelet", "--data-dir", data];
    args.extend(api);
    let s = Server::start(&args);
    s.wait_for("store ready");
    assert_eq!(s.terminate(), Some(0));
}

#[test]
fn server_runs_on_etcd() {
    let etcd = EtcdServer::start().expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let kc = dir.path().join("k.yaml");
    let s = Server::start(&[
        "server",
        "--disable-kubelet",
        "--data-dir",
        dir.path().to_str().expect("utf8"),
        "--datastore-endpoint",
        etcd.url(),
        "--https-listen-port",
        "0",
        "--bind-address",
        "127.0.0.1",
        "--write-kubeconfig",
        kc.to_str().expect("utf8"),
    ]);
    let line = s.wait_for("store ready");
    assert!(line.contains("etcd"), "{line}");
    assert_eq!(s.terminate(), Some(0));
}

#[test]
fn unreachable_etcd_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = run(&[
        "server",
        "--data-dir",
        dir.path().to_str().expect("utf8"),
        "--datastore-endpoint",
        "http://127.0.0.1:1",
        "--https-listen-port",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("datastore"), "{}", stderr(&o));
}

#[test]
fn a_port_in_use_fails_start_up_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let dir = tempfile::tempdir().expect("tmp");
    let o = run(&[
        "server",
        "--data-dir",
        dir.path().to_str().expect("utf8"),
        "--bind-address",
        "127.0.0.1",
        "--https-listen-port",
        &port,
        "--write-kubeconfig",
        dir.path().join("k.yaml").to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("listening on 127.0.0.1:") && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn the_benchmarks_run_and_print_their_tables() {
    // Tiny sizes: this only proves the benchmark code works; `make bench` gives the figures.
    let o = run(&[
        "bench",
        "api",
        "--clients",
        "2",
        "--objects",
        "40",
        "--lists",
        "1",
        "--watchers",
        "4",
        "--events",
        "1",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.contains("| embedded |") && out.contains("| etcd |"),
        "{out}"
    );
    let o = run(&[
        "bench",
        "store",
        "--writers",
        "2",
        "--seconds",
        "0.2",
        "--value-bytes",
        "64",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("embedded backend"), "{out}");
}
