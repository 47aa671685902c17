//! Authentication beyond client certificates, and the authorizer.
//!
//! Callers are known by their client certificate (`http`), or by a bearer token: a
//! service-account JWT this server signed ([`authenticate_token`]), valid only while its service
//! account (and the pod or secret it is bound to) still exists with the same uid.
//!
//! Authorization is upstream's: members of `system:masters` may do everything, everyone else what
//! RBAC ([`rbac`]) allows; refusals are 403 with upstream's wording ([`forbidden`]).
//! Impersonation ([`impersonate`]) and the access reviews ([`access`]) sit on the same
//! authorizer.

// A refusal is a finished HTTP response, built once per refused request; boxing it would only
// add an allocation.
#![allow(clippy::result_large_err)]

pub mod access;
pub mod impersonate;
pub mod node;
pub mod rbac;
pub mod reviews;
pub mod tokens;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use self::rbac::rules::{Attributes, ResourceAttrs};
use super::catalog;
use super::http::User;
use super::registry::object;
use super::status;
use super::token::{TokenSigner, ISSUER};
use crate::store::Store;

/// What bearer-token authentication needs.
#[derive(Clone)]
pub struct Authenticator {
    pub tokens: Option<Arc<TokenSigner>>,
    pub store: Arc<dyn Store>,
    pub rbac: rbac::Rbac,
    /// The watch cache, for the Node authorizer's lookups.
    pub cache: crate::store::watch_cache::WatchCache,
    /// The static token file's tokens.
    pub static_tokens: Arc<std::collections::HashMap<String, User>>,
}

/// The groups every service account is in.
fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]
}

async fn object_uid(
    store: &dyn Store,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> Option<String> {
    let def = catalog::find("", "v1", plural)?;
    let kv = store.get(&object::key(def, ns, name), 0).await.ok()??;
    let obj: Value = serde_json::from_slice(&kv.value).ok()?;
    obj["metadata"]["uid"].as_str().map(str::to_string)
}

/// The user a bearer token stands for: a static token, a bootstrap token, or a service-account
/// token for the API's audience.
pub async fn authenticate_bearer(auth: &Authenticator, token: &str) -> Option<User> {
    if let Some(u) = auth.static_tokens.get(token) {
        return Some(u.clone());
    }
    if tokens::parse_bootstrap_token(token).is_some() {
        return tokens::authenticate_bootstrap(auth.store.as_ref(), token, object::epoch_now())
            .await;
    }
    authenticate_token(auth, token).await
}

/// The user a service-account token stands for, if it is valid now: signed by us, for the API
/// audience, not expired, its service account and bound object still there with their uids.
pub async fn authenticate_token(auth: &Authenticator, token: &str) -> Option<User> {
    authenticate_token_for(auth, token, &[ISSUER]).await
}

/// As [`authenticate_token`], for the given audiences (TokenReview).
pub async fn authenticate_token_for(
    auth: &Authenticator,
    token: &str,
    audiences: &[&str],
) -> Option<User> {
    let signer = auth.tokens.as_deref()?;
    let claims = match signer.verify(token, audiences, object::epoch_now()) {
        Ok(c) => c,
        Err(_) if audiences.contains(&ISSUER) => return authenticate_legacy(auth, token).await,
        Err(_) => return None,
    };
    let k8s = &claims["kubernetes.io"];
    let ns = k8s["namespace"].as_str()?;
    let sa = &k8s["serviceaccount"];
    let name = sa["name"].as_str()?;
    if object_uid(auth.store.as_ref(), "serviceaccounts", Some(ns), name).await?
        != sa["uid"].as_str()?
    {
        return None;
    }
    for (kind, plural, namespaced) in [
        ("pod", "pods", true),
        ("secret", "secrets", true),
        ("node", "nodes", false),
    ] {
        let bound = &k8s[kind];
        if let Some(bname) = bound["name"].as_str() {
            let uid =
                object_uid(auth.store.as_ref(), plural, namespaced.then_some(ns), bname).await?;
            if Some(uid.as_str()) != bound["uid"].as_str() {
                return None;
            }
        }
    }
    Some(User {
        name: format!("system:serviceaccount:{ns}:{name}"),
        groups: service_account_groups(ns),
    })
}

/// The user a legacy service-account token stands for: signed by us, and still the token of
/// its Secret, whose service account exists with the uid the token names.
async fn authenticate_legacy(auth: &Authenticator, token: &str) -> Option<User> {
    use base64::Engine;
    let claims = auth.tokens.as_deref()?.verify_legacy(token).ok()?;
    let c = |k: &str| claims[format!("kubernetes.io/serviceaccount/{k}")].as_str();
    let (ns, secret_name, sa, sa_uid) = (
        c("namespace")?,
        c("secret.name")?,
        c("service-account.name")?,
        c("service-account.uid")?,
    );
    let def = catalog::find("", "v1", "secrets")?;
    let kv = auth
        .store
        .get(&object::key(def, Some(ns), secret_name), 0)
        .await
        .ok()??;
    let secret: Value = serde_json::from_slice(&kv.value).ok()?;
    let stored = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["token"].as_str()?)
        .ok()?;
    if secret["type"] != "kubernetes.io/service-account-token"
        || stored != token.as_bytes()
        || secret["metadata"]["deletionTimestamp"].is_string()
    {
        return None;
    }
    if object_uid(auth.store.as_ref(), "serviceaccounts", Some(ns), sa).await? != sa_uid {
        return None;
    }
    Some(User {
        name: format!("system:serviceaccount:{ns}:{sa}"),
        groups: service_account_groups(ns),
    })
}

