//! Embedded-store properties beyond the shared suite: reopening, disk space under churn, and
//! watchers that fall behind.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use k1s::store::embedded::{EmbeddedOptions, EmbeddedStore};
use k1s::store::{RangeRequest, Store};

fn open(path: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedOptions::new(path)).expect("open")
}

#[tokio::test]
async fn reopening_keeps_data_history_and_revision() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("state.redb");
    let s = open(&path);
    let a = s.create("/r/a", Bytes::from("1")).await.expect("create");
    let a2 = s
        .update("/r/a", Bytes::from("2"), a.mod_revision)
        .await
        .expect("update");
    s.create("/r/b", Bytes::from("b")).await.expect("create");
    let rev = s.current_revision().await.expect("rev");
    s.shutdown().await.expect("shutdown");

    let s = open(&path);
    assert_eq!(s.current_revision().await.expect("rev"), rev);
    assert_eq!(s.get("/r/a", 0).await.expect("get"), Some(a2));
    assert_eq!(
        s.get("/r/a", a.mod_revision).await.expect("get old"),
        Some(a)
    );
    let next = s.create("/r/c", Bytes::from("c")).await.expect("create");
    assert_eq!(next.mod_revision, rev + 1, "revisions continue");
    s.shutdown().await.expect("shutdown");
}

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Steady churn with compaction: the file stops growing (freed pages are reused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_space_is_reused_under_churn() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("state.redb");
    let s = open(&path);
    let keys = 200;
    let value = Bytes::from(vec![b'x'; 2048]);
    let mut revs = vec![0; keys];
    for (i, rev) in revs.iter_mut().enumerate() {
        *rev = s
            .create(&format!("/churn/{i}"), value.clone())
            .await
            .expect("create")
            .mod_revision;
    }
    let mut sizes = Vec::new();
    for _round in 0..40 {
        for (i, rev) in revs.iter_mut().enumerate() {
            *rev = s
                .update(&format!("/churn/{i}"), value.clone(), *rev)
                .await
                .expect("update")
                .mod_revision;
        }
        let current = s.current_revision().await.expect("rev");
        s.compact(current).await.expect("compact");
        // Let the writer go idle: it cleans up and flushes.
        tokio::time::sleep(Duration::from_millis(150)).await;
        sizes.push(file_size(&path));
    }
    let early = sizes[9];
    let late = *sizes.last().expect("sizes");
    eprintln!(
        "file size after rounds 10 and 40: {early} and {late} bytes ({} writes of 2 KiB)",
        keys * 40
    );
    assert!(
        late <= early + early / 4,
        "the file keeps growing under churn: {sizes:?}"
    );
    // Everything still reads back.
    let all = s
        .range(RangeRequest {
            prefix: "/churn/".into(),
            ..Default::default()
        })
        .await
        .expect("range");
    assert_eq!(all.kvs.len(), keys);
    s.shutdown().await.expect("shutdown");
}

/// A watcher that reads nothing while thousands of batches commit neither blocks the writers
/// nor misses an event: it catches up from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_catches_up_without_blocking_writers() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(&dir.path().join("state.redb"));
    let base = s.current_revision().await.expect("rev");
    let mut stalled = s.watch("/lag/", base + 1).await.expect("watch");
    let n = 3000;
    let writes = tokio::time::timeout(Duration::from_secs(60), async {
        for i in 0..n {
            s.create(&format!("/lag/{i:05}"), Bytes::from("v"))
                .await
                .expect("create");
        }
    });
    writes
        .await
        .expect("writers were blocked by a stalled watcher");
    let mut seen = Vec::new();
    while seen.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(20), stalled.next())
            .await
            .expect("catch-up timed out")
            .expect("stream ended")
            .expect("watch error");
        seen.extend(batch.into_iter().map(|e| e.revision()));
    }
    let want: Vec<i64> = (base + 1..=base + n as i64).collect();
    assert_eq!(seen, want);
    s.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn shutdown_ends_watches() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(&dir.path().join("state.redb"));
    let mut w = s.watch("/x/", 0).await.expect("watch");
    s.shutdown().await.expect("shutdown");
    let end = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("watch did not end on shutdown");
    assert!(matches!(end, None | Some(Err(_))), "{end:?}");
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("state.redb");
    let _first = open(&path);
    let second = EmbeddedStore::open(EmbeddedOptions::new(&path));
    assert!(second.is_err(), "two stores on one file");
}
