//! Eviction signals and thresholds: what the node has left of memory, disk bytes and inodes
//! (nodefs: the data dir; imagefs: containerd's root) and PIDs, observed from /proc and
//! statvfs, against `--eviction-hard` and `--eviction-soft` thresholds (`SIGNAL<QUANTITY` or
//! `SIGNAL<PERCENT%`), a soft one with its `--eviction-soft-grace-period`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

#[derive(Debug, thiserror::Error)]
pub enum EvictionError {
    #[error("{flag}: {message}")]
    Threshold { flag: &'static str, message: String },
}

fn bad(flag: &'static str, message: String) -> EvictionError {
    EvictionError::Threshold { flag, message }
}

/// What a threshold watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    ImagefsInodesFree,
    PidAvailable,
}

impl Signal {
    pub(super) fn parse(s: &str) -> Option<Signal> {
        Some(match s {
            "memory.available" => Signal::MemoryAvailable,
            "nodefs.available" => Signal::NodefsAvailable,
            "nodefs.inodesFree" => Signal::NodefsInodesFree,
            "imagefs.available" => Signal::ImagefsAvailable,
            "imagefs.inodesFree" => Signal::ImagefsInodesFree,
            "pid.available" => Signal::PidAvailable,
            _ => return None,
        })
    }

    /// The signal as the flags name it.
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsAvailable => "imagefs.available",
            Signal::ImagefsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// The resource named in an eviction message.
    pub(super) fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodefsAvailable | Signal::ImagefsAvailable => "ephemeral-storage",
            Signal::NodefsInodesFree | Signal::ImagefsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }
}

/// A level: an absolute quantity or a share of the capacity.
#[derive(Debug, Clone, PartialEq)]
pub enum Level {
    Quantity(u64, String),
    Percent(f64),
}

/// One threshold: `signal<level`; a soft one is acted on only once it has held for its grace
/// period.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub level: Level,
    /// None: hard.
    pub grace: Option<Duration>,
    /// `--eviction-minimum-reclaim`: once met, the threshold holds until this much more than
    /// its level is available again.
    pub min_reclaim: Option<Level>,
}

impl Threshold {
    /// The threshold in bytes (or pids) on a resource of `capacity`.
    pub fn limit(&self, capacity: u64) -> u64 {
        match &self.level {
            Level::Quantity(q, _) => *q,
            Level::Percent(p) => (capacity as f64 * p / 100.0) as u64,
        }
    }

    /// The level plus the minimum reclaim, which resolves a met threshold.
    pub(super) fn resolved_at(&self, capacity: u64) -> u64 {
        let extra = match &self.min_reclaim {
            None => 0,
            Some(Level::Quantity(q, _)) => *q,
            Some(Level::Percent(p)) => (capacity as f64 * p / 100.0) as u64,
        };
        self.limit(capacity).saturating_add(extra)
    }

    pub(super) fn shown(&self) -> String {
        match &self.level {
            Level::Quantity(_, text) => text.clone(),
            Level::Percent(p) => format!("{p}%"),
        }
    }
}

/// Parses `--eviction-hard` (`signal<quantity` or `signal<percent%`, comma-separated).
pub fn parse(spec: &str) -> Result<Vec<Threshold>, EvictionError> {
    parse_as(spec, "--eviction-hard")
}

/// Parses `--eviction-soft` with `--eviction-soft-grace-period` (`signal=duration`,
/// comma-separated): every soft threshold needs a grace period, and every grace period a
/// threshold, as the upstream kubelet checks.
pub fn parse_soft(spec: &str, graces: &str) -> Result<Vec<Threshold>, EvictionError> {
    const GRACE: &str = "--eviction-soft-grace-period";
    let mut periods = HashMap::new();
    for (signal, value) in per_signal(graces, GRACE, "DURATION")? {
        let d =
            crate::cli::parse_duration(value).map_err(|e| bad(GRACE, format!("{value:?}: {e}")))?;
        periods.insert(signal, d);
    }
    let mut soft = parse_as(spec, "--eviction-soft")?;
    for t in &mut soft {
        let Some(d) = periods.remove(&t.signal) else {
            return Err(bad(
                GRACE,
                format!(
                    "grace period must be specified for the soft eviction threshold {:?}",
                    t.signal.name()
                ),
            ));
        };
        t.grace = Some(d);
    }
    if let Some(s) = periods.keys().next() {
        return Err(bad(
            GRACE,
            format!(
                "grace period specified for {:?}, which has no soft eviction threshold",
                s.name()
            ),
        ));
    }
    Ok(soft)
}

