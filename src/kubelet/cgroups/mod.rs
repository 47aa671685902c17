//! The kubelet's cgroups, as upstream's with `--cgroups-per-qos` (the cgroupfs driver): under
//! `--cgroup-root`, `kubepods` holds every pod and is limited to the node's allocatable CPU
//! and memory; `kubepods/burstable` (its CPU shares the sum of its pods' requests) and
//! `kubepods/besteffort` (the least shares) hold those classes' pods, Guaranteed pods sit in
//! `kubepods` itself; each pod gets `pod<UID>` with limits from its containers' ([`limits`]),
//! which the runtime is told as the sandbox's cgroup parent, so every container of the pod
//! lives under it. A pod's cgroup goes when its containers have stopped; ones of pods this
//! kubelet no longer has are swept. cgroup v1 (one mount per controller, hybrids included) and
//! v2 alike, through [`fs::CgroupFs`].

pub mod fs;
pub mod limits;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::kubelet::pods::spec::qos;
use fs::{CgroupFs, Layout};
use limits::Limits;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup filesystem is mounted (pass --cgroups-per-qos=false to run without pod cgroups)"
    )]
    NotMounted,
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CgroupError {
    let context = context.into();
    move |source| CgroupError::Io { context, source }
}

/// v2 controllers enabled down to the pods' cgroups (those the kernel offers).
const V2_CONTROLLERS: [&str; 6] = ["cpuset", "cpu", "io", "memory", "hugetlb", "pids"];

/// The node's settings for its pods' cgroups.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--cgroup-root`: where `kubepods` is made (`/` by default).
    pub root: String,
    /// `--pod-max-pids`: each pod's process limit (negative: none).
    pub pod_max_pids: i64,
}

/// The pods' cgroups on this node.
pub struct Manager {
    fs: Box<dyn CgroupFs>,
    layout: Layout,
    /// `ROOT/kubepods`.
    base: String,
    pod_max_pids: i64,
    /// Burstable pods' CPU requests (millicores) by uid: the burstable cgroup's shares.
    burstable: Mutex<BTreeMap<String, i64>>,
    /// The huge page sizes (bytes) the kernel offers.
    page_sizes: Vec<u64>,
}

impl Manager {
    /// The manager of this machine's cgroups.
    pub fn detect(opts: &Options) -> Result<Manager, CgroupError> {
        let layout = Layout::detect().ok_or(CgroupError::NotMounted)?;
        let sizes = fs::hugepage_sizes(Path::new(fs::HUGEPAGES_DIR));
        Ok(Manager::new(Box::new(fs::System), layout, opts).with_page_sizes(sizes))
    }

    /// The manager, limiting huge pages of these sizes (bytes) where the hugetlb controller
    /// is offered.
    pub fn with_page_sizes(mut self, sizes: Vec<u64>) -> Manager {
        self.page_sizes = sizes;
        self
    }

    pub fn new(fs: Box<dyn CgroupFs>, layout: Layout, opts: &Options) -> Manager {
        let root = opts.root.trim_end_matches('/');
        Manager {
            fs,
            layout,
            base: format!("{root}/kubepods"),
            pod_max_pids: opts.pod_max_pids,
            burstable: Mutex::new(BTreeMap::new()),
            page_sizes: Vec::new(),
        }
    }

    /// Makes `kubepods` (limited to the node's allocatable CPU, in millicores, memory and
    /// huge pages, by resource name) and the QoS classes' cgroups.
    pub fn setup(
        &self,
        cpu_milli: i64,
        memory_bytes: i64,
        hugepages: &BTreeMap<String, u64>,
    ) -> Result<(), CgroupError> {
        let node = Limits {
            cpu_shares: Some(limits::shares(cpu_milli)),
            memory_bytes: (memory_bytes > 0).then_some(memory_bytes),
            hugetlb: self
                .hugetlb_sizes()
                .iter()
                .map(|&size| {
                    let bytes = hugepages.get(&limits::hugepages_resource(size));
                    let bytes = bytes.map_or(0, |b| i64::try_from(*b).unwrap_or(i64::MAX));
                    (limits::page_size_name(size), bytes)
                })
                .collect(),
            ..Default::default()
        };
        self.create(&self.base, &node)?;
        let least = Limits {
            cpu_shares: Some(limits::MIN_SHARES),
            ..Default::default()
        };
        self.create(&format!("{}/besteffort", self.base), &least)?;
        self.create(&format!("{}/burstable", self.base), &least)?;
        self.burstable_shares(&self.tally())
    }

