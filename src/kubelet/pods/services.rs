//! Service environment variables, as the kubelet's `getServiceEnvVarMap` makes them: for every
//! Service with a cluster IP in the pod's namespace (when `enableServiceLinks`, the default)
//! and always for `kubernetes` in `default` (what in-cluster clients read), `NAME_SERVICE_HOST`,
//! `NAME_SERVICE_PORT[_PORTNAME]` and the Docker-link style `NAME_PORT*` variables.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;

/// The API server's own Services, visible to every pod.
const MASTER_SERVICES: &[&str] = &["kubernetes"];

fn var_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

fn cluster_ip(s: &Service) -> Option<&str> {
    s.spec
        .as_ref()?
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// One Service's variables, in upstream's order.
fn of(s: &Service) -> Vec<(String, String)> {
    let Some(ip) = cluster_ip(s) else {
        return Vec::new();
    };
    let ports = s
        .spec
        .as_ref()
        .and_then(|sp| sp.ports.clone())
        .unwrap_or_default();
    let Some(first) = ports.first() else {
        return Vec::new();
    };
    let prefix = var_name(&s.name_any());
    let mut out = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for p in &ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((
                format!("{prefix}_SERVICE_PORT_{}", var_name(n)),
                p.port.to_string(),
            ));
        }
    }
    let host_port = |port: i32| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    for (i, p) in ports.iter().enumerate() {
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let url = format!("{}://{}", proto.to_lowercase(), host_port(p.port));
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), proto.to_lowercase()));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.to_string()));
    }
    out
}

/// The service variables for `pod`, from the Services the kubelet knows, sorted by Service.
pub fn env_vars<'a>(
    pod: &Pod,
    services: impl IntoIterator<Item = &'a Service>,
) -> Vec<(String, String)> {
    let ns = pod.namespace().unwrap_or_default();
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for s in services {
        if cluster_ip(s).is_none() {
            continue;
        }
        let name = s.name_any();
        let s_ns = s.namespace().unwrap_or_default();
        if s_ns == "default" && MASTER_SERVICES.contains(&name.as_str()) {
            chosen.entry(name).or_insert(s);
        } else if s_ns == ns && links {
            chosen.insert(name, s);
        }
    }
    chosen.values().flat_map(|s| of(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports},
        }))
        .expect("service")
    }

    fn pod(ns: &str, links: Option<bool>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": ns},
            "spec": {"enableServiceLinks": links, "containers": [{"name": "c"}]},
        }))
        .expect("pod")
    }

    #[test]
    fn variables_follow_upstream_names() {
        let services = [
            svc(
                "default",
                "kubernetes",
                "10.43.0.1",
                serde_json::json!([{"name": "https", "port": 443}]),
            ),
            svc(
                "team",
                "my-db",
                "10.43.0.7",
                serde_json::json!([
                {"port": 5432}, {"name": "metrics", "port": 9187, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}]),
            ),
            svc(
                "team",
                "headless",
                "None",
                serde_json::json!([{"port": 80}]),
            ),
            svc(
                "other",
                "elsewhere",
                "10.43.0.9",
                serde_json::json!([{"port": 80}]),
            ),
        ];
        let vars: BTreeMap<String, String> = env_vars(&pod("team", None), &services)
            .into_iter()
            .collect();
        assert_eq!(vars["KUBERNETES_SERVICE_HOST"], "10.43.0.1");
        assert_eq!(vars["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(vars["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(vars["KUBERNETES_PORT"], "tcp://10.43.0.1:443");
        assert_eq!(vars["KUBERNETES_PORT_443_TCP_ADDR"], "10.43.0.1");
        assert_eq!(vars["MY_DB_SERVICE_HOST"], "10.43.0.7");
        assert_eq!(vars["MY_DB_SERVICE_PORT"], "5432");
        assert_eq!(vars["MY_DB_SERVICE_PORT_METRICS"], "9187");
        assert_eq!(vars["MY_DB_PORT_53_UDP"], "udp://10.43.0.7:53");
        assert_eq!(vars["MY_DB_PORT_53_UDP_PROTO"], "udp");
        assert_eq!(vars["MY_DB_PORT_5432_TCP_PORT"], "5432");
        assert!(!vars
            .keys()
            .any(|k| k.starts_with("HEADLESS") || k.starts_with("ELSEWHERE")));
        // Without service links only the API server's variables remain.
        let vars = env_vars(&pod("team", Some(false)), &services);
        assert!(
            vars.iter().all(|(k, _)| k.starts_with("KUBERNETES_")),
            "{vars:?}"
        );
        assert!(!vars.is_empty());
    }
}
