//! The API server's connection to kubelets, for the subresources it proxies to them
//! (`pods/log` so far): HTTPS with the API server's kubelet client certificate. The kubelet's
//! serving certificate is not verified, as kube-apiserver does without
//! `--kubelet-certificate-authority` (kubelets serve self-signed certificates).

use std::sync::Arc;

use axum::body::Body;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::tls_any::AnyServer;

#[derive(Debug, thiserror::Error)]
pub enum KubeletClientError {
    #[error("kubelet client certificate: {0}")]
    Cert(String),
    #[error("kubelet client TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("connecting to the kubelet at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("talking to the kubelet at {addr}: {message}")]
    Http { addr: String, message: String },
}

/// Makes requests to kubelets.
pub struct KubeletClient {
    tls: tokio_rustls::TlsConnector,
}

impl KubeletClient {
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Self, KubeletClientError> {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| KubeletClientError::Cert(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| KubeletClientError::Cert(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_client_auth_cert(certs, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// A TLS connection to the kubelet at `host:port`, and the address as a Host header.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<
        (
            tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
            String,
        ),
        KubeletClientError,
    > {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let connect_err = |source| KubeletClientError::Connect {
            addr: addr.clone(),
            source,
        };
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect_err)?;
        let name = ServerName::try_from(host.to_string())
            .unwrap_or_else(|_| ServerName::try_from("kubelet").expect("a valid DNS name"));
        let tls = self.tls.connect(name, tcp).await.map_err(connect_err)?;
        Ok((tls, addr))
    }

    /// `GET path_and_query` on the kubelet at `host:port`; the response streams its body.
    pub async fn get(
        &self,
        host: &str,
        port: u16,
        path_and_query: &str,
    ) -> Result<hyper::Response<Body>, KubeletClientError> {
        let (tls, addr) = self.connect(host, port).await?;
        let http = |message: String| KubeletClientError::Http {
            addr: addr.clone(),
            message,
        };
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get(path_and_query)
            .header(hyper::header::HOST, &addr)
            .body(Body::empty())
            .map_err(|e| http(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| http(e.to_string()))?;
        Ok(resp.map(Body::new))
    }
}
