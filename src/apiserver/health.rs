//! `/version`, `/healthz`, `/livez` and `/readyz` (with `?verbose` and per-check paths), as
//! kube-apiserver answers them. These paths are open to anonymous callers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::parts::KUBERNETES_VERSION;
use crate::store::Store;

/// What the health endpoints look at.
#[derive(Clone)]
pub struct Health {
    pub store: Arc<dyn Store>,
}

#[derive(Deserialize, Default)]
pub struct VerboseQuery {
    verbose: Option<String>,
}

/// `GET /version`: upstream's `version.Info`.
pub async fn version() -> Json<serde_json::Value> {
    let v = KUBERNETES_VERSION.trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("0");
    Json(serde_json::json!({
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "minCompatibilityMajor": major,
        "minCompatibilityMinor": minor,
        "gitVersion": format!("{KUBERNETES_VERSION}+k1s"),
        "gitCommit": option_env!("K1S_GIT_COMMIT").unwrap_or("unknown"),
        "gitTreeState": "clean",
        "buildDate": option_env!("K1S_BUILD_DATE").unwrap_or("1970-01-01T00:00:00Z"),
        "goVersion": "n/a (k1s is written in Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    }))
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

impl Health {
    /// Runs the checks of one endpoint: (name, error) pairs.
    async fn run(&self, endpoint: &str) -> Vec<(&'static str, Option<String>)> {
        let mut out = vec![("ping", None)];
        let store =
            tokio::time::timeout(Duration::from_secs(2), self.store.current_revision()).await;
        let store_err = match store {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("timed out".to_string()),
        };
        if endpoint != "livez" {
            out.push(("etcd", store_err));
        }
        out
    }
}

async fn answer(
    health: &Health,
    endpoint: &'static str,
    only: Option<&str>,
    verbose: bool,
) -> Response {
    let checks = health.run(endpoint).await;
    if let Some(name) = only {
        return match checks.iter().find(|(n, _)| *n == name) {
            Some((_, None)) => (StatusCode::OK, "ok").into_response(),
            Some((n, Some(e))) => {
                tracing::warn!(check = n, error = %e, "{endpoint} check failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal server error: {n} failed: reason withheld"),
                )
                    .into_response()
            }
            None => crate::apiserver::status::not_found(),
        };
    }
    let failed = checks.iter().any(|(_, e)| e.is_some());
    if !verbose && !failed {
        return (StatusCode::OK, "ok").into_response();
    }
    let mut text = String::new();
    for (name, err) in &checks {
        match err {
            None => text.push_str(&format!("[+]{name} ok\n")),
            Some(e) => {
                tracing::warn!(check = name, error = %e, "{endpoint} check failed");
                text.push_str(&format!("[-]{name} failed: reason withheld\n"));
            }
        }
    }
    if failed {
        text.push_str(&format!("{endpoint} check failed\n"));
        (StatusCode::INTERNAL_SERVER_ERROR, text).into_response()
    } else {
        text.push_str(&format!("{endpoint} check passed\n"));
        (StatusCode::OK, text).into_response()
    }
}

fn is_verbose(q: &VerboseQuery) -> bool {
    q.verbose.as_deref().is_some_and(|v| v != "false")
}

pub async fn healthz(State(h): State<Health>, Query(q): Query<VerboseQuery>) -> Response {
    answer(&h, "healthz", None, is_verbose(&q)).await
}

pub async fn livez(State(h): State<Health>, Query(q): Query<VerboseQuery>) -> Response {
    answer(&h, "livez", None, is_verbose(&q)).await
}

pub async fn readyz(State(h): State<Health>, Query(q): Query<VerboseQuery>) -> Response {
    answer(&h, "readyz", None, is_verbose(&q)).await
}

pub async fn healthz_check(State(h): State<Health>, Path(check): Path<String>) -> Response {
    answer(&h, "healthz", Some(&check), false).await
}

pub async fn livez_check(State(h): State<Health>, Path(check): Path<String>) -> Response {
    answer(&h, "livez", Some(&check), false).await
}

pub async fn readyz_check(State(h): State<Health>, Path(check): Path<String>) -> Response {
    answer(&h, "readyz", Some(&check), false).await
}
