//! metrics-server's part for the kubelets of agents. Kubelets in this process report their
//! usage directly ([`crate::resource_metrics::Sources`]); every other Ready node is scraped on
//! its kubelet's `/metrics/resource` every `--metric-resolution` (15 s, as metrics-server is
//! deployed) through the API server's kubelet client, and two scrapes of a node
//! give its usage over the window between their samples, which `metrics.k8s.io` then serves.
//! A node's `metrics.k8s.io/resource-metrics-path` annotation names another path on its kubelet
//! port, as metrics-server 0.7+ honours: a simulating agent serves its nodes' usage that way.
//! Other simulated nodes are not scraped: their addresses are made up.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use tokio::sync::watch;

use super::kubelet_client::KubeletClient;
use crate::resource_metrics::prometheus::{self, Scrape};
use crate::resource_metrics::{NodeUsage, Source};

/// How long one scrape may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Nodes scraped at once.
const CONCURRENCY: usize = 16;
/// The most a `/metrics/resource` body may hold.
const MAX_BODY: usize = 16 << 20;

/// Why a node could not be scraped.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("{0}")]
    Kubelet(#[from] super::kubelet_client::KubeletClientError),
    #[error("scraping {addr}: HTTP {status}")]
    Status { addr: String, status: u16 },
    #[error("scraping {addr}: reading the body: {message}")]
    Body { addr: String, message: String },
    #[error("scraping {addr}: no answer within {TIMEOUT:?}")]
    Timeout { addr: String },
}

#[derive(Default)]
struct Entry {
    last: Scrape,
    usage: Option<NodeUsage>,
}

/// The scraped nodes' latest usage; a [`Source`] beside the in-process kubelets.
#[derive(Clone, Default)]
pub struct Scraped(Arc<RwLock<HashMap<String, Entry>>>);

impl Source for Scraped {
    fn samples(&self) -> Vec<NodeUsage> {
        let nodes = self.0.read().unwrap_or_else(|p| p.into_inner());
        nodes.values().filter_map(|e| e.usage.clone()).collect()
    }
}

impl Scraped {
    /// Takes a scrape of `node`: its usage is the rate since the last one. A scrape that read
    /// the same sample again keeps the usage there is.
    fn record(&self, node: &str, scrape: Scrape) {
        let mut nodes = self.0.write().unwrap_or_else(|p| p.into_inner());
        let entry = nodes.entry(node.to_string()).or_default();
        if scrape.node.cpu.is_some() && scrape.node.cpu == entry.last.node.cpu {
            return;
        }
        entry.usage = prometheus::usage(node, &entry.last, &scrape);
        entry.last = scrape;
    }

    /// A node that could not be scraped reports nothing until it can again; its last good
    /// scrape stays, so the next one gives a rate at once.
    fn failed(&self, node: &str) {
        let mut nodes = self.0.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = nodes.get_mut(node) {
            e.usage = None;
        }
    }

    /// Forgets the nodes not in `keep`.
    fn retain(&self, keep: &HashSet<&str>) {
        let mut nodes = self.0.write().unwrap_or_else(|p| p.into_inner());
        nodes.retain(|n, _| keep.contains(n.as_str()));
    }
}

/// A node to scrape: its name, its kubelet's host and port, and the path of its metrics.
#[derive(Debug, PartialEq)]
struct Target {
    node: String,
    host: String,
    port: u16,
    path: String,
}

/// Whether a node is worth scraping: not one of this process's own kubelets, Ready, with an
/// address, and, if simulated, served by an agent that says where its metrics are.
fn target(node: &Node, local: &HashSet<String>) -> Option<Target> {
    let name = node.metadata.name.clone()?;
    if local.contains(&name) {
        return None;
    }
    let path = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::resource_metrics::RESOURCE_METRICS_PATH))
        // Only the two shapes kubelets and KWOK-style agents serve: the scraper's client
        // certificate must not be pointed at any other path.
        .filter(|p| {
            p.as_str() == "/metrics/resource"
                || p.as_str() == format!("/metrics/nodes/{name}/metrics/resource")
        })
        .cloned();
    let status = node.status.as_ref()?;
    let simulated = status
        .node_info
        .as_ref()
        .is_some_and(|i| i.container_runtime_version.starts_with("k1s-sim://"));
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if (simulated && path.is_none()) || !ready {
        return None;
    }
    let value = serde_json::to_value(node).ok()?;
    let (host, port) = super::registry::proxy::kubelet_address(&value)?;
    Some(Target {
        node: name,
        host,
        port,
        path: path.unwrap_or_else(|| "/metrics/resource".into()),
    })
}

