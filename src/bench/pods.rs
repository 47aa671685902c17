//! `k1s bench pods`: pod start latency and memory of `k1s server` with its kubelet on the
//! containerd it supervises, on this machine.
//!
//! It starts `k1s server` as a child (embedded store and data dir in a temp dir, a busybox
//! image from Debian's busybox-static dropped into `agent/images/`, its own pod bridge and
//! ranges, a blackhole route for its service range), waits for the node to be Ready, then
//! creates bursts of 1, 10 and 50 pods and times each from its create request to Ready as a
//! watch sees it (p50, p99). It reports the RSS of `k1s server` and of its containerd (and the
//! containers' shims) idle and with 20 pods running, against the upstream SLO (p99 <= 5 s) and
//! k3s's published 1.4-1.6 GB for a server with a workload.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

use super::scale::{client, memory, percentile, Child};

/// The benchmark node's own cgroup root, removed afterwards.
const BENCH_CGROUP: &str = "/k1sbench";
use super::{BenchError, PodsBenchArgs};

/// The upstream pod startup SLO: p99 <= 5 s.
const SLO_P99: Duration = Duration::from_secs(5);
/// This goal at 50 pods.
const GOAL_P99: Duration = Duration::from_millis(1500);
/// k3s's published memory for a server with a workload (the upper figure).
const K3S_RSS_BYTES: f64 = 1.6e9;
const IMAGE: &str = "k1s.local/bench-busybox:1";

fn err(context: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Scale(format!("{context}: {e}"))
}

fn pod(name: &str) -> Result<Pod, BenchError> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "pods"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": IMAGE, "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "1m", "memory": "4Mi"}}}],
        },
    }))
    .map_err(|e| err("pod", e))
}

/// RSS of the server's containerd child and of the shims it started, in bytes.
fn runtime_rss(server_pid: u32, socket: &str) -> (u64, u64) {
    let (mut containerd, mut shims) = (0, 0);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    for e in dir.filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid: u32 = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == server_pid && cmdline.starts_with("containerd ") {
            containerd += memory(pid).1;
        } else if cmdline.contains("containerd-shim") && cmdline.contains(socket) {
            shims += memory(pid).1;
        }
    }
    (containerd, shims)
}

/// CPU time used so far by the whole machine and by process `pid`, in seconds.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    // USER_HZ is 100 on every Linux this runs on.
    let tick = 0.01;
    let machine = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_string();
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
            Some(f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4)?)
        })
        .unwrap_or(0);
    let own = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit(')').next()?.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15; `rest` starts at field 3.
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    (machine as f64 * tick, own as f64 * tick)
}

/// Waits until the runtime has torn down every pod (no shim of this containerd is left), so
/// one burst's teardown does not run during the next.
async fn wait_runtime_idle(socket: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && shims(socket) > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn shims(socket: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("containerd-shim") && cmdline.contains(socket)
        })
        .count()
}

