//! The kubelet's own metrics under upstream's names, in registries of their own so that in one
//! `k1s server` process the kubelet's `/metrics` and `/metrics/probes` and the API server's
//! `/metrics` each show only their part: pods and containers started (and failing to), pod
//! start duration, evictions by signal, CRI operations (counted, failed and timed per method,
//! [`Metered`] on the gRPC channel), and each probe's results and durations. A deleted pod's
//! probe series go with it.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::metrics::{Desc, Registry};

/// The registry of the kubelet's `/metrics`.
pub fn kubelet() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

/// The registry of `/metrics/probes`.
pub fn probes() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

/// Upstream's buckets for pod start durations, in seconds.
const POD_START_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// Upstream's runtime operation buckets: 5 ms growing 2.5 times, 14 of them.
const RUNTIME_BUCKETS: &[f64] = &[
    0.005,
    0.0125,
    0.03125,
    0.078125,
    0.1953125,
    0.48828125,
    1.220703125,
    3.0517578125,
    7.62939453125,
    19.073486328125,
    47.6837158203125,
    119.20928955078125,
    298.0232238769531,
    745.0580596923828,
];

/// Prometheus's default buckets, which upstream's probe durations use.
const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub const POD_START: Desc = Desc {
    name: "kubelet_pod_start_duration_seconds",
    help: "[ALPHA] Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
    labels: &[],
    buckets: POD_START_BUCKETS,
};
pub const STARTED_PODS: Desc = Desc {
    name: "kubelet_started_pods_total",
    help: "[ALPHA] Cumulative number of pods started",
    labels: &[],
    buckets: &[],
};
pub const STARTED_PODS_ERRORS: Desc = Desc {
    name: "kubelet_started_pods_errors_total",
    help: "[ALPHA] Cumulative number of errors when starting pods",
    labels: &[],
    buckets: &[],
};
pub const STARTED_CONTAINERS: Desc = Desc {
    name: "kubelet_started_containers_total",
    help: "[ALPHA] Cumulative number of containers started",
    labels: &["container_type"],
    buckets: &[],
};
pub const STARTED_CONTAINERS_ERRORS: Desc = Desc {
    name: "kubelet_started_containers_errors_total",
    help: "[ALPHA] Cumulative number of errors when starting containers",
    labels: &["code", "container_type"],
    buckets: &[],
};
pub const EVICTIONS: Desc = Desc {
    name: "kubelet_evictions",
    help: "[ALPHA] Cumulative number of pod evictions by eviction signal",
    labels: &["eviction_signal"],
    buckets: &[],
};
pub const RUNTIME_OPERATIONS: Desc = Desc {
    name: "kubelet_runtime_operations_total",
    help: "[ALPHA] Cumulative number of runtime operations by operation type.",
    labels: &["operation_type"],
    buckets: &[],
};
pub const RUNTIME_ERRORS: Desc = Desc {
    name: "kubelet_runtime_operations_errors_total",
    help: "[ALPHA] Cumulative number of runtime operation errors by operation type.",
    labels: &["operation_type"],
    buckets: &[],
};
pub const RUNTIME_DURATION: Desc = Desc {
    name: "kubelet_runtime_operations_duration_seconds",
    help: "[ALPHA] Duration in seconds of runtime operations. Broken down by operation type.",
    labels: &["operation_type"],
    buckets: RUNTIME_BUCKETS,
};
pub const PROBE_TOTAL: Desc = Desc {
    name: "prober_probe_total",
    help: "[ALPHA] Cumulative number of a liveness, readiness or startup probe for a container by result.",
    labels: &["container", "namespace", "pod", "pod_uid", "probe_type", "result"],
    buckets: &[],
};
pub const PROBE_DURATION: Desc = Desc {
    name: "prober_probe_duration_seconds",
    help: "[ALPHA] Duration in seconds for a probe response.",
    labels: &["container", "namespace", "pod", "probe_type"],
    buckets: DEFAULT_BUCKETS,
};

/// Whose probe ran: (namespace, pod, pod uid, container).
pub struct ProbeOf<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub uid: &'a str,
    pub container: &'a str,
}

/// Records one probe's outcome (`probe_type` "Liveness", "Readiness" or "Startup").
pub fn probed(of: &ProbeOf<'_>, probe_type: &str, ok: bool, took: std::time::Duration) {
    let result = if ok { "successful" } else { "failed" };
    probes().inc(
        &PROBE_TOTAL,
        &[
            of.container,
            of.namespace,
            of.pod,
            of.uid,
            probe_type,
            result,
        ],
        1.0,
    );
    probes().observe(
        &PROBE_DURATION,
        &[of.container, of.namespace, of.pod, probe_type],
        took.as_secs_f64(),
    );
}

