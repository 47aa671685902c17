//! Simulated nodes (`k1s server --simulated-nodes N`): N Node objects with configurable capacity
//! and labels, each renewing its Lease in `kube-node-lease` every 10 s, and a pod loop that runs
//! the pods bound to them without containers ([`pods`]): Running and Ready at once, Succeeded or
//! Failed after `simulated.k1s.io/run-for` when a pod asks for it, gone as soon as it is deleted.
//!
//! Each node writes with its own kubelet identity (`system:node:NAME` in `system:nodes`), so the
//! Node authorizer and NodeRestriction check the simulation as they check a real kubelet; pods
//! are watched once for all nodes.

pub mod api;
mod node;
pub mod pods;
pub mod usage;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::watch;

/// How often a node renews its Lease (upstream's kubelet: every 10 s for a 40 s lease).
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Concurrent API calls while registering or renewing.
const CONCURRENCY: usize = 32;

/// What the simulated nodes look like.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How many nodes.
    pub count: usize,
    /// Node names are this prefix and a zero-padded index (`sim-0007`).
    pub prefix: String,
    /// Capacity (and allocatable) of each node: cpu, memory, pods, ephemeral-storage...
    pub capacity: BTreeMap<String, String>,
    /// Extra labels on each node.
    pub labels: BTreeMap<String, String>,
    /// Each container's default usage (`cpu`, `memory` quantities) for `metrics.k8s.io`.
    pub usage: BTreeMap<String, String>,
}

