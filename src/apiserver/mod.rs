//! The API server: the Kubernetes v1.37 wire API over HTTPS, in front of the store.
//!
//! So far: TLS serving with the cluster PKI ([`pki`]), client-certificate authentication
//! (anonymous callers get 401 outside the health and version paths), `/version`, `/healthz`,
//! `/livez`, `/readyz`, the admin kubeconfig, and discovery of every built-in resource
//! ([`catalog`], [`discovery`]). The resource handlers come next.

pub mod admission;
pub mod apply;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod convert;
pub mod discovery;
pub mod encryption;
pub mod endpoint_reconciler;
pub mod health;
pub mod http;
pub mod ipalloc;
pub mod join;
pub mod kubeconfig;
pub mod kubelet_client;
#[cfg(feature = "controllers")]
pub mod local_client;
pub mod openapi;
pub mod openapi_pb;
pub mod patch;
pub mod pki;
pub mod portalloc;
pub mod protobuf;
pub mod registry;
// It lists nodes as an in-process client, as the controllers do.
#[cfg(feature = "controllers")]
pub mod scraper;
pub mod status;
pub mod strategy;
pub mod table;
pub mod token;
pub mod validation;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::store::Store;

/// Why the API server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("certificates: {0}")]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error("store: {0}")]
    Store(#[from] crate::store::Error),
    #[error("service-account key: {0}")]
    Token(#[from] token::TokenError),
    #[error(transparent)]
    TokenFile(#[from] auth::tokens::TokenFileError),
    #[error(transparent)]
    Encryption(#[from] encryption::EncryptionError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error(transparent)]
    Admission(#[from] admission::config::AdmissionConfigError),
    #[error("RBAC: {0}")]
    Rbac(#[from] auth::rbac::bootstrap::BootstrapError),
    #[error("service IPs: {0}")]
    ServiceIps(#[from] ipalloc::AllocError),
    #[error("writing the admin kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How the API server is set up.
/// The provisioner of the default `local-path` StorageClass (k3s's name for it).
pub const LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";

#[derive(Clone, Debug)]

pub struct ApiConfig {
    pub bind_address: IpAddr,
    /// The address in the `kubernetes` Service's endpoints.
    pub advertise_address: IpAddr,
    pub port: u16,
    /// Where the PKI lives (`DATA_DIR/server/tls`).
    pub tls_dir: PathBuf,
    /// Names and addresses the serving certificate covers.
    pub sans: Vec<String>,
    /// Where the admin kubeconfig goes.
    pub kubeconfig: PathBuf,
    /// The Service ClusterIP range.
    pub service_cidr: String,
    /// The static token file (`--token-auth-file`), if any.
    pub token_auth_file: Option<PathBuf>,
    /// The EncryptionConfiguration (`--encryption-provider-config`), if any.
    pub encryption_provider_config: Option<PathBuf>,
    /// The admission plugins' AdmissionConfiguration (`--admission-control-config-file`), if any.
    pub admission_control_config_file: Option<PathBuf>,
    /// The audit log.
    pub audit: crate::supervisor::AuditOptions,
    /// Whether the default `local-path` StorageClass is created (not `--disable=local-storage`).
    pub local_storage: bool,
    /// Whether RuntimeClasses for the OCI runtimes k1s can offer are created (not
    /// `--disable=runtimes`).
    pub runtime_classes: bool,
    /// The kubelets' usage reports `metrics.k8s.io` serves.
    pub metrics: crate::resource_metrics::Sources,
}

/// A running API server.
pub struct ApiServer {
    pub addr: SocketAddr,
    /// The router, for in-process clients.
    pub app: axum::Router,
    /// The cluster CA certificate (PEM).
    pub ca_cert: String,
    /// The service-account token signer.
    pub tokens: Option<Arc<token::TokenSigner>>,
    /// The client for kubelets (logs, exec, metrics scrapes), when the PKI allows one.
    pub kubelets: Option<Arc<kubelet_client::KubeletClient>>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Waits until the server has stopped (after the stop signal).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Starts serving; returns once the port is bound and the kubeconfig is written.
pub async fn start(
    cfg: ApiConfig,
    store: Arc<dyn Store>,
    stop: watch::Receiver<bool>,
) -> Result<ApiServer, ApiError> {
    let (tls_dir, sans) = (cfg.tls_dir.clone(), cfg.sans.clone());
    let pki = tokio::task::spawn_blocking(move || pki::load_or_create(&tls_dir, &sans))
        .await
        .map_err(|e| pki::PkiError::Io {
            path: cfg.tls_dir.clone(),
            source: std::io::Error::other(e),
        })??;
    let tls = http::tls_config(&pki)?;
    let auditor = audit::Auditor::from_options(&cfg.audit)?.map(Arc::new);
    let static_tokens = match &cfg.token_auth_file {
        Some(path) => auth::tokens::load_token_file(path)?,
        None => Default::default(),
    };
    let admission = Arc::new(match &cfg.admission_control_config_file {
        Some(path) => admission::AdmissionConfig::load(path)?,
        None => Default::default(),
    });
    let tokens = Some(Arc::new(token::TokenSigner::from_pem(
        &pki.service_account_key,
    )?));
    let signer = tokens.clone();
    let addr = SocketAddr::new(cfg.bind_address, cfg.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| http::HttpError::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| http::HttpError::Listen { addr, source })?;
    let host = if cfg.bind_address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match cfg.bind_address {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        }
    };
    let text = kubeconfig::render(&pki, &format!("https://{host}:{}", addr.port()));
    kubeconfig::write(&cfg.kubeconfig, &text).map_err(|source| ApiError::Kubeconfig {
        path: cfg.kubeconfig.clone(),
        source,
    })?;
    let store: Arc<dyn Store> = match &cfg.encryption_provider_config {
        Some(path) => Arc::new(encryption::store::EncryptingStore::new(
            store,
            encryption::EncryptionConfig::load(path)?,
        )),
        None => store,
    };
    let store: Arc<dyn Store> = Arc::new(crate::store::metered::MeteredStore::new(store));
    let range = ipalloc::ServiceRange::parse(&cfg.service_cidr)?;
    registry::bootstrap(
        store.as_ref(),
        &range,
        addr.port(),
        cfg.local_storage,
        cfg.runtime_classes,
    )
    .await?;
    let (created, removed) = ipalloc::repair(store.as_ref()).await?;
    if created + removed > 0 {
        tracing::info!(created, removed, "repaired service IP allocations");
    }
    let (created, removed) = portalloc::repair(store.as_ref()).await?;
    if created + removed > 0 {
        tracing::info!(created, removed, "repaired node port allocations");
    }
    let policy = auth::rbac::bootstrap::reconcile_all(store.as_ref()).await?;
    tracing::debug!(objects = policy, "bootstrap RBAC policy reconciled");
    // Events are not cached, as kube-apiserver's default watch cache sizes say (0 for events).
    let cache = crate::store::watch_cache::WatchCache::start(
        store.clone(),
        crate::store::keys::REGISTRY_ROOT,
        crate::store::watch_cache::CacheOptions {
            uncached: vec![crate::store::keys::list_prefix("events", None)],
            ..Default::default()
        },
    )
    .await?;
    let rbac = auth::rbac::Rbac::start(store.clone(), &cache).await?;
    let store_for_endpoints = store.clone();
    let kubelets =
        match kubelet_client::KubeletClient::new(&pki.kubelet_client_cert, &pki.kubelet_client_key)
        {
            Ok(c) => Some(std::sync::Arc::new(c)),
            Err(e) => {
                tracing::error!("the API server cannot reach kubelets: {e}");
                None
            }
        };
    let app = http::router(
        health::Health {
            store: store.clone(),
        },
        registry::Registry {
            store: store.clone(),
            cache: cache.clone(),
            service_range: Some(range),
            tokens: tokens.clone(),
            rbac: rbac.clone(),
            admission,
            metrics: cfg.metrics.clone(),
            kubelets: kubelets.clone(),
        },
        discovery::Discovery {
            server_address: format!("{host}:{}", addr.port()),
        },
        auth::Authenticator {
            tokens,
            store,
            rbac,
            cache: cache.clone(),
            static_tokens: Arc::new(static_tokens),
        },
        auditor,
        join::Join {
            pki: Arc::new(pki.clone()),
        },
    );
    tokio::spawn(endpoint_reconciler::run(
        store_for_endpoints,
        cfg.advertise_address,
        addr.port(),
        stop.clone(),
    ));
    let task = tokio::spawn(http::serve(listener, tls, app.clone(), stop));
    tracing::info!(%addr, kubeconfig = %cfg.kubeconfig.display(), "API server listening");
    Ok(ApiServer {
        addr,
        app,
        ca_cert: pki.ca_cert.clone(),
        tokens: signer,
        kubelets,
        task,
    })
}