    /// Removes every cgroup under `--cgroup-root` (for tests and benchmarks, after their
    /// containers are gone); the root itself too unless it is `/`.
    /// Processes still there are killed first.
    pub fn remove_all(&self) -> Result<(), CgroupError> {
        let root = self.base.trim_end_matches("/kubepods");
        let name = if root.is_empty() { &self.base } else { root };
        let dirs = self.layout.dirs(name);
        let killed: usize = dirs.iter().map(|d| self.kill_tree(d)).sum();
        // A killed process leaves its cgroup a moment later.
        let tries = if killed > 0 { 20 } else { 1 };
        let mut result = Ok(());
        for _ in 0..tries {
            result = dirs.iter().try_for_each(|d| self.remove_tree(d));
            if result.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        result
    }

    /// The cgroup (`/kubepods/burstable/pod<UID>`) a pod of its QoS class lives in.
    pub fn pod_cgroup(&self, pod: &Pod) -> String {
        let uid = pod.uid().unwrap_or_default();
        match qos(pod) {
            "Guaranteed" => format!("{}/pod{uid}", self.base),
            "Burstable" => format!("{}/burstable/pod{uid}", self.base),
            _ => format!("{}/besteffort/pod{uid}", self.base),
        }
    }

    /// Makes the pod's cgroup with its limits (again, when it is there); its name, the
    /// sandbox's cgroup parent.
    pub fn ensure_pod(&self, pod: &Pod) -> Result<String, CgroupError> {
        let name = self.pod_cgroup(pod);
        let mut l = limits::pod_limits(pod, self.pod_max_pids);
        l.hugetlb = limits::hugetlb(pod, self.hugetlb_sizes());
        self.create(&name, &l)?;
        if qos(pod) == "Burstable" {
            let cpu = limits::pod_totals(pod).cpu_request;
            let uid = pod.uid().unwrap_or_default();
            let mut tally = self.tally();
            if tally.insert(uid, cpu) != Some(cpu) {
                self.burstable_shares(&tally)?;
            }
        }
        Ok(name)
    }

    /// The memory the pod's cgroup uses now (page cache included), as upstream's
    /// `MemoryUsage`: v1's `memory.usage_in_bytes`, v2's `memory.current`.
    pub fn pod_memory_usage(&self, pod: &Pod) -> Result<i64, CgroupError> {
        let name = self.pod_cgroup(pod);
        let rel = name.trim_start_matches('/');
        let file = match &self.layout {
            Layout::V1 { controllers, .. } => controllers
                .get("memory")
                .ok_or(CgroupError::NotMounted)?
                .join(rel)
                .join("memory.usage_in_bytes"),
            Layout::V2 { root } => root.join(rel).join("memory.current"),
        };
        let text = self
            .fs
            .read(&file)
            .map_err(io(format!("reading {}", file.display())))?;
        text.trim().parse().map_err(|_| {
            io(format!("reading {}", file.display()))(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a number: {:?}", text.trim()),
            ))
        })
    }

    /// Removes the cgroup of the pod `uid` (its containers must have stopped); the pod no
    /// longer counts towards its class's shares either way.
    pub fn remove_pod(&self, uid: &str) -> Result<(), CgroupError> {
        {
            let mut tally = self.tally();
            if tally.remove(uid).is_some() {
                self.burstable_shares(&tally)?;
            }
        }
        for dir in self.pod_dirs(uid) {
            self.remove_tree(&dir)?;
        }
        Ok(())
    }

    /// Every directory the pod `uid`'s cgroup may have, whatever its class.
    fn pod_dirs(&self, uid: &str) -> Vec<std::path::PathBuf> {
        ["", "/burstable", "/besteffort"]
            .iter()
            .flat_map(|class| self.layout.dirs(&format!("{}{class}/pod{uid}", self.base)))
            .collect()
    }

    /// Removes the cgroups of pods not in `live` (uids), as the kubelet's housekeeping does.
    pub fn sweep(&self, live: &HashSet<String>) {
        let mut gone = HashSet::new();
        for class in ["", "/burstable", "/besteffort"] {
            let name = format!("{}{class}", self.base);
            for dir in self.layout.dirs(&name) {
                for child in self.fs.children(&dir) {
                    if let Some(uid) = child.strip_prefix("pod") {
                        if !live.contains(uid) {
                            gone.insert(uid.to_string());
                        }
                    }
                }
            }
        }
        for uid in gone {
            match self.remove_pod(&uid) {
                Ok(()) => tracing::info!(uid, "removed the cgroup of a pod that is gone"),
                Err(e) => {
                    // Processes the runtime lost track of: killed, as upstream's pod cgroup
                    // manager does, and the cgroup goes on the next sweep.
                    let mut killed = 0;
                    for dir in self.pod_dirs(&uid) {
                        killed += self.kill_tree(&dir);
                    }
                    tracing::warn!(uid, killed, "removing an orphaned pod cgroup: {e}");
                }
            }
        }
    }

