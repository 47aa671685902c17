//! The kubelet on a real runtime, put together: containerd (supervised by k1s, or the one at
//! `--container-runtime-endpoint`), k1s's pause image and the air-gap images of
//! `DATA_DIR/agent/images/`, the Node with its heartbeats, the pod network once node IPAM has
//! given the node its pod CIDR, and the pod workers. Stopping leaves the pods running (and
//! stops the supervised containerd), so the next start adopts them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;

use super::containerd::{self, config, Containerd, Layout, Options};
use super::cri::{grpc::Cri, Runtime};
use super::pods::{self, spec::Env, Shared};
use super::{api, images, lease, node};
use crate::supervisor::KubeletConfig;

/// How long containerd may take to answer after it starts.
const RUNTIME_READY: Duration = Duration::from_secs(60);
/// How often the node's status is posted (the kubelet's `nodeStatusReportFrequency`).
const STATUS_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("containerd: {0}")]
    Containerd(#[from] containerd::ContainerdError),
    #[error("container runtime: {0}")]
    Runtime(#[from] super::cri::RuntimeError),
    #[error("images: {0}")]
    Images(#[from] images::ImageError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("kubelet API: {0}")]
    Api(#[from] api::KubeletApiError),
    #[error("--default-runtime {0}: no such OCI runtime in PATH (runc, or one of {others:?})", others = config::OTHER_RUNTIMES)]
    NoRuntime(String),
    #[error("pod cgroups: {0}")]
    Cgroups(#[from] super::cgroups::CgroupError),
    #[error("containerd is not installed ({0} not found in PATH): install Debian's containerd, runc and containernetworking-plugins, or pass --disable-kubelet")]
    NoContainerd(String),
}

fn in_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(binary).is_file()))
}

/// The lowest oom_score_adj containers may get: this process's own, when it may not lower it.
fn min_oom_score_adj() -> i64 {
    if config::has_cap_sys_resource() {
        return -1000;
    }
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs the kubelet until `stop` turns true.
pub async fn run(
    cfg: KubeletConfig,
    client: Client,
    metrics: crate::resource_metrics::Sources,
    mut stop: watch::Receiver<bool>,
) -> Result<(), KubeletError> {
    let layout = Layout::new(&cfg.data_dir);
    let mut supervised = None;
    let mut configured = Vec::new();
    let channel = match &cfg.runtime_endpoint {
        Some(socket) => containerd::wait_ready(socket, RUNTIME_READY).await?,
        None => {
            if !in_path("containerd") {
                return Err(KubeletError::NoContainerd("containerd".into()));
            }
            let opts = Options {
                default_runtime: cfg.default_runtime.clone(),
                ..Options::default()
            };
            if !opts.handlers().contains(&opts.default_runtime) {
                return Err(KubeletError::NoRuntime(opts.default_runtime));
            }
            configured = opts.handlers();
            tracing::info!(handlers = ?opts.handlers(), default = %opts.default_runtime, "OCI runtimes");
            let cd = Containerd::start(layout.clone(), &opts, &PathBuf::from("containerd"))?;
            let channel = cd.ready(RUNTIME_READY).await?;
            supervised = Some(cd);
            channel
        }
    };
    let runtime: Arc<dyn Runtime> = Arc::new(Cri::new(channel.clone()));
    let version = runtime.version().await?;
    let runtime_version = format!(
        "{}://{}",
        version.runtime_name,
        version.runtime_version.trim_start_matches('v')
    );
    let tmp = cfg.data_dir.join("agent").join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|source| KubeletError::Io {
        context: format!("creating {}", tmp.display()),
        source,
    })?;
    images::ensure_pause(&channel, config::PAUSE_IMAGE, &tmp).await?;
    // The pause image and the air-gapped ones are never collected: nothing could pull them.
    let mut pinned: std::collections::HashSet<String> =
        images::import_dir(&channel, &images::images_dir(&cfg.data_dir))
            .await
            .into_iter()
            .collect();
    pinned.insert(config::PAUSE_IMAGE.to_string());
    // The image filesystem, as the runtime reports it (CRI ImageFsInfo): a runtime of the
    // user's own keeps its images elsewhere.
    let imagefs = match runtime.image_fs_mountpoints().await {
        Ok(m) => m
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists()),
        Err(e) => {
            tracing::warn!("asking the runtime where its images are: {e}");
            None
        }
    }
    .unwrap_or_else(|| layout.root());
    tracing::debug!(imagefs = %imagefs.display(), "image filesystem");
    let (high, low, min_age) = cfg.image_gc;
    let images_gc = Arc::new(images::gc::Collector::new(
        runtime.clone(),
        images::gc::Policy { high, low, min_age },
        imagefs.clone(),
        pinned,
    ));

    // The kubelet API's port first: the node reports it.
    let listener = api::bind(std::net::SocketAddr::from(([0, 0, 0, 0], cfg.kubelet_port))).await?;
    let kubelet_port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(cfg.kubelet_port);
    let mut facts = node::Facts::gather(
        &cfg.node_name,
        cfg.node_ip,
        &cfg.data_dir,
        &runtime_version,
        cfg.reserved.clone(),
        kubelet_port,
    );
    let health: super::runtime_health::Shared = Default::default();
    let reported = match runtime.status().await {
        Ok(s) => {
            let mut h = health.lock().unwrap_or_else(|p| p.into_inner());
            h.observe(Some(&s), std::time::Instant::now());
            s.runtime_handlers
        }
        Err(e) => {
            tracing::warn!("asking the runtime for its handlers: {e}");
            Vec::new()
        }
    };
    facts.health = Some(health.clone());
    facts.runtime_handlers = node::runtime_handlers(&reported, &configured);
    facts.max_pods = cfg.max_pods;
    // Upstream's allocatable holds back what the hard eviction thresholds keep free.
    for t in super::eviction::parse(&cfg.eviction_hard).unwrap_or_default() {
        let (resource, capacity) = match t.signal {
            super::eviction::Signal::MemoryAvailable => ("memory", facts.memory_bytes),
            super::eviction::Signal::NodefsAvailable => ("ephemeral-storage", facts.storage_bytes),
            _ => continue,
        };
        facts
            .eviction_reserved
            .insert(resource.to_string(), t.limit(capacity));
    }
    // The pods' cgroups before any pod starts, as upstream's container manager.
    let cgroups = if cfg.cgroups_per_qos {
        let m = super::cgroups::Manager::detect(&super::cgroups::Options {
            root: cfg.cgroup_root.clone(),
            pod_max_pids: cfg.pod_max_pids,
        })?;
        let (cpu, memory) = facts.allocatable_cpu_memory();
        m.setup(cpu, memory, &facts.hugepages)?;
        tracing::info!(root = %cfg.cgroup_root, "pod cgroups ready");
        Some(Arc::new(m))
    } else {
        None
    };
    loop {
        match node::register(&client, &facts).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(node = %cfg.node_name, "registering the node: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    tracing::info!(node = %cfg.node_name, runtime = %runtime_version, "node registered");
    let recorder = crate::events::Recorder::new(client.clone(), "kubelet", Some(&cfg.node_name));
    let mut seen = std::collections::HashMap::new();
    node_events(&recorder, &facts, &mut seen, true).await;
    {
        let recorder = recorder.clone();
        let node = node_reference(&cfg.node_name);
        let failed = move |e: &images::gc::GcError| {
            let (recorder, node, msg) = (recorder.clone(), node.clone(), e.to_string());
            tokio::spawn(async move {
                recorder
                    .record(
                        &node,
                        crate::events::Type::Warning,
                        "FreeDiskSpaceFailed",
                        &msg,
                    )
                    .await;
            });
        };
        tokio::spawn(images_gc.clone().run(failed, stop.clone()));
    }
    let usage = super::stats::Latest::default();
    let evictions: super::eviction::Evictions = Default::default();
    let (pressure_tx, pressure_rx) = watch::channel(super::eviction::Pressure::default());
    let node_files: Arc<dyn super::eviction::Probe> = Arc::new(super::eviction::System {
        nodefs: cfg.data_dir.clone(),
        imagefs,
        pods_dir: cfg.data_dir.join("agent").join("pods"),
        log_dir: cfg.pod_log_dir.clone(),
    });
    let manager = super::eviction::Manager {
        client: client.clone(),
        node: cfg.node_name.clone(),
        thresholds: {
            let (soft, graces, _) = &cfg.eviction_soft;
            let mut t = super::eviction::parse(&cfg.eviction_hard).unwrap_or_default();
            t.extend(super::eviction::parse_soft(soft, graces).unwrap_or_default());
            super::eviction::with_min_reclaim(t.clone(), &cfg.eviction_minimum_reclaim).unwrap_or(t)
        },
        max_pod_grace: cfg.eviction_soft.2,
        transition: cfg.eviction_transition,
        probe: node_files.clone(),
        usage: usage.clone(),
        pressure: facts.pressure.clone(),
        evictions: evictions.clone(),
        images: Some(images_gc.clone()),
        events: Some((recorder.clone(), node_reference(&cfg.node_name))),
    };
    tokio::spawn(manager.run(pressure_tx, stop.clone()));
    // Starts from what the node was registered with, so the first change is posted.
    let registered = health
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .problem(std::time::Instant::now());
    let (ready_tx, ready_rx) = watch::channel(registered);
    tokio::spawn(super::runtime_health::watch_runtime(
        runtime.clone(),
        health,
        ready_tx,
        stop.clone(),
    ));
    let heartbeats = tokio::spawn(heartbeat(
        client.clone(),
        facts.clone(),
        (pressure_rx, ready_rx),
        recorder.clone(),
        seen,
        stop.clone(),
    ));
    tokio::spawn(super::container_logs::run(
        runtime.clone(),
        super::container_logs::Policy {
            max_size: cfg.container_logs.0,
            max_files: cfg.container_logs.1,
        },
        cfg.pod_log_dir.clone(),
        stop.clone(),
    ));
    tokio::spawn(super::volumes::local_path::run(
        client.clone(),
        super::volumes::local_path::notes_dir(&cfg.data_dir.join("agent").join("pods")),
        stop.clone(),
    ));
    let _registered = metrics.register(Arc::new(usage.clone()));
    tokio::spawn(super::stats::run(
        cfg.node_name.clone(),
        runtime.clone(),
        usage.clone(),
        stop.clone(),
    ));
    match &cfg.client_ca {
        Some(ca) => {
            let cert = api::serving_cert(&cfg.node_name, cfg.node_ip)?;
            let state = Arc::new(
                api::ApiState::new(
                    cfg.node_name.clone(),
                    runtime.clone(),
                    client.clone(),
                    usage.clone(),
                    api::info::kubelet_configuration(
                        &cfg,
                        listener.local_addr().map_or(cfg.kubelet_port, |a| a.port()),
                    ),
                )
                .with_probe(node_files.clone()),
            );
            let ca = ca.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                if let Err(e) = api::serve(listener, cert, &ca, state, stop).await {
                    tracing::error!("the kubelet API stopped: {e}");
                }
            });
            tracing::info!(port = kubelet_port, "kubelet API listening");
        }
        None => tracing::warn!("no cluster CA to check callers against: the kubelet API is off"),
    }

    // The pod network, once node IPAM has handed out the node's block.
    if cfg.runtime_endpoint.is_none() {
        let Some(cidr) = node::pod_cidr(&client, &cfg.node_name, &mut stop).await else {
            return Ok(());
        };
        let conf_dir = layout.cni_conf_dir();
        let conf = conf_dir.join("10-k1s.conflist");
        std::fs::write(
            &conf,
            config::cni_conflist(&cfg.pod_bridge, &cidr, &layout.cni_ipam_dir()),
        )
        .map_err(|source| KubeletError::Io {
            context: format!("writing {}", conf.display()),
            source,
        })?;
        tokio::spawn(keep_nat(
            cfg.pod_bridge.clone(),
            cidr.clone(),
            recorder.clone(),
            node_reference(&cfg.node_name),
            stop.clone(),
        ));
        tracing::info!(%cidr, bridge = %cfg.pod_bridge, "pod network configured");
    }

    let services = watch_services(&client, stop.clone()).await;
    let node = watch_node(&client, &cfg.node_name, stop.clone()).await;
    let shared = Arc::new(Shared {
        client,
        runtime,
        env: Env {
            pod_log_dir: cfg.pod_log_dir.clone(),
            memory_bytes: facts.memory_bytes,
            min_oom_score_adj: min_oom_score_adj(),
            node_name: cfg.node_name.clone(),
            host_ip: cfg.node_ip.to_string(),
            allocatable: {
                let (cpu_milli, memory_bytes) = facts.schedulable_cpu_memory();
                pods::spec::Allocatable {
                    cpu_milli,
                    memory_bytes,
                }
            },
            pods_dir: cfg.data_dir.join("agent").join("pods"),
            hugepage_sizes: super::cgroups::fs::hugepage_sizes(Path::new(
                super::cgroups::fs::HUGEPAGES_DIR,
            )),
            dns: pods::dns::ClusterDns {
                servers: cfg.cluster_dns.iter().map(ToString::to_string).collect(),
                domain: cfg.cluster_domain.clone(),
                host: pods::dns::HostDns::read(&cfg.resolv_conf),
            },
        },
        mounter: Box::new(super::volumes::mount::System),
        services,
        evictions,
        events: recorder.clone(),
        cgroups,
        allocations: pods::resize::Allocations::load(
            &cfg.data_dir.join("agent").join("allocated_pods_state.json"),
            facts.schedulable_cpu_memory(),
            cfg.max_pods,
        ),
        pressure: facts.pressure.clone(),
        sysctls: pods::admit::Sysctls::new(&cfg.allowed_unsafe_sysctls).unwrap_or_else(|e| {
            tracing::warn!("--allowed-unsafe-sysctls: {e}; only the safe sysctls are allowed");
            pods::admit::Sysctls::new(&[]).unwrap_or_default()
        }),
        node,
    });
    pods::run(shared, stop.clone()).await;
    let _ = heartbeats.await;
    if let Some(mut cd) = supervised {
        tokio::task::spawn_blocking(move || cd.stop(Duration::from_secs(10)))
            .await
            .ok();
    }
    Ok(())
}

