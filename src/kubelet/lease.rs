//! The node heartbeat: a Lease named after the node in `kube-node-lease`, renewed every 10 s,
//! which node lifecycle reads to tell a live node from a lost one. Shared by the kubelet and
//! the simulated nodes.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

pub const LEASE_NS: &str = "kube-node-lease";
/// The lease's duration, as the kubelet's `nodeLeaseDurationSeconds`.
pub const LEASE_SECONDS: i32 = 40;
/// How often it is renewed (a quarter of the duration, as upstream).
pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Moves the node's Lease's renewTime to now, creating the Lease if it is missing.
pub async fn renew(client: &Client, node: &str) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    let now = MicroTime(Timestamp::now());
    let patch = json!({"spec": {"renewTime": now, "holderIdentity": node}});
    match api
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_string()),
                    namespace: Some(LEASE_NS.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.to_string()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}
