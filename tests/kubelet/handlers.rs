//! The kubelet's handlers beyond exec, on the real node: httpGet and sleep lifecycle hooks
//! (the httpGet ones answered by a sidecar's busybox httpd CGI script that writes down what it
//! was asked), and a gRPC readiness probe (`grpc.health.v1.Health/Check`) of a hostNetwork pod,
//! answered by a health server this test runs on the node's address.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::common::server::{eventually, ok, within, write, Server};
use super::jsonpath;

fn http_hooked(dir: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: hook-cgi}}
data:
  hook: |
    #!/bin/sh
    echo "$QUERY_STRING" >> /out/log
    printf 'Content-Type: text/plain\r\n\r\nok'
---
apiVersion: v1
kind: Pod
metadata: {{name: http-hooked}}
spec:
  terminationGracePeriodSeconds: 20
  volumes:
  - {{name: out, hostPath: {{path: "{dir}", type: DirectoryOrCreate}}}}
  - {{name: cgi, configMap: {{name: hook-cgi, defaultMode: 0755}}}}
  initContainers:
  - name: web
    image: k1s.local/busybox:1
    restartPolicy: Always
    command: [sh, -c, "trap 'exit 0' TERM; httpd -f -p 8080 -h /srv & wait"]
    startupProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
    volumeMounts: [{{name: out, mountPath: /out}}, {{name: cgi, mountPath: /srv/cgi-bin}}]
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sh, -c, "trap 'echo c-term >> /out/log; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      postStart: {{httpGet: {{path: "/cgi-bin/hook?post-start", port: 8080}}}}
      preStop: {{httpGet: {{path: "/cgi-bin/hook?pre-stop", port: 8080}}}}
  - name: napper
    image: k1s.local/busybox:1
    command: [sh, -c, "trap 'echo napper-term-$(date +%s) >> /out/log; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      preStop: {{sleep: {{seconds: 3}}}}
"#
    )
}

/// httpGet hooks reach the pod's address; a sleep preStop holds SIGTERM back.
pub fn http_and_sleep_hooks(s: &Server, tmp: &std::path::Path) {
    let dir = tmp.join("http-hook-out");
    let yaml = http_hooked(dir.to_str().expect("utf8"));
    ok(s, &["apply", "-f", &write(tmp, "http-hooked.yaml", &yaml)]);
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/http-hooked",
            "--timeout=60s",
        ],
    );
    let log = || std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    assert_eq!(log(), "post-start\n", "the postStart httpGet hook ran once");
    let asked = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let started = Instant::now();
    ok(
        s,
        &[
            "delete",
            "pod",
            "http-hooked",
            "--wait=true",
            "--timeout=60s",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(15), "TERM ended it");
    let lines: Vec<String> = log().lines().map(String::from).collect();
    let at = |want: &str| lines.iter().position(|l| l.starts_with(want));
    // The preStop request reached the sidecar (stopped last) before c's SIGTERM.
    let (Some(pre), Some(term)) = (at("pre-stop"), at("c-term")) else {
        panic!("both hooks' marks in {lines:?}");
    };
    assert!(pre < term, "{lines:?}");
    // napper's SIGTERM came only after its 3 s sleep hook.
    let napped: u64 = at("napper-term-")
        .and_then(|i| lines[i].trim_start_matches("napper-term-").parse().ok())
        .unwrap_or_else(|| panic!("napper's TERM mark in {lines:?}"));
    assert!(napped >= asked + 2, "TERM at {napped}, delete at {asked}");
    ok(s, &["delete", "configmap", "hook-cgi"]);
}

/// A gRPC health server on `ip`: answers SERVING for service "edge" while `serving` holds,
/// NOT_SERVING otherwise. Runs until the test process ends.
fn health_server(ip: &str, serving: Arc<AtomicBool>) -> u16 {
    use http_body_util::BodyExt;
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind the health server");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((tcp, _)) = listener.accept().await {
                let serving = serving.clone();
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let serving = serving.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            // A HealthCheckRequest: field 1 (service), after the 5-byte prefix.
                            let service = body.get(7..).map(String::from_utf8_lossy);
                            let up = path == "/grpc.health.v1.Health/Check"
                                && service.as_deref() == Some("edge")
                                && serving.load(Ordering::SeqCst);
                            let reply = vec![0, 0, 0, 0, 2, 0x08, if up { 1 } else { 2 }];
                            let mut trailers = hyper::HeaderMap::new();
                            trailers.insert(
                                "grpc-status",
                                hyper::header::HeaderValue::from_static("0"),
                            );
                            let frames = futures::stream::iter([
                                Ok::<_, hyper::Error>(hyper::body::Frame::data(
                                    axum::body::Bytes::from(reply),
                                )),
                                Ok(hyper::body::Frame::trailers(trailers)),
                            ]);
                            let mut resp =
                                hyper::Response::new(http_body_util::StreamBody::new(frames));
                            resp.headers_mut().insert(
                                "content-type",
                                hyper::header::HeaderValue::from_static("application/grpc"),
                            );
                            Ok::<_, hyper::Error>(resp)
                        }
                    },
                );
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
                });
            }
        });
    });
    port
}

fn grpc_probed(port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: grpc-probed}}
spec:
  terminationGracePeriodSeconds: 1
  hostNetwork: true
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sleep, "3600"]
    readinessProbe:
      grpc: {{port: {port}, service: edge}}
      periodSeconds: 1
      failureThreshold: 1
"#
    )
}

/// A gRPC readiness probe follows the health server's answer both ways.
pub fn grpc_probe(s: &Server, tmp: &std::path::Path, node: &str) {
    let ip = jsonpath(
        s,
        &format!("node/{node}"),
        "{.status.addresses[?(@.type==\"InternalIP\")].address}",
    );
    let serving = Arc::new(AtomicBool::new(false));
    let port = health_server(&ip, serving.clone());
    ok(
        s,
        &["apply", "-f", &write(tmp, "grpc.yaml", &grpc_probed(port))],
    );
    let ready = || jsonpath(s, "pod/grpc-probed", "{.status.containerStatuses[0].ready}");
    eventually(
        s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=grpc-probed,reason=Unhealthy",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        |o| {
            o.contains("Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")")
        },
    );
    assert_eq!(ready(), "false");
    serving.store(true, Ordering::SeqCst);
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/grpc-probed",
            "--timeout=30s",
        ],
    );
    serving.store(false, Ordering::SeqCst);
    within(15, "readiness lost with NOT_SERVING", || ready() == "false");
    // Counted in /metrics/probes, both ways, until the pod is gone.
    let uid = jsonpath(s, "pod/grpc-probed", "{.metadata.uid}");
    let probes = super::kubelet_api::raw(s, "/metrics/probes");
    for result in ["successful", "failed"] {
        let want = format!("prober_probe_total{{container=\"c\",namespace=\"default\",pod=\"grpc-probed\",pod_uid=\"{uid}\",probe_type=\"Readiness\",result=\"{result}\"}} ");
        assert!(probes.contains(&want), "{want} in\n{probes}");
    }
    assert!(
        probes.contains("prober_probe_duration_seconds_count{container=\"c\",namespace=\"default\",pod=\"grpc-probed\",probe_type=\"Readiness\"} "),
        "{probes}"
    );
    ok(s, &["delete", "pod", "grpc-probed", "--wait=true"]);
    within(30, "the deleted pod's probe series gone", || {
        !super::kubelet_api::raw(s, "/metrics/probes").contains(&uid)
    });
}
