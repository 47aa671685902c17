//! The kubelet's flags, shared by `k1s server` and `k1s agent`, with upstream's and k3s's names.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;

use super::parse_key_value;
use crate::supervisor::{KubeletConfig, SupervisorError};

#[derive(Debug, Args, Clone)]
pub struct KubeletArgs {
    /// This node's name (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// The address this node reports (default: the advertise address).
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<IpAddr>,
    /// An existing CRI runtime's socket (containerd, CRI-O) instead of the containerd k1s
    /// supervises; its CNI configuration is then the runtime's own.
    #[arg(long, value_name = "SOCKET")]
    pub container_runtime_endpoint: Option<PathBuf>,
    /// Resources held back from pods for k1s and the system (comma-separated NAME=QUANTITY,
    /// e.g. cpu=250m,memory=256Mi).
    #[arg(long, value_delimiter = ',', value_parser = parse_key_value, value_name = "NAME=QTY")]
    pub kube_reserved: Vec<(String, String)>,
    /// The Linux bridge pods are attached to.
    #[arg(long, default_value = "k1s0", value_name = "NAME")]
    pub pod_bridge: String,
    /// Where containers' logs are written (`NAMESPACE_POD_UID/CONTAINER/N.log`).
    #[arg(long, default_value = "/var/log/pods", value_name = "DIR")]
    pub pod_log_dir: PathBuf,
    /// The kubelet API's port (logs, exec, port-forward, stats; 0: any free port).
    #[arg(long, default_value_t = 10250, value_name = "PORT")]
    pub kubelet_port: u16,
    /// The cluster DNS service's addresses, written into ClusterFirst pods' resolv.conf
    /// (comma-separated; none: such pods get the node's resolver, as upstream's kubelet).
    #[arg(long, value_delimiter = ',', value_name = "IP")]
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain, in ClusterFirst pods' search path.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// The node's resolver configuration, for Default pods (and the search path of others).
    #[arg(long, default_value = "/etc/resolv.conf", value_name = "FILE")]
    pub resolv_conf: PathBuf,
    /// Hard eviction thresholds (SIGNAL<QUANTITY or SIGNAL<PERCENT%, comma-separated;
    /// signals memory.available, nodefs.available, nodefs.inodesFree, imagefs.available,
    /// imagefs.inodesFree, pid.available).
    #[arg(long, default_value = DEFAULT_EVICTION_HARD, value_name = "THRESHOLDS")]
    pub eviction_hard: String,
    /// Soft eviction thresholds, as --eviction-hard; each acts once crossed for its grace
    /// period.
    #[arg(long, default_value = "", value_name = "THRESHOLDS")]
    pub eviction_soft: String,
    /// Each soft threshold's grace period (SIGNAL=DURATION, comma-separated, e.g.
    /// memory.available=1m30s).
    #[arg(long, default_value = "", value_name = "SIGNAL=DURATION")]
    pub eviction_soft_grace_period: String,
    /// The longest grace period (seconds) a pod evicted for a soft threshold gets; negative:
    /// the pod's own.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "SECONDS"
    )]
    pub eviction_max_pod_grace_period: i64,
    /// How much more than a threshold must be available again before a met threshold is
    /// resolved (SIGNAL=QUANTITY or SIGNAL=PERCENT%, comma-separated, e.g.
    /// imagefs.available=2Gi).
    #[arg(long, default_value = "", value_name = "SIGNAL=QUANTITY")]
    pub eviction_minimum_reclaim: String,
    /// How long a pressure condition stays after its signal recovers.
    #[arg(long, default_value = "5m", value_parser = super::parse_duration, value_name = "DURATION")]
    pub eviction_pressure_transition_period: std::time::Duration,
    /// Percent of the image filesystem used at which unused images are removed (100: never).
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100), value_name = "PERCENT")]
    pub image_gc_high_threshold: u8,
    /// Percent of the image filesystem used that image collection frees down to.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100), value_name = "PERCENT")]
    pub image_gc_low_threshold: u8,
    /// How long an unused image is kept after it is first seen.
    #[arg(long, default_value = "2m", value_parser = super::parse_duration, value_name = "DURATION")]
    pub minimum_image_gc_age: std::time::Duration,
    /// The OCI runtime pods without a RuntimeClass run on, in the containerd k1s supervises
    /// (runc; crun or youki when installed, each also a RuntimeClass handler of that name).
    #[arg(long, default_value = "runc", value_name = "NAME")]
    pub default_runtime: String,
    /// Puts pods in cgroups by QoS class under `kubepods` (limited to the node's allocatable),
    /// each pod in its own with the pod's limits; false: the runtime's default cgroups.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub cgroups_per_qos: bool,
    /// The cgroup `kubepods` is made under.
    #[arg(long, default_value = "/", value_name = "CGROUP")]
    pub cgroup_root: String,
    /// The most processes each pod may run (-1: no limit).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_name = "N")]
    pub pod_max_pids: i64,
    /// The most pods this node runs (the node's `pods` capacity).
    #[arg(long, default_value_t = 110, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_pods: u32,
    /// The size at which a container's log is rotated.
    #[arg(long, default_value = "10Mi", value_name = "QUANTITY")]
    pub container_log_max_size: String,
    /// The most log files a container keeps (the live one included; at least 2).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..), value_name = "N")]
    pub container_log_max_files: u32,
    /// Unsafe sysctls (or prefixes ending in `*`, e.g. `kernel.msg*,net.core.somaxconn`)
    /// pods may set besides the safe ones; a pod setting another is refused
    /// (SysctlForbidden).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub allowed_unsafe_sysctls: Vec<String>,
}

