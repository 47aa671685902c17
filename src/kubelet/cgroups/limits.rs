//! What a cgroup is limited to, as upstream's kubelet computes it (`ResourceConfigForPod`,
//! `getCgroupConfig`): a pod's CPU shares from the sum of its requests, its CFS quota and memory
//! limit from the sum of its limits when every container declares one (Guaranteed pods always),
//! init containers counted as the largest of them when they run alone, sidecars alongside the
//! app containers, pod overhead on top; and how those values are spelled in cgroup v1 and v2
//! files.

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};

use crate::kubelet::pods::spec::qos;

/// The CFS period every quota is a share of (upstream's default, 100 ms).
pub const CPU_PERIOD: i64 = 100_000;
/// The least CPU shares (and a BestEffort cgroup's).
pub const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
/// The least quota a limit turns into (1 ms per period).
const MIN_QUOTA: i64 = 1000;

/// Limits for one cgroup; `None` leaves the kernel's default (unlimited) in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpu_shares: Option<i64>,
    /// CFS quota per [`CPU_PERIOD`], in microseconds.
    pub cpu_quota: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
    /// Huge pages by page size as the hugetlb files spell it (`2MB`), in bytes; every size
    /// the node has, 0 for those not asked for (upstream's `maybeSetHugetlb`).
    pub hugetlb: Vec<(String, i64)>,
}

/// Millicores to CPU shares (1 core = 1024), within the kernel's bounds.
pub fn shares(millicpu: i64) -> i64 {
    if millicpu <= 0 {
        return MIN_SHARES;
    }
    (millicpu.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// Millicores to a CFS quota per [`CPU_PERIOD`].
pub fn quota(millicpu: i64) -> i64 {
    if millicpu <= 0 {
        return 0;
    }
    (millicpu.saturating_mul(CPU_PERIOD) / 1000).max(MIN_QUOTA)
}

/// cgroup v1 shares to cgroup v2's cpu.weight, as runc and the kubelet convert them.
pub fn weight(shares: i64) -> i64 {
    if shares <= 0 {
        return 100;
    }
    1 + ((shares.clamp(MIN_SHARES, MAX_SHARES) - 2) * 9999) / 262_142
}

/// A pod's CPU (millicores) and memory (bytes) requests and limits, each `None` when some
/// container does not declare it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodTotals {
    pub cpu_request: i64,
    pub memory_request: i64,
    pub cpu_limit: Option<i64>,
    pub memory_limit: Option<i64>,
}

fn get(r: Option<&ResourceRequirements>, limits: bool, name: &str) -> Option<i64> {
    let r = r?;
    let list = if limits { &r.limits } else { &r.requests };
    let q = list.as_ref()?.get(name)?;
    let milli = crate::quantity::milli(&q.0)?;
    let v = if name == "cpu" { milli } else { milli / 1000 };
    i64::try_from(v).ok()
}

/// A container's request of `name`: its request, else its limit (as the API server defaults).
fn request(c: &Container, name: &str) -> i64 {
    let r = c.resources.as_ref();
    get(r, false, name).or(get(r, true, name)).unwrap_or(0)
}

fn limit(c: &Container, name: &str) -> Option<i64> {
    get(c.resources.as_ref(), true, name).filter(|v| *v > 0)
}

fn sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Upstream's effective pod amount: app containers and sidecars together, or an init
/// container with the sidecars started before it, whichever is more.
fn effective(pod: &Pod, each: impl Fn(&Container) -> Option<i64>) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let mut total = Some(0i64);
    for c in &spec.containers {
        total = total.zip(each(c)).map(|(a, b)| a.saturating_add(b));
    }
    let mut sidecars = Some(0i64);
    let mut init_max = Some(0i64);
    for c in spec.init_containers.iter().flatten() {
        let v = each(c);
        if sidecar(c) {
            sidecars = sidecars.zip(v).map(|(a, b)| a.saturating_add(b));
            total = total.zip(v).map(|(a, b)| a.saturating_add(b));
            // A sidecar runs beside the init containers after it.
            init_max = init_max.zip(sidecars).map(|(a, b)| a.max(b));
        } else {
            init_max = init_max
                .zip(v.zip(sidecars).map(|(a, b)| a.saturating_add(b)))
                .map(|(a, b)| a.max(b));
        }
    }
    total.zip(init_max).map(|(a, b)| a.max(b))
}

