//! An upgrade-aware HTTP/1.1 proxy, as upstream's `UpgradeAwareHandler`: a request is passed to
//! a backend over a connection the caller made (TLS to a kubelet, TCP to the runtime's
//! streaming server); when the backend switches protocols (SPDY/3.1 or a WebSocket
//! `v5.channel.k8s.io`, `v4.channel.k8s.io`, `portforward.k8s.io`), the 101 goes back to the
//! client and bytes are copied both ways until either side closes. Used by the API server
//! (pods/exec, attach, portforward to the kubelet) and by the kubelet (to CRI's streaming URLs).

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Headers that belong to one hop only (Connection and Upgrade are kept: they ask for the
/// upgrade the backend must see).
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "host",
];

fn failure(message: String) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "InternalError", "code": 500,
    });
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Sends `req` to the backend on `io` as `path_and_query` (with `host` as its Host), and
/// answers with the backend's response; an upgrade is spliced through.
pub async fn proxy<S>(
    mut req: Request<Body>,
    io: S,
    host: &str,
    path_and_query: &str,
) -> Response<Body>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(path_and_query);
    for (k, v) in &parts.headers {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    out = out.header(header::HOST, host);
    let backend_req = match out.body(body) {
        Ok(r) => r,
        Err(e) => return failure(format!("proxying: {e}")),
    };
    let (mut send, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(x) => x,
        Err(e) => return failure(format!("proxying to {host}: {e}")),
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut resp = match send.send_request(backend_req).await {
        Ok(r) => r,
        Err(e) => return failure(format!("proxying to {host}: {e}")),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return resp.map(Body::new);
    }
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (client, backend) = tokio::join!(client_upgrade, backend_upgrade);
        match (client, backend) {
            (Ok(c), Ok(b)) => {
                let mut c = TokioIo::new(c);
                let mut b = TokioIo::new(b);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
            }
            (c, b) => tracing::debug!(
                client = c.is_ok(),
                backend = b.is_ok(),
                "an upgrade did not complete"
            ),
        }
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Body::empty())
}