/// After the server is gone: the shims of its containerd (which outlive it by design) and
/// the mounts they left under the data dir, so a failed run leaves nothing behind.
fn clean_runtime(dir: &std::path::Path) {
    crate::kubelet::containerd::delete_containers(&crate::kubelet::containerd::Layout::new(dir));
    let socket = dir
        .join("agent/containerd/containerd.sock")
        .to_string_lossy()
        .into_owned();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.filter_map(Result::ok) {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("containerd-shim") && cmdline.contains(&socket) {
                // SAFETY: kill(2) on a shim the benchmark's own containerd started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let prefix = dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = std::process::Command::new("umount")
            .args(["-l", m])
            .status();
    }
}

/// Creates `n` pods and times each from its create request to Ready.
async fn burst(
    api: &Api<Pod>,
    client: &kube::Client,
    round: &str,
    n: usize,
) -> Result<Vec<Duration>, BenchError> {
    let ready: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let follower = {
        let ready = ready.clone();
        let cfg = watcher::Config::default().labels(&format!("round={round}"));
        let mut events = watcher(Api::<Pod>::namespaced(client.clone(), "default"), cfg)
            .default_backoff()
            .applied_objects()
            .boxed();
        tokio::spawn(async move {
            while let Some(Ok(p)) = events.next().await {
                let is_ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if is_ready {
                    ready
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(p.name_any())
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    // Let the watch start before the first create.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sent = HashMap::new();
    let creates = (0..n).map(|i| {
        let name = format!("{round}-{i}");
        async move {
            let mut p = pod(&name)?;
            p.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("round".into(), round.to_string());
            let at = Instant::now();
            api.create(&PostParams::default(), &p)
                .await
                .map_err(|e| err("creating a pod", e))?;
            Ok::<_, BenchError>((name, at))
        }
    });
    for r in futures::future::join_all(creates).await {
        let (name, at) = r?;
        sent.insert(name, at);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = ready.lock().unwrap_or_else(|e| e.into_inner()).len();
        if done >= n {
            break;
        }
        if Instant::now() > deadline {
            follower.abort();
            return Err(err("pods", format!("{done}/{n} Ready after 120 s")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    follower.abort();
    let ready = ready.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut lat: Vec<Duration> = sent
        .iter()
        .filter_map(|(name, at)| ready.get(name).map(|r| r.saturating_duration_since(*at)))
        .collect();
    lat.sort();
    Ok(lat)
}

async fn delete_all(api: &Api<Pod>) -> Result<(), BenchError> {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let lp = ListParams::default().labels("bench=pods");
    api.delete_collection(&dp, &lp)
        .await
        .map_err(|e| err("deleting pods", e))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !api
        .list(&lp)
        .await
        .map_err(|e| err("listing pods", e))?
        .items
        .is_empty()
    {
        if Instant::now() > deadline {
            return Err(err("pods", "still there 120 s after their deletion"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Runs the pod start benchmark and prints its table.
pub async fn run(args: PodsBenchArgs) -> Result<(), BenchError> {
    let busybox = std::path::Path::new("/bin/busybox");
    let list = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| {
            err(
                "/bin/busybox (Debian's busybox-static) is needed for the image",
                e,
            )
        })?;
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let layer = crate::kubelet::images::oci::busybox_layer(busybox, &applets)
        .map_err(|e| err("image", e))?;
    let image = crate::kubelet::images::oci::image_layout(IMAGE, &Default::default(), &layer)
        .map_err(|e| err("image", e))?;
    let dir = tempfile::Builder::new()
        .prefix("k1s-bench-pods-")
        .tempdir()?;
    std::fs::create_dir_all(dir.path().join("agent/images"))?;
    std::fs::write(dir.path().join("agent/images/busybox.tar"), image)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let kubeconfig = dir.path().join("k1s.yaml");
    let log = std::fs::File::create(dir.path().join("server.log"))?;
    let service_cidr = "10.239.0.0/16";
    let _ = std::process::Command::new("ip")
        .args(["route", "replace", "blackhole", service_cidr])
        .status();
    let started = Instant::now();
    let child = Child(
        std::process::Command::new(std::env::current_exe()?)
            .args([
                "server",
                "--bind-address",
                "127.0.0.1",
                "--node-name",
                "bench-node",
            ])
            .args([
                "--cluster-cidr",
                "10.238.0.0/16",
                "--service-cidr",
                service_cidr,
            ])
            .args(["--pod-bridge", "k1sbench0", "--kubelet-port", "0"])
            .args(["--cgroup-root", BENCH_CGROUP])
            .args(["--default-runtime", &args.runtime])
            .arg(format!("--cgroups-per-qos={}", args.cgroups_per_qos))
            .arg("--pod-log-dir")
            .arg(dir.path().join("pod-logs"))
            .arg("--https-listen-port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    );
    let pid = child.0.id();
    let result = measure(&args, pid, &kubeconfig, dir.path(), started).await;
    drop(child);
    clean_runtime(dir.path());
    let cgroups = crate::kubelet::cgroups::Options {
        root: BENCH_CGROUP.into(),
        pod_max_pids: -1,
    };
    if let Err(e) = crate::kubelet::cgroups::Manager::detect(&cgroups).and_then(|m| m.remove_all())
    {
        eprintln!("removing the benchmark node's cgroups: {e}");
    }
    use crate::kubelet::masquerade;
    if let Err(e) = masquerade::remove(&masquerade::System, "k1sbench0") {
        eprintln!("removing the benchmark node's NAT rules: {e}");
    }
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "k1sbench0"])
        .status();
    let _ = std::process::Command::new("ip")
        .args(["route", "del", "blackhole", service_cidr])
        .status();
    result
}

async fn measure(
    args: &PodsBenchArgs,
    pid: u32,
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
    started: Instant,
) -> Result<(), BenchError> {
    let socket = dir
        .join("agent/containerd/containerd.sock")
        .to_string_lossy()
        .into_owned();
    let client = loop {
        if kubeconfig.exists() {
            if let Ok(c) = client(kubeconfig).await {
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
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let ready = nodes
            .get_opt("bench-node")
            .await
            .map_err(|e| err("reading the node", e))?
            .is_some_and(|n| {
                crate::conditions::node_ready(&n) && n.spec.and_then(|s| s.pod_cidr).is_some()
            });
        if ready {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(err("node", "not Ready within 120 s"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let node_ready = started.elapsed();
    // Warm-up: the first pod also unpacks the image.
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    burst(&api, &client, "warmup", 1).await?;
    delete_all(&api).await?;
    wait_runtime_idle(&socket).await;
    let idle = (memory(pid).1, runtime_rss(pid, &socket));

    let mut rows = Vec::new();
    for &n in &args.bursts {
        let before = cpu_seconds(pid);
        let lat = burst(&api, &client, &format!("burst{n}"), n).await?;
        let after = cpu_seconds(pid);
        let per_pod = (
            (after.0 - before.0) / n as f64,
            (after.1 - before.1) / n as f64,
        );
        rows.push((n, percentile(&lat, 0.5), percentile(&lat, 0.99), per_pod));
        delete_all(&api).await?;
        wait_runtime_idle(&socket).await;
    }
    burst(&api, &client, "steady", args.steady_pods).await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let loaded = (memory(pid).1, runtime_rss(pid, &socket));
    let peak = memory(pid).0;
    delete_all(&api).await?;

    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let s = |d: Duration| format!("{:.2}", d.as_secs_f64());
    println!();
    println!(
        "k1s bench pods: k1s server with its kubelet on the containerd it supervises ({}, \
         cgroups per QoS {})",
        args.runtime, args.cgroups_per_qos
    );
    println!(
        "node Ready after {} s (containerd started, images imported)",
        s(node_ready)
    );
    println!();
    println!(
        "| pods at once | create -> Ready p50 (s) | p99 (s) | SLO p99 5 s | goal p99 1.5 s \
         | CPU per pod: machine / k1s (ms) |"
    );
    println!("|--:|--:|--:|--:|--:|--:|");
    for (n, p50, p99, cpu) in &rows {
        println!(
            "| {n} | {} | {} | {:.2}x | {:.2}x | {:.0} / {:.0} |",
            s(*p50),
            s(*p99),
            p99.as_secs_f64() / SLO_P99.as_secs_f64(),
            p99.as_secs_f64() / GOAL_P99.as_secs_f64(),
            cpu.0 * 1000.0,
            cpu.1 * 1000.0
        );
    }
    println!();
    println!("| RSS (MiB) | k1s server | containerd | shims | anchor (k3s with a workload) |");
    println!("|---|--:|--:|--:|--:|");
    println!(
        "| idle | {:.0} | {:.0} | {:.0} | - |",
        mb(idle.0),
        mb(idle.1 .0),
        mb(idle.1 .1)
    );
    println!(
        "| {} pods | {:.0} (peak {:.0}) | {:.0} | {:.0} | {:.0} ({:.3}x) |",
        args.steady_pods,
        mb(loaded.0),
        mb(peak),
        mb(loaded.1 .0),
        mb(loaded.1 .1),
        K3S_RSS_BYTES / (1024.0 * 1024.0),
        (loaded.0 + loaded.1 .0) as f64 / K3S_RSS_BYTES
    );
    Ok(())
}
