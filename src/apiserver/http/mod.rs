//! HTTPS serving: rustls with client-certificate authentication, HTTP/1.1 and HTTP/2 on one
//! port, and the router. Only this module knows HTTP connections; handlers see requests with
//! the caller's identity attached.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::discovery::{self, Discovery};
use super::health::{self, Health};
use super::pki::Pki;
use super::registry::{self, Registry};
use super::status;

pub mod tls;

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad certificate or key PEM: {0}")]
    Pem(String),
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client verifier set-up failed: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Who is calling, from their client certificate: CN is the user, O the groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// The peer address of a request's connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// The caller of a request: `None` when anonymous.
#[derive(Clone, Debug)]
pub struct Caller(pub Option<User>);

/// The user a client certificate names.
pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (name, groups) = crate::certs::subject(der)?;
    Some(User { name, groups })
}

/// The TLS set-up: rustls with our serving certificate, and the cluster CA's verifier for the
/// client certificates the handshake lets through ([`tls`]).
pub struct Tls {
    pub config: rustls::ServerConfig,
    pub verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

/// The rustls configuration: our serving certificate; client certificates optional, checked
/// against the cluster CA after the handshake.
pub fn tls_config(pki: &Pki) -> Result<Tls, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_cert.as_bytes()) {
        let cert = cert.map_err(|e| HttpError::Pem(e.to_string()))?;
        roots.add(cert)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.serving_cert.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| HttpError::Pem(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key.as_bytes())
        .map_err(|e| HttpError::Pem(e.to_string()))?;
    let lenient = Arc::new(tls::Lenient {
        strict: verifier.clone(),
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(lenient)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        config: cfg,
        verifier,
    })
}

/// Marks a request whose connection presented a client certificate the cluster CA did not sign
/// (or one expired): it is refused with 401 unless a bearer token authenticates it.
#[derive(Clone, Copy, Debug)]
pub struct BadCertificate;

/// Paths anyone may read, as upstream's `system:public-info-viewer` allows.
/// Where joining agents get their node certificates (authorized by the handler: bootstrap tokens).
pub const JOIN_PATH: &str = "/v1-k1s/node-certificates";

