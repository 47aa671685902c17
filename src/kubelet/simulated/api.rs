//! The kubelet API of a simulating agent (`k1s agent --simulate N`), as KWOK serves its fake
//! nodes': one HTTPS port on the agent's address for all of its nodes, each node's
//! `/metrics/resource` at `/metrics/nodes/NODE/metrics/resource`. Each node carries that path in
//! its `metrics.k8s.io/resource-metrics-path` annotation, which metrics-server (0.7+) and k1s's
//! own scraper read, so the server's `metrics.k8s.io` and `kubectl top` see simulated usage from
//! agents too. Callers are checked as a real kubelet checks them ([`crate::kubelet::api::auth`]).

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::usage::Usage;
use crate::kubelet::api::auth::{Asking, Authorizer};

/// Where a simulated node's `/metrics/resource` is served.
pub fn metrics_path(node: &str) -> String {
    format!("/metrics/nodes/{node}/metrics/resource")
}

struct Shared {
    nodes: HashSet<String>,
    usage: Arc<Usage>,
    auth: Authorizer,
}

async fn node_metrics(
    State(shared): State<Arc<Shared>>,
    Path(node): Path<String>,
    req: Request,
) -> Response {
    // Callers first, as a kubelet answers 401/403 before anything else.
    if let Err(refused) = shared.auth.check(Asking::of(&req), &node).await {
        return refused;
    }
    if !shared.nodes.contains(&node) {
        return (
            StatusCode::NOT_FOUND,
            format!("no simulated node {node:?} here"),
        )
            .into_response();
    }
    crate::kubelet::api::metrics_text(shared.usage.sample(&node).as_ref())
}

/// The routes: `/healthz` and each node's `/metrics/resource`; `client` asks the API server
/// about callers.
pub fn router(nodes: &[String], usage: Arc<Usage>, client: kube::Client) -> Router {
    let shared = Arc::new(Shared {
        nodes: nodes.iter().cloned().collect(),
        usage,
        auth: Authorizer::new(client),
    });
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics/nodes/{node}/metrics/resource", get(node_metrics))
        .with_state(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_kwoks() {
        assert_eq!(
            metrics_path("sim-0001"),
            "/metrics/nodes/sim-0001/metrics/resource"
        );
    }
}
