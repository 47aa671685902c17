//! `k1s bench api`: the API server over HTTPS, on each backend, against raw etcd puts.
//!
//! For each backend it starts an API server in this process (embedded store in a temp dir, or
//! the etcd backend on a throwaway etcd), then measures with plain HTTP/2 clients holding the
//! admin certificate, as kubectl or client-go would talk to it:
//! - creates: `--clients` connections each creating pods, one request at a time, until
//!   `--objects` pods exist; creates/s and latency;
//! - LIST of all those pods in one request (no limit, the default consistent read, served from
//!   the watch cache), repeated; p50 and p99;
//! - `--watchers` watch streams on one namespace, then one ConfigMap created at a time: the
//!   delay from sending the create to each watcher receiving its ADDED event; p50 and p99.
//!
//! The anchor is raw etcd-client puts of the same pod bodies with the same number of clients,
//! measured in the same run against the same etcd.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::{mpsc, watch};

use super::{ms, ApiBenchArgs, BenchError, Sample};
use crate::apiserver::{self, ApiConfig};
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::store::etcd::{EtcdOptions, EtcdStore};
use crate::store::Store;
use crate::testing::etcd::EtcdServer;

type Body = Full<Bytes>;

/// An HTTP/2 connection to the API server.
#[derive(Clone)]
struct Conn {
    send: SendRequest<Body>,
    authority: String,
}

fn err(context: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Raw(format!("{context}: {e}"))
}

async fn connect(
    addr: std::net::SocketAddr,
    tls_dir: &std::path::Path,
) -> Result<Conn, BenchError> {
    let read = |name: &str| std::fs::read(tls_dir.join(name));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("server-ca.crt")?) {
        roots
            .add(c.map_err(|e| err("ca certificate", e))?)
            .map_err(|e| err("ca certificate", e))?;
    }
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("client-admin.crt")?)
            .collect::<Result<_, _>>()
            .map_err(|e| err("admin certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(&read("client-admin.key")?)
        .map_err(|e| err("admin key", e))?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err("tls", e))?
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .map_err(|e| err("client certificate", e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| err("connecting to the API server", e))?;
    tcp.set_nodelay(true)
        .map_err(|e| err("connecting to the API server", e))?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| err("server name", e))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| err("TLS handshake with the API server", e))?;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| err("http/2 handshake", e))?;
    tokio::spawn(conn);
    Ok(Conn {
        send,
        authority: addr.to_string(),
    })
}

impl Conn {
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, BenchError> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| err("request", e))?;
        let mut send = self.send.clone();
        send.ready().await.map_err(|e| err("connection", e))?;
        send.send_request(req).await.map_err(|e| err(path, e))
    }

    /// A request whose answer must be 2xx; returns the body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, BenchError> {
        let resp = self.request(method, path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| err(path, e))?
            .to_bytes();
        if !status.is_success() {
            return Err(err(
                &format!("{method} {path}"),
                format!("{status}: {}", String::from_utf8_lossy(&bytes)),
            ));
        }
        Ok(bytes)
    }
}

fn pod(name: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "bench", "tier": "load"}},
            "spec": {"containers": [{
                "name": "main", "image": "registry.local/bench/app:1.0",
                "command": ["/app", "--serve", "--port=8080"],
                "ports": [{"containerPort": 8080, "name": "http"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "env": [{"name": "MODE", "value": "bench"}],
            }]},
        })
        .to_string(),
    )
}

fn percentiles(mut lat: Vec<Duration>) -> (Duration, Duration, Duration) {
    lat.sort();
    if lat.is_empty() {
        return Default::default();
    }
    let at = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (at(0.5), at(0.99), lat[lat.len() - 1])
}

/// `clients` workers doing `op(i)` for i in 0..total, each one at a time.
async fn run_count<F, Fut>(
    target: &'static str,
    clients: usize,
    total: usize,
    op: F,
) -> Result<Sample, BenchError>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BenchError>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, BenchError>(lat);
                }
                let t = Instant::now();
                op(c, i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| err("client task", e))??);
    }
    let secs = start.elapsed().as_secs_f64();
    let (p50, p99, max) = percentiles(all);
    Ok(Sample {
        target,
        writers: clients,
        ops: total,
        per_sec: total as f64 / secs,
        p50,
        p99,
        max,
    })
}

