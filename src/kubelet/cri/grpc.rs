//! [`Runtime`] over CRI v1 gRPC: one tonic channel to the runtime's Unix socket serves both
//! services, metered per method ([`Metered`]).

use async_trait::async_trait;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::{api, Runtime, RuntimeError};
use crate::kubelet::metrics::Metered;

/// A CRI runtime reached over gRPC.
#[derive(Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Metered<Channel>>,
    images: ImageServiceClient<Metered<Channel>>,
    /// For the calls [`super::newer`] declares.
    channel: Metered<Channel>,
}

impl Cri {
    pub fn new(channel: Channel) -> Self {
        Cri {
            // Exec output and container lists can exceed tonic's 4 MiB default.
            runtime: RuntimeServiceClient::new(Metered(channel.clone()))
                .max_decoding_message_size(16 << 20),
            images: ImageServiceClient::new(Metered(channel.clone()))
                .max_decoding_message_size(16 << 20),
            channel: Metered(channel),
        }
    }

    /// The runtime's image filesystems.
    async fn image_filesystems(&self) -> Result<Vec<api::FilesystemUsage>, RuntimeError> {
        let r = self
            .images
            .clone()
            .image_fs_info(api::ImageFsInfoRequest {})
            .await;
        Ok(r.map_err(status("image filesystem info"))?
            .into_inner()
            .image_filesystems)
    }
}

fn status(op: &'static str) -> impl FnOnce(tonic::Status) -> RuntimeError {
    move |s| RuntimeError::Status {
        op,
        code: s.code(),
        message: s.message().to_string(),
    }
}

fn by_uid(uid: &str) -> std::collections::HashMap<String, String> {
    [(super::LABEL_POD_UID.to_string(), uid.to_string())]
        .into_iter()
        .collect()
}

#[async_trait]
impl Runtime for Cri {
    async fn version(&self) -> Result<api::VersionResponse, RuntimeError> {
        let r = self
            .runtime
            .clone()
            .version(api::VersionRequest::default())
            .await;
        Ok(r.map_err(status("version"))?.into_inner())
    }

    async fn status(&self) -> Result<api::StatusResponse, RuntimeError> {
        let r = self
            .runtime
            .clone()
            .status(api::StatusRequest { verbose: false })
            .await;
        Ok(r.map_err(status("status"))?.into_inner())
    }

