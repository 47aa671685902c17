//! Stopping pods: a deleted pod's preStop hooks within its grace period, then SIGTERM and
//! SIGKILL through CRI, its sandbox removed and the pod object deleted for good (grace 0, uid
//! precondition); and removing everything the runtime holds for a pod that is gone.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::ResourceExt;

use super::worker::{grace_seconds, is, name_of, Shared};
use crate::events::Type;
use crate::kubelet::cri::{api, RuntimeError};
use crate::kubelet::volumes;

impl Shared {
    /// Stops and removes everything the runtime holds for the pod `uid`.
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

    /// Runs the preStop hooks of the pod's running containers, all at once, within `limit`.
    async fn pre_stop(&self, pod: &Pod, limit: Duration) {
        let uid = pod.uid().unwrap_or_default();
        let Ok(containers) = self.runtime.list_containers(Some(&uid)).await else {
            return;
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let hooks = containers
            .iter()
            .filter(|x| is(x.state, api::ContainerState::ContainerRunning))
            .filter_map(|x| {
                let c = spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                    .find(|c| c.name == name_of(x))?;
                let h = c.lifecycle.as_ref()?.pre_stop.clone()?;
                Some((x.id.clone(), c.clone(), h))
            })
            .collect::<Vec<_>>();
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
    }

    /// A pod being deleted: its containers stop within the grace period, then it is gone.
    pub async fn terminate(&self, pod: &Pod) -> bool {
        let uid = pod.uid().unwrap_or_default();
        let started = Instant::now();
        let grace = grace_seconds(pod);
        if let Ok(containers) = self.runtime.list_containers(Some(&uid)).await {
            for x in containers
                .iter()
                .filter(|x| is(x.state, api::ContainerState::ContainerRunning))
            {
                let msg = format!("Stopping container {}", name_of(x));
                self.event(pod, Some(name_of(x)), Type::Normal, "Killing", &msg)
                    .await;
            }
        }
        self.pre_stop(pod, Duration::from_secs(grace as u64)).await;
        // What the hooks took comes off the grace period; at least 2 s remain, as upstream.
        let left = (grace - started.elapsed().as_secs() as i64).max(2.min(grace));
        if let Err(e) = self.kill_pod(&uid, left).await {
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
