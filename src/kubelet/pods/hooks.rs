//! Lifecycle hooks as the kubelet runs them: `postStart` right after a container starts (a
//! failure kills the container, `FailedPostStartHook`), `preStop` before it is stopped, within
//! the grace period; each an exec (CRI ExecSync), an httpGet, or a sleep.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::kubelet::cri::Runtime;

/// Runs a hook for at most `limit`; an error message when it failed.
pub async fn run(
    runtime: &dyn Runtime,
    container_id: &str,
    pod_ip: &str,
    c: &Container,
    h: &LifecycleHandler,
    limit: Duration,
) -> Result<(), String> {
    let attempt = async {
        if let Some(e) = &h.exec {
            let cmd = e.command.clone().unwrap_or_default();
            return match runtime
                .exec_sync(container_id, cmd, limit.as_secs() as i64)
                .await
            {
                Ok(r) if r.exit_code == 0 => Ok(()),
                Ok(r) => Err(format!(
                    "command exited with {}: {}",
                    r.exit_code,
                    String::from_utf8_lossy(&r.stderr).trim()
                )),
                Err(e) => Err(e.to_string()),
            };
        }
        if let Some(g) = &h.http_get {
            let host = g
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string());
            let port = match &g.port {
                IntOrString::Int(n) => u16::try_from(*n).ok(),
                IntOrString::String(name) => c
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name))
                    .and_then(|p| u16::try_from(p.container_port).ok()),
            };
            let Some(port) = port else {
                return Err(format!("invalid port {:?}", g.port));
            };
            let headers: Vec<(String, String)> = g
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            let path = g
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into());
            let https = g.scheme.as_deref() == Some("HTTPS");
            let (ok, msg) = super::probes::http_get(&host, port, &path, &headers, https).await;
            return if ok { Ok(()) } else { Err(msg) };
        }
        if let Some(s) = &h.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
            return Ok(());
        }
        Err("the hook has no handler".into())
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}s", limit.as_secs())),
    }
}
