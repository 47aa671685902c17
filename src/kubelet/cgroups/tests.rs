//! The manager's policy against a recording fake of the cgroup filesystems.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::fs::{CgroupFs, Layout};
use super::{limits, Manager, Options};
use k8s_openapi::api::core::v1::Pod;

/// Directories and the values written to files; a directory with `busy` in it has processes.
#[derive(Default)]
struct Fake {
    dirs: Mutex<BTreeSet<PathBuf>>,
    files: Mutex<BTreeMap<PathBuf, String>>,
    busy: Mutex<BTreeSet<PathBuf>>,
}

impl CgroupFs for Arc<Fake> {
    fn create(&self, dir: &Path) -> io::Result<()> {
        let mut dirs = self.dirs.lock().expect("lock");
        for a in dir.ancestors() {
            dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn write(&self, file: &Path, value: &str) -> io::Result<()> {
        let parent = file.parent().unwrap_or(Path::new("/"));
        if !self.dirs.lock().expect("lock").contains(parent) {
            return Err(io::ErrorKind::NotFound.into());
        }
        self.files
            .lock()
            .expect("lock")
            .insert(file.to_path_buf(), value.to_string());
        Ok(())
    }

    fn read(&self, file: &Path) -> io::Result<String> {
        self.files
            .lock()
            .expect("lock")
            .get(file)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn remove(&self, dir: &Path) -> io::Result<()> {
        if self.busy.lock().expect("lock").contains(dir) {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        let mut dirs = self.dirs.lock().expect("lock");
        if dirs.iter().any(|d| d.parent() == Some(dir)) {
            return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
        }
        dirs.remove(dir);
        self.files
            .lock()
            .expect("lock")
            .retain(|f, _| f.parent() != Some(dir));
        Ok(())
    }

    fn children(&self, dir: &Path) -> Vec<String> {
        self.dirs
            .lock()
            .expect("lock")
            .iter()
            .filter(|d| d.parent() == Some(dir))
            .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }

    fn exists(&self, dir: &Path) -> bool {
        self.dirs.lock().expect("lock").contains(dir)
    }

    fn kill_all(&self, dir: &Path) -> usize {
        usize::from(self.busy.lock().expect("lock").remove(dir))
    }
}

impl Fake {
    fn get(&self, file: &str) -> Option<String> {
        self.files
            .lock()
            .expect("lock")
            .get(Path::new(file))
            .cloned()
    }

    fn has(&self, dir: &str) -> bool {
        self.dirs.lock().expect("lock").contains(Path::new(dir))
    }
}

fn v1() -> Layout {
    let mut controllers = BTreeMap::new();
    let h = |n: &str| PathBuf::from("/cg").join(n);
    controllers.insert("cpu".to_string(), h("cpu"));
    controllers.insert("memory".to_string(), h("memory"));
    controllers.insert("pids".to_string(), h("pids"));
    controllers.insert("cpuset".to_string(), h("cpuset"));
    Layout::V1 {
        controllers,
        hierarchies: ["cpu", "memory", "pids", "cpuset", "unified"]
            .iter()
            .map(|n| h(n))
            .collect(),
    }
}

fn manager(layout: Layout, root: &str) -> (Manager, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let opts = Options {
        root: root.to_string(),
        pod_max_pids: -1,
    };
    (Manager::new(Box::new(fake.clone()), layout, &opts), fake)
}

fn pod(uid: &str, resources: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "uid": uid},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": resources}]},
    }))
    .expect("pod")
}