    /// The page sizes whose huge pages are limited: none where the hugetlb controller is
    /// not offered (a hybrid machine keeps it in its v2 hierarchy, which runc does not use).
    fn hugetlb_sizes(&self) -> &[u64] {
        let offered = match &self.layout {
            Layout::V1 { controllers, .. } => controllers.contains_key("hugetlb"),
            Layout::V2 { root } => self
                .fs
                .read(&root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|x| x == "hugetlb")),
        };
        if offered {
            &self.page_sizes
        } else {
            &[]
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i64>> {
        self.burstable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Kills the processes in `dir` and the cgroups under it; how many.
    fn kill_tree(&self, dir: &Path) -> usize {
        if !self.fs.exists(dir) {
            return 0;
        }
        let mut n = self.fs.kill_all(dir);
        for child in self.fs.children(dir) {
            n += self.kill_tree(&dir.join(child));
        }
        n
    }

    /// The burstable cgroup's shares: its pods' CPU requests together (`tally` held, so
    /// writes land in order).
    fn burstable_shares(&self, tally: &BTreeMap<String, i64>) -> Result<(), CgroupError> {
        let total = tally.values().fold(0i64, |a, b| a.saturating_add(*b));
        let l = Limits {
            cpu_shares: Some(limits::shares(total)),
            ..Default::default()
        };
        self.apply(&format!("{}/burstable", self.base), &l)
    }

    /// Makes the cgroup `name` in every hierarchy, then sets `l`.
    fn create(&self, name: &str, l: &Limits) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1 { controllers, .. } => {
                for dir in self.layout.dirs(name) {
                    self.fs
                        .create(&dir)
                        .map_err(io(format!("creating cgroup {}", dir.display())))?;
                }
                if let Some(cpuset) = controllers.get("cpuset") {
                    self.init_cpuset(cpuset, name)?;
                }
            }
            Layout::V2 { root } => {
                // Each level hands its controllers down to the next.
                let mut at = root.clone();
                for part in name.split('/').filter(|p| !p.is_empty()) {
                    self.enable_controllers(&at);
                    at = at.join(part);
                    self.fs
                        .create(&at)
                        .map_err(io(format!("creating cgroup {}", at.display())))?;
                }
            }
        }
        self.apply(name, l)
    }

    fn enable_controllers(&self, dir: &Path) {
        let offered = self
            .fs
            .read(&dir.join("cgroup.controllers"))
            .unwrap_or_default();
        let enabled = self
            .fs
            .read(&dir.join("cgroup.subtree_control"))
            .unwrap_or_default();
        for c in V2_CONTROLLERS {
            let has = |list: &str| list.split_whitespace().any(|x| x == c);
            if has(&offered) && !has(&enabled) {
                if let Err(e) = self
                    .fs
                    .write(&dir.join("cgroup.subtree_control"), &format!("+{c}"))
                {
                    tracing::warn!("enabling the {c} controller under {}: {e}", dir.display());
                }
            }
        }
    }

    /// A new cpuset cgroup has no CPUs or memory nodes: each level takes its parent's.
    fn init_cpuset(&self, hierarchy: &Path, name: &str) -> Result<(), CgroupError> {
        let mut parent = hierarchy.to_path_buf();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            let dir = parent.join(part);
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let mine = self.fs.read(&dir.join(file)).unwrap_or_default();
                if mine.trim().is_empty() {
                    let theirs = self.fs.read(&parent.join(file)).unwrap_or_default();
                    self.fs
                        .write(&dir.join(file), theirs.trim())
                        .map_err(io(format!("setting {}/{file}", dir.display())))?;
                }
            }
            parent = dir;
        }
        Ok(())
    }

    /// Writes `l` into the cgroup `name`.
    fn apply(&self, name: &str, l: &Limits) -> Result<(), CgroupError> {
        let rel = name.trim_start_matches('/');
        let settings = match &self.layout {
            Layout::V1 { controllers, .. } => l
                .v1()
                .into_iter()
                .filter_map(|s| {
                    let h = controllers.get(s.controller)?;
                    Some((h.join(rel).join(&s.file), s.value))
                })
                .collect::<Vec<_>>(),
            Layout::V2 { root } => l
                .v2()
                .into_iter()
                .map(|s| (root.join(rel).join(&s.file), s.value))
                .collect(),
        };
        for (file, value) in settings {
            self.fs
                .write(&file, &value)
                .map_err(io(format!("writing {value} to {}", file.display())))?;
        }
        Ok(())
    }

    /// Removes `dir` and the cgroups under it, deepest first.
    fn remove_tree(&self, dir: &Path) -> Result<(), CgroupError> {
        if !self.fs.exists(dir) {
            return Ok(());
        }
        for child in self.fs.children(dir) {
            self.remove_tree(&dir.join(child))?;
        }
        match self.fs.remove(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("removing cgroup {}", dir.display()))(e))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
