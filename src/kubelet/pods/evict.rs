//! A pod the eviction manager chose: its containers are stopped (at once for a hard
//! threshold, within the grace period the manager gave for a soft one), its sandbox stopped, and its status set as upstream's kubelet
//! leaves an evicted pod: phase Failed, reason Evicted, the manager's message, and the
//! DisruptionTarget condition. The pod object stays, for its owner to replace. A pod past
//! its `activeDeadlineSeconds` (counted from its start time) goes the same way, with
//! upstream's reason DeadlineExceeded and no DisruptionTarget.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::json;

use super::status;
use super::worker::{Shared, State};
use crate::kubelet::cri::api;

/// Upstream's words for a pod past its active deadline.
const DEADLINE_REASON: &str = "DeadlineExceeded";
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Whether the pod has run past its `activeDeadlineSeconds` since its start time.
pub(super) fn past_deadline(pod: &Pod) -> bool {
    let deadline = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds);
    let started = pod.status.as_ref().and_then(|s| s.start_time.as_ref());
    match (deadline, started) {
        (Some(d), Some(t)) => {
            let ran = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
            ran.as_secs() >= d
        }
        _ => false,
    }
}

impl Shared {
    /// Evicts `pod` with `message`; how long until the worker looks again.
    pub(super) async fn evict(
        &self,
        pod: &Pod,
        st: &mut State,
        eviction: &crate::kubelet::eviction::Eviction,
    ) -> Duration {
        let message = eviction.message.as_str();
        self.stop_and_fail(pod, st, "Evicted", message, eviction.grace, true)
            .await
    }

    /// Stops a pod past its active deadline and fails it with DeadlineExceeded.
    pub(super) async fn deadline_exceeded(&self, pod: &Pod, st: &mut State) -> Duration {
        let grace = super::worker::grace_seconds(pod);
        self.stop_and_fail(pod, st, DEADLINE_REASON, DEADLINE_MESSAGE, grace, false)
            .await
    }

    /// Stops the pod's containers within `grace` seconds and its sandbox, and posts it
    /// Failed with `reason` and `message` (with a DisruptionTarget condition when `disrupted`).
    async fn stop_and_fail(
        &self,
        pod: &Pod,
        st: &mut State,
        reason: &str,
        message: &str,
        grace: i64,
        disrupted: bool,
    ) -> Duration {
        let uid = pod.uid().unwrap_or_default();
        if pod.status.as_ref().and_then(|s| s.reason.as_deref()) != Some(reason) {
            let ty = if disrupted {
                crate::events::Type::Warning
            } else {
                crate::events::Type::Normal
            };
            self.event(pod, None, ty, reason, message).await;
        }
        if let Ok(containers) = self.runtime.list_containers(Some(&uid)).await {
            let stops = containers
                .iter()
                .filter(|c| c.state != api::ContainerState::ContainerExited as i32)
                .map(|c| self.runtime.stop_container(&c.id, grace));
            for r in futures::future::join_all(stops).await {
                if let Err(e) = r {
                    tracing::warn!(pod = %pod.name_any(), "stopping a {reason} pod's container: {e}");
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
                tracing::warn!(pod = %pod.name_any(), "reading a {reason} pod's containers: {e}");
                return Duration::from_secs(2);
            }
        };
        let mut body = status::pod_status(pod, &obs);
        let s = &mut body["status"];
        s["phase"] = json!("Failed");
        s["reason"] = json!(reason);
        s["message"] = json!(message);
        let now = k8s_openapi::jiff::Timestamp::now();
        if let Some(conds) = s["conditions"].as_array_mut() {
            for c in conds.iter_mut() {
                if matches!(c["type"].as_str(), Some("Ready" | "ContainersReady")) {
                    c["status"] = json!("False");
                    c["reason"] = json!("PodFailed");
                }
            }
            if disrupted {
                conds.push(json!({
                    "type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                    "message": message, "lastTransitionTime": now, "lastProbeTime": null,
                }));
            }
        }
        self.post_status(pod, st, body).await;
        Duration::from_secs(1)
    }
}