fn is_public(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz", "/version", "/cacerts"]
        .iter()
        .any(|p| {
            path == *p
                || path
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
}

/// The user who made a request that acts as another (impersonation), for the audit log.
#[derive(Clone, Debug)]
pub struct Impersonator(pub User);

/// Knows the caller by certificate or bearer token and refuses unknown callers outside the
/// public paths with 401 (a token that does not verify is a 401 everywhere); applies
/// impersonation.
async fn authenticate(
    axum::extract::State(auth): axum::extract::State<crate::apiserver::auth::Authenticator>,
    mut req: Request,
    next: Next,
) -> Response {
    let mut user = req.extensions().get::<Caller>().and_then(|c| c.0.clone());
    if user.is_none() {
        let bearer = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
        if let Some(token) = bearer {
            match crate::apiserver::auth::authenticate_bearer(&auth, &token).await {
                Some(u) => user = Some(u),
                None => {
                    crate::metrics::registry().inc(&AUTHN_FAILURES, &["token"], 1.0);
                    return status::unauthorized();
                }
            }
        }
    }
    let Some(user) = user else {
        if req.extensions().get::<BadCertificate>().is_some() {
            crate::metrics::registry().inc(&AUTHN_FAILURES, &["certificate"], 1.0);
            return status::unauthorized();
        }
        if is_public(req.uri().path()) {
            return next.run(req).await;
        }
        crate::metrics::registry().inc(&AUTHN_FAILURES, &["anonymous"], 1.0);
        return status::unauthorized();
    };
    match crate::apiserver::auth::impersonate::impersonated(&auth, &user, req.headers()).await {
        Ok(Some(acting_as)) => {
            req.extensions_mut().insert(Impersonator(user));
            req.extensions_mut().insert(Caller(Some(acting_as)));
        }
        Ok(None) => {
            req.extensions_mut().insert(Caller(Some(user)));
        }
        Err(r) => return r,
    }
    next.run(req).await
}

/// Refuses what the caller may not do (Node, then RBAC) with upstream's 403.
async fn authorize(
    axum::extract::State(auth): axum::extract::State<crate::apiserver::auth::Authenticator>,
    req: Request,
    next: Next,
) -> Response {
    if is_public(req.uri().path()) || req.uri().path() == JOIN_PATH {
        return next.run(req).await;
    }
    let Some(user) = req.extensions().get::<Caller>().and_then(|c| c.0.clone()) else {
        return status::unauthorized();
    };
    let attrs = crate::apiserver::auth::request_attributes(
        req.method(),
        req.uri().path(),
        req.uri().query(),
        long_running(&req),
    );
    if let Err(r) = crate::apiserver::auth::authorize(&auth, &user, &attrs).await {
        return r;
    }
    next.run(req).await
}

/// Authentication failures, by the credential the caller tried.
static AUTHN_FAILURES: crate::metrics::Desc = crate::metrics::Desc {
    name: "apiserver_authentication_failures_total",
    help: "Requests refused with 401, by the credential they carried.",
    labels: &["credential"],
    buckets: &[],
};

/// Requests served at once, as kube-apiserver's `--max-requests-inflight` (400) and
/// `--max-mutating-requests-inflight` (200), which size its priority levels.
const MAX_READS_IN_FLIGHT: usize = 400;
const MAX_WRITES_IN_FLIGHT: usize = 200;
/// How long a request beyond the limit waits for a seat, and how many may wait at once: as
/// upstream's priority and fairness, a brief burst is queued rather than refused, and a
/// request that waited its limit (or found the queue full) gets 429 with Retry-After.
const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);
const QUEUED_PER_SEAT: usize = 4;

/// One limit: its seats and the requests queued for them.
#[derive(Clone)]
struct Gate {
    seats: Arc<tokio::sync::Semaphore>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    max_queued: usize,
    wait: std::time::Duration,
}

impl Gate {
    fn new(seats: usize, max_queued: usize, wait: std::time::Duration) -> Self {
        Gate {
            seats: Arc::new(tokio::sync::Semaphore::new(seats)),
            queued: Arc::default(),
            max_queued,
            wait,
        }
    }

    /// A seat, at once or after queueing; `None` when the queue is full or the wait ran out.
    async fn enter(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        use std::sync::atomic::Ordering;
        if let Ok(p) = self.seats.clone().try_acquire_owned() {
            return Some(p);
        }
        // The guard gives the queue place back however the wait ends, also when the client
        // goes away and this future is dropped while it waits.
        let place = QueuePlace(&self.queued);
        if place.0.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            return None;
        }
        let got = tokio::time::timeout(self.wait, self.seats.clone().acquire_owned()).await;
        drop(place);
        got.ok().and_then(Result::ok)
    }
}

/// A place in a [`Gate`]'s queue, given back when dropped.
struct QueuePlace<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The in-flight limits; watches and other long-running requests are not counted.
#[derive(Clone)]
pub struct InFlight {
    reads: Gate,
    writes: Gate,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            reads: Gate::new(
                MAX_READS_IN_FLIGHT,
                MAX_READS_IN_FLIGHT * QUEUED_PER_SEAT,
                QUEUE_WAIT,
            ),
            writes: Gate::new(
                MAX_WRITES_IN_FLIGHT,
                MAX_WRITES_IN_FLIGHT * QUEUED_PER_SEAT,
                QUEUE_WAIT,
            ),
        }
    }
}

/// Watches and the connections upstream counts as long-running (`log`, `exec`, `attach`,
/// `portforward`, `proxy`): not held against the in-flight limits.
pub(crate) fn long_running(req: &Request) -> bool {
    let q = req.uri().query().unwrap_or_default();
    let path = req.uri().path();
    q.split('&').any(|p| p == "watch=true" || p == "watch=1")
        || path.contains("/watch/")
        || ["/log", "/exec", "/attach", "/portforward", "/proxy"]
            .iter()
            .any(|s| path.ends_with(s))
}

/// Whether a request is a Lease read or write: node heartbeats and leader election, which
/// upstream's priority and fairness serves at its own levels (`node-high`, `leader-election`)
/// so a burst of other work never starves them. Here they are not counted against the limits:
/// there is one Lease per node and per elected component, each a small object.
fn heartbeat(req: &Request) -> bool {
    req.uri().path().starts_with("/apis/coordination.k8s.io/")
}