/// Applies `--eviction-minimum-reclaim` (`SIGNAL=QUANTITY` or `SIGNAL=PERCENT%`,
/// comma-separated) to `thresholds`.
pub fn with_min_reclaim(
    mut thresholds: Vec<Threshold>,
    spec: &str,
) -> Result<Vec<Threshold>, EvictionError> {
    const FLAG: &str = "--eviction-minimum-reclaim";
    for (signal, value) in per_signal(spec, FLAG, "QUANTITY")? {
        let level = level(FLAG, value)?;
        for t in thresholds.iter_mut().filter(|t| t.signal == signal) {
            t.min_reclaim = Some(level.clone());
        }
    }
    Ok(thresholds)
}

/// A flag's comma-separated `SIGNAL=VALUE` items, `want` naming what VALUE is.
fn per_signal<'a>(
    spec: &'a str,
    flag: &'static str,
    want: &str,
) -> Result<Vec<(Signal, &'a str)>, EvictionError> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| bad(flag, format!("{item:?}: want SIGNAL={want}")))?;
            let signal = Signal::parse(name.trim())
                .ok_or_else(|| bad(flag, format!("{name:?} is not an eviction signal")))?;
            Ok((signal, value.trim()))
        })
        .collect()
}

fn level(flag: &'static str, value: &str) -> Result<Level, EvictionError> {
    if let Some(p) = value.strip_suffix('%') {
        let p: f64 = p
            .parse()
            .ok()
            .filter(|p| (0.0..=100.0).contains(p))
            .ok_or_else(|| bad(flag, format!("{value:?} is not a percentage")))?;
        return Ok(Level::Percent(p));
    }
    let milli = crate::quantity::milli(value)
        .filter(|m| *m >= 0)
        .ok_or_else(|| bad(flag, format!("{value:?} is not a quantity")))?;
    Ok(Level::Quantity(
        u64::try_from(milli / 1000).unwrap_or(u64::MAX),
        value.to_string(),
    ))
}

fn parse_as(spec: &str, flag: &'static str) -> Result<Vec<Threshold>, EvictionError> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (name, value) = item
                .split_once('<')
                .ok_or_else(|| bad(flag, format!("{item:?}: want SIGNAL<VALUE")))?;
            let signal = Signal::parse(name.trim())
                .ok_or_else(|| bad(flag, format!("{name:?} is not an eviction signal")))?;
            let level = level(flag, value.trim())?;
            Ok(Threshold {
                signal,
                level,
                grace: None,
                min_reclaim: None,
            })
        })
        .collect()
}

/// One signal's observation: what is available of what capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

/// Reads the node's signals; [`System`] from /proc and the filesystems, fakes in tests.
pub trait Probe: Send + Sync {
    fn observe(&self) -> HashMap<Signal, Observation>;
    /// Bytes and inodes a pod's logs and disk-backed emptyDir volumes use (its containers'
    /// writable layers come from the runtime's stats). May take a while: call it off the
    /// async workers.
    fn pod_disk(&self, pod: &Pod) -> (u64, u64);
    /// Bytes each container's logs and each disk-backed emptyDir of the pod use, by name.
    fn local_usage(&self, pod: &Pod) -> (HashMap<String, u64>, HashMap<String, u64>);
    /// Whether images live on a filesystem of their own (not the node's).
    fn dedicated_imagefs(&self) -> bool;
}

/// This machine: /proc/meminfo, statvfs of the data dir (nodefs) and of containerd's root
/// (imagefs), the kernel's pid_max and its count of tasks; pods' files under `pods_dir` and
/// their logs under `log_dir`.
pub struct System {
    pub nodefs: PathBuf,
    pub imagefs: PathBuf,
    pub pods_dir: PathBuf,
    pub log_dir: PathBuf,
}

