//! The single writer thread of the embedded store: group commit, flushes and compaction.
//!
//! Every write is an [`Op`] sent to one OS thread. The thread takes all ops waiting in its queue,
//! applies them in order against the unflushed writes and a redb snapshot, appends the batch's
//! writes to the write-ahead log with one fdatasync ([`super::wal`]), then publishes them in the
//! overlay ([`super::overlay`]), answers each op and broadcasts the events. Concurrent writers
//! thus share an fsync, and nothing is visible or acknowledged before it is on disk.
//!
//! Every few hundred milliseconds (or when idle, or past a size) the writer seals the log segment
//! and hands the generation of unflushed writes to the flusher thread ([`super::flusher`]), which
//! writes it into redb durably while the writer goes on; readers see the generation in the overlay
//! until redb has it. Compaction is recorded by [`Op::Compact`] like any write; the flusher does
//! the physical clean-up.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, ReadOnlyTable, ReadableDatabase};
use tokio::sync::oneshot;

use super::codec::{self, rev_key};
use super::flusher::{Done, Job};
use super::overlay::{Frozen, Mirror, Overlay};
use super::tables::{self, MetaState, REVS};
use super::wal::{self, Wal};
use super::{EmbeddedError, Shared};
use crate::store::{Deleted, Error, Event, EventKind, KeyValue, Result, Revision};

/// Flush at least this often while writes keep coming...
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// ...or once this many writes or log bytes wait...
const FLUSH_WRITES: usize = 16_384;
const FLUSH_BYTES: u64 = 64 << 20;
/// ...or after this long without writes.
const FLUSH_IDLE: Duration = Duration::from_millis(20);
/// Unflushed writes beyond this many times the flush size make the writer wait for the flusher.
const BACKPRESSURE: usize = 4;

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

/// Writes logged since the last hand-over to the flusher.
#[derive(Default)]
struct Generation {
    parts: Vec<Arc<Frozen>>,
    mirror: Mirror,
    started: Option<Instant>,
    /// Something was logged (writes or a compaction).
    changed: bool,
}

/// The flusher thread, from the writer's side.
pub(super) struct FlusherHandle {
    pub jobs: Sender<Job>,
    pub done: Receiver<Done>,
    pub thread: JoinHandle<()>,
}

/// The writer thread's state.
pub(super) struct Writer {
    db: Arc<Database>,
    shared: Arc<Shared>,
    ops: Receiver<Op>,
    max_batch: usize,
    meta: MetaState,
    wal: Wal,
    current: Generation,
    /// The generation the flusher is writing, still needed for lookups.
    in_flight: Option<Generation>,
    flusher: Option<FlusherHandle>,
}

impl Writer {
    pub(super) fn new(
        db: Arc<Database>,
        shared: Arc<Shared>,
        ops: Receiver<Op>,
        max_batch: usize,
        meta: MetaState,
        wal: Wal,
        flusher: FlusherHandle,
    ) -> Self {
        Writer {
            db,
            shared,
            ops,
            max_batch,
            meta,
            wal,
            current: Generation::default(),
            in_flight: None,
            flusher: Some(flusher),
        }
    }

    /// Runs until a [`Op::Shutdown`] arrives or every sender is gone, then flushes everything.
    pub(super) fn run(mut self) {
        self.run_loop();
        self.finish();
        self.shared.close();
    }

