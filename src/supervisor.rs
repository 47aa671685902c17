//! The supervisor: starts the enabled parts in order behind readiness gates and stops them
//! cleanly on SIGTERM or SIGINT.
//!
//! Order: store ready -> API server ready -> scheduler, controllers, kubelet. Each gate is a
//! [`Gate`] that later parts wait on. On a signal the supervisor stops the parts in reverse, shuts
//! the store (no new writes, everything acknowledged made durable) and returns, so the process
//! exits 0.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cli::AgentArgs;
use crate::parts::{Part, PartError};
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::store::{self, Store};

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Part(#[from] PartError),
    #[error("opening the embedded store: {0}")]
    Embedded(#[from] store::embedded::EmbeddedError),
    #[error("connecting to the datastore: {0}")]
    Store(#[from] store::Error),
    #[error("waiting for signals: {0}")]
    Signals(#[source] std::io::Error),
    #[cfg(feature = "kubelet")]
    #[error("joining {server}: {source}")]
    Join {
        server: String,
        #[source]
        source: crate::kubelet::join::JoinError,
    },
    #[error("--service-cidr {0:?}: expected an IPv4 or IPv6 CIDR such as 10.43.0.0/16")]
    BadServiceCidr(String),
    #[error("{0}")]
    Flag(String),
    #[cfg(feature = "kubelet")]
    #[error("kubelet: {0}")]
    Kubelet(#[from] crate::kubelet::run::KubeletError),
    #[error("the kubelet stopped: {0}")]
    KubeletStopped(String),
    #[cfg(feature = "controllers")]
    #[error("--cluster-cidr: {0}")]
    BadClusterCidr(crate::controllers::node_ipam::IpamError),
    #[cfg(feature = "apiserver")]
    #[error("API server: {0}")]
    Api(#[from] crate::apiserver::ApiError),
}

/// Where the cluster state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datastore {
    /// The embedded store under the data dir.
    Embedded,
    /// An etcd cluster.
    Etcd {
        endpoints: Vec<String>,
        ca_file: Option<PathBuf>,
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
    },
}

/// Everything `k1s server` needs, typed.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub datastore: Datastore,
    pub disable_kubelet: bool,
    pub disable_scheduler: bool,
    pub disable_controllers: bool,
    pub disable_addons: Vec<String>,
    /// How long a node may go without a heartbeat before it is Unknown.
    pub node_monitor_grace_period: Duration,
    /// The same for a node that never sent a heartbeat.
    pub node_startup_grace_period: Duration,
    /// `--horizontal-pod-autoscaler-sync-period`.
    pub hpa_sync_period: Duration,
    /// How often agents' kubelets are scraped for `metrics.k8s.io`.
    pub metric_resolution: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`.
    pub hpa_downscale_stabilization: Duration,
    /// Simulated nodes (`--simulated-nodes`).
    pub simulated: SimulatedNodes,
    pub https_listen_port: u16,
    pub bind_address: IpAddr,
    /// `--advertise-address`, if given.
    pub advertise_address: Option<IpAddr>,
    pub compaction_interval: Duration,
    pub tls_sans: Vec<String>,
    pub kubeconfig: PathBuf,
    pub service_cidr: String,
    /// The kubelet's settings (used when the kubelet runs on a real runtime).
    pub kubelet: KubeletConfig,
    /// The range nodes' pod CIDRs come from (`--cluster-cidr`), cut into `/node_cidr_mask`.
    pub cluster_cidr: String,
    pub node_cidr_mask: u8,
    /// The static token file (`--token-auth-file`).
    pub token_auth_file: Option<PathBuf>,
    /// Encryption at rest (`--encryption-provider-config`).
    pub encryption_provider_config: Option<PathBuf>,
    /// The admission plugins' configuration (`--admission-control-config-file`).
    pub admission_control_config_file: Option<PathBuf>,
    /// The audit log.
    pub audit: AuditOptions,
}

/// The kubelet's settings, for `k1s server` and `k1s agent`.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub data_dir: PathBuf,
    /// An existing runtime's socket; None: k1s supervises its own containerd.
    pub runtime_endpoint: Option<PathBuf>,
    /// `--kube-reserved`: CPU in millicores, the rest in bytes.
    pub reserved: std::collections::BTreeMap<String, u64>,
    pub pod_bridge: String,
    pub pod_log_dir: PathBuf,
    /// The kubelet API's port (0: any free one).
    pub kubelet_port: u16,
    /// The CA whose client certificates the kubelet API accepts (the cluster CA).
    pub client_ca: Option<String>,
    /// `--eviction-hard` and `--eviction-pressure-transition-period`.
    pub eviction_hard: String,
    pub eviction_transition: std::time::Duration,
    /// `--eviction-minimum-reclaim`.
    pub eviction_minimum_reclaim: String,
    /// `--eviction-soft`, `--eviction-soft-grace-period`, `--eviction-max-pod-grace-period`.
    pub eviction_soft: (String, String, i64),
    /// `--image-gc-high-threshold`, `--image-gc-low-threshold`, `--minimum-image-gc-age`.
    pub image_gc: (u8, u8, std::time::Duration),
    /// `--cluster-dns`, `--cluster-domain`, `--resolv-conf`.
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    pub resolv_conf: PathBuf,
    /// `--default-runtime`: the supervised containerd's default handler.
    pub default_runtime: String,
    /// `--cgroups-per-qos`, `--cgroup-root`, `--pod-max-pids`.
    pub cgroups_per_qos: bool,
    pub cgroup_root: String,
    pub pod_max_pids: i64,
    /// `--max-pods`.
    pub max_pods: u32,
    /// `--container-log-max-size` (bytes) and `--container-log-max-files`.
    pub container_logs: (u64, usize),
    /// `--allowed-unsafe-sysctls`.
    pub allowed_unsafe_sysctls: Vec<String>,
}

/// The simulated nodes' flags (`--simulated-node*`).
#[derive(Clone, Debug, Default)]
pub struct SimulatedNodes {
    pub count: usize,
    /// Capacity overrides (NAME -> quantity), over the defaults.
    pub capacity: std::collections::BTreeMap<String, String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub prefix: String,
    /// Each container's default usage (`cpu`, `memory`).
    pub usage: std::collections::BTreeMap<String, String>,
}

/// The audit log's flags (`--audit-policy-file`, `--audit-log-*`).
#[derive(Clone, Debug, Default)]
pub struct AuditOptions {
    pub policy_file: Option<PathBuf>,
    /// A file, or `-` for stdout.
    pub log_path: Option<PathBuf>,
    /// Rotate past this many megabytes (0: never).
    pub max_size_mb: u64,
    /// Rotated files kept (0: all).
    pub max_backups: usize,
    /// Days rotated files are kept (0: forever).
    pub max_age_days: u64,
}

impl ServerConfig {
    /// The parts this run enables, in start order.
    pub fn enabled_parts(&self) -> Vec<Part> {
        let mut parts = Vec::new();
        if matches!(self.datastore, Datastore::Etcd { .. }) {
            parts.push(Part::Etcd);
        }
        parts.push(Part::ApiServer);
        if !self.disable_scheduler {
            parts.push(Part::Scheduler);
        }
        if !self.disable_controllers {
            parts.push(Part::Controllers);
        }
        if !self.disable_kubelet {
            parts.push(Part::Kubelet);
        }
        parts
    }

    /// Whether this server runs a kubelet on a real container runtime.
    pub fn runs_real_kubelet(&self) -> bool {
        !self.disable_kubelet && self.simulated.count == 0
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), SupervisorError> {
        if self.simulated.count > 0 {
            Part::Kubelet.require()?;
        }
        #[cfg(feature = "controllers")]
        self.cluster_range()?;
        self.first_service_ip().map(|_| ())
    }

    /// The pod network range, for node IPAM.
    #[cfg(feature = "controllers")]
    pub fn cluster_range(&self) -> Result<crate::controllers::node_ipam::Range, SupervisorError> {
        crate::controllers::node_ipam::Range::parse(&self.cluster_cidr, self.node_cidr_mask)
            .map_err(SupervisorError::BadClusterCidr)
    }

    /// The first address of the service range: the `kubernetes` service's ClusterIP.
    pub fn first_service_ip(&self) -> Result<IpAddr, SupervisorError> {
        let bad = || SupervisorError::BadServiceCidr(self.service_cidr.clone());
        let (net, bits) = self.service_cidr.split_once('/').ok_or_else(bad)?;
        let net: IpAddr = net.parse().map_err(|_| bad())?;
        let bits: u32 = bits.parse().map_err(|_| bad())?;
        match net {
            IpAddr::V4(v4) if bits <= 30 => {
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                Ok(IpAddr::V4((u32::from(v4) & mask).wrapping_add(1).into()))
            }
            IpAddr::V6(v6) if bits <= 126 => {
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                Ok(IpAddr::V6((u128::from(v6) & mask).wrapping_add(1).into()))
            }
            _ => Err(bad()),
        }
    }

    /// Whether the built-in local-path storage runs (not `--disable=local-storage`, as k3s).
    pub fn local_storage(&self) -> bool {
        !self.disable_addons.iter().any(|a| a == "local-storage")
    }

    /// Where local-path volumes live on each node (`DATA_DIR/storage`).
    pub fn local_storage_dir(&self) -> PathBuf {
        self.data_dir.join("storage")
    }

    /// The address in the `kubernetes` Service's endpoints.
    pub fn advertise_address(&self) -> IpAddr {
        self.advertise_address
            .unwrap_or_else(|| default_advertise_address(self.bind_address))
    }

    /// Names and addresses the API server's certificate covers.
    pub fn api_sans(&self) -> Vec<String> {
        let mut sans = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
        ];
        if let Ok(ip) = self.first_service_ip() {
            sans.push(ip.to_string());
        }
        if let Some(host) = hostname() {
            sans.push(host);
        }
        if !self.bind_address.is_unspecified() {
            sans.push(self.bind_address.to_string());
        }
        sans.push(self.advertise_address().to_string());
        sans.extend(self.tls_sans.iter().cloned());
        sans
    }

    /// The embedded store's file.
    pub fn embedded_path(&self) -> PathBuf {
        self.data_dir.join("server").join("db").join("state.redb")
    }
}

/// A readiness gate: opened once, awaited by any number of later parts.
#[derive(Clone)]
pub struct Gate {
    name: &'static str,
    tx: Arc<watch::Sender<bool>>,
}

impl Gate {
    /// A closed gate.
    pub fn new(name: &'static str) -> Self {
        Gate {
            name,
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Opens the gate.
    pub fn open(&self) {
        tracing::info!(gate = self.name, "ready");
        self.tx.send_replace(true);
    }

    /// Waits until the gate is open.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|open| *open).await;
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        *self.tx.borrow()
    }
}

/// This machine's host name.
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_lowercase())
}

/// Whether this process runs as root (effective uid 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Where the admin kubeconfig goes by default: `/etc/k1s/k1s.yaml` as root, as k3s does.
pub fn default_kubeconfig(data_dir: &std::path::Path) -> PathBuf {
    if is_root() {
        PathBuf::from("/etc/k1s/k1s.yaml")
    } else {
        data_dir.join("k1s.yaml")
    }
}

/// Opens the configured store.
pub async fn open_store(cfg: &ServerConfig) -> Result<Arc<dyn Store>, SupervisorError> {
    match &cfg.datastore {
        Datastore::Embedded => {
            let opts = EmbeddedOptions::new(cfg.embedded_path());
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(opts))
                .await
                .map_err(|e| store::Error::backend("opening the embedded store", e))??;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "etcd")]
        Datastore::Etcd {
            endpoints,
            ca_file,
            cert_file,
            key_file,
        } => {
            let mut opts = store::etcd::EtcdOptions::new(endpoints.clone());
            opts.ca_file = ca_file.clone();
            opts.cert_file = cert_file.clone();
            opts.key_file = key_file.clone();
            Ok(Arc::new(store::etcd::EtcdStore::connect(opts).await?))
        }
        #[cfg(not(feature = "etcd"))]
        Datastore::Etcd { .. } => Err(PartError::NotBuilt(Part::Etcd).into()),
    }
}

/// Runs `k1s server` until SIGTERM or SIGINT.
pub async fn run_server(cfg: ServerConfig) -> Result<(), SupervisorError> {
    for part in cfg.enabled_parts() {
        part.require()?;
    }
    let signals = Signals::install()?;
    let store_ready = Gate::new("store");
    let store = open_store(&cfg).await?;
    tracing::info!(
        backend = store.backend_name(),
        revision = store.current_revision().await?,
        "store ready"
    );
    store_ready.open();

    let (stop_tx, stop_rx) = watch::channel(false);
    let compactor = tokio::spawn(store::compactor::run(
        store.clone(),
        cfg.compaction_interval,
        stop_rx.clone(),
    ));

    let api_ready = Gate::new("api");
    // Usage reports of this process's kubelets, which the API server serves on metrics.k8s.io.
    #[cfg(feature = "apiserver")]
    let metrics = crate::resource_metrics::Sources::default();
    #[cfg(feature = "apiserver")]
    let api = {
        let api_cfg = crate::apiserver::ApiConfig {
            bind_address: cfg.bind_address,
            advertise_address: cfg.advertise_address(),
            metrics: metrics.clone(),
            port: cfg.https_listen_port,
            tls_dir: cfg.data_dir.join("server").join("tls"),
            sans: cfg.api_sans(),
            kubeconfig: cfg.kubeconfig.clone(),
            service_cidr: cfg.service_cidr.clone(),
            token_auth_file: cfg.token_auth_file.clone(),
            encryption_provider_config: cfg.encryption_provider_config.clone(),
            admission_control_config_file: cfg.admission_control_config_file.clone(),
            audit: cfg.audit.clone(),
            local_storage: cfg.local_storage(),
            runtime_classes: !cfg.disable_addons.iter().any(|a| a == "runtimes"),
        };
        match crate::apiserver::start(api_cfg, store.clone(), stop_rx.clone()).await {
            Ok(api) => {
                api_ready.open();
                api
            }
            Err(e) => {
                // Close what started before failing: the store flushes and releases its file.
                stop_tx.send_replace(true);
                let _ = compactor.await;
                if let Err(se) = store.shutdown().await {
                    tracing::warn!(error = %se, "closing the store after a failed start");
                }
                return Err(e.into());
            }
        }
    };
    // One pod watch for the controllers and the scheduler of this process, as upstream's shared
    // informers give every controller of a manager one cache: each pod decoded and held once.
    #[cfg(all(
        feature = "apiserver",
        any(feature = "controllers", feature = "scheduler")
    ))]
    let informers = crate::informer::Informers::start(
        crate::apiserver::local_client::client(
            api.app.clone(),
            crate::apiserver::local_client::controller_manager_user(),
        ),
        stop_rx.clone(),
    );
    #[cfg(all(feature = "apiserver", feature = "controllers"))]
    let cluster_cidr = cfg.cluster_range()?;
    #[cfg(all(feature = "apiserver", feature = "controllers"))]
    let controllers = (!cfg.disable_controllers).then(|| {
        use crate::apiserver::local_client;
        let app = api.app.clone();
        let clients = crate::controllers::Clients {
            shared: local_client::client(app.clone(), local_client::controller_manager_user()),
            for_account: Arc::new(move |name: &str| {
                local_client::client(app.clone(), local_client::controller_user(name))
            }),
        };
        let sign_legacy = api.tokens.clone().map(|signer| {
            let sign: crate::controllers::tokens::SignLegacy =
                Arc::new(move |ns: &str, sa: &str, uid: &str, secret: &str| {
                    let claims = crate::apiserver::token::legacy_claims(ns, sa, uid, secret);
                    signer.sign(&claims).ok()
                });
            sign
        });
        let ctx = crate::controllers::Context {
            root_ca: api.ca_cert.clone(),
            sign_legacy,
            node_monitor_grace: cfg.node_monitor_grace_period,
            node_startup_grace: cfg.node_startup_grace_period,
            hpa: crate::controllers::hpa::Options {
                sync_period: cfg.hpa_sync_period,
                downscale_stabilization: cfg.hpa_downscale_stabilization,
            },
            local_path: cfg.local_storage().then(|| cfg.local_storage_dir()),
            cluster_cidr,
        };
        // Leader-elected, so several servers on one etcd run one set of controllers.
        let elector = crate::leader::Elector::new(
            clients.shared.clone(),
            "kube-system",
            "kube-controller-manager",
            &crate::leader::identity(&cfg.data_dir),
        );
        let informers = informers.clone();
        tokio::spawn(elector.run(stop_rx.clone(), move |stop| {
            crate::controllers::run(clients.clone(), ctx.clone(), informers.clone(), stop)
        }))
    });
    #[cfg(all(feature = "apiserver", feature = "scheduler"))]
    let scheduler = (!cfg.disable_scheduler).then(|| {
        use crate::apiserver::local_client;
        let client = local_client::client(api.app.clone(), local_client::scheduler_user());
        let elector = crate::leader::Elector::new(
            client.clone(),
            "kube-system",
            "kube-scheduler",
            &crate::leader::identity(&cfg.data_dir),
        );
        let pods = informers.pods.clone();
        tokio::spawn(elector.run(stop_rx.clone(), move |stop| {
            crate::scheduler::run(client.clone(), pods.clone(), stop)
        }))
    });
    #[cfg(all(feature = "apiserver", feature = "kubelet"))]
    let simulated = (cfg.simulated.count > 0).then(|| {
        use crate::apiserver::local_client;
        use crate::kubelet::simulated;
        let app = api.app.clone();
        let sim = simulated::SimConfig::from_flags(&cfg.simulated);
        let clients = simulated::Clients {
            // Pods are watched once for every node, with the controller manager's read access.
            reader: Some(local_client::client(
                app.clone(),
                local_client::controller_manager_user(),
            )),
            for_node: Arc::new(move |name: &str| {
                local_client::client(app.clone(), local_client::node_user(name))
            }),
        };
        tokio::spawn(simulated::run(
            sim,
            clients,
            metrics.clone(),
            None,
            stop_rx.clone(),
        ))
    });
    #[cfg(all(feature = "apiserver", feature = "kubelet"))]
    let kubelet = cfg.runs_real_kubelet().then(|| {
        use crate::apiserver::local_client;
        let client = local_client::client(
            api.app.clone(),
            local_client::node_user(&cfg.kubelet.node_name),
        );
        let mut kcfg = cfg.kubelet.clone();
        kcfg.client_ca = Some(api.ca_cert.clone());
        let stop = stop_rx.clone();
        let metrics = metrics.clone();
        tokio::spawn(crate::kubelet::run::run(kcfg, client, metrics, stop))
    });
    // metrics-server's part: the kubelets of agents are scraped, this process's report directly.
    #[cfg(all(feature = "apiserver", feature = "controllers"))]
    let _scraped = api.kubelets.clone().map(|kubelets| {
        use crate::apiserver::{local_client, scraper};
        let client = local_client::client(
            api.app.clone(),
            local_client::controller_user("metrics-server"),
        );
        let local = cfg
            .runs_real_kubelet()
            .then(|| cfg.kubelet.node_name.clone())
            .into_iter()
            .collect();
        let scraped = scraper::Scraped::default();
        tokio::spawn(scraper::run(
            client,
            kubelets,
            local,
            scraped.clone(),
            cfg.metric_resolution,
            stop_rx.clone(),
        ));
        metrics.register(std::sync::Arc::new(scraped))
    });
    tracing::info!(parts = ?cfg.enabled_parts(), api_ready = api_ready.is_open(), "k1s server running");

    // A kubelet that cannot run (no containerd, say) ends the server, as it ends k3s: a
    // service manager restarts it, and nobody is left with a node that never comes.
    #[cfg(all(feature = "apiserver", feature = "kubelet"))]
    let (mut kubelet, mut failed, mut kubelet_done) = (kubelet, None::<String>, false);
    #[cfg(all(feature = "apiserver", feature = "kubelet"))]
    let kubelet_failed = async {
        match kubelet.as_mut() {
            Some(k) => {
                let ended = k.await;
                // A JoinHandle is awaited once: shutdown must not wait on it again.
                kubelet_done = true;
                match ended {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => format!("the kubelet task ended: {e}"),
                    Ok(Ok(())) => std::future::pending().await,
                }
            }
            None => std::future::pending().await,
        }
    };
    #[cfg(not(all(feature = "apiserver", feature = "kubelet")))]
    let kubelet_failed = std::future::pending::<std::convert::Infallible>();
    tokio::select! {
        signal = signals.wait() => tracing::info!(signal, "shutting down"),
        e = kubelet_failed => {
            tracing::error!("the kubelet stopped: {e}; shutting down");
            #[cfg(all(feature = "apiserver", feature = "kubelet"))]
            {
                failed = Some(e);
            }
        }
    }
    stop_tx.send_replace(true);
    #[cfg(all(feature = "apiserver", feature = "controllers"))]
    if let Some(c) = controllers {
        let _ = c.await;
    }
    #[cfg(all(feature = "apiserver", feature = "scheduler"))]
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    #[cfg(all(feature = "apiserver", feature = "kubelet"))]
    if let Some(s) = simulated {
        let _ = s.await;
    }
    #[cfg(all(feature = "apiserver", feature = "kubelet"))]
    if let Some(k) = kubelet.take().filter(|_| !kubelet_done) {
        let _ = k.await;
    }
    #[cfg(feature = "apiserver")]
    api.stopped().await;
    let _ = compactor.await;
    store.shutdown().await?;
    #[cfg(all(feature = "apiserver", feature = "kubelet"))]
    if let Some(e) = failed {
        return Err(SupervisorError::KubeletStopped(e));
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Runs `k1s agent` ([`crate::kubelet::agent`]).
pub async fn run_agent(args: AgentArgs) -> Result<(), SupervisorError> {
    Part::Kubelet.require()?;
    #[cfg(feature = "kubelet")]
    return crate::kubelet::agent::run(args).await;
    #[cfg(not(feature = "kubelet"))]
    {
        let _ = args;
        Ok(())
    }
}

/// The address other servers and pods reach this one at, when `--advertise-address` is not
/// given: the bind address if it is one, else the source address of the default route (a route
/// lookup only; no packet is sent), else loopback.
pub fn default_advertise_address(bind: IpAddr) -> IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    let probe = || -> std::io::Result<IpAddr> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        // TEST-NET-1: never routed anywhere; connect() on UDP only picks the source address.
        socket.connect("192.0.2.1:9")?;
        Ok(socket.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::from([127, 0, 0, 1]),
    }
}

/// SIGTERM and SIGINT, installed before start-up so an early signal is not lost.
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> Result<Self, SupervisorError> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(SupervisorError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(SupervisorError::Signals)?,
        })
    }

    pub(crate) async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
