//! A pod's sandbox, as the kubelet's `createPodSandbox`: the newest ready one is adopted, or a
//! new one made on the handler of the pod's RuntimeClass, in the pod's cgroup, once the old
//! ones' containers are stopped (kept, as upstream's, for their statuses and restart counts
//! until the container GC removes them, then their sandboxes go too).

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::ResourceExt;

use super::spec;
use super::worker::{Shared, State};
use crate::events::Type;
use crate::kubelet::cri::{api, RuntimeError};

impl Shared {
    /// The newest ready sandbox, made when there is none; its id and IP. `None` when the
    /// sandbox died and the pod does not restart (restartPolicy Never once a container ran),
    /// as upstream's `computePodActions`.
    pub(super) async fn sandbox(
        &self,
        pod: &Pod,
        st: &mut State,
    ) -> Result<Option<(String, String)>, RuntimeError> {
        let uid = pod.uid().unwrap_or_default();
        let mut sandboxes = self.runtime.list_pod_sandboxes(Some(&uid)).await?;
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        if let Some(s) = sandboxes
            .iter()
            .find(|s| s.state == api::PodSandboxState::SandboxReady as i32)
        {
            if sandboxes.len() > 1 {
                self.remove_empty_sandboxes(&uid, &s.id, st).await;
            }
            if let Some(ip) = st.ips.get(&s.id) {
                return Ok(Some((s.id.clone(), ip.clone())));
            }
            let status = self.runtime.pod_sandbox_status(&s.id).await?;
            let ip = self.pod_ip(pod, status.network.map(|n| n.ip));
            st.ips.insert(s.id.clone(), ip.clone());
            // A running pod adopted: its cgroup counts towards its class's again.
            if let Err(e) = self.pod_cgroup(pod, st).await {
                tracing::warn!(pod = %pod.name_any(), "{e}");
            }
            return Ok(Some((s.id.clone(), ip)));
        }
        // None is ready: what ran in the old ones is stopped (kept, for its status, logs and
        // restart count), and a new sandbox starts unless the pod does not restart.
        if let Some(newest) = sandboxes.first() {
            if st.dead_sandbox.as_deref() != Some(newest.id.as_str()) {
                self.event_once(
                    st,
                    pod,
                    None,
                    Type::Normal,
                    "SandboxChanged",
                    "Pod sandbox changed, it will be killed and re-created.",
                )
                .await;
                self.stop_pod(&uid, super::worker::grace_seconds(pod))
                    .await?;
                st.ips.clear();
                st.dead_sandbox = Some(newest.id.clone());
            }
            let ran = !self.runtime.list_containers(Some(&uid)).await?.is_empty();
            if ran && super::worker::restart_policy(pod) == "Never" {
                return Ok(None);
            }
        }
        let next = sandboxes
            .iter()
            .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
            .max()
            .unwrap_or(0);
        let dir = spec::log_dir(&self.env, pod);
        let _ = std::fs::create_dir_all(&dir);
        let handler = match self.runtime_handler(pod).await {
            Ok(h) => h,
            Err(e) => {
                let msg = format!("Failed to create pod sandbox: {e}");
                self.event_once(st, pod, None, Type::Warning, "FailedCreatePodSandBox", &msg)
                    .await;
                return Err(RuntimeError::Node(e));
            }
        };
        if let Err(e) = spec::kernel_hostname(&self.env, pod) {
            let msg = format!("Failed to create pod sandbox: {e}");
            self.event_once(st, pod, None, Type::Warning, "FailedCreatePodSandBox", &msg)
                .await;
            return Err(RuntimeError::Node(e));
        }
        let parent = self.pod_cgroup(pod, st).await?;
        let id = match self
            .runtime
            .run_pod_sandbox(spec::sandbox(&self.env, pod, next, &parent), &handler)
            .await
        {
            Ok(id) => {
                crate::kubelet::metrics::kubelet().inc(
                    &crate::kubelet::metrics::STARTED_PODS,
                    &[],
                    1.0,
                );
                id
            }
            Err(e) => {
                crate::kubelet::metrics::kubelet().inc(
                    &crate::kubelet::metrics::STARTED_PODS_ERRORS,
                    &[],
                    1.0,
                );
                let msg = format!("Failed to create pod sandbox: {e}");
                self.event_once(st, pod, None, Type::Warning, "FailedCreatePodSandBox", &msg)
                    .await;
                return Err(e);
            }
        };
        let status = self.runtime.pod_sandbox_status(&id).await?;
        let ip = self.pod_ip(pod, status.network.map(|n| n.ip));
        st.ips.insert(id.clone(), ip.clone());
        Ok(Some((id, ip)))
    }