/// Renews the Lease every 10 s and posts the status every minute.
async fn heartbeat(
    client: Client,
    facts: node::Facts,
    (mut pressure, mut ready): (
        watch::Receiver<super::eviction::Pressure>,
        watch::Receiver<Option<String>>,
    ),
    recorder: crate::events::Recorder,
    mut seen: std::collections::HashMap<String, String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut lease_tick = tokio::time::interval(lease::RENEW_EVERY);
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    status_tick.tick().await;
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                if let Err(e) = lease::renew(&client, &facts.name).await {
                    tracing::warn!(node = %facts.name, "renewing the node lease: {e}");
                }
            }
            _ = status_tick.tick() => {
                if let Err(e) = node::post_status(&client, &facts).await {
                    tracing::warn!(node = %facts.name, "posting the node status: {e}");
                }
            }
            // New pressure conditions and readiness are posted at once, with their events.
            Ok(()) = async { tokio::select! { r = pressure.changed() => r, r = ready.changed() => r } } => {
                node_events(&recorder, &facts, &mut seen, false).await;
                if let Err(e) = node::post_status(&client, &facts).await {
                    tracing::warn!(node = %facts.name, "posting the node status: {e}");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Keeps the pods' outbound NAT in place: set at once, checked every minute (a firewall
/// reload or `iptables -F` would take it away); a failure is logged and recorded on the node
/// once, until it works again.
async fn keep_nat(
    bridge: String,
    cidr: String,
    recorder: crate::events::Recorder,
    node: k8s_openapi::api::core::v1::ObjectReference,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut failing = false;
    let mut legacy = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let (b, c) = (bridge.clone(), cidr.clone());
        let first = std::mem::take(&mut legacy);
        let done = tokio::task::spawn_blocking(move || {
            let changed = super::masquerade::ensure(&super::masquerade::System, &b, &c)?;
            if first {
                // Once per start: chains an older k1s's pods left behind.
                match super::masquerade::remove_legacy(&super::masquerade::System) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(chains = n, "removed per-pod NAT chains of an older k1s")
                    }
                    Err(e) => tracing::warn!("removing per-pod NAT chains of an older k1s: {e}"),
                }
            }
            Ok::<bool, super::masquerade::MasqueradeError>(changed)
        })
        .await;
        match done {
            Ok(Ok(changed)) => {
                if changed {
                    tracing::info!(%bridge, %cidr, "pods' outbound NAT set");
                }
                failing = false;
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                let msg = format!("pods get no outbound NAT (is iptables installed?): {e}");
                tracing::warn!("{msg}");
                recorder
                    .record(
                        &node,
                        crate::events::Type::Warning,
                        "FailedOutboundNAT",
                        &msg,
                    )
                    .await;
            }
            Ok(Err(_)) => {}
            Err(e) => tracing::warn!("setting the pods' outbound NAT: {e}"),
        }
    }
}

