//! CRI v1 calls newer than the proto the `k8s-cri` crate carries, declared here with upstream's
//! field numbers and sent over the same channel and codec as the generated client's.

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::Channel;

use super::api;
use crate::kubelet::metrics::Metered;

/// `runtime.v1.UpdatePodSandboxResourcesRequest` (CRI 1.33).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdatePodSandboxResourcesRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    /// The pod's overhead, when it has one.
    #[prost(message, optional, tag = "2")]
    pub overhead: Option<api::LinuxContainerResources>,
    /// The pod's resources as a whole, without its overhead.
    #[prost(message, optional, tag = "3")]
    pub resources: Option<api::LinuxContainerResources>,
    #[prost(map = "string, string", tag = "4")]
    pub annotations: std::collections::HashMap<String, String>,
}

/// `runtime.v1.UpdatePodSandboxResourcesResponse`: empty.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct UpdatePodSandboxResourcesResponse {}

/// Sends `UpdatePodSandboxResources` on `channel`.
pub async fn update_pod_sandbox_resources(
    channel: Metered<Channel>,
    req: UpdatePodSandboxResourcesRequest,
) -> Result<(), tonic::Status> {
    let mut grpc = Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("the runtime's channel is not ready: {e}")))?;
    let path = PathAndQuery::from_static("/runtime.v1.RuntimeService/UpdatePodSandboxResources");
    let codec = tonic_prost::ProstCodec::<
        UpdatePodSandboxResourcesRequest,
        UpdatePodSandboxResourcesResponse,
    >::default();
    grpc.unary(tonic::Request::new(req), path, codec).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn the_request_has_upstreams_field_numbers() {
        let req = UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "s".into(),
            overhead: None,
            resources: Some(api::LinuxContainerResources {
                cpu_shares: 2,
                ..Default::default()
            }),
            annotations: Default::default(),
        };
        // Field 1 (string "s"), then field 3 (message holding field 3 = cpu_shares 2).
        assert_eq!(req.encode_to_vec(), vec![0x0a, 1, b's', 0x1a, 2, 0x18, 2]);
    }
}