/// What upstream calls a container of `pod` named `name` in its started-containers counts.
pub fn container_type(pod: &k8s_openapi::api::core::v1::Pod, name: &str) -> &'static str {
    let spec = pod.spec.as_ref();
    if spec
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|v| v.iter().any(|c| c.name == name))
    {
        "init_container"
    } else if spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .is_some_and(|v| v.iter().any(|c| c.name == name))
    {
        "ephemeral_container"
    } else {
        "container"
    }
}

/// Counts a container start (and its failure, by the runtime's gRPC code).
pub fn container_started(
    pod: &k8s_openapi::api::core::v1::Pod,
    name: &str,
    failure: Option<&crate::kubelet::cri::RuntimeError>,
) {
    let kind = container_type(pod, name);
    match failure {
        None => kubelet().inc(&STARTED_CONTAINERS, &[kind], 1.0),
        Some(e) => {
            let code = match e {
                crate::kubelet::cri::RuntimeError::Status { code, .. } => format!("{code:?}"),
                _ => "Unknown".into(),
            };
            kubelet().inc(&STARTED_CONTAINERS_ERRORS, &[&code, kind], 1.0)
        }
    }
}

/// Drops a deleted pod's probe series (its durations found by the namespace and name its
/// counts carried).
pub fn forget_pod(uid: &str) {
    let dropped = probes().forget(&PROBE_TOTAL, |v| v.get(3).is_some_and(|u| u == uid));
    for v in dropped {
        probes().forget(&PROBE_DURATION, |d| d.get(1..3) == v.get(1..3));
    }
}

/// A CRI method's operation type, as upstream's instrumented services name them:
/// `/runtime.v1.RuntimeService/StartContainer` is `start_container`, `RunPodSandbox` is
/// `run_podsandbox`, `UpdateContainerResources` is `update_container`.
fn operation(path: &str) -> String {
    let snake = snake_case(path.rsplit('/').next().unwrap_or(path));
    match snake.as_str() {
        "update_container_resources" => "update_container".into(),
        "update_pod_sandbox_resources" => snake,
        _ => snake.replace("pod_sandbox", "podsandbox"),
    }
}

fn snake_case(method: &str) -> String {
    let mut out = String::new();
    for (i, ch) in method.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// A tower layer over the CRI gRPC channel that counts, times and tallies the errors of each
/// method (an error: a transport failure or a non-zero `grpc-status` in the response headers,
/// where runtimes put a call's failure).
#[derive(Clone)]
pub struct Metered<S>(pub S);

impl<S, B, R> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let op = operation(req.uri().path());
        let started = Instant::now();
        let fut = self.0.call(req);
        Box::pin(async move {
            let out = fut.await;
            let failed = match &out {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .is_some_and(|s| s.as_bytes() != b"0"),
                Err(_) => true,
            };
            let r = kubelet();
            r.inc(&RUNTIME_OPERATIONS, &[&op], 1.0);
            r.observe(&RUNTIME_DURATION, &[&op], started.elapsed().as_secs_f64());
            if failed {
                r.inc(&RUNTIME_ERRORS, &[&op], 1.0);
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_as_upstream() {
        assert_eq!(
            operation("/runtime.v1.RuntimeService/StartContainer"),
            "start_container"
        );
        assert_eq!(
            operation("/runtime.v1.ImageService/PullImage"),
            "pull_image"
        );
        assert_eq!(operation("/runtime.v1.RuntimeService/Version"), "version");
        assert_eq!(
            operation("/runtime.v1.RuntimeService/RunPodSandbox"),
            "run_podsandbox"
        );
        assert_eq!(
            operation("/runtime.v1.RuntimeService/ListPodSandbox"),
            "list_podsandbox"
        );
        assert_eq!(
            operation("/runtime.v1.RuntimeService/UpdateContainerResources"),
            "update_container"
        );
    }

    #[test]
    fn a_deleted_pods_probe_series_go() {
        let of = ProbeOf {
            namespace: "ns-metrics-test",
            pod: "p",
            uid: "uid-metrics-test",
            container: "c",
        };
        probed(&of, "Readiness", true, std::time::Duration::from_millis(3));
        probed(&of, "Readiness", false, std::time::Duration::from_millis(3));
        let text = probes().render();
        assert!(
            text.contains("prober_probe_total{container=\"c\",namespace=\"ns-metrics-test\",pod=\"p\",pod_uid=\"uid-metrics-test\",probe_type=\"Readiness\",result=\"failed\"} 1"),
            "{text}"
        );
        forget_pod("uid-metrics-test");
        assert!(!probes().render().contains("ns-metrics-test"));
    }
}
