//! The containerd k1s supervises, as k3s does: a child process with a generated configuration
//! under the data dir ([`config`]), restarted with a backoff when it dies, stopped with SIGTERM
//! when k1s stops. The child gets SIGKILL if k1s itself dies (PR_SET_PDEATHSIG, set from the
//! supervising thread, which lives as long as the supervisor: the signal follows the thread
//! that forked). The containers' shims are containerd's own children that detach from it, so
//! they, and the pods, survive both: on restart the kubelet adopts them.

pub mod config;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use config::{Layout, Options};

/// The log is started afresh (the old one kept as `.1`) when it has grown past this.
const LOG_ROTATE_BYTES: u64 = 10 << 20;
/// Restart backoff: from 1 s, doubling to 30 s; back to 1 s after a minute of running.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const STEADY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("containerd at {socket} not ready after {waited:?}: {last}")]
    NotReady {
        socket: PathBuf,
        waited: Duration,
        last: String,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerdError {
    let context = context.into();
    move |source| ContainerdError::Io { context, source }
}

/// A supervised containerd.
pub struct Containerd {
    layout: Layout,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    stopping: AtomicBool,
    /// The running child; only the supervising thread reaps it, under this lock, so a signal
    /// sent under the lock never reaches a recycled PID.
    child: Mutex<Option<Child>>,
    starts: AtomicU32,
}

impl Containerd {
    /// Writes the configuration and starts containerd (`binary`, found in PATH when bare).
    pub fn start(layout: Layout, opts: &Options, binary: &Path) -> Result<Self, ContainerdError> {
        for d in [
            layout.dir.clone(),
            layout.root(),
            layout.state(),
            layout.cni_conf_dir(),
            layout.cni_ipam_dir(),
        ] {
            std::fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
        }
        let conf = layout.config();
        std::fs::write(&conf, config::render(&layout, opts))
            .map_err(io(format!("writing {}", conf.display())))?;
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            child: Mutex::new(None),
            starts: AtomicU32::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("containerd".into())
            .spawn({
                let shared = shared.clone();
                let layout = layout.clone();
                let binary = binary.to_path_buf();
                move || supervise(&shared, &layout, &binary)
            })
            .map_err(io("starting the containerd supervisor thread"))?;
        Ok(Containerd {
            layout,
            shared,
            thread: Some(thread),
        })
    }

    pub fn socket(&self) -> PathBuf {
        self.layout.socket()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The running containerd's PID.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.shared.child).as_ref().map(Child::id)
    }

    /// How many times containerd was started (1 until it first dies).
    pub fn starts(&self) -> u32 {
        self.shared.starts.load(Ordering::Acquire)
    }

    /// Waits until containerd answers CRI's Version; the channel then serves every client.
    pub async fn ready(
        &self,
        timeout: Duration,
    ) -> Result<tonic::transport::Channel, ContainerdError> {
        wait_ready(&self.socket(), timeout).await
    }

    /// Stops containerd: SIGTERM, then SIGKILL after `grace`. The pods keep running.
    pub fn stop(&mut self, grace: Duration) {
        self.shared.stopping.store(true, Ordering::Release);
        signal(&self.shared, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while lock(&self.shared.child).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        signal(&self.shared, libc::SIGKILL);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop(Duration::from_secs(10));
        }
    }
}

fn lock(m: &Mutex<Option<Child>>) -> std::sync::MutexGuard<'_, Option<Child>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn signal(shared: &Shared, sig: libc::c_int) {
    if let Some(child) = lock(&shared.child).as_ref() {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on our own unreaped child; no memory is involved.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// Waits until the containerd at `socket` answers CRI's Version.
/// Kills and deletes the containers a supervised containerd's OCI runtimes still run, each
/// runtime under its own state root (for tests and benchmarks: a shim killed alone would leave
/// its containers behind).
pub fn delete_containers(layout: &Layout) {
    let runtimes = std::iter::once("runc").chain(config::OTHER_RUNTIMES);
    for runtime in runtimes {
        let root = layout.state().join(runtime).join("k8s.io");
        if !root.is_dir() {
            continue;
        }
        let Ok(out) = std::process::Command::new(runtime)
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output()
        else {
            continue;
        };
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = std::process::Command::new(runtime)
                .arg("--root")
                .arg(&root)
                .args(["delete", "-f", id.trim()])
                .status();
        }
    }
}

pub async fn wait_ready(
    socket: &Path,
    timeout: Duration,
) -> Result<tonic::transport::Channel, ContainerdError> {
    let started = Instant::now();
    let mut last = String::from("not tried");
    while started.elapsed() < timeout {
        match containerd_client::connect(socket).await {
            Ok(channel) => {
                let mut cri =
                    k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(channel.clone());
                match cri.version(k8s_cri::v1::VersionRequest::default()).await {
                    Ok(_) => return Ok(channel),
                    Err(e) => last = format!("CRI version: {}", e.message()),
                }
            }
            Err(e) => last = format!("connecting: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ContainerdError::NotReady {
        socket: socket.to_path_buf(),
        waited: started.elapsed(),
        last,
    })
}

/// The supervising thread: start, watch, restart with backoff, until stopped.
fn supervise(shared: &Shared, layout: &Layout, binary: &Path) {
    let mut backoff = BACKOFF_MIN;
    while !shared.stopping.load(Ordering::Acquire) {
        let started = Instant::now();
        match spawn(layout, binary) {
            Ok(child) => {
                tracing::info!(pid = child.id(), config = %layout.config().display(), "containerd started");
                *lock(&shared.child) = Some(child);
                shared.starts.fetch_add(1, Ordering::AcqRel);
                let status = loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let mut guard = lock(&shared.child);
                    let Some(child) = guard.as_mut() else {
                        break None;
                    };
                    match child.try_wait() {
                        Ok(Some(status)) => {
                            *guard = None;
                            break Some(status.to_string());
                        }
                        Ok(None) => {}
                        Err(e) => {
                            *guard = None;
                            break Some(format!("waiting for it: {e}"));
                        }
                    }
                };
                if shared.stopping.load(Ordering::Acquire) {
                    tracing::info!("containerd stopped");
                    return;
                }
                tracing::warn!(status = ?status, log = %layout.log().display(), "containerd exited; restarting in {backoff:?}");
            }
            Err(e) => tracing::error!("starting containerd: {e}; retrying in {backoff:?}"),
        }
        if started.elapsed() > STEADY {
            backoff = BACKOFF_MIN;
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !shared.stopping.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn spawn(layout: &Layout, binary: &Path) -> Result<Child, ContainerdError> {
    use std::os::unix::process::CommandExt;
    let log_path = layout.log();
    if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let _ = std::fs::rename(&log_path, log_path.with_extension("log.1"));
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(format!("opening {}", log_path.display())))?;
    let err = log
        .try_clone()
        .map_err(io(format!("opening {}", log_path.display())))?;
    let mut cmd = Command::new(binary);
    cmd.arg("--config")
        .arg(layout.config())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Its own process group: a terminal's ^C reaches k1s, which stops containerd itself.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(io(format!("running {}", binary.display())))
}
