//! Simulated nodes (`k1s server --simulated-nodes N`): N Node objects with configurable capacity
//! and labels, each renewing its Lease in `kube-node-lease` every 10 s, and a pod loop that runs
//! the pods bound to them without containers ([`pods`]): Running and Ready at once, Succeeded or
//! Failed after `simulated.k1s.io/run-for` when a pod asks for it, gone as soon as it is deleted.
//!
//! Each node writes with its own kubelet identity (`system:node:NAME` in `system:nodes`), so the
//! Node authorizer and NodeRestriction check the simulation as they check a real kubelet; pods
//! are watched once for all nodes.

mod node;
pub mod pods;
pub mod usage;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
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

/// Registers the nodes, then keeps their Leases fresh and their pods moving until `stop`; their
/// usage goes to `metrics`.
pub async fn run(
    cfg: SimConfig,
    clients: Clients,
    metrics: crate::resource_metrics::Sources,
    stop: watch::Receiver<bool>,
) {
    let names = cfg.names();
    let usage = Arc::new(usage::Usage::new(
        names.clone(),
        usage::defaults(&cfg.usage),
    ));
    metrics.register(usage.clone());
    let nodes: Vec<node::SimNode> = names
        .iter()
        .enumerate()
        .map(|(i, name)| node::SimNode::new(name, i, (clients.for_node)(name)))
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
    let leases = tokio::spawn(heartbeats(nodes.clone(), cfg.clone(), stop.clone()));
    pods::run(nodes, usage, clients, stop).await;
    let _ = leases.await;
}

/// Every 10 s, each node renews its Lease and checks its Node is still Ready.
async fn heartbeats(
    nodes: Arc<Vec<node::SimNode>>,
    cfg: SimConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(LEASE_RENEW);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let cfg = &cfg;
        futures::stream::iter(nodes.iter())
            .for_each_concurrent(CONCURRENCY, |n| async move {
                if let Err(e) = n.renew_lease().await {
                    tracing::debug!(node = %n.name, error = %e, "renewing a simulated node's lease");
                }
                if let Err(e) = n.check_status(cfg).await {
                    tracing::debug!(node = %n.name, error = %e, "checking a simulated node's status");
                }
            })
            .await;
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
