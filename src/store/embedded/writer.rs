//! The single writer thread of the embedded store: group commit, flushes and compaction.
//!
//! Every write is an [`Op`] sent to one OS thread. The thread takes all ops waiting in its queue,
//! applies them in order against the unflushed writes and a redb snapshot, appends the batch's
//! writes to the write-ahead log with one fdatasync ([`super::wal`]), then publishes them in the
//! overlay ([`super::overlay`]), answers each op and broadcasts the events. Concurrent writers
//! thus share an fsync, and nothing is visible or acknowledged before it is on disk.
//!
//! Every few hundred milliseconds (or when idle, or past a size) a flush writes the overlay into
//! redb in one durable transaction and empties the log: redb rewrites each hot B-tree page once
//! per flush rather than once per batch.
//!
//! Compaction: [`Op::Compact`] records the compacted revision like any write; the physical
//! clean-up runs in chunks ([`super::compact`]) while no write is waiting, each a short
//! non-durable redb transaction made durable by the next flush. A crash loses at most clean-up
//! progress, which the next start redoes.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase};
use tokio::sync::oneshot;

use super::codec::{self, rev_key};
use super::overlay::{Frozen, Mirror, Overlay};
use super::tables::{self, MetaState, LOG, META, REVS};
use super::wal::{self, Wal};
use super::{compact, EmbeddedError, Shared};
use crate::store::{Deleted, Error, Event, EventKind, KeyValue, Result, Revision};

/// Flush at least this often while writes keep coming...
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// ...or once this many writes or log bytes wait...
const FLUSH_WRITES: usize = 16_384;
const FLUSH_BYTES: u64 = 64 << 20;
/// ...or after this long without writes.
const FLUSH_IDLE: Duration = Duration::from_millis(20);

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

fn failed<T>(r: Result<T>, failure: Option<&str>) -> Result<T> {
    match (r, failure) {
        (Ok(_), Some(reason)) => Err(Error::Unavailable {
            reason: format!("write failed: {reason}"),
        }),
        (r, _) => r,
    }
}

impl Pending {
    /// Sends the answer, turning a success into a failure when the batch was not logged.
    /// A caller that went away does not need its answer, so send errors are ignored.
    fn answer(self, failure: Option<&str>) {
        match self {
            Pending::Kv(tx, r) => drop(tx.send(failed(r, failure))),
            Pending::Deleted(tx, r) => drop(tx.send(failed(r, failure))),
            Pending::Unit(tx, r) => drop(tx.send(failed(r, failure))),
        }
    }
}

/// The writer thread's state.
pub(super) struct Writer {
    db: Arc<Database>,
    shared: Arc<Shared>,
    ops: Receiver<Op>,
    max_batch: usize,
    meta: MetaState,
    wal: Wal,
    /// Writes logged but not flushed, for the writer's own lookups.
    mirror: Mirror,
    /// The same writes as published to readers.
    overlay: Overlay,
    first_unflushed: Option<Instant>,
    /// Non-durable compaction commits wait for a flush.
    unsynced: bool,
}

impl Writer {
    pub(super) fn new(
        db: Arc<Database>,
        shared: Arc<Shared>,
        ops: Receiver<Op>,
        max_batch: usize,
        meta: MetaState,
        wal: Wal,
    ) -> Self {
        Writer {
            db,
            shared,
            ops,
            max_batch,
            meta,
            wal,
            mirror: Mirror::default(),
            overlay: Overlay {
                parts: Vec::new(),
                meta,
            },
            first_unflushed: None,
            unsynced: false,
        }
    }

    /// Runs until a [`Op::Shutdown`] arrives or every sender is gone.
    pub(super) fn run(mut self) {
        self.run_loop();
        self.flush_logged();
        self.shared.close();
    }

    fn dirty(&self) -> bool {
        !self.mirror.is_empty() || self.unsynced
    }