    async fn run_pod_sandbox(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, RuntimeError> {
        let req = api::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: runtime_handler.to_string(),
        };
        let r = self.runtime.clone().run_pod_sandbox(req).await;
        Ok(r.map_err(status("run pod sandbox"))?
            .into_inner()
            .pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let req = api::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.runtime
            .clone()
            .stop_pod_sandbox(req)
            .await
            .map_err(status("stop pod sandbox"))?;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let req = api::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.runtime
            .clone()
            .remove_pod_sandbox(req)
            .await
            .map_err(status("remove pod sandbox"))?;
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, RuntimeError> {
        let req = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        let r = self.runtime.clone().pod_sandbox_status(req).await;
        r.map_err(status("pod sandbox status"))?
            .into_inner()
            .status
            .ok_or(RuntimeError::Incomplete {
                op: "pod sandbox status",
                what: "a status",
            })
    }

    async fn list_pod_sandboxes(
        &self,
        pod_uid: Option<&str>,
    ) -> Result<Vec<api::PodSandbox>, RuntimeError> {
        let filter = pod_uid.map(|uid| api::PodSandboxFilter {
            label_selector: by_uid(uid),
            ..Default::default()
        });
        let r = self
            .runtime
            .clone()
            .list_pod_sandbox(api::ListPodSandboxRequest { filter })
            .await;
        Ok(r.map_err(status("list pod sandboxes"))?.into_inner().items)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let req = api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let r = self.runtime.clone().create_container(req).await;
        Ok(r.map_err(status("create container"))?
            .into_inner()
            .container_id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let req = api::StartContainerRequest {
            container_id: id.to_string(),
        };
        self.runtime
            .clone()
            .start_container(req)
            .await
            .map_err(status("start container"))?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), RuntimeError> {
        let req = api::StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_secs,
        };
        self.runtime
            .clone()
            .stop_container(req)
            .await
            .map_err(status("stop container"))?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let req = api::RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.runtime
            .clone()
            .remove_container(req)
            .await
            .map_err(status("remove container"))?;
        Ok(())
    }

    async fn list_containers(
        &self,
        pod_uid: Option<&str>,
    ) -> Result<Vec<api::Container>, RuntimeError> {
        let filter = pod_uid.map(|uid| api::ContainerFilter {
            label_selector: by_uid(uid),
            ..Default::default()
        });
        let r = self
            .runtime
            .clone()
            .list_containers(api::ListContainersRequest { filter })
            .await;
        Ok(r.map_err(status("list containers"))?
            .into_inner()
            .containers)
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, RuntimeError> {
        let req = api::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        let r = self.runtime.clone().container_status(req).await;
        r.map_err(status("container status"))?
            .into_inner()
            .status
            .ok_or(RuntimeError::Incomplete {
                op: "container status",
                what: "a status",
            })
    }

    async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        let req = api::ReopenContainerLogRequest {
            container_id: id.to_string(),
        };
        let r = self.runtime.clone().reopen_container_log(req).await;
        r.map_err(status("reopen container log"))?;
        Ok(())
    }

    async fn update_container_resources(
        &self,
        id: &str,
        resources: api::LinuxContainerResources,
    ) -> Result<(), RuntimeError> {
        let req = api::UpdateContainerResourcesRequest {
            container_id: id.to_string(),
            linux: Some(resources),
            ..Default::default()
        };
        let r = self.runtime.clone().update_container_resources(req).await;
        r.map_err(status("update container resources"))?;
        Ok(())
    }

    async fn update_pod_sandbox_resources(
        &self,
        id: &str,
        overhead: Option<api::LinuxContainerResources>,
        resources: api::LinuxContainerResources,
    ) -> Result<(), RuntimeError> {
        let req = super::newer::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: id.to_string(),
            overhead,
            resources: Some(resources),
            annotations: Default::default(),
        };
        super::newer::update_pod_sandbox_resources(self.channel.clone(), req)
            .await
            .map_err(status("update pod sandbox resources"))
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_secs: i64,
    ) -> Result<api::ExecSyncResponse, RuntimeError> {
        let req = api::ExecSyncRequest {
            container_id: id.to_string(),
            cmd,
            timeout: timeout_secs,
        };
        let r = self.runtime.clone().exec_sync(req).await;
        Ok(r.map_err(status("exec sync"))?.into_inner())
    }

    async fn exec(&self, req: api::ExecRequest) -> Result<String, RuntimeError> {
        let r = self.runtime.clone().exec(req).await;
        Ok(r.map_err(status("exec"))?.into_inner().url)
    }

    async fn attach(&self, req: api::AttachRequest) -> Result<String, RuntimeError> {
        let r = self.runtime.clone().attach(req).await;
        Ok(r.map_err(status("attach"))?.into_inner().url)
    }

    async fn port_forward(&self, req: api::PortForwardRequest) -> Result<String, RuntimeError> {
        let r = self.runtime.clone().port_forward(req).await;
        Ok(r.map_err(status("port forward"))?.into_inner().url)
    }

    async fn list_container_stats(&self) -> Result<Vec<api::ContainerStats>, RuntimeError> {
        let r = self
            .runtime
            .clone()
            .list_container_stats(api::ListContainerStatsRequest { filter: None })
            .await;
        Ok(r.map_err(status("list container stats"))?
            .into_inner()
            .stats)
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>, RuntimeError> {
        let req = api::ImageStatusRequest {
            image: Some(api::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        let r = self.images.clone().image_status(req).await;
        Ok(r.map_err(status("image status"))?.into_inner().image)
    }

    async fn list_images(&self) -> Result<Vec<api::Image>, RuntimeError> {
        let r = self
            .images
            .clone()
            .list_images(api::ListImagesRequest { filter: None })
            .await;
        Ok(r.map_err(status("list images"))?.into_inner().images)
    }

    async fn image_fs_mountpoints(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .image_filesystems()
            .await?
            .into_iter()
            .filter_map(|f| f.fs_id.map(|id| id.mountpoint))
            .filter(|m| !m.is_empty())
            .collect())
    }

    async fn image_fs_usage(&self) -> Result<(u64, u64), RuntimeError> {
        Ok(self
            .image_filesystems()
            .await?
            .iter()
            .fold((0, 0), |(bytes, inodes), f| {
                (
                    bytes + f.used_bytes.as_ref().map_or(0, |v| v.value),
                    inodes + f.inodes_used.as_ref().map_or(0, |v| v.value),
                )
            }))
    }

    async fn pod_sandbox_pid(&self, id: &str) -> Result<Option<u32>, RuntimeError> {
        let req = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        let r = self.runtime.clone().pod_sandbox_status(req).await;
        let info = r.map_err(status("pod sandbox status"))?.into_inner().info;
        // containerd's and CRI-O's verbose `info`: a JSON document with the sandbox's pid.
        Ok(info
            .get("info")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
            .and_then(|v| v["pid"].as_u64())
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0))
    }

    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        let req = api::RemoveImageRequest {
            image: Some(api::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
        };
        self.images
            .clone()
            .remove_image(req)
            .await
            .map_err(status("remove image"))?;
        Ok(())
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String, RuntimeError> {
        let req = api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            auth,
            sandbox_config,
        };
        let r = self.images.clone().pull_image(req).await;
        Ok(r.map_err(status("pull image"))?.into_inner().image_ref)
    }
}
