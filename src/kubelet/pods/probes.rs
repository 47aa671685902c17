//! Container probes as the kubelet's prober runs them: startup, liveness and readiness, each
//! exec (CRI ExecSync), httpGet (HTTP or HTTPS, any 2xx or 3xx, custom headers, named ports),
//! tcpSocket or grpc (`grpc.health.v1.Health/Check` answering SERVING), honouring
//! initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold and failureThreshold.
//! Liveness and readiness wait for the startup probe; a failed startup or liveness probe has
//! the container killed (and restarted as its policy says); readiness decides `ready`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kubelet::cri::Runtime;

/// One probe's running tally.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    successes: i32,
    failures: i32,
    last: Option<Instant>,
    /// The probe's verdict so far: None until its thresholds decide.
    pub result: Option<bool>,
    pub message: String,
}

/// The probes of one container run (by container id).
#[derive(Debug, Default, Clone)]
pub struct ContainerProbes {
    pub startup: Tally,
    pub liveness: Tally,
    pub readiness: Tally,
}

/// What a pass of the prober decided for a container.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Keep,
    /// Kill it: the startup or liveness probe failed (the message says which and why).
    Kill(String),
}

impl ContainerProbes {
    /// Whether the container counts as started (no startup probe, or it succeeded).
    pub fn started(&self, c: &Container) -> bool {
        c.startup_probe.is_none() || self.startup.result == Some(true)
    }

    /// Whether the container is ready (started, and no readiness probe or it succeeded).
    pub fn ready(&self, c: &Container) -> bool {
        self.started(c) && (c.readiness_probe.is_none() || self.readiness.result == Some(true))
    }
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

/// Whether `probe` is due, `running_for` after the container started.
fn due(p: &Probe, t: &Tally, running_for: Duration) -> bool {
    if running_for < secs(p.initial_delay_seconds, 0) {
        return false;
    }
    t.last
        .is_none_or(|l| l.elapsed() >= secs(p.period_seconds, 10).max(Duration::from_secs(1)))
}

fn record(p: &Probe, t: &mut Tally, ok: bool, message: String) {
    t.last = Some(Instant::now());
    t.message = message;
    if ok {
        t.successes += 1;
        t.failures = 0;
        if t.successes >= p.success_threshold.unwrap_or(1).max(1) {
            t.result = Some(true);
        }
    } else {
        t.failures += 1;
        t.successes = 0;
        if t.failures >= p.failure_threshold.unwrap_or(3).max(1) {
            t.result = Some(false);
        }
    }
}

/// Where probes reach the container.
pub struct Target<'a> {
    pub runtime: &'a dyn Runtime,
    pub container_id: &'a str,
    pub pod_ip: &'a str,
    /// Whose probes these are, for `/metrics/probes`.
    pub of: crate::kubelet::metrics::ProbeOf<'a>,
}

/// One probe attempt, counted and timed for `/metrics/probes`.
async fn timed(t: &Target<'_>, c: &Container, p: &Probe, kind: &str) -> (bool, String) {
    let started = std::time::Instant::now();
    let (ok, msg) = probe(t, c, p).await;
    crate::kubelet::metrics::probed(&t.of, kind, ok, started.elapsed());
    (ok, msg)
}

