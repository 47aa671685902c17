//! `/stats/summary`, shaped as upstream's Summary API (`stats/v1alpha1`), which metrics
//! collectors such as OpenTelemetry's kubeletstats receiver read: the node's start time, CPU
//! (rate and cumulative), memory (available, usage, working set), network (the host's
//! interfaces from /proc/net/dev, the default route's first), filesystem (the data dir's),
//! the runtime's image filesystem and its process limits; each pod's uid and start time, CPU,
//! memory, ephemeral storage, disk-backed emptyDir volumes, and each container's CPU, memory,
//! writable layer (`rootfs`) and logs. Filesystem figures come from the eviction manager's
//! [`Probe`], so both see the same node.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::{json, Value};

use super::eviction::signals::meminfo_kib;
use super::eviction::{Observation, Probe, Signal};
use crate::resource_metrics::NodeUsage;

/// RFC 3339 of a time in nanoseconds since the Unix epoch.
fn rfc3339(ns: i64) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(ns))
        .ok()
        .map(|t| t.to_string())
}

/// The boot time from /proc/stat's `btime`, as RFC 3339.
fn boot_time(stat: &str) -> Option<String> {
    let secs: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    rfc3339(secs * 1_000_000_000)
}

/// A filesystem's figures, as `FsStats`: bytes, and inodes when the filesystem counts them.
fn fs(time: &str, bytes: Option<&Observation>, inodes: Option<&Observation>) -> Value {
    let mut v = json!({"time": time});
    if let Some(b) = bytes {
        v["availableBytes"] = json!(b.available);
        v["capacityBytes"] = json!(b.capacity);
        v["usedBytes"] = json!(b.capacity.saturating_sub(b.available));
    }
    if let Some(i) = inodes {
        v["inodesFree"] = json!(i.available);
        v["inodes"] = json!(i.capacity);
        v["inodesUsed"] = json!(i.capacity.saturating_sub(i.available));
    }
    v
}

/// The interfaces of /proc/net/dev (loopback and pods' veths left out, as cAdvisor does),
/// with `default` (the default route's interface) first.
fn network(time: &str, dev: &str, default: Option<&str>) -> Value {
    let mut interfaces: Vec<Value> = dev
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" || name.starts_with("veth") {
                return None;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            Some(json!({
                "name": name,
                "rxBytes": f.first()?, "rxErrors": f.get(2)?,
                "txBytes": f.get(8)?, "txErrors": f.get(10)?,
            }))
        })
        .collect();
    interfaces.sort_by_key(|i| i["name"].as_str() != default);
    let mut v = json!({"time": time, "interfaces": interfaces});
    if let Some(first) = v["interfaces"].get(0).cloned() {
        for k in ["name", "rxBytes", "rxErrors", "txBytes", "txErrors"] {
            v[k] = first[k].clone();
        }
    }
    v
}

/// The interface of the default route in /proc/net/route.
fn default_interface(route: &str) -> Option<String> {
    route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000")).then(|| f[0].to_string())
    })
}

/// Bytes each container's logs and each disk-backed emptyDir of a pod use, by name.
type Local = (HashMap<String, u64>, HashMap<String, u64>);

/// How long a pod's measured logs and volumes are reported before they are measured again, as
/// upstream's `--volume-stats-agg-period` (1 min): scrapers that poll often do not walk the
/// disk each time.
pub const LOCAL_USAGE_TTL: Duration = Duration::from_secs(60);

/// Pods' measured logs and volumes, by pod uid, with when they were measured.
#[derive(Default)]
pub struct LocalUsageCache(Mutex<HashMap<String, (Instant, Local)>>);

impl LocalUsageCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Local)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pod's figures, measured by `probe` when none younger than the TTL are kept.
    fn get(&self, probe: &dyn Probe, pod: &Pod) -> Local {
        let uid = pod.uid().unwrap_or_default();
        if let Some((at, local)) = self.lock().get(&uid) {
            if at.elapsed() < LOCAL_USAGE_TTL {
                return local.clone();
            }
        }
        let local = probe.local_usage(pod);
        self.lock().insert(uid, (Instant::now(), local.clone()));
        local
    }

    /// Forgets the pods not in `live` (uids).
    fn retain(&self, live: &HashSet<String>) {
        self.lock().retain(|uid, _| live.contains(uid));
    }
}