fn overhead(pod: &Pod, name: &str) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.overhead.as_ref())
        .and_then(|o| o.get(name))
        .and_then(|q| crate::quantity::milli(&q.0))
        .map_or(0, |m| {
            let v = if name == "cpu" { m } else { m / 1000 };
            i64::try_from(v).unwrap_or(0)
        })
}

/// The pod's requests and limits as its cgroup sees them (overhead included).
pub fn pod_totals(pod: &Pod) -> PodTotals {
    totals(pod, true)
}

/// The pod's requests and limits, its overhead included or not.
pub fn totals(pod: &Pod, with_overhead: bool) -> PodTotals {
    let extra = |name: &str| {
        if with_overhead {
            overhead(pod, name)
        } else {
            0
        }
    };
    // A pod's own requests and limits (PodLevelResources) stand for its containers'.
    let pod_level = pod.spec.as_ref().and_then(|s| s.resources.as_ref());
    let req = |name: &'static str| {
        get(pod_level, false, name)
            .or_else(|| effective(pod, |c| Some(request(c, name))))
            .unwrap_or(0)
            .saturating_add(extra(name))
    };
    let lim = |name: &'static str| {
        get(pod_level, true, name)
            .filter(|v| *v > 0)
            .or_else(|| effective(pod, |c| limit(c, name)))
            .map(|v| v.saturating_add(extra(name)))
    };
    PodTotals {
        cpu_request: req("cpu"),
        memory_request: req("memory"),
        cpu_limit: lim("cpu"),
        memory_limit: lim("memory"),
    }
}

/// The pod cgroup's limits by the pod's QoS class; `pids` is `--pod-max-pids` (negative:
/// none).
pub fn pod_limits(pod: &Pod, pids: i64) -> Limits {
    limits_of(pod, pod_totals(pod), pids)
}

/// [`pod_limits`] from totals of the caller's choosing.
pub fn limits_of(pod: &Pod, t: PodTotals, pids: i64) -> Limits {
    let pids = (pids > 0).then_some(pids);
    match qos(pod) {
        "BestEffort" => Limits {
            cpu_shares: Some(MIN_SHARES),
            pids,
            ..Default::default()
        },
        _ => Limits {
            cpu_shares: Some(shares(t.cpu_request)),
            cpu_quota: t.cpu_limit.map(quota),
            memory_bytes: t.memory_limit,
            pids,
            hugetlb: Vec::new(),
        },
    }
}

/// A huge page size as cgroup files and CRI spell it (`2MB`, `1GB`), as upstream's
/// `HugePageUnitSizeFromByteSize`.
pub fn page_size_name(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let (mut size, mut unit) = (bytes, 0);
    while size > 0 && size % 1024 == 0 && unit < UNITS.len() - 1 {
        size /= 1024;
        unit += 1;
    }
    format!("{size}{}", UNITS[unit])
}

/// The resource name of huge pages of `bytes` (`hugepages-2Mi`).
pub fn hugepages_resource(bytes: u64) -> String {
    format!("hugepages-{}", crate::kubelet::node::binary(bytes))
}

/// The pod's huge page limits for each of the node's page `sizes` (bytes): its own when it
/// sets them (PodLevelResources), else its containers' as their effective sum; 0 for a size
/// the pod does not ask for, so it gets none of those pages.
pub fn hugetlb(pod: &Pod, sizes: &[u64]) -> Vec<(String, i64)> {
    let pod_level = pod.spec.as_ref().and_then(|s| s.resources.as_ref());
    sizes
        .iter()
        .map(|&size| {
            let name = hugepages_resource(size);
            let v = get(pod_level, true, &name)
                .or_else(|| effective(pod, |c| Some(limit(c, &name).unwrap_or(0))))
                .unwrap_or(0);
            (page_size_name(size), v)
        })
        .collect()
}

