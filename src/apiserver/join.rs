//! How an agent joins, as k3s's supervisor endpoints let it: `GET /cacerts` (public) gives the
//! cluster CA, which the agent checks against the hash in its token (`K10<sha256>::ID.SECRET`),
//! and `POST /v1-k1s/node-certificates`, authenticated with a bootstrap token, gives a kubelet
//! client certificate (CN=system:node:NAME, O=system:nodes) for each node the agent runs, so the
//! Node authorizer and NodeRestriction hold each node to its own objects.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::http::Caller;
use super::pki::{self, Pki};
use super::status;

/// Nodes one request may ask for.
const MAX_NODES: usize = 10_000;

/// What the join endpoints need.
#[derive(Clone)]
pub struct Join {
    pub pki: Arc<Pki>,
}

/// The request body: the node names.
#[derive(Debug, Deserialize, Serialize)]
pub struct NodeCertificatesRequest {
    pub nodes: Vec<String>,
}

/// One node's certificate and key (PEM).
#[derive(Debug, Deserialize, Serialize)]
pub struct NodeCertificate {
    pub node: String,
    pub cert: String,
    pub key: String,
}

/// The answer: a certificate per node.
#[derive(Debug, Deserialize, Serialize)]
pub struct NodeCertificatesResponse {
    pub certificates: Vec<NodeCertificate>,
}

/// `GET /cacerts`: the cluster CA (PEM).
pub async fn cacerts(State(j): State<Join>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        j.pki.ca_cert.clone(),
    )
        .into_response()
}

/// `POST /v1-k1s/node-certificates`, for bootstrap tokens (and cluster admins).
pub async fn node_certificates(State(j): State<Join>, req: Request) -> Response {
    let allowed = req
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.0.as_ref())
        .is_some_and(|u| {
            u.groups
                .iter()
                .any(|g| g == "system:bootstrappers" || g == "system:masters")
        });
    if !allowed {
        return status::failure(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "node certificates are given to bootstrap tokens only",
        );
    }
    let body = match super::registry::read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let wanted: NodeCertificatesRequest = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => {
            return status::failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the request body is not a node list: {e}"),
            )
        }
    };
    if wanted.nodes.len() > MAX_NODES {
        return status::failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("at most {MAX_NODES} nodes per request"),
        );
    }
    if let Some((name, problem)) = wanted
        .nodes
        .iter()
        .find_map(|n| super::registry::object::name_problem(n, false).map(|p| (n.clone(), p)))
    {
        return status::failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!("node name {name:?} is invalid: {problem}"),
        );
    }
    let pki = j.pki.clone();
    let signed = tokio::task::spawn_blocking(move || {
        wanted
            .nodes
            .into_iter()
            .map(|node| {
                pki::node_client_cert(&pki, &node).map(|(cert, key)| NodeCertificate {
                    node,
                    cert,
                    key,
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await;
    match signed {
        Ok(Ok(certificates)) => {
            tracing::info!(
                nodes = certificates.len(),
                "node certificates issued to a joining agent"
            );
            axum::Json(NodeCertificatesResponse { certificates }).into_response()
        }
        Ok(Err(e)) => status::failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("signing node certificates: {e}"),
        ),
        Err(e) => status::failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("signing node certificates: {e}"),
        ),
    }
}
