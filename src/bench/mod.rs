//! `k1s bench store` and `k1s bench api`: the store backends and the API server, each
//! against raw etcd puts measured in the same run ([`api`] describes the API figures);
//! `k1s bench scale`: the whole control plane on simulated nodes (see `scale.rs`); `k1s bench
//! pods`: pod start latency and memory with the kubelet on containerd (see `pods.rs`).
//!
//! `k1s bench store`: write throughput and latency of each store backend against raw etcd.
//! In one run, for each number of concurrent writers, it measures raw etcd-client puts (the
//! anchor), the etcd backend's guarded creates against the same etcd, and the embedded backend's
//! creates (every one fsynced before it is acknowledged), then prints a table with the ratios to
//! the anchor. Without `--etcd-endpoint` it starts a throwaway etcd on loopback; the embedded
//! store's file sits beside that etcd's data, on the same disk.

use std::time::Duration;

use clap::Args;

use crate::parts::{Part, PartError};

#[cfg(all(feature = "apiserver", feature = "etcd"))]
mod api;
#[cfg(all(
    feature = "apiserver",
    feature = "scheduler",
    feature = "controllers",
    feature = "kubelet"
))]
mod pods;
#[cfg(all(
    feature = "apiserver",
    feature = "scheduler",
    feature = "controllers",
    feature = "kubelet"
))]
mod scale;
#[cfg(feature = "etcd")]
mod store;

/// Flags of `k1s bench api`.
#[derive(Debug, Args)]
pub struct ApiBenchArgs {
    /// Concurrent clients (connections) creating objects.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Pods to create, then to LIST in one request.
    #[arg(long, default_value_t = 10_000)]
    pub objects: usize,
    /// LIST requests to time.
    #[arg(long, default_value_t = 20)]
    pub lists: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Events each watcher must receive.
    #[arg(long, default_value_t = 10)]
    pub events: usize,
}

/// Runs the API benchmark and prints its table.
pub async fn run_api(args: ApiBenchArgs) -> Result<(), BenchError> {
    Part::Etcd.require()?;
    Part::ApiServer.require()?;
    #[cfg(all(feature = "apiserver", feature = "etcd"))]
    return api::run(args).await;
    #[cfg(not(all(feature = "apiserver", feature = "etcd")))]
    {
        let _ = args;
        Err(PartError::NotBuilt(Part::ApiServer).into())
    }
}

/// Flags of `k1s bench scale`.
#[derive(Debug, Args)]
pub struct ScaleBenchArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Pods in all, spread over the Deployments.
    #[arg(long, default_value_t = 30_000)]
    pub pods: usize,
    /// Deployments holding the pods.
    #[arg(long, default_value_t = 30)]
    pub deployments: usize,
    /// Seconds to wait for the nodes, and again for the pods.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// Runs the scale benchmark (every part is needed) and prints its table.
pub async fn run_scale(args: ScaleBenchArgs) -> Result<(), BenchError> {
    for p in [
        Part::ApiServer,
        Part::Scheduler,
        Part::Controllers,
        Part::Kubelet,
    ] {
        p.require()?;
    }
    #[cfg(all(
        feature = "apiserver",
        feature = "scheduler",
        feature = "controllers",
        feature = "kubelet"
    ))]
    return scale::run(args).await;
    #[cfg(not(all(
        feature = "apiserver",
        feature = "scheduler",
        feature = "controllers",
        feature = "kubelet"
    )))]
    {
        let _ = args;
        Err(PartError::NotBuilt(Part::ApiServer).into())
    }
}

/// Flags of `k1s bench pods`.
#[derive(Debug, Args)]
pub struct PodsBenchArgs {
    /// Pods created at once, one burst each.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
    pub bursts: Vec<usize>,
    /// Pods running while the memory is measured.
    #[arg(long, default_value_t = 20)]
    pub steady_pods: usize,
    /// The OCI runtime the pods run on (the server's `--default-runtime`: runc, crun).
    #[arg(long, default_value = "runc")]
    pub runtime: String,
    /// The server's `--cgroups-per-qos` (pods in cgroups by QoS class).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub cgroups_per_qos: bool,
}

/// Runs the pod start benchmark (every part is needed, and root for containerd).
pub async fn run_pods(args: PodsBenchArgs) -> Result<(), BenchError> {
    for p in [
        Part::ApiServer,
        Part::Scheduler,
        Part::Controllers,
        Part::Kubelet,
    ] {
        p.require()?;
    }
    #[cfg(all(
        feature = "apiserver",
        feature = "scheduler",
        feature = "controllers",
        feature = "kubelet"
    ))]
    return pods::run(args).await;
    #[cfg(not(all(
        feature = "apiserver",
        feature = "scheduler",
        feature = "controllers",
        feature = "kubelet"
    )))]
    {
        let _ = args;
        Err(PartError::NotBuilt(Part::ApiServer).into())
    }
}

/// Flags of `k1s bench store`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Measure against this etcd instead of starting one.
    #[arg(long, value_name = "URL")]
    pub etcd_endpoint: Option<String>,
    /// Concurrent writer counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub writers: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Bytes per value written.
    #[arg(long, default_value_t = 1024)]
    pub value_bytes: usize,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Part(#[from] PartError),
    #[error("starting etcd: {0}")]
    Etcd(#[from] crate::testing::etcd::EtcdServerError),
    #[error("store: {0}")]
    Store(#[from] crate::store::Error),
    #[error("opening the embedded store: {0}")]
    Embedded(#[from] crate::store::embedded::EmbeddedError),
    #[error("preparing a temp dir: {0}")]
    Io(#[from] std::io::Error),
    #[error("raw etcd put failed: {0}")]
    Raw(String),
    #[error("scale benchmark: {0}")]
    Scale(String),
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct Sample {
    pub target: &'static str,
    pub writers: usize,
    pub ops: usize,
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Runs the store benchmark and prints its table.
pub async fn run_store(args: BenchArgs) -> Result<(), BenchError> {
    Part::Etcd.require()?;
    #[cfg(feature = "etcd")]
    return store::run(args).await;
    #[cfg(not(feature = "etcd"))]
    {
        let _ = args;
        Err(PartError::NotBuilt(Part::Etcd).into())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Prints the results as a Markdown table with ratios to the anchor.
pub fn print_table(rows: &[(Sample, Sample, Sample, Sample)]) {
    println!();
    println!("| writers | target | writes/s | p50 ms | p99 ms | max ms | vs raw etcd put |");
    println!("|--:|---|--:|--:|--:|--:|--:|");
    for (anchor, txn, etcd, emb) in rows {
        for s in [anchor, txn, etcd, emb] {
            println!(
                "| {} | {} | {:.0} | {} | {} | {} | {:.2}x |",
                s.writers,
                s.target,
                s.per_sec,
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                s.per_sec / anchor.per_sec.max(1e-9)
            );
        }
    }
}