/// The figures for one backend.
struct Figures {
    backend: &'static str,
    creates: Sample,
    list: (Duration, Duration, usize),
    watch: (Duration, Duration, usize),
}

async fn bench_backend(
    backend: &'static str,
    store: Arc<dyn Store>,
    args: &ApiBenchArgs,
) -> Result<Figures, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("k1s-bench-api-")
        .tempdir()?;
    let (stop_tx, stop) = watch::channel(false);
    let server = apiserver::start(
        ApiConfig {
            bind_address: [127, 0, 0, 1].into(),
            advertise_address: [127, 0, 0, 1].into(),
            metrics: Default::default(),
            port: 0,
            tls_dir: dir.path().join("tls"),
            sans: vec!["127.0.0.1".into(), "localhost".into()],
            kubeconfig: dir.path().join("kubeconfig"),
            service_cidr: "10.43.0.0/16".into(),
            token_auth_file: None,
            encryption_provider_config: None,
            admission_control_config_file: None,
            audit: Default::default(),
            local_storage: false,
            runtime_classes: false,
        },
        store,
        stop,
    )
    .await
    .map_err(|e| err("starting the API server", e))?;
    let addr = server.addr;
    let tls = dir.path().join("tls");
    let mut conns = Vec::new();
    for _ in 0..args.clients {
        conns.push(connect(addr, &tls).await?);
    }
    let admin = conns[0].clone();
    for ns in ["bench", "bench-watch"] {
        let body =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        admin
            .call(
                "POST",
                "/api/v1/namespaces",
                Some(Bytes::from(body.to_string())),
            )
            .await?;
        // Pods run as the namespace's `default` account, which the controllers (not started
        // here) would create.
        let sa = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        admin
            .call(
                "POST",
                &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
                Some(Bytes::from(sa.to_string())),
            )
            .await?;
    }

    let conns = Arc::new(conns);
    let cs = conns.clone();
    let creates = run_count("pod creates", args.clients, args.objects, move |c, i| {
        let conn = cs[c].clone();
        async move {
            conn.call(
                "POST",
                "/api/v1/namespaces/bench/pods",
                Some(pod(&format!("pod-{i}"))),
            )
            .await
            .map(|_| ())
        }
    })
    .await?;

    let mut list_lat = Vec::new();
    let mut items = 0;
    for _ in 0..args.lists {
        let t = Instant::now();
        let body = admin
            .call("GET", "/api/v1/namespaces/bench/pods", None)
            .await?;
        list_lat.push(t.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| err("list", e))?;
        items = v["items"].as_array().map_or(0, Vec::len);
    }
    let (lp50, lp99, _) = percentiles(list_lat);

    let watch = watchers(&conns, args).await?;
    let _ = stop_tx.send(true);
    drop(conns);
    server.stopped().await;
    Ok(Figures {
        backend,
        creates,
        list: (lp50, lp99, items),
        watch,
    })
}

