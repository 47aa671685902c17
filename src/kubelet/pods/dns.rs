//! A pod's `/etc/resolv.conf`, as the kubelet's `GetPodDNS` decides it from `dnsPolicy` and
//! `dnsConfig`: `ClusterFirst` points at the cluster DNS (`--cluster-dns`) with the
//! namespace's search path and `ndots:5`, `Default` takes the node's resolver
//! (`--resolv-conf`), `None` only what `dnsConfig` says; `dnsConfig` is merged on top.
//! Without a cluster DNS, `ClusterFirst` falls back to `Default`, as upstream's kubelet does.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::kubelet::cri::api;

/// Upstream's limits on what a resolv.conf may hold.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The node's own resolver settings (its resolv.conf).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostDns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl HostDns {
    /// Parses resolv.conf text (`nameserver`, `search`/`domain`, `options` lines).
    pub fn parse(text: &str) -> HostDns {
        let mut h = HostDns::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => h.servers.extend(words.next().map(str::to_string)),
                Some("search") | Some("domain") => {
                    h.searches = words.map(str::to_string).collect();
                }
                Some("options") => h.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        h
    }

    /// Reads `path`; a missing or unreadable file is an empty resolver, as upstream.
    pub fn read(path: &std::path::Path) -> HostDns {
        match std::fs::read_to_string(path) {
            Ok(t) => HostDns::parse(&t),
            Err(e) => {
                tracing::warn!(path = %path.display(), "reading the node's resolv.conf: {e}");
                HostDns::default()
            }
        }
    }
}

/// The cluster's DNS settings the kubelet was given.
#[derive(Debug, Clone, Default)]
pub struct ClusterDns {
    /// `--cluster-dns`: the cluster DNS service's addresses (empty: none).
    pub servers: Vec<String>,
    /// `--cluster-domain` (cluster.local).
    pub domain: String,
    pub host: HostDns,
}

fn push_unique(list: &mut Vec<String>, v: &str) {
    if !list.iter().any(|x| x == v) {
        list.push(v.to_string());
    }
}

/// The sandbox's DNS configuration for `pod`.
pub fn config(pod: &Pod, cluster: &ClusterDns) -> api::DnsConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let mut policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    if policy == "ClusterFirst" && host_network {
        policy = "Default";
    }
    if matches!(policy, "ClusterFirst" | "ClusterFirstWithHostNet") && cluster.servers.is_empty() {
        tracing::debug!(pod = %pod.name_any(), "no --cluster-dns: the pod gets the node's resolver");
        policy = "Default";
    }
    let mut out = match policy {
        "None" => api::DnsConfig::default(),
        "Default" => api::DnsConfig {
            servers: cluster.host.servers.clone(),
            searches: cluster.host.searches.clone(),
            options: cluster.host.options.clone(),
        },
        _ => {
            let ns = pod.namespace().unwrap_or_default();
            let d = &cluster.domain;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            for s in &cluster.host.searches {
                push_unique(&mut searches, s);
            }
            api::DnsConfig {
                servers: cluster.servers.clone(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
    };
    if let Some(dc) = &spec.dns_config {
        for s in dc.nameservers.iter().flatten() {
            push_unique(&mut out.servers, s);
        }
        for s in dc.searches.iter().flatten() {
            push_unique(&mut out.searches, s);
        }
        for o in dc.options.iter().flatten() {
            let opt = match &o.value {
                Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let name = opt.split(':').next().unwrap_or_default().to_string();
            // A pod's option replaces the one of the same name.
            out.options
                .retain(|x| x.split(':').next().unwrap_or_default() != name);
            out.options.push(opt);
        }
    }
    out.servers.truncate(MAX_NAMESERVERS);
    out.searches.truncate(MAX_SEARCHES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = serde_json::json!([{"name": "c", "image": "i"}]);
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "team"}, "spec": spec,
        }))
        .expect("pod")
    }

    fn cluster(servers: &[&str]) -> ClusterDns {
        ClusterDns {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            domain: "cluster.local".into(),
            host: HostDns::parse(
                "# generated\nnameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch lan corp\noptions edns0 ndots:1\n",
            ),
        }
    }

    #[test]
    fn the_nodes_resolver_is_parsed() {
        let h = cluster(&[]).host;
        assert_eq!(h.servers, ["192.168.1.1", "192.168.1.2"]);
        assert_eq!(h.searches, ["lan", "corp"]);
        assert_eq!(h.options, ["edns0", "ndots:1"]);
    }

    #[test]
    fn cluster_first_points_at_the_cluster_dns() {
        let c = config(&pod(serde_json::json!({})), &cluster(&["10.43.0.10"]));
        assert_eq!(c.servers, ["10.43.0.10"]);
        assert_eq!(
            c.searches,
            [
                "team.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "lan",
                "corp"
            ]
        );
        assert_eq!(c.options, ["ndots:5"]);
        // Host network: the node's resolver, unless ClusterFirstWithHostNet.
        let host = config(
            &pod(serde_json::json!({"hostNetwork": true})),
            &cluster(&["10.43.0.10"]),
        );
        assert_eq!(host.servers, ["192.168.1.1", "192.168.1.2"]);
        let with = config(
            &pod(serde_json::json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            &cluster(&["10.43.0.10"]),
        );
        assert_eq!(with.servers, ["10.43.0.10"]);
        // No cluster DNS: the node's resolver.
        let none = config(&pod(serde_json::json!({})), &cluster(&[]));
        assert_eq!(none.searches, ["lan", "corp"]);
    }

    #[test]
    fn dns_config_is_merged_and_none_takes_only_it() {
        let p = pod(serde_json::json!({
            "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]},
        }));
        let c = config(&p, &cluster(&["10.43.0.10"]));
        assert_eq!(c.servers, ["1.2.3.4"]);
        assert_eq!(c.searches, ["a.example"]);
        assert_eq!(c.options, ["ndots:2", "edns0"]);
        let p = pod(serde_json::json!({
            "dnsConfig": {"nameservers": ["1.2.3.4", "5.6.7.8", "9.9.9.9"],
                "options": [{"name": "ndots", "value": "1"}]},
        }));
        let c = config(&p, &cluster(&["10.43.0.10"]));
        assert_eq!(
            c.servers,
            ["10.43.0.10", "1.2.3.4", "5.6.7.8"],
            "at most three"
        );
        assert_eq!(c.options, ["ndots:1"]);
    }
}