async fn scrape(kubelets: &KubeletClient, t: &Target) -> Result<Scrape, ScrapeError> {
    let addr = format!("{}:{}{}", t.host, t.port, t.path);
    let read = async {
        let resp = kubelets.get(&t.host, t.port, &t.path).await?;
        if !resp.status().is_success() {
            return Err(ScrapeError::Status {
                addr: addr.clone(),
                status: resp.status().as_u16(),
            });
        }
        let body = axum::body::to_bytes(resp.into_body(), MAX_BODY)
            .await
            .map_err(|e| ScrapeError::Body {
                addr: addr.clone(),
                message: e.to_string(),
            })?;
        Ok(prometheus::parse(&String::from_utf8_lossy(&body)))
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .map_err(|_| ScrapeError::Timeout { addr: addr.clone() })?
}

/// Scrapes until `stop` turns true. `local` names the nodes whose kubelets run in this process.
pub async fn run(
    client: kube::Client,
    kubelets: Arc<KubeletClient>,
    local: HashSet<String>,
    scraped: Scraped,
    resolution: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let nodes: kube::Api<Node> = kube::Api::all(client);
    let mut tick = tokio::time::interval(resolution.max(Duration::from_secs(1)));
    // A node's failure is logged when it starts, not every round.
    let mut failing: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let list = match nodes.list(&Default::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("metrics scraper: listing nodes: {e}");
                continue;
            }
        };
        let targets: Vec<Target> = list
            .items
            .iter()
            .filter_map(|n| target(n, &local))
            .collect();
        scraped.retain(&targets.iter().map(|t| t.node.as_str()).collect());
        let results: Vec<(String, Result<Scrape, ScrapeError>)> = futures::stream::iter(targets)
            .map(|t| {
                let kubelets = kubelets.clone();
                async move {
                    let r = scrape(&kubelets, &t).await;
                    (t.node, r)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (name, result) in results {
            match result {
                Ok(s) => {
                    if failing.remove(&name) {
                        tracing::info!(node = %name, "metrics scraper: the kubelet answers again");
                    }
                    scraped.record(&name, s);
                }
                Err(e) => {
                    if failing.insert(name.clone()) {
                        tracing::warn!(node = %name, "metrics scraper: {e}");
                    }
                    scraped.failed(&name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, runtime: &str, ready: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10260}},
                "conditions": [{"type": "Ready", "status": ready}],
                "nodeInfo": {
                    "containerRuntimeVersion": runtime, "architecture": "amd64", "bootID": "",
                    "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "",
                    "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": ""
                }
            }
        }))
        .expect("node")
    }

    fn at(node: &str, path: &str) -> Option<Target> {
        Some(Target {
            node: node.into(),
            host: "127.0.0.1".into(),
            port: 10260,
            path: path.into(),
        })
    }

    #[test]
    fn only_other_ready_nodes_that_say_where_are_scraped() {
        let local: HashSet<String> = ["edge-1".to_string()].into();
        let agent = node("edge-2", "containerd://1.6.20", "True");
        assert_eq!(target(&agent, &local), at("edge-2", "/metrics/resource"));
        assert_eq!(
            target(&node("edge-1", "containerd://1.6.20", "True"), &local),
            None
        );
        assert_eq!(
            target(&node("edge-3", "containerd://1.6.20", "Unknown"), &local),
            None
        );
        let mut sim = node("sim-1", "k1s-sim://0.1.0", "True");
        assert_eq!(target(&sim, &local), None);
        let path = "/metrics/nodes/sim-1/metrics/resource";
        sim.metadata.annotations = Some(
            [(
                crate::resource_metrics::RESOURCE_METRICS_PATH.to_string(),
                path.to_string(),
            )]
            .into(),
        );
        assert_eq!(target(&sim, &local), at("sim-1", path));
        for other in [
            "/api/v1/secrets",
            "/metrics/nodes/sim-2/metrics/resource",
            "/metrics/resource?x",
        ] {
            sim.metadata.annotations = Some(
                [(
                    crate::resource_metrics::RESOURCE_METRICS_PATH.to_string(),
                    other.to_string(),
                )]
                .into(),
            );
            assert_eq!(target(&sim, &local), None, "{other}");
        }
    }

    #[test]
    fn usage_needs_two_samples() {
        let s = Scraped::default();
        let at = |ms: i64, cpu: u64| Scrape {
            node: prometheus::Point {
                cpu: Some((cpu, ms)),
                memory_bytes: Some(1 << 20),
            },
            containers: Default::default(),
        };
        s.record("edge-2", at(1_000, 1_000_000_000));
        assert!(s.samples().is_empty());
        s.record("edge-2", at(11_000, 6_000_000_000));
        assert_eq!(s.samples()[0].cpu_nanocores, 500_000_000);
        // The kubelet's sample did not change: the usage stays.
        s.record("edge-2", at(11_000, 6_000_000_000));
        assert_eq!(s.samples().len(), 1);
        s.failed("edge-2");
        assert!(s.samples().is_empty());
    }
}
