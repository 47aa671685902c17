//! `metav1.Status` bodies, the shape every error of the API takes on the wire.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A failure `Status` with `code`, `reason` and `message`, as kube-apiserver writes it.
pub fn failure(code: StatusCode, reason: &str, message: &str) -> Response {
    failure_with_details(code, reason, message, json!({}))
}

/// A failure `Status` with `details` (name, kind, causes).
pub fn failure_with_details(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: serde_json::Value,
) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// 401 for a request without valid credentials.
pub fn unauthorized() -> Response {
    failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
}

/// 404 for a path the server does not serve.
pub fn not_found() -> Response {
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}
