//! The single writer thread of the embedded store: group commit and online compaction.
//!
//! Every write is an [`Op`] sent to one OS thread. The thread takes all ops waiting in its queue,
//! applies them in order in one redb write transaction, appends the resulting writes to the
//! write-ahead log with one fdatasync ([`super::wal`]), commits the transaction without an fsync,
//! then answers each op and publishes the batch's events. Concurrent writers therefore share
//! fsyncs, and no write is answered before it is on disk. A periodic checkpoint makes redb itself
//! durable and empties the log.
//!
//! Compaction has two halves. [`Op::Compact`] durably records the new compacted revision in the
//! same kind of batch (readers refuse older revisions from then on). The physical clean-up then
//! runs in small chunks, each its own non-durable transaction, only while no write is waiting, so
//! it never holds the write lock for more than a chunk. A crash loses at most the clean-up
//! progress since the last durable commit, which the next start redoes.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::oneshot;

use super::codec::{self, rev_key};
use super::tables::{self, LOG, META, REVS};
use super::wal::{self, Wal};
use super::{EmbeddedError, Shared};
use crate::store::{Deleted, Error, Event, EventKind, KeyValue, Result, Revision};

/// Log entries cleaned up per compaction chunk (one short transaction).
const COMPACT_CHUNK: usize = 256;
/// A checkpoint happens at least this often under load...
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// ...when the write-ahead log grows past this...
const CHECKPOINT_BYTES: u64 = 64 << 20;
/// ...and after this long without writes.
const CHECKPOINT_IDLE: Duration = Duration::from_secs(1);

