//! `GET /containerLogs/NAMESPACE/POD/CONTAINER`: a container's log as the upstream kubelet
//! serves it from the CRI log file (`TIMESTAMP STREAM TAG MESSAGE` lines, `P` for a partial
//! line): `previous` (the run before the current one), `tailLines`, `sinceSeconds`,
//! `sinceTime`, `timestamps`, `limitBytes`, and `follow`, which keeps the response open and
//! sends what is appended until the container stops or the client goes away.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use super::ApiState;
use crate::kubelet::cri::api;

/// How often a followed log is read again.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    #[serde(default)]
    follow: Option<String>,
    #[serde(default)]
    previous: Option<String>,
    tail_lines: Option<i64>,
    since_seconds: Option<i64>,
    since_time: Option<String>,
    #[serde(default)]
    timestamps: Option<String>,
    limit_bytes: Option<i64>,
}

fn flag(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| s == "true" || s == "1")
}

/// What to keep of a log.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since: Option<Timestamp>,
    pub timestamps: bool,
}

/// One CRI log line as a client reads it, or None when it is filtered out or malformed.
pub fn render(line: &str, f: &Filter) -> Option<String> {
    let mut parts = line.splitn(4, ' ');
    let ts = parts.next()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let msg = parts.next().unwrap_or("");
    if let Some(since) = f.since {
        let at: Timestamp = ts.parse().ok()?;
        if at < since {
            return None;
        }
    }
    let mut out = String::with_capacity(msg.len() + 40);
    if f.timestamps {
        out.push_str(ts);
        out.push(' ');
    }
    out.push_str(msg);
    if !tag.starts_with('P') {
        out.push('\n');
    }
    Some(out)
}

/// The rendered lines of `text`, the last `tail` of them when asked.
pub fn render_all(text: &str, f: &Filter, tail: Option<usize>) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = tail.map_or(0, |n| lines.len().saturating_sub(n));
    lines[start..].iter().filter_map(|l| render(l, f)).collect()
}

fn err(code: StatusCode, msg: String) -> Response {
    (code, msg).into_response()
}

fn is_running(s: &api::ContainerStatus) -> bool {
    s.state == api::ContainerState::ContainerRunning as i32
}

/// Why a container has no log yet, in upstream's words, from the pod's status.
async fn waiting(state: &ApiState, namespace: &str, pod: &str, container: &str) -> String {
    use k8s_openapi::api::core::v1::Pod;
    let api: kube::Api<Pod> = kube::Api::namespaced(state.client.clone(), namespace);
    let status = api.get_opt(pod).await.ok().flatten().and_then(|p| p.status);
    let reason = status.and_then(|s| {
        [
            s.container_statuses,
            s.init_container_statuses,
            s.ephemeral_container_statuses,
        ]
        .into_iter()
        .flatten()
        .flatten()
        .find(|c| c.name == container)
        .and_then(|c| c.state?.waiting?.reason)
    });
    let start = format!("container \"{container}\" in pod \"{pod}\" is waiting to start");
    match reason.as_deref() {
        Some("ErrImagePull") => format!("{start}: image can't be pulled"),
        Some("ImagePullBackOff") => format!("{start}: trying and failing to pull image"),
        Some(r) => format!("{start}: {r}"),
        None => format!("{start} - no logs yet"),
    }
}

pub async fn container_logs(
    State(state): State<Arc<ApiState>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let runs = match super::runs_of(&state, &namespace, &pod, &container).await {
        Ok(r) => r,
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let previous = flag(&q.previous);
    let Some(run) = runs.get(usize::from(previous)) else {
        let msg = if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            waiting(&state, &namespace, &pod, &container).await
        };
        return err(StatusCode::BAD_REQUEST, msg);
    };
    let status = match state.runtime.container_status(&run.id).await {
        Ok(s) => s,
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let since = match (&q.since_time, q.since_seconds) {
        (Some(t), _) => match t.parse::<Timestamp>() {
            Ok(t) => Some(t),
            Err(e) => return err(StatusCode::BAD_REQUEST, format!("sinceTime {t:?}: {e}")),
        },
        (None, Some(s)) if s > 0 => Timestamp::now()
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(s))
            .ok(),
        _ => None,
    };
    let filter = Filter {
        since,
        timestamps: flag(&q.timestamps),
    };
    let tail = q.tail_lines.filter(|n| *n >= 0).map(|n| n as usize);
    let limit = q.limit_bytes.filter(|n| *n > 0).map(|n| n as usize);
    let path = std::path::PathBuf::from(&status.log_path);
    let follow = flag(&q.follow) && !previous && is_running(&status);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let runtime = state.runtime.clone();
    let id = run.id.clone();
    tokio::spawn(async move {
        let mut sent = 0usize;
        let mut send = |text: String| {
            let mut bytes = Bytes::from(text);
            if let Some(l) = limit {
                if sent >= l {
                    return None;
                }
                bytes.truncate(l - sent);
            }
            sent += bytes.len();
            Some(bytes)
        };
        let (text, mut offset) = match read_from(&path, 0) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        // Only whole lines now; a trailing partial write is read with the next.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        offset -= (text.len() - whole) as u64;
        match send(render_all(&text[..whole], &filter, tail)) {
            Some(b) if !b.is_empty() => {
                if tx.send(Ok(b)).await.is_err() {
                    return;
                }
            }
            Some(_) => {}
            None => return,
        }
        if !follow {
            return;
        }
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            if tx.is_closed() {
                return;
            }
            let (more, next) = match read_from(&path, offset) {
                Ok(r) => r,
                Err(_) => return,
            };
            let whole = more.rfind('\n').map_or(0, |i| i + 1);
            offset = next - (more.len() - whole) as u64;
            if whole > 0 {
                match send(render_all(&more[..whole], &filter, None)) {
                    Some(b) if !b.is_empty() => {
                        if tx.send(Ok(b)).await.is_err() {
                            return;
                        }
                    }
                    Some(_) => {}
                    None => return,
                }
            } else {
                let running = runtime
                    .container_status(&id)
                    .await
                    .map(|s| is_running(&s))
                    .unwrap_or(false);
                if !running {
                    return;
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)
        .unwrap_or_else(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The file's text from `offset` on, and the offset after it.
fn read_from(path: &std::path::Path, offset: u64) -> Result<(String, u64), std::io::Error> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((String::new(), offset)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    // A file that shrank was rotated or truncated: read it from the start.
    let offset = if len < offset { 0 } else { offset };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity((len - offset) as usize);
    f.read_to_end(&mut buf)?;
    let next = offset + buf.len() as u64;
    Ok((String::from_utf8_lossy(&buf).into_owned(), next))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-12-01T10:00:00.000000001Z stdout F one\n\
2026-12-01T10:00:01.000000000Z stderr P tw\n\
2026-12-01T10:00:01.500000000Z stderr F o\n\
2026-12-01T10:00:02.000000000Z stdout F three\n";

    #[test]
    fn cri_lines_are_rendered_as_the_kubelet_does() {
        let plain = Filter::default();
        assert_eq!(render_all(LOG, &plain, None), "one\ntwo\nthree\n");
        assert_eq!(render_all(LOG, &plain, Some(1)), "three\n");
        let ts = Filter {
            timestamps: true,
            ..Default::default()
        };
        assert!(render_all(LOG, &ts, Some(1)).starts_with("2026-12-01T10:00:02.000000000Z three"));
        let since = Filter {
            since: Some("2026-12-01T10:00:01.5Z".parse().expect("time")),
            ..Default::default()
        };
        assert_eq!(render_all(LOG, &since, None), "o\nthree\n");
    }
}
