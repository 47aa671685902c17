//! The replica calculator, as upstream's: from the pods a target selects and their usage, the
//! replica count that brings the average to the target. Pending and not-yet-ready pods (for CPU,
//! within their first five minutes) do not count towards a scale-up; pods without a sample count
//! as at target (or at 100 % of their request) on a scale-down and as idle on a scale-up, so a
//! missing sample never makes the autoscaler move further; a ratio within the tolerance
//! (0.1) changes nothing. All values are in thousandths (`MilliValue`), as upstream's.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// How long after start a pod's CPU samples may still be start-up noise.
const CPU_INITIALIZATION: Duration = Duration::from_secs(300);
/// How soon after start a pod's first readiness change counts as its initial one.
const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);

/// One pod's usage sample.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub milli: i64,
    pub timestamp: Timestamp,
    pub window: Duration,
}

/// The pods sorted as upstream's `groupPods` sorts them.
#[derive(Default, Debug)]
struct Groups {
    ready: usize,
    unready: HashSet<String>,
    missing: HashSet<String>,
    ignored: HashSet<String>,
}

fn group(pods: &[&Pod], samples: &HashMap<String, Sample>, cpu: bool, now: Timestamp) -> Groups {
    let mut g = Groups::default();
    for pod in pods {
        let name = pod.name_any();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if pod.metadata.deletion_timestamp.is_some()
            || matches!(phase, Some("Failed" | "Succeeded"))
        {
            g.ignored.insert(name);
            continue;
        }
        if matches!(phase, None | Some("Pending")) {
            g.unready.insert(name);
            continue;
        }
        let Some(sample) = samples.get(&name) else {
            g.missing.insert(name);
            continue;
        };
        if cpu {
            let start = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            let unready = match (crate::controllers::pod_state::ready_condition(pod), start) {
                (Some((ready, changed)), Some(start)) => {
                    let changed = changed.unwrap_or(start);
                    if start + CPU_INITIALIZATION > now {
                        !ready || sample.timestamp < changed + sample.window
                    } else {
                        !ready && start + INITIAL_READINESS_DELAY > changed
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.insert(name);
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// How a metric compares usage with its target.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Percent of the pods' requests (`averageUtilization`).
    Utilization(i32),
    /// Per-pod usage in thousandths (`averageValue`).
    AverageValue(i64),
}

/// A proposal: the replicas, the utilization (for Utilization targets) and the average usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub replicas: i32,
    pub utilization: Option<i32>,
    pub average_milli: i64,
}

/// The ratio of usage to target, the utilization, and the average usage, over the sampled pods.
fn ratio(
    samples: &HashMap<String, i64>,
    requests: &HashMap<String, i64>,
    target: Target,
) -> Result<(f64, Option<i32>, i64), String> {
    match target {
        Target::Utilization(pct) => {
            let (mut used, mut requested, mut n) = (0i64, 0i64, 0i64);
            for (pod, v) in samples {
                if let Some(r) = requests.get(pod) {
                    used += v;
                    requested += r;
                    n += 1;
                }
            }
            if requested == 0 {
                return Err("no metrics returned matched known pods".into());
            }
            let utilization = (used * 100 / requested) as i32;
            Ok((
                f64::from(utilization) / f64::from(pct.max(1)),
                Some(utilization),
                used / n.max(1),
            ))
        }
        Target::AverageValue(per_pod) => {
            let total: i64 = samples.values().sum();
            let avg = total / (samples.len().max(1) as i64);
            Ok((avg as f64 / (per_pod.max(1) as f64), None, avg))
        }
    }
}

/// One resource metric as measured now: its target, each pod's sample and (Utilization only)
/// request, whether it is CPU (whose start-up samples are not trusted) and the tolerance.
pub struct Measured<'a> {
    pub target: Target,
    pub samples: &'a HashMap<String, Sample>,
    pub requests: &'a HashMap<String, i64>,
    pub cpu: bool,
    pub tolerance: f64,
}

/// The replicas for one resource metric, as upstream's `GetResourceReplicas` and
/// `GetRawResourceReplicas`.
pub fn replicas(
    current: i32,
    m: &Measured,
    pods: &[&Pod],
    now: Timestamp,
) -> Result<Proposal, String> {
    let (target, samples, requests, cpu, tolerance) =
        (m.target, m.samples, m.requests, m.cpu, m.tolerance);
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let g = group(pods, samples, cpu, now);
    let mut usage: HashMap<String, i64> = samples
        .iter()
        .filter(|(pod, _)| {
            pods.iter().any(|p| p.name_any() == **pod)
                && !g.ignored.contains(*pod)
                && !g.unready.contains(*pod)
        })
        .map(|(pod, s)| (pod.clone(), s.milli))
        .collect();
    if usage.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let (r, utilization, average_milli) = ratio(&usage, requests, target)?;
    let proposal = |replicas| Proposal {
        replicas,
        utilization,
        average_milli,
    };
    let scale_up_with_unready = !g.unready.is_empty() && r > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if (1.0 - r).abs() <= tolerance {
            return Ok(proposal(current));
        }
        return Ok(proposal((r * g.ready as f64).ceil() as i32));
    }
    for pod in &g.missing {
        let fallback = if r < 1.0 {
            match target {
                Target::Utilization(pct) => {
                    requests.get(pod).copied().unwrap_or(0) * i64::from(pct.max(100)) / 100
                }
                Target::AverageValue(v) => v,
            }
        } else {
            0
        };
        usage.insert(pod.clone(), fallback);
    }
    if scale_up_with_unready {
        for pod in &g.unready {
            usage.insert(pod.clone(), 0);
        }
    }
    let (new_r, _, _) = ratio(&usage, requests, target)?;
    if (1.0 - new_r).abs() <= tolerance || (r < 1.0 && new_r > 1.0) || (r > 1.0 && new_r < 1.0) {
        return Ok(proposal(current));
    }
    let replicas = (new_r * usage.len() as f64).ceil() as i32;
    if (new_r < 1.0 && replicas > current) || (new_r > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

/// Each pod's request for `resource` (only `container`'s, when given), in thousandths; an error
/// naming the first container without one, as upstream's.
pub fn requests(
    pods: &[&Pod],
    resource: &str,
    container: Option<&str>,
) -> Result<HashMap<String, i64>, String> {
    let mut out = HashMap::new();
    for pod in pods {
        let mut total = 0i64;
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            if container.is_some_and(|want| want != c.name) {
                continue;
            }
            let request = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| crate::quantity::milli(&q.0));
            match request {
                Some(m) => total += i64::try_from(m).unwrap_or(i64::MAX),
                None => {
                    return Err(format!(
                        "missing request for {resource} in container {} of Pod {}",
                        c.name,
                        pod.name_any()
                    ))
                }
            }
        }
        out.insert(pod.name_any(), total);
    }
    Ok(out)
}

/// A quantity of thousandths as upstream's `NewMilliQuantity(v, DecimalSI)` prints it.
pub fn format_milli(milli: i64) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let mut v = milli / 1000;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while v != 0 && v % 1000 == 0 && suffix < SUFFIXES.len() - 1 {
        v /= 1000;
        suffix += 1;
    }
    format!("{v}{}", SUFFIXES[suffix])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, ready: bool, started_secs_ago: i64, now: Timestamp) -> Pod {
        let start = now - std::time::Duration::from_secs(started_secs_ago as u64);
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {
                "phase": phase, "startTime": start.to_string(),
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                "lastTransitionTime": start.to_string()}],
            },
        }))
        .expect("pod")
    }

    fn sample(milli: i64, now: Timestamp) -> Sample {
        Sample {
            milli,
            timestamp: now,
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn utilization_above_target_scales_up_by_the_ratio() {
        let now = Timestamp::now();
        let pods = [
            pod("a", "Running", true, 600, now),
            pod("b", "Running", true, 600, now),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let samples: HashMap<String, Sample> = [
            ("a".to_string(), sample(80, now)),
            ("b".to_string(), sample(80, now)),
        ]
        .into();
        let req = requests(&refs, "cpu", None).expect("requests");
        let p = replicas(
            2,
            &Measured {
                target: Target::Utilization(50),
                samples: &samples,
                requests: &req,
                cpu: true,
                tolerance: 0.1,
            },
            &refs,
            now,
        )
        .expect("proposal");
        // 80 % against 50 %: ceil(1.6 * 2) = 4.
        assert_eq!(
            p,
            Proposal {
                replicas: 4,
                utilization: Some(80),
                average_milli: 80
            }
        );
        // Within the tolerance nothing moves.
        let p = replicas(
            2,
            &Measured {
                target: Target::Utilization(75),
                samples: &samples,
                requests: &req,
                cpu: true,
                tolerance: 0.1,
            },
            &refs,
            now,
        )
        .expect("proposal");
        assert_eq!(p.replicas, 2);
        // AverageValue: 80m each against 20m: 8.
        let p = replicas(
            2,
            &Measured {
                target: Target::AverageValue(20),
                samples: &samples,
                requests: &req,
                cpu: true,
                tolerance: 0.1,
            },
            &refs,
            now,
        )
        .expect("proposal");
        assert_eq!((p.replicas, p.utilization, p.average_milli), (8, None, 80));
    }

    #[test]
    fn missing_and_unready_pods_damp_the_change() {
        let now = Timestamp::now();
        let pods = [
            pod("a", "Running", true, 600, now),
            pod("b", "Running", true, 600, now),
            pod("c", "Pending", false, 5, now),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let samples: HashMap<String, Sample> = [
            ("a".to_string(), sample(100, now)),
            ("b".to_string(), sample(100, now)),
        ]
        .into();
        let req = requests(&refs, "cpu", None).expect("requests");
        // 100 % against 50 % with a pending pod counted as idle: 200 / 300 = 66 % -> ceil(1.32 * 3).
        let p = replicas(
            3,
            &Measured {
                target: Target::Utilization(50),
                samples: &samples,
                requests: &req,
                cpu: true,
                tolerance: 0.1,
            },
            &refs,
            now,
        )
        .expect("proposal");
        assert_eq!(p.replicas, 4);
        // Scale-down with a running pod missing its sample: it counts as at 100 %.
        let pods = [
            pod("a", "Running", true, 600, now),
            pod("b", "Running", true, 600, now),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let samples: HashMap<String, Sample> = [("a".to_string(), sample(10, now))].into();
        let p = replicas(
            2,
            &Measured {
                target: Target::Utilization(50),
                samples: &samples,
                requests: &req,
                cpu: true,
                tolerance: 0.1,
            },
            &refs,
            now,
        )
        .expect("proposal");
        // (10 + 100) / 200 = 55 % -> 1.1 of target: within tolerance, stays.
        assert_eq!(p.replicas, 2);
    }

    #[test]
    fn a_container_without_a_request_is_named() {
        let now = Timestamp::now();
        let mut p = pod("a", "Running", true, 600, now);
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].resources = None;
        }
        assert_eq!(
            requests(&[&p], "cpu", None).unwrap_err(),
            "missing request for cpu in container c of Pod a"
        );
        assert_eq!(format_milli(80), "80m");
        assert_eq!(format_milli(67_108_864_000), "67108864");
        assert_eq!(format_milli(2_000_000), "2k");
    }
}