/// Disk bytes (allocated blocks) and inodes under `path`, symlinks not followed; iterative, so
/// a deep tree cannot exhaust the stack.
fn disk_usage(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0u64, 0u64);
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        total = (total.0 + meta.blocks() * 512, total.1 + 1);
        if meta.is_dir() {
            todo.extend(
                std::fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    total
}

/// The value of `key` (`MemTotal:`, ...) in /proc/meminfo's `text`, in KiB.
pub fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn statvfs(path: &std::path::Path) -> Option<(Observation, Observation)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    Some((
        Observation {
            available: st.f_bavail * st.f_frsize,
            capacity: st.f_blocks * st.f_frsize,
        },
        Observation {
            available: st.f_favail,
            capacity: st.f_files,
        },
    ))
}

impl Probe for System {
    fn observe(&self) -> HashMap<Signal, Observation> {
        let mut out = HashMap::new();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        if let (Some(total), Some(avail)) = (
            meminfo_kib(&meminfo, "MemTotal:"),
            meminfo_kib(&meminfo, "MemAvailable:"),
        ) {
            out.insert(
                Signal::MemoryAvailable,
                Observation {
                    available: avail * 1024,
                    capacity: total * 1024,
                },
            );
        }
        for (path, bytes, inodes) in [
            (
                &self.nodefs,
                Signal::NodefsAvailable,
                Signal::NodefsInodesFree,
            ),
            (
                &self.imagefs,
                Signal::ImagefsAvailable,
                Signal::ImagefsInodesFree,
            ),
        ] {
            if let Some((b, i)) = statvfs(path) {
                out.insert(bytes, b);
                // Filesystems without inode limits (btrfs) report none.
                if i.capacity > 0 {
                    out.insert(inodes, i);
                }
            }
        }
        let max: Option<u64> = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let tasks: Option<u64> = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok());
        if let (Some(max), Some(tasks)) = (max, tasks) {
            out.insert(
                Signal::PidAvailable,
                Observation {
                    available: max.saturating_sub(tasks),
                    capacity: max,
                },
            );
        }
        out
    }

    fn dedicated_imagefs(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        match (dev(&self.nodefs), dev(&self.imagefs)) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        }
    }

    fn local_usage(&self, pod: &Pod) -> (HashMap<String, u64>, HashMap<String, u64>) {
        let uid = pod.uid().unwrap_or_default();
        let logs = self.log_dir.join(format!(
            "{}_{}_{uid}",
            pod.namespace().unwrap_or_default(),
            pod.name_any()
        ));
        let by_container = std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, disk_usage(&e.path()).0)
            })
            .collect();
        let empty = self
            .pods_dir
            .join(&uid)
            .join("volumes")
            .join("kubernetes.io~empty-dir");
        let volumes = super::local::disk_volumes(pod)
            .map(|name| (name.to_string(), disk_usage(&empty.join(name)).0))
            .collect();
        (by_container, volumes)
    }

    fn pod_disk(&self, pod: &Pod) -> (u64, u64) {
        let uid = pod.uid().unwrap_or_default();
        let mut dirs = vec![self.log_dir.join(format!(
            "{}_{}_{uid}",
            pod.namespace().unwrap_or_default(),
            pod.name_any()
        ))];
        let empty = self
            .pods_dir
            .join(&uid)
            .join("volumes")
            .join("kubernetes.io~empty-dir");
        // Memory-backed emptyDirs count as memory, not disk.
        dirs.extend(super::local::disk_volumes(pod).map(|name| empty.join(name)));
        dirs.iter()
            .map(|d| disk_usage(d))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
}

/// The thresholds crossed now, each with its observation.
pub fn crossed(
    thresholds: &[Threshold],
    obs: &HashMap<Signal, Observation>,
) -> Vec<(Threshold, Observation)> {
    thresholds
        .iter()
        .filter_map(|t| {
            let o = obs.get(&t.signal)?;
            (o.available < t.limit(o.capacity)).then(|| (t.clone(), *o))
        })
        .collect()
}

