//! API clients inside the process: a `kube::Client` whose requests go straight to the router,
//! with an identity attached as a client certificate would attach it, so in-process controllers
//! are authenticated, authorized and admitted exactly as remote ones.

use axum::Router;

use super::http::{Caller, User};

/// A client acting as `user`.
pub fn client(app: Router, user: User) -> kube::Client {
    let svc = tower::ServiceBuilder::new()
        .map_request(move |req: axum::http::Request<kube::client::Body>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(Caller(Some(user.clone())));
            req
        })
        .service(app);
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