    /// Removes the pod's sandboxes other than `current` that no container refers to any
    /// more (their containers removed by the container GC), at most once a minute.
    async fn remove_empty_sandboxes(&self, uid: &str, current: &str, st: &mut State) {
        if st
            .sandbox_gc
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60))
        {
            return;
        }
        st.sandbox_gc = Some(std::time::Instant::now());
        let (Ok(sandboxes), Ok(containers)) = (
            self.runtime.list_pod_sandboxes(Some(uid)).await,
            self.runtime.list_containers(Some(uid)).await,
        ) else {
            return;
        };
        for s in sandboxes.iter().filter(|s| s.id != current) {
            if containers.iter().all(|c| c.pod_sandbox_id != s.id) {
                let _ = self.runtime.stop_pod_sandbox(&s.id).await;
                if let Err(e) = self.runtime.remove_pod_sandbox(&s.id).await {
                    tracing::debug!(sandbox = %s.id, "removing an old sandbox: {e}");
                }
            }
        }
    }

    /// The pod's IP: its sandbox's, or the node's for a pod on the host's network (which
    /// CRI reports none for), as upstream's status gives such pods the host IPs.
    fn pod_ip(&self, pod: &Pod, sandbox: Option<String>) -> String {
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        match sandbox.filter(|ip| !ip.is_empty()) {
            Some(ip) => ip,
            None if host_network => self.env.host_ip.clone(),
            None => String::new(),
        }
    }

    /// The runtime handler of the pod's RuntimeClass (empty: the runtime's default), as
    /// upstream's RuntimeClass manager resolves it.
    async fn runtime_handler(&self, pod: &Pod) -> Result<String, String> {
        use k8s_openapi::api::node::v1::RuntimeClass;
        let Some(name) = pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            return Ok(String::new());
        };
        let api: Api<RuntimeClass> = Api::all(self.client.clone());
        match api.get_opt(name).await {
            Ok(Some(rc)) => Ok(rc.handler),
            Ok(None) => Err(format!("runtimeclass.node.k8s.io {name:?} not found")),
            Err(e) => Err(format!("failed to look up RuntimeClass {name}: {e}")),
        }
    }

    /// The pod's cgroup (the runtime puts each container of the pod under it), or empty.
    pub(super) fn cgroup_parent(&self, pod: &Pod) -> String {
        self.cgroups
            .as_ref()
            .map(|c| c.pod_cgroup(pod))
            .unwrap_or_default()
    }

    /// Makes the pod's cgroup (as upstream, before its sandbox); its name, or empty without
    /// pod cgroups.
    async fn pod_cgroup(&self, pod: &Pod, st: &mut State) -> Result<String, RuntimeError> {
        let Some(cgroups) = &self.cgroups else {
            return Ok(String::new());
        };
        match cgroups.ensure_pod(pod) {
            Ok(name) => Ok(name),
            Err(e) => {
                let msg = format!("unable to ensure pod container exists: {e}");
                self.event_once(
                    st,
                    pod,
                    None,
                    Type::Warning,
                    "FailedCreatePodContainer",
                    &msg,
                )
                .await;
                Err(RuntimeError::Node(msg))
            }
        }
    }
}
