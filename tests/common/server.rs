//! A `k1s server` started for a test, and a stock kubectl 1.37 to drive it.
//!
//! `K1S_TEST_DATASTORE=etcd` puts the server on a throwaway etcd instead of the embedded store.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many of the server's log lines a test keeps.
const LOG_LINES: usize = 2000;

/// Hard eviction thresholds for test kubelets that only a full disk or memory crosses
/// (kind does the same): upstream's defaults (nodefs.available<10%, imagefs.available<15%)
/// would put a node on a busy build machine under DiskPressure, taint it and leave every
/// test pod Pending.
pub const TEST_EVICTION_HARD: [&str; 2] = [
    "--eviction-hard",
    "memory.available<1Mi,nodefs.available<1Mi,imagefs.available<1Mi,nodefs.inodesFree<1",
];

/// The stock kubectl that `make deps` unpacks into `.cache/`.
pub fn kubectl() -> PathBuf {
    std::env::var_os("K1S_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/kubectl/kubectl"))
}

/// The last [`LOG_LINES`] lines a server logged, for failure reports.
type Log = Arc<Mutex<VecDeque<String>>>;

pub struct Server {
    child: Child,
    log: Log,
    /// The etcd this server stores in, when `K1S_TEST_DATASTORE=etcd`.
    _etcd: Option<k1s::testing::etcd::EtcdServer>,
    pub _dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub port: u16,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server with extra `k1s server` flags.
    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_in(tempfile::tempdir().expect("tmp"), extra)
    }

    /// Stops the server and hands back its data directory.
    #[allow(dead_code)]
    pub fn stop(mut self) -> tempfile::TempDir {
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("tmp"));
        drop(self);
        dir
    }

    /// A server on an existing data directory (one a stopped server left), with extra flags.
    /// Its kubelet is off: tests of the kubelet on containerd use [`Server::with_kubelet`].
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        Server::launch(dir, extra, false)
    }

    /// A server on `dir` whose kubelet runs pods on the containerd it supervises.
    #[allow(dead_code)]
    pub fn with_kubelet_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        Server::launch(dir, extra, true)
    }

    fn launch(dir: tempfile::TempDir, extra: &[&str], kubelet: bool) -> Server {
        let kubeconfig = dir.path().join("k1s.yaml");
        let etcd = (std::env::var("K1S_TEST_DATASTORE").as_deref() == Ok("etcd"))
            .then(|| k1s::testing::etcd::EtcdServer::start().expect("start etcd"));
        // Free ports are found by binding and releasing them, so another test's server (or
        // an outgoing connection) can take the chosen one first: pick another and retry.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Server::spawn(&dir, &kubeconfig, etcd.as_ref(), extra, kubelet) {
                Ok((child, log, port)) => {
                    return Server {
                        child,
                        log,
                        _etcd: etcd,
                        _dir: dir,
                        kubeconfig,
                        port,
                    };
                }
                Err(tail)
                    if attempt < 3 && tail.to_lowercase().contains("address already in use") => {}
                Err(tail) => panic!("the API server did not start; its last lines:\n{tail}"),
            }
        }
    }

    /// Starts `k1s server` once and waits until its API server listens; on failure, the
    /// server's last log lines.
    fn spawn(
        dir: &tempfile::TempDir,
        kubeconfig: &Path,
        etcd: Option<&k1s::testing::etcd::EtcdServer>,
        extra: &[&str],
        kubelet: bool,
    ) -> Result<(Child, Log, u16), String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_k1s"));
        cmd.arg("server");
        if let Some(e) = etcd {
            cmd.args(["--datastore-endpoint", e.url()]);
        }
        if !kubelet && !extra.contains(&"--disable-kubelet") {
            cmd.arg("--disable-kubelet");
        }
        if kubelet && !extra.contains(&"--eviction-hard") {
            cmd.args(TEST_EVICTION_HARD);
        }
        let mut child = cmd
            .args(["--bind-address", "127.0.0.1", "--https-listen-port"])
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--write-kubeconfig")
            .arg(kubeconfig)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start k1s");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut l) = keep.lock() {
                    if l.len() == LOG_LINES {
                        l.pop_front();
                    }
                    l.push_back(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("API server listening") => return Ok((child, log, port)),
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    let lines = log.lock().map(|l| l.clone()).unwrap_or_default();
                    let tail: Vec<String> = lines.iter().rev().take(30).rev().cloned().collect();
                    return Err(format!("{}\n(exit: {status:?})", tail.join("\n")));
                }
            }
        }
    }

    /// The server's last log lines at WARN or ERROR, at most `n` of them.
    #[allow(dead_code)]
    pub fn warnings(&self, n: usize) -> Vec<String> {
        let Ok(log) = self.log.lock() else {
            return Vec::new();
        };
        let bad: Vec<&String> = log
            .iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        bad[bad.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }

    /// What a failed test with a kubelet reports: the nodes (conditions and taints), the
    /// pods, the events, and the server's last warnings.
    #[allow(dead_code)]
    pub fn diagnose(&self) -> String {
        let indent = |text: &str| {
            text.lines()
                .map(|l| format!("    | {l}\n"))
                .collect::<String>()
        };
        let mut report = String::from("the server after the failures:");
        for args in [
            &["get", "nodes", "-o", "wide"][..],
            &["describe", "nodes"],
            &["get", "pods", "-A", "-o", "wide"],
            &["get", "events", "-A"],
        ] {
            let out = text(&self.kubectl(args));
            report.push_str(&format!(
                "\n  kubectl {}:\n{}",
                args.join(" "),
                indent(&out)
            ));
        }
        let warnings = self.warnings(60).join("\n");
        report.push_str(&format!("\n  server warnings:\n{}", indent(&warnings)));
        report
    }

    /// Kills the server with SIGKILL, as a power cut would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl (make deps installs it)")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs kubectl, which must succeed, and returns its stdout.
pub fn ok(s: &Server, args: &[&str]) -> String {
    let o = s.kubectl(args);
    assert!(o.status.success(), "kubectl {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls `done` every 250 ms until it holds (or fails after `secs`, naming `what`).
pub fn within(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what} did not happen in {secs} s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Polls `kubectl args` until its output satisfies `done` (or fails after 30 s).
pub fn eventually(s: &Server, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let out = text(&s.kubectl(args));
        if done(&out) {
            return out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "kubectl {args:?} never got there; last output:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes a manifest into `dir`, returning its path.
pub fn write(dir: &std::path::Path, name: &str, yaml: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, yaml).expect("write manifest");
    p.to_str().expect("utf8").to_string()
}