/// Upstream's `--eviction-hard` defaults on Linux.
pub const DEFAULT_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%,imagefs.inodesFree<5%";

impl KubeletArgs {
    /// The supervisor's view; `node_ip` and `hostname` fill what was not given.
    pub fn to_config(
        &self,
        data_dir: &std::path::Path,
        default_ip: IpAddr,
        hostname: Option<String>,
    ) -> Result<KubeletConfig, SupervisorError> {
        let mut reserved = std::collections::BTreeMap::new();
        for (k, v) in &self.kube_reserved {
            let milli = crate::quantity::milli(v)
                .filter(|m| *m >= 0)
                .ok_or_else(|| {
                    SupervisorError::Flag(format!("--kube-reserved: {k}={v:?} is not a quantity"))
                })?;
            // CPU is kept in millicores, everything else in whole units (bytes).
            let units = if k == "cpu" { milli } else { milli / 1000 };
            reserved.insert(k.clone(), u64::try_from(units).unwrap_or(u64::MAX));
        }
        let node_name = self
            .node_name
            .clone()
            .or(hostname)
            .unwrap_or_else(|| "k1s-node".into());
        if !crate::names::is_subdomain(&node_name) {
            let from = if self.node_name.is_some() {
                "--node-name"
            } else {
                "the hostname (set --node-name)"
            };
            return Err(SupervisorError::Flag(format!(
                "node name {node_name:?} from {from} is not a lowercase RFC 1123 subdomain: \
                 lower case letters, digits, '-' and '.', at most 253 characters"
            )));
        }
        if self.pod_bridge.is_empty() || self.pod_bridge.len() > 15 {
            return Err(SupervisorError::Flag(format!(
                "--pod-bridge {:?}: a Linux interface name is 1 to 15 characters",
                self.pod_bridge
            )));
        }
        if !self.cgroup_root.starts_with('/')
            || self.cgroup_root.split('/').any(|p| p == "." || p == "..")
        {
            return Err(SupervisorError::Flag(format!(
                "--cgroup-root {:?}: an absolute cgroup path such as / or /edge is expected",
                self.cgroup_root
            )));
        }
        if self.image_gc_low_threshold >= self.image_gc_high_threshold
            && self.image_gc_high_threshold < 100
        {
            return Err(SupervisorError::Flag(format!(
                "--image-gc-low-threshold ({}) must be less than --image-gc-high-threshold ({})",
                self.image_gc_low_threshold, self.image_gc_high_threshold
            )));
        }
        let container_log_max_size = crate::quantity::milli(&self.container_log_max_size)
            .filter(|m| *m > 0)
            .map(|m| u64::try_from(m / 1000).unwrap_or(u64::MAX))
            .ok_or_else(|| {
                SupervisorError::Flag(format!(
                    "--container-log-max-size {:?}: a positive quantity such as 10Mi is expected",
                    self.container_log_max_size
                ))
            })?;
        #[cfg(feature = "kubelet")]
        crate::kubelet::pods::admit::Sysctls::new(&self.allowed_unsafe_sysctls)
            .map_err(|e| SupervisorError::Flag(format!("--allowed-unsafe-sysctls: {e}")))?;
        #[cfg(feature = "kubelet")]
        crate::kubelet::eviction::parse(&self.eviction_hard)
            .map_err(|e| SupervisorError::Flag(e.to_string()))?;
        #[cfg(feature = "kubelet")]
        crate::kubelet::eviction::parse_soft(&self.eviction_soft, &self.eviction_soft_grace_period)
            .map_err(|e| SupervisorError::Flag(e.to_string()))?;
        #[cfg(feature = "kubelet")]
        crate::kubelet::eviction::with_min_reclaim(Vec::new(), &self.eviction_minimum_reclaim)
            .map_err(|e| SupervisorError::Flag(e.to_string()))?;
        Ok(KubeletConfig {
            node_name,
            node_ip: self.node_ip.unwrap_or(default_ip),
            data_dir: data_dir.to_path_buf(),
            runtime_endpoint: self.container_runtime_endpoint.clone(),
            reserved,
            pod_bridge: self.pod_bridge.clone(),
            pod_log_dir: self.pod_log_dir.clone(),
            kubelet_port: self.kubelet_port,
            client_ca: None,
            eviction_hard: self.eviction_hard.clone(),
            eviction_transition: self.eviction_pressure_transition_period,
            eviction_minimum_reclaim: self.eviction_minimum_reclaim.clone(),
            eviction_soft: (
                self.eviction_soft.clone(),
                self.eviction_soft_grace_period.clone(),
                self.eviction_max_pod_grace_period,
            ),
            image_gc: (
                self.image_gc_high_threshold,
                self.image_gc_low_threshold,
                self.minimum_image_gc_age,
            ),
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            resolv_conf: self.resolv_conf.clone(),
            default_runtime: self.default_runtime.clone(),
            cgroups_per_qos: self.cgroups_per_qos,
            cgroup_root: self.cgroup_root.clone(),
            pod_max_pids: self.pod_max_pids,
            max_pods: self.max_pods,
            container_logs: (
                container_log_max_size,
                self.container_log_max_files as usize,
            ),
            allowed_unsafe_sysctls: self.allowed_unsafe_sysctls.clone(),
        })
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum ImagesCommand {
    /// Import image tarballs (OCI layout or `docker save` archives) into the node's containerd,
    /// as k1s does on start for every `*.tar` in DATA_DIR/agent/images/.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tarballs.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The data dir of the k1s whose containerd gets the images.
    #[arg(long, value_name = "DIR", default_value = super::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Another containerd's socket instead.
    #[arg(long, value_name = "SOCKET")]
    pub container_runtime_endpoint: Option<PathBuf>,
}

/// Runs `k1s images ...`; the exit code.
#[cfg(feature = "kubelet")]
pub fn images_command(cmd: ImagesCommand) -> i32 {
    let ImagesCommand::Import(args) = cmd;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("k1s: starting the runtime: {e}");
            return 1;
        }
    };
    let socket = args
        .container_runtime_endpoint
        .clone()
        .unwrap_or_else(|| crate::kubelet::containerd::Layout::new(&args.data_dir).socket());
    rt.block_on(async move {
        let channel = match crate::kubelet::containerd::wait_ready(
            &socket,
            std::time::Duration::from_secs(5),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("k1s: {e} (is `k1s server` or `k1s agent` running?)");
                return 1;
            }
        };
        let mut code = 0;
        for f in &args.files {
            match crate::kubelet::images::import::import_file(&channel, f).await {
                Ok(names) => {
                    for n in names {
                        println!("{n}");
                    }
                }
                Err(e) => {
                    eprintln!("k1s: {}: {e}", f.display());
                    code = 1;
                }
            }
        }
        code
    })
}

/// Runs `k1s images ...` in a binary without the kubelet.
#[cfg(not(feature = "kubelet"))]
pub fn images_command(_: ImagesCommand) -> i32 {
    eprintln!("k1s: images: the kubelet is not built into this binary");
    1
}
