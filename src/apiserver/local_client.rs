//! API clients inside the process: a `kube::Client` whose requests go straight to the router,
//! with an identity attached as a client certificate would attach it, so in-process controllers
//! are authenticated, authorized and admitted exactly as remote ones. Like every client k1s
//! builds, it retries a request refused with 429 ([`crate::retry`]).

use axum::Router;
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

/// A client acting as `user`.
pub fn client(app: Router, user: User) -> kube::Client {
    let ua = agent(&user);
    let svc = tower::service_fn(move |req: axum::http::Request<kube::client::Body>| {
        let (app, user, ua) = (app.clone(), user.clone(), ua.clone());
        async move {
            let (parts, body) = req.into_parts();
            let mut req = axum::http::Request::from_parts(parts, axum::body::Body::new(body));
            req.extensions_mut().insert(Caller(Some(user)));
            req.headers_mut()
                .entry(axum::http::header::USER_AGENT)
                .or_insert(ua);
            match app.oneshot(req).await {
                Ok(resp) => Ok::<_, kube::Error>(resp),
                Err(never) => match never {},
            }
        }
    });
    let svc = tower::Layer::layer(&crate::retry::RetryOn429, svc);
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