/// The authorization attributes of an HTTP request, as upstream's RequestInfo resolves them.
pub fn request_attributes(
    method: &Method,
    path: &str,
    query: Option<&str>,
    watch: bool,
) -> Attributes {
    match super::registry::request::parse(method, path, watch) {
        Some(i) => {
            let field_selector = super::registry::request::parse_query(query)
                .field_selector
                .unwrap_or_default();
            // A list or watch of one object by name names it, as upstream's RequestInfo does.
            let mut name = i.name.clone().unwrap_or_default();
            if name.is_empty() && matches!(i.verb, "list" | "watch") {
                if let Some(n) = exact_match(&field_selector, "metadata.name") {
                    name = n.to_string();
                }
            }
            // A namespace is its own namespace, so a RoleBinding in it can grant access to it.
            let namespace = match (&i.namespace, i.group.as_str(), i.resource.as_str()) {
                (None, "", "namespaces") => i.name.clone().unwrap_or_default(),
                (ns, _, _) => ns.clone().unwrap_or_default(),
            };
            Attributes {
                verb: i.verb.to_string(),
                resource: Some(ResourceAttrs {
                    group: i.group,
                    resource: i.resource,
                    subresource: i.subresource.unwrap_or_default(),
                    namespace,
                    name,
                    field_selector,
                }),
                path: path.to_string(),
            }
        }
        None => Attributes {
            verb: match method.as_str() {
                "HEAD" => "get".into(),
                m => m.to_lowercase(),
            },
            resource: None,
            path: path.to_string(),
        },
    }
}

/// The value a field selector requires `field` to equal, if it does.
pub fn exact_match<'a>(selector: &'a str, field: &str) -> Option<&'a str> {
    selector.split(',').find_map(|term| {
        let (k, v) = term.split_once("==").or_else(|| term.split_once('='))?;
        (k.trim() == field && !k.ends_with('!')).then(|| v.trim())
    })
}