    fn run_loop(&mut self) {
        loop {
            self.poll_done();
            let first = if self.current.changed || self.in_flight.is_some() {
                match self.ops.recv_timeout(FLUSH_IDLE) {
                    Ok(op) => op,
                    Err(RecvTimeoutError::Timeout) => {
                        self.maybe_flush(true);
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
            self.poll_done();
            self.maybe_flush(false);
        }
    }

    /// Hands the current generation to the flusher when it is due, and pushes back on writers
    /// when the flusher falls far behind.
    fn maybe_flush(&mut self, idle: bool) {
        let size = self.current.mirror.log.len();
        if self.in_flight.is_some() {
            if size >= FLUSH_WRITES * BACKPRESSURE
                || self.wal.size() >= FLUSH_BYTES * BACKPRESSURE as u64
            {
                self.wait_done();
            } else {
                return;
            }
        }
        if !self.current.changed {
            return;
        }
        let due = self
            .current
            .started
            .is_some_and(|t| t.elapsed() >= FLUSH_EVERY);
        if idle || due || size >= FLUSH_WRITES || self.wal.size() >= FLUSH_BYTES {
            self.start_flush();
        }
    }

    fn start_flush(&mut self) {
        let Some(flusher) = &self.flusher else {
            return;
        };
        let segment = match self.wal.rotate() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "embedded store: cannot start a new log segment; flush postponed");
                return;
            }
        };
        let job = Job::Flush {
            parts: self.current.parts.clone(),
            meta: self.meta,
            segment,
        };
        self.shared.flush_pending.store(true, Ordering::SeqCst);
        if flusher.jobs.send(job).is_err() {
            tracing::error!("embedded store: the flusher thread has stopped");
            return;
        }
        self.in_flight = Some(std::mem::take(&mut self.current));
    }

    fn poll_done(&mut self) {
        let done = match &self.flusher {
            Some(f) => f.done.try_recv().ok(),
            None => None,
        };
        if let Some(done) = done {
            self.handle_done(done);
        }
    }

    fn wait_done(&mut self) {
        if self.in_flight.is_none() {
            return;
        }
        let done = match &self.flusher {
            Some(f) => f.done.recv().ok(),
            None => None,
        };
        match done {
            Some(done) => self.handle_done(done),
            None => {
                tracing::error!("embedded store: the flusher thread has stopped");
                self.requeue_in_flight();
            }
        }
    }

    fn handle_done(&mut self, done: Done) {
        match done.result {
            Ok(()) => {
                if let Err(e) = self.wal.remove_through(done.segment) {
                    tracing::warn!(error = %e, "embedded store: removing flushed log segments");
                }
                self.in_flight = None;
                self.publish_overlay();
            }
            Err(_) => self.requeue_in_flight(),
        }
    }

    /// A failed flush: its writes go back in front of the current generation for the next try.
    fn requeue_in_flight(&mut self) {
        if let Some(mut gen) = self.in_flight.take() {
            gen.parts.append(&mut self.current.parts);
            gen.mirror.revs.append(&mut self.current.mirror.revs);
            gen.mirror.log.append(&mut self.current.mirror.log);
            gen.changed = true;
            self.current = gen;
        }
    }

    fn publish_overlay(&self) {
        let mut parts: Vec<Arc<Frozen>> = Vec::new();
        if let Some(gen) = &self.in_flight {
            parts.extend(gen.parts.iter().cloned());
        }
        parts.extend(self.current.parts.iter().cloned());
        self.shared.set_overlay(Overlay {
            parts,
            meta: self.meta,
        });
    }

    /// Flushes everything and stops the flusher.
    fn finish(&mut self) {
        self.wait_done();
        if self.current.changed {
            self.start_flush();
            self.wait_done();
        }
        if let Some(f) = self.flusher.take() {
            let _ = f.jobs.send(Job::Stop);
            drop(f.jobs);
            if f.thread.join().is_err() {
                tracing::error!("embedded store: the flusher thread panicked");
            }
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
            self.finish();
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
            mirrors: [
                Some(&self.current.mirror),
                self.in_flight.as_ref().map(|g| &g.mirror),
            ],
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
            self.current.mirror.revs.insert(k.clone(), v.clone());
        }
        self.current.mirror.log.extend(part.log.iter().cloned());
        self.current.started.get_or_insert_with(Instant::now);
        self.current.changed = true;
        self.current.parts.push(Arc::new(part));
        self.publish_overlay();
        Ok(events)
    }
}

/// One batch being decided: reads see the batch's own writes, then the unflushed ones, then
/// redb.
struct Stage<'a> {
    disk: &'a ReadOnlyTable<&'static [u8], &'static [u8]>,
    /// The current generation, then the one being flushed.
    mirrors: [Option<&'a Mirror>; 2],
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
        let found = match staged.or_else(|| self.mirrors.iter().flatten().find_map(|m| m.latest(k)))
        {
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