#[test]
fn v1_nodes_get_kubepods_with_the_qos_classes_and_pods_under_them() {
    let (m, fs) = manager(v1(), "/");
    fs.create(Path::new("/cg/cpuset")).expect("dir");
    fs.write(Path::new("/cg/cpuset/cpuset.cpus"), "0-1")
        .expect("cpus");
    fs.write(Path::new("/cg/cpuset/cpuset.mems"), "0")
        .expect("mems");
    m.setup(1500, 1 << 30, &BTreeMap::new()).expect("setup");
    assert_eq!(
        fs.get("/cg/cpu/kubepods/cpu.shares").as_deref(),
        Some("1536")
    );
    assert_eq!(
        fs.get("/cg/memory/kubepods/memory.limit_in_bytes")
            .as_deref(),
        Some("1073741824")
    );
    assert_eq!(
        fs.get("/cg/cpu/kubepods/besteffort/cpu.shares").as_deref(),
        Some("2")
    );
    assert_eq!(
        fs.get("/cg/cpu/kubepods/burstable/cpu.shares").as_deref(),
        Some("2")
    );
    assert_eq!(
        fs.get("/cg/cpuset/kubepods/burstable/cpuset.cpus")
            .as_deref(),
        Some("0-1"),
        "cpuset levels take their parent's CPUs"
    );
    assert!(fs.has("/cg/unified/kubepods/besteffort"), "every hierarchy");

    let burstable = pod(
        "b1",
        serde_json::json!({"requests": {"cpu": "250m"}, "limits": {"memory": "64Mi"}}),
    );
    let name = m.ensure_pod(&burstable).expect("pod cgroup");
    assert_eq!(name, "/kubepods/burstable/podb1");
    assert_eq!(
        fs.get("/cg/cpu/kubepods/burstable/podb1/cpu.shares")
            .as_deref(),
        Some("256")
    );
    assert_eq!(
        fs.get("/cg/memory/kubepods/burstable/podb1/memory.limit_in_bytes")
            .as_deref(),
        Some("67108864")
    );
    assert_eq!(
        fs.get("/cg/cpu/kubepods/burstable/podb1/cpu.cfs_quota_us"),
        None
    );
    assert_eq!(
        fs.get("/cg/cpu/kubepods/burstable/cpu.shares").as_deref(),
        Some("256"),
        "the class's shares are its pods' requests"
    );
    let guaranteed = pod(
        "g1",
        serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}}),
    );
    assert_eq!(
        m.ensure_pod(&guaranteed).expect("pod cgroup"),
        "/kubepods/podg1"
    );
    assert_eq!(
        fs.get("/cg/cpu/kubepods/podg1/cpu.cfs_quota_us").as_deref(),
        Some("100000")
    );
    let best = pod("e1", serde_json::json!({}));
    assert_eq!(
        m.ensure_pod(&best).expect("pod cgroup"),
        "/kubepods/besteffort/pode1"
    );

    // The runtime's container cgroups go with the pod's; a busy one stays until it is not.
    fs.create(Path::new("/cg/memory/kubepods/burstable/podb1/abc"))
        .expect("dir");
    fs.busy
        .lock()
        .expect("lock")
        .insert(PathBuf::from("/cg/memory/kubepods/burstable/podb1/abc"));
    assert!(m.remove_pod("b1").is_err());
    fs.busy.lock().expect("lock").clear();
    m.remove_pod("b1").expect("removed");
    assert!(!fs.has("/cg/memory/kubepods/burstable/podb1"));
    assert!(!fs.has("/cg/unified/kubepods/burstable/podb1"));
    assert_eq!(
        fs.get("/cg/cpu/kubepods/burstable/cpu.shares").as_deref(),
        Some("2")
    );

    // Housekeeping: pods this kubelet no longer has lose their cgroups; processes left in
    // one are killed, and it goes on the next sweep.
    fs.busy
        .lock()
        .expect("lock")
        .insert(PathBuf::from("/cg/memory/kubepods/besteffort/pode1"));
    let live = HashSet::from(["g1".to_string()]);
    m.sweep(&live);
    assert!(fs.has("/cg/memory/kubepods/besteffort/pode1"), "busy");
    assert!(fs.busy.lock().expect("lock").is_empty(), "killed");
    m.sweep(&live);
    assert!(fs.has("/cg/cpu/kubepods/podg1"));
    assert!(!fs.has("/cg/cpu/kubepods/besteffort/pode1"));
    assert!(!fs.has("/cg/memory/kubepods/besteffort/pode1"));
    assert!(fs.has("/cg/cpu/kubepods/besteffort"));
}

#[test]
fn v2_nodes_hand_controllers_down_and_spell_limits_as_v2() {
    let layout = Layout::V2 {
        root: PathBuf::from("/cg"),
    };
    let (m, fs) = manager(layout, "/edge");
    fs.create(Path::new("/cg")).expect("dir");
    fs.write(
        Path::new("/cg/cgroup.controllers"),
        "cpuset cpu io memory pids",
    )
    .expect("controllers");
    fs.write(Path::new("/cg/cgroup.subtree_control"), "")
        .expect("subtree");
    m.setup(2000, 0, &BTreeMap::new()).expect("setup");
    // The fake keeps the last write: the last controller the root handed down.
    assert_eq!(
        fs.get("/cg/cgroup.subtree_control").as_deref(),
        Some("+pids")
    );
    assert_eq!(
        fs.get("/cg/edge/kubepods/cpu.weight").as_deref(),
        Some("79")
    );
    assert_eq!(
        fs.get("/cg/edge/kubepods/memory.max"),
        None,
        "no memory given"
    );
    let g = pod(
        "g2",
        serde_json::json!({"limits": {"cpu": "500m", "memory": "32Mi"}}),
    );
    assert_eq!(m.ensure_pod(&g).expect("pod"), "/edge/kubepods/podg2");
    assert_eq!(
        fs.get("/cg/edge/kubepods/podg2/cpu.max").as_deref(),
        Some("50000 100000")
    );
    assert_eq!(
        fs.get("/cg/edge/kubepods/podg2/memory.max").as_deref(),
        Some("33554432")
    );
    m.remove_pod("g2").expect("removed");
    assert!(!fs.has("/cg/edge/kubepods/podg2"));
}

