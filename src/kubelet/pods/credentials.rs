//! Registry credentials from a pod's `imagePullSecrets` (`kubernetes.io/dockerconfigjson` and
//! the older `kubernetes.io/dockercfg`), matched to an image as upstream's credential keyring
//! does: the registry host (Docker Hub for bare names; `*` globs per DNS label), the port,
//! and a path prefix; the most specific key first.

use std::collections::BTreeMap;

use base64::Engine;

use crate::kubelet::cri::api;

/// One registry key's credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    pub key: String,
    pub auth: api::AuthConfig,
}

/// Docker Hub's names for itself.
const DOCKER_HUB: &str = "docker.io";

/// The credentials a secret's entries hold (none when it is no registry secret).
pub fn from_secret(entries: &BTreeMap<String, Vec<u8>>) -> Vec<Credential> {
    let parsed: serde_json::Value = if let Some(d) = entries.get(".dockerconfigjson") {
        serde_json::from_slice::<serde_json::Value>(d)
            .map(|v| v["auths"].clone())
            .unwrap_or_default()
    } else if let Some(d) = entries.get(".dockercfg") {
        serde_json::from_slice(d).unwrap_or_default()
    } else {
        return Vec::new();
    };
    let Some(auths) = parsed.as_object() else {
        return Vec::new();
    };
    auths
        .iter()
        .map(|(key, v)| {
            let text = |f: &str| v[f].as_str().unwrap_or_default().to_string();
            let (mut username, mut password) = (text("username"), text("password"));
            let auth = text("auth");
            if username.is_empty() && !auth.is_empty() {
                if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&auth) {
                    let raw = String::from_utf8_lossy(&raw).into_owned();
                    if let Some((u, p)) = raw.split_once(':') {
                        username = u.to_string();
                        password = p.to_string();
                    }
                }
            }
            Credential {
                key: key.clone(),
                auth: api::AuthConfig {
                    username,
                    password,
                    auth,
                    // Left empty, as upstream's keyring leaves it: the key is already
                    // matched, and containerd would read it as a URL (a bare
                    // `host:port` does not parse).
                    server_address: String::new(),
                    identity_token: text("identitytoken"),
                    registry_token: text("registrytoken"),
                },
            }
        })
        .collect()
}

/// A key or an image reference as (host, port, path).
fn split(reference: &str, is_image: bool) -> (String, String, String) {
    let r = reference
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let r = r.split(['@']).next().unwrap_or_default();
    let (first, rest) = r.split_once('/').unwrap_or((r, ""));
    let registry_like = !is_image
        || (r.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost"));
    let (hostport, path) = if registry_like {
        (first.to_string(), rest.to_string())
    } else {
        (DOCKER_HUB.to_string(), r.to_string())
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h.to_string(), p.to_string()),
        _ => (hostport, String::new()),
    };
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => host,
    };
    // An image's tag is no part of its path.
    let path = if is_image {
        match path.rsplit_once(':') {
            Some((p, tag)) if !tag.contains('/') => p.to_string(),
            _ => path,
        }
    } else {
        path.trim_end_matches('/').to_string()
    };
    (host, port, path)
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len()
        && p.iter().zip(&h).all(|(p, h)| {
            if p.contains('*') {
                let (pre, post) = p.split_once('*').unwrap_or((p, ""));
                h.starts_with(pre) && h.ends_with(post) && h.len() >= pre.len() + post.len()
            } else {
                p == h
            }
        })
}

/// Whether the credentials under `key` are for `image`.
pub fn matches(key: &str, image: &str) -> bool {
    let (kh, kp, kpath) = split(key, false);
    // Docker's legacy key for the Hub: https://index.docker.io/v1/.
    let kpath = if kh == DOCKER_HUB && kpath == "v1" {
        String::new()
    } else {
        kpath
    };
    let (ih, ip, ipath) = split(image, true);
    host_matches(&kh, &ih)
        && (kp.is_empty() || kp == ip)
        && (kpath.is_empty() || ipath == kpath || ipath.starts_with(&format!("{kpath}/")))
}

/// The credentials that apply to `image`, most specific key first.
pub fn for_image(all: &[Credential], image: &str) -> Vec<api::AuthConfig> {
    let mut hits: Vec<&Credential> = all.iter().filter(|c| matches(&c.key, image)).collect();
    hits.sort_by_key(|c| std::cmp::Reverse(c.key.len()));
    hits.into_iter().map(|c| c.auth.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_of_both_formats_are_read() {
        let mut e = BTreeMap::new();
        e.insert(
            ".dockerconfigjson".to_string(),
            br#"{"auths":{"registry.local:5000":{"auth":"dXNlcjpwYXNz"}}}"#.to_vec(),
        );
        let c = from_secret(&e);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].auth.username.as_str(), c[0].auth.password.as_str()),
            ("user", "pass")
        );
        let mut old = BTreeMap::new();
        old.insert(
            ".dockercfg".to_string(),
            br#"{"https://index.docker.io/v1/":{"username":"u","password":"p"}}"#.to_vec(),
        );
        let c = from_secret(&old);
        assert_eq!(c[0].auth.username, "u");
        assert!(from_secret(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn keys_match_images_as_upstream() {
        assert!(matches(
            "registry.local:5000",
            "registry.local:5000/team/app:1"
        ));
        assert!(!matches("registry.local:5000", "registry.local/team/app:1"));
        assert!(
            matches("registry.local", "registry.local:5000/app"),
            "no port: any port"
        );
        assert!(matches("*.example.com", "eu.example.com/app:2"));
        assert!(!matches("*.example.com", "example.com/app"));
        assert!(matches("https://index.docker.io/v1/", "busybox:1.36"));
        assert!(matches("docker.io", "library/busybox"));
        assert!(matches("quay.io/team", "quay.io/team/app:1"));
        assert!(!matches("quay.io/team", "quay.io/teamx/app:1"));
        assert!(!matches("quay.io", "docker.io/quay.io"));
        let all = vec![
            Credential {
                key: "quay.io".into(),
                auth: api::AuthConfig {
                    username: "wide".into(),
                    ..Default::default()
                },
            },
            Credential {
                key: "quay.io/team".into(),
                auth: api::AuthConfig {
                    username: "narrow".into(),
                    ..Default::default()
                },
            },
        ];
        let got: Vec<String> = for_image(&all, "quay.io/team/app")
            .into_iter()
            .map(|a| a.username)
            .collect();
        assert_eq!(got, ["narrow", "wide"]);
    }
}
