//! The store benchmark proper (needs the etcd backend for its anchor).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{print_table, BenchArgs, BenchError, Sample};
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::store::etcd::{EtcdOptions, EtcdStore};
use crate::store::Store;
use crate::testing::etcd::EtcdServer;

/// Runs `count` writers for `secs`, each calling `op(writer, seq)`; returns a [`Sample`].
async fn measure<F, Fut>(
    target: &'static str,
    writers: usize,
    secs: f64,
    op: F,
) -> Result<Sample, BenchError>
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
        max: all.last().copied().unwrap_or_default(),
    })
}

pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
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
        let txn = measure(
            "raw etcd txn (create-if-absent)",
            w,
            args.seconds,
            move |t, i| {
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
            },
        )
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
                s.create(&format!("/bench/embedded/{round}/{t}/{i}"), v)
                    .await?;
                Ok(())
            }
        })
        .await?;
        rows.push((anchor, txn, etcd, emb));
    }
    let compacting = measure_while_compacting(&embedded, &args, value).await?;
    embedded.shutdown().await?;
    print_table(&rows);
    println!();
    println!(
        "Embedded backend while compacting {HISTORY} revisions of history (64 writers): {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        compacting.per_sec,
        compacting.p50.as_secs_f64() * 1e3,
        compacting.p99.as_secs_f64() * 1e3,
        compacting.max.as_secs_f64() * 1e3,
    );
    Ok(())
}

/// Revisions of history written before the compaction measurement.
const HISTORY: usize = 100_000;

/// Writes `HISTORY` updates over 2,000 keys, compacts all of it, and measures writes meanwhile.
async fn measure_while_compacting(
    store: &EmbeddedStore,
    args: &BenchArgs,
    value: Bytes,
) -> Result<Sample, BenchError> {
    const TASKS: usize = 16;
    const KEYS_PER_TASK: usize = 125;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (s, v) = (store.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut revs = vec![None; KEYS_PER_TASK];
            for i in 0..HISTORY / TASKS {
                let k = i % KEYS_PER_TASK;
                let key = format!("/bench/history/{t}/{k}");
                let kv = match revs[k] {
                    Some(rev) => s.update(&key, v.clone(), rev).await?,
                    None => s.create(&key, v.clone()).await?,
                };
                revs[k] = Some(kv.mod_revision);
            }
            Ok::<_, BenchError>(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| BenchError::Raw(format!("history writer failed: {e}")))??;
    }
    let current = store.current_revision().await?;
    store.compact(current).await?;
    let (s, v) = (store.clone(), value);
    measure(
        "embedded backend, compacting",
        64,
        args.seconds,
        move |t, i| {
            let (s, v) = (s.clone(), v.clone());
            async move {
                s.create(&format!("/bench/compacting/{t}/{i}"), v).await?;
                Ok(())
            }
        },
    )
    .await
}