/// Of thresholds that were met, those not yet resolved: less than their level plus their
/// minimum reclaim is available.
pub fn unresolved(
    met: &[Threshold],
    obs: &HashMap<Signal, Observation>,
) -> Vec<(Threshold, Observation)> {
    met.iter()
        .filter_map(|t| {
            let o = obs.get(&t.signal)?;
            (o.available < t.resolved_at(o.capacity)).then(|| (t.clone(), *o))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_HARD: &str = crate::cli::kubelet::DEFAULT_EVICTION_HARD;

    #[test]
    fn thresholds_parse_as_the_kubelet_flag() {
        let t = parse(DEFAULT_HARD).expect("defaults");
        assert_eq!(t.len(), 5);
        assert_eq!(t[0].signal, Signal::MemoryAvailable);
        assert_eq!(t[0].limit(0), 100 * 1024 * 1024);
        assert_eq!(t[1].limit(1000), 100, "10% of the capacity");
        assert!(parse("memory.available>1Gi").is_err());
        assert!(parse("cpu.available<1").is_err());
        assert!(parse("nodefs.available<120%").is_err());
    }

    #[test]
    fn soft_thresholds_need_grace_periods() {
        let t = parse_soft(
            "memory.available<1Gi,nodefs.available<15%",
            "memory.available=1m30s,nodefs.available=2m",
        )
        .expect("soft");
        assert_eq!(t[0].grace, Some(Duration::from_secs(90)));
        assert_eq!(t[1].grace, Some(Duration::from_secs(120)));
        let e = parse_soft("memory.available<1Gi", "").expect_err("no grace");
        assert!(
            e.to_string()
                .starts_with("--eviction-soft-grace-period: grace period must be specified"),
            "{e}"
        );
        assert!(parse_soft("", "memory.available=1m").is_err());
        assert!(parse_soft("", "").expect("none").is_empty());
    }

    #[test]
    fn a_pods_disk_is_its_logs_and_disk_backed_empty_dirs() {
        let tmp = tempfile::tempdir().expect("tmp");
        let sys = System {
            nodefs: tmp.path().into(),
            imagefs: tmp.path().into(),
            pods_dir: tmp.path().join("pods"),
            log_dir: tmp.path().join("logs"),
        };
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [], "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "ram", "emptyDir": {"medium": "Memory"}},
            ]},
        }))
        .expect("pod");
        let vols = tmp.path().join("pods/u1/volumes/kubernetes.io~empty-dir");
        for (dir, size) in [
            (tmp.path().join("logs/ns_p_u1/c"), 64 << 10),
            (vols.join("scratch"), 256 << 10),
            (vols.join("ram"), 1 << 20),
        ] {
            std::fs::create_dir_all(&dir).expect("dir");
            std::fs::write(dir.join("f"), vec![1u8; size]).expect("file");
        }
        assert!(!sys.dedicated_imagefs());
        let (bytes, inodes) = sys.pod_disk(&pod);
        assert!((320 << 10..(1 << 20)).contains(&bytes), "{bytes}");
        // The log dir, its container dir and file; the emptyDir and its file.
        assert_eq!(inodes, 5);
    }

    #[test]
    fn a_met_threshold_holds_until_its_minimum_reclaim_is_available() {
        let t = with_min_reclaim(
            parse("memory.available<100,nodefs.available<10%").expect("hard"),
            "memory.available=50,nodefs.available=5%",
        )
        .expect("reclaim");
        let obs = |mem: u64, disk: u64| {
            HashMap::from([
                (
                    Signal::MemoryAvailable,
                    Observation {
                        available: mem,
                        capacity: 1000,
                    },
                ),
                (
                    Signal::NodefsAvailable,
                    Observation {
                        available: disk,
                        capacity: 1000,
                    },
                ),
            ])
        };
        assert_eq!(crossed(&t, &obs(120, 120)).len(), 0);
        assert_eq!(unresolved(&t, &obs(120, 120)).len(), 2, "120 < 150");
        assert_eq!(unresolved(&t, &obs(150, 150)).len(), 0);
        assert!(with_min_reclaim(t.clone(), "memory.available").is_err());
        assert!(with_min_reclaim(t, "cpu=1").is_err());
    }
}
