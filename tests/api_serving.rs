//! The API server's front door with a stock kubectl 1.37: TLS, the admin kubeconfig, /version,
//! health endpoints, 401 for anonymous callers, discovery, OpenAPI and metrics.

mod common;

use common::server::{text, Server};

/// A GET over TLS without a client certificate, trusting the cluster CA: (status, body).
fn anonymous_get(s: &Server, path: &str) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::{Read, Write};
    let ca = std::fs::read(s._dir.path().join("server/tls/server-ca.crt")).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("pem")).expect("add ca");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).expect("tls");
    let tcp = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

#[test]
fn kubectl_version_and_health_over_tls_with_the_admin_kubeconfig() {
    let s = Server::start();
    let mode = std::fs::metadata(&s.kubeconfig).expect("kubeconfig written");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let o = s.kubectl(&["version", "-o", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.37.1+k1s");
    assert_eq!(v["serverVersion"]["major"], "1");
    assert_eq!(v["serverVersion"]["minor"], "37");

    let o = s.kubectl(&["get", "--raw", "/readyz?verbose"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("[+]etcd ok") && out.contains("readyz check passed"),
        "{out}"
    );
    let o = s.kubectl(&["get", "--raw", "/livez/ping"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ok");
    let o = s.kubectl(&["get", "--raw", "/healthz"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ok");
}

#[test]
fn anonymous_callers_get_401_except_on_public_paths() {
    let s = Server::start();
    for path in ["/healthz", "/livez", "/readyz", "/readyz/etcd", "/version"] {
        let (code, _) = anonymous_get(&s, path);
        assert_eq!(code, 200, "{path}");
    }
    for path in [
        "/api",
        "/apis",
        "/api/v1/namespaces/default/pods",
        "/metrics",
    ] {
        let (code, body) = anonymous_get(&s, path);
        assert_eq!(code, 401, "{path}");
        let status: serde_json::Value = serde_json::from_str(&body).expect("Status body");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "Unauthorized");
        assert_eq!(status["code"], 401);
    }
    // The admin gets past authentication (the resource API itself comes next: 404).
    let o = s.kubectl(&["get", "--raw", "/no/such/path"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("could not find the requested resource"),
        "{}",
        text(&o)
    );
}

#[test]
fn discovery_answers_kubectl_api_versions_and_api_resources() {
    let s = Server::start();
    let o = s.kubectl(&["api-versions"]);
    assert!(o.status.success(), "{}", text(&o));
    let versions = String::from_utf8_lossy(&o.stdout);
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "autoscaling/v2",
        "rbac.authorization.k8s.io/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "{gv} missing from:\n{versions}"
        );
    }
    assert!(
        !versions.contains("alpha"),
        "alpha versions are off by default:\n{versions}"
    );

    let o = s.kubectl(&["api-resources"]);
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(row("pods"), Some(vec!["pods", "po", "v1", "true", "Pod"]));
    assert_eq!(
        row("deployments"),
        Some(vec![
            "deployments",
            "deploy",
            "apps/v1",
            "true",
            "Deployment"
        ])
    );
    assert_eq!(
        row("namespaces"),
        Some(vec!["namespaces", "ns", "v1", "false", "Namespace"])
    );

    let o = s.kubectl(&["api-resources", "--categories=all", "-o", "name"]);
    let all = String::from_utf8_lossy(&o.stdout);
    for r in [
        "pods",
        "services",
        "deployments.apps",
        "jobs.batch",
        "cronjobs.batch",
    ] {
        assert!(
            all.lines().any(|l| l == r),
            "{r} missing from `all`:\n{all}"
        );
    }

    // The legacy documents too.
    let o = s.kubectl(&["get", "--raw", "/apis/apps"]);
    let group: serde_json::Value = serde_json::from_slice(&o.stdout).expect("APIGroup");
    assert_eq!(group["kind"], "APIGroup");
    assert_eq!(group["preferredVersion"]["groupVersion"], "apps/v1");
    let o = s.kubectl(&["get", "--raw", "/api/v1"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).expect("APIResourceList");
    let status = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "pods/status")
        .expect("pods/status");
    assert_eq!(
        status["verbs"],
        serde_json::json!(["get", "patch", "update"])
    );
}

#[test]
fn kubectl_explain_reads_the_openapi_documents() {
    let s = Server::start();
    let o = s.kubectl(&["explain", "pod.spec.containers.livenessProbe"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("KIND:       Pod"), "{out}");
    assert!(out.contains("FIELD: livenessProbe <Probe>"), "{out}");
    assert!(
        out.contains("Periodic probe of container liveness"),
        "{out}"
    );
    let o = s.kubectl(&["get", "--raw", "/openapi/v3"]);
    let index: serde_json::Value = serde_json::from_slice(&o.stdout).expect("index");
    assert!(index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .is_some_and(|u| u.starts_with("/openapi/v3/apis/apps/v1?hash=")));
    let o = s.kubectl(&["get", "--raw", "/openapi/v2"]);
    let v2: serde_json::Value = serde_json::from_slice(&o.stdout).expect("v2");
    assert_eq!(v2["swagger"], "2.0");
}

#[test]
fn metrics_count_requests_store_operations_and_watchers() {
    let s = Server::start();
    let o = s.kubectl(&["get", "ns"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = s.kubectl(&["get", "--raw", "/metrics"]);
    assert!(o.status.success(), "{}", text(&o));
    let m = String::from_utf8_lossy(&o.stdout);
    assert!(m.contains("# TYPE apiserver_request_total counter"), "{m}");
    assert!(
        m.lines().any(|l| l.starts_with("apiserver_request_total{verb=\"LIST\",group=\"\",version=\"v1\",resource=\"namespaces\"") && l.contains("code=\"200\"")),
        "{m}"
    );
    assert!(
        m.contains("apiserver_request_duration_seconds_bucket{verb=\"LIST\""),
        "{m}"
    );
    assert!(
        m.contains("etcd_request_duration_seconds_count{operation=\"create\",type=\"namespaces\"}"),
        "{m}"
    );
    assert!(m.contains("apiserver_registered_watchers "), "{m}");
}

/// Makes a key and a certificate for `subject` with openssl, signed by `ca` (cert, key) or
/// self-signed as a CA when `ca` is `None`; returns (cert, key) paths.
fn openssl_cert(
    dir: &std::path::Path,
    name: &str,
    subject: &str,
    ca: Option<(&std::path::Path, &std::path::Path)>,
) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::process::Command;
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let ok = |c: &mut Command| {
        let o = c.output().expect("openssl");
        assert!(o.status.success(), "{}", text(&o));
    };
    ok(Command::new("openssl")
        .args([
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
        ])
        .arg(&key));
    match ca {
        None => ok(Command::new("openssl")
            .args([
                "req", "-x509", "-new", "-days", "2", "-subj", subject, "-key",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)),
        Some((ca_cert, ca_key)) => {
            let csr = dir.join(format!("{name}.csr"));
            ok(Command::new("openssl")
                .args(["req", "-new", "-subj", subject, "-key"])
                .arg(&key)
                .arg("-out")
                .arg(&csr));
            let ext = dir.join(format!("{name}.ext"));
            std::fs::write(
                &ext,
                "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n",
            )
            .expect("ext");
            ok(Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(ca_cert)
                .arg("-CAkey")
                .arg(ca_key)
                .arg("-CAcreateserial")
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert));
        }
    }
    (cert, key)
}

#[test]
fn client_certificates_name_users_and_foreign_ones_get_401() {
    let s = Server::start();
    let tls = s._dir.path().join("server/tls");
    let (ca_cert, ca_key) = (tls.join("server-ca.crt"), tls.join("server-ca.key"));
    let dir = tempfile::tempdir().expect("tmp");
    let as_cert = |cert: &std::path::Path, key: &std::path::Path, args: &[&str]| {
        std::process::Command::new(common::server::kubectl())
            .env("KUBECONFIG", "")
            .arg(format!("--server=https://127.0.0.1:{}", s.port))
            .arg(format!("--certificate-authority={}", ca_cert.display()))
            .arg(format!("--client-certificate={}", cert.display()))
            .arg(format!("--client-key={}", key.display()))
            .args(args)
            .output()
            .expect("kubectl")
    };
    let (cert, key) = openssl_cert(
        dir.path(),
        "carol",
        "/O=devs/O=ops/CN=carol",
        Some((&ca_cert, &ca_key)),
    );
    let o = as_cert(
        &cert,
        &key,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        r#"carol ["devs","ops","system:authenticated"]"#
    );
    let o = as_cert(&cert, &key, &["get", "pods"]);
    assert!(
        text(&o).contains(r#"User "carol" cannot list resource "pods""#),
        "{}",
        text(&o)
    );

    let (other_ca, other_ca_key) = openssl_cert(dir.path(), "other-ca", "/CN=someone else", None);
    let (cert, key) = openssl_cert(
        dir.path(),
        "mallory",
        "/O=system:masters/CN=mallory",
        Some((&other_ca, &other_ca_key)),
    );
    let o = as_cert(&cert, &key, &["get", "pods"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("error: You must be logged in to the server (Unauthorized)"),
        "{}",
        text(&o)
    );
    let o = s.kubectl(&["get", "--raw", "/metrics"]);
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains(r#"apiserver_authentication_failures_total{credential="certificate"} 1"#),
        "the refusal is counted"
    );
}
