//! Encryption at rest, with upstream's EncryptionConfiguration file
//! (`--encryption-provider-config`): the resources it lists are stored encrypted by the first
//! provider of their entry (aescbc, aesgcm, secretbox) and read with whichever provider's prefix
//! the stored value carries, so keys rotate by putting the new key first and re-writing the
//! objects. Stored values have upstream's format (`k8s:enc:aescbc:v1:KEYNAME:` + ciphertext), so
//! an etcd written by kube-apiserver with the same keys reads back.
//!
//! [`store::EncryptingStore`] applies it under everything else, so the watch cache and every
//! reader see plaintext and nothing reaches the disk or etcd in the clear.

pub mod store;

use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use serde::Deserialize;

use super::catalog;
use super::registry::object;

/// Why the encryption configuration cannot be used, or a value not decrypted.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("reading the encryption configuration {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the encryption configuration {path} is not an EncryptionConfiguration: {message}")]
    Parse { path: String, message: String },
    #[error("the encryption configuration {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("no provider can read the stored value (it starts with {0:?})")]
    NoMatch(String),
    #[error("decrypting with key {0:?} failed: the data is corrupt or the key is wrong")]
    Decrypt(String),
    #[error("gathering random bytes failed")]
    Random,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
struct ResourceConfig {
    resources: Vec<String>,
    providers: Vec<ProviderConfig>,
}

#[derive(Deserialize)]
struct ProviderConfig {
    aescbc: Option<Keys>,
    aesgcm: Option<Keys>,
    secretbox: Option<Keys>,
    identity: Option<serde_json::Value>,
    kms: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Keys {
    keys: Vec<Key>,
}

#[derive(Deserialize)]
struct Key {
    name: String,
    secret: String,
}

/// One key of one provider.
#[derive(Clone)]
enum Provider {
    AesCbc { name: String, key: Vec<u8> },
    AesGcm { name: String, key: Vec<u8> },
    SecretBox { name: String, key: Vec<u8> },
    Identity,
}

impl Provider {
    /// The prefix its values are stored with.
    fn prefix(&self) -> String {
        match self {
            Provider::AesCbc { name, .. } => format!("k8s:enc:aescbc:v1:{name}:"),
            Provider::AesGcm { name, .. } => format!("k8s:enc:aesgcm:v1:{name}:"),
            Provider::SecretBox { name, .. } => format!("k8s:enc:secretbox:v1:{name}:"),
            Provider::Identity => String::new(),
        }
    }
}

fn random(n: usize) -> Result<Vec<u8>, EncryptionError> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| EncryptionError::Random)?;
    Ok(b)
}

/// Evaluates `$body` with `$c` naming the AES cipher for a 16-, 24- or 32-byte key.
macro_rules! with_aes {
    ($len:expr, $c:ident => $body:expr) => {
        match $len {
            16 => {
                type $c = aes::Aes128;
                $body
            }
            24 => {
                type $c = aes::Aes192;
                $body
            }
            _ => {
                type $c = aes::Aes256;
                $body
            }
        }
    };
}

type Gcm<C> = aes_gcm::AesGcm<C, aes_gcm::aead::consts::U12>;

fn cbc_encrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Vec<u8> {
    use cbc::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
    with_aes!(key.len(), C => cbc::Encryptor::<C>::new_from_slices(key, iv)
        .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(data))
        .unwrap_or_default())
}

fn cbc_decrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
    with_aes!(key.len(), C => cbc::Decryptor::<C>::new_from_slices(key, iv)
        .ok()?
        .decrypt_padded_vec_mut::<Pkcs7>(data)
        .ok())
}

fn gcm_seal(key: &[u8], nonce: &[u8], data: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let payload = Payload { msg: data, aad };
    let nonce = aes_gcm::Nonce::from_slice(nonce);
    with_aes!(key.len(), C => Gcm::<C>::new_from_slice(key).ok()?.encrypt(nonce, payload).ok())
}

fn gcm_open(key: &[u8], nonce: &[u8], data: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let payload = Payload { msg: data, aad };
    let nonce = aes_gcm::Nonce::from_slice(nonce);
    with_aes!(key.len(), C => Gcm::<C>::new_from_slice(key).ok()?.decrypt(nonce, payload).ok())
}

