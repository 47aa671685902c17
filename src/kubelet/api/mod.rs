//! The kubelet's own HTTPS API (`--kubelet-port`, 10250), which the API server proxies
//! `pods/log`, `pods/exec`, `pods/attach`, `pods/portforward` and `nodes/proxy` to and the
//! metrics scraper reads: each request is authenticated and authorized through the API server
//! as the upstream kubelet's webhook mode does ([`auth`]). The serving certificate is the
//! kubelet's own, self-signed, which kube-apiserver does not verify unless told to. Routes:
//! `/healthz`, `/metrics/resource`, `/stats/summary`, `/containerLogs` ([`logs`]), `/exec`,
//! `/attach`, `/portForward` ([`stream`], [`bridge`]), `/pods`, `/runningpods/`, `/configz`,
//! `/metrics`, `/metrics/cadvisor` ([`info`]).

pub mod auth;
pub mod bridge;
pub mod info;
pub mod logs;
pub mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::cri::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum KubeletApiError {
    #[error("kubelet serving certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("kubelet TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("kubelet client CA: {0}")]
    Ca(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the handlers share.
pub struct ApiState {
    pub node: String,
    pub runtime: Arc<dyn Runtime>,
    /// The latest usage sample.
    pub usage: super::stats::Latest,
    /// Asks the API server who callers are and what they may do, as this node.
    auth: auth::Authorizer,
    /// The API server, for the pods' statuses.
    client: kube::Client,
    /// `/configz`: the effective KubeletConfiguration.
    configz: serde_json::Value,
    /// The node's filesystems and pods' files, for `/stats/summary`.
    probe: Option<Arc<dyn super::eviction::Probe>>,
    /// Sandboxes' processes, by sandbox id, learned once each (for pods' network figures).
    sandbox_pids: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Pods' logs and emptyDirs as last measured for `/stats/summary`.
    local_usage: Arc<super::summary::LocalUsageCache>,
}

impl ApiState {
    pub fn new(
        node: String,
        runtime: Arc<dyn Runtime>,
        client: kube::Client,
        usage: super::stats::Latest,
        configz: serde_json::Value,
    ) -> Self {
        ApiState {
            node,
            runtime,
            usage,
            auth: auth::Authorizer::new(client.clone()),
            client,
            configz,
            probe: None,
            sandbox_pids: Default::default(),
            local_usage: Default::default(),
        }
    }

    /// With the node's filesystems and pods' files measured by `probe` in `/stats/summary`.
    pub fn with_probe(mut self, probe: Arc<dyn super::eviction::Probe>) -> Self {
        self.probe = Some(probe);
        self
    }
}

/// The kubelet's serving certificate and key (PEM), self-signed for its name and address.
pub fn serving_cert(node: &str, ip: std::net::IpAddr) -> Result<(String, String), KubeletApiError> {
    let mut p = rcgen::CertificateParams::new(vec![node.to_string(), "localhost".to_string()])?;
    p.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{node}@kubelet"));
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(365);
    let key = rcgen::KeyPair::generate()?;
    let cert = p.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca: &str,
) -> Result<rustls::ServerConfig, KubeletApiError> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| KubeletApiError::Ca(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| KubeletApiError::Ca(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca.as_bytes()) {
        let ca = ca.map_err(|e| KubeletApiError::Ca(e.to_string()))?;
        roots.add(ca)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // A certificate is optional: callers without one bring a bearer token.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| KubeletApiError::Ca(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

async fn authorize(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    match state.auth.check(auth::Asking::of(&req), &state.node).await {
        Ok(()) => next.run(req).await,
        Err(refused) => refused,
    }
}

/// A `/metrics/resource` body of `usage` (empty before the first sample).
pub fn metrics_text(usage: Option<&crate::resource_metrics::NodeUsage>) -> Response {
    let body = usage
        .map(crate::resource_metrics::prometheus::write)
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

async fn metrics_resource(State(state): State<Arc<ApiState>>) -> Response {
    metrics_text(state.usage.get().as_ref())
}

/// The ready sandboxes' processes, by pod uid; each sandbox's asked of the runtime once.
async fn sandbox_pids(state: &ApiState) -> std::collections::HashMap<String, u32> {
    let Ok(mut sandboxes) = state.runtime.list_pod_sandboxes(None).await else {
        return Default::default();
    };
    // A pod's newest ready sandbox wins.
    sandboxes.sort_by_key(|sb| sb.created_at);
    let known = state
        .sandbox_pids
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut by_id = std::collections::HashMap::new();
    let mut by_uid = std::collections::HashMap::new();
    for sb in sandboxes {
        if sb.state != super::cri::api::PodSandboxState::SandboxReady as i32 {
            continue;
        }
        let pid = match known.get(&sb.id) {
            Some(pid) => Some(*pid),
            None => state.runtime.pod_sandbox_pid(&sb.id).await.ok().flatten(),
        };
        if let Some(pid) = pid {
            by_id.insert(sb.id.clone(), pid);
            if let Some(m) = &sb.metadata {
                by_uid.insert(m.uid.clone(), pid);
            }
        }
    }
    *state.sandbox_pids.lock().unwrap_or_else(|p| p.into_inner()) = by_id;
    by_uid
}

async fn stats_summary(State(state): State<Arc<ApiState>>) -> Response {
    let Some(u) = state.usage.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no usage sampled yet").into_response();
    };
    let Some(probe) = state.probe.clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no node filesystems to report",
        )
            .into_response();
    };
    let pods = match info::node_pods(&state).await {
        Ok(pods) => pods,
        Err(answer) => return answer,
    };
    let facts = super::summary::RuntimeFacts {
        sandbox_pids: sandbox_pids(&state).await,
        image_fs_used: state.runtime.image_fs_usage().await.ok(),
    };
    // Logs and emptyDirs are measured on disk: off the async workers.
    let cache = state.local_usage.clone();
    match tokio::task::spawn_blocking(move || {
        super::summary::summary(&u, probe.as_ref(), &cache, &pods, &facts)
    })
    .await
    {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("building the summary: {e}"),
        )
            .into_response(),
    }
}

fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(info::metrics))
        .route("/metrics/resource", get(metrics_resource))
        .route("/metrics/cadvisor", get(info::cadvisor))
        .route("/metrics/probes", get(info::probe_metrics))
        .route("/pods", get(info::pods))
        .route("/runningpods/", get(info::running_pods))
        .route("/configz", get(info::configz))
        .route("/stats/summary", get(stats_summary))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(stream::exec).post(stream::exec),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(stream::attach).post(stream::attach),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(stream::port_forward).post(stream::port_forward),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

