//! The embedded backend: a durable, single-file store on local disk built on redb.
//!
//! One writer thread owns all writes and commits them in groups ([`writer`]); reads run on
//! tokio's blocking pool against redb snapshots; watches replay the `log` table from disk and then
//! follow a broadcast of committed batches ([`watch`]). History is kept per key as in etcd, so a
//! range or get at any revision since the last compaction is exact.

mod codec;
mod compact;
mod flusher;
mod overlay;
mod reads;
mod tables;
mod wal;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use redb::Database;
use tokio::sync::{broadcast, oneshot};

use super::{
    check_key, check_size, Deleted, Error, Event, KeyValue, RangeRequest, RangeResponse, Result,
    Revision, Store, WatchStream, DEFAULT_MAX_VALUE_BYTES,
};
use writer::{Op, Writer};

/// Failures inside the embedded backend, before they become a [`super::Error`].
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[error("data on disk is corrupt: bad {what}")]
    Corrupt { what: &'static str },
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("starting the writer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("a lock inside the store is poisoned")]
    Poisoned,
    #[error("write-ahead log {path}: {source}")]
    Wal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for EmbeddedError {
            fn from(e: $t) -> Self {
                EmbeddedError::Redb(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<EmbeddedError> for Error {
    fn from(e: EmbeddedError) -> Self {
        Error::backend("using the embedded store", e)
    }
}

/// How to open an embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// The database file.
    pub path: PathBuf,
    /// Largest value accepted.
    pub max_value_bytes: usize,
    /// Most writes committed together.
    pub max_batch: usize,
    /// redb page cache size. Reads are served by the watch cache and writes look up only the
    /// key they replace, so a small cache costs nothing measurable (`k1s bench store`: the same
    /// figures at 16 and 64 MiB) and the file's pages stay in the kernel's page cache, which
    /// gives memory back under pressure.
    pub cache_bytes: usize,
}

impl EmbeddedOptions {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        EmbeddedOptions {
            path: path.into(),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_batch: 1024,
            cache_bytes: 16 << 20,
        }
    }
}

/// State the writer publishes and readers and watchers follow.
pub(crate) struct Shared {
    pub current: AtomicI64,
    pub compacted: AtomicI64,
    /// A flush job is queued for the flusher.
    pub flush_pending: AtomicBool,
    /// Committed batches; `None` once the writer has stopped, which ends every watch.
    events: Mutex<Option<broadcast::Sender<Arc<Vec<Event>>>>>,
    /// Writes not yet flushed to redb.
    view: Mutex<Arc<overlay::Overlay>>,
}

impl Shared {
    /// A consistent read view: the published overlay and a redb snapshot taken under one lock.
    pub fn snapshot(
        &self,
        db: &Database,
    ) -> Result<(Arc<overlay::Overlay>, redb::ReadTransaction), EmbeddedError> {
        use redb::ReadableDatabase;
        let view = self.view.lock().map_err(|_| EmbeddedError::Poisoned)?;
        let txn = db.begin_read()?;
        Ok((view.clone(), txn))
    }

    /// Publishes the writer's overlay.
    pub fn set_overlay(&self, overlay: overlay::Overlay) {
        if let Ok(mut view) = self.view.lock() {
            *view = Arc::new(overlay);
        }
    }

    /// Follows committed batches; `None` after shutdown.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Arc<Vec<Event>>>> {
        self.events.lock().ok()?.as_ref().map(|tx| tx.subscribe())
    }

    /// Publishes a committed batch.
    pub fn publish(&self, batch: Vec<Event>) {
        if let Ok(guard) = self.events.lock() {
            if let Some(tx) = guard.as_ref() {
                // No receiver is fine: nobody watches.
                let _ = tx.send(Arc::new(batch));
            }
        }
    }

    /// Ends every watch.
    pub fn close(&self) {
        if let Ok(mut guard) = self.events.lock() {
            *guard = None;
        }
    }
}

struct Inner {
    /// `None` after shutdown; readers and watchers take the database from here for each read
    /// only, so shutdown can wait for them and release the file before it returns.
    db: DbSlot,
    shared: Arc<Shared>,
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    max_value_bytes: usize,
    path: PathBuf,
}

/// Where the open database is found; `None` once the store is shut down.
pub(crate) type DbSlot = Arc<std::sync::RwLock<Option<Arc<Database>>>>;

/// The open database, for one read.
pub(crate) fn db_of(slot: &DbSlot) -> Result<Arc<Database>> {
    slot.read()
        .map_err(|_| unavailable("the database handle is poisoned"))?
        .clone()
        .ok_or_else(|| unavailable("the store is shut down"))
}

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

/// Committed batches a watcher may fall behind by before it re-reads from disk.
const EVENT_BACKLOG: usize = 1024;

impl EmbeddedStore {
    /// Opens (or creates) the store, repairing it first if it was not closed cleanly.
    pub fn open(opts: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        if let Some(dir) = opts.path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| EmbeddedError::Open {
                    path: opts.path.clone(),
                    source: Box::new(redb::Error::Io(e)),
                })?;
            }
        }
        let db = redb::Builder::new()
            .set_cache_size(opts.cache_bytes)
            .create(&opts.path)
            .map_err(|e| EmbeddedError::Open {
                path: opts.path.clone(),
                source: Box::new(e.into()),
            })?;
        let db = Arc::new(db);
        let state = tables::init(&db)?;
        // Batches acknowledged after the last flush live in the write-ahead log.
        let wal_err = |source| EmbeddedError::Wal {
            path: wal::segment_path(&opts.path, 0),
            source,
        };
        let (batches, last_segment) = wal::recover(&opts.path).map_err(wal_err)?;
        let state = if batches.is_empty() {
            state
        } else {
            let (state, replayed) = tables::replay(&db, &batches, state)?;
            tracing::info!(
                replayed,
                revision = state.revision,
                "embedded store: replayed the write-ahead log"
            );
            state
        };
        let log = wal::Wal::create(&opts.path, last_segment + 1).map_err(wal_err)?;
        log.remove_through(last_segment).map_err(wal_err)?;
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let shared = Arc::new(Shared {
            current: AtomicI64::new(state.revision),
            compacted: AtomicI64::new(state.compacted),
            flush_pending: AtomicBool::new(false),
            events: Mutex::new(Some(events)),
            view: Mutex::new(Arc::new(overlay::Overlay {
                parts: Vec::new(),
                meta: state,
            })),
        });
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let flusher = flusher::Flusher {
            db: db.clone(),
            shared: shared.clone(),
            jobs: jobs_rx,
            done: done_tx,
            meta: state,
            unsynced: false,
        };
        let flusher_thread = std::thread::Builder::new()
            .name("k1s-store-flush".into())
            .spawn(move || flusher.run())
            .map_err(EmbeddedError::Thread)?;
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(
            db.clone(),
            shared.clone(),
            rx,
            opts.max_batch.max(1),
            state,
            log,
            writer::FlusherHandle {
                jobs: jobs_tx,
                done: done_rx,
                thread: flusher_thread,
            },
        );
        let handle = std::thread::Builder::new()
            .name("k1s-store-writer".into())
            .spawn(move || writer.run())
            .map_err(EmbeddedError::Thread)?;
        tracing::info!(path = %opts.path.display(), revision = state.revision, compacted = state.compacted, "embedded store opened");
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db: Arc::new(std::sync::RwLock::new(Some(db))),
                shared,
                ops: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                closed: AtomicBool::new(false),
                max_value_bytes: opts.max_value_bytes,
                path: opts.path,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn send<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(unavailable("the store is shutting down"));
        }
        let (tx, rx) = oneshot::channel();
        {
            let guard = self
                .inner
                .ops
                .lock()
                .map_err(|_| unavailable("the writer queue is poisoned"))?;
            let ops = guard
                .as_ref()
                .ok_or_else(|| unavailable("the store is shut down"))?;
            ops.send(make(tx))
                .map_err(|_| unavailable("the writer thread has stopped"))?;
        }
        rx.await
            .map_err(|_| unavailable("the writer thread stopped before answering"))?
    }

    fn db(&self) -> Result<Arc<Database>> {
        db_of(&self.inner.db)
    }

    fn check_write(&self, key: &str, value: &[u8]) -> Result<()> {
        check_key(key)?;
        check_size(key, value, self.inner.max_value_bytes)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, &Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db()?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&db, &inner.shared))
            .await
            .map_err(|e| Error::backend("running a read", e))?
    }
}