/// A container's huge page limits for each of the node's page `sizes`, as CRI takes them
/// (upstream's `GetHugepageLimitsFromResources`).
pub fn container_hugetlb(c: &Container, sizes: &[u64]) -> Vec<(String, i64)> {
    sizes
        .iter()
        .map(|&size| {
            let v = limit(c, &hugepages_resource(size)).unwrap_or(0);
            (page_size_name(size), v)
        })
        .collect()
}

/// One cgroup file and what is written to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The v1 controller whose hierarchy holds the file (unused on v2).
    pub controller: &'static str,
    pub file: String,
    pub value: String,
}

fn set(controller: &'static str, file: impl Into<String>, value: impl ToString) -> Setting {
    Setting {
        controller,
        file: file.into(),
        value: value.to_string(),
    }
}

impl Limits {
    /// The files of cgroup v1 that carry these limits.
    pub fn v1(&self) -> Vec<Setting> {
        let mut out = Vec::new();
        if let Some(s) = self.cpu_shares {
            out.push(set("cpu", "cpu.shares", s));
        }
        if let Some(q) = self.cpu_quota {
            out.push(set("cpu", "cpu.cfs_period_us", CPU_PERIOD));
            out.push(set("cpu", "cpu.cfs_quota_us", q));
        }
        if let Some(m) = self.memory_bytes {
            out.push(set("memory", "memory.limit_in_bytes", m));
        }
        if let Some(p) = self.pids {
            out.push(set("pids", "pids.max", p));
        }
        for (size, v) in &self.hugetlb {
            out.push(set("hugetlb", format!("hugetlb.{size}.limit_in_bytes"), v));
        }
        out
    }

