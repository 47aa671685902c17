//! etcd-backend properties beyond the shared suite: surviving an etcd restart.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use k1s::store::{Error, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_and_writes_resume_after_etcd_restarts() {
    let mut backend = common::Backend::etcd().await;
    let s = backend.store();
    let first = s.create("/e/a", Bytes::from("1")).await.expect("create");
    let mut watch = s.watch("/e/", first.mod_revision).await.expect("watch");
    let ev = watch.next().await.expect("event").expect("ok");
    assert_eq!(ev[0].kv, first);

    let etcd = backend.etcd.as_mut().expect("etcd");
    etcd.kill();
    match s.create("/e/down", Bytes::from("x")).await {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("expected Unavailable while etcd is down, got {other:?}"),
    }
    etcd.restart().expect("restart etcd");

    // The client reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        match s.create("/e/b", Bytes::from("2")).await {
            Ok(kv) => break kv,
            Err(e) if Instant::now() < deadline => {
                tracing_hint(&e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("etcd did not come back: {e}"),
        }
    };
    let third = s.create("/e/c", Bytes::from("3")).await.expect("create");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("watch did not resume")
            .expect("watch ended")
            .expect("watch error");
        seen.extend(batch);
    }
    assert_eq!(seen[0].kv, second);
    assert_eq!(seen[1].kv, third);
}

fn tracing_hint(e: &Error) {
    eprintln!("waiting for etcd: {e}");
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
fn make_pki(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=k1s-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ];
    ca.extend(ec);
    openssl(dir, &ca);
    for (name, usage, san) in [
        (
            "server",
            "serverAuth,clientAuth",
            "subjectAltName=IP:127.0.0.1",
        ),
        ("client", "clientAuth", "subjectAltName=DNS:k1s"),
    ] {
        let mut req = vec!["req", "-new", "-subj", "/CN=k1s", "-keyout"];
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        req.extend([key.as_str(), "-out", csr.as_str()]);
        req.extend(ec);
        openssl(dir, &req);
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("{san}\nextendedKeyUsage={usage}\nkeyUsage=digitalSignature\n"),
        )
        .expect("write ext");
        let pem = format!("{name}.pem");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    use k1s::store::etcd::{EtcdOptions, EtcdStore};
    use k1s::testing::etcd::{EtcdServer, ServerTls};

    let pki = tempfile::tempdir().expect("tmp");
    let p = pki.path();
    make_pki(p);
    let etcd = EtcdServer::start_tls(ServerTls {
        ca: p.join("ca.pem"),
        cert: p.join("server.pem"),
        key: p.join("server.key"),
    })
    .expect("start etcd with TLS");
    let mut opts = EtcdOptions::new(vec![etcd.url().to_string()]);
    opts.ca_file = Some(p.join("ca.pem"));
    opts.cert_file = Some(p.join("client.pem"));
    opts.key_file = Some(p.join("client.key"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let store = loop {
        match EtcdStore::connect(opts.clone()).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                tracing_hint(&e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("TLS connection to etcd failed: {e}"),
        }
    };
    let kv = store
        .create("/tls/a", Bytes::from("secure"))
        .await
        .expect("create over TLS");
    assert_eq!(store.get("/tls/a", 0).await.expect("get"), Some(kv));

    // Without a client certificate etcd refuses.
    let mut anonymous = opts.clone();
    anonymous.cert_file = None;
    anonymous.key_file = None;
    let refused =
        tokio::time::timeout(Duration::from_secs(15), EtcdStore::connect(anonymous)).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "etcd accepted a client without a certificate"
    );
}
