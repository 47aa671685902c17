//! The cgroup filesystems: which hierarchies this machine mounts (cgroup v1 with one mount per
//! controller group, a hybrid with an empty v2 beside them, or the unified v2 alone), read from
//! `/proc/self/mountinfo`, and the narrow [`CgroupFs`] the manager writes through, so its policy
//! is tested with a recording fake and the real files only on a real machine.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The few filesystem calls cgroups need.
pub trait CgroupFs: Send + Sync {
    /// Makes `dir` and its missing parents.
    fn create(&self, dir: &Path) -> io::Result<()>;
    fn write(&self, file: &Path, value: &str) -> io::Result<()>;
    fn read(&self, file: &Path) -> io::Result<String>;
    /// Removes the empty cgroup `dir` (its interface files go with it).
    fn remove(&self, dir: &Path) -> io::Result<()>;
    /// Names of the cgroups directly under `dir` (none when it does not exist).
    fn children(&self, dir: &Path) -> Vec<String>;
    fn exists(&self, dir: &Path) -> bool;
    /// SIGKILLs the processes in the cgroup `dir`; how many there were.
    fn kill_all(&self, dir: &Path) -> usize;
}

/// The kernel's cgroup filesystems.
pub struct System;

impl CgroupFs for System {
    fn create(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn write(&self, file: &Path, value: &str) -> io::Result<()> {
        // Interface files take one write, no truncation or creation.
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .and_then(|mut f| io::Write::write_all(&mut f, value.as_bytes()))
    }

    fn read(&self, file: &Path) -> io::Result<String> {
        std::fs::read_to_string(file)
    }

    fn remove(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir(dir)
    }

    fn children(&self, dir: &Path) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn exists(&self, dir: &Path) -> bool {
        dir.is_dir()
    }

    fn kill_all(&self, dir: &Path) -> usize {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let mut n = 0;
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if pid > 1 {
                // SAFETY: kill(2) on a process of a pod cgroup this kubelet made and no pod
                // it knows of owns.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                n += 1;
            }
        }
        n
    }
}

/// cgroup v1's controllers (the other mount options are flags or names).
const V1_CONTROLLERS: [&str; 13] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "pids",
    "blkio",
    "devices",
    "freezer",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
];

/// This machine's cgroup hierarchies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1: each controller's hierarchy, and every hierarchy mounted (named ones and a
    /// hybrid's empty v2 included), where a pod's cgroup is made and removed.
    V1 {
        controllers: BTreeMap<String, PathBuf>,
        hierarchies: Vec<PathBuf>,
    },
    /// The unified cgroup v2 hierarchy.
    V2 { root: PathBuf },
}