/// What the runtime tells of the node beyond its containers' usage.
#[derive(Debug, Default)]
pub struct RuntimeFacts {
    /// Each pod's sandbox process (by pod uid), whose network namespace is the pod's.
    pub sandbox_pids: HashMap<String, u32>,
    /// Bytes and inodes the images take on the image filesystem.
    pub image_fs_used: Option<(u64, u64)>,
}

/// A pod's network: the interfaces of its sandbox's namespace, `eth0` first (the host's,
/// default route first, for a pod on the host's network).
fn pod_network(
    time: &str,
    pid: u32,
    host_network: bool,
    host_default: Option<&str>,
) -> Option<Value> {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let default = if host_network {
        host_default
    } else {
        Some("eth0")
    };
    Some(network(time, &dev, default))
}

/// The summary of `u`, with this node's filesystems from `probe`, the node's `pods` (for
/// their uids and volumes; their logs and emptyDirs are measured, or taken from `cache`, so
/// call this off the async workers) and what the runtime told of them.
pub fn summary(
    u: &NodeUsage,
    probe: &dyn Probe,
    cache: &LocalUsageCache,
    pods: &[Pod],
    facts: &RuntimeFacts,
) -> Value {
    cache.retain(&pods.iter().filter_map(|p| p.uid()).collect());
    let time = k8s_openapi::jiff::Timestamp::try_from(u.timestamp)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let obs = probe.observe();
    let nodefs = fs(
        &time,
        obs.get(&Signal::NodefsAvailable),
        obs.get(&Signal::NodefsInodesFree),
    );
    let mut imagefs = fs(
        &time,
        obs.get(&Signal::ImagefsAvailable),
        obs.get(&Signal::ImagefsInodesFree),
    );
    // The writable layers' figures start from the filesystem's; the image filesystem's own
    // used figures are the images', as the runtime counts them.
    let layers = imagefs.clone();
    if let Some((bytes, inodes)) = facts.image_fs_used {
        imagefs["usedBytes"] = json!(bytes);
        imagefs["inodesUsed"] = json!(inodes);
    }
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let host_default = default_interface(&route);
    let usage = |cpu: u64, cumulative: u64, mem: u64| {
        json!({
            "cpu": {"time": time, "usageNanoCores": cpu, "usageCoreNanoSeconds": cumulative},
            "memory": {"time": time, "workingSetBytes": mem},
        })
    };
    let by_name: HashMap<(String, String), &Pod> = pods
        .iter()
        .map(|p| ((p.namespace().unwrap_or_default(), p.name_any()), p))
        .collect();
    let pod_stats: Vec<Value> = u
        .pods
        .iter()
        .map(|p| {
            let spec_pod = by_name.get(&(p.namespace.clone(), p.name.clone())).copied();
            let uid = spec_pod
                .and_then(|s| s.metadata.uid.clone())
                .unwrap_or_else(|| p.uid.clone());
            let (logs, volumes) = spec_pod.map(|s| cache.get(probe, s)).unwrap_or_default();
            let cpu: u64 = p.containers.iter().map(|c| c.cpu_nanocores).sum();
            let cum: u64 = p.containers.iter().map(|c| c.cpu_usage_ns).sum();
            let mem: u64 = p.containers.iter().map(|c| c.memory_bytes).sum();
            let mut v = usage(cpu, cum, mem);
            v["podRef"] = json!({"name": p.name, "namespace": p.namespace, "uid": uid});
            let host_network = spec_pod
                .and_then(|s| s.spec.as_ref())
                .and_then(|s| s.host_network)
                .unwrap_or(false);
            if let Some(net) = facts
                .sandbox_pids
                .get(&uid)
                .and_then(|pid| pod_network(&time, *pid, host_network, host_default.as_deref()))
            {
                v["network"] = net;
            }
            if let Some(start) = p
                .containers
                .iter()
                .map(|c| c.start_unix_ns)
                .filter(|n| *n > 0)
                .min()
                .and_then(rfc3339)
            {
                v["startTime"] = json!(start);
            }
            v["containers"] = p
                .containers
                .iter()
                .map(|c| {
                    let mut cv = usage(c.cpu_nanocores, c.cpu_usage_ns, c.memory_bytes);
                    cv["name"] = json!(c.name);
                    if let Some(t) = rfc3339(c.start_unix_ns).filter(|_| c.start_unix_ns > 0) {
                        cv["startTime"] = json!(t);
                    }
                    let mut rootfs = layers.clone();
                    rootfs["usedBytes"] = json!(c.rootfs_bytes);
                    rootfs["inodesUsed"] = json!(c.rootfs_inodes);
                    cv["rootfs"] = rootfs;
                    let mut log = nodefs.clone();
                    log["usedBytes"] = json!(logs.get(&c.name).copied().unwrap_or(0));
                    cv["logs"] = log;
                    cv
                })
                .collect();
            let mut names: Vec<&String> = volumes.keys().collect();
            names.sort();
            v["volume"] = names
                .into_iter()
                .map(|name| {
                    let mut vv = nodefs.clone();
                    vv["name"] = json!(name);
                    vv["usedBytes"] = json!(volumes[name]);
                    vv
                })
                .collect();
            let ephemeral: u64 = p.containers.iter().map(|c| c.rootfs_bytes).sum::<u64>()
                + logs.values().sum::<u64>()
                + volumes.values().sum::<u64>();
            let mut eph = nodefs.clone();
            eph["usedBytes"] = json!(ephemeral);
            v["ephemeral-storage"] = eph;
            v
        })
        .collect();

    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mut node = usage(u.cpu_nanocores, u.cpu_usage_ns, u.memory_bytes);
    node["nodeName"] = json!(u.node);
    if let Some(t) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s))
    {
        node["startTime"] = json!(t);
    }
    if let (Some(total), Some(free), Some(avail)) = (
        meminfo_kib(&meminfo, "MemTotal:"),
        meminfo_kib(&meminfo, "MemFree:"),
        meminfo_kib(&meminfo, "MemAvailable:"),
    ) {
        let (total, free, avail) = (total * 1024, free * 1024, avail * 1024);
        node["memory"]["availableBytes"] = json!(avail);
        node["memory"]["usageBytes"] = json!(total.saturating_sub(free));
    }
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    node["network"] = network(&time, &dev, host_default.as_deref());
    node["fs"] = nodefs.clone();
    node["runtime"] = json!({"imageFs": imagefs, "containerFs": imagefs});
    if let Some(pids) = obs.get(&Signal::PidAvailable) {
        node["rlimit"] = json!({
            "time": time,
            "maxpid": pids.capacity,
            "curproc": pids.capacity.saturating_sub(pids.available),
        });
    }
    json!({"node": node, "pods": pod_stats})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts how often pods are measured.
    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl Probe for Counting {
        fn observe(&self) -> HashMap<Signal, Observation> {
            HashMap::new()
        }
        fn pod_disk(&self, _: &Pod) -> (u64, u64) {
            (0, 0)
        }
        fn local_usage(&self, _: &Pod) -> Local {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as u64;
            ([("c".to_string(), n)].into(), HashMap::new())
        }
        fn dedicated_imagefs(&self) -> bool {
            false
        }
    }

    #[test]
    fn pods_are_measured_once_per_period() {
        let probe = Counting::default();
        let cache = LocalUsageCache::default();
        let mut pod = Pod::default();
        pod.metadata.uid = Some("u1".into());
        assert_eq!(cache.get(&probe, &pod).0["c"], 0);
        assert_eq!(cache.get(&probe, &pod).0["c"], 0, "kept");
        cache.retain(&HashSet::new());
        assert_eq!(
            cache.get(&probe, &pod).0["c"],
            1,
            "measured again once forgotten"
        );
    }

    #[test]
    fn proc_files_read_as_cadvisor_does() {
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\n").as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        let route = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     k1s0\t00002A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                     eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\n";
        assert_eq!(default_interface(route).as_deref(), Some("eth0"));
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n\
                   lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n\
                   k1s0: 500 5 1 0 0 0 0 0 700 7 2 0 0 0 0 0\n\
                   eth0: 1000 10 3 0 0 0 0 0 2000 20 4 0 0 0 0 0\n\
                   veth1234: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n";
        let n = network("t", dev, Some("eth0"));
        assert_eq!(n["name"], "eth0");
        assert_eq!(
            (n["rxBytes"].clone(), n["txErrors"].clone()),
            (json!(1000), json!(4))
        );
        let names: Vec<&str> = n["interfaces"]
            .as_array()
            .expect("interfaces")
            .iter()
            .filter_map(|i| i["name"].as_str())
            .collect();
        assert_eq!(names, ["eth0", "k1s0"]);
    }
}