    /// The files of cgroup v2 that carry these limits.
    pub fn v2(&self) -> Vec<Setting> {
        let mut out = Vec::new();
        if let Some(s) = self.cpu_shares {
            out.push(set("cpu", "cpu.weight", weight(s)));
        }
        if let Some(q) = self.cpu_quota {
            out.push(set("cpu", "cpu.max", format!("{q} {CPU_PERIOD}")));
        }
        if let Some(m) = self.memory_bytes {
            out.push(set("memory", "memory.max", m));
        }
        if let Some(p) = self.pids {
            out.push(set("pids", "pids.max", p));
        }
        for (size, v) in &self.hugetlb {
            out.push(set("hugetlb", format!("hugetlb.{size}.max"), v));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": spec,
        }))
        .expect("pod")
    }

    fn c(name: &str, resources: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"name": name, "image": "i", "resources": resources})
    }

    #[test]
    fn conversions_match_upstream() {
        assert_eq!(shares(0), 2);
        assert_eq!(shares(1), 2);
        assert_eq!(shares(100), 102);
        assert_eq!(shares(1000), 1024);
        assert_eq!(quota(5), 1000);
        assert_eq!(quota(250), 25_000);
        assert_eq!(weight(2), 1);
        assert_eq!(weight(1024), 39);
        assert_eq!(weight(262_144), 10_000);
    }

    #[test]
    fn guaranteed_pods_are_capped_by_their_limits() {
        let lim = serde_json::json!({"limits": {"cpu": "500m", "memory": "64Mi"}});
        let p = pod(serde_json::json!({
            "containers": [c("a", lim.clone()), c("b", lim)],
            "overhead": {"cpu": "100m", "memory": "1Mi"},
        }));
        let l = pod_limits(&p, -1);
        assert_eq!(l.cpu_shares, Some(shares(1100)));
        assert_eq!(l.cpu_quota, Some(110_000));
        assert_eq!(l.memory_bytes, Some(129 * 1024 * 1024));
        assert_eq!(l.pids, None);
        assert_eq!(
            l.v1(),
            vec![
                set("cpu", "cpu.shares", 1126),
                set("cpu", "cpu.cfs_period_us", 100_000),
                set("cpu", "cpu.cfs_quota_us", 110_000),
                set("memory", "memory.limit_in_bytes", 129 * 1024 * 1024),
            ]
        );
        assert_eq!(l.v2()[1], set("cpu", "cpu.max", "110000 100000"));
    }

    #[test]
    fn burstable_pods_get_a_limit_only_when_every_container_declares_one() {
        let p = pod(serde_json::json!({"containers": [
            c("a", serde_json::json!({"requests": {"cpu": "100m"}, "limits": {"memory": "32Mi"}})),
            c("b", serde_json::json!({"requests": {"cpu": "200m"}, "limits": {"memory": "32Mi"}})),
        ]}));
        let l = pod_limits(&p, 1024);
        assert_eq!(l.cpu_shares, Some(shares(300)));
        assert_eq!(l.cpu_quota, None, "no container limits cpu");
        assert_eq!(l.memory_bytes, Some(64 * 1024 * 1024));
        assert_eq!(l.pids, Some(1024));
    }

    #[test]
    fn init_containers_count_as_the_largest_running_alone_and_sidecars_beside() {
        let p = pod(serde_json::json!({
            "initContainers": [
                c("big-init", serde_json::json!({"requests": {"cpu": "2"}})),
                {"name": "proxy", "image": "i", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "100m"}}},
                c("small-init", serde_json::json!({"requests": {"cpu": "50m"}})),
            ],
            "containers": [c("app", serde_json::json!({"requests": {"cpu": "300m"}}))],
        }));
        let t = pod_totals(&p);
        assert_eq!(t.cpu_request, 2000, "the big init container alone");
        let p = pod(serde_json::json!({
            "initContainers": [
                {"name": "proxy", "image": "i", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "100m"}}},
            ],
            "containers": [c("app", serde_json::json!({"requests": {"cpu": "300m"}}))],
        }));
        assert_eq!(pod_totals(&p).cpu_request, 400, "sidecar beside the app");
    }

    #[test]
    fn huge_pages_are_limited_for_every_size_the_node_has() {
        assert_eq!(page_size_name(2 << 20), "2MB");
        assert_eq!(page_size_name(1 << 30), "1GB");
        assert_eq!(page_size_name(64 << 10), "64KB");
        let sizes = [2 << 20, 1 << 30];
        let huge = serde_json::json!({"limits": {"memory": "64Mi", "hugepages-2Mi": "4Mi"}});
        let p = pod(serde_json::json!({"containers": [
            c("a", huge.clone()),
            c("b", huge),
            c("plain", serde_json::json!({"limits": {"memory": "8Mi"}})),
        ]}));
        let want = vec![("2MB".to_string(), 8 << 20), ("1GB".to_string(), 0)];
        assert_eq!(hugetlb(&p, &sizes), want);
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(
            container_hugetlb(&spec.containers[2], &sizes),
            vec![("2MB".to_string(), 0), ("1GB".to_string(), 0)],
            "none for a container that asks for none"
        );
        let mut l = pod_limits(&p, -1);
        l.hugetlb = want;
        let files: Vec<String> = l.v1().into_iter().map(|s| s.file).collect();
        assert!(files.contains(&"hugetlb.2MB.limit_in_bytes".to_string()));
        assert_eq!(l.v2().last(), Some(&set("hugetlb", "hugetlb.1GB.max", 0)));
        let own = pod(serde_json::json!({
            "resources": {"limits": {"hugepages-2Mi": "16Mi", "memory": "64Mi"}},
            "containers": [c("a", serde_json::json!({}))],
        }));
        assert_eq!(
            hugetlb(&own, &sizes[..1]),
            vec![("2MB".to_string(), 16 << 20)]
        );
    }

    #[test]
    fn best_effort_pods_get_the_least_shares() {
        let p = pod(serde_json::json!({"containers": [c("a", serde_json::json!({}))]}));
        assert_eq!(
            pod_limits(&p, -1),
            Limits {
                cpu_shares: Some(2),
                ..Default::default()
            }
        );
    }
}