impl Layout {
    /// The hierarchies in `/proc/self/mountinfo`'s text; `None` when no cgroup is mounted.
    pub fn from_mountinfo(text: &str) -> Option<Layout> {
        let mut controllers = BTreeMap::new();
        let mut hierarchies = Vec::new();
        let mut unified = None;
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split_whitespace().collect();
            let right: Vec<&str> = right.split_whitespace().collect();
            // Only hierarchies mounted at their root: a container's view is not ours to shape.
            let (Some(root), Some(point), Some(fstype)) = (left.get(3), left.get(4), right.first())
            else {
                continue;
            };
            if *root != "/" {
                continue;
            }
            let point = PathBuf::from(unescape(point));
            match *fstype {
                "cgroup2" => unified = Some(point),
                "cgroup" => {
                    let options = right.get(2).copied().unwrap_or_default();
                    for opt in options.split(',').filter(|o| V1_CONTROLLERS.contains(o)) {
                        controllers.entry(opt.to_string()).or_insert(point.clone());
                    }
                    if !hierarchies.contains(&point) {
                        hierarchies.push(point);
                    }
                }
                _ => {}
            }
        }
        // v1 only where its cpu and memory controllers are (a v2 machine may keep a named v1
        // hierarchy for old systemd).
        if controllers.contains_key("cpu") && controllers.contains_key("memory") {
            hierarchies.extend(unified);
            return Some(Layout::V1 {
                controllers,
                hierarchies,
            });
        }
        unified.map(|root| Layout::V2 { root })
    }

    /// This machine's layout.
    pub fn detect() -> Option<Layout> {
        Layout::from_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
    }

    /// On a hybrid machine, the controllers its v2 hierarchy offers (crun and youki refuse to
    /// run containers when there are any); empty elsewhere.
    pub fn hybrid_v2_controllers(&self) -> String {
        let Layout::V1 { hierarchies, .. } = self else {
            return String::new();
        };
        hierarchies
            .iter()
            .map(|h| h.join("cgroup.controllers"))
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|c| c.trim().to_string())
            .find(|c| !c.is_empty())
            .unwrap_or_default()
    }

    /// Whether containers' and pods' huge pages can be limited here: v1 with a hugetlb
    /// hierarchy, or v2 offering the hugetlb controller.
    pub fn offers_hugetlb(&self) -> bool {
        match self {
            Layout::V1 { controllers, .. } => controllers.contains_key("hugetlb"),
            Layout::V2 { root } => std::fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|x| x == "hugetlb")),
        }
    }

    /// Every directory a cgroup named `name` (`/kubepods/...`) has.
    pub fn dirs(&self, name: &str) -> Vec<PathBuf> {
        let rel = name.trim_start_matches('/');
        match self {
            Layout::V1 { hierarchies, .. } => hierarchies.iter().map(|h| h.join(rel)).collect(),
            Layout::V2 { root } => vec![root.join(rel)],
        }
    }
}

/// Where the kernel lists its huge page sizes.
pub const HUGEPAGES_DIR: &str = "/sys/kernel/mm/hugepages";

/// The huge page sizes (bytes) the kernel offers, from `dir` ([`HUGEPAGES_DIR`]): one
/// `hugepages-<N>kB` directory each, smallest first.
pub fn hugepage_sizes(dir: &Path) -> Vec<u64> {
    let mut out: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kb = name.strip_prefix("hugepages-")?.strip_suffix("kB")?;
            kb.parse::<u64>().ok().map(|kb| kb * 1024)
        })
        .collect();
    out.sort_unstable();
    out
}

/// mountinfo escapes spaces and the like as `\NNN` (octal).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,name=systemd
31 26 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:13 - cgroup cgroup rw,cpu,cpuacct
32 26 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
33 26 0:31 / /sys/fs/cgroup/pids rw,nosuid shared:15 - cgroup cgroup rw,pids
34 26 0:32 /docker/abc /sys/fs/cgroup/cpuset rw,nosuid shared:16 - cgroup cgroup rw,cpuset
";

    #[test]
    fn a_hybrid_machine_is_v1_with_every_hierarchy() {
        let Some(Layout::V1 {
            controllers,
            hierarchies,
        }) = Layout::from_mountinfo(HYBRID)
        else {
            panic!("v1");
        };
        let at = |c: &str| controllers.get(c).map(|p| p.display().to_string());
        assert_eq!(at("cpu").as_deref(), Some("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(at("cpuacct").as_deref(), Some("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(at("memory").as_deref(), Some("/sys/fs/cgroup/memory"));
        assert_eq!(at("cpuset"), None, "not mounted at its root");
        assert_eq!(at("name=systemd"), None);
        assert_eq!(
            hierarchies,
            ["systemd", "cpu,cpuacct", "memory", "pids", "unified"]
                .iter()
                .map(|h| PathBuf::from("/sys/fs/cgroup").join(h))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_unified_machine_is_v2() {
        let text = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            Layout::from_mountinfo(text),
            Some(Layout::V2 {
                root: PathBuf::from("/sys/fs/cgroup")
            })
        );
        assert_eq!(
            Layout::from_mountinfo("25 30 0:23 / /sys rw - sysfs sysfs rw\n"),
            None
        );
        assert_eq!(unescape("/a\\040b"), "/a b");
        let with_named = format!(
            "{text}31 30 0:27 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        );
        assert!(
            matches!(Layout::from_mountinfo(&with_named), Some(Layout::V2 { .. })),
            "a named v1 hierarchy does not make a v2 machine v1"
        );
    }
}