/// A container's runs (by pod namespace, pod name and container name), newest first.
pub async fn runs_of(
    state: &ApiState,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<Vec<super::cri::api::Container>, super::cri::RuntimeError> {
    use super::cri::{LABEL_POD_NAME, LABEL_POD_NAMESPACE};
    let mut runs: Vec<_> = state
        .runtime
        .list_containers(None)
        .await?
        .into_iter()
        .filter(|c| {
            c.labels.get(LABEL_POD_NAMESPACE).map(String::as_str) == Some(ns)
                && c.labels.get(LABEL_POD_NAME).map(String::as_str) == Some(pod)
                && c.metadata.as_ref().is_some_and(|m| m.name == container)
        })
        .collect();
    runs.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    Ok(runs)
}

/// Binds the kubelet API's port (0: any free one).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, KubeletApiError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| KubeletApiError::Listen { addr, source })
}

/// Serves the kubelet API on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    cert: (String, String),
    client_ca: &str,
    state: Arc<ApiState>,
    stop: watch::Receiver<bool>,
) -> Result<(), KubeletApiError> {
    serve_router(listener, cert, client_ca, router(state), stop).await
}

/// Serves `app` over TLS on `listener` until `stop` turns true; a verified client certificate
/// becomes the request's [`auth::Caller`].
pub async fn serve_router(
    listener: TcpListener,
    cert: (String, String),
    client_ca: &str,
    app: Router,
    mut stop: watch::Receiver<bool>,
) -> Result<(), KubeletApiError> {
    let config = tls_config(&cert.0, &cert.1, client_ca)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("kubelet API accept: {e}");
                    continue;
                }
            },
            _ = stop.changed() => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, "kubelet API TLS handshake: {e}");
                    return;
                }
            };
            let caller = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| auth::caller_from_cert(c));
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    if let Some(c) = &caller {
                        req.extensions_mut().insert(c.clone());
                    }
                    app.clone().oneshot(req)
                },
            );
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, "kubelet API connection: {e}");
            }
        });
    }
}
