//! API clients inside the process: a `kube::Client` whose requests go straight to the router,
//! with an identity attached as a client certificate would attach it, so in-process controllers
//! are authenticated, authorized and admitted exactly as remote ones. Like client-go, the
//! client retries a request the server refused with 429 after its Retry-After, up to ten times,
//! so a burst that fills the in-flight limits slows the components down instead of losing
//! their writes.

use std::time::Duration;

use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::http::{Caller, User};

/// The User-Agent upstream's component of that identity sends (its field manager name).
fn agent(user: &User) -> axum::http::HeaderValue {
    let component = if user.name.starts_with("system:node:") {
        "kubelet"
    } else if user.name == "system:kube-scheduler" {
        "kube-scheduler"
    } else {
        "kube-controller-manager"
    };
    let v = format!(
        "{component}/v1.37.0 ({}/{}) k1s/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
            .replace("x86_64", "amd64")
            .replace("aarch64", "arm64"),
        env!("CARGO_PKG_VERSION")
    );
    axum::http::HeaderValue::from_str(&v)
        .unwrap_or_else(|_| axum::http::HeaderValue::from_static("k1s"))
}

/// Retries of a request refused with 429 (client-go's maxRetries).
const RETRIES_ON_429: u32 = 10;

/// How long the server asks to wait, from Retry-After in seconds (1 s when absent, at most 10).
fn retry_after(resp: &axum::response::Response) -> Duration {
    let secs = resp
        .headers()
        .get(axum::http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.clamp(1, 10))
}

/// A client acting as `user`.
pub fn client(app: Router, user: User) -> kube::Client {
    let ua = agent(&user);
    let svc = tower::service_fn(move |req: axum::http::Request<kube::client::Body>| {
        let (app, user, ua) = (app.clone(), user.clone(), ua.clone());
        async move {
            let (parts, body) = req.into_parts();
            // Request bodies are small JSON documents: kept whole, so a refused one can be
            // sent again.
            let body = body.collect().await?.to_bytes();
            let mut attempt = 0;
            loop {
                let mut req = axum::http::Request::new(axum::body::Body::from(body.clone()));
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = parts.uri.clone();
                *req.version_mut() = parts.version;
                *req.headers_mut() = parts.headers.clone();
                req.extensions_mut().insert(Caller(Some(user.clone())));
                req.headers_mut()
                    .entry(axum::http::header::USER_AGENT)
                    .or_insert_with(|| ua.clone());
                let resp = match app.clone().oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                if resp.status() != axum::http::StatusCode::TOO_MANY_REQUESTS
                    || attempt >= RETRIES_ON_429
                {
                    return Ok::<_, kube::Error>(resp);
                }
                attempt += 1;
                tokio::time::sleep(retry_after(&resp)).await;
            }
        }
    });
    kube::Client::new(svc, "default")
}

/// The user a controller's service account `kube-system:NAME` is.
pub fn controller_user(name: &str) -> User {
    User {
        name: format!("system:serviceaccount:kube-system:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:kube-system".into(),
            "system:authenticated".into(),
        ],
    }
}

/// The kubelet of node `name` (`system:node:NAME` in `system:nodes`).
pub fn node_user(name: &str) -> User {
    User {
        name: format!("system:node:{name}"),
        groups: vec!["system:nodes".into(), "system:authenticated".into()],
    }
}

/// The scheduler's user.
pub fn scheduler_user() -> User {
    User {
        name: "system:kube-scheduler".into(),
        groups: vec!["system:authenticated".into()],
    }
}

/// The controller manager's own user, for the reads its controllers share.
pub fn controller_manager_user() -> User {
    User {
        name: "system:kube-controller-manager".into(),
        groups: vec!["system:authenticated".into()],
    }
}
