//! `k1s bench scale`: the control plane at scale on simulated nodes.
//!
//! It starts `k1s server` as a child process (embedded store in a temp dir, no kubelet,
//! `--simulated-nodes N`), waits for every node to be Ready, then creates Deployments holding
//! `--pods` pods in all and follows every pod through one watch: when it was first seen, when it
//! was bound to a node, when it was Running. It prints the scheduler's throughput (pods bound
//! per second), the time until all pods were Running, the p50/p99 of "created -> bound" and
//! "created -> Running" (as the watch saw them), and the server's peak RSS (`VmHWM`), each
//! against its anchor: KWOK's default 20 pods/s, the upstream pod startup SLO (p99 <= 5 s), and
//! k0s's published 3.3 GB of controller memory at 200 nodes and 20,000 pods.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

use super::{BenchError, ScaleBenchArgs};

/// KWOK's default pod-transition rate (pods/s).
const KWOK_PODS_PER_SEC: f64 = 20.0;
/// The upstream pod startup SLO: p99 <= 5 s.
const SLO_P99: Duration = Duration::from_secs(5);
/// k0s's published controller memory at 200 nodes / 20,000 pods.
const K0S_RSS_BYTES: f64 = 3.3e9;

fn err(context: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Scale(format!("{context}: {e}"))
}

/// When each pod was first seen, bound, Running.
#[derive(Default, Clone, Copy)]
struct Seen {
    created: Option<Instant>,
    bound: Option<Instant>,
    running: Option<Instant>,
}

