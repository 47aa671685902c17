//! A throwaway etcd (Debian's `etcd-server`) on free loopback ports and a temporary data dir.
//!
//! [`EtcdServer::start`] waits until etcd answers; dropping the handle kills that process (by
//! the PID it started) and removes its data dir.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why etcd could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EtcdServerError {
    #[error("no `etcd` binary found (install Debian's etcd-server): {0}")]
    NotInstalled(#[source] std::io::Error),
    #[error("preparing etcd's data dir: {0}")]
    Io(#[from] std::io::Error),
    #[error("etcd did not answer on {url} within {secs} s; its log: {log}")]
    NotReady { url: String, secs: u64, log: String },
}

/// Server-side TLS for etcd: its certificate and key, and the CA its clients must present.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running etcd that this process started.
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_url: String,
    peer_url: String,
    tls: Option<ServerTls>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// Starts etcd on free loopback ports and waits until it serves requests.
    pub fn start() -> Result<Self, EtcdServerError> {
        Self::start_with(None)
    }

    /// Starts etcd serving HTTPS and requiring client certificates signed by `tls.ca`.
    pub fn start_tls(tls: ServerTls) -> Result<Self, EtcdServerError> {
        Self::start_with(Some(tls))
    }

    /// Starts etcd, picking new ports when another process took the chosen ones first (free
    /// ports are found by binding and releasing them, so a concurrent test can race for one).
    fn start_with(tls: Option<ServerTls>) -> Result<Self, EtcdServerError> {
        let mut attempt = 0;
        loop {
            match Self::start_once(tls.clone()) {
                Err(EtcdServerError::NotReady { log, .. })
                    if attempt < 3 && log.contains("address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn start_once(tls: Option<ServerTls>) -> Result<Self, EtcdServerError> {
        let dir = tempfile::Builder::new().prefix("k1s-etcd-").tempdir()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{}", free_port()?);
        let peer_url = format!("http://127.0.0.1:{}", free_port()?);
        let mut server = EtcdServer {
            child: None,
            dir,
            client_url,
            peer_url,
            tls,
        };
        server.spawn(true)?;
        Ok(server)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self, new_cluster: bool) -> Result<(), EtcdServerError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let data = self.dir.path().join("data");
        let mut cmd = Command::new("etcd");
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name=k1s-test")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={}", self.client_url))
            .arg(format!("--advertise-client-urls={}", self.client_url))
            .arg(format!("--listen-peer-urls={}", self.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url))
            .arg(format!("--initial-cluster=k1s-test={}", self.peer_url))
            .arg(format!(
                "--initial-cluster-state={}",
                if new_cluster { "new" } else { "existing" }
            ))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(EtcdServerError::NotInstalled)?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(20))
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), EtcdServerError> {
        let start = Instant::now();
        let tls = self.tls.is_some();
        let addr = self
            .client_url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        while start.elapsed() < limit {
            // Over TLS an open port is the sign; clients retry until etcd serves.
            let ready = if tls {
                std::net::TcpStream::connect(&addr).is_ok()
            } else {
                health_ok(&addr)
            };
            if ready {
                return Ok(());
            }
            // An etcd that exited (a port taken, say) will not become ready.
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EtcdServerError::NotReady {
            url: self.client_url.clone(),
            secs: limit.as_secs(),
            log: std::fs::read_to_string(self.log_path()).unwrap_or_default(),
        })
    }

    /// The client URL (`http://127.0.0.1:PORT`, or `https://` with TLS).
    pub fn url(&self) -> &str {
        &self.client_url
    }

    /// etcd's data dir.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of the etcd process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills etcd (SIGKILL) and waits for it to exit; its data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) -> Result<(), EtcdServerError> {
        self.kill();
        self.spawn(false)
    }
}

/// etcd's `/health` answers `"health":"true"`.
fn health_ok(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let req = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
