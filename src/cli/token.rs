//! `k1s token create|list|delete`: bootstrap tokens for joining agents, as `kubeadm token` makes
//! them: `bootstrap.kubernetes.io/token` Secrets named `bootstrap-token-ID` in kube-system,
//! written through the API with the admin kubeconfig.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

/// The group agents' bootstrap tokens add, as kubeadm's `system:bootstrappers:kubeadm:...`.
pub const NODE_TOKEN_GROUP: &str = "system:bootstrappers:k1s:default-node-token";

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token and print it.
    Create(CreateArgs),
    /// List the bootstrap tokens.
    List(ClientArgs),
    /// Delete bootstrap tokens (by ID or whole token).
    Delete(DeleteArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The admin kubeconfig.
    #[arg(long, value_name = "FILE", default_value = "/etc/k1s/k1s.yaml")]
    pub kubeconfig: PathBuf,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The token to create (ID.SECRET); random if not given.
    pub token: Option<String>,
    /// How long the token is valid (0 = forever).
    #[arg(long, default_value = "24h", value_parser = super::parse_duration)]
    pub ttl: Duration,
    /// Human-readable description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Usages (authentication, signing).
    #[arg(long, value_delimiter = ',', default_values_t = ["signing".to_string(), "authentication".to_string()])]
    pub usages: Vec<String>,
    /// Print the token as agents take it: `K10<sha256 of the cluster CA>::ID.SECRET`, which
    /// pins the CA (the CA is the kubeconfig's).
    #[arg(long)]
    pub join: bool,
    /// Extra groups (each under system:bootstrappers:).
    #[arg(long, value_delimiter = ',', default_values_t = [NODE_TOKEN_GROUP.to_string()])]
    pub groups: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Token IDs or tokens.
    #[arg(required = true)]
    pub tokens: Vec<String>,
}

/// Why a token command failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0:?} is not a bootstrap token: expected [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    Malformed(String),
    #[error("group {0:?} must start with \"system:bootstrappers:\"")]
    Group(String),
    #[error("usage {0:?} is not one of authentication, signing")]
    Usage(String),
    #[error("reading random bytes: {0}")]
    Random(#[from] std::io::Error),
    #[error("--join needs the kubeconfig's certificate-authority-data and the kubelet part: {0}")]
    Join(String),
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_string(n: usize) -> Result<String, TokenError> {
    let mut bytes = vec![0u8; n * 2];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    // 36 does not divide 256: drop the bytes that would bias the choice.
    let limit = 256 - 256 % ALPHABET.len();
    let mut out = String::new();
    let mut pool = bytes.into_iter().filter(|b| (*b as usize) < limit);
    while out.len() < n {
        match pool.next() {
            Some(b) => out.push(ALPHABET[b as usize % ALPHABET.len()] as char),
            None => return random_string(n),
        }
    }
    Ok(out)
}

fn valid(token: &str) -> Option<(String, String)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b));
    (ok(id, 6) && ok(secret, 16)).then(|| (id.to_string(), secret.to_string()))
}

