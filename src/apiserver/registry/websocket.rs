//! Pod logs over a WebSocket, as kube-apiserver's `wsstream` reader serves `pods/log` to a
//! client that asks for an upgrade: the subprotocol is `binary.k8s.io` (binary messages, also
//! when none is asked for) or `base64.binary.k8s.io` (text messages, base64), each chunk of the
//! log one message, and a close frame once the log ends (or when the client closes).

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use base64::Engine;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::apiserver::status;

/// The protocols served, and whether their messages are binary (else base64 text).
const PROTOCOLS: [(&str, bool); 3] = [
    ("binary.k8s.io", true),
    ("base64.binary.k8s.io", false),
    ("", true),
];

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .unwrap_or_default()
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// Whether the request asks for a WebSocket.
pub fn wanted(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455).
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// One unmasked server frame (FIN set).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Reads the client's frames until it closes (or the connection ends).
async fn until_closed<R: AsyncRead + Unpin>(mut r: R) {
    loop {
        let mut head = [0u8; 2];
        if r.read_exact(&mut head).await.is_err() {
            return;
        }
        let opcode = head[0] & 0x0f;
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            if r.read_exact(&mut b).await.is_err() {
                return;
            }
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            if r.read_exact(&mut b).await.is_err() {
                return;
            }
            len = u64::from_be_bytes(b);
        }
        let masked = head[1] & 0x80 != 0;
        let skip = len + if masked { 4 } else { 0 };
        let copied = tokio::io::copy(&mut (&mut r).take(skip), &mut tokio::io::sink()).await;
        if opcode == 0x8 || copied.map_or(true, |n| n < skip) {
            return;
        }
    }
}

/// Answers a WebSocket request with `log` (the kubelet's response body) as messages.
pub fn serve_log(mut req: Request<Body>, log: Body) -> Response<Body> {
    let headers = req.headers();
    let Some(key) = headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
    else {
        return status::failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "missing Sec-WebSocket-Key header",
        );
    };
    let offered: Vec<String> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or_default().split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
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
    let accept = accept_key(key);
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
                            frame(0x2, &b)
                        } else {
                            let text = base64::engine::general_purpose::STANDARD.encode(&b);
                            frame(0x1, text.as_bytes())
                        };
                        if w.write_all(&msg).await.is_err() {
                            return;
                        }
                    }
                    _ => break,
                },
            }
        }
        let _ = w.write_all(&frame(0x8, &1000u16.to_be_bytes())).await;
        let _ = w.shutdown().await;
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    if !protocol.is_empty() {
        h.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_and_frames_follow_rfc_6455() {
        // The RFC's own example.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(frame(0x2, b"hi"), vec![0x82, 2, b'h', b'i']);
        let long = frame(0x1, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x81, 126, 1, 44]);
        assert_eq!(long.len(), 304);
        assert_eq!(&frame(0x2, &[0u8; 70000])[..2], &[0x82, 127]);
    }

    #[tokio::test]
    async fn the_client_closing_is_seen() {
        // A masked text frame "a", then a close frame.
        let bytes: &[u8] = &[0x81, 0x81, 1, 2, 3, 4, b'a' ^ 1, 0x88, 0x80, 0, 0, 0, 0];
        tokio::time::timeout(std::time::Duration::from_secs(1), until_closed(bytes))
            .await
            .expect("closed");
    }
}
