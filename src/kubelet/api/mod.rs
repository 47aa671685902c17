//! The kubelet's own HTTPS API (`--kubelet-port`, 10250), which the API server proxies
//! `pods/log` to: callers present a client certificate of the cluster CA (the API server's
//! kubelet client certificate) or a bearer token the API server's TokenReview vouches for (a
//! ServiceAccount's, as metrics-server and Prometheus scrape with), and each request is
//! authorized with a SubjectAccessReview as
//! the upstream kubelet's webhook authorizer does (`nodes/proxy`, `nodes/log`, `nodes/stats`,
//! `nodes/metrics` of this node). The serving certificate is the kubelet's own, self-signed,
//! which kube-apiserver does not verify unless told to. So far: `/healthz` and
//! `/containerLogs` ([`logs`]).

pub mod logs;
pub mod stream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::cri::Runtime;

/// How long an authorization decision is reused.
const AUTHZ_TTL: Duration = Duration::from_secs(60);
/// How long a TokenReview's answer is reused (upstream's authentication cache: 2 minutes).
const AUTHN_TTL: Duration = Duration::from_secs(120);

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

/// Who called, from the client certificate.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub groups: Vec<String>,
}

/// An authorization question: user, verb, subresource.
type Asked = (String, String, String);

/// What the handlers share.
pub struct ApiState {
    pub node: String,
    pub runtime: Arc<dyn Runtime>,
    /// Asks the API server's SubjectAccessReview, as this node.
    pub client: kube::Client,
    /// The latest usage sample.
    pub usage: super::stats::Latest,
    decisions: Mutex<HashMap<Asked, (bool, Instant)>>,
    /// TokenReview answers by a hash of the token.
    tokens: Mutex<HashMap<u64, (Option<Caller>, Instant)>>,
}

impl ApiState {
    pub fn new(
        node: String,
        runtime: Arc<dyn Runtime>,
        client: kube::Client,
        usage: super::stats::Latest,
    ) -> Self {
        ApiState {
            node,
            runtime,
            client,
            usage,
            decisions: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }
}

fn caller_from_cert(der: &[u8]) -> Option<Caller> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    Some(Caller { name, groups })
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

/// The subresource of `nodes` a path needs, as the upstream kubelet maps them.
fn subresource(path: &str) -> &'static str {
    if path.starts_with("/stats") {
        "stats"
    } else if path.starts_with("/metrics") {
        "metrics"
    } else if path.starts_with("/logs") {
        "log"
    } else {
        "proxy"
    }
}

fn verb(method: &axum::http::Method) -> &'static str {
    match *method {
        axum::http::Method::POST => "create",
        axum::http::Method::PUT => "update",
        axum::http::Method::PATCH => "patch",
        axum::http::Method::DELETE => "delete",
        _ => "get",
    }
}

async fn authorize(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let from_cert = req.extensions().get::<Caller>().cloned();
    let caller = match from_cert {
        Some(c) => Some(c),
        None => match bearer(&req) {
            Some(token) => match token_review(&state, &token).await {
                Ok(c) => c,
                Err(r) => return r,
            },
            None => None,
        },
    };
    let Some(caller) = caller else {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    };
    let sub = subresource(req.uri().path());
    let verb = verb(req.method());
    let key = (caller.name.clone(), verb.to_string(), sub.to_string());
    let cached = state
        .decisions
        .lock()
        .ok()
        .and_then(|d| d.get(&key).copied())
        .filter(|(_, at)| at.elapsed() < AUTHZ_TTL)
        .map(|(ok, _)| ok);
    let allowed = match cached {
        Some(ok) => ok,
        None => {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(caller.name.clone()),
                    groups: Some(caller.groups.clone()),
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some(verb.into()),
                        resource: Some("nodes".into()),
                        subresource: Some(sub.into()),
                        name: Some(state.node.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let api: Api<SubjectAccessReview> = Api::all(state.client.clone());
            match api.create(&PostParams::default(), &review).await {
                Ok(r) => {
                    let ok = r.status.is_some_and(|s| s.allowed);
                    if let Ok(mut d) = state.decisions.lock() {
                        d.insert(key, (ok, Instant::now()));
                    }
                    ok
                }
                Err(e) => {
                    tracing::warn!("authorizing a kubelet API request: {e}");
                    return (StatusCode::INTERNAL_SERVER_ERROR, "authorization failed")
                        .into_response();
                }
            }
        }
    };
    if !allowed {
        let msg = format!(
            "Forbidden (user={}, verb={verb}, resource=nodes, subresource={sub})",
            caller.name
        );
        return (StatusCode::FORBIDDEN, msg).into_response();
    }
    next.run(req).await
}

fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Who a bearer token is, as the API server's TokenReview says (None: nobody).
async fn token_review(state: &ApiState, token: &str) -> Result<Option<Caller>, Response> {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    let key = h.finish();
    if let Some((c, at)) = state.tokens.lock().ok().and_then(|t| t.get(&key).cloned()) {
        if at.elapsed() < AUTHN_TTL {
            return Ok(c);
        }
    }
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(state.client.clone());
    let r = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            tracing::warn!("authenticating a kubelet API request: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "authentication failed").into_response()
        })?;
    let caller = r
        .status
        .filter(|s| s.authenticated == Some(true))
        .and_then(|s| s.user)
        .map(|u| Caller {
            name: u.username.unwrap_or_default(),
            groups: u.groups.unwrap_or_default(),
        });
    if let Ok(mut t) = state.tokens.lock() {
        t.retain(|_, (_, at)| at.elapsed() < AUTHN_TTL);
        t.insert(key, (caller.clone(), Instant::now()));
    }
    Ok(caller)
}

async fn metrics_resource(State(state): State<Arc<ApiState>>) -> Response {
    let body = state
        .usage
        .get()
        .map(|u| crate::resource_metrics::prometheus::write(&u))
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

async fn stats_summary(State(state): State<Arc<ApiState>>) -> Response {
    match state.usage.get() {
        Some(u) => axum::Json(super::stats::summary(&u)).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no usage sampled yet").into_response(),
    }
}

fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics/resource", get(metrics_resource))
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
    mut stop: watch::Receiver<bool>,
) -> Result<(), KubeletApiError> {
    let config = tls_config(&cert.0, &cert.1, client_ca)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let app = router(state);
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
                .and_then(|c| caller_from_cert(c));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_node_subresources_as_upstream() {
        assert_eq!(subresource("/containerLogs/ns/p/c"), "proxy");
        assert_eq!(subresource("/exec/ns/p/c"), "proxy");
        assert_eq!(subresource("/stats/summary"), "stats");
        assert_eq!(subresource("/metrics/resource"), "metrics");
        assert_eq!(subresource("/logs/syslog"), "log");
    }
}
