//! The store conformance suite: every case runs against the embedded backend and against the
//! etcd backend on a real etcd (Debian's etcd-server) started on loopback for the case.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use k1s::store::keys::key_after;
use k1s::store::{Error, Event, EventKind, RangeRequest, Store, WatchStream};

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

/// Reads events from `stream` until `n` arrived (or fails after a few seconds).
async fn take_events(stream: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(batch))) => out.extend(batch),
            Ok(Some(Err(e))) => panic!("watch failed after {} events: {e}", out.len()),
            Ok(None) => panic!("watch ended after {} events", out.len()),
            Err(_) => panic!("timed out after {} of {n} events", out.len()),
        }
    }
    out
}

/// Asserts that a watch is refused as compacted, at creation or as its first item.
async fn assert_watch_compacted(store: &dyn Store, prefix: &str, rev: i64) {
    match store.watch(prefix, rev).await {
        Err(Error::Compacted { .. }) => {}
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(mut s) => match tokio::time::timeout(Duration::from_secs(10), s.next()).await {
            Ok(Some(Err(Error::Compacted { .. }))) => {}
            other => panic!("expected a Compacted watch, got {other:?}"),
        },
    }
}

mod cases {
    use super::*;
    use std::sync::Arc;

    pub async fn create_get(s: Arc<dyn Store>) {
        let base = s.current_revision().await.expect("rev");
        let kv = s.create("/t/a", b("1")).await.expect("create");
        assert_eq!(kv.mod_revision, base + 1);
        assert_eq!(kv.create_revision, base + 1);
        assert_eq!(kv.version, 1);
        let got = s.get("/t/a", 0).await.expect("get").expect("present");
        assert_eq!(got, kv);
        if base > 0 {
            assert_eq!(s.get("/t/a", base).await.expect("get at base"), None);
        }
        assert_eq!(s.get("/t/missing", 0).await.expect("get missing"), None);
        assert_eq!(s.current_revision().await.expect("rev"), base + 1);
    }

