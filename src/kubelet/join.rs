//! Joining a server, as a k3s agent does: the token (`K10<sha256 of the CA>::ID.SECRET`, or a
//! bare bootstrap token, which then trusts the CA the server presents) gets the cluster CA from
//! `/cacerts`, checks its hash, and asks `/v1-k1s/node-certificates` for a kubelet client
//! certificate per node; each node then talks to the API as `system:node:NAME`. The
//! certificates are kept under `DATA_DIR/agent/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use kube::Client;
use serde::Deserialize;
use serde_json::json;

/// Why an agent could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("--server {0:?} is not an https URL")]
    BadServer(String),
    #[error("the join token is malformed (expected K10<sha256>::ID.SECRET or ID.SECRET)")]
    BadToken,
    #[error(
        "the server's CA does not match the token's hash (got sha256 {got}): wrong server or token"
    )]
    CaMismatch { got: String },
    #[error("talking to the server: {0}")]
    Api(#[from] kube::Error),
    #[error("the server's answer could not be read: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the server did not return a certificate for node {0}")]
    Missing(String),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the server's CA is not PEM")]
    BadCa,
}

/// A parsed join token.
#[derive(Debug, PartialEq, Eq)]
pub struct Token {
    /// The CA's sha256 (hex), when the token pins it.
    pub ca_hash: Option<String>,
    /// The bootstrap token (ID.SECRET).
    pub secret: String,
}

/// Parses `K10<hex>::ID.SECRET` (also `K10<hex>::server:ID.SECRET`, as k3s writes it) or `ID.SECRET`.
pub fn parse_token(t: &str) -> Result<Token, JoinError> {
    let t = t.trim();
    let (ca_hash, secret) = match t.strip_prefix("K10") {
        Some(rest) => {
            let (hash, creds) = rest.split_once("::").ok_or(JoinError::BadToken)?;
            let creds = creds.strip_prefix("server:").unwrap_or(creds);
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(JoinError::BadToken);
            }
            (Some(hash.to_ascii_lowercase()), creds.to_string())
        }
        None => (None, t.to_string()),
    };
    let valid = secret.split_once('.').is_some_and(|(id, s)| {
        id.len() == 6
            && s.len() == 16
            && id
                .bytes()
                .chain(s.bytes())
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    if !valid {
        return Err(JoinError::BadToken);
    }
    Ok(Token { ca_hash, secret })
}

/// The join token for a CA and a bootstrap token, as agents take it.
pub fn join_token(ca_pem: &str, secret: &str) -> String {
    format!("K10{}::{secret}", sha256_hex(ca_pem.as_bytes()))
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A client for `server` from kubeconfig fields (CA and user as JSON).
async fn client(
    server: &str,
    ca: Option<&str>,
    user: serde_json::Value,
) -> Result<Client, JoinError> {
    let mut cluster = json!({"server": server});
    match ca {
        Some(pem) => cluster["certificate-authority-data"] = json!(b64(pem)),
        None => cluster["insecure-skip-tls-verify"] = json!(true),
    }
    let kubeconfig: kube::config::Kubeconfig = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "k1s", "cluster": cluster}],
        "users": [{"name": "agent", "user": user}],
        "contexts": [{"name": "k1s", "context": {"cluster": "k1s", "user": "agent"}}],
        "current-context": "k1s",
    }))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| JoinError::Api(kube::Error::InferKubeconfig(e)))?;
    Ok(crate::retry::client(config)?)
}

#[derive(Deserialize)]
struct Issued {
    certificates: Vec<IssuedCert>,
}

#[derive(Deserialize)]
struct IssuedCert {
    node: String,
    cert: String,
    key: String,
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), JoinError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| JoinError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

/// Joins `server` with `token`: a client acting as each of `nodes`, their certificates kept
/// under `dir` (`DATA_DIR/agent`).
pub async fn join(
    server: &str,
    token: &str,
    nodes: &[String],
    dir: &Path,
) -> Result<HashMap<String, Client>, JoinError> {
    if !server.starts_with("https://") {
        return Err(JoinError::BadServer(server.to_string()));
    }
    let token = parse_token(token)?;
    // The CA, over a connection not yet trusted; the token's hash decides.
    let anonymous = client(server, None, json!({})).await?;
    let ca = anonymous
        .request_text(
            http::Request::get("/cacerts")
                .body(Vec::new())
                .map_err(|e| JoinError::Api(kube::Error::HttpError(e)))?,
        )
        .await?;
    if !ca.contains("-----BEGIN CERTIFICATE-----") {
        return Err(JoinError::BadCa);
    }
    let got = sha256_hex(ca.as_bytes());
    match &token.ca_hash {
        Some(want) if *want != got => return Err(JoinError::CaMismatch { got }),
        Some(_) => {}
        None => tracing::warn!(
            ca_sha256 = %got,
            "the join token pins no CA hash; trusting the CA this server presents"
        ),
    }
    write(&dir.join("server-ca.crt"), &ca, false)?;
    let bootstrap = client(server, Some(&ca), json!({"token": token.secret})).await?;
    let body = serde_json::to_vec(&json!({"nodes": nodes}))?;
    let answer = bootstrap
        .request_text(
            http::Request::post("/v1-k1s/node-certificates")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body)
                .map_err(|e| JoinError::Api(kube::Error::HttpError(e)))?,
        )
        .await?;
    let issued: Issued = serde_json::from_str(&answer)?;
    let mut by_node: HashMap<String, IssuedCert> = issued
        .certificates
        .into_iter()
        .map(|c| (c.node.clone(), c))
        .collect();
    let mut clients = HashMap::new();
    for node in nodes {
        let c = by_node
            .remove(node)
            .ok_or_else(|| JoinError::Missing(node.clone()))?;
        write(
            &dir.join("nodes").join(format!("{node}.crt")),
            &c.cert,
            false,
        )?;
        write(&dir.join("nodes").join(format!("{node}.key")), &c.key, true)?;
        let user = json!({"client-certificate-data": b64(&c.cert), "client-key-data": b64(&c.key)});
        clients.insert(node.clone(), client(server, Some(&ca), user).await?);
    }
    Ok(clients)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_pin_the_ca_or_not() {
        let hash = "ab".repeat(32);
        let t =
            parse_token(&format!("K10{hash}::server:abcdef.0123456789abcdef")).expect("k3s form");
        assert_eq!(t.ca_hash.as_deref(), Some(hash.as_str()));
        assert_eq!(t.secret, "abcdef.0123456789abcdef");
        let t = parse_token("abcdef.0123456789abcdef").expect("bare");
        assert_eq!(t.ca_hash, None);
        assert!(parse_token("K10zz::abcdef.0123456789abcdef").is_err());
        assert!(parse_token("abc.def").is_err());
        let pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let joined = join_token(pem, "abcdef.0123456789abcdef");
        assert_eq!(
            parse_token(&joined).expect("round trip").ca_hash,
            Some(sha256_hex(pem.as_bytes()))
        );
    }
}