/// Queues a request while too many are being served; 429 with Retry-After when it cannot wait.
async fn limit_in_flight(
    axum::extract::State(limits): axum::extract::State<InFlight>,
    req: Request,
    next: Next,
) -> Response {
    if long_running(&req) || heartbeat(&req) {
        return next.run(req).await;
    }
    let mutating = !matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    let gate = if mutating {
        &limits.writes
    } else {
        &limits.reads
    };
    let Some(_seat) = gate.enter().await else {
        let mut resp = status::failure(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests, please try again later.",
        );
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return resp;
    };
    next.run(req).await
}

const REQUESTS: crate::metrics::Desc = crate::metrics::Desc {
    name: "apiserver_request_total",
    help: "Counter of apiserver requests broken out for each verb, group, version, resource, subresource, scope and HTTP response code.",
    labels: &["verb", "group", "version", "resource", "subresource", "scope", "component", "code"],
    buckets: &[],
};

const DURATION: crate::metrics::Desc = crate::metrics::Desc {
    name: "apiserver_request_duration_seconds",
    help: "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component.",
    labels: &["verb", "group", "version", "resource", "subresource", "scope", "component"],
    buckets: crate::metrics::LATENCY_BUCKETS,
};

/// Counts and times every request, labelled as upstream labels them.
async fn measure(req: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let watch = long_running(&req);
    let info = registry::request::parse(req.method(), req.uri().path(), watch);
    let (verb, group, version, resource, sub, scope) = match &info {
        Some(i) => (
            i.verb.to_uppercase(),
            i.group.clone(),
            i.version.clone(),
            i.resource.clone(),
            i.subresource.clone().unwrap_or_default(),
            if i.namespace.is_some() {
                "namespace"
            } else if i.name.is_some() {
                "cluster"
            } else {
                "resource"
            },
        ),
        None => (
            req.method().as_str().to_string(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            "",
        ),
    };
    let resp = next.run(req).await;
    let code = resp.status().as_u16().to_string();
    let labels = [
        verb.as_str(),
        &group,
        &version,
        &resource,
        &sub,
        scope,
        "apiserver",
    ];
    let m = crate::metrics::registry();
    m.inc(&REQUESTS, &[&labels[..], &[code.as_str()]].concat(), 1.0);
    if !watch {
        m.observe(&DURATION, &labels, start.elapsed().as_secs_f64());
    }
    resp
}

/// `GET /metrics`: every registered family plus the live watcher count.
async fn metrics(axum::extract::State(reg): axum::extract::State<Registry>) -> Response {
    let mut text = crate::metrics::registry().render();
    text.push_str(
        "# HELP apiserver_registered_watchers Number of currently registered watchers.
# TYPE apiserver_registered_watchers gauge
",
    );
    text.push_str(&format!(
        "apiserver_registered_watchers {}
",
        reg.cache.watcher_count()
    ));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The router of every path served so far.
pub fn router(
    health: Health,
    registry: Registry,
    disc: Discovery,
    auth: crate::apiserver::auth::Authenticator,
    auditor: Option<Arc<crate::apiserver::audit::Auditor>>,
    join: crate::apiserver::join::Join,
) -> Router {
    use crate::apiserver::auth::{access, reviews};
    let reviews = Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            axum::routing::post(reviews::self_subject),
        )
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            axum::routing::post(reviews::token_review),
        )
        .route(
            "/.well-known/openid-configuration",
            get(reviews::openid_configuration),
        )
        .route("/openid/v1/jwks", get(reviews::jwks))
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            axum::routing::post(access::subject),
        )
        .route(
            "/apis/authorization.k8s.io/v1/namespaces/{namespace}/localsubjectaccessreviews",
            axum::routing::post(access::local_subject),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            axum::routing::post(access::self_subject),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            axum::routing::post(access::self_rules),
        )
        .with_state(auth.clone());
    let discovery = Router::new()
        .route("/api", get(discovery::core))
        .route("/api/v1", get(discovery::core_v1))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_version))
        .with_state(disc);
    let joining = Router::new()
        .route("/cacerts", get(crate::apiserver::join::cacerts))
        .route(
            JOIN_PATH,
            axum::routing::post(crate::apiserver::join::node_certificates),
        )
        .with_state(join);
    let resources = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/{*rest}", axum::routing::any(registry::handle))
        .route(
            "/apis/{group}/{version}/{*rest}",
            axum::routing::any(registry::handle),
        )
        .with_state(registry);
    Router::new()
        .route("/version", get(health::version))
        .route("/healthz", get(health::healthz))
        .route("/healthz/{check}", get(health::healthz_check))
        .route("/livez", get(health::livez))
        .route("/livez/{check}", get(health::livez_check))
        .route("/readyz", get(health::readyz))
        .route("/readyz/{check}", get(health::readyz_check))
        .route("/openapi/v2", get(super::openapi::v2))
        .route("/openapi/v3", get(super::openapi::v3_index))
        .route("/openapi/v3/{*gv}", get(super::openapi::v3_doc))
        .with_state(health)
        .merge(discovery)
        .merge(reviews)
        .merge(joining)
        .merge(resources)
        .fallback(|| async { status::not_found() })
        .layer(axum::middleware::from_fn_with_state(
            InFlight::default(),
            limit_in_flight,
        ))
        .layer(axum::middleware::from_fn(measure))
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            auditor,
            crate::apiserver::audit::layer::audit,
        ))
        .layer(axum::middleware::from_fn_with_state(auth, authenticate))
}