/// Runs the container's due probes; whether it must be killed. Each failed probe adds its
/// `Unhealthy` message ("Liveness probe failed: ...") to `unhealthy`.
pub async fn run(
    target: &Target<'_>,
    c: &Container,
    probes: &mut ContainerProbes,
    running_for: Duration,
    unhealthy: &mut Vec<String>,
) -> Verdict {
    let mut failed = |kind: &str, ok: bool, msg: &str| {
        if !ok {
            unhealthy.push(format!("{kind} probe failed: {msg}"));
        }
    };
    if let Some(p) = &c.startup_probe {
        if probes.startup.result != Some(true) {
            if due(p, &probes.startup, running_for) {
                let (ok, msg) = timed(target, c, p, "Startup").await;
                failed("Startup", ok, &msg);
                record(p, &mut probes.startup, ok, msg);
                if probes.startup.result == Some(false) {
                    return Verdict::Kill(format!(
                        "Startup probe failed: {}",
                        probes.startup.message
                    ));
                }
            }
            return Verdict::Keep;
        }
    }
    if let Some(p) = &c.liveness_probe {
        if due(p, &probes.liveness, running_for) {
            let (ok, msg) = timed(target, c, p, "Liveness").await;
            failed("Liveness", ok, &msg);
            record(p, &mut probes.liveness, ok, msg);
            if probes.liveness.result == Some(false) {
                return Verdict::Kill(format!(
                    "Liveness probe failed: {}",
                    probes.liveness.message
                ));
            }
        }
    }
    if let Some(p) = &c.readiness_probe {
        if due(p, &probes.readiness, running_for) {
            let (ok, msg) = timed(target, c, p, "Readiness").await;
            failed("Readiness", ok, &msg);
            record(p, &mut probes.readiness, ok, msg);
        }
    }
    Verdict::Keep
}

/// The port a probe names: a number, or a container port's name.
fn port(c: &Container, p: &IntOrString) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => name.parse().ok().or_else(|| {
            c.ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
        }),
    }
}

/// One probe attempt: success, and a message for a failure.
async fn probe(t: &Target<'_>, c: &Container, p: &Probe) -> (bool, String) {
    let timeout = secs(p.timeout_seconds, 1).max(Duration::from_secs(1));
    if let Some(e) = &p.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match t
            .runtime
            .exec_sync(t.container_id, cmd, timeout.as_secs() as i64)
            .await
        {
            Ok(r) if r.exit_code == 0 => (true, String::new()),
            Ok(r) => {
                let out = String::from_utf8_lossy(&r.stdout).into_owned()
                    + &String::from_utf8_lossy(&r.stderr);
                (
                    false,
                    format!("command exited with {}: {}", r.exit_code, out.trim()),
                )
            }
            Err(e) => (false, e.to_string()),
        };
    }
    let attempt = async {
        if let Some(h) = &p.http_get {
            let host = h
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| t.pod_ip.to_string());
            let Some(port) = port(c, &h.port) else {
                return (false, format!("invalid port {:?}", h.port));
            };
            let headers: Vec<(String, String)> = h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            let https = h.scheme.as_deref() == Some("HTTPS");
            let path = h
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into());
            return http_get(&host, port, &path, &headers, https).await;
        }
        if let Some(s) = &p.tcp_socket {
            let host = s
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| t.pod_ip.to_string());
            let Some(port) = port(c, &s.port) else {
                return (false, format!("invalid port {:?}", s.port));
            };
            return match tokio::net::TcpStream::connect((host.as_str(), port)).await {
                Ok(_) => (true, String::new()),
                Err(e) => (false, format!("dial tcp {host}:{port}: {e}")),
            };
        }
        if let Some(g) = &p.grpc {
            let Ok(port) = u16::try_from(g.port) else {
                return (false, format!("invalid port {}", g.port));
            };
            return grpc_health(t.pod_ip, port, g.service.as_deref().unwrap_or("")).await;
        }
        (false, "the probe has no handler".to_string())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => (false, format!("timeout after {}s", timeout.as_secs())),
    }
}

