//! WebSocket clients to the runtime's SPDY streaming server, as kube-apiserver's stream
//! translator and tunneling handler do it: kubectl 1.37 asks for exec and attach over a
//! WebSocket `v5.channel.k8s.io` and for port-forward over `SPDY/3.1+portforward.k8s.io`,
//! which containerd's streaming server does not speak. For exec and attach the kubelet ends
//! the WebSocket and opens an SPDY session (`v4.channel.k8s.io`) to the runtime, moving each
//! channel's bytes to its stream (stdin 0, stdout 1, stderr 2, error 3, resize 4) and the
//! v5 CLOSE signal (255) to a FIN on stdin. For port-forward the WebSocket's binary messages
//! carry the SPDY session itself, so their bytes are relayed to an SPDY upgrade as they are.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Response, StatusCode};
use axum::response::IntoResponse;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::Mutex;

use crate::spdy::{self, Frame};
use crate::websocket as ws;

/// The exec/attach protocol kubectl 1.37 asks for first.
pub const V5: &str = "v5.channel.k8s.io";
/// Port-forward's SPDY session tunnelled through a WebSocket.
pub const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// The v5 message that closes one of the client's streams (its payload: the channel).
const CLOSE_SIGNAL: u8 = 255;
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

/// The streams an exec or attach asked for.
#[derive(Clone, Copy, Debug)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Which WebSocket protocol of ours the request asks for, if any.
pub fn asked(req: &Request, exec: bool) -> Option<&'static str> {
    if !ws::wanted(req.headers()) {
        return None;
    }
    let want = if exec { V5 } else { TUNNEL };
    ws::offered(req.headers())
        .iter()
        .any(|p| p == want)
        .then_some(want)
}

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// An SPDY/3.1 upgrade of `path` at the runtime's streaming server `host`, with `protocol`;
/// the server's own answer when it does not switch.
async fn dial(host: &str, path: &str, protocol: &str) -> Result<Upgraded, Response<Body>> {
    let fail = |m: String| (StatusCode::INTERNAL_SERVER_ERROR, m).into_response();
    let tcp = tokio::net::TcpStream::connect(host).await.map_err(|e| {
        fail(format!(
            "connecting to the runtime's streaming server at {host}: {e}"
        ))
    })?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| fail(format!("streaming to {host}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(path)
        .header(header::HOST, host)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .body(Body::empty())
        .map_err(|e| fail(format!("streaming to {host}: {e}")))?;
    let mut resp = send
        .send_request(req)
        .await
        .map_err(|e| fail(format!("streaming to {host}: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(resp.map(Body::new));
    }
    hyper::upgrade::on(&mut resp)
        .await
        .map(TokioIo::new)
        .map_err(|e| fail(format!("upgrading the stream from {host}: {e}")))
}

/// Answers the client's WebSocket with `protocol`, then runs `bridge` on the upgraded
/// connection.
fn accept<F, Fut>(mut req: Request, protocol: &'static str, bridge: F) -> Response<Body>
where
    F: FnOnce(Upgraded) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(resp) = ws::switching(req.headers(), protocol) else {
        return (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key header").into_response();
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => bridge(TokioIo::new(io)).await,
            Err(e) => tracing::debug!("a streaming websocket did not upgrade: {e}"),
        }
    });
    resp
}

/// Writes to a shared half, ignoring a peer that went away (the readers see it end).
async fn send<W: AsyncWrite + Unpin>(w: &Mutex<WriteHalf<W>>, bytes: &[u8]) -> bool {
    w.lock().await.write_all(bytes).await.is_ok()
}

/// Exec or attach for a WebSocket `v5.channel.k8s.io` client, through an SPDY session to
/// the runtime's streaming URL (`host`, `path`).
pub async fn exec(req: Request, host: &str, path: &str, streams: Streams) -> Response<Body> {
    let runtime = match dial(host, path, "v4.channel.k8s.io").await {
        Ok(io) => io,
        Err(resp) => return resp,
    };
    let mut enc = match spdy::Encoder::new() {
        Ok(e) => e,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    // Streams as client-go's v4 protocol opens them: error first, then what was asked.
    let mut ids = [None; 5];
    let mut opening = Vec::new();
    let wanted = [
        (ERROR, "error", true),
        (STDIN, "stdin", streams.stdin),
        (STDOUT, "stdout", streams.stdout),
        (STDERR, "stderr", streams.stderr && !streams.tty),
        (RESIZE, "resize", streams.tty),
    ];
    let mut next = 1;
    for (channel, kind, on) in wanted {
        if !on {
            continue;
        }
        match enc.syn_stream(next, &[("streamtype", kind)], false) {
            Ok(f) => opening.extend(f),
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
        ids[channel as usize] = Some(next);
        next += 2;
    }
    accept(req, V5, move |client| async move {
        let (spdy_r, mut spdy_w) = tokio::io::split(runtime);
        if spdy_w.write_all(&opening).await.is_err() {
            return;
        }
        let spdy_w = Arc::new(Mutex::new(spdy_w));
        let (client_r, client_w) = tokio::io::split(client);
        let client_w = Arc::new(Mutex::new(client_w));
        let upstream = to_runtime(client_r, client_w.clone(), spdy_w.clone(), ids);
        let downstream = to_client(spdy_r, client_w.clone(), spdy_w.clone(), ids);
        tokio::select! {
            _ = upstream => {}
            _ = downstream => {
                let _ = send(&client_w, &ws::close(1000)).await;
            }
        }
        let _ = client_w.lock().await.shutdown().await;
        let _ = spdy_w.lock().await.shutdown().await;
    })
}

/// The client's messages to the runtime's streams, until the client closes.
async fn to_runtime<C, S>(
    client_r: tokio::io::ReadHalf<C>,
    client_w: Arc<Mutex<WriteHalf<C>>>,
    spdy_w: Arc<Mutex<WriteHalf<S>>>,
    ids: [Option<u32>; 5],
) where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut messages = ws::Reader::new(client_r);
    while let Ok(Some(m)) = messages.next().await {
        match m.opcode {
            ws::BINARY => {
                let Some((&channel, bytes)) = m.payload.split_first() else {
                    continue;
                };
                let frame = match channel {
                    STDIN | RESIZE => match ids[channel as usize] {
                        // Data frames hold at most 16 MiB; kubectl sends 32 KiB at most.
                        Some(id) => bytes
                            .chunks(1 << 20)
                            .flat_map(|c| spdy::data(id, false, c))
                            .collect(),
                        None => continue,
                    },
                    CLOSE_SIGNAL => match bytes.first().and_then(|&c| ids.get(c as usize)) {
                        Some(Some(id)) => spdy::data(*id, true, b""),
                        _ => continue,
                    },
                    _ => continue,
                };
                if !send(&spdy_w, &frame).await {
                    return;
                }
            }
            ws::PING => {
                let _ = send(&client_w, &ws::frame(ws::PONG, &m.payload)).await;
            }
            ws::CLOSE => return,
            _ => {}
        }
    }
}

/// The runtime's streams to the client's channels, until the runtime ends the session.
async fn to_client<C, S>(
    spdy_r: tokio::io::ReadHalf<S>,
    client_w: Arc<Mutex<WriteHalf<C>>>,
    spdy_w: Arc<Mutex<WriteHalf<S>>>,
    ids: [Option<u32>; 5],
) where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let channel_of = |id: u32| {
        [STDOUT, STDERR, ERROR]
            .into_iter()
            .find(|&c| ids[c as usize] == Some(id))
    };
    let mut frames = spdy::Decoder::new(spdy_r);
    loop {
        match frames.next().await {
            Ok(Some(Frame::Data { id, data, .. })) if !data.is_empty() => {
                let Some(channel) = channel_of(id) else {
                    continue;
                };
                let mut payload = Vec::with_capacity(data.len() + 1);
                payload.push(channel);
                payload.extend_from_slice(&data);
                if !send(&client_w, &ws::frame(ws::BINARY, &payload)).await {
                    return;
                }
            }
            Ok(Some(Frame::Ping(id))) => {
                let _ = send(&spdy_w, &spdy::ping(id)).await;
            }
            Ok(Some(Frame::SynStream { id, .. })) => {
                // The runtime opens no streams of its own in these protocols.
                let _ = send(&spdy_w, &spdy::rst_stream(id, spdy::CANCEL)).await;
            }
            Ok(Some(Frame::GoAway { .. })) | Ok(None) => return,
            Ok(Some(_)) => {}
            Err(e) => {
                tracing::debug!("streaming from the runtime: {e}");
                return;
            }
        }
    }
}

/// Port-forward for a WebSocket `SPDY/3.1+portforward.k8s.io` client: the SPDY session it
/// carries goes to the runtime's streaming URL as it is.
pub async fn tunnel(req: Request, host: &str, path: &str) -> Response<Body> {
    let runtime = match dial(host, path, "portforward.k8s.io").await {
        Ok(io) => io,
        Err(resp) => return resp,
    };
    accept(req, TUNNEL, move |client| async move {
        let (mut runtime_r, mut runtime_w) = tokio::io::split(runtime);
        let (client_r, client_w) = tokio::io::split(client);
        let client_w = Mutex::new(client_w);
        {
            let upstream = async {
                let mut messages = ws::Reader::new(client_r);
                while let Ok(Some(m)) = messages.next().await {
                    match m.opcode {
                        ws::BINARY | ws::TEXT if runtime_w.write_all(&m.payload).await.is_err() => {
                            return
                        }
                        ws::PING => {
                            let _ = send(&client_w, &ws::frame(ws::PONG, &m.payload)).await;
                        }
                        ws::CLOSE => return,
                        _ => {}
                    }
                }
            };
            let downstream = async {
                let mut buf = vec![0u8; 32 << 10];
                loop {
                    match runtime_r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if !send(&client_w, &ws::frame(ws::BINARY, &buf[..n])).await {
                                return;
                            }
                        }
                    }
                }
            };
            tokio::select! {
                _ = upstream => {}
                _ = downstream => {
                    let _ = send(&client_w, &ws::close(1000)).await;
                }
            }
        }
        let _ = client_w.lock().await.shutdown().await;
        let _ = runtime_w.shutdown().await;
    })
}