/// Accepts TLS connections on `listener` and serves `app` until `stop` turns true.
pub async fn serve(listener: TcpListener, tls: Tls, app: Router, mut stop: watch::Receiver<bool>) {
    let acceptor = TlsAcceptor::from(Arc::new(tls.config));
    let verifier = tls.verifier;
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let verifier = verifier.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let (user, bad) = match stream.get_ref().1.peer_certificates() {
                Some(chain) if !chain.is_empty() => {
                    if tls::verify(verifier.as_ref(), chain) {
                        (chain.first().and_then(|c| user_from_cert(c)), false)
                    } else {
                        (None, true)
                    }
                }
                _ => (None, false),
            };
            let caller = Caller(user);
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(caller.clone());
                    req.extensions_mut().insert(Peer(peer));
                    if bad {
                        req.extensions_mut().insert(BadCertificate);
                    }
                    app.clone().oneshot(req)
                },
            );
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_server_answers_429_with_retry_after() {
        let wait = std::time::Duration::from_millis(50);
        let limits = InFlight {
            reads: Gate::new(0, 1, wait),
            writes: Gate::new(1, 0, wait),
        };
        let app = Router::new()
            .route("/x", get(|| async { "ok" }))
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n",
                get(|| async { "ok" }),
            )
            .layer(axum::middleware::from_fn_with_state(
                limits,
                limit_in_flight,
            ));
        let status = |path: &'static str| {
            let app = app.clone();
            async move {
                let req = axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .expect("req");
                app.oneshot(req).await.expect("response")
            }
        };
        let resp = status("/x").await;
        assert_eq!(
            resp.status(),
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "a request that waited its limit for a seat"
        );
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(
            status("/x?watch=true").await.status(),
            axum::http::StatusCode::OK,
            "watches are not counted"
        );
        assert_eq!(
            status("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n")
                .await
                .status(),
            axum::http::StatusCode::OK,
            "heartbeats are not counted"
        );
    }

    #[tokio::test]
    async fn a_burst_beyond_the_limit_is_queued_not_refused() {
        let gate = Gate::new(1, 1, std::time::Duration::from_secs(5));
        let first = gate.enter().await.expect("a free seat");
        let queued = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await.is_some() }
        });
        while gate.queued.load(std::sync::atomic::Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(
            gate.enter().await.is_none(),
            "the queue is full: refused at once"
        );
        drop(first);
        assert!(queued.await.expect("task"), "served once the seat was free");
        assert_eq!(gate.queued.load(std::sync::atomic::Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_client_that_leaves_the_queue_gives_its_place_back() {
        let gate = Gate::new(1, 1, std::time::Duration::from_secs(5));
        let seat = gate.enter().await.expect("a free seat");
        let left = tokio::time::timeout(std::time::Duration::from_millis(20), gate.enter()).await;
        assert!(left.is_err(), "the client went away while queued");
        assert_eq!(gate.queued.load(std::sync::atomic::Ordering::Acquire), 0);
        let queued = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await.is_some() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop(seat);
        assert!(
            queued.await.expect("task"),
            "the place was free to queue in"
        );
    }

    #[test]
    fn public_paths_are_only_the_health_and_version_ones() {
        assert!(is_public("/healthz"));
        assert!(is_public("/readyz/etcd"));
        assert!(is_public("/version"));
        assert!(!is_public("/versions"));
        assert!(!is_public("/api"));
        assert!(!is_public("/healthzx"));
    }
}
