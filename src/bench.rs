//! `k1s bench store`: write throughput and latency of each store backend against raw etcd.
//!
//! In one run, for each number of concurrent writers, it measures raw etcd-client puts (the
//! anchor), the etcd backend's guarded creates against the same etcd, and the embedded backend's
//! creates (every one fsynced before it is acknowledged), then prints a table with the ratios to
//! the anchor. Without `--etcd-endpoint` it starts a throwaway etcd on loopback; the embedded
//! store's file sits beside that etcd's data, on the same disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;

use crate::parts::{Part, PartError};
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::store::Store;

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
}

/// Runs `count` writers for `secs`, each calling `op(writer, seq)`; returns a [`Sample`].
async fn measure<F, Fut>(target: &'static str, writers: usize, secs: f64, op: F) -> Result<Sample, BenchError>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BenchError>> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut seq = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(w, seq).await?;
                lat.push(t.elapsed());
                seq += 1;
            }
            Ok::<_, BenchError>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let lat = t
            .await
            .map_err(|e| BenchError::Raw(format!("writer task failed: {e}")))??;
        all.extend(lat);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| -> Duration {
        if all.is_empty() {
            return Duration::ZERO;
        }
        all[((all.len() as f64 * p) as usize).min(all.len() - 1)]
    };
    Ok(Sample {
        target,
        writers,
        ops: all.len(),
        per_sec: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

/// Runs the store benchmark and prints its table.
pub async fn run_store(args: BenchArgs) -> Result<(), BenchError> {
    Part::Etcd.require()?;
    run_store_etcd(args).await
}

#[cfg(feature = "etcd")]
async fn run_store_etcd(args: BenchArgs) -> Result<(), BenchError> {
    use crate::store::etcd::{EtcdOptions, EtcdStore};
    use crate::testing::etcd::EtcdServer;

    let (_etcd, url) = match &args.etcd_endpoint {
        Some(url) => (None, url.clone()),
        None => {
            let server = EtcdServer::start()?;
            let url = server.url().to_string();
            (Some(server), url)
        }
    };
    let dir = tempfile::Builder::new().prefix("k1s-bench-").tempdir()?;
    let value = Bytes::from(vec![b'x'; args.value_bytes]);
    let raw = etcd_client::Client::connect([url.as_str()], None)
        .await
        .map_err(|e| BenchError::Raw(e.to_string()))?;
    let backend = EtcdStore::connect(EtcdOptions::new(vec![url.clone()])).await?;
    let embedded = EmbeddedStore::open(EmbeddedOptions::new(dir.path().join("bench.redb")))?;

    println!(
        "k1s bench store: {} B values, {:.1} s per measurement, etcd at {url}, embedded file in {}",
        args.value_bytes,
        args.seconds,
        dir.path().display()
    );
    let mut rows = Vec::new();
    for (round, &w) in args.writers.iter().enumerate() {
        let (c, v) = (raw.clone(), value.clone());
        let anchor = measure("raw etcd put", w, args.seconds, move |t, i| {
            let (mut c, v) = (c.clone(), v.clone());
            async move {
                c.put(format!("/bench/raw/{round}/{t}/{i}"), v.to_vec(), None)
                    .await
                    .map(|_| ())
                    .map_err(|e| BenchError::Raw(e.to_string()))
            }
        })
        .await?;
        let (c, v) = (raw.clone(), value.clone());
        let txn = measure("raw etcd txn (create-if-absent)", w, args.seconds, move |t, i| {
            let (mut c, v) = (c.clone(), v.clone());
            async move {
                let key = format!("/bench/txn/{round}/{t}/{i}");
                let txn = etcd_client::Txn::new()
                    .when([etcd_client::Compare::create_revision(
                        key.as_str(),
                        etcd_client::CompareOp::Equal,
                        0,
                    )])
                    .and_then([etcd_client::TxnOp::put(key.as_str(), v.to_vec(), None)]);
                c.txn(txn)
                    .await
                    .map(|_| ())
                    .map_err(|e| BenchError::Raw(e.to_string()))
            }
        })
        .await?;
        let (s, v) = (backend.clone(), value.clone());
        let etcd = measure("etcd backend", w, args.seconds, move |t, i| {
            let (s, v) = (s.clone(), v.clone());
            async move {
                s.create(&format!("/bench/etcd/{round}/{t}/{i}"), v).await?;
                Ok(())
            }
        })
        .await?;
        let (s, v) = (embedded.clone(), value.clone());
        let emb = measure("embedded backend", w, args.seconds, move |t, i| {
            let (s, v) = (s.clone(), v.clone());
            async move {
                s.create(&format!("/bench/embedded/{round}/{t}/{i}"), v).await?;
                Ok(())
            }
        })
        .await?;
        rows.push((anchor, txn, etcd, emb));
    }
    embedded.shutdown().await?;
    print_table(&rows);
    Ok(())
}

#[cfg(not(feature = "etcd"))]
async fn run_store_etcd(_args: BenchArgs) -> Result<(), BenchError> {
    Err(PartError::NotBuilt(Part::Etcd).into())
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Prints the results as a Markdown table with ratios to the anchor.
pub fn print_table(rows: &[(Sample, Sample, Sample, Sample)]) {
    println!();
    println!("| writers | target | writes/s | p50 ms | p99 ms | vs raw etcd |");
    println!("|--:|---|--:|--:|--:|--:|");
    for (anchor, txn, etcd, emb) in rows {
        for s in [anchor, txn, etcd, emb] {
            println!(
                "| {} | {} | {:.0} | {} | {} | {:.2}x |",
                s.writers,
                s.target,
                s.per_sec,
                ms(s.p50),
                ms(s.p99),
                s.per_sec / anchor.per_sec.max(1e-9)
            );
        }
    }
}
