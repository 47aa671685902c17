//! The watch cache in front of each backend: consistent lists from memory, watches from its
//! history window, 410-style refusals outside it, and slow watchers dropped, not waited for.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use k1s::store::keys::key_after;
use k1s::store::watch_cache::{CacheOptions, ReadFrom, WatchCache};
use k1s::store::{Error, Event, Store, WatchStream};

async fn cache(store: Arc<dyn Store>, opts: CacheOptions) -> WatchCache {
    WatchCache::start(store, "/c/", opts)
        .await
        .expect("start cache")
}

async fn take(stream: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(b))) => out.extend(b),
            other => panic!("after {} of {n} events: {other:?}", out.len()),
        }
    }
    out
}

fn v(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

mod cases {
    use super::*;

    pub async fn lists_are_consistent_and_page(s: Arc<dyn Store>) {
        s.create("/c/pre", v("0")).await.expect("create");
        let c = cache(s.clone(), CacheOptions::default()).await;
        for i in 0..5 {
            s.create(&format!("/c/k{i}"), v("x")).await.expect("create");
        }
        // Written just now, listed at once: the cache waits until it has seen them.
        let all = c
            .list("/c/", None, 0, ReadFrom::Latest)
            .await
            .expect("list");
        assert_eq!(all.kvs.len(), 6);
        assert_eq!(all.revision, s.current_revision().await.expect("rev"));
        let page = c.list("/c/k", None, 2, ReadFrom::Any).await.expect("page");
        assert_eq!(page.kvs.len(), 2);
        assert!(page.more);
        assert_eq!(page.remaining, Some(3));
        let next = key_after(&page.kvs[1].key);
        let rest = c
            .list("/c/k", Some(&next), 0, ReadFrom::Any)
            .await
            .expect("rest");
        assert_eq!(rest.kvs.len(), 3);
        assert_eq!(rest.kvs[0].key, "/c/k2");
        // An exact older revision is answered by the backend.
        let old = c
            .list("/c/", None, 0, ReadFrom::Exact(all.revision - 5))
            .await
            .expect("exact");
        assert_eq!(old.kvs.len(), 1);
        let one = c.get("/c/k3", ReadFrom::Any).await.expect("get");
        assert_eq!(one.expect("present").value, v("x"));
    }

    pub async fn watches_start_inside_the_window_only(s: Arc<dyn Store>) {
        let c = cache(
            s.clone(),
            CacheOptions {
                history: 5,
                ..Default::default()
            },
        )
        .await;
        let mut revs = Vec::new();
        for i in 0..10 {
            revs.push(
                s.create(&format!("/c/w{i}"), v("x"))
                    .await
                    .expect("create")
                    .mod_revision,
            );
        }
        c.list("/c/", None, 0, ReadFrom::Latest)
            .await
            .expect("catch up");
        let mut w = c
            .watch("/c/", revs[6])
            .await
            .expect("watch inside the window");
        let got = take(&mut w, 4).await;
        let got: Vec<i64> = got.iter().map(Event::revision).collect();
        assert_eq!(got, revs[6..].to_vec());
        let live = s.create("/c/live", v("y")).await.expect("create");
        assert_eq!(take(&mut w, 1).await[0].kv, live);
        match c.watch("/c/", revs[1]).await {
            Err(Error::Compacted { .. }) => {}
            Err(e) => panic!("expected Compacted, got {e}"),
            Ok(_) => panic!("a watch older than the window was accepted"),
        }
        let (objects, rev, mut after) = c.snapshot_and_watch("/c/w").await.expect("snapshot");
        assert_eq!(objects.len(), 10);
        assert_eq!(rev, live.mod_revision);
        let later = s.create("/c/w99", v("z")).await.expect("create");
        assert_eq!(take(&mut after, 1).await[0].kv, later);
    }

    pub async fn slow_watchers_are_dropped_not_waited_for(s: Arc<dyn Store>) {
        let c = cache(
            s.clone(),
            CacheOptions {
                watcher_buffer: 10,
                ..Default::default()
            },
        )
        .await;
        let mut slow = c.watch("/c/", 0).await.expect("watch");
        let mut fast = c.watch("/c/", 0).await.expect("watch");
        // The reading watcher says how far it got; each write waits for it, so on a loaded
        // machine it is never the one behind.
        let (seen_tx, mut seen) = tokio::sync::watch::channel(0usize);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            while got < 30 {
                got += take(&mut fast, 1).await.len();
                let _ = seen_tx.send(got);
            }
            got
        });
        for i in 0..30 {
            s.create(&format!("/c/s{i:02}"), v("x"))
                .await
                .expect("create");
            let _ = tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|n| *n > i)).await;
        }
        assert_eq!(
            reader.await.expect("join"),
            30,
            "the reading watcher got everything"
        );
        // The stalled one got what fit in its buffer, then its stream ended.
        let mut n = 0;
        while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(5), slow.next()).await {
            n += item.expect("event batch").len();
        }
        assert!(n < 30, "a stalled watcher was kept: {n} events");
        assert_eq!(c.watcher_count(), 0);
        // ... and it was counted.
        let dropped: f64 = k1s::metrics::registry()
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("k1s_watch_cache_slow_watchers_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(dropped >= 1.0, "the dropped watcher is not counted");
    }

    pub async fn uncached_prefixes_go_to_the_store(s: Arc<dyn Store>) {
        let c = cache(
            s.clone(),
            CacheOptions {
                history: 3,
                uncached: vec!["/c/ev/".into()],
                ..Default::default()
            },
        )
        .await;
        let mut all = c.watch("/c/", 0).await.expect("watch");
        let first = s.create("/c/ev/a", v("e")).await.expect("create");
        s.create("/c/k", v("x")).await.expect("create");
        for i in 0..5 {
            s.create(&format!("/c/ev/b{i}"), v("e"))
                .await
                .expect("create");
        }
        // The cache's own watchers and lists never see the uncached keys...
        let seen = take(&mut all, 1).await;
        assert_eq!(seen[0].kv.key, "/c/k");
        let held = c
            .list("/c/", None, 0, ReadFrom::Latest)
            .await
            .expect("list");
        let keys: Vec<_> = held.kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/c/k"]);
        // ... while reads and watches under them go to the store, past the cache's history.
        let events = c
            .list("/c/ev/", None, 0, ReadFrom::Any)
            .await
            .expect("list");
        assert_eq!(events.kvs.len(), 6);
        let one = c.get("/c/ev/a", ReadFrom::Any).await.expect("get");
        assert_eq!(one.map(|kv| kv.value), Some(v("e")));
        let mut old = c.watch("/c/ev/", first.mod_revision).await.expect("watch");
        assert_eq!(take(&mut old, 6).await.len(), 6);
        assert!(c.bypasses("/c/ev/ns/"));
        let (kvs, rev, mut after) = c.snapshot_and_watch("/c/ev/").await.expect("snapshot");
        assert_eq!(
            (kvs.len(), rev),
            (6, s.current_revision().await.expect("rev"))
        );
        s.create("/c/ev/z", v("e")).await.expect("create");
        assert_eq!(take(&mut after, 1).await[0].kv.key, "/c/ev/z");
    }

    pub async fn not_older_than_the_future_times_out(s: Arc<dyn Store>) {
        let c = cache(
            s.clone(),
            CacheOptions {
                consistent_wait: Duration::from_millis(200),
                ..Default::default()
            },
        )
        .await;
        let rev = s.current_revision().await.expect("rev");
        match c
            .list("/c/", None, 0, ReadFrom::NotOlderThan(rev + 100))
            .await
        {
            Err(Error::FutureRevision { .. }) => {}
            other => panic!("expected FutureRevision, got {other:?}"),
        }
        let ok = c.list("/c/", None, 0, ReadFrom::NotOlderThan(rev)).await;
        assert!(ok.is_ok());
    }
}

both_backends!(
    lists_are_consistent_and_page,
    watches_start_inside_the_window_only,
    slow_watchers_are_dropped_not_waited_for,
    uncached_prefixes_go_to_the_store,
    not_older_than_the_future_times_out,
);
