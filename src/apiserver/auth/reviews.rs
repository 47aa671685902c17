//! The authentication review APIs and the service-account issuer documents:
//! SelfSubjectReview (`kubectl auth whoami`), TokenReview, and OIDC discovery
//! (`/.well-known/openid-configuration`, `/openid/v1/jwks`) so others can verify our tokens.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{authenticate_token_for, Authenticator};
use crate::apiserver::http::Caller;
use crate::apiserver::registry::object;
use crate::apiserver::status;
use crate::apiserver::token::ISSUER;

/// Reads a review object from a request body (JSON, YAML or protobuf).
pub(super) async fn read_review(req: Request, kind: &str) -> Result<Value, Response> {
    let media = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body: Bytes = crate::apiserver::registry::read_body(req).await?;
    let bad = || {
        status::failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("the body of the request could not be decoded as a {kind}"),
        )
    };
    let value = if media.starts_with(crate::apiserver::protobuf::MEDIA_TYPE) {
        crate::apiserver::protobuf::to_json(&body, None).map_err(|_| bad())?
    } else if media.contains("yaml") {
        serde_yaml_ng::from_slice(&body).map_err(|_| bad())?
    } else {
        serde_json::from_slice(&body).map_err(|_| bad())?
    };
    match value {
        v @ Value::Object(_) => Ok(v),
        _ => Err(bad()),
    }
}

pub(super) fn json(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn user_info(name: &str, groups: &[String]) -> Value {
    json!({"username": name, "groups": groups})
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews`: who the caller is.
pub async fn self_subject(req: Request) -> Response {
    let Some(Caller(Some(user))) = req.extensions().get::<Caller>().cloned() else {
        return status::unauthorized();
    };
    json(
        StatusCode::CREATED,
        &json!({
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": object::now_rfc3339()},
            "status": {"userInfo": user_info(&user.name, &user.groups)},
        }),
    )
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`: whether a token is valid, and for whom.
pub async fn token_review(State(auth): State<Authenticator>, req: Request) -> Response {
    let review = match read_review(req, "TokenReview").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let asked: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let audiences: Vec<&str> = if asked.is_empty() {
        vec![ISSUER]
    } else {
        asked.iter().map(String::as_str).collect()
    };
    let user = if asked.is_empty() {
        super::authenticate_bearer(&auth, token).await
    } else {
        authenticate_token_for(&auth, token, &audiences).await
    };
    let status_body = match user {
        Some(user) => json!({
            "authenticated": true,
            "user": user_info(&user.name, &user.groups),
            "audiences": audiences,
        }),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    let mut out = review.clone();
    out["kind"] = json!("TokenReview");
    out["apiVersion"] = json!("authentication.k8s.io/v1");
    out["metadata"] = json!({"creationTimestamp": null});
    out["status"] = status_body;
    json(StatusCode::CREATED, &out)
}

/// `GET /.well-known/openid-configuration`.
pub async fn openid_configuration() -> Response {
    json(
        StatusCode::OK,
        &json!({
            "issuer": ISSUER,
            "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        }),
    )
}

/// `GET /openid/v1/jwks`: the public key tokens are signed with.
pub async fn jwks(State(auth): State<Authenticator>) -> Response {
    match auth.tokens.as_deref() {
        Some(t) => json(StatusCode::OK, &t.jwks()),
        None => status::not_found(),
    }
}
