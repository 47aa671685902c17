//! One simulated node: its Node object, its Lease, and the addresses of its pods. Node `i` owns
//! `100.64.0.0/10`'s `i`-th /24 as its pod CIDR; nothing ever sends traffic to these addresses.
//! A node of a simulating agent has the agent's address and kubelet port, and the annotation
//! that says where its `/metrics/resource` is ([`super::api`]); other simulated nodes have the
//! first address of their /24.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use super::SimConfig;

/// The label every simulated node carries.
pub const SIMULATED_LABEL: &str = "node.k1s.io/simulated";

pub struct SimNode {
    pub name: String,
    index: u32,
    pub client: Client,
    next_ip: AtomicU32,
    /// Where the node's kubelet API is served, if anywhere.
    kubelet: Option<SocketAddr>,
}

fn condition(ty: &str, status: &str, reason: &str, message: &str, now: Timestamp) -> NodeCondition {
    NodeCondition {
        type_: ty.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

impl SimNode {
    pub fn new(name: &str, index: usize, client: Client, kubelet: Option<SocketAddr>) -> SimNode {
        SimNode {
            name: name.to_string(),
            index: index as u32,
            client,
            next_ip: AtomicU32::new(0),
            kubelet,
        }
    }

    fn cidr_base(&self) -> u32 {
        u32::from(Ipv4Addr::new(100, 64, 0, 0)) + (self.index << 8)
    }

    /// The node's address: its kubelet API's, else the first of its /24.
    pub fn address(&self) -> IpAddr {
        match self.kubelet {
            Some(a) => a.ip(),
            None => IpAddr::V4(Ipv4Addr::from(self.cidr_base() + 1)),
        }
    }

    /// The next pod address (`.2` to `.254`, wrapping).
    pub fn pod_ip(&self) -> Ipv4Addr {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed) % 253;
        Ipv4Addr::from(self.cidr_base() + 2 + n)
    }

    fn status(&self, cfg: &SimConfig) -> NodeStatus {
        let now = Timestamp::now();
        let capacity: std::collections::BTreeMap<String, Quantity> = cfg
            .capacity
            .iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect();
        NodeStatus {
            capacity: Some(capacity.clone()),
            allocatable: Some(capacity),
            conditions: Some(crate::kubelet::node::conditions(
                Default::default(),
                None,
                |ty, status, reason, message| condition(ty, status, reason, message, now),
            )),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: self.address().to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: self.name.clone(),
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: self.kubelet.map_or(10250, |a| i32::from(a.port())),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: std::env::consts::ARCH
                    .replace("x86_64", "amd64")
                    .replace("aarch64", "arm64"),
                boot_id: format!("sim-boot-{}", self.index),
                container_runtime_version: "k1s-sim://0.1.0".into(),
                kernel_version: "simulated".into(),
                kube_proxy_version: String::new(),
                kubelet_version: format!("v1.37.0-k1s-{}", env!("CARGO_PKG_VERSION")),
                machine_id: format!("sim-machine-{}", self.index),
                operating_system: "linux".into(),
                os_image: "k1s simulated node".into(),
                system_uuid: format!("sim-{}", self.index),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates the Node (or adopts an existing one) and posts its status.
    pub async fn register(&self, cfg: &SimConfig) -> Result<(), kube::Error> {
        let mut labels = cfg.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), self.name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/arch".into(), "amd64".into());
        labels.insert(SIMULATED_LABEL.into(), "true".into());
        let cidr = format!("{}/24", Ipv4Addr::from(self.cidr_base()));
        let annotations = self.kubelet.map(|_| {
            [(
                crate::resource_metrics::RESOURCE_METRICS_PATH.to_string(),
                super::api::metrics_path(&self.name),
            )]
            .into()
        });
        let node = Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                annotations: annotations.clone(),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(cidr.clone()),
                pod_cidrs: Some(vec![cidr]),
                ..Default::default()
            }),
            status: Some(self.status(cfg)),
        };
        let api: Api<Node> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // An adopted node: where its metrics are may have changed (or be new).
                if let Some(a) = annotations {
                    let patch = json!({"metadata": {"annotations": a}});
                    api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
            }
            Err(e) => return Err(e),
        }
        self.post_status(cfg).await?;
        self.renew_lease().await
    }

    /// Posts the node's status: capacity, addresses, and conditions that are healthy as of now.
    pub async fn post_status(&self, cfg: &SimConfig) -> Result<(), kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let status = json!({"status": self.status(cfg)});
        api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }

    /// Moves the Lease's renewTime to now, creating the Lease if it is missing.
    pub async fn renew_lease(&self) -> Result<(), kube::Error> {
        crate::kubelet::lease::renew(&self.client, &self.name).await
    }
}