/// One request to the writer thread.
pub(super) enum Op {
    Create {
        key: String,
        value: Bytes,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
        reply: oneshot::Sender<Result<Deleted>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// An answer held back until the batch is durable.
enum Pending {
    Kv(oneshot::Sender<Result<KeyValue>>, Result<KeyValue>),
    Deleted(oneshot::Sender<Result<Deleted>>, Result<Deleted>),
    Unit(oneshot::Sender<Result<()>>, Result<()>),
}

impl Pending {
    /// Sends the answer, turning a success into `failure` when the batch did not commit.
    fn answer(self, failure: Option<&str>) {
        let fail = |ok: bool| -> Option<Error> {
            match (ok, failure) {
                (true, Some(reason)) => Some(Error::Unavailable {
                    reason: format!("commit failed: {reason}"),
                }),
                _ => None,
            }
        };
        // A caller that went away does not need its answer; ignoring the send error is right.
        match self {
            Pending::Kv(tx, r) => {
                let _ = tx.send(match fail(r.is_ok()) {
                    Some(e) => Err(e),
                    None => r,
                });
            }
            Pending::Deleted(tx, r) => {
                let _ = tx.send(match fail(r.is_ok()) {
                    Some(e) => Err(e),
                    None => r,
                });
            }
            Pending::Unit(tx, r) => {
                let _ = tx.send(match fail(r.is_ok()) {
                    Some(e) => Err(e),
                    None => r,
                });
            }
        }
    }
}

/// The writer thread's state.
pub(super) struct Writer {
    db: Arc<Database>,
    shared: Arc<Shared>,
    ops: Receiver<Op>,
    max_batch: usize,
    /// The last committed revision.
    revision: Revision,
    /// The compacted revision (durable).
    compacted: Revision,
    /// Log entries below this revision are cleaned up.
    cleaned: Revision,
    /// Non-durable commits are waiting for a checkpoint.
    unsynced: bool,
    wal: Wal,
    last_checkpoint: Instant,
}

impl Writer {
    pub(super) fn new(
        db: Arc<Database>,
        shared: Arc<Shared>,
        ops: Receiver<Op>,
        max_batch: usize,
        state: tables::MetaState,
        wal: Wal,
    ) -> Self {
        Writer {
            db,
            shared,
            ops,
            max_batch,
            revision: state.revision,
            compacted: state.compacted,
            cleaned: state.cleaned,
            unsynced: false,
            wal,
            last_checkpoint: Instant::now(),
        }
    }

    /// Runs until a [`Op::Shutdown`] arrives or every sender is gone.
    pub(super) fn run(mut self) {
        self.run_loop();
        self.shared.close();
    }

    fn run_loop(&mut self) {
        loop {
            let first = if self.cleaned < self.compacted {
                match self.ops.try_recv() {
                    Ok(op) => op,
                    Err(TryRecvError::Empty) => {
                        if let Err(e) = self.compact_chunk() {
                            tracing::error!(error = %e, "embedded store: compaction chunk failed");
                            // Leave the rest for the next compaction rather than spin on it.
                            self.cleaned = self.compacted;
                        }
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            } else if self.unsynced {
                match self.ops.recv_timeout(CHECKPOINT_IDLE) {
                    Ok(op) => op,
                    Err(RecvTimeoutError::Timeout) => {
                        self.checkpoint_logged();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.ops.recv() {
                    Ok(op) => op,
                    Err(_) => break,
                }
            };
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match self.ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if self.commit_batch(batch) {
                return;
            }
            if self.unsynced
                && (self.wal.size() > CHECKPOINT_BYTES
                    || self.last_checkpoint.elapsed() > CHECKPOINT_EVERY)
            {
                self.checkpoint_logged();
            }
        }
        self.checkpoint_logged();
    }

    /// Applies and commits one batch; answers every op. Returns true on shutdown.
    fn commit_batch(&mut self, batch: Vec<Op>) -> bool {
        let mut shutdown = Vec::new();
        let mut pending = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let outcome = self.apply(batch, &mut pending, &mut events, &mut shutdown);
        match outcome {
            Ok((revision, compacted)) => {
                self.revision = revision;
                if compacted > self.compacted {
                    self.compacted = compacted;
                    self.shared.compacted.store(compacted, Ordering::SeqCst);
                }
                self.shared.current.store(revision, Ordering::SeqCst);
                if !events.is_empty() {
                    self.shared.publish(events);
                }
                for p in pending {
                    p.answer(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded store: write batch failed");
                let reason = e.to_string();
                for p in pending {
                    p.answer(Some(&reason));
                }
            }
        }
        let stop = !shutdown.is_empty();
        if stop {
            self.checkpoint_logged();
        }
        for tx in shutdown {
            let _ = tx.send(());
        }
        stop
    }

    /// Applies a batch in one durable transaction; returns the new revision and compacted
    /// revision. Ops after a shutdown in the same batch are still applied: they were sent first.
    fn apply(
        &mut self,
        batch: Vec<Op>,
        pending: &mut Vec<Pending>,
        events: &mut Vec<Event>,
        shutdown: &mut Vec<oneshot::Sender<()>>,
    ) -> Result<(Revision, Revision), EmbeddedError> {
        let mut txn = self.db.begin_write()?;
        txn.set_quick_repair(std::env::var("QR").is_ok());
        if std::env::var("NOSYNC").is_ok() {
            txn.set_durability(Durability::None)?;
        }
        let mut rev = self.revision;
        let mut compacted = self.compacted;
        {
            let mut revs = txn.open_table(REVS)?;
            let mut log = txn.open_table(LOG)?;
            for op in batch {
                match op {
                    Op::Create { key, value, reply } => {
                        let r = create(&mut revs, &mut log, &mut rev, &key, value, events)?;
                        pending.push(Pending::Kv(reply, r));
                    }
                    Op::Update {
                        key,
                        value,
                        expected,
                        reply,
                    } => {
                        let r =
                            update(&mut revs, &mut log, &mut rev, &key, value, expected, events)?;
                        pending.push(Pending::Kv(reply, r));
                    }
                    Op::Delete {
                        key,
                        expected,
                        reply,
                    } => {
                        let r = delete(&mut revs, &mut log, &mut rev, &key, expected, events)?;
                        pending.push(Pending::Deleted(reply, r));
                    }
                    Op::Compact { revision, reply } => {
                        let r = if revision <= compacted {
                            Err(Error::Compacted {
                                requested: revision,
                                compacted,
                            })
                        } else if revision > rev {
                            Err(Error::FutureRevision {
                                requested: revision,
                                current: rev,
                            })
                        } else {
                            compacted = revision;
                            Ok(())
                        };
                        pending.push(Pending::Unit(reply, r));
                    }
                    Op::Shutdown { reply } => shutdown.push(reply),
                }
            }
        }
        if rev == self.revision && compacted == self.compacted {
            // Nothing changed (every op failed its guard): nothing to log or commit.
            txn.abort()?;
            return Ok((rev, compacted));
        }
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(tables::META_REVISION, rev as u64)?;
            meta.insert(tables::META_COMPACTED, compacted as u64)?;
        }
        let batch = wal::Batch {
            revision: rev,
            compacted,
            entries: events.iter().map(wal_entry).collect(),
        };
        // Durable in the log before it is visible to anyone; on failure the txn is dropped.
        self.wal.append(&batch).map_err(|source| EmbeddedError::Wal {
            path: self.wal.path().to_path_buf(),
            source,
        })?;
        txn.commit()?;
        self.unsynced = true;
        Ok((rev, compacted))
    }

    /// Makes redb durable and empties the log, logging a failure (the log still holds the data).
    fn checkpoint_logged(&mut self) {
        if !self.unsynced {
            return;
        }
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "embedded store: checkpoint failed; the write-ahead log keeps the data");
        }
    }

    fn checkpoint(&mut self) -> Result<(), EmbeddedError> {
        let mut txn = self.db.begin_write()?;
        txn.set_quick_repair(true);
        txn.commit()?;
        self.wal.reset().map_err(|source| EmbeddedError::Wal {
            path: self.wal.path().to_path_buf(),
            source,
        })?;
        self.unsynced = false;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Cleans up one chunk of history below the compacted revision, without an fsync.
    fn compact_chunk(&mut self) -> Result<(), EmbeddedError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        let last = compact_chunk_in(&txn, self.cleaned, self.compacted)?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(tables::META_CLEANED, last as u64)?;
        }
        txn.commit()?;
        self.cleaned = last;
        self.unsynced = true;
        Ok(())
    }
}

/// Cleans the log entries in `(cleaned, compacted)`, at most [`COMPACT_CHUNK`] of them: each
/// key's revisions older than a logged one are dropped, and so is a logged tombstone. Returns the
/// revision below which everything is clean.
fn compact_chunk_in(
    txn: &WriteTransaction,
    cleaned: Revision,
    compacted: Revision,
) -> Result<Revision, EmbeddedError> {
    let mut revs = txn.open_table(REVS)?;
    let mut log = txn.open_table(LOG)?;
    let lo = (cleaned.max(0)) as u64;
    let hi = compacted as u64;
    let entries: Vec<(u64, Vec<u8>)> = {
        let mut out = Vec::with_capacity(COMPACT_CHUNK);
        for item in log.range(lo..hi)?.take(COMPACT_CHUNK) {
            let (r, k) = item?;
            out.push((r.value(), k.value().to_vec()));
        }
        out
    };
    let last = match entries.last() {
        Some((r, _)) if entries.len() == COMPACT_CHUNK => *r as Revision + 1,
        _ => compacted,
    };
    for (r, key) in &entries {
        let rev = *r as Revision;
        let from = rev_key(key, 0);
        let to = rev_key(key, rev);
        revs.retain_in(from.as_slice()..to.as_slice(), |_, _| false)?;
        let tomb = match revs.get(to.as_slice())? {
            Some(raw) => codec::is_tombstone(raw.value()),
            None => false,
        };
        if tomb {
            revs.remove(to.as_slice())?;
        }
        log.remove(*r)?;
    }
    Ok(last)
}

/// The latest record of `key` at or below `rev`: its revision and decoded record.
pub(super) fn latest_at(
    revs: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
    rev: Revision,
) -> Result<Option<(Revision, codec::Record)>, EmbeddedError> {
    let lo = rev_key(key, 0);
    let hi = rev_key(key, rev);
    let mut range = revs.range(lo.as_slice()..=hi.as_slice())?;
    match range.next_back() {
        Some(item) => {
            let (k, v) = item?;
            let (_, r) = codec::split_rev_key(k.value()).ok_or(EmbeddedError::Corrupt {
                what: "history key",
            })?;
            let rec = codec::decode(v.value()).ok_or(EmbeddedError::Corrupt {
                what: "history record",
            })?;
            Ok(Some((r, rec)))
        }
        None => Ok(None),
    }
}

type RevTable<'t> = Table<'t, &'static [u8], &'static [u8]>;
type LogTable<'t> = Table<'t, u64, &'static [u8]>;

/// The live value of `key` in the write transaction, if any.
fn live(revs: &RevTable<'_>, key: &str) -> Result<Option<KeyValue>, EmbeddedError> {
    Ok(latest_at(revs, key.as_bytes(), Revision::MAX)?
        .and_then(|(r, rec)| rec.into_kv(key.as_bytes(), r)))
}

fn put(
    revs: &mut RevTable<'_>,
    log: &mut LogTable<'_>,
    rev: &mut Revision,
    key: &str,
    value: Bytes,
    prev: Option<KeyValue>,
    events: &mut Vec<Event>,
) -> Result<KeyValue, EmbeddedError> {
    *rev += 1;
    let (create, version) = match &prev {
        Some(p) => (p.create_revision, p.version + 1),
        None => (*rev, 1),
    };
    revs.insert(
        rev_key(key.as_bytes(), *rev).as_slice(),
        codec::encode_put(create, version, &value).as_slice(),
    )?;
    log.insert(*rev as u64, key.as_bytes())?;
    let kv = KeyValue {
        key: key.to_string(),
        value,
        create_revision: create,
        mod_revision: *rev,
        version,
    };
    events.push(Event {
        kind: EventKind::Put,
        kv: kv.clone(),
        prev,
    });
    Ok(kv)
}

fn create(
    revs: &mut RevTable<'_>,
    log: &mut LogTable<'_>,
    rev: &mut Revision,
    key: &str,
    value: Bytes,
    events: &mut Vec<Event>,
) -> Result<Result<KeyValue>, EmbeddedError> {
    if live(revs, key)?.is_some() {
        return Ok(Err(Error::AlreadyExists {
            key: key.to_string(),
        }));
    }
    Ok(Ok(put(revs, log, rev, key, value, None, events)?))
}

fn update(
    revs: &mut RevTable<'_>,
    log: &mut LogTable<'_>,
    rev: &mut Revision,
    key: &str,
    value: Bytes,
    expected: Revision,
    events: &mut Vec<Event>,
) -> Result<Result<KeyValue>, EmbeddedError> {
    let Some(cur) = live(revs, key)? else {
        return Ok(Err(Error::NotFound {
            key: key.to_string(),
        }));
    };
    if cur.mod_revision != expected {
        return Ok(Err(Error::Conflict {
            key: key.to_string(),
            expected,
            current: Some(Box::new(cur)),
        }));
    }
    Ok(Ok(put(revs, log, rev, key, value, Some(cur), events)?))
}

fn delete(
    revs: &mut RevTable<'_>,
    log: &mut LogTable<'_>,
    rev: &mut Revision,
    key: &str,
    expected: Option<Revision>,
    events: &mut Vec<Event>,
) -> Result<Result<Deleted>, EmbeddedError> {
    let Some(cur) = live(revs, key)? else {
        return Ok(Err(Error::NotFound {
            key: key.to_string(),
        }));
    };
    if let Some(expected) = expected {
        if cur.mod_revision != expected {
            return Ok(Err(Error::Conflict {
                key: key.to_string(),
                expected,
                current: Some(Box::new(cur)),
            }));
        }
    }
    *rev += 1;
    revs.insert(
        rev_key(key.as_bytes(), *rev).as_slice(),
        codec::encode_tombstone().as_slice(),
    )?;
    log.insert(*rev as u64, key.as_bytes())?;
    events.push(Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: key.to_string(),
            value: Bytes::new(),
            create_revision: 0,
            mod_revision: *rev,
            version: 0,
        },
        prev: Some(cur.clone()),
    });
    Ok(Ok(Deleted {
        prev: cur,
        revision: *rev,
    }))
}

/// The log entry of a committed event.
fn wal_entry(e: &Event) -> wal::Entry {
    let record = match e.kind {
        EventKind::Put => codec::encode_put(e.kv.create_revision, e.kv.version, &e.kv.value),
        EventKind::Delete => codec::encode_tombstone(),
    };
    wal::Entry {
        rev: e.kv.mod_revision,
        key: e.kv.key.as_bytes().to_vec(),
        record,
    }
}
