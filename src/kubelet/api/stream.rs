//! `/exec`, `/attach` and `/portForward`: the kubelet asks the runtime for a streaming URL
//! (CRI Exec, Attach, PortForward; containerd's streaming server on loopback) and proxies the
//! caller's upgrade to it ([`crate::upgrade`]): SPDY/3.1 and the WebSockets the runtime
//! speaks (`v4.channel.k8s.io` and older) end at the runtime, as with the upstream kubelet;
//! kubectl 1.37's WebSockets (`v5.channel.k8s.io`, `SPDY/3.1+portforward.k8s.io`) are
//! bridged to the runtime's SPDY ([`super::bridge`]), as kube-apiserver's translator does.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{bridge, runs_of, ApiState};
use crate::kubelet::cri::{api, LABEL_POD_NAME, LABEL_POD_NAMESPACE};

fn flag(query: &str, key: &str) -> bool {
    params(query, key).any(|v| v == "true" || v == "1")
}

fn params<'a>(query: &'a str, key: &'a str) -> impl Iterator<Item = String> + 'a {
    query.split('&').filter_map(move |p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == key).then(|| decode(v))
    })
}

/// Percent-decoding of a query value (`+` is a space).
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The streams an exec or attach asks for (no stderr with a tty: it is stdout's).
fn streams(q: &str) -> bridge::Streams {
    let tty = flag(q, "tty");
    bridge::Streams {
        stdin: flag(q, "stdin"),
        stdout: flag(q, "stdout"),
        stderr: flag(q, "stderr") && !tty,
        tty,
    }
}

fn refuse(code: StatusCode, msg: String) -> Response {
    (code, msg).into_response()
}

/// Proxies `req` to the runtime's streaming `url` (`http://127.0.0.1:PORT/...`); a
/// WebSocket the runtime does not speak (exec and attach over `v5.channel.k8s.io` with
/// `streams`, port-forward tunnelled) is bridged to its SPDY ([`super::bridge`]).
async fn to_runtime(req: Request, url: &str, streams: Option<bridge::Streams>) -> Response {
    let Some(rest) = url.strip_prefix("http://") else {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unsupported streaming URL {url}"),
        );
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let path = match req.uri().query() {
        Some(q) if !path.contains('?') => format!("{path}?{q}"),
        _ => path.to_string(),
    };
    match (streams, bridge::asked(&req, streams.is_some())) {
        (Some(streams), Some(_)) => return bridge::exec(req, host, &path, streams).await,
        (None, Some(_)) => return bridge::tunnel(req, host, &path).await,
        _ => {}
    }
    let tcp = match tokio::net::TcpStream::connect(host).await {
        Ok(t) => t,
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("connecting to the runtime's streaming server at {host}: {e}"),
            )
        }
    };
    crate::upgrade::proxy(req.map(Body::new), tcp, host, &path).await
}

async fn running_container(
    state: &ApiState,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<String, Response> {
    let runs = runs_of(state, ns, pod, container)
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    runs.into_iter()
        .find(|c| c.state == api::ContainerState::ContainerRunning as i32)
        .map(|c| c.id)
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("container {container} is not running in pod {pod}"),
            )
        })
}

pub async fn exec(
    State(state): State<Arc<ApiState>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let q = req.uri().query().unwrap_or_default().to_string();
    let cmd: Vec<String> = params(&q, "command").collect();
    if cmd.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container".into(),
        );
    }
    let id = match running_container(&state, &ns, &pod, &container).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let s = streams(&q);
    let creq = api::ExecRequest {
        container_id: id,
        cmd,
        tty: s.tty,
        stdin: s.stdin,
        stdout: s.stdout,
        stderr: s.stderr,
    };
    match state.runtime.exec(creq).await {
        Ok(url) => to_runtime(req, &url, Some(s)).await,
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn attach(
    State(state): State<Arc<ApiState>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let q = req.uri().query().unwrap_or_default().to_string();
    let id = match running_container(&state, &ns, &pod, &container).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let s = streams(&q);
    let creq = api::AttachRequest {
        container_id: id,
        stdin: s.stdin,
        tty: s.tty,
        stdout: s.stdout,
        stderr: s.stderr,
    };
    match state.runtime.attach(creq).await {
        Ok(url) => to_runtime(req, &url, Some(s)).await,
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn port_forward(
    State(state): State<Arc<ApiState>>,
    Path((ns, pod)): Path<(String, String)>,
    req: Request,
) -> Response {
    let q = req.uri().query().unwrap_or_default().to_string();
    let ports: Vec<i32> = params(&q, "ports")
        .flat_map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let sandboxes = match state.runtime.list_pod_sandboxes(None).await {
        Ok(s) => s,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let Some(sandbox) = sandboxes.iter().find(|s| {
        s.state == api::PodSandboxState::SandboxReady as i32
            && s.labels.get(LABEL_POD_NAMESPACE) == Some(&ns)
            && s.labels.get(LABEL_POD_NAME) == Some(&pod)
    }) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("pod {pod} is not running on this node"),
        );
    };
    let creq = api::PortForwardRequest {
        pod_sandbox_id: sandbox.id.clone(),
        port: ports,
    };
    match state.runtime.port_forward(creq).await {
        Ok(url) => to_runtime(req, &url, None).await,
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read_as_kubectl_writes_them() {
        let q = "command=sh&command=-c&command=echo+hi%21&stdin=true&tty=1&container=c";
        assert_eq!(
            params(q, "command").collect::<Vec<_>>(),
            ["sh", "-c", "echo hi!"]
        );
        assert!(flag(q, "stdin"));
        assert!(flag(q, "tty"));
        assert!(!flag(q, "stderr"));
        assert_eq!(decode("%zz"), "%zz");
    }
}
