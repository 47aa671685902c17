//! The controllers: API clients (kube-rs) that reconcile the cluster towards what its objects
//! ask for. Each writes with its own identity, the service account upstream's
//! kube-controller-manager gives it (`--use-service-account-credentials`), so RBAC limits each to
//! what its bootstrap role allows; they read through one shared identity
//! (`system:kube-controller-manager`), as upstream's shared informers do.
//!
//! So far: ClusterRole aggregation ([`clusterrole_aggregation`]), the `default` ServiceAccount
//! ([`serviceaccounts`]) and the root CA ConfigMap ([`root_ca`]) of every namespace, and
//! ResourceQuota usage ([`resourcequota`]), legacy service-account token Secrets ([`tokens`]), and
//! the PVC and PV protection finalizers ([`storage_protection`]), expired bootstrap tokens
//! ([`token_cleaner`]), node health, condition taints and taint-based eviction
//! ([`node_lifecycle`]), ReplicaSets and ReplicationControllers ([`replicaset`]), Deployments
//! ([`deployment`]), ownerReferences ([`garbage_collector`]), namespace deletion ([`namespace`]), Jobs ([`job`]), Endpoints and EndpointSlices
//! ([`endpoints`]), StatefulSets ([`statefulset`]) and DaemonSets ([`daemonset`]) with their
//! ControllerRevisions ([`history`]), CronJobs ([`cronjob`]), PodDisruptionBudget status
//! ([`disruption`]), generic ephemeral volumes' claims ([`ephemeral`]), volume binding
//! ([`volume_binding`]) and the built-in local-path provisioner
//! ([`local_path`]), the pod garbage collector ([`pod_gc`]) and node pod CIDRs ([`node_ipam`]).

pub mod cache;
pub mod clusterrole_aggregation;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod ephemeral;
pub mod garbage_collector;
pub mod history;
pub mod hpa;
pub mod job;
pub mod local_path;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod pacer;
pub mod per_namespace;
pub mod pod_gc;
pub mod pod_state;
pub mod replicaset;
pub mod resourcequota;
pub mod root_ca;
pub mod serviceaccounts;
pub mod statefulset;
pub mod storage_protection;
pub mod token_cleaner;
pub mod tokens;
pub mod volume_binding;

use std::sync::Arc;

use tokio::sync::watch;

/// Whether a reflector's store has its initial list. Never waits: a store becomes ready only
/// while its event stream is polled, so a controller checks this and keeps polling otherwise.
pub fn ready<K>(store: &kube::runtime::reflector::Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::FutureExt;
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// Waits for the next change, then lets the burst it starts settle (20 ms of quiet), so one
/// pass handles many changes. False once the stream ends or `stop` turns true.
pub async fn next_burst<S>(events: &mut S, stop: &mut watch::Receiver<bool>) -> bool
where
    S: futures::Stream + Unpin,
{
    use futures::StreamExt;
    tokio::select! {
        ev = events.next() => if ev.is_none() { return false },
        _ = stop.changed() => return false,
    }
    while let Ok(Some(_)) =
        tokio::time::timeout(std::time::Duration::from_millis(20), events.next()).await
    {}
    true
}

/// An absolute or percent value (`maxSurge`, `maxUnavailable`) resolved against `total`,
/// percentages rounded up or down; None when it does not parse.
pub fn int_or_percent(
    v: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
    total: i32,
    round_up: bool,
) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            let x = i64::from(total) * pct;
            Some((if round_up { (x + 99) / 100 } else { x / 100 }) as i32)
        }
    }
}

/// The API clients controllers use.
#[derive(Clone)]
pub struct Clients {
    /// Reads shared by every controller (watches and lists).
    pub shared: kube::Client,
    /// Makes a client acting as the service account `kube-system:NAME`.
    pub for_account: Arc<dyn Fn(&str) -> kube::Client + Send + Sync>,
}

/// What the controllers need to know about the cluster.
#[derive(Clone)]
pub struct Context {
    /// The cluster CA certificate (PEM), published as `kube-root-ca.crt`.
    pub root_ca: String,
    /// Signs legacy service-account tokens, when this process holds the signing key.
    pub sign_legacy: Option<tokens::SignLegacy>,
    /// How long a node may go without a heartbeat before it is Unknown
    /// (`--node-monitor-grace-period`).
    pub node_monitor_grace: std::time::Duration,
    /// The same for a node that never sent one (`--node-startup-grace-period`).
    pub node_startup_grace: std::time::Duration,
    /// How the HorizontalPodAutoscalers are run.
    pub hpa: hpa::Options,
    /// Where the local-path provisioner puts volumes on the nodes, unless disabled.
    pub local_path: Option<std::path::PathBuf>,
    /// The range node pod CIDRs are allocated from (`--cluster-cidr`).
    pub cluster_cidr: node_ipam::Range,
}

