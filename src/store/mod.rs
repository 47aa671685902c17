//! The storage layer: one [`Store`] trait with etcd v3 semantics and its backends.
//!
//! The API server's resourceVersion and its watch protocol are defined by etcd's model, so every
//! backend speaks it: a single global revision that every successful write bumps by one; reads
//! at the latest or at a past revision; writes guarded by a `mod_revision` compare; watches that
//! replay history from a revision and carry the previous value; and compaction, which forgets
//! history below a revision (reads and watches below it fail with [`Error::Compacted`]).
//!
//! Only the API server touches a `Store`. Backends: [`embedded`] (redb on local disk, the
//! default) and `etcd` (feature `etcd`). [`watch_cache`] sits in front of either.

pub mod compactor;
pub mod embedded;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod keys;
pub mod metered;
pub mod watch_cache;

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// A store revision (etcd's `revision`, the API's resourceVersion). Starts at 1 once written.
pub type Revision = i64;

/// The default largest value a store accepts: etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1536 * 1024;

/// Errors every backend reports in the same shape, so the API server maps them once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key does not exist (at the revision asked for).
    #[error("key {key} not found")]
    NotFound { key: String },
    /// A create found the key already present.
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    /// The key's mod_revision was not the one the write was guarded by.
    #[error("key {key} was modified: expected revision {expected}, found {}", current.as_ref().map_or(0, |kv| kv.mod_revision))]
    Conflict {
        key: String,
        expected: Revision,
        /// The current value, so a caller can retry without another read; `None` if deleted.
        current: Option<Box<KeyValue>>,
    },
    /// The revision asked for is older than the compacted revision (HTTP 410 later).
    #[error("revision {requested} has been compacted; the oldest available is {compacted}")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The revision asked for has not been written yet.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The value is larger than the store accepts.
    #[error("value for key {key} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        key: String,
        size: usize,
        limit: usize,
    },
    /// The key cannot be stored (empty, or holds a NUL byte).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// The store cannot serve right now (shutting down, backend unreachable); retry later.
    #[error("store unavailable: {reason}")]
    Unavailable { reason: String },
    /// The backend failed in a way a retry will not fix.
    #[error("store backend failed while {context}: {source}")]
    Backend {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Wraps a backend error with what the store was doing.
    pub fn backend(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Backend {
            context,
            source: source.into(),
        }
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One key at one revision, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision of the write that created this incarnation of the key.
    pub create_revision: Revision,
    /// The revision of the write that produced this value.
    pub mod_revision: Revision,
    /// Writes to this incarnation so far (1 on create).
    pub version: i64,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .finish()
    }
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, as etcd's `mvccpb.Event` with `prev_kv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a delete: the key, an empty value and `mod_revision` = the deletion's revision.
    pub kv: KeyValue,
    /// The value before this event; `None` for a create.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this event happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }

    /// True if this put created the key.
    pub fn is_create(&self) -> bool {
        self.kind == EventKind::Put && self.prev.is_none()
    }
}

/// A range read over the keys under a prefix.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    /// Only keys starting with this prefix.
    pub prefix: String,
    /// Start at this key (inclusive) instead of at the prefix: the continuation of a paged list.
    pub start: Option<String>,
    /// Read at this revision; 0 reads at the latest.
    pub revision: Revision,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
    /// Count the keys past `limit` too, as etcd's `count` does. Without it a backend may stop
    /// reading at the first key past the limit (the embedded store then reads a page of a
    /// large range, not all of it), and `count` covers only the keys it read.
    pub count_all: bool,
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, Default)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// The revision the range was read at.
    pub revision: Revision,
    /// More keys follow the last one returned.
    pub more: bool,
    /// Keys in the whole range from `start`, returned or not.
    pub count: i64,
}

/// The result of a delete: the value that was removed and the deletion's revision.
#[derive(Clone, Debug)]
pub struct Deleted {
    pub prev: KeyValue,
    pub revision: Revision,
}

/// A stream of event batches in revision order. A batch never splits a revision. The stream
/// ends with an error (e.g. [`Error::Compacted`] or [`Error::Unavailable`]) or when the store
/// shuts down.
pub type WatchStream = BoxStream<'static, Result<Vec<Event>>>;

/// The store every backend implements (etcd v3 semantics; see the module docs).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value of `key` at `revision` (0 = latest); `None` if absent.
    async fn get(&self, key: &str, revision: Revision) -> Result<Option<KeyValue>>;

    /// The keys under a prefix, in key order.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;

    /// Creates `key` if it is absent; [`Error::AlreadyExists`] otherwise.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replaces `key` if its mod_revision is `expected`; [`Error::Conflict`] or
    /// [`Error::NotFound`] otherwise.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Deletes `key`, guarded by its mod_revision when `expected` is given.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted>;

    /// Events under `prefix` from `start_revision` on (inclusive); 0 means "from now".
    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream>;

    /// The latest revision (a linearizable read).
    async fn current_revision(&self) -> Result<Revision>;

    /// Forgets history below `revision`: reads and watches before it fail with
    /// [`Error::Compacted`]; the latest value of every key at `revision` is kept.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The revision of the last compaction (0 if none).
    async fn compacted_revision(&self) -> Result<Revision>;

    /// Stops taking writes, makes everything acknowledged durable and releases the backend.
    async fn shutdown(&self) -> Result<()>;

    /// A short name for logs and metrics: `embedded` or `etcd`.
    fn backend_name(&self) -> &'static str;

    /// Whether `key` must be written again even if its object did not change (a decorator's
    /// stored form is out of date, e.g. encrypted with a rotated-out key).
    async fn needs_rewrite(&self, _key: &str) -> bool {
        false
    }
}

/// Rejects keys no backend can hold the same way.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            key: key.to_string(),
            reason: "empty",
        });
    }
    if key.as_bytes().contains(&0) {
        return Err(Error::InvalidKey {
            key: key.to_string(),
            reason: "holds a NUL byte",
        });
    }
    Ok(())
}

/// Rejects values over `limit` bytes.
pub(crate) fn check_size(key: &str, value: &[u8], limit: usize) -> Result<()> {
    if value.len() > limit {
        return Err(Error::TooLarge {
            key: key.to_string(),
            size: value.len(),
            limit,
        });
    }
    Ok(())
}
