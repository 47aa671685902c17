//! The kubelet's `/metrics/resource`: the Prometheus text format the upstream kubelet writes
//! (cumulative CPU seconds and working-set bytes for the node, each pod and each container, with
//! the sample's timestamp), and the reading of it that metrics-server does: two scrapes of a
//! node give its CPU rates over the window between their samples.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::{ContainerUsage, NodeUsage};

/// `/metrics/resource` of one sample, metrics sorted by name as a Prometheus registry writes them.
pub fn write(u: &NodeUsage) -> String {
    let ms = u
        .timestamp
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let secs = |ns: u64| ns as f64 / 1e9;
    let mut out = String::from("# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds\n# TYPE container_cpu_usage_seconds_total counter\n");
    for p in &u.pods {
        for c in &p.containers {
            out.push_str(&format!(
                "container_cpu_usage_seconds_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {ms}\n",
                escape(&c.name), escape(&p.namespace), escape(&p.name), secs(c.cpu_usage_ns)
            ));
        }
    }
    out.push_str("# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes\n# TYPE container_memory_working_set_bytes gauge\n");
    for p in &u.pods {
        for c in &p.containers {
            out.push_str(&format!(
                "container_memory_working_set_bytes{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {ms}\n",
                escape(&c.name), escape(&p.namespace), escape(&p.name), c.memory_bytes
            ));
        }
    }
    out.push_str("# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds\n# TYPE container_start_time_seconds gauge\n");
    for p in &u.pods {
        for c in p.containers.iter().filter(|c| c.start_unix_ns > 0) {
            out.push_str(&format!(
                "container_start_time_seconds{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {ms}\n",
                escape(&c.name), escape(&p.namespace), escape(&p.name), c.start_unix_ns as f64 / 1e9
            ));
        }
    }
    out.push_str("# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds\n# TYPE node_cpu_usage_seconds_total counter\n");
    out.push_str(&format!(
        "node_cpu_usage_seconds_total {} {ms}\n",
        secs(u.cpu_usage_ns)
    ));
    out.push_str("# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes\n# TYPE node_memory_working_set_bytes gauge\n");
    out.push_str(&format!(
        "node_memory_working_set_bytes {} {ms}\n",
        u.memory_bytes
    ));
    out.push_str("# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds\n# TYPE pod_cpu_usage_seconds_total counter\n");
    for p in &u.pods {
        let ns: u64 = p.containers.iter().map(|c| c.cpu_usage_ns).sum();
        out.push_str(&format!(
            "pod_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\"}} {} {ms}\n",
            escape(&p.namespace),
            escape(&p.name),
            secs(ns)
        ));
    }
    out.push_str("# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes\n# TYPE pod_memory_working_set_bytes gauge\n");
    for p in &u.pods {
        let bytes: u64 = p.containers.iter().map(|c| c.memory_bytes).sum();
        out.push_str(&format!(
            "pod_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\"}} {bytes} {ms}\n",
            escape(&p.namespace),
            escape(&p.name)
        ));
    }
    out.push_str("# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE resource_scrape_error gauge\nresource_scrape_error 0\n");
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One series' reading: cumulative CPU (ns) with its sample time (ms since the epoch), and the
/// working set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Point {
    pub cpu: Option<(u64, i64)>,
    pub memory_bytes: Option<u64>,
}

/// What one scrape of `/metrics/resource` read: the node's point and each container's, by
/// (namespace, pod, container).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scrape {
    pub node: Point,
    pub containers: BTreeMap<(String, String, String), Point>,
}

/// Reads the metrics a scrape needs from Prometheus text; other series and lines it cannot read
/// are skipped, as metrics-server skips them.
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value, at)) = sample(line) else {
            continue;
        };
        let container = || {
            let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            Some((get("namespace")?, get("pod")?, get("container")?))
        };
        let cpu_ns = || (value >= 0.0).then(|| (value * 1e9).round() as u64);
        let bytes = || (value >= 0.0).then(|| value.round() as u64);
        match name {
            "node_cpu_usage_seconds_total" => {
                scrape.node.cpu = cpu_ns().zip(at);
            }
            "node_memory_working_set_bytes" => scrape.node.memory_bytes = bytes(),
            "container_cpu_usage_seconds_total" => {
                if let Some(key) = container() {
                    scrape.containers.entry(key).or_default().cpu = cpu_ns().zip(at);
                }
            }
            "container_memory_working_set_bytes" => {
                if let Some(key) = container() {
                    scrape.containers.entry(key).or_default().memory_bytes = bytes();
                }
            }
            _ => {}
        }
    }
    scrape
}

type Labels = Vec<(String, String)>;

/// `name{labels} value [timestamp]`.
fn sample(line: &str) -> Option<(&str, Labels, f64, Option<i64>)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = label_set(after)?;
        labels = parsed;
        rest = tail;
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let at = fields.next().and_then(|t| t.parse().ok());
    Some((name, labels, value, at))
}