/// Opens the watchers, then creates `events` ConfigMaps one at a time; returns the p50 and p99
/// delay from sending each create to each watcher seeing it.
async fn watchers(
    conns: &Arc<Vec<Conn>>,
    args: &ApiBenchArgs,
) -> Result<(Duration, Duration, usize), BenchError> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel::<Duration>();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for w in 0..args.watchers {
        let conn = conns[w % conns.len()].clone();
        let (sent, tx, ready) = (sent.clone(), tx.clone(), ready_tx.clone());
        tasks.push(tokio::spawn(async move {
            let resp = conn
                .request(
                    "GET",
                    "/api/v1/namespaces/bench-watch/configmaps?watch=true&allowWatchBookmarks=false",
                    None,
                )
                .await?;
            let _ = ready.send(());
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame.map_err(|e| err("watch", e))?.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) else {
                        continue;
                    };
                    if let Some(name) = ev["object"]["metadata"]["name"].as_str() {
                        let at = sent.lock().ok().and_then(|m| m.get(name).copied());
                        if let Some(at) = at {
                            let _ = tx.send(at.elapsed());
                        }
                    }
                }
            }
            Ok::<_, BenchError>(())
        }));
    }
    drop(tx);
    for _ in 0..args.watchers {
        if ready_rx.recv().await.is_none() {
            return Err(err("watch", "a watcher ended before it started"));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let admin = &conns[0];
    let mut delays = Vec::new();
    for e in 0..args.events {
        let name = format!("event-{e}");
        let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        if let Ok(mut m) = sent.lock() {
            m.insert(name.clone(), Instant::now());
        }
        admin
            .call(
                "POST",
                "/api/v1/namespaces/bench-watch/configmaps",
                Some(Bytes::from(body.to_string())),
            )
            .await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let want = (e + 1) * args.watchers;
        while delays.len() < want {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some(d)) => delays.push(d),
                _ => {
                    return Err(err(
                        "watch",
                        format!("only {} of {want} events arrived", delays.len()),
                    ))
                }
            }
        }
    }
    for t in tasks {
        t.abort();
    }
    let n = delays.len();
    let (p50, p99, _) = percentiles(delays);
    Ok((p50, p99, n))
}

/// Raw etcd-client puts of pod-sized values with the same number of clients: the anchor.
async fn anchor(url: &str, args: &ApiBenchArgs) -> Result<Sample, BenchError> {
    let raw = etcd_client::Client::connect([url], None)
        .await
        .map_err(|e| err("etcd", e))?;
    let value = pod("anchor");
    run_count("raw etcd put", args.clients, args.objects, move |_, i| {
        let (mut c, v) = (raw.clone(), value.clone());
        async move {
            c.put(format!("/bench/anchor/{i}"), v.to_vec(), None)
                .await
                .map(|_| ())
                .map_err(|e| err("raw etcd put", e))
        }
    })
    .await
}

pub async fn run(args: ApiBenchArgs) -> Result<(), BenchError> {
    let etcd = EtcdServer::start()?;
    let url = etcd.url().to_string();
    println!(
        "k1s bench api: {} clients creating {} pods, {} lists, {} watchers x {} events; etcd at {url}",
        args.clients, args.objects, args.lists, args.watchers, args.events
    );
    let anchor = anchor(&url, &args).await?;
    let dir = tempfile::Builder::new()
        .prefix("k1s-bench-api-")
        .tempdir()?;
    let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedOptions::new(
        dir.path().join("state.redb"),
    ))?);
    let mut figures = vec![bench_backend("embedded", embedded.clone(), &args).await?];
    embedded.shutdown().await?;
    let backend: Arc<dyn Store> = Arc::new(EtcdStore::connect(EtcdOptions::new(vec![url])).await?);
    figures.push(bench_backend("etcd", backend, &args).await?);

    println!();
    println!("| backend | creates/s ({} clients) | create p50 ms | create p99 ms | vs raw etcd put | LIST {} pods p50 ms | LIST p99 ms | watch delivery p50 ms ({} watchers) | watch p99 ms |", args.clients, args.objects, args.watchers);
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    println!(
        "| raw etcd put (anchor) | {:.0} | {} | {} | 1.00x | | | | |",
        anchor.per_sec,
        ms(anchor.p50),
        ms(anchor.p99)
    );
    for f in &figures {
        println!(
            "| {} | {:.0} | {} | {} | {:.2}x | {} | {} | {} | {} |",
            f.backend,
            f.creates.per_sec,
            ms(f.creates.p50),
            ms(f.creates.p99),
            f.creates.per_sec / anchor.per_sec.max(1e-9),
            ms(f.list.0),
            ms(f.list.1),
            ms(f.watch.0),
            ms(f.watch.1),
        );
        if f.list.2 != args.objects {
            println!("(the {} LIST returned {} items)", f.backend, f.list.2);
        }
        let _ = f.watch.2;
    }
    Ok(())
}