/// Builds a provider from a key's name and bytes.
type MakeProvider = fn(String, Vec<u8>) -> Provider;

/// The providers of one resource entry, the first one writing.
pub struct Transformer {
    providers: Vec<Provider>,
}

impl Transformer {
    /// The stored form of `plain` under the storage key `key` (GCM authenticates the key).
    pub fn encrypt(&self, key: &str, plain: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        let Some(p) = self.providers.first() else {
            return Ok(plain.to_vec());
        };
        let mut out = p.prefix().into_bytes();
        match p {
            Provider::Identity => out.extend_from_slice(plain),
            Provider::AesCbc { key: k, .. } => {
                let iv = random(16)?;
                out.extend_from_slice(&iv);
                out.extend(cbc_encrypt(k, &iv, plain));
            }
            Provider::AesGcm { key: k, .. } => {
                let nonce = random(12)?;
                let sealed =
                    gcm_seal(k, &nonce, plain, key.as_bytes()).ok_or(EncryptionError::Random)?;
                out.extend_from_slice(&nonce);
                out.extend(sealed);
            }
            Provider::SecretBox { key: k, .. } => {
                use crypto_secretbox::aead::{Aead as _, KeyInit as _};
                let nonce = random(24)?;
                let cipher = crypto_secretbox::XSalsa20Poly1305::new_from_slice(k)
                    .map_err(|_| EncryptionError::Random)?;
                let sealed = cipher
                    .encrypt(crypto_secretbox::Nonce::from_slice(&nonce), plain)
                    .map_err(|_| EncryptionError::Random)?;
                out.extend_from_slice(&nonce);
                out.extend(sealed);
            }
        }
        Ok(out)
    }

    /// The plaintext of a stored value, by whichever provider's prefix it carries.
    pub fn decrypt(&self, key: &str, stored: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        for p in &self.providers {
            let prefix = p.prefix();
            let Some(body) = stored.strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            let name = prefix.clone();
            let fail = || EncryptionError::Decrypt(name.clone());
            return match p {
                Provider::Identity => {
                    if stored.starts_with(b"k8s:enc:") {
                        continue;
                    }
                    Ok(stored.to_vec())
                }
                Provider::AesCbc { key: k, .. } => {
                    if body.len() < 16 {
                        return Err(fail());
                    }
                    cbc_decrypt(k, &body[..16], &body[16..]).ok_or_else(fail)
                }
                Provider::AesGcm { key: k, .. } => {
                    if body.len() < 12 {
                        return Err(fail());
                    }
                    gcm_open(k, &body[..12], &body[12..], key.as_bytes()).ok_or_else(fail)
                }
                Provider::SecretBox { key: k, .. } => {
                    use crypto_secretbox::aead::{Aead as _, KeyInit as _};
                    if body.len() < 24 {
                        return Err(fail());
                    }
                    let cipher = crypto_secretbox::XSalsa20Poly1305::new_from_slice(k)
                        .map_err(|_| fail())?;
                    cipher
                        .decrypt(
                            crypto_secretbox::Nonce::from_slice(&body[..24]),
                            &body[24..],
                        )
                        .map_err(|_| fail())
                }
            };
        }
        // Values written before encryption was turned on are plaintext JSON.
        if !stored.starts_with(b"k8s:enc:") && stored.first() == Some(&b'{') {
            return Ok(stored.to_vec());
        }
        let head = String::from_utf8_lossy(&stored[..stored.len().min(24)]).into_owned();
        Err(EncryptionError::NoMatch(head))
    }

    /// Whether a stored value was written by another provider than the first (key rotation:
    /// a re-write must store it again even if the object did not change).
    pub fn stale(&self, stored: &[u8]) -> bool {
        match self.providers.first() {
            None | Some(Provider::Identity) => stored.starts_with(b"k8s:enc:"),
            Some(p) => !stored.starts_with(p.prefix().as_bytes()),
        }
    }
}

/// Which transformer each storage prefix uses.
pub struct EncryptionConfig {
    prefixes: Vec<(String, Arc<Transformer>)>,
}

