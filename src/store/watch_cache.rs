//! The watch cache: current state and recent history of a key prefix, in memory, in front of
//! either backend, as kube-apiserver's cacher.
//!
//! A follower task lists the prefix once, then applies the backend's watch to an ordered map of
//! the current objects and a bounded ring of recent events. From memory it serves lists at the
//! latest revision (after waiting until it has seen the store's current revision), lists "not
//! older than" a revision, and watches from any revision inside the ring; older watches get
//! [`Error::Compacted`] (HTTP 410). Lists at an exact older revision go to the backend.
//!
//! Keys under an `uncached` prefix are neither held nor replayed, as kube-apiserver runs events
//! without a watch cache (its default watch cache size for both event kinds is 0): they are many,
//! short-lived and rarely read, so at 30,000 pods they would be tens of megabytes kept for nothing.
//! Reads and watches under such a prefix go to the store itself, and the cache's own watchers
//! (every other prefix, the RBAC index on the whole root) never see those keys.
//!
//! Watchers get events through channels that never block the cache: a watcher whose unread
//! events would pass `watcher_buffer` (the history's size by default; a watcher dropped sooner
//! would only be sent the same events again from the history) is dropped: its stream ends and
//! the client re-watches from its last revision. So a stuck client never slows the cache or the
//! writers behind it, nor holds the superseded values of a longer backlog
//! (`k1s_watch_cache_slow_watchers_total` counts the watchers dropped).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::keys::prefix_end;
use super::{
    Error, Event, EventKind, KeyValue, RangeRequest, Result, Revision, Store, WatchStream,
};

/// Tuning of a [`WatchCache`].
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Events kept for watches that start in the past.
    pub history: usize,
    /// Events buffered per watcher before it is dropped as too slow. As many as the history
    /// holds by default: a watcher dropped sooner would only watch again from its last
    /// revision and be sent the same events from the history.
    pub watcher_buffer: usize,
    /// How long a consistent read waits for the cache before reading the backend instead.
    pub consistent_wait: Duration,
    /// Key prefixes the cache does not hold: reads and watches under them go to the store.
    pub uncached: Vec<String>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            history: 10_000,
            watcher_buffer: 10_000,
            consistent_wait: Duration::from_secs(3),
            uncached: Vec::new(),
        }
    }
}

/// Which state a read wants, as the API's resourceVersion and resourceVersionMatch say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// The latest state (resourceVersion unset): as new as the store's current revision.
    Latest,
    /// Whatever the cache holds (resourceVersion "0").
    Any,
    /// At least this revision (resourceVersionMatch NotOlderThan).
    NotOlderThan(Revision),
    /// Exactly this revision (resourceVersionMatch Exact): read from the backend.
    Exact(Revision),
}

/// A page of a cached list.
#[derive(Clone, Debug, Default)]
pub struct CachedList {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
    /// More keys follow the last one returned.
    pub more: bool,
    /// Keys not returned after this page, when they were counted (a page read from the store
    /// past its limit is not).
    pub remaining: Option<i64>,
}

struct Watcher {
    prefix: String,
    from: Revision,
    tx: mpsc::UnboundedSender<Result<Vec<Event>>>,
    /// Events sent and not yet taken by the consumer.
    pending: Arc<AtomicUsize>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, KeyValue>,
    history: VecDeque<Event>,
    revision: Revision,
    /// The first revision a watch can start from.
    oldest: Revision,
    watchers: Vec<Watcher>,
}

struct Inner {
    store: Arc<dyn Store>,
    prefix: String,
    opts: CacheOptions,
    state: Mutex<State>,
    progress: watch::Sender<Revision>,
}

/// A watch cache over one key prefix. Cheap to clone.
#[derive(Clone)]
pub struct WatchCache {
    inner: Arc<Inner>,
}

/// Watchers ended because their buffer was full.
static DROPPED: crate::metrics::Desc = crate::metrics::Desc {
    name: "k1s_watch_cache_slow_watchers_total",
    help: "Watches ended because the client did not keep up with their events.",
    labels: &[],
    buckets: &[],
};

fn poisoned() -> Error {
    Error::Unavailable {
        reason: "the watch cache lock is poisoned".into(),
    }
}

impl WatchCache {
    /// Loads `prefix` from `store` and keeps following it until the store's watch ends for good.
    pub async fn start(store: Arc<dyn Store>, prefix: &str, opts: CacheOptions) -> Result<Self> {
        let (progress, _) = watch::channel(0);
        let cache = WatchCache {
            inner: Arc::new(Inner {
                store,
                prefix: prefix.to_string(),
                opts,
                state: Mutex::new(State::default()),
                progress,
            }),
        };
        let stream = cache.load().await?;
        let follower = cache.clone();
        tokio::spawn(async move { follower.follow(stream).await });
        Ok(cache)
    }

    /// Whether `key` is one the cache holds.
    fn holds(&self, key: &str) -> bool {
        !self.bypasses(key)
    }

