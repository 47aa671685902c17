//! Subresources served by the pod's kubelet, as kube-apiserver proxies them: `pods/log` goes to
//! `/containerLogs/NAMESPACE/POD/CONTAINER` on the node's kubelet (its InternalIP and the port
//! its status advertises), streaming back what the kubelet sends; a kubelet's refusal becomes a
//! Status with its code and message.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::object::{self, to_wire};
use super::Registry;
use crate::apiserver::{catalog, status};

fn bad_request(msg: &str) -> Response {
    status::failure(StatusCode::BAD_REQUEST, "BadRequest", msg)
}

async fn read(
    reg: &Registry,
    resource: &str,
    ns: Option<&str>,
    name: &str,
) -> Result<Value, Response> {
    let Some(def) = catalog::find("", "v1", resource) else {
        return Err(status::not_found());
    };
    let key = object::key(def, ns, name);
    match reg.store.get(&key, 0).await {
        Ok(Some(kv)) => to_wire(def, &kv),
        Ok(None) => Err(object::not_found(def, name)),
        Err(e) => Err(object::store_error(def, name, e)),
    }
}

/// The container a log request means: the one named, the default-container annotation's, or
/// the only one.
fn container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, Response> {
    let spec = &pod["spec"];
    let names: Vec<&str> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    if let Some(c) = asked.filter(|c| !c.is_empty()) {
        return if names.contains(&c) {
            Ok(c.to_string())
        } else {
            Err(bad_request(&format!(
                "container {c} is not valid for pod {name}"
            )))
        };
    }
    if let Some(d) =
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"].as_str()
    {
        if names.contains(&d) {
            return Ok(d.to_string());
        }
    }
    let main: Vec<&str> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    match main.as_slice() {
        [one] => Ok((*one).to_string()),
        many => Err(bad_request(&format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            many.join(" ")
        ))),
    }
}

/// The query the kubelet gets: the log options, without `container`.
fn kubelet_query(raw: Option<&str>) -> String {
    let kept: Vec<&str> = raw
        .unwrap_or_default()
        .split('&')
        .filter(|p| {
            let k = p.split('=').next().unwrap_or_default();
            matches!(
                k,
                "follow"
                    | "previous"
                    | "timestamps"
                    | "sinceSeconds"
                    | "sinceTime"
                    | "tailLines"
                    | "limitBytes"
            )
        })
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

fn query_value<'a>(raw: Option<&'a str>, key: &str) -> Option<&'a str> {
    raw?.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == key).then_some(v)
    })
}

type Kubelets = std::sync::Arc<crate::apiserver::kubelet_client::KubeletClient>;

/// The pod, the kubelet client, and its kubelet's address and port.
async fn pod_and_kubelet(
    reg: &Registry,
    ns: &str,
    name: &str,
) -> Result<(Value, Kubelets, String, u16), Response> {
    let Some(kubelets) = reg.kubelets.clone() else {
        return Err(status::failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this API server does not reach kubelets",
        ));
    };
    let pod = read(reg, "pods", Some(ns), name).await?;
    let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(bad_request(&format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let node = read(reg, "nodes", None, node_name).await?;
    let Some((host, port)) = kubelet_address(&node) else {
        return Err(bad_request(&format!(
            "node {node_name} has no address to reach its kubelet at"
        )));
    };
    Ok((pod, kubelets, host, port))
}

/// `pods/exec`, `pods/attach` and `pods/portforward`: the caller's upgrade, proxied to the
/// kubelet's `/exec/NS/POD/CONTAINER`, `/attach/...` or `/portForward/NS/POD` with the query.
pub async fn pod_stream(
    reg: &Registry,
    ns: &str,
    name: &str,
    sub: &str,
    req: axum::extract::Request,
) -> Response {
    let (pod, kubelets, host, port) = match pod_and_kubelet(reg, ns, name).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let raw = req.uri().query().map(str::to_string);
    let query = raw.as_deref().map(|q| format!("?{q}")).unwrap_or_default();
    let path = if sub == "portforward" {
        format!("/portForward/{ns}/{name}{query}")
    } else {
        let container = match container(&pod, name, query_value(raw.as_deref(), "container")) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let what = if sub == "exec" { "exec" } else { "attach" };
        format!("/{what}/{ns}/{name}/{container}{query}")
    };
    let (tls, addr) = match kubelets.connect(&host, port).await {
        Ok(c) => c,
        Err(e) => {
            return status::failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
            )
        }
    };
    crate::upgrade::proxy(req, tls, &addr, &path).await
}