fn node_reference(name: &str) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        kind: Some("Node".into()),
        name: Some(name.to_string()),
        uid: Some(name.to_string()),
        ..Default::default()
    }
}

/// The node's events for its conditions that changed since `seen` (`NodeHasSufficientMemory`,
/// `NodeHasDiskPressure`, ..., `NodeReady`), after `Starting` when the kubelet starts, as the
/// upstream kubelet records them.
async fn node_events(
    recorder: &crate::events::Recorder,
    facts: &node::Facts,
    seen: &mut std::collections::HashMap<String, String>,
    starting: bool,
) {
    use crate::events::Type;
    let name = &facts.name;
    let node = node_reference(name);
    if starting {
        recorder
            .record(&node, Type::Normal, "Starting", "Starting kubelet.")
            .await;
    }
    for c in facts.status().conditions.unwrap_or_default() {
        let Some(reason) = c.reason.filter(|r| r.starts_with("Kubelet")) else {
            continue;
        };
        let event = match reason.as_str() {
            "KubeletReady" => "NodeReady".to_string(),
            r => r.replacen("Kubelet", "Node", 1),
        };
        if seen.insert(c.type_.clone(), event.clone()).as_ref() == Some(&event) {
            continue;
        }
        let msg = format!("Node {name} status is now: {event}");
        recorder.record(&node, Type::Normal, &event, &msg).await;
    }
}