    /// Whether reads and watches of `prefix` go to the store (it lies inside an uncached
    /// prefix); their watches get no progress bookmarks from the cache's revision, which may
    /// run ahead of what the store's watch has delivered.
    pub fn bypasses(&self, prefix: &str) -> bool {
        self.inner
            .opts
            .uncached
            .iter()
            .any(|p| prefix.starts_with(p.as_str()))
    }

    /// The revision the cache has caught up to.
    pub fn revision(&self) -> Revision {
        *self.inner.progress.borrow()
    }

    /// Lists the store and starts watching right after the list's revision.
    async fn load(&self) -> Result<WatchStream> {
        let store = &self.inner.store;
        let mut objects = BTreeMap::new();
        let mut req = RangeRequest {
            prefix: self.inner.prefix.clone(),
            limit: 10_000,
            ..Default::default()
        };
        loop {
            let page = store.range(req.clone()).await?;
            req.revision = page.revision;
            let last = page.kvs.last().map(|kv| super::keys::key_after(&kv.key));
            for kv in page.kvs.into_iter().filter(|kv| self.holds(&kv.key)) {
                objects.insert(kv.key.clone(), kv);
            }
            match (page.more, last) {
                (true, Some(next)) => req.start = Some(next),
                _ => break,
            }
        }
        let revision = req.revision;
        let stream = store.watch(&self.inner.prefix, revision + 1).await?;
        {
            let mut st = self.inner.state.lock().map_err(|_| poisoned())?;
            st.objects = objects;
            st.history.clear();
            st.revision = revision;
            st.oldest = revision + 1;
            // Watchers of the old state may have missed events: end them.
            st.watchers.clear();
        }
        self.inner.progress.send_replace(revision);
        Ok(stream)
    }