impl SimConfig {
    /// KWOK's default node: 32 CPUs, 256 GiB, 110 pods.
    pub fn new(count: usize) -> SimConfig {
        let capacity = [
            ("cpu", "32"),
            ("memory", "256Gi"),
            ("pods", "110"),
            ("ephemeral-storage", "1Ti"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        SimConfig {
            count,
            prefix: "sim-".into(),
            capacity,
            labels: BTreeMap::new(),
            usage: BTreeMap::new(),
        }
    }

    /// The nodes the `--simulated-node*` flags describe.
    pub fn from_flags(f: &crate::supervisor::SimulatedNodes) -> SimConfig {
        let mut sim = SimConfig::new(f.count);
        sim.prefix = f.prefix.clone();
        sim.capacity.extend(f.capacity.clone());
        sim.labels = f.labels.clone();
        sim.usage = f.usage.clone();
        sim
    }

    /// The node names, in index order.
    pub fn names(&self) -> Vec<String> {
        let width = self.count.saturating_sub(1).to_string().len().max(4);
        (0..self.count)
            .map(|i| format!("{}{i:0width$}", self.prefix))
            .collect()
    }
}

/// The API clients of the simulation.
#[derive(Clone)]
pub struct Clients {
    /// Watches the pods bound to any simulated node (None: each node watches its own).
    pub reader: Option<Client>,
    /// A client acting as the kubelet of node NAME.
    pub for_node: Arc<dyn Fn(&str) -> Client + Send + Sync>,
}

/// A simulating agent's kubelet API ([`api`]): where it listens, the address and port its nodes
/// advertise, its serving certificate and key (PEM), and the CA of client certificates.
pub struct KubeletApi {
    pub listener: tokio::net::TcpListener,
    pub advertise: std::net::SocketAddr,
    pub cert: (String, String),
    pub client_ca: String,
}

/// Registers the nodes, then keeps their Leases fresh and their pods moving until `stop`; their
/// usage goes to `metrics`, and to `kubelet_api` when there is one (agents: the server scrapes
/// it).
pub async fn run(
    cfg: SimConfig,
    clients: Clients,
    metrics: crate::resource_metrics::Sources,
    kubelet_api: Option<KubeletApi>,
    stop: watch::Receiver<bool>,
) {
    let names = cfg.names();
    let usage = Arc::new(usage::Usage::new(
        names.clone(),
        usage::defaults(&cfg.usage),
    ));
    let _registered = metrics.register(usage.clone());
    let advertise = kubelet_api.as_ref().map(|a| a.advertise);
    if let (Some(a), Some(first)) = (kubelet_api, names.first()) {
        let app = api::router(&names, usage.clone(), (clients.for_node)(first));
        let stop = stop.clone();
        tokio::spawn(async move {
            let served =
                crate::kubelet::api::serve_router(a.listener, a.cert, &a.client_ca, app, stop);
            if let Err(e) = served.await {
                tracing::error!("the simulated nodes' kubelet API stopped: {e}");
            }
        });
    }
    let nodes: Vec<node::SimNode> = names
        .iter()
        .enumerate()
        .map(|(i, name)| node::SimNode::new(name, i, (clients.for_node)(name), advertise))
        .collect();
    let nodes = Arc::new(nodes);
    futures::stream::iter(nodes.iter())
        .for_each_concurrent(CONCURRENCY, |n| {
            let cfg = &cfg;
            let mut stop = stop.clone();
            async move {
                loop {
                    match n.register(cfg).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!(node = %n.name, error = %e, "registering a simulated node; retrying")
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        })
        .await;
    tracing::info!(nodes = nodes.len(), "simulated nodes registered");
    let leases = tokio::spawn(heartbeats(nodes.clone(), stop.clone()));
    let statuses = tokio::spawn(statuses(
        nodes.clone(),
        cfg.clone(),
        clients.clone(),
        stop.clone(),
    ));
    pods::run(nodes, usage, clients, stop).await;
    let _ = leases.await;
    let _ = statuses.await;
}

/// Every 10 s, each node renews its Lease.
async fn heartbeats(nodes: Arc<Vec<node::SimNode>>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LEASE_RENEW);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        futures::stream::iter(nodes.iter())
            .for_each_concurrent(CONCURRENCY, |n| async move {
                if let Err(e) = n.renew_lease().await {
                    tracing::debug!(node = %n.name, error = %e, "renewing a simulated node's lease");
                }
            })
            .await;
    }
}

/// The kubelet's status loop, driven by a watch on the nodes: a node whose Ready condition is
/// not True (the node lifecycle controller marked it Unknown while its heartbeats were late)
/// posts its status again, as the kubelet does on its next status update. One watch for every
/// node when a reader may see them all; else each node watches its own Node.
async fn statuses(
    nodes: Arc<Vec<node::SimNode>>,
    cfg: SimConfig,
    clients: Clients,
    stop: watch::Receiver<bool>,
) {
    let by_name: std::collections::HashMap<&str, &node::SimNode> =
        nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let events = match clients.reader {
        Some(reader) => {
            let cfg = watcher::Config::default().labels(&format!("{}=true", node::SIMULATED_LABEL));
            watcher(Api::<Node>::all(reader), cfg)
                .default_backoff()
                .boxed()
        }
        None => {
            let per_node = nodes.iter().map(|n| {
                let cfg = watcher::Config::default().fields(&format!("metadata.name={}", n.name));
                watcher(Api::<Node>::all((clients.for_node)(&n.name)), cfg)
                    .default_backoff()
                    .boxed()
            });
            futures::stream::select_all(per_node).boxed()
        }
    };
    let not_ready = events.filter_map(|ev| {
        let node = match ev {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => Some(n),
            _ => None,
        };
        let sim = node
            .filter(|n| !crate::conditions::node_ready(n))
            .and_then(|n| by_name.get(n.metadata.name.as_deref()?).copied());
        futures::future::ready(sim)
    });
    let cfg = &cfg;
    let posts = not_ready.for_each_concurrent(CONCURRENCY, |n| async move {
        // A lost post would leave the node not Ready until its next status change. The client
        // already retries 429s; this retries what it does not (a broken connection in agent mode).
        for attempt in 0..5u32 {
            match n.post_status(cfg).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(node = %n.name, attempt, error = %e, "posting a simulated node's status")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut stop = stop;
    tokio::select! {
        _ = posts => {}
        _ = stop.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_zero_padded_and_sort_in_index_order() {
        let mut c = SimConfig::new(3);
        assert_eq!(c.names(), ["sim-0000", "sim-0001", "sim-0002"]);
        c.count = 12000;
        c.prefix = "edge-".into();
        assert_eq!(c.names()[11999], "edge-11999");
        assert_eq!(c.names()[7], "edge-00007");
    }
}
