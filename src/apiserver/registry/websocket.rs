//! Pod logs over a WebSocket, as kube-apiserver's `wsstream` reader serves `pods/log` to a
//! client that asks for an upgrade: the subprotocol is `binary.k8s.io` (binary messages, also
//! when none is asked for) or `base64.binary.k8s.io` (text messages, base64), each chunk of the
//! log one message, and a close frame once the log ends (or when the client closes).

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use base64::Engine;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::websocket as ws;

use crate::apiserver::status;

/// The protocols served, and whether their messages are binary (else base64 text).
const PROTOCOLS: [(&str, bool); 3] = [
    ("binary.k8s.io", true),
    ("base64.binary.k8s.io", false),
    ("", true),
];

/// Reads the client's messages until it closes (or the connection ends).
async fn until_closed<R: AsyncRead + Unpin>(r: R) {
    let mut r = ws::Reader::new(r);
    while let Ok(Some(m)) = r.next().await {
        if m.opcode == ws::CLOSE {
            return;
        }
    }
}

/// Answers a WebSocket request with `log` (the kubelet's response body) as messages.
pub fn serve_log(mut req: Request<Body>, log: Body) -> Response<Body> {
    let offered = ws::offered(req.headers());
    let asked = if offered.is_empty() {
        vec![String::new()]
    } else {
        offered.clone()
    };
    let Some((protocol, binary)) = asked
        .iter()
        .find_map(|p| PROTOCOLS.iter().find(|(name, _)| name == p).copied())
    else {
        return status::failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "requested protocol(s) are not supported: [{}]; supports [binary.k8s.io base64.binary.k8s.io]",
                offered.join(" ")
            ),
        );
    };
    let Some(resp) = ws::switching(req.headers(), protocol) else {
        return status::failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "missing Sec-WebSocket-Key header",
        );
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!("a log WebSocket did not upgrade: {e}");
                return;
            }
        };
        let (r, mut w) = tokio::io::split(io);
        let closed = until_closed(r);
        tokio::pin!(closed);
        let mut chunks = log.into_data_stream();
        loop {
            tokio::select! {
                _ = &mut closed => break,
                next = chunks.next() => match next {
                    Some(Ok(b)) if b.is_empty() => {}
                    Some(Ok(b)) => {
                        let msg = if binary {
                            ws::frame(ws::BINARY, &b)
                        } else {
                            let text = base64::engine::general_purpose::STANDARD.encode(&b);
                            ws::frame(ws::TEXT, text.as_bytes())
                        };
                        if w.write_all(&msg).await.is_err() {
                            return;
                        }
                    }
                    _ => break,
                },
            }
        }
        let _ = w.write_all(&ws::close(1000)).await;
        let _ = w.shutdown().await;
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_client_closing_is_seen() {
        // A masked text frame "a", then a close frame.
        let bytes: &[u8] = &[0x81, 0x81, 1, 2, 3, 4, b'a' ^ 1, 0x88, 0x80, 0, 0, 0, 0];
        tokio::time::timeout(std::time::Duration::from_secs(1), until_closed(bytes))
            .await
            .expect("closed");
    }
}
