//! Stopping pods: a deleted pod's preStop hooks within its grace period, then SIGTERM and
//! SIGKILL through CRI, its sandbox removed and the pod object deleted for good (grace 0, uid
//! precondition); and removing everything the runtime holds for a pod that is gone.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::ResourceExt;

use super::worker::{grace_seconds, is, name_of, Shared};
use crate::events::Type;
use crate::kubelet::cri::{api, RuntimeError};
use crate::kubelet::volumes;

impl Shared {
    /// Stops and removes everything the runtime holds for the pod `uid`.
    /// Stops the pod's running containers (within `grace` seconds) and its sandboxes,
    /// keeping them (a pod whose sandbox died, as upstream's `killPodWithSyncResult`).
    pub async fn stop_pod(&self, uid: &str, grace: i64) -> Result<(), RuntimeError> {
        let containers = self.runtime.list_containers(Some(uid)).await?;
        let stops = containers
            .iter()
            .filter(|c| !is(c.state, api::ContainerState::ContainerExited))
            .map(|c| self.runtime.stop_container(&c.id, grace));
        for r in futures::future::join_all(stops).await {
            match r {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        // Dead sandboxes too: stopping one releases its network (its IP) as well.
        for s in self.runtime.list_pod_sandboxes(Some(uid)).await? {
            match self.runtime.stop_pod_sandbox(&s.id).await {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    pub async fn kill_pod(&self, uid: &str, grace: i64) -> Result<(), RuntimeError> {
        let containers = self.runtime.list_containers(Some(uid)).await?;
        let running: Vec<_> = containers
            .iter()
            .filter(|c| !is(c.state, api::ContainerState::ContainerExited))
            .collect();
        let stops = running
            .iter()
            .map(|c| self.runtime.stop_container(&c.id, grace));
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r {
                if !e.is_not_found() {
                    return Err(e);
                }
            }
        }
        for c in &containers {
            match self.runtime.remove_container(&c.id).await {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        for s in self.runtime.list_pod_sandboxes(Some(uid)).await? {
            for r in [
                self.runtime.stop_pod_sandbox(&s.id).await,
                self.runtime.remove_pod_sandbox(&s.id).await,
            ] {
                match r {
                    Err(e) if !e.is_not_found() => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The pod's running containers as its spec has them, in two groups, as upstream stops
    /// them: the regular (and ephemeral) containers first, then the sidecars (init containers
    /// with restartPolicy Always), last declared first.
    async fn running_groups(&self, pod: &Pod) -> [Vec<(String, Container)>; 2] {
        let uid = pod.uid().unwrap_or_default();
        let Ok(containers) = self.runtime.list_containers(Some(&uid)).await else {
            return [Vec::new(), Vec::new()];
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let running: Vec<&api::Container> = containers
            .iter()
            .filter(|x| is(x.state, api::ContainerState::ContainerRunning))
            .collect();
        let id_of = |name: &str| {
            running
                .iter()
                .find(|x| name_of(x) == name)
                .map(|x| x.id.clone())
        };
        let mut sidecars = Vec::new();
        for c in spec.init_containers.iter().flatten().rev() {
            if let Some(id) = id_of(&c.name) {
                sidecars.push((id, c.clone()));
            }
        }
        let regular: Vec<(String, Container)> = running
            .iter()
            .filter(|x| !sidecars.iter().any(|(id, _)| *id == x.id))
            .map(|x| {
                let c = spec
                    .containers
                    .iter()
                    .find(|c| c.name == name_of(x))
                    .cloned()
                    .unwrap_or_else(|| Container {
                        name: name_of(x).to_string(),
                        ..Default::default()
                    });
                (x.id.clone(), c)
            })
            .collect();
        [regular, sidecars]
    }

    /// Stops `group` (at once) by `deadline`: their preStop hooks, then SIGTERM, SIGKILL once
    /// the time is up (at least 2 s after the hooks, as upstream).
    async fn stop_group(&self, pod: &Pod, group: &[(String, Container)], deadline: Instant) {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        for (_, c) in group {
            let msg = format!("Stopping container {}", c.name);
            self.event(pod, Some(c.name.as_str()), Type::Normal, "Killing", &msg)
                .await;
        }
        let left = || deadline.saturating_duration_since(Instant::now());
        let limit = left();
        let hooks: Vec<_> = group
            .iter()
            .filter_map(|(id, c)| {
                let h = c.lifecycle.as_ref()?.pre_stop.clone()?;
                Some((id.clone(), c.clone(), h))
            })
            .collect();
        let runs = hooks
            .iter()
            .map(|(id, c, h)| super::hooks::run(self.runtime.as_ref(), id, &ip, c, h, limit));
        for (r, (_, c, _)) in futures::future::join_all(runs)
            .await
            .into_iter()
            .zip(&hooks)
        {
            if let Err(e) = r {
                tracing::warn!(pod = %pod.name_any(), container = %c.name, "PreStop hook failed: {e}");
                // Only that it failed: a hook's output may hold secrets (as upstream).
                self.event(
                    pod,
                    Some(c.name.as_str()),
                    Type::Warning,
                    "FailedPreStopHook",
                    "PreStopHook failed",
                )
                .await;
            }
        }
        let secs = (left().as_secs() as i64).max(2.min(limit.as_secs() as i64));
        let stops = group
            .iter()
            .map(|(id, _)| self.runtime.stop_container(id, secs));
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r {
                if !e.is_not_found() {
                    tracing::warn!(pod = %pod.name_any(), "stopping a container: {e}");
                }
            }
        }
    }

    /// Removes the pod's cgroup, when its containers have stopped (or retries on a later
    /// sweep).
    pub fn remove_cgroup(&self, uid: &str) {
        if let Some(cgroups) = &self.cgroups {
            if let Err(e) = cgroups.remove_pod(uid) {
                tracing::debug!(uid, "removing the pod's cgroup: {e}");
            }
        }
    }

    /// Removes the pod's files on this node (volumes, managed files) and its cgroup.
    pub fn forget_pod(&self, uid: &str) {
        self.evictions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
        volumes::remove_pod(&self.env.pods_dir, uid, self.mounter.as_ref());
        // After the volumes: a memory-backed emptyDir is charged to the pod's cgroup.
        self.remove_cgroup(uid);
        self.allocations.remove(uid);
        crate::kubelet::container_logs::remove_pod_logs(&self.env.pod_log_dir, uid);
        crate::kubelet::metrics::forget_pod(uid);
    }

    /// A pod being deleted: its containers stop within the grace period, then it is gone.
    pub async fn terminate(&self, pod: &Pod) -> bool {
        let uid = pod.uid().unwrap_or_default();
        let grace = grace_seconds(pod);
        let deadline = Instant::now() + Duration::from_secs(grace as u64);
        // Regular containers first; then the sidecars one by one, last declared first, each
        // within what is left of the grace period.
        let [regular, sidecars] = self.running_groups(pod).await;
        self.stop_group(pod, &regular, deadline).await;
        for one in &sidecars {
            self.stop_group(pod, std::slice::from_ref(one), deadline)
                .await;
        }
        if let Err(e) = self.kill_pod(&uid, 0).await {
            tracing::warn!(pod = %pod.name_any(), "stopping the pod: {e}");
            return false;
        }
        self.forget_pod(&uid);
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), "deleting the pod: {e}");
                false
            }
        }
    }
}
