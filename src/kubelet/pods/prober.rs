//! The pod worker's prober: each pass runs the running containers' due probes
//! ([`super::probes`] decides when and how), records failed ones as `Unhealthy` events, and
//! kills a container whose startup or liveness probe failed (`Killing`), within the probe's
//! or the pod's grace period.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::probes;
use super::worker::{grace_seconds, Shared, State};
use crate::events::Type;

impl Shared {
    /// Runs the running containers' due probes; kills those whose startup or liveness failed.
    pub(super) async fn probe(&self, pod: &Pod, ip: &str, st: &mut State) {
        let spec = pod.spec.clone().unwrap_or_default();
        let live: Vec<String> = st.running.iter().map(|(id, _, _)| id.clone()).collect();
        probes::retain(&mut st.probes, &live);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64;
        for (id, name, created) in st.running.clone() {
            let Some(c) = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|c| c.name == name)
            else {
                continue;
            };
            if c.startup_probe.is_none()
                && c.liveness_probe.is_none()
                && c.readiness_probe.is_none()
            {
                continue;
            }
            let running_for = Duration::from_nanos(u64::try_from(now - created).unwrap_or(0));
            let (namespace, pod_name) = (pod.namespace().unwrap_or_default(), pod.name_any());
            let target = probes::Target {
                runtime: self.runtime.as_ref(),
                container_id: &id,
                pod_ip: ip,
                of: crate::kubelet::metrics::ProbeOf {
                    namespace: &namespace,
                    pod: &pod_name,
                    uid: pod.metadata.uid.as_deref().unwrap_or_default(),
                    container: &name,
                },
            };
            let tally = st.probes.entry(id.clone()).or_default();
            let mut unhealthy = Vec::new();
            let verdict = probes::run(&target, c, tally, running_for, &mut unhealthy).await;
            for m in &unhealthy {
                self.event(pod, Some(name.as_str()), Type::Warning, "Unhealthy", m)
                    .await;
            }
            if let probes::Verdict::Kill(why) = verdict {
                tracing::info!(pod = %pod.name_any(), container = %name, "{why}; killing the container");
                let probe = if why.starts_with("Startup") {
                    "startup"
                } else {
                    "liveness"
                };
                let msg = format!("Container {name} failed {probe} probe, will be restarted");
                self.event(pod, Some(name.as_str()), Type::Normal, "Killing", &msg)
                    .await;
                let grace = c
                    .liveness_probe
                    .as_ref()
                    .and_then(|p| p.termination_grace_period_seconds)
                    .unwrap_or_else(|| grace_seconds(pod));
                if let Err(e) = self.runtime.stop_container(&id, grace).await {
                    tracing::warn!(pod = %pod.name_any(), container = %name, "killing the container: {e}");
                }
                st.probes.remove(&id);
            }
        }
    }
}