/// A cache of this node's Node object (its labels, taints and allocatable, for admission),
/// filled before the first pod is admitted, or after 10 s at the latest.
async fn watch_node(
    client: &kube::Client,
    name: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Node> {
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let cfg = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
    cache(api, cfg, "this node", stop).await
}

/// A cache of the cluster's Services (their variables go into every container's environment),
/// filled before the first pod starts, or after 10 s at the latest.
async fn watch_services(
    client: &kube::Client,
    stop: tokio::sync::watch::Receiver<bool>,
) -> kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Service> {
    let api: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::all(client.clone());
    cache(api, Default::default(), "services", stop).await
}

/// A reflector of `api` (filtered by `cfg`), running until `stop`, once listed or after 10 s.
async fn cache<K>(
    api: kube::Api<K>,
    cfg: kube::runtime::watcher::Config,
    what: &'static str,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use futures::StreamExt;
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    let (store, writer) = reflector::store();
    let events = reflector(writer, watcher(api, cfg))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Err(e)) => tracing::warn!("watching {what}: {e}"),
                    Some(Ok(_)) => {}
                    None => return,
                },
                _ = stop.changed() => return,
            }
        }
    });
    if tokio::time::timeout(Duration::from_secs(10), store.wait_until_ready())
        .await
        .is_err()
    {
        tracing::warn!("{what} not listed within 10 s");
    }
    store
}