async fn client(args: &ClientArgs) -> Result<kube::Client, TokenError> {
    let bad = |message: String| TokenError::Kubeconfig {
        path: args.kubeconfig.display().to_string(),
        message,
    };
    let kc =
        kube::config::Kubeconfig::read_from(&args.kubeconfig).map_err(|e| bad(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    Ok(crate::retry::client(cfg)?)
}

fn secrets(c: kube::Client) -> kube::Api<k8s_openapi::api::core::v1::Secret> {
    kube::Api::namespaced(c, "kube-system")
}

fn rfc3339(epoch: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The agent form of `token`, pinning the kubeconfig's CA.
fn join_token(args: &ClientArgs, token: &str) -> Result<String, TokenError> {
    #[cfg(feature = "kubelet")]
    {
        use base64::Engine;
        let kc = kube::config::Kubeconfig::read_from(&args.kubeconfig)
            .map_err(|e| TokenError::Join(e.to_string()))?;
        let data = kc
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.certificate_authority_data.clone())
            .ok_or_else(|| TokenError::Join("no certificate-authority-data".into()))?;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| TokenError::Join(e.to_string()))?;
        let pem = String::from_utf8(pem).map_err(|e| TokenError::Join(e.to_string()))?;
        Ok(crate::kubelet::join::join_token(&pem, token))
    }
    #[cfg(not(feature = "kubelet"))]
    {
        let _ = (args, token);
        Err(TokenError::Join("this binary has no kubelet part".into()))
    }
}

/// `k1s token create`.
pub async fn create(args: CreateArgs) -> Result<(), TokenError> {
    let (id, secret) = match &args.token {
        Some(t) => valid(t).ok_or_else(|| TokenError::Malformed(t.clone()))?,
        None => (random_string(6)?, random_string(16)?),
    };
    let mut data = BTreeMap::from([
        ("token-id".to_string(), id.clone()),
        ("token-secret".to_string(), secret.clone()),
    ]);
    for u in &args.usages {
        if !matches!(u.as_str(), "authentication" | "signing") {
            return Err(TokenError::Usage(u.clone()));
        }
        data.insert(format!("usage-bootstrap-{u}"), "true".into());
    }
    for g in &args.groups {
        if !g.starts_with("system:bootstrappers:") {
            return Err(TokenError::Group(g.clone()));
        }
    }
    if !args.groups.is_empty() {
        data.insert("auth-extra-groups".into(), args.groups.join(","));
    }
    if !args.description.is_empty() {
        data.insert("description".into(), args.description.clone());
    }
    if !args.ttl.is_zero() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        data.insert(
            "expiration".into(),
            rfc3339(now + args.ttl.as_secs() as i64),
        );
    }
    let obj = k8s_openapi::api::core::v1::Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(format!("bootstrap-token-{id}")),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        string_data: Some(data),
        ..Default::default()
    };
    let printed = if args.join {
        join_token(&args.client, &format!("{id}.{secret}"))?
    } else {
        format!("{id}.{secret}")
    };
    secrets(client(&args.client).await?)
        .create(&Default::default(), &obj)
        .await?;
    println!("{printed}");
    Ok(())
}

fn field(s: &k8s_openapi::api::core::v1::Secret, key: &str) -> String {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// `k1s token list`: kubeadm's columns.
pub async fn list(args: ClientArgs) -> Result<(), TokenError> {
    let list = secrets(client(&args).await?)
        .list(&kube::api::ListParams::default().fields("type=bootstrap.kubernetes.io/token"))
        .await?;
    let mut rows = vec![[
        "TOKEN".to_string(),
        "EXPIRES".into(),
        "USAGES".into(),
        "DESCRIPTION".into(),
        "EXTRA GROUPS".into(),
    ]];
    for s in &list.items {
        let usages: Vec<String> = ["authentication", "signing"]
            .iter()
            .filter(|u| field(s, &format!("usage-bootstrap-{u}")) == "true")
            .map(|u| u.to_string())
            .collect();
        let expires = field(s, "expiration");
        rows.push([
            format!("{}.{}", field(s, "token-id"), field(s, "token-secret")),
            if expires.is_empty() {
                "<forever>".into()
            } else {
                expires
            },
            usages.join(","),
            match field(s, "description") {
                d if d.is_empty() => "<none>".into(),
                d => d,
            },
            field(s, "auth-extra-groups"),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(())
}

/// `k1s token delete`.
pub async fn delete(args: DeleteArgs) -> Result<(), TokenError> {
    let api = secrets(client(&args.client).await?);
    for t in &args.tokens {
        let id = t.split('.').next().unwrap_or_default();
        if id.len() != 6 || !id.bytes().all(|b| ALPHABET.contains(&b)) {
            return Err(TokenError::Malformed(t.clone()));
        }
        api.delete(&format!("bootstrap-token-{id}"), &Default::default())
            .await?;
        println!("bootstrap token {id:?} deleted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_have_the_bootstrap_shape() {
        let t = format!(
            "{}.{}",
            random_string(6).expect("id"),
            random_string(16).expect("secret")
        );
        assert!(valid(&t).is_some(), "{t}");
        assert!(valid("abc.def").is_none());
    }
}
