//! Authentication beyond client certificates, and the authorizer.
//!
//! Callers are known by their client certificate (`http`), or by a bearer token: a
//! service-account JWT this server signed ([`authenticate_token`]), valid only while its service
//! account (and the pod or secret it is bound to) still exists with the same uid.
//!
//! Authorization is deliberately strict until RBAC lands: members of `system:masters` may do
//! everything; every other authenticated user may only read discovery, OpenAPI, the health and
//! version paths and the service-account issuer documents, and ask who they are
//! (SelfSubjectReview), as upstream's bootstrap roles allow everyone. Everything else gets 403
//! with upstream's wording.

// A refusal is a finished HTTP response, built once per refused request; boxing it would only
// add an allocation.
#![allow(clippy::result_large_err)]

pub mod reviews;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

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
    let claims = signer.verify(token, audiences, object::epoch_now()).ok()?;
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

/// Paths every authenticated user may read.
fn open_to_authenticated(path: &str) -> bool {
    matches!(
        path,
        "/api"
            | "/apis"
            | "/openapi/v2"
            | "/openapi/v3"
            | "/.well-known/openid-configuration"
            | "/openid/v1/jwks"
    ) || path.starts_with("/openapi/v3/")
        || path == "/api/v1"
        || path
            .strip_prefix("/apis/")
            .is_some_and(|rest| rest.split('/').filter(|s| !s.is_empty()).count() <= 2)
}

/// Decides whether `user` may make this request; the 403 upstream words if not.
pub fn authorize(
    user: &User,
    method: &Method,
    path: &str,
    query_watch: bool,
) -> Result<(), Response> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    if method == Method::GET && open_to_authenticated(path) {
        return Ok(());
    }
    if method == Method::POST && path == "/apis/authentication.k8s.io/v1/selfsubjectreviews" {
        return Ok(());
    }
    let info = super::registry::request::parse(method, path, query_watch);
    let message = match &info {
        Some(i) => {
            let resource = match &i.subresource {
                Some(s) => format!("{}/{s}", i.resource),
                None => i.resource.clone(),
            };
            let what = match &i.name {
                Some(n) => format!("{} {n:?}", i.resource),
                None => i.resource.clone(),
            };
            let scope = match &i.namespace {
                Some(ns) => format!("in the namespace {ns:?}"),
                None => "at the cluster scope".into(),
            };
            format!(
                "{what} is forbidden: User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
                user.name, i.verb, i.group
            )
        }
        None => format!(
            "forbidden: User {:?} cannot {} path {path:?}",
            user.name,
            method.as_str().to_lowercase()
        ),
    };
    let mut details = json!({});
    if let Some(i) = &info {
        details = json!({"kind": i.resource, "group": i.group});
        if let Some(n) = &i.name {
            details["name"] = json!(n);
        }
    }
    Err(status::failure_with_details(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        details,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(groups: &[&str]) -> User {
        User {
            name: "ann".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn masters_pass_others_get_upstreams_403() {
        let admin = user(&["system:masters", "system:authenticated"]);
        assert!(authorize(&admin, &Method::DELETE, "/api/v1/nodes/n1", false).is_ok());
        let ann = user(&["system:authenticated"]);
        for (m, p) in [
            (Method::GET, "/api"),
            (Method::GET, "/apis/apps/v1"),
            (Method::GET, "/openapi/v3/api/v1"),
        ] {
            assert!(authorize(&ann, &m, p, false).is_ok(), "{p}");
        }
        assert!(authorize(
            &ann,
            &Method::POST,
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            false
        )
        .is_ok());
        for (m, p) in [
            (Method::GET, "/api/v1/namespaces/a/pods"),
            (Method::GET, "/apis/apps/v1/deployments"),
            (Method::GET, "/metrics"),
            (Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews"),
        ] {
            let r = authorize(&ann, &m, p, false).expect_err(p);
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{p}");
        }
    }
}