    fn run_loop(&mut self) {
        loop {
            let first = if self.meta.cleaned < self.meta.compacted {
                match self.ops.try_recv() {
                    Ok(op) => op,
                    Err(TryRecvError::Empty) => {
                        self.compact_step();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => return,
                }
            } else if self.dirty() {
                match self.ops.recv_timeout(FLUSH_IDLE) {
                    Ok(op) => op,
                    Err(RecvTimeoutError::Timeout) => {
                        self.flush_logged();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match self.ops.recv() {
                    Ok(op) => op,
                    Err(_) => return,
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
            let due = self
                .first_unflushed
                .is_some_and(|t| t.elapsed() >= FLUSH_EVERY);
            if due || self.mirror.log.len() >= FLUSH_WRITES || self.wal.size() >= FLUSH_BYTES {
                self.flush_logged();
            }
        }
    }

    /// One compaction step: flush first (the clean-up works on redb alone), then one chunk.
    fn compact_step(&mut self) {
        if !self.mirror.is_empty() {
            self.flush_logged();
            if !self.mirror.is_empty() {
                return;
            }
        }
        if let Err(e) = self.compact_chunk() {
            tracing::error!(error = %e, "embedded store: compaction chunk failed");
            // Leave the rest for the next compaction rather than spin on it.
            self.meta.cleaned = self.meta.compacted;
        }
    }

    /// Applies, logs and publishes one batch; answers every op. Returns true on shutdown.
    fn commit_batch(&mut self, batch: Vec<Op>) -> bool {
        let mut shutdown = Vec::new();
        let mut pending = Vec::with_capacity(batch.len());
        match self.apply(batch, &mut pending, &mut shutdown) {
            Ok(events) => {
                self.shared
                    .current
                    .store(self.meta.revision, Ordering::SeqCst);
                self.shared
                    .compacted
                    .store(self.meta.compacted, Ordering::SeqCst);
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
            self.flush_logged();
        }
        for tx in shutdown {
            let _ = tx.send(());
        }
        stop
    }

    /// Applies a batch: decides each op against what is stored, logs the writes durably and
    /// publishes them. Returns the batch's events.
    fn apply(
        &mut self,
        batch: Vec<Op>,
        pending: &mut Vec<Pending>,
        shutdown: &mut Vec<oneshot::Sender<()>>,
    ) -> Result<Vec<Event>, EmbeddedError> {
        let rtxn = self.db.begin_read()?;
        let disk = rtxn.open_table(REVS)?;
        let mut stage = Stage {
            disk: &disk,
            mirror: &self.mirror,
            part: Frozen::default(),
            events: Vec::new(),
            rev: self.meta.revision,
        };
        let mut compacted = self.meta.compacted;
        for op in batch {
            match op {
                Op::Create { key, value, reply } => {
                    let r = stage.create(&key, value)?;
                    pending.push(Pending::Kv(reply, r));
                }
                Op::Update {
                    key,
                    value,
                    expected,
                    reply,
                } => {
                    let r = stage.update(&key, value, expected)?;
                    pending.push(Pending::Kv(reply, r));
                }
                Op::Delete {
                    key,
                    expected,
                    reply,
                } => {
                    let r = stage.delete(&key, expected)?;
                    pending.push(Pending::Deleted(reply, r));
                }
                Op::Compact { revision, reply } => {
                    let r = if revision <= compacted {
                        Err(Error::Compacted {
                            requested: revision,
                            compacted,
                        })
                    } else if revision > stage.rev {
                        Err(Error::FutureRevision {
                            requested: revision,
                            current: stage.rev,
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
        let Stage {
            part, events, rev, ..
        } = stage;
        if rev == self.meta.revision && compacted == self.meta.compacted {
            // Nothing changed (every op failed its guard): nothing to log.
            return Ok(events);
        }
        let logged = wal::Batch {
            revision: rev,
            compacted,
            entries: part
                .log
                .iter()
                .filter_map(|(r, k)| {
                    let record = part.revs.get(&rev_key(k, *r))?;
                    Some(wal::Entry {
                        rev: *r,
                        key: k.clone(),
                        record: record.clone(),
                    })
                })
                .collect(),
        };
        self.wal
            .append(&logged)
            .map_err(|source| EmbeddedError::Wal {
                path: self.wal.path().to_path_buf(),
                source,
            })?;
        // Durable: make it visible.
        self.meta.revision = rev;
        self.meta.compacted = compacted;
        for (k, v) in &part.revs {
            self.mirror.revs.insert(k.clone(), v.clone());
        }
        self.mirror.log.extend(part.log.iter().cloned());
        self.first_unflushed.get_or_insert_with(Instant::now);
        self.overlay.parts.push(Arc::new(part));
        self.overlay.meta = self.meta;
        self.shared.set_overlay(self.overlay.clone());
        Ok(events)
    }

    /// Flushes, logging a failure (the write-ahead log still holds the data).
    fn flush_logged(&mut self) {
        if !self.dirty() {
            return;
        }
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "embedded store: flush failed; the write-ahead log keeps the data");
        }
    }

    /// Writes the overlay into redb durably, empties the log and publishes an empty overlay.
    fn flush(&mut self) -> Result<(), EmbeddedError> {
        let started = Instant::now();
        let writes = self.mirror.log.len();
        let mut txn = self.db.begin_write()?;
        txn.set_quick_repair(true);
        {
            let mut revs = txn.open_table(REVS)?;
            for (k, v) in &self.mirror.revs {
                revs.insert(k.as_slice(), v.as_slice())?;
            }
            let mut log = txn.open_table(LOG)?;
            for (r, k) in &self.mirror.log {
                log.insert(*r as u64, k.as_slice())?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(tables::META_REVISION, self.meta.revision as u64)?;
            meta.insert(tables::META_COMPACTED, self.meta.compacted as u64)?;
            meta.insert(tables::META_CLEANED, self.meta.cleaned as u64)?;
        }
        txn.commit()?;
        self.wal.reset().map_err(|source| EmbeddedError::Wal {
            path: self.wal.path().to_path_buf(),
            source,
        })?;
        self.mirror = Mirror::default();
        self.overlay = Overlay {
            parts: Vec::new(),
            meta: self.meta,
        };
        self.shared.set_overlay(self.overlay.clone());
        self.first_unflushed = None;
        self.unsynced = false;
        tracing::debug!(
            writes,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "embedded store: flushed"
        );
        Ok(())
    }

    /// Cleans up one chunk of history below the compacted revision, without an fsync.
    fn compact_chunk(&mut self) -> Result<(), EmbeddedError> {
        let started = Instant::now();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        let last = compact::chunk(&txn, self.meta.cleaned, self.meta.compacted)?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(tables::META_CLEANED, last as u64)?;
        }
        txn.commit()?;
        tracing::trace!(
            from = self.meta.cleaned,
            to = last,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "embedded store: compaction chunk"
        );
        self.meta.cleaned = last;
        self.unsynced = true;
        Ok(())
    }
}

/// One batch being decided: reads see the batch's own writes, then the unflushed ones, then
/// redb.
struct Stage<'a> {
    disk: &'a ReadOnlyTable<&'static [u8], &'static [u8]>,
    mirror: &'a Mirror,
    part: Frozen,
    events: Vec<Event>,
    rev: Revision,
}

impl Stage<'_> {
    /// The live value of `key`, if any.
    fn live(&self, key: &str) -> Result<Option<KeyValue>, EmbeddedError> {
        let k = key.as_bytes();
        let lo = rev_key(k, 0);
        let hi = rev_key(k, Revision::MAX);
        let staged = self
            .part
            .revs
            .range(lo..=hi)
            .next_back()
            .and_then(|(ck, v)| Some((codec::split_rev_key(ck)?.1, v.as_slice())));
        let found = match staged.or_else(|| self.mirror.latest(k)) {
            Some((r, raw)) => Some((
                r,
                codec::decode(raw).ok_or(EmbeddedError::Corrupt {
                    what: "staged record",
                })?,
            )),
            None => tables::latest_at(self.disk, k, Revision::MAX)?,
        };
        Ok(found.and_then(|(r, rec)| rec.into_kv(k, r)))
    }

    fn put(&mut self, key: &str, value: Bytes, prev: Option<KeyValue>) -> KeyValue {
        self.rev += 1;
        let (create, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (self.rev, 1),
        };
        self.part.revs.insert(
            rev_key(key.as_bytes(), self.rev),
            codec::encode_put(create, version, &value),
        );
        self.part.log.push((self.rev, key.as_bytes().to_vec()));
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision: create,
            mod_revision: self.rev,
            version,
        };
        self.events.push(Event {
            kind: EventKind::Put,
            kv: kv.clone(),
            prev,
        });
        kv
    }

    fn create(&mut self, key: &str, value: Bytes) -> Result<Result<KeyValue>, EmbeddedError> {
        if self.live(key)?.is_some() {
            return Ok(Err(Error::AlreadyExists {
                key: key.to_string(),
            }));
        }
        Ok(Ok(self.put(key, value, None)))
    }

    fn update(
        &mut self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Result<KeyValue>, EmbeddedError> {
        let Some(cur) = self.live(key)? else {
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
        Ok(Ok(self.put(key, value, Some(cur))))
    }

    fn delete(
        &mut self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<Result<Deleted>, EmbeddedError> {
        let Some(cur) = self.live(key)? else {
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
        self.rev += 1;
        self.part
            .revs
            .insert(rev_key(key.as_bytes(), self.rev), codec::encode_tombstone());
        self.part.log.push((self.rev, key.as_bytes().to_vec()));
        self.events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_string(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: self.rev,
                version: 0,
            },
            prev: Some(cur.clone()),
        });
        Ok(Ok(Deleted {
            prev: cur,
            revision: self.rev,
        }))
    }
}