pub(crate) async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    https: bool,
) -> (bool, String) {
    let url = format!(
        "{}://{host}:{port}{path}",
        if https { "https" } else { "http" }
    );
    let tcp = match tokio::net::TcpStream::connect((host, port)).await {
        Ok(t) => t,
        Err(e) => return (false, format!("Get \"{url}\": {e}")),
    };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut head = vec![0u8; 1024];
    let n = if https {
        let Ok(connector) = crate::tls_any::insecure_connector() else {
            return (false, "TLS set-up failed".into());
        };
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
            rustls::pki_types::ServerName::try_from("probe").expect("a DNS name")
        });
        let mut tls = match connector.connect(name, tcp).await {
            Ok(s) => s,
            Err(e) => return (false, format!("Get \"{url}\": {e}")),
        };
        if let Err(e) = tls.write_all(req.as_bytes()).await {
            return (false, format!("Get \"{url}\": {e}"));
        }
        tls.read(&mut head).await
    } else {
        let mut tcp = tcp;
        if let Err(e) = tcp.write_all(req.as_bytes()).await {
            return (false, format!("Get \"{url}\": {e}"));
        }
        tcp.read(&mut head).await
    };
    let n = match n {
        Ok(n) => n,
        Err(e) => return (false, format!("Get \"{url}\": {e}")),
    };
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if (200..400).contains(&code) {
        (true, String::new())
    } else {
        (false, format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// `grpc.health.v1.Health/Check` over h2c; SERVING (1) is a success.
async fn grpc_health(ip: &str, port: u16, service: &str) -> (bool, String) {
    use http_body_util::BodyExt;
    let addr = format!("{ip}:{port}");
    let tcp = match tokio::net::TcpStream::connect(&addr).await {
        Ok(t) => t,
        Err(e) => {
            return (
                false,
                format!("failed to connect service {addr:?} within timeout: {e}"),
            )
        }
    };
    let (mut send, conn) = match hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return (false, format!("gRPC connection to {addr}: {e}")),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        msg.push(service.len().min(127) as u8);
        msg.extend_from_slice(&service.as_bytes()[..service.len().min(127)]);
    }
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let req = hyper::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(axum::body::Bytes::from(body)));
    let Ok(req) = req else {
        return (false, "building the gRPC request".into());
    };
    let resp = match send.send_request(req).await {
        Ok(r) => r,
        Err(e) => return (false, format!("gRPC health check to {addr}: {e}")),
    };
    let collected = match resp.into_body().collect().await {
        Ok(c) => c,
        Err(e) => return (false, format!("gRPC health check to {addr}: {e}")),
    };
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_string();
    let desc = collected
        .trailers()
        .and_then(|t| t.get("grpc-message"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = collected.to_bytes();
    // HealthCheckResponse: field 1 (status), a varint; absent means UNKNOWN (0).
    let status = match bytes.get(5..7) {
        Some([0x08, s]) => *s,
        _ => 0,
    };
    if grpc_status != "0" {
        return (
            false,
            format!(
                "error: health rpc probe failed: rpc error: code = {grpc_status} desc = {desc}"
            ),
        );
    }
    let name = match status {
        1 => return (true, String::new()),
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    };
    (
        false,
        format!("service unhealthy (responded with \"{name}\")"),
    )
}

/// Forgets the tallies of container runs that are gone.
pub fn retain(all: &mut HashMap<String, ContainerProbes>, live: &[String]) {
    all.retain(|id, _| live.contains(id));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_with(success: i32, failure: i32) -> Probe {
        Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Default::default()
        }
    }

    #[test]
    fn thresholds_decide_the_verdict() {
        let p = probe_with(2, 3);
        let mut t = Tally::default();
        record(&p, &mut t, true, String::new());
        assert_eq!(t.result, None, "one success of two");
        record(&p, &mut t, true, String::new());
        assert_eq!(t.result, Some(true));
        record(&p, &mut t, false, "x".into());
        record(&p, &mut t, false, "x".into());
        assert_eq!(t.result, Some(true), "two failures of three");
        record(&p, &mut t, false, "x".into());
        assert_eq!(t.result, Some(false));
        let delayed = Probe {
            initial_delay_seconds: Some(5),
            ..Default::default()
        };
        assert!(!due(&delayed, &Tally::default(), Duration::from_secs(2)));
        assert!(due(&delayed, &Tally::default(), Duration::from_secs(6)));
    }

    #[test]
    fn named_ports_come_from_the_container() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .expect("container");
        assert_eq!(port(&c, &IntOrString::String("http".into())), Some(8080));
        assert_eq!(port(&c, &IntOrString::Int(90)), Some(90));
        assert_eq!(port(&c, &IntOrString::String("nope".into())), None);
    }
}
