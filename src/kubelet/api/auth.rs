//! Who may call a kubelet API, as the upstream kubelet's webhook authentication and
//! authorization decide: a client certificate of the cluster CA names the caller (CN user, O
//! groups), else a bearer token is vouched for by the API server's TokenReview; then a
//! SubjectAccessReview asks whether that caller may VERB `nodes/SUBRESOURCE` of the node the
//! path is about (`nodes/proxy`, `nodes/log`, `nodes/stats`, `nodes/metrics`). Answers are
//! cached as upstream's are (2 minutes for tokens, 1 minute for decisions).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// How long an authorization decision is reused.
const AUTHZ_TTL: Duration = Duration::from_secs(60);
/// How long a TokenReview's answer is reused (upstream's authentication cache: 2 minutes).
const AUTHN_TTL: Duration = Duration::from_secs(120);

/// Who called, from the client certificate or a TokenReview.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub groups: Vec<String>,
}

/// An authorization question: user, verb, subresource, node.
type Asked = (String, String, String, String);

/// Authenticates and authorizes kubelet API requests through the API server.
pub struct Authorizer {
    /// Asks TokenReviews and SubjectAccessReviews, as a node.
    client: kube::Client,
    decisions: Mutex<HashMap<Asked, (bool, Instant)>>,
    /// TokenReview answers by a hash of the token.
    tokens: Mutex<HashMap<u64, (Option<Caller>, Instant)>>,
}

/// The caller a verified client certificate names (CN user, O groups).
pub fn caller_from_cert(der: &[u8]) -> Option<Caller> {
    let (name, groups) = crate::certs::subject(der)?;
    Some(Caller { name, groups })
}

/// The subresource of `nodes` a path needs, as the upstream kubelet maps them.
pub fn subresource(path: &str) -> &'static str {
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

fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// What a request asks for and with which credentials.
pub struct Asking {
    caller: Option<Caller>,
    token: Option<String>,
    sub: &'static str,
    verb: &'static str,
}

impl Asking {
    pub fn of(req: &Request) -> Asking {
        Asking {
            caller: req.extensions().get::<Caller>().cloned(),
            token: bearer(req),
            sub: subresource(req.uri().path()),
            verb: verb(req.method()),
        }
    }
}

impl Authorizer {
    pub fn new(client: kube::Client) -> Self {
        Authorizer {
            client,
            decisions: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Lets a request (see [`Asking::of`]) through to node `node`'s API, or answers it with
    /// 401, 403 or 500.
    pub async fn check(&self, asking: Asking, node: &str) -> Result<(), Response> {
        let Asking {
            caller,
            token,
            sub,
            verb,
        } = asking;
        let caller = match (caller, token) {
            (Some(c), _) => Some(c),
            (None, Some(token)) => self.token_review(&token).await?,
            (None, None) => None,
        };
        let Some(caller) = caller else {
            return Err((StatusCode::UNAUTHORIZED, "Unauthorized").into_response());
        };
        let key = (
            caller.name.clone(),
            verb.to_string(),
            sub.to_string(),
            node.to_string(),
        );
        let cached = self
            .decisions
            .lock()
            .ok()
            .and_then(|d| d.get(&key).copied())
            .filter(|(_, at)| at.elapsed() < AUTHZ_TTL)
            .map(|(ok, _)| ok);
        let allowed = match cached {
            Some(ok) => ok,
            None => {
                let ok = self.access_review(&caller, verb, sub, node).await?;
                if let Ok(mut d) = self.decisions.lock() {
                    d.retain(|_, (_, at)| at.elapsed() < AUTHZ_TTL);
                    d.insert(key, (ok, Instant::now()));
                }
                ok
            }
        };
        if !allowed {
            let msg = format!(
                "Forbidden (user={}, verb={verb}, resource=nodes, subresource={sub})",
                caller.name
            );
            return Err((StatusCode::FORBIDDEN, msg).into_response());
        }
        Ok(())
    }

    async fn access_review(
        &self,
        caller: &Caller,
        verb: &str,
        sub: &str,
        node: &str,
    ) -> Result<bool, Response> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.name.clone()),
                groups: Some(caller.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    resource: Some("nodes".into()),
                    subresource: Some(sub.into()),
                    name: Some(node.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &review).await {
            Ok(r) => Ok(r.status.is_some_and(|s| s.allowed)),
            Err(e) => {
                tracing::warn!("authorizing a kubelet API request: {e}");
                Err((StatusCode::INTERNAL_SERVER_ERROR, "authorization failed").into_response())
            }
        }
    }

    /// Who a bearer token is, as the API server's TokenReview says (None: nobody).
    async fn token_review(&self, token: &str) -> Result<Option<Caller>, Response> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        token.hash(&mut h);
        let key = h.finish();
        if let Some((c, at)) = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned()) {
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
        let api: Api<TokenReview> = Api::all(self.client.clone());
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
        if let Ok(mut t) = self.tokens.lock() {
            t.retain(|_, (_, at)| at.elapsed() < AUTHN_TTL);
            t.insert(key, (caller.clone(), Instant::now()));
        }
        Ok(caller)
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
        assert_eq!(
            subresource("/metrics/nodes/sim-1/metrics/resource"),
            "metrics"
        );
        assert_eq!(subresource("/logs/syslog"), "log");
    }
}