fn unavailable(reason: &str) -> Error {
    Error::Unavailable {
        reason: reason.to_string(),
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str, revision: Revision) -> Result<Option<KeyValue>> {
        check_key(key)?;
        let key = key.to_string();
        self.blocking(move |db, shared| reads::get(db, shared, &key, revision))
            .await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.blocking(move |db, shared| reads::range(db, shared, &req))
            .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.check_write(key, &value)?;
        let key = key.to_string();
        self.send(|reply| Op::Create { key, value, reply }).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        self.check_write(key, &value)?;
        let key = key.to_string();
        self.send(|reply| Op::Update {
            key,
            value,
            expected,
            reply,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted> {
        check_key(key)?;
        let key = key.to_string();
        self.send(|reply| Op::Delete {
            key,
            expected,
            reply,
        })
        .await
    }

    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream> {
        let compacted = self.inner.shared.compacted.load(Ordering::SeqCst);
        let current = self.inner.shared.current.load(Ordering::SeqCst);
        let start = if start_revision <= 0 {
            current + 1
        } else {
            start_revision
        };
        if start < compacted {
            return Err(Error::Compacted {
                requested: start,
                compacted,
            });
        }
        Ok(watch::spawn(
            self.inner.db.clone(),
            self.inner.shared.clone(),
            prefix.to_string(),
            start,
        ))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.inner.shared.current.load(Ordering::SeqCst))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.send(|reply| Op::Compact { revision, reply }).await
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.inner.shared.compacted.load(Ordering::SeqCst))
    }

    async fn shutdown(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let sent = {
            let mut guard = self
                .inner
                .ops
                .lock()
                .map_err(|_| unavailable("the writer queue is poisoned"))?;
            let sent = guard
                .as_ref()
                .map(|ops| ops.send(Op::Shutdown { reply: tx }).is_ok())
                .unwrap_or(false);
            *guard = None;
            sent
        };
        if sent {
            // The writer answers once everything queued before it is durable.
            let _ = rx.await;
        }
        let handle = self
            .inner
            .writer
            .lock()
            .map_err(|_| unavailable("the writer handle is poisoned"))?
            .take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| Error::backend("joining the writer thread", e))?
                .map_err(|_| unavailable("the writer thread panicked"))?;
        }
        let db = self.inner.db.write().ok().and_then(|mut slot| slot.take());
        if let Some(db) = db {
            // Reads in flight hold the database briefly; wait for them so the file is free
            // when this returns.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while Arc::strong_count(&db) > 1 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            if Arc::strong_count(&db) > 1 {
                tracing::warn!("embedded store: readers still hold the database after shutdown");
            }
        }
        tracing::info!(path = %self.inner.path.display(), "embedded store closed");
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "embedded"
    }
}