    pub async fn create_existing_fails(s: Arc<dyn Store>) {
        s.create("/t/a", b("1")).await.expect("create");
        let rev = s.current_revision().await.expect("rev");
        match s.create("/t/a", b("2")).await {
            Err(Error::AlreadyExists { key }) => assert_eq!(key, "/t/a"),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert_eq!(
            s.current_revision().await.expect("rev"),
            rev,
            "a failed write bumps nothing"
        );
    }

    pub async fn update_is_guarded(s: Arc<dyn Store>) {
        let kv = s.create("/t/a", b("1")).await.expect("create");
        let up = s
            .update("/t/a", b("2"), kv.mod_revision)
            .await
            .expect("update");
        assert_eq!(up.create_revision, kv.create_revision);
        assert_eq!(up.version, 2);
        assert_eq!(up.mod_revision, kv.mod_revision + 1);
        match s.update("/t/a", b("3"), kv.mod_revision).await {
            Err(Error::Conflict {
                current, expected, ..
            }) => {
                assert_eq!(expected, kv.mod_revision);
                let cur = current.expect("current value");
                assert_eq!(cur.value, b("2"));
                assert_eq!(cur.mod_revision, up.mod_revision);
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
        match s.update("/t/none", b("3"), 0).await {
            Err(Error::NotFound { .. }) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }
        match s.update("/t/none", b("3"), up.mod_revision).await {
            Err(Error::NotFound { .. }) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    pub async fn delete_is_guarded_and_recreate_starts_over(s: Arc<dyn Store>) {
        let kv = s.create("/t/a", b("1")).await.expect("create");
        match s.delete("/t/a", Some(kv.mod_revision - 1)).await {
            Err(Error::Conflict { .. }) => {}
            other => panic!("expected Conflict, got {other:?}"),
        }
        let del = s
            .delete("/t/a", Some(kv.mod_revision))
            .await
            .expect("delete");
        assert_eq!(del.prev, kv);
        assert_eq!(del.revision, kv.mod_revision + 1);
        assert_eq!(s.get("/t/a", 0).await.expect("get"), None);
        assert_eq!(
            s.get("/t/a", kv.mod_revision)
                .await
                .expect("get before delete"),
            Some(kv.clone())
        );
        match s.delete("/t/a", None).await {
            Err(Error::NotFound { .. }) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }
        let again = s.create("/t/a", b("new")).await.expect("recreate");
        assert_eq!(again.version, 1);
        assert_eq!(again.create_revision, del.revision + 1);
        let unguarded = s.delete("/t/a", None).await.expect("unguarded delete");
        assert_eq!(unguarded.prev.value, b("new"));
    }

    pub async fn range_pages_a_consistent_snapshot(s: Arc<dyn Store>) {
        for i in 0..10 {
            s.create(&format!("/t/items/{i:02}"), b(&i.to_string()))
                .await
                .expect("create");
        }
        s.create("/t/itemsx", b("outside")).await.expect("create");
        s.create("/t/other/1", b("outside")).await.expect("create");
        let first = s
            .range(RangeRequest {
                prefix: "/t/items/".into(),
                limit: 3,
                count_all: true,
                ..Default::default()
            })
            .await
            .expect("range");
        assert_eq!(first.kvs.len(), 3);
        assert!(first.more);
        assert_eq!(first.count, 10);
        // Without count_all the page still says more keys follow.
        let page = s
            .range(RangeRequest {
                prefix: "/t/items/".into(),
                limit: 3,
                ..Default::default()
            })
            .await
            .expect("range");
        assert_eq!(page.kvs.len(), 3);
        assert!(page.more);
        assert!(page.count >= 4, "{}", page.count);
        let at = first.revision;
        // Change the world between pages; the pages must not see it.
        let k5 = s
            .get("/t/items/05", 0)
            .await
            .expect("get")
            .expect("present");
        s.update("/t/items/05", b("changed"), k5.mod_revision)
            .await
            .expect("update");
        s.delete("/t/items/07", None).await.expect("delete");
        s.create("/t/items/99", b("late")).await.expect("create");

        let mut all = first.kvs.clone();
        let mut start = key_after(&all.last().expect("page").key);
        loop {
            let page = s
                .range(RangeRequest {
                    prefix: "/t/items/".into(),
                    start: Some(start.clone()),
                    revision: at,
                    limit: 3,
                    ..Default::default()
                })
                .await
                .expect("next page");
            assert_eq!(page.revision, at);
            all.extend(page.kvs.iter().cloned());
            if !page.more {
                break;
            }
            start = key_after(&page.kvs.last().expect("page").key);
        }
        let keys: Vec<String> = all.iter().map(|kv| kv.key.clone()).collect();
        let want: Vec<String> = (0..10).map(|i| format!("/t/items/{i:02}")).collect();
        assert_eq!(keys, want);
        assert_eq!(all[5].value, b("5"));

        let now = s
            .range(RangeRequest {
                prefix: "/t/items/".into(),
                ..Default::default()
            })
            .await
            .expect("range latest");
        assert_eq!(now.kvs.len(), 10, "one deleted, one added");
        assert!(!now.more);
        assert!(now.kvs.iter().all(|kv| kv.key != "/t/items/07"));
        assert_eq!(now.kvs[5].value, b("changed"));
    }

    pub async fn future_revision_is_refused(s: Arc<dyn Store>) {
        s.create("/t/a", b("1")).await.expect("create");
        let rev = s.current_revision().await.expect("rev");
        match s.get("/t/a", rev + 100).await {
            Err(Error::FutureRevision { .. }) => {}
            other => panic!("expected FutureRevision, got {other:?}"),
        }
    }

    pub async fn watch_replays_history_then_follows(s: Arc<dyn Store>) {
        let a = s.create("/t/w/a", b("1")).await.expect("create");
        s.create("/t/other", b("x")).await.expect("create");
        let a2 = s
            .update("/t/w/a", b("2"), a.mod_revision)
            .await
            .expect("update");
        let mut stream = s.watch("/t/w/", a.mod_revision).await.expect("watch");
        let replay = take_events(&mut stream, 2).await;
        assert_eq!(replay[0].kind, EventKind::Put);
        assert!(replay[0].is_create());
        assert_eq!(replay[0].kv, a);
        assert_eq!(replay[1].kv, a2);
        assert_eq!(replay[1].prev.as_ref().expect("prev").value, b("1"));

        s.create("/t/w/b", b("b")).await.expect("create");
        s.create("/t/wx", b("not mine")).await.expect("create");
        let del = s.delete("/t/w/a", None).await.expect("delete");
        let live = take_events(&mut stream, 2).await;
        assert_eq!(live[0].kv.key, "/t/w/b");
        assert_eq!(live[1].kind, EventKind::Delete);
        assert_eq!(live[1].kv.key, "/t/w/a");
        assert_eq!(live[1].kv.mod_revision, del.revision);
        assert_eq!(live[1].prev.as_ref().expect("prev").value, b("2"));
        let revs: Vec<i64> = replay.iter().chain(&live).map(Event::revision).collect();
        assert!(revs.windows(2).all(|w| w[0] < w[1]), "in order: {revs:?}");
    }

    pub async fn watch_from_now_sees_only_new_events(s: Arc<dyn Store>) {
        s.create("/t/n/old", b("1")).await.expect("create");
        let mut stream = s.watch("/t/n/", 0).await.expect("watch");
        let kv = s.create("/t/n/new", b("2")).await.expect("create");
        let ev = take_events(&mut stream, 1).await;
        assert_eq!(ev[0].kv, kv);
    }

    pub async fn many_concurrent_writers_get_distinct_revisions(s: Arc<dyn Store>) {
        let base = s.current_revision().await.expect("rev");
        let mut stream = s.watch("/t/c/", base + 1).await.expect("watch");
        let mut tasks = Vec::new();
        for t in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..25 {
                    revs.push(
                        s.create(&format!("/t/c/{t}/{i}"), b("v"))
                            .await
                            .expect("create")
                            .mod_revision,
                    );
                }
                revs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("join"));
        }
        all.sort();
        let want: Vec<i64> = (base + 1..=base + 200).collect();
        assert_eq!(all, want, "every write has its own revision, none skipped");
        let events = take_events(&mut stream, 200).await;
        let seen: Vec<i64> = events.iter().map(Event::revision).collect();
        assert_eq!(seen, want, "the watch sees every write in revision order");
    }

    pub async fn compaction_forgets_history_only(s: Arc<dyn Store>) {
        let a = s.create("/t/k/a", b("1")).await.expect("create");
        let a2 = s
            .update("/t/k/a", b("2"), a.mod_revision)
            .await
            .expect("update");
        let gone = s.create("/t/k/gone", b("x")).await.expect("create");
        s.delete("/t/k/gone", None).await.expect("delete");
        let keep = s.create("/t/k/b", b("b")).await.expect("create");
        let at = s.current_revision().await.expect("rev");
        s.update("/t/k/b", b("b2"), keep.mod_revision)
            .await
            .expect("update");
        s.compact(at).await.expect("compact");
        assert_eq!(s.compacted_revision().await.expect("compacted"), at);
        // Below the compacted revision: refused.
        match s.get("/t/k/a", a.mod_revision).await {
            Err(Error::Compacted { .. }) => {}
            other => panic!("expected Compacted, got {other:?}"),
        }
        match s
            .range(RangeRequest {
                prefix: "/t/k/".into(),
                revision: at - 1,
                ..Default::default()
            })
            .await
        {
            Err(Error::Compacted { .. }) => {}
            other => panic!("expected Compacted, got {other:?}"),
        }
        assert_watch_compacted(s.as_ref(), "/t/k/", gone.mod_revision).await;
        // At the compacted revision: the state as it was.
        let snap = s
            .range(RangeRequest {
                prefix: "/t/k/".into(),
                revision: at,
                ..Default::default()
            })
            .await
            .expect("range at compacted revision");
        let vals: Vec<(String, Bytes)> = snap
            .kvs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        assert_eq!(
            vals,
            vec![
                ("/t/k/a".to_string(), b("2")),
                ("/t/k/b".to_string(), b("b"))
            ]
        );
        assert_eq!(s.get("/t/k/a", 0).await.expect("get"), Some(a2));
        let mut stream = s
            .watch("/t/k/", at)
            .await
            .expect("watch from compacted revision");
        let ev = take_events(&mut stream, 2).await;
        assert_eq!(
            ev[0].kv.value,
            b("b"),
            "the event at the compacted revision itself"
        );
        assert_eq!(ev[1].kv.value, b("b2"));
        match s.compact(at).await {
            Err(Error::Compacted { .. }) => {}
            other => panic!("compacting again: expected Compacted, got {other:?}"),
        }
        // Writes go on after compaction.
        s.create("/t/k/c", b("c"))
            .await
            .expect("create after compaction");
    }

    pub async fn bad_input_is_refused(s: Arc<dyn Store>) {
        let big = Bytes::from(vec![0u8; 2 * 1024 * 1024]);
        match s.create("/t/big", big).await {
            Err(Error::TooLarge { size, .. }) => assert_eq!(size, 2 * 1024 * 1024),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        match s.create("/t/nul\0key", b("x")).await {
            Err(Error::InvalidKey { .. }) => {}
            other => panic!("expected InvalidKey, got {other:?}"),
        }
        match s.create("", b("x")).await {
            Err(Error::InvalidKey { .. }) => {}
            other => panic!("expected InvalidKey, got {other:?}"),
        }
    }

    pub async fn shutdown_refuses_writes(s: Arc<dyn Store>) {
        s.create("/t/a", b("1")).await.expect("create");
        s.shutdown().await.expect("shutdown");
        match s.create("/t/b", b("1")).await {
            Err(Error::Unavailable { .. }) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}

both_backends!(
    create_get,
    create_existing_fails,
    update_is_guarded,
    delete_is_guarded_and_recreate_starts_over,
    range_pages_a_consistent_snapshot,
    future_revision_is_refused,
    watch_replays_history_then_follows,
    watch_from_now_sees_only_new_events,
    many_concurrent_writers_get_distinct_revisions,
    compaction_forgets_history_only,
    bad_input_is_refused,
    shutdown_refuses_writes,
);
