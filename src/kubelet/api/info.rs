//! The kubelet API's read-only views, as the upstream kubelet serves them: `/pods` (the pods
//! bound to this node, a v1 PodList), `/runningpods/` (the pods the runtime runs, as the
//! runtime knows them), `/configz` (the effective KubeletConfiguration under `kubeletconfig`),
//! `/metrics` (the kubelet's own gauges, counters and histograms, [`crate::kubelet::metrics`]),
//! `/metrics/probes` (each probe's results) and `/metrics/cadvisor` (per-container usage under
//! cAdvisor's names, which Prometheus dashboards read).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::ApiState;
use crate::kubelet::cri::{api, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};
use crate::supervisor::KubeletConfig;

/// A duration as Go's `metav1.Duration` prints it (`0s`, `20s`, `5m0s`, `2h0m0s`).
fn go_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

/// `memory.available<100Mi,nodefs.available<10%` as KubeletConfiguration's map.
fn thresholds(spec: &str, op: char) -> BTreeMap<String, String> {
    spec.split(',')
        .filter_map(|t| t.split_once(op))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The effective KubeletConfiguration (kubelet.config.k8s.io/v1beta1) of `cfg`.
pub fn kubelet_configuration(cfg: &KubeletConfig, port: u16) -> Value {
    let reserved: BTreeMap<String, String> = cfg
        .reserved
        .iter()
        .map(|(k, v)| {
            let q = if k == "cpu" {
                format!("{v}m")
            } else {
                crate::kubelet::node::binary(*v)
            };
            (k.clone(), q)
        })
        .collect();
    let (soft, soft_grace, max_grace) = &cfg.eviction_soft;
    let (gc_high, gc_low, gc_age) = cfg.image_gc;
    let endpoint = cfg.runtime_endpoint.as_ref().map_or_else(
        || {
            format!(
                "unix://{}",
                cfg.data_dir
                    .join("agent/containerd/containerd.sock")
                    .display()
            )
        },
        |p| format!("unix://{}", p.display()),
    );
    let mut config = json!({
        "kind": "KubeletConfiguration",
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "enableServer": true,
        "staticPodPath": "",
        "syncFrequency": "1m0s",
        "fileCheckFrequency": "20s",
        "httpCheckFrequency": "20s",
        "address": "0.0.0.0",
        "authentication": {
            "x509": {},
            "webhook": {"enabled": true, "cacheTTL": "2m0s"},
            "anonymous": {"enabled": false},
        },
        "authorization": {"mode": "Webhook", "webhook": {"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"}},
        "registryPullQPS": 5,
        "registryBurst": 10,
        "eventRecordQPS": 50,
        "eventBurst": 100,
        "enableDebuggingHandlers": true,
        "healthzPort": 0,
        "nodeStatusUpdateFrequency": "10s",
        "nodeLeaseDurationSeconds": 40,
        "volumeStatsAggPeriod": "1m0s",
        "cgroupDriver": "cgroupfs",
        "cpuManagerPolicy": "none",
        "memoryManagerPolicy": "None",
        "topologyManagerPolicy": "none",
        "runtimeRequestTimeout": "2m0s",
        "hairpinMode": "promiscuous-bridge",
        "serializeImagePulls": true,
        "enableControllerAttachDetach": true,
        "makeIPTablesUtilChains": true,
        "failSwapOn": false,
        "enforceNodeAllocatable": ["pods"],
        "shutdownGracePeriod": "0s",
        "shutdownGracePeriodCriticalPods": "0s",
        "localStorageCapacityIsolation": true,
        "seccompDefault": false,
    });
    let set = json!({
        "port": port,
        "clusterDomain": cfg.cluster_domain,
        "clusterDNS": cfg.cluster_dns.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        "resolvConf": cfg.resolv_conf.display().to_string(),
        "nodeStatusReportFrequency": "1m0s",
        "imageMinimumGCAge": go_duration(gc_age),
        "imageGCHighThresholdPercent": gc_high,
        "imageGCLowThresholdPercent": gc_low,
        "cgroupsPerQOS": cfg.cgroups_per_qos,
        "cgroupRoot": cfg.cgroup_root,
        "maxPods": cfg.max_pods,
        "podPidsLimit": cfg.pod_max_pids,
        "evictionHard": thresholds(&cfg.eviction_hard, '<'),
        "evictionSoft": thresholds(soft, '<'),
        "evictionSoftGracePeriod": thresholds(soft_grace, '='),
        "evictionPressureTransitionPeriod": go_duration(cfg.eviction_transition),
        "evictionMaxPodGracePeriod": max_grace,
        "evictionMinimumReclaim": thresholds(&cfg.eviction_minimum_reclaim, '='),
        "containerLogMaxSize": crate::kubelet::node::binary(cfg.container_logs.0),
        "containerLogMaxFiles": cfg.container_logs.1,
        "containerRuntimeEndpoint": endpoint,
        "podLogsDir": cfg.pod_log_dir.display().to_string(),
        "kubeReserved": reserved,
        "allowedUnsafeSysctls": cfg.allowed_unsafe_sysctls,
    });
    if let (Some(c), Some(d)) = (config.as_object_mut(), set.as_object()) {
        c.extend(d.clone());
    }
    json!({ "kubeletconfig": config })
}

fn json_response(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

pub async fn configz(State(state): State<Arc<ApiState>>) -> Response {
    json_response(&state.configz)
}

/// The pods bound to this node, as the API server has them, or the error answer.
pub async fn node_pods(state: &ApiState) -> Result<Vec<Pod>, Response> {
    let api: kube::Api<Pod> = kube::Api::all(state.client.clone());
    let lp = kube::api::ListParams::default().fields(&format!("spec.nodeName={}", state.node));
    api.list(&lp).await.map(|l| l.items).map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("listing this node's pods: {e}"),
        )
            .into_response()
    })
}