/// The labels after `{`, and what follows the closing `}`.
fn label_set(mut s: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(tail) = s.strip_prefix('}') {
            return Some((labels, tail));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

/// CPU in nanocores between two cumulative readings, and the window; none when time did not
/// move forward or the counter went back (a restarted container).
fn rate(prev: (u64, i64), cur: (u64, i64)) -> Option<(u64, Duration)> {
    let ms = cur.1.checked_sub(prev.1).filter(|ms| *ms > 0)?;
    let ns = cur.0.checked_sub(prev.0)?;
    let window = Duration::from_millis(u64::try_from(ms).ok()?);
    Some(((ns as f64 / window.as_secs_f64()) as u64, window))
}

/// A node's usage from two scrapes, as metrics-server computes it: CPU as the rate between the
/// samples, memory as the newer working set; containers without both readings are left out.
pub fn usage(node: &str, prev: &Scrape, cur: &Scrape) -> Option<NodeUsage> {
    let (cpu_nanocores, window) = rate(prev.node.cpu?, cur.node.cpu?)?;
    let at = cur.node.cpu?.1;
    let mut containers = Vec::new();
    for ((ns, pod, name), point) in &cur.containers {
        let key = (ns.clone(), pod.clone(), name.clone());
        let Some(before) = prev.containers.get(&key).and_then(|p| p.cpu) else {
            continue;
        };
        let (Some(now), Some(memory)) = (point.cpu, point.memory_bytes) else {
            continue;
        };
        let Some((nanocores, _)) = rate(before, now) else {
            continue;
        };
        containers.push((
            (ns.clone(), pod.clone()),
            ContainerUsage {
                name: name.clone(),
                cpu_nanocores: nanocores,
                memory_bytes: memory,
                cpu_usage_ns: now.0,
                ..Default::default()
            },
        ));
    }
    Some(NodeUsage {
        node: node.to_string(),
        timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(at).ok()?),
        window,
        cpu_nanocores,
        memory_bytes: cur.node.memory_bytes.unwrap_or(0),
        cpu_usage_ns: cur.node.cpu?.0,
        pods: super::group_pods(containers),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_at(secs: u64, node_cpu_ns: u64, c_cpu_ns: u64) -> NodeUsage {
        NodeUsage {
            node: "edge-2".into(),
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            window: Duration::from_secs(10),
            cpu_nanocores: 0,
            memory_bytes: 3 << 30,
            cpu_usage_ns: node_cpu_ns,
            pods: vec![super::super::PodUsage {
                namespace: "default".into(),
                name: "web \"1\"".into(),
                uid: String::new(),
                containers: vec![ContainerUsage {
                    name: "httpd".into(),
                    cpu_nanocores: 0,
                    memory_bytes: 5 << 20,
                    cpu_usage_ns: c_cpu_ns,
                    ..Default::default()
                }],
            }],
        }
    }

    #[test]
    fn two_scrapes_give_rates_over_their_window() {
        let a = parse(&write(&sample_at(1_000, 50_000_000_000, 2_000_000_000)));
        let b = parse(&write(&sample_at(1_010, 55_000_000_000, 2_500_000_000)));
        assert_eq!(a.node.cpu, Some((50_000_000_000, 1_000_000)));
        let key = (
            "default".to_string(),
            "web \"1\"".to_string(),
            "httpd".to_string(),
        );
        assert_eq!(a.containers[&key].memory_bytes, Some(5 << 20));
        let u = usage("edge-2", &a, &b).expect("usage");
        assert_eq!(u.window, Duration::from_secs(10));
        assert_eq!(u.cpu_nanocores, 500_000_000, "5 s of CPU in 10 s");
        assert_eq!(u.memory_bytes, 3 << 30);
        assert_eq!(u.pods[0].containers[0].cpu_nanocores, 50_000_000);
        assert_eq!(u.pods[0].name, "web \"1\"");
        // The same sample twice, or one scrape alone: no rate yet.
        assert!(usage("edge-2", &b, &b).is_none());
        assert!(usage("edge-2", &Scrape::default(), &b).is_none());
        // Start times are written for the containers whose start is known.
        let mut started = sample_at(1_000, 1, 1);
        started.pods[0].containers[0].start_unix_ns = 1_700_000_000_500_000_000;
        let text = write(&started);
        assert!(
            text.contains("container_start_time_seconds{container=\"httpd\",namespace=\"default\",pod=\"web \\\"1\\\"\"} 1700000000.5 1000000\n"),
            "{text}"
        );
        assert!(!write(&sample_at(1_000, 1, 1)).contains("container_start_time_seconds{"));
    }

    #[test]
    fn upstream_text_is_read() {
        let text = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="coredns",namespace="kube-system",pod="coredns-55cb58b774-kzl2q"} 12.730917 1700000000123
container_memory_working_set_bytes{container="coredns",namespace="kube-system",pod="coredns-55cb58b774-kzl2q"} 1.5249408e+07 1700000000123
container_start_time_seconds{container="coredns",namespace="kube-system",pod="coredns-55cb58b774-kzl2q"} 1.6999e+09 1699990000000
node_cpu_usage_seconds_total 2048.5 1700000000456
node_memory_working_set_bytes 1.073741824e+09 1700000000456
resource_scrape_error 0
"#;
        let s = parse(text);
        assert_eq!(s.node.cpu, Some((2_048_500_000_000, 1_700_000_000_456)));
        assert_eq!(s.node.memory_bytes, Some(1 << 30));
        let c = &s.containers[&(
            "kube-system".to_string(),
            "coredns-55cb58b774-kzl2q".to_string(),
            "coredns".to_string(),
        )];
        assert_eq!(c.cpu, Some((12_730_917_000, 1_700_000_000_123)));
        assert_eq!(c.memory_bytes, Some(15_249_408));
        assert_eq!(parse("garbage{\n").containers.len(), 0);
    }
}