/// Runs every controller until `stop` turns true, reading pods through the process's shared
/// `informers`.
pub async fn run(
    clients: Clients,
    ctx: Context,
    informers: crate::informer::Informers,
    stop: watch::Receiver<bool>,
) {
    let account = |name: &str| (clients.for_account)(name);
    let mut tasks = vec![
        tokio::spawn(clusterrole_aggregation::run(
            account("clusterrole-aggregation-controller"),
            stop.clone(),
        )),
        tokio::spawn(serviceaccounts::run(
            clients.shared.clone(),
            account("service-account-controller"),
            stop.clone(),
        )),
        tokio::spawn(resourcequota::run(
            clients.shared.clone(),
            account("resourcequota-controller"),
            stop.clone(),
        )),
        tokio::spawn(storage_protection::run(
            clients.shared.clone(),
            informers.pods.clone(),
            account("pvc-protection-controller"),
            account("pv-protection-controller"),
            stop.clone(),
        )),
        tokio::spawn(token_cleaner::run(
            clients.shared.clone(),
            account("token-cleaner"),
            stop.clone(),
        )),
        tokio::spawn(node_lifecycle::run(
            clients.shared.clone(),
            informers.pods.clone(),
            account("node-controller"),
            (ctx.node_monitor_grace, ctx.node_startup_grace),
            stop.clone(),
        )),
        tokio::spawn(replicaset::run(
            replicaset::Workload::replica_sets(),
            clients.shared.clone(),
            informers.pods.clone(),
            account("replicaset-controller"),
            stop.clone(),
        )),
        tokio::spawn(replicaset::run(
            replicaset::Workload::replication_controllers(),
            clients.shared.clone(),
            informers.pods.clone(),
            account("replication-controller"),
            stop.clone(),
        )),
        tokio::spawn(garbage_collector::run(
            clients.shared.clone(),
            informers.pods.clone(),
            account("generic-garbage-collector"),
            stop.clone(),
        )),
        tokio::spawn(namespace::run(
            clients.shared.clone(),
            account("namespace-controller"),
            stop.clone(),
        )),
        tokio::spawn(job::run(
            clients.shared.clone(),
            informers.pods.clone(),
            account("job-controller"),
            account("ttl-after-finished-controller"),
            stop.clone(),
        )),
        tokio::spawn(endpoints::run(
            clients.shared.clone(),
            informers.pods.clone(),
            account("endpoint-controller"),
            account("endpointslice-controller"),
            stop.clone(),
        )),
        tokio::spawn(deployment::run(
            clients.shared.clone(),
            account("deployment-controller"),
            stop.clone(),
        )),
        tokio::spawn(statefulset::run(
            clients.shared.clone(),
            informers.pods.clone(),
            account("statefulset-controller"),
            stop.clone(),
        )),
        tokio::spawn(daemonset::run(
            clients.shared.clone(),
            informers.pods.clone(),
            informers.nodes.clone(),
            account("daemon-set-controller"),
            stop.clone(),
        )),
        tokio::spawn(hpa::run(
            clients.shared.clone(),
            account("horizontal-pod-autoscaler"),
            ctx.hpa,
            stop.clone(),
        )),
        tokio::spawn(cronjob::run(
            clients.shared.clone(),
            account("cronjob-controller"),
            stop.clone(),
        )),
        tokio::spawn(disruption::run(
            clients.shared.clone(),
            informers.pods.clone(),
            account("disruption-controller"),
            stop.clone(),
        )),
        tokio::spawn(ephemeral::run(
            clients.shared.clone(),
            informers.pods.clone(),
            account("ephemeral-volume-controller"),
            stop.clone(),
        )),
        tokio::spawn(volume_binding::run(
            clients.shared.clone(),
            account("persistent-volume-binder"),
            stop.clone(),
        )),
        tokio::spawn(pod_gc::run(
            informers.pods.clone(),
            informers.nodes.clone(),
            account("pod-garbage-collector"),
            pod_gc::TERMINATED_THRESHOLD,
            stop.clone(),
        )),
        tokio::spawn(root_ca::run(
            clients.shared.clone(),
            account("root-ca-cert-publisher"),
            ctx.root_ca.clone(),
            stop.clone(),
        )),
    ];
    tasks.push(tokio::spawn(node_ipam::run(
        informers.nodes.clone(),
        account("node-controller"),
        ctx.cluster_cidr.clone(),
        stop.clone(),
    )));
    if let Some(dir) = ctx.local_path.clone() {
        tasks.push(tokio::spawn(local_path::run(
            clients.shared.clone(),
            account("persistent-volume-binder"),
            dir,
            stop.clone(),
        )));
        tasks.push(tokio::spawn(local_path::release(
            informers.nodes.clone(),
            clients.shared.clone(),
            account("persistent-volume-binder"),
            stop.clone(),
        )));
    }
    if let Some(sign) = ctx.sign_legacy {
        tasks.push(tokens::spawn(
            clients.shared.clone(),
            ctx.root_ca,
            sign,
            stop.clone(),
        ));
    }
    for t in tasks {
        let _ = t.await;
    }
}