    async fn follow(self, mut stream: WatchStream) {
        let mut backoff = Duration::from_millis(100);
        loop {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(events) => {
                        if self.apply(events).is_err() {
                            return;
                        }
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, prefix = %self.inner.prefix, "watch cache lost its watch; reloading");
                        break;
                    }
                }
            }
            loop {
                tokio::time::sleep(backoff).await;
                match self.load().await {
                    Ok(s) => {
                        stream = s;
                        break;
                    }
                    Err(Error::Unavailable { reason }) if reason.contains("shut") => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch cache reload failed");
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }

    fn apply(&self, mut events: Vec<Event>) -> Result<()> {
        let Some(last) = events.last().map(Event::revision) else {
            return Ok(());
        };
        events.retain(|e| self.holds(&e.kv.key));
        let mut st = self.inner.state.lock().map_err(|_| poisoned())?;
        for e in &events {
            match e.kind {
                EventKind::Put => {
                    st.objects.insert(e.kv.key.clone(), e.kv.clone());
                }
                EventKind::Delete => {
                    st.objects.remove(&e.kv.key);
                }
            }
            st.history.push_back(e.clone());
        }
        while st.history.len() > self.inner.opts.history {
            if let Some(old) = st.history.pop_front() {
                st.oldest = old.revision() + 1;
            }
        }
        st.revision = last;
        st.watchers.retain(|w| {
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| e.revision() >= w.from && e.kv.key.starts_with(&w.prefix))
                .cloned()
                .collect();
            if mine.is_empty() {
                return !w.tx.is_closed();
            }
            // Counted before it is sent, so the consumer never takes away more than was added.
            let n = mine.len();
            let before = w.pending.fetch_add(n, Ordering::AcqRel);
            let sent = before + n <= self.inner.opts.watcher_buffer && w.tx.send(Ok(mine)).is_ok();
            if !sent && !w.tx.is_closed() {
                // The client watches again from its last revision, or relists once that
                // revision left the history: a burst of these is worth seeing.
                tracing::warn!(prefix = %w.prefix, "a watcher fell too far behind; its watch ends");
                crate::metrics::registry().inc(&DROPPED, &[], 1.0);
            }
            sent
        });
        drop(st);
        self.inner.progress.send_replace(last);
        Ok(())
    }

    /// Waits until the cache has seen `revision`, up to `wait`. Returns whether it has.
    async fn wait_for(&self, revision: Revision, wait: Duration) -> bool {
        let mut rx = self.inner.progress.subscribe();
        let seen = tokio::time::timeout(wait, rx.wait_for(|r| *r >= revision)).await;
        matches!(seen, Ok(Ok(_)))
    }

    /// Lists keys under `prefix` (inside the cache's prefix) from `start`, at most `limit`
    /// (0 = all), as of `from`.
    pub async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
        from: ReadFrom,
    ) -> Result<CachedList> {
        if self.bypasses(prefix) {
            let rev = match from {
                ReadFrom::Exact(rev) => rev,
                // The store is at least as new as any revision a client has seen.
                _ => 0,
            };
            return self.list_from_store(prefix, start, limit, rev).await;
        }
        match from {
            ReadFrom::Exact(rev) => return self.list_from_store(prefix, start, limit, rev).await,
            ReadFrom::Any => {}
            ReadFrom::Latest => {
                let current = self.inner.store.current_revision().await?;
                if !self
                    .wait_for(current, self.inner.opts.consistent_wait)
                    .await
                {
                    return self.list_from_store(prefix, start, limit, 0).await;
                }
            }
            ReadFrom::NotOlderThan(rev) => {
                if !self.wait_for(rev, self.inner.opts.consistent_wait).await {
                    return Err(Error::FutureRevision {
                        requested: rev,
                        current: self.revision(),
                    });
                }
            }
        }
        let st = self.inner.state.lock().map_err(|_| poisoned())?;
        let lo = match start {
            Some(s) if s > prefix => s.to_string(),
            _ => prefix.to_string(),
        };
        let end = prefix_end(prefix.as_bytes());
        let mut out = CachedList {
            revision: st.revision,
            remaining: Some(0),
            ..Default::default()
        };
        for (key, kv) in st.objects.range(lo..) {
            if !end.is_empty() && key.as_bytes() >= end.as_slice() {
                break;
            }
            if limit > 0 && out.kvs.len() >= limit {
                out.more = true;
                out.remaining = out.remaining.map(|r| r + 1);
                continue;
            }
            out.kvs.push(kv.clone());
        }
        Ok(out)
    }

    async fn list_from_store(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
        revision: Revision,
    ) -> Result<CachedList> {
        let resp = self
            .inner
            .store
            .range(RangeRequest {
                prefix: prefix.to_string(),
                start: start.map(str::to_string),
                revision,
                limit,
                count_all: false,
            })
            .await?;
        let remaining = (!resp.more).then_some(0);
        Ok(CachedList {
            kvs: resp.kvs,
            revision: resp.revision,
            more: resp.more,
            remaining,
        })
    }

    /// One key as of `from`.
    pub async fn get(&self, key: &str, from: ReadFrom) -> Result<Option<KeyValue>> {
        match from {
            ReadFrom::Exact(rev) => self.inner.store.get(key, rev).await,
            ReadFrom::Latest => self.inner.store.get(key, 0).await,
            _ if self.bypasses(key) => self.inner.store.get(key, 0).await,
            ReadFrom::Any => {
                let st = self.inner.state.lock().map_err(|_| poisoned())?;
                Ok(st.objects.get(key).cloned())
            }
            _ => {
                let list = self.list(key, None, 0, from).await?;
                Ok(list.kvs.into_iter().find(|kv| kv.key == key))
            }
        }
    }

    /// Events under `prefix` from revision `from` on (inclusive); 0 means "from now".
    pub async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        if self.bypasses(prefix) {
            return self.inner.store.watch(prefix, from.max(0)).await;
        }
        Ok(self.register(prefix, from, false)?.1)
    }

    /// The current state under `prefix` and a watch of everything after it, atomically
    /// (resourceVersion "0" watches and `sendInitialEvents`).
    pub async fn snapshot_and_watch(
        &self,
        prefix: &str,
    ) -> Result<(Vec<KeyValue>, Revision, WatchStream)> {
        if self.bypasses(prefix) {
            let list = self.list_from_store(prefix, None, 0, 0).await?;
            let stream = self.inner.store.watch(prefix, list.revision + 1).await?;
            return Ok((list.kvs, list.revision, stream));
        }
        let (snapshot, stream) = self.register(prefix, 0, true)?;
        let (kvs, rev) = snapshot.unwrap_or_default();
        Ok((kvs, rev, stream))
    }

    #[allow(clippy::type_complexity)]
    fn register(
        &self,
        prefix: &str,
        from: Revision,
        snapshot: bool,
    ) -> Result<(Option<(Vec<KeyValue>, Revision)>, WatchStream)> {
        let mut st = self.inner.state.lock().map_err(|_| poisoned())?;
        let from = if from <= 0 { st.revision + 1 } else { from };
        if from < st.oldest {
            return Err(Error::Compacted {
                requested: from,
                compacted: st.oldest - 1,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let backlog: Vec<Event> = st
            .history
            .iter()
            .filter(|e| e.revision() >= from && e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        if !backlog.is_empty() {
            pending.fetch_add(backlog.len(), Ordering::AcqRel);
            let _ = tx.send(Ok(backlog));
        }
        let snap = snapshot.then(|| {
            let kvs = st
                .objects
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, kv)| kv.clone())
                .collect();
            (kvs, st.revision)
        });
        st.watchers.push(Watcher {
            prefix: prefix.to_string(),
            from,
            tx,
            pending: pending.clone(),
        });
        let stream = UnboundedReceiverStream::new(rx).map(move |item| {
            if let Ok(batch) = &item {
                pending.fetch_sub(batch.len(), Ordering::AcqRel);
            }
            item
        });
        Ok((snap, stream.boxed()))
    }

    /// Watchers currently registered whose consumer is still there.
    pub fn watcher_count(&self) -> usize {
        self.inner
            .state
            .lock()
            .map(|s| s.watchers.iter().filter(|w| !w.tx.is_closed()).count())
            .unwrap_or(0)
    }
}
