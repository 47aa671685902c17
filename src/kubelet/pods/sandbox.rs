//! A pod's sandbox, as the kubelet's `createPodSandbox`: the newest ready one is adopted, or a
//! new one made (the old ones' containers gone first) on the handler of the pod's RuntimeClass,
//! in the pod's cgroup.

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::ResourceExt;

use super::spec;
use super::worker::{Shared, State};
use crate::events::Type;
use crate::kubelet::cri::{api, RuntimeError};

impl Shared {
    /// The newest ready sandbox, made when there is none; its id and IP.
    pub(super) async fn sandbox(
        &self,
        pod: &Pod,
        st: &mut State,
    ) -> Result<(String, String), RuntimeError> {
        let uid = pod.uid().unwrap_or_default();
        let mut sandboxes = self.runtime.list_pod_sandboxes(Some(&uid)).await?;
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        if let Some(s) = sandboxes
            .iter()
            .find(|s| s.state == api::PodSandboxState::SandboxReady as i32)
        {
            if let Some(ip) = st.ips.get(&s.id) {
                return Ok((s.id.clone(), ip.clone()));
            }
            let status = self.runtime.pod_sandbox_status(&s.id).await?;
            let ip = self.pod_ip(pod, status.network.map(|n| n.ip));
            st.ips.insert(s.id.clone(), ip.clone());
            // A running pod adopted: its cgroup counts towards its class's again.
            if let Err(e) = self.pod_cgroup(pod, st).await {
                tracing::warn!(pod = %pod.name_any(), "{e}");
            }
            return Ok((s.id.clone(), ip));
        }
        // None is ready: whatever ran in the old ones goes, and a new sandbox starts.
        if !sandboxes.is_empty() {
            self.event_once(
                st,
                pod,
                None,
                Type::Normal,
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.",
            )
            .await;
            self.kill_pod(&uid, 0).await?;
            st.ips.clear();
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
            Ok(id) => id,
            Err(e) => {
                let msg = format!("Failed to create pod sandbox: {e}");
                self.event_once(st, pod, None, Type::Warning, "FailedCreatePodSandBox", &msg)
                    .await;
                return Err(e);
            }
        };
        let status = self.runtime.pod_sandbox_status(&id).await?;
        let ip = self.pod_ip(pod, status.network.map(|n| n.ip));
        st.ips.insert(id.clone(), ip.clone());
        Ok((id, ip))
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