#[test]
fn pod_level_resources_stand_for_the_containers() {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "uid": "u"},
        "spec": {
            "resources": {"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
            "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x",
                "resources": {"requests": {"cpu": "100m"}}}]},
    }))
    .expect("pod");
    let t = limits::pod_totals(&pod);
    assert_eq!(t.cpu_request, 250);
    assert_eq!(t.memory_request, 32 << 20);
    // Declared by the pod, though no container declares them.
    assert_eq!(t.cpu_limit, Some(500));
    assert_eq!(t.memory_limit, Some(64 << 20));
}

#[test]
fn a_pods_memory_usage_is_its_cgroups() {
    let (m, fs) = manager(v1(), "/");
    let p = pod("u1", serde_json::json!({"requests": {"memory": "8Mi"}}));
    let dir = Path::new("/cg/memory/kubepods/burstable/podu1");
    fs.create(dir).expect("dir");
    fs.write(&dir.join("memory.usage_in_bytes"), "4096\n")
        .expect("usage");
    assert_eq!(m.pod_memory_usage(&p).expect("usage"), 4096);
    fs.write(&dir.join("memory.usage_in_bytes"), "x")
        .expect("usage");
    assert!(m.pod_memory_usage(&p).is_err(), "not a number");

    let layout = Layout::V2 {
        root: PathBuf::from("/cg"),
    };
    let (m, fs) = manager(layout, "/");
    let dir = Path::new("/cg/kubepods/burstable/podu1");
    fs.create(dir).expect("dir");
    fs.write(&dir.join("memory.current"), "8192\n")
        .expect("usage");
    assert_eq!(m.pod_memory_usage(&p).expect("usage"), 8192);
}

#[test]
fn huge_pages_are_limited_where_the_hugetlb_controller_is() {
    let sizes = vec![2 << 20, 1 << 30];
    let node = BTreeMap::from([("hugepages-2Mi".to_string(), 64u64 << 20)]);
    let p = pod(
        "h1",
        serde_json::json!({"limits": {"cpu": "100m", "memory": "32Mi", "hugepages-2Mi": "8Mi"}}),
    );
    // A hybrid machine's hugetlb lives in its v2 hierarchy: nothing is written.
    let (m, fs) = manager(v1(), "/");
    let m = m.with_page_sizes(sizes.clone());
    fs.create(Path::new("/cg/cpuset")).expect("dir");
    m.setup(1000, 1 << 30, &node).expect("setup");
    m.ensure_pod(&p).expect("pod");
    assert!(fs
        .files
        .lock()
        .expect("lock")
        .keys()
        .all(|f| !f.to_string_lossy().contains("hugetlb")));

    let mut layout = v1();
    if let Layout::V1 {
        controllers,
        hierarchies,
    } = &mut layout
    {
        controllers.insert("hugetlb".into(), PathBuf::from("/cg/hugetlb"));
        hierarchies.push(PathBuf::from("/cg/hugetlb"));
    }
    let (m, fs) = manager(layout, "/");
    let m = m.with_page_sizes(sizes);
    fs.create(Path::new("/cg/cpuset")).expect("dir");
    m.setup(1000, 1 << 30, &node).expect("setup");
    let at = |f: &str| fs.get(&format!("/cg/hugetlb/kubepods{f}"));
    assert_eq!(
        at("/hugetlb.2MB.limit_in_bytes"),
        Some((64u64 << 20).to_string())
    );
    assert_eq!(at("/hugetlb.1GB.limit_in_bytes").as_deref(), Some("0"));
    m.ensure_pod(&p).expect("pod");
    assert_eq!(
        at("/podh1/hugetlb.2MB.limit_in_bytes"),
        Some((8u64 << 20).to_string())
    );
    assert_eq!(
        at("/podh1/hugetlb.1GB.limit_in_bytes").as_deref(),
        Some("0")
    );
}