/// The child server, stopped (SIGTERM, then SIGKILL) when dropped.
pub(super) struct Child(pub(super) std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmHWM` and `VmRSS` of a process, in bytes.
pub(super) fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub(super) async fn client(kubeconfig: &std::path::Path) -> Result<kube::Client, BenchError> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| err("kubeconfig", e))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| err("kubeconfig", e))?;
    crate::retry::client(cfg).map_err(|e| err("client", e))
}

fn deployment(name: &str, replicas: usize) -> Result<Deployment, BenchError> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
            },
        },
    }))
    .map_err(|e| err("deployment", e))
}

/// Runs the scale benchmark and prints its table.
pub async fn run(args: ScaleBenchArgs) -> Result<(), BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("k1s-bench-scale-")
        .tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let kubeconfig = dir.path().join("k1s.yaml");
    let log = std::fs::File::create(dir.path().join("server.log"))?;
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let child = Child(
        std::process::Command::new(exe)
            .args(["server", "--bind-address", "127.0.0.1", "--disable-kubelet"])
            .arg("--https-listen-port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .arg("--simulated-nodes")
            .arg(args.nodes.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    );
    let pid = child.0.id();
    let client = loop {
        if kubeconfig.exists() {
            if let Ok(c) = client(&kubeconfig).await {
                if c.apiserver_version().await.is_ok() {
                    break c;
                }
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(err("server", "did not answer within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let api_ready = started.elapsed();
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let list = nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| err("listing nodes", e))?;
        let ready = list
            .items
            .iter()
            .filter(|n| crate::conditions::node_ready(n))
            .count();
        if ready >= args.nodes {
            break;
        }
        if started.elapsed() > Duration::from_secs(args.timeout) {
            return Err(err(
                "nodes",
                format!("{ready}/{} Ready in time", args.nodes),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let nodes_ready = started.elapsed();
    let (idle_peak, idle_rss) = memory(pid);

    // Follow every pod through one watch.
    let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let follower = {
        let (seen, running) = (seen.clone(), running.clone());
        let mut events = watcher(Api::<Pod>::all(client.clone()), Default::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        tokio::spawn(async move {
            while let Some(Ok(p)) = events.next().await {
                let now = Instant::now();
                let mut map = seen.lock().unwrap_or_else(|e| e.into_inner());
                let s = map.entry(p.uid().unwrap_or_default()).or_default();
                s.created.get_or_insert(now);
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    s.bound.get_or_insert(now);
                }
                let is_running =
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if is_running && s.running.is_none() {
                    s.running = Some(now);
                    running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let per = args.pods.div_ceil(args.deployments.max(1));
    let t0 = Instant::now();
    let mut left = args.pods;
    for i in 0..args.deployments.max(1) {
        let n = per.min(left);
        if n == 0 {
            break;
        }
        left -= n;
        deployments
            .create(
                &PostParams::default(),
                &deployment(&format!("scale-{i}"), n)?,
            )
            .await
            .map_err(|e| err("creating a deployment", e))?;
    }
    let mut peak_during = 0;
    loop {
        peak_during = peak_during.max(memory(pid).0);
        let done = running.load(std::sync::atomic::Ordering::Relaxed);
        if done >= args.pods {
            break;
        }
        if t0.elapsed() > Duration::from_secs(args.timeout) {
            follower.abort();
            return Err(err(
                "pods",
                format!("{done}/{} Running after {} s", args.pods, args.timeout),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    follower.abort();
    let (peak, rss) = memory(pid);
    let map = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut bound: Vec<Duration> = Vec::new();
    let mut started_lat: Vec<Duration> = Vec::new();
    let (mut first_bound, mut last_bound, mut last_running) =
        (None::<Instant>, None::<Instant>, t0);
    for s in map.values() {
        if let (Some(c), Some(b)) = (s.created, s.bound) {
            bound.push(b.saturating_duration_since(c));
            first_bound = Some(first_bound.map_or(b, |f| f.min(b)));
            last_bound = Some(last_bound.map_or(b, |l| l.max(b)));
        }
        if let (Some(c), Some(r)) = (s.created, s.running) {
            started_lat.push(r.saturating_duration_since(c));
            last_running = last_running.max(r);
        }
    }
    bound.sort();
    started_lat.sort();
    let span = match (first_bound, last_bound) {
        (Some(f), Some(l)) if l > f => l.duration_since(f).as_secs_f64(),
        _ => 1e-9,
    };
    let rate = bound.len() as f64 / span;
    let all_running = last_running.duration_since(t0);
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let s = |d: Duration| format!("{:.2}", d.as_secs_f64());

    println!();
    println!(
        "k1s bench scale: {} simulated nodes, {} pods in {} Deployments",
        args.nodes, args.pods, args.deployments
    );
    println!(
        "API answering after {} s, all nodes Ready after {} s",
        s(api_ready),
        s(nodes_ready)
    );
    println!();
    println!("| figure | k1s | anchor | vs anchor |");
    println!("|---|--:|--:|--:|");
    println!(
        "| pods bound per second | {rate:.0} | {KWOK_PODS_PER_SEC:.0} (KWOK default) | {:.1}x |",
        rate / KWOK_PODS_PER_SEC
    );
    println!(
        "| all pods Running after (s) | {} | - | - |",
        s(all_running)
    );
    println!(
        "| created -> bound p50 / p99 (s) | {} / {} | - | - |",
        s(percentile(&bound, 0.5)),
        s(percentile(&bound, 0.99))
    );
    println!(
        "| created -> Running p50 / p99 (s) | {} / {} | {} (upstream SLO p99) | {:.2}x |",
        s(percentile(&started_lat, 0.5)),
        s(percentile(&started_lat, 0.99)),
        s(SLO_P99),
        percentile(&started_lat, 0.99).as_secs_f64() / SLO_P99.as_secs_f64()
    );
    println!(
        "| server RSS idle, nodes only (MiB) | {:.0} (peak {:.0}) | - | - |",
        mb(idle_rss),
        mb(idle_peak)
    );
    println!(
        "| server peak RSS (MiB) | {:.0} (now {:.0}) | {:.0} (k0s, 200 nodes / 20k pods) | {:.2}x |",
        mb(peak.max(peak_during)),
        mb(rss),
        K0S_RSS_BYTES / (1024.0 * 1024.0),
        peak.max(peak_during) as f64 / K0S_RSS_BYTES
    );
    drop(child);
    Ok(())
}