/// `/pods`: the pods bound to this node, as the API server has them.
pub async fn pods(State(state): State<Arc<ApiState>>) -> Response {
    match node_pods(&state).await {
        Ok(list) => {
            let items: Vec<Value> = list
                .into_iter()
                .map(|mut p| {
                    p.metadata.managed_fields = None;
                    let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
                    v["kind"] = json!("Pod");
                    v["apiVersion"] = json!("v1");
                    v
                })
                .collect();
            json_response(
                &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}),
            )
        }
        Err(answer) => answer,
    }
}

/// The runtime's sandboxes and containers, or the error answer.
async fn runtime_view(
    state: &ApiState,
) -> Result<(Vec<api::PodSandbox>, Vec<api::Container>), Response> {
    match (
        state.runtime.list_pod_sandboxes(None).await,
        state.runtime.list_containers(None).await,
    ) {
        (Ok(s), Ok(c)) => Ok((s, c)),
        (Err(e), _) | (_, Err(e)) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("listing the runtime's pods and containers: {e}"),
        )
            .into_response()),
    }
}

/// `/runningpods/`: the pods with a ready sandbox, with their running containers.
pub async fn running_pods(State(state): State<Arc<ApiState>>) -> Response {
    let (sandboxes, containers) = match runtime_view(&state).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let items: Vec<Value> = sandboxes
        .iter()
        .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
        .map(|s| {
            let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            let running: Vec<Value> = containers
                .iter()
                .filter(|c| {
                    c.pod_sandbox_id == s.id
                        && c.state == api::ContainerState::ContainerRunning as i32
                })
                .map(|c| {
                    json!({
                        "name": c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
                        "image": c.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
                        "resources": {},
                    })
                })
                .collect();
            json!({
                "metadata": {
                    "name": label(LABEL_POD_NAME),
                    "namespace": label(LABEL_POD_NAMESPACE),
                    "uid": label(LABEL_POD_UID),
                    "creationTimestamp": null,
                },
                "spec": {"containers": running},
                "status": {},
            })
        })
        .collect();
    json_response(&json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}))
}

fn prometheus(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric family's header and its samples (labels already written).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, v) in samples {
        out.push_str(&format!("{name}{{{labels}}} {v}\n"));
    }
}

/// `/metrics`: the kubelet's own gauges, read from the runtime when asked.
pub async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let (sandboxes, containers) = match runtime_view(&state).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let ready = sandboxes
        .iter()
        .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
        .count();
    let mut by_state: BTreeMap<&str, usize> = ["created", "exited", "running", "unknown"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    for c in &containers {
        let s = match api::ContainerState::try_from(c.state) {
            Ok(api::ContainerState::ContainerCreated) => "created",
            Ok(api::ContainerState::ContainerRunning) => "running",
            Ok(api::ContainerState::ContainerExited) => "exited",
            _ => "unknown",
        };
        *by_state.entry(s).or_default() += 1;
    }
    let mut out = String::new();
    family(
        &mut out,
        "kubelet_node_name",
        "gauge",
        "[ALPHA] The node's name. The count is always 1.",
        &[(format!("node=\"{}\"", escape(&state.node)), 1.0)],
    );
    family(
        &mut out,
        "kubelet_running_containers",
        "gauge",
        "[ALPHA] Number of containers currently running",
        &by_state
            .iter()
            .map(|(s, n)| (format!("container_state=\"{s}\""), *n as f64))
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "kubelet_running_pods",
        "gauge",
        "[ALPHA] Number of pods that have a running pod sandbox",
        &[(String::new(), ready as f64)],
    );
    let mut out = out.replace("{}", "");
    out.push_str(&crate::kubelet::metrics::kubelet().render());
    prometheus(out)
}