impl EncryptionConfig {
    /// The transformer of a storage key, if its resource is configured.
    pub fn for_key(&self, key: &str) -> Option<&Arc<Transformer>> {
        self.prefixes
            .iter()
            .filter(|(p, _)| key.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, t)| t)
    }

    /// Reads an EncryptionConfiguration file.
    pub fn load(path: &Path) -> Result<EncryptionConfig, EncryptionError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| EncryptionError::Read {
            path: shown.clone(),
            source,
        })?;
        EncryptionConfig::parse(&text, &shown)
    }

    /// Parses an EncryptionConfiguration; `shown` names it in errors.
    pub fn parse(text: &str, shown: &str) -> Result<EncryptionConfig, EncryptionError> {
        let invalid = |message: String| EncryptionError::Invalid {
            path: shown.to_string(),
            message,
        };
        let cfg: Config = serde_yaml_ng::from_str(text).map_err(|e| EncryptionError::Parse {
            path: shown.to_string(),
            message: e.to_string(),
        })?;
        if cfg.kind != "EncryptionConfiguration" {
            return Err(invalid(format!(
                "kind is {:?}, expected EncryptionConfiguration",
                cfg.kind
            )));
        }
        let mut entries: Vec<(Vec<String>, Arc<Transformer>)> = Vec::new();
        for (i, r) in cfg.resources.iter().enumerate() {
            let mut providers = Vec::new();
            for (j, p) in r.providers.iter().enumerate() {
                let at = format!("resources[{i}].providers[{j}]");
                let kinds = [
                    p.aescbc.is_some(),
                    p.aesgcm.is_some(),
                    p.secretbox.is_some(),
                    p.identity.is_some(),
                    p.kms.is_some(),
                ];
                if kinds.iter().filter(|k| **k).count() != 1 {
                    return Err(invalid(format!(
                        "{at}: exactly one provider type must be given"
                    )));
                }
                if p.kms.is_some() {
                    return Err(invalid(format!("{at}: kms providers are not supported by k1s; use aescbc, aesgcm or secretbox")));
                }
                if p.identity.is_some() {
                    providers.push(Provider::Identity);
                    continue;
                }
                let (keys, sizes, make): (&Keys, &[usize], MakeProvider) =
                    if let Some(k) = &p.aescbc {
                        (k, &[16, 24, 32], |name, key| Provider::AesCbc { name, key })
                    } else if let Some(k) = &p.aesgcm {
                        (k, &[16, 24, 32], |name, key| Provider::AesGcm { name, key })
                    } else if let Some(k) = &p.secretbox {
                        (k, &[32], |name, key| Provider::SecretBox { name, key })
                    } else {
                        continue;
                    };
                if keys.keys.is_empty() {
                    return Err(invalid(format!("{at}.keys: at least one key is required")));
                }
                for (n, k) in keys.keys.iter().enumerate() {
                    let secret = base64::engine::general_purpose::STANDARD
                        .decode(k.secret.trim())
                        .map_err(|_| invalid(format!("{at}.keys[{n}].secret: not base64")))?;
                    if !sizes.contains(&secret.len()) {
                        return Err(invalid(format!(
                            "{at}.keys[{n}].secret: a key of {} bytes; expected {sizes:?}",
                            secret.len()
                        )));
                    }
                    if k.name.is_empty() {
                        return Err(invalid(format!("{at}.keys[{n}].name: required")));
                    }
                    providers.push(make(k.name.clone(), secret));
                }
            }
            entries.push((r.resources.clone(), Arc::new(Transformer { providers })));
        }
        let mut prefixes = Vec::new();
        for def in catalog::all() {
            let names = [
                if def.group.is_empty() {
                    def.plural.to_string()
                } else {
                    format!("{}.{}", def.plural, def.group)
                },
                format!("*.{}", def.group),
                "*.*".to_string(),
            ];
            let found = entries
                .iter()
                .find(|(res, _)| res.iter().any(|r| names.contains(r)));
            if let Some((_, t)) = found {
                let prefix = object::prefix(def, None);
                if !prefixes
                    .iter()
                    .any(|(p, _): &(String, Arc<Transformer>)| *p == prefix)
                {
                    prefixes.push((prefix, t.clone()));
                }
            }
        }
        Ok(EncryptionConfig { prefixes })
    }
}

#[cfg(test)]
mod tests;
