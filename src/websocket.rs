//! The server side of a WebSocket (RFC 6455), as far as Kubernetes' streaming endpoints use
//! it: the handshake (`Sec-WebSocket-Accept`, the subprotocol the client offered), unmasked
//! server frames, and a reader of the client's masked, possibly fragmented messages. Used by
//! the API server (pods/log) and the kubelet (exec, attach and port-forward over
//! `v5.channel.k8s.io` and `SPDY/3.1+portforward.k8s.io`).

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest message a client may send (kubectl's are at most 32 KiB).
const MAX_MESSAGE: u64 = 16 << 20;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xa;

#[derive(Debug, thiserror::Error)]
pub enum WebSocketError {
    #[error("reading a websocket frame: {0}")]
    Io(#[from] std::io::Error),
    #[error("websocket message of {0} bytes is larger than allowed")]
    TooLarge(u64),
    #[error("websocket continuation frame without a message to continue")]
    StrayContinuation,
}

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

/// The subprotocols the client offers, in its order of preference.
pub fn offered(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("sec-websocket-protocol")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or_default().split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455).
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The `101 Switching Protocols` answer to a WebSocket request with `key`, naming `protocol`
/// (none when empty); `None` when the client sent no usable key.
pub fn switching(headers: &HeaderMap, protocol: &str) -> Option<Response<Body>> {
    let key = headers.get("sec-websocket-key")?.to_str().ok()?;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept_key(key)).ok()?,
    );
    if !protocol.is_empty() {
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocol).ok()?,
        );
    }
    Some(resp)
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

/// A close frame with a status code (1000: normal closure).
pub fn close(code: u16) -> Vec<u8> {
    frame(CLOSE, &code.to_be_bytes())
}

/// One message from the client: its opcode (of the first frame) and its whole payload.
#[derive(Debug, PartialEq)]
pub struct Message {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Reads the client's messages, unmasked and with fragments joined; control frames (close,
/// ping, pong) come as messages of their own, between fragments if need be.
pub struct Reader<R> {
    r: R,
    partial: Option<Message>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(r: R) -> Self {
        Reader { r, partial: None }
    }

    /// The next message; `None` once the connection ends.
    pub async fn next(&mut self) -> Result<Option<Message>, WebSocketError> {
        loop {
            let mut head = [0u8; 2];
            match self.r.read_exact(&mut head).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0f;
            let mut len = u64::from(head[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                self.r.read_exact(&mut b).await?;
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.r.read_exact(&mut b).await?;
                len = u64::from_be_bytes(b);
            }
            let so_far = self.partial.as_ref().map_or(0, |m| m.payload.len() as u64);
            if len + so_far > MAX_MESSAGE {
                return Err(WebSocketError::TooLarge(len + so_far));
            }
            let mut mask = [0u8; 4];
            if head[1] & 0x80 != 0 {
                self.r.read_exact(&mut mask).await?;
            }
            let mut payload = vec![0u8; len as usize];
            self.r.read_exact(&mut payload).await?;
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            if opcode >= CLOSE {
                return Ok(Some(Message { opcode, payload }));
            }
            let message = match (opcode, self.partial.take()) {
                (0, Some(mut m)) => {
                    m.payload.extend_from_slice(&payload);
                    m
                }
                (0, None) => return Err(WebSocketError::StrayContinuation),
                (opcode, _) => Message { opcode, payload },
            };
            if fin {
                return Ok(Some(message));
            }
            self.partial = Some(message);
        }
    }
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
        assert_eq!(frame(BINARY, b"hi"), vec![0x82, 2, b'h', b'i']);
        let long = frame(TEXT, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x81, 126, 1, 44]);
        assert_eq!(long.len(), 304);
        assert_eq!(&frame(BINARY, &[0u8; 70000])[..2], &[0x82, 127]);
        assert_eq!(close(1000), vec![0x88, 2, 0x03, 0xe8]);
    }

    #[tokio::test]
    async fn masked_fragments_are_joined_and_control_frames_pass_between() {
        let m = [1u8, 2, 3, 4];
        let bytes: Vec<u8> = vec![
            // "a" as the first fragment of a binary message (FIN clear).
            0x02,
            0x81,
            m[0],
            m[1],
            m[2],
            m[3],
            b'a' ^ m[0],
            // A ping between the fragments.
            0x89,
            0x80,
            0,
            0,
            0,
            0,
            // "bc" as the last fragment.
            0x80,
            0x82,
            m[0],
            m[1],
            m[2],
            m[3],
            b'b' ^ m[0],
            b'c' ^ m[1],
            // A close frame.
            0x88,
            0x80,
            0,
            0,
            0,
            0,
        ];
        let mut r = Reader::new(&bytes[..]);
        let ping = r.next().await.expect("ping").expect("some");
        assert_eq!(ping.opcode, PING);
        let msg = r.next().await.expect("message").expect("some");
        assert_eq!(
            msg,
            Message {
                opcode: BINARY,
                payload: b"abc".to_vec()
            }
        );
        assert_eq!(r.next().await.expect("close").expect("some").opcode, CLOSE);
        assert!(r.next().await.expect("end").is_none());
        // A continuation with nothing to continue is refused.
        let stray: &[u8] = &[0x80, 0x80, 0, 0, 0, 0];
        assert!(Reader::new(stray).next().await.is_err());
    }
}