/// The 403 upstream answers when `user` may not do what `a` describes.
pub fn forbidden(user: &str, a: &Attributes, reason: &str) -> Response {
    let mut message = match &a.resource {
        Some(r) => {
            let resource = match r.subresource.as_str() {
                "" => r.resource.clone(),
                s => format!("{}/{s}", r.resource),
            };
            let qualified = match r.group.as_str() {
                "" => r.resource.clone(),
                g => format!("{}.{g}", r.resource),
            };
            let what = match r.name.as_str() {
                "" => qualified,
                n => format!("{qualified} {n:?}"),
            };
            let scope = match r.namespace.as_str() {
                "" => "at the cluster scope".into(),
                ns => format!("in the namespace {ns:?}"),
            };
            format!(
                "{what} is forbidden: User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}",
                a.verb, r.group
            )
        }
        None => format!(
            "forbidden: User {user:?} cannot {} path {:?}",
            a.verb, a.path
        ),
    };
    if !reason.is_empty() {
        message.push_str(&format!(": {reason}"));
    }
    let mut details = json!({});
    if let Some(r) = &a.resource {
        details = json!({"kind": r.resource, "group": r.group});
        if !r.name.is_empty() {
            details["name"] = json!(r.name);
        }
    }
    status::failure_with_details(StatusCode::FORBIDDEN, "Forbidden", &message, details)
}

/// Whether `user` may make the request `a`: the Node authorizer for kubelets, then RBAC, as
/// upstream's `--authorization-mode=Node,RBAC`. A refusal's reason gathers both authorizers'.
pub async fn decide(auth: &Authenticator, user: &User, a: &Attributes) -> rbac::Decision {
    let mut reasons = Vec::new();
    if let Some(n) = node::node_name(user) {
        match node::authorize(auth, n, a).await {
            node::Verdict::Allow => {
                return rbac::Decision {
                    allowed: true,
                    ..Default::default()
                }
            }
            node::Verdict::NoOpinion(why) if !why.is_empty() => reasons.push(why),
            node::Verdict::NoOpinion(_) => {}
        }
    }
    let d = auth.rbac.authorize(user, a).await;
    if d.allowed {
        return d;
    }
    match d.errors.as_slice() {
        [] => {}
        [one] => reasons.push(format!("RBAC: {one}")),
        errs => reasons.push(format!("RBAC: [{}]", errs.join(", "))),
    }
    rbac::Decision {
        allowed: false,
        reason: reasons.join("\n"),
        errors: d.errors,
    }
}

/// As [`decide`], with upstream's 403 for a refusal.
pub async fn authorize(auth: &Authenticator, user: &User, a: &Attributes) -> Result<(), Response> {
    let d = decide(auth, user, a).await;
    if d.allowed {
        return Ok(());
    }
    Err(forbidden(&user.name, a, &d.reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_resolve_to_upstreams_attributes() {
        let a = request_attributes(&Method::GET, "/api/v1/namespaces/a/pods/p/log", None, false);
        let r = a.resource.expect("resource request");
        assert_eq!((a.verb.as_str(), r.namespace.as_str()), ("get", "a"));
        assert_eq!(
            (r.resource.as_str(), r.subresource.as_str()),
            ("pods", "log")
        );
        let ns = request_attributes(&Method::DELETE, "/api/v1/namespaces/team", None, false);
        assert_eq!(ns.resource.expect("resource").namespace, "team");
        let w = request_attributes(
            &Method::GET,
            "/apis/apps/v1/deployments",
            Some("fieldSelector=metadata.name%3Dweb"),
            true,
        );
        assert_eq!(w.verb, "watch");
        assert_eq!(w.resource.expect("resource").name, "web");
        let n = request_attributes(&Method::GET, "/apis/apps/v1", None, false);
        assert!(n.resource.is_none());
        assert_eq!((n.verb.as_str(), n.path.as_str()), ("get", "/apis/apps/v1"));
    }

    #[test]
    fn refusals_are_worded_as_upstream() {
        let a = request_attributes(&Method::GET, "/api/v1/namespaces/a/pods", None, false);
        let r = forbidden("ann", &a, "");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let n = request_attributes(&Method::GET, "/metrics", None, false);
        let r = forbidden("ann", &n, "");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
}
