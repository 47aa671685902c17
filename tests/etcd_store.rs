//! etcd-backend properties beyond the shared suite: surviving an etcd restart.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use k1s::store::Error;

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
