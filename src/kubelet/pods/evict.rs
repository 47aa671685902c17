//! A pod the eviction manager chose: its containers are stopped (at once for a hard
//! threshold, within the grace period the manager gave for a soft one), its sandbox stopped, and its status set as upstream's kubelet
//! leaves an evicted pod: phase Failed, reason Evicted, the manager's message, and the
//! DisruptionTarget condition. The pod object stays, for its owner to replace.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::json;

use super::status;
use super::worker::{Shared, State};
use crate::kubelet::cri::api;

impl Shared {
    /// Evicts `pod` with `message`; how long until the worker looks again.
    pub(super) async fn evict(
        &self,
        pod: &Pod,
        st: &mut State,
        eviction: &crate::kubelet::eviction::Eviction,
    ) -> Duration {
        let message = eviction.message.as_str();
        let uid = pod.uid().unwrap_or_default();
        if pod.status.as_ref().and_then(|s| s.reason.as_deref()) != Some("Evicted") {
            self.event(pod, None, crate::events::Type::Warning, "Evicted", message)
                .await;
        }
        if let Ok(containers) = self.runtime.list_containers(Some(&uid)).await {
            let stops = containers
                .iter()
                .filter(|c| c.state != api::ContainerState::ContainerExited as i32)
                .map(|c| self.runtime.stop_container(&c.id, eviction.grace));
            for r in futures::future::join_all(stops).await {
                if let Err(e) = r {
                    tracing::warn!(pod = %pod.name_any(), "stopping an evicted pod's container: {e}");
                }
            }
        }
        if let Ok(sandboxes) = self.runtime.list_pod_sandboxes(Some(&uid)).await {
            for s in sandboxes {
                let _ = self.runtime.stop_pod_sandbox(&s.id).await;
            }
        }
        let obs = match self.observe(pod, st).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), "reading an evicted pod's containers: {e}");
                return Duration::from_secs(2);
            }
        };
        let mut body = status::pod_status(pod, &obs);
        let s = &mut body["status"];
        s["phase"] = json!("Failed");
        s["reason"] = json!("Evicted");
        s["message"] = json!(message);
        let now = k8s_openapi::jiff::Timestamp::now();
        if let Some(conds) = s["conditions"].as_array_mut() {
            for c in conds.iter_mut() {
                if matches!(c["type"].as_str(), Some("Ready" | "ContainersReady")) {
                    c["status"] = json!("False");
                    c["reason"] = json!("PodFailed");
                }
            }
            conds.push(json!({
                "type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                "message": message, "lastTransitionTime": now, "lastProbeTime": null,
            }));
        }
        self.post_status(pod, st, body).await;
        Duration::from_secs(1)
    }
}
