//! Service-account tokens: JWTs signed with the cluster's service-account key (ES256), as
//! `serviceaccounts/NAME/token` (TokenRequest) issues them.
//!
//! The claims are upstream's: `iss`, `sub` (`system:serviceaccount:NS:NAME`), `aud`, `exp`,
//! `iat`, `nbf`, `jti`, and the private `kubernetes.io` claim naming the namespace, the service
//! account and the object the token is bound to. Checking tokens comes with authentication.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

/// The issuer k1s names in its tokens, as k3s and kubeadm clusters do by default.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The issuer of legacy (Secret-kept) service-account tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the service-account key is not a PEM private key")]
    NotPem,
    #[error("the service-account key is not an ECDSA P-256 key: {0}")]
    Key(String),
    #[error("signing a token failed")]
    Sign,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token has expired or is not valid yet")]
    Expired,
    #[error("the token is for another issuer or audience")]
    Audience,
}

/// Signs tokens with the service-account key.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// The key id: the SHA-256 of the public key, as upstream derives `kid`.
    kid: String,
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl TokenSigner {
    /// From the PKCS#8 PEM text of the key.
    pub fn from_pem(pem: &str) -> Result<TokenSigner, TokenError> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| TokenError::NotPem)?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let kid =
            b64(ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref()).as_ref());
        Ok(TokenSigner { key, rng, kid })
    }

    /// A signed JWT with `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String, TokenError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| TokenError::Sign)?;
        Ok(format!("{input}.{}", b64(sig.as_ref())))
    }
}

impl TokenSigner {
    /// Checks a token's signature, issuer, time window and audience (one of `audiences`);
    /// returns its claims. Whether its service account and bound object still exist is the
    /// caller's to check.
    pub fn verify(&self, token: &str, audiences: &[&str], now: i64) -> Result<Value, TokenError> {
        let claims = self.signed_claims(token)?;
        if claims["iss"] != ISSUER {
            return Err(TokenError::Audience);
        }
        self.check_window_and_audience(claims, audiences, now)
    }

    /// A legacy service-account token's claims (the kind kept in
    /// `kubernetes.io/service-account-token` Secrets: issuer `kubernetes/serviceaccount`, no
    /// expiry, no audience), if we signed it.
    pub fn verify_legacy(&self, token: &str) -> Result<Value, TokenError> {
        let claims = self.signed_claims(token)?;
        if claims["iss"] != LEGACY_ISSUER {
            return Err(TokenError::Audience);
        }
        Ok(claims)
    }

    /// The claims of a token whose ES256 signature is ours.
    fn signed_claims(&self, token: &str) -> Result<Value, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let dec = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|_| TokenError::Malformed)
        };
        let header: Value = serde_json::from_slice(&dec(h)?).map_err(|_| TokenError::Malformed)?;
        if header["alg"] != "ES256" {
            return Err(TokenError::Signature);
        }
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        public
            .verify(format!("{h}.{p}").as_bytes(), &dec(sig)?)
            .map_err(|_| TokenError::Signature)?;
        serde_json::from_slice(&dec(p)?).map_err(|_| TokenError::Malformed)
    }

    fn check_window_and_audience(
        &self,
        claims: Value,
        audiences: &[&str],
        now: i64,
    ) -> Result<Value, TokenError> {
        // A minute of leeway for clocks, as upstream allows.
        let exp = claims["exp"].as_i64().ok_or(TokenError::Malformed)?;
        let nbf = claims["nbf"].as_i64().unwrap_or(0);
        if now > exp + 60 || now + 60 < nbf {
            return Err(TokenError::Expired);
        }
        let aud_ok = claims["aud"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(claims["aud"].is_string().then_some(&claims["aud"]))
            .filter_map(Value::as_str)
            .any(|a| audiences.contains(&a));
        if !aud_ok {
            return Err(TokenError::Audience);
        }
        Ok(claims)
    }

    /// The public key as a JSON Web Key Set, for `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        // An uncompressed P-256 point: 0x04, then X and Y, 32 bytes each.
        let point = self.key.public_key().as_ref();
        let (x, y) = if point.len() == 65 {
            (b64(&point[1..33]), b64(&point[33..]))
        } else {
            (String::new(), String::new())
        };
        json!({"keys": [{"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256", "x": x, "y": y}]})
    }
}

/// What a token is issued for.
/// The claims of a legacy token for a `kubernetes.io/service-account-token` Secret.
pub fn legacy_claims(namespace: &str, account: &str, account_uid: &str, secret: &str) -> Value {
    json!({
        "iss": LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/secret.name": secret,
        "kubernetes.io/serviceaccount/service-account.name": account,
        "kubernetes.io/serviceaccount/service-account.uid": account_uid,
        "sub": format!("system:serviceaccount:{namespace}:{account}"),
    })
}

pub struct Claims<'a> {
    pub namespace: &'a str,
    pub account: &'a str,
    pub account_uid: &'a str,
    pub audiences: Vec<String>,
    pub issued: i64,
    pub expires: i64,
    /// The object the token is bound to: (kind in lower case, name, uid).
    pub bound: Option<(&'a str, &'a str, &'a str)>,
}

impl Claims<'_> {
    pub fn to_json(&self) -> Value {
        let mut k8s = json!({
            "namespace": self.namespace,
            "serviceaccount": {"name": self.account, "uid": self.account_uid},
        });
        if let Some((kind, name, uid)) = self.bound {
            k8s[kind] = json!({"name": name, "uid": uid});
        }
        json!({
            "aud": self.audiences,
            "exp": self.expires,
            "iat": self.issued,
            "iss": ISSUER,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k8s,
            "nbf": self.issued,
            "sub": format!("system:serviceaccount:{}:{}", self.namespace, self.account),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_es256_jwts_that_verify() {
        let pem = rcgen::KeyPair::generate().expect("key").serialize_pem();
        let signer = TokenSigner::from_pem(&pem).expect("signer");
        let claims = Claims {
            namespace: "default",
            account: "robot",
            account_uid: "u-1",
            audiences: vec![ISSUER.to_string()],
            issued: 100,
            expires: 3700,
            bound: Some(("pod", "p", "u-2")),
        };
        let token = signer.sign(&claims.to_json()).expect("sign");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let dec = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .expect("b64")
        };
        let payload: Value = serde_json::from_slice(&dec(parts[1])).expect("payload");
        assert_eq!(payload["sub"], "system:serviceaccount:default:robot");
        assert_eq!(payload["kubernetes.io"]["pod"]["name"], "p");
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            signer.key.public_key().as_ref().to_vec(),
        );
        public
            .verify(
                format!("{}.{}", parts[0], parts[1]).as_bytes(),
                &dec(parts[2]),
            )
            .expect("signature verifies");
    }
}
