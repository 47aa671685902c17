//! The container runtime as the kubelet's policy sees it: a narrow [`Runtime`] trait over CRI
//! v1's RuntimeService and ImageService, in CRI's own types. [`grpc::Cri`] speaks it to
//! containerd (or CRI-O) over the runtime's socket; unit tests of the pod worker use a recorded
//! fake instead.

pub mod grpc;
mod newer;

use async_trait::async_trait;
pub use k8s_cri::v1 as api;

/// The labels the kubelet puts on sandboxes and containers, and finds them by.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cri {op}: {message} ({code:?})")]
    Status {
        op: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("cri {op}: the runtime answered without {what}")]
    Incomplete {
        op: &'static str,
        what: &'static str,
    },
    /// What the node had to ready before asking the runtime failed (the pod's cgroup).
    #[error("{0}")]
    Node(String),
}

impl RuntimeError {
    /// Whether the sandbox, container or image asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            RuntimeError::Status {
                code: tonic::Code::NotFound,
                ..
            }
        ) || matches!(self, RuntimeError::Status { message, .. } if message.contains("not found"))
    }
}

/// What the kubelet asks of a container runtime.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// The runtime's name and version (`containerd`, `v1.6.20`).
    async fn version(&self) -> Result<api::VersionResponse, RuntimeError>;
    /// The runtime's conditions, and the handlers it offers when it says (CRI `Status`).
    async fn status(&self) -> Result<api::StatusResponse, RuntimeError>;
    /// Creates and starts a pod sandbox; its ID.
    /// Runs a sandbox with the runtime's handler `runtime_handler` (empty: its default).
    async fn run_pod_sandbox(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, RuntimeError>;
    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError>;
    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError>;
    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, RuntimeError>;
    /// The sandboxes, of one pod (by uid) or all.
    async fn list_pod_sandboxes(
        &self,
        pod_uid: Option<&str>,
    ) -> Result<Vec<api::PodSandbox>, RuntimeError>;
    /// Creates a container in a sandbox; its ID.
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, RuntimeError>;
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError>;
    /// Stops a container: its stop signal, then SIGKILL after `timeout_secs`.
    async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), RuntimeError>;
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError>;
    /// The containers, of one pod (by uid) or all.
    async fn list_containers(
        &self,
        pod_uid: Option<&str>,
    ) -> Result<Vec<api::Container>, RuntimeError>;
    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, RuntimeError>;
    /// Makes the runtime reopen a container's log file (after the kubelet renamed it).
    async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError>;
    /// Changes a running container's cgroup limits in place (an in-place pod resize).
    async fn update_container_resources(
        &self,
        id: &str,
        resources: api::LinuxContainerResources,
    ) -> Result<(), RuntimeError>;
    /// Runs a command in a container and waits for it.
    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_secs: i64,
    ) -> Result<api::ExecSyncResponse, RuntimeError>;
    /// A streaming URL for a command in a container (the runtime's streaming server).
    async fn exec(&self, req: api::ExecRequest) -> Result<String, RuntimeError>;
    /// A streaming URL attached to a container's main process.
    async fn attach(&self, req: api::AttachRequest) -> Result<String, RuntimeError>;
    /// A streaming URL forwarding ports of a pod sandbox.
    async fn port_forward(&self, req: api::PortForwardRequest) -> Result<String, RuntimeError>;
    /// Tells the runtime a sandbox's resources after the kubelet resized the pod's cgroup (CRI
    /// `UpdatePodSandboxResources`, which passes them on to NRI plugins): the pod's without
    /// its overhead, and the overhead. Runtimes older than CRI 1.33 answer `Unimplemented`.
    async fn update_pod_sandbox_resources(
        &self,
        id: &str,
        overhead: Option<api::LinuxContainerResources>,
        resources: api::LinuxContainerResources,
    ) -> Result<(), RuntimeError>;
    /// Every container's CPU and memory statistics.
    async fn list_container_stats(&self) -> Result<Vec<api::ContainerStats>, RuntimeError>;
    /// The image's record if the runtime has it.
    async fn image_status(&self, image: &str) -> Result<Option<api::Image>, RuntimeError>;
    /// Every image the runtime holds.
    async fn list_images(&self) -> Result<Vec<api::Image>, RuntimeError>;
    /// Where the runtime keeps images: the mountpoints of its image filesystems.
    async fn image_fs_mountpoints(&self) -> Result<Vec<String>, RuntimeError>;
    /// What the images take on the runtime's image filesystems: bytes and inodes used.
    async fn image_fs_usage(&self) -> Result<(u64, u64), RuntimeError>;
    /// The process holding a pod sandbox's namespaces, from the runtime's verbose status.
    async fn pod_sandbox_pid(&self, id: &str) -> Result<Option<u32>, RuntimeError>;
    /// Removes an image (by id, tag or digest).
    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError>;
    /// Pulls an image; its reference.
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String, RuntimeError>;
}