/// `/metrics/probes`: `prober_probe_total` and `prober_probe_duration_seconds`.
pub async fn probe_metrics() -> Response {
    prometheus(crate::kubelet::metrics::probes().render())
}

/// `/metrics/cadvisor`: each container's and the machine's usage under cAdvisor's names
/// (the machine as `id="/"`), from the latest sample.
pub async fn cadvisor(State(state): State<Arc<ApiState>>) -> Response {
    let Some(u) = state.usage.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no usage sampled yet").into_response();
    };
    prometheus(cadvisor_text(&u))
}

fn cadvisor_text(u: &crate::resource_metrics::NodeUsage) -> String {
    let ms = u
        .timestamp
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let machine =
        "container=\"\",id=\"/\",image=\"\",name=\"\",namespace=\"\",pod=\"\"".to_string();
    let labels = |ns: &str, pod: &str, c: &str| {
        format!(
            "container=\"{}\",image=\"\",name=\"\",namespace=\"{}\",pod=\"{}\"",
            escape(c),
            escape(ns),
            escape(pod)
        )
    };
    let each = |f: &dyn Fn(&crate::resource_metrics::ContainerUsage) -> f64| {
        u.pods
            .iter()
            .flat_map(|p| {
                p.containers
                    .iter()
                    .map(|c| (labels(&p.namespace, &p.name, &c.name), f(c)))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let mut cpu = vec![(machine.clone(), u.cpu_usage_ns as f64 / 1e9)];
    cpu.extend(each(&|c| c.cpu_usage_ns as f64 / 1e9));
    let mut memory = vec![(machine, u.memory_bytes as f64)];
    memory.extend(each(&|c| c.memory_bytes as f64));
    let mut out = String::new();
    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed in seconds.",
        &cpu,
    );
    family(
        &mut out,
        "container_fs_usage_bytes",
        "gauge",
        "Number of bytes that are consumed by the container on this filesystem.",
        &each(&|c| c.rootfs_bytes as f64),
    );
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set in bytes.",
        &memory,
    );
    family(
        &mut out,
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds.",
        &each(&|c| c.start_unix_ns as f64 / 1e9),
    );
    // cAdvisor stamps each sample with when it was taken.
    out.lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("{l}\n")
            } else {
                format!("{l} {ms}\n")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_thresholds_read_as_kubelet_configuration() {
        assert_eq!(go_duration(std::time::Duration::ZERO), "0s");
        assert_eq!(go_duration(std::time::Duration::from_secs(20)), "20s");
        assert_eq!(go_duration(std::time::Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(std::time::Duration::from_secs(7260)), "2h1m0s");
        let t = thresholds("memory.available<100Mi, nodefs.available<10%", '<');
        assert_eq!(t["memory.available"], "100Mi");
        assert_eq!(t["nodefs.available"], "10%");
        assert!(thresholds("", '<').is_empty());
    }

    #[test]
    fn cadvisor_names_the_machine_and_each_container() {
        let u = crate::resource_metrics::NodeUsage {
            node: "n".into(),
            timestamp: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10),
            window: std::time::Duration::from_secs(10),
            cpu_nanocores: 0,
            memory_bytes: 2048,
            cpu_usage_ns: 3_000_000_000,
            pods: vec![crate::resource_metrics::PodUsage {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
                containers: vec![crate::resource_metrics::ContainerUsage {
                    name: "c".into(),
                    cpu_nanocores: 0,
                    memory_bytes: 1024,
                    cpu_usage_ns: 1_500_000_000,
                    rootfs_bytes: 4096,
                    rootfs_inodes: 3,
                    start_unix_ns: 5_000_000_000,
                }],
            }],
        };
        let text = cadvisor_text(&u);
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"\",id=\"/\",image=\"\",name=\"\",namespace=\"\",pod=\"\"} 3 10000\n"
        ), "{text}");
        assert!(text.contains(
            "container_memory_working_set_bytes{container=\"c\",image=\"\",name=\"\",namespace=\"ns\",pod=\"p\"} 1024 10000\n"
        ), "{text}");
        assert!(
            text.contains("container_fs_usage_bytes{container=\"c\""),
            "{text}"
        );
        assert!(text.contains("# TYPE container_start_time_seconds gauge\n"));
    }
}