/// The kubelet address of a node: its InternalIP (else ExternalIP, Hostname) and the port its
/// status advertises.
pub(crate) fn kubelet_address(node: &Value) -> Option<(String, u16)> {
    let addresses = node["status"]["addresses"].as_array()?;
    let host = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|ty| {
            addresses
                .iter()
                .find(|a| a["type"] == *ty)
                .and_then(|a| a["address"].as_str())
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(10250);
    Some((host.to_string(), port))
}

/// `/api/v1/nodes/NAME/proxy/PATH`: the request, passed to the node's kubelet at `/PATH`.
pub async fn node_proxy(reg: &Registry, name: &str, req: axum::extract::Request) -> Response {
    let Some(kubelets) = reg.kubelets.clone() else {
        return status::failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this API server does not reach kubelets",
        );
    };
    let node = match read(reg, "nodes", None, name).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let Some((host, port)) = kubelet_address(&node) else {
        return bad_request(&format!(
            "node {name} has no address to reach its kubelet at"
        ));
    };
    let path = req.uri().path();
    let marker = format!("/nodes/{name}/proxy");
    let rest = path
        .find(&marker)
        .map(|i| &path[i + marker.len()..])
        .unwrap_or("");
    let rest = if rest.is_empty() { "/" } else { rest };
    let target = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let (tls, addr) = match kubelets.connect(&host, port).await {
        Ok(c) => c,
        Err(e) => {
            return status::failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
            )
        }
    };
    crate::upgrade::proxy(req, tls, &addr, &target).await
}

/// `GET /api/v1/namespaces/NS/pods/NAME/log`, as a response body or over a WebSocket.
pub async fn pod_log(
    reg: &Registry,
    ns: &str,
    name: &str,
    req: axum::extract::Request,
) -> Response {
    let raw_query = req.uri().query().map(str::to_string);
    let raw_query = raw_query.as_deref();
    let (pod, kubelets, host, port) = match pod_and_kubelet(reg, ns, name).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let asked = query_value(raw_query, "container");
    let container = match container(&pod, name, asked) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let path = format!(
        "/containerLogs/{ns}/{name}/{container}{}",
        kubelet_query(raw_query)
    );
    let resp = match kubelets.get(&host, port, &path).await {
        Ok(r) => r,
        Err(e) => {
            return status::failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
            )
        }
    };
    let code = resp.status();
    if code.is_success() && crate::websocket::wanted(req.headers()) {
        return super::websocket::serve_log(req, Body::new(resp.into_body()));
    }
    if code.is_success() {
        let (parts, body) = resp.into_parts();
        let mut out = Response::new(body);
        *out.status_mut() = StatusCode::OK;
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(header::HeaderValue::from_static("text/plain"));
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
        return out;
    }
    let text = axum::body::to_bytes(resp.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let reason = match code {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        _ => "InternalError",
    };
    status::failure(code, reason, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_is_picked_as_upstream() {
        let pod: Value = serde_json::json!({
            "metadata": {"annotations": {}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}
        });
        assert_eq!(container(&pod, "p", Some("b")).ok().as_deref(), Some("b"));
        assert_eq!(container(&pod, "p", Some("i")).ok().as_deref(), Some("i"));
        assert!(container(&pod, "p", Some("z")).is_err());
        assert!(container(&pod, "p", None).is_err());
        let one: Value = serde_json::json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container(&one, "p", None).ok().as_deref(), Some("a"));
        assert_eq!(
            kubelet_query(Some("container=a&follow=true&tailLines=5&pretty=1")),
            "?follow=true&tailLines=5"
        );
        assert_eq!(kubelet_query(None), "");
    }
}
