//! The kubelet API directly, as metrics-server and Prometheus reach it: a ServiceAccount's
//! bearer token is authenticated by TokenReview and authorized by SubjectAccessReview
//! (`nodes/stats`); no credentials is 401, a token without the right is 403. Its read-only
//! views through the API server's nodes/proxy: `/pods`, `/runningpods/`, `/configz`,
//! `/metrics`, `/metrics/cadvisor`.

use std::process::Command;

use super::common::server::{ok, write, Server};
use super::jsonpath;

const SCRAPER: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: scraper, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-stats-reader}
rules:
- {apiGroups: [""], resources: [nodes/stats, nodes/metrics], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: scraper-reads-stats}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-stats-reader}
subjects: [{kind: ServiceAccount, name: scraper, namespace: default}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: nobody, namespace: default}
"#;

/// The HTTP status of GET `url` with `token` (if any), without verifying the kubelet's
/// self-signed certificate.
fn status(url: &str, token: Option<&str>) -> String {
    let mut c = Command::new("curl");
    c.args([
        "-sk",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c.arg(url).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn bearer_tokens(s: &Server, tmp: &std::path::Path) {
    ok(s, &["apply", "-f", &write(tmp, "scraper.yaml", SCRAPER)]);
    let port = jsonpath(
        s,
        "node/edge-1",
        "{.status.daemonEndpoints.kubeletEndpoint.Port}",
    );
    let ip = jsonpath(
        s,
        "node/edge-1",
        "{.status.addresses[?(@.type==\"InternalIP\")].address}",
    );
    let url = format!("https://{ip}:{port}/stats/summary");
    let token = ok(s, &["create", "token", "scraper"]);
    let token = token.trim();
    assert_eq!(status(&url, Some(token)), "200", "{url}");
    let metrics = format!("https://{ip}:{port}/metrics/resource");
    assert_eq!(status(&metrics, Some(token)), "200");
    assert_eq!(status(&url, None), "401");
    assert_eq!(status(&url, Some("not-a-token")), "401");
    let other = ok(s, &["create", "token", "nobody"]);
    assert_eq!(status(&url, Some(other.trim())), "403");
    let cadvisor = format!("https://{ip}:{port}/metrics/cadvisor");
    assert_eq!(status(&cadvisor, Some(token)), "200");
    let logs = format!("https://{ip}:{port}/containerLogs/default/x/c");
    assert_eq!(
        status(&logs, Some(token)),
        "403",
        "nodes/proxy is not granted"
    );
}

/// GET `path` of the kubelet through the API server's nodes/proxy.
pub fn raw(s: &Server, path: &str) -> String {
    ok(
        s,
        &["get", "--raw", &format!("/api/v1/nodes/edge-1/proxy{path}")],
    )
}

/// The read-only views: `/pods`, `/runningpods/`, `/configz`, `/metrics`, `/metrics/cadvisor`.
pub fn views(s: &Server) {
    let pods: serde_json::Value = serde_json::from_str(&raw(s, "/pods")).expect("/pods");
    assert_eq!(pods["kind"], "PodList");
    let items = pods["items"].as_array().expect("items");
    assert!(!items.is_empty());
    assert!(
        items.iter().all(|p| p["spec"]["nodeName"] == "edge-1"),
        "{pods}"
    );
    let running: serde_json::Value =
        serde_json::from_str(&raw(s, "/runningpods/")).expect("/runningpods/");
    let running = running["items"].as_array().expect("items");
    assert!(
        running.iter().any(
            |p| p["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty())
                && p["spec"]["containers"]
                    .as_array()
                    .is_some_and(|c| !c.is_empty())
        ),
        "{running:?}"
    );
    let configz: serde_json::Value = serde_json::from_str(&raw(s, "/configz")).expect("/configz");
    let c = &configz["kubeletconfig"];
    assert_eq!(c["kind"], "KubeletConfiguration");
    assert_eq!(c["maxPods"], 110);
    assert_eq!(c["containerLogMaxFiles"], 3);
    assert_eq!(c["containerLogMaxSize"], "64Ki");
    assert_eq!(c["cgroupDriver"], "cgroupfs");
    assert!(c["evictionHard"]["memory.available"].is_string(), "{c}");
    let metrics = raw(s, "/metrics");
    assert!(
        metrics.contains("kubelet_node_name{node=\"edge-1\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kubelet_running_pods "), "{metrics}");
    assert!(
        metrics.contains("kubelet_running_containers{container_state=\"running\"}"),
        "{metrics}"
    );
    // The kubelet's counters and histograms, under upstream's names.
    for want in [
        "kubelet_started_pods_total ",
        "kubelet_started_containers_total{container_type=\"container\"} ",
        "kubelet_started_containers_total{container_type=\"init_container\"} ",
        "kubelet_pod_start_duration_seconds_bucket{le=\"+Inf\"} ",
        "kubelet_pod_start_duration_seconds_count ",
        "kubelet_runtime_operations_total{operation_type=\"start_container\"} ",
        "kubelet_runtime_operations_duration_seconds_bucket{operation_type=\"run_podsandbox\",le=\"+Inf\"} ",
    ] {
        assert!(metrics.contains(want), "{want} in\n{metrics}");
    }
    assert!(
        !metrics.contains("apiserver_request_total"),
        "only the kubelet's own families"
    );
    let cadvisor = raw(s, "/metrics/cadvisor");
    assert!(
        cadvisor.contains("container_cpu_usage_seconds_total{container=\"\",id=\"/\""),
        "{cadvisor}"
    );
    assert!(
        cadvisor.contains("container_memory_working_set_bytes{container=\""),
        "{cadvisor}"
    );
}
