//! The flusher thread: the only writer of redb.
//!
//! It takes generations of logged writes from the writer thread and writes each into redb in one
//! durable transaction, then reports back so the writer can drop them from memory and delete
//! their log segments. Between flushes it cleans up compacted history in short non-durable
//! chunks. The writer thread never waits for either, so neither a large flush nor a compaction
//! holds up a write.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability};

use super::overlay::Frozen;
use super::tables::{self, MetaState, LOG, META, REVS};
use super::{compact, EmbeddedError, Shared};
use crate::store::Revision;

/// How often an idle flusher looks for compaction work.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// Work for the flusher.
pub(super) enum Job {
    /// Write these parts (revisions up to `meta.revision`) durably; `segment` is the last log
    /// segment they were logged in.
    Flush {
        parts: Vec<Arc<Frozen>>,
        meta: MetaState,
        segment: u64,
    },
    /// Make everything durable and stop.
    Stop,
}

/// A finished flush.
pub(super) struct Done {
    pub segment: u64,
    pub result: Result<(), String>,
}

pub(super) struct Flusher {
    pub db: Arc<Database>,
    pub shared: Arc<Shared>,
    pub jobs: Receiver<Job>,
    pub done: Sender<Done>,
    /// What redb holds durably (plus non-durable clean-up progress).
    pub meta: MetaState,
    pub unsynced: bool,
}

impl Flusher {
    pub(super) fn run(mut self) {
        loop {
            let job = match self.jobs.recv_timeout(IDLE_POLL) {
                Ok(job) => {
                    self.shared.flush_pending.store(false, Ordering::SeqCst);
                    job
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.idle_work();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match job {
                Job::Flush {
                    parts,
                    meta,
                    segment,
                } => {
                    let result = self.flush(&parts, meta).map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "embedded store: flush failed; the write-ahead log keeps the data");
                    }
                    if self.done.send(Done { segment, result }).is_err() {
                        break;
                    }
                }
                Job::Stop => break,
            }
        }
        if self.unsynced {
            if let Err(e) = self.sync() {
                tracing::warn!(error = %e, "embedded store: final sync failed");
            }
        }
    }

    /// Writes one generation into redb in a durable transaction.
    fn flush(&mut self, parts: &[Arc<Frozen>], meta: MetaState) -> Result<(), EmbeddedError> {
        let started = Instant::now();
        let mut writes = 0;
        let mut txn = self.db.begin_write()?;
        txn.set_quick_repair(true);
        {
            let mut revs = txn.open_table(REVS)?;
            let mut log = txn.open_table(LOG)?;
            for part in parts {
                for (k, v) in &part.revs {
                    revs.insert(k.as_slice(), v.as_slice())?;
                }
                for (r, k) in &part.log {
                    log.insert(*r as u64, k.as_slice())?;
                }
                writes += part.log.len();
            }
            let mut m = txn.open_table(META)?;
            m.insert(tables::META_REVISION, meta.revision as u64)?;
            m.insert(tables::META_COMPACTED, meta.compacted as u64)?;
            m.insert(tables::META_CLEANED, self.meta.cleaned as u64)?;
        }
        txn.commit()?;
        self.meta.revision = meta.revision;
        self.meta.compacted = self.meta.compacted.max(meta.compacted);
        self.unsynced = false;
        tracing::debug!(
            writes,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "embedded store: flushed"
        );
        Ok(())
    }

    /// The revision below which clean-up may work: compacted, and flushed into redb.
    fn clean_limit(&self) -> Revision {
        self.meta.compacted.min(self.meta.revision + 1)
    }

    /// Compaction chunks while there is clean-up to do; then a durable commit of the progress.
    fn idle_work(&mut self) {
        if self.meta.cleaned < self.clean_limit() {
            if let Err(e) = self.compact_chunk() {
                tracing::error!(error = %e, "embedded store: compaction chunk failed");
                // Leave the rest for the next compaction rather than spin on it.
                self.meta.cleaned = self.clean_limit();
            }
            // More chunks right away unless a job is waiting (checked by the caller's recv).
            while self.meta.cleaned < self.clean_limit() {
                match self.jobs_waiting() {
                    true => return,
                    false => {
                        if self.compact_chunk().is_err() {
                            self.meta.cleaned = self.clean_limit();
                        }
                    }
                }
            }
        } else if self.unsynced {
            if let Err(e) = self.sync() {
                tracing::warn!(error = %e, "embedded store: sync failed");
            }
        }
    }

    /// Whether a job is queued (peeked without taking it would need a different channel; a
    /// short chunk budget keeps this cheap instead).
    fn jobs_waiting(&self) -> bool {
        self.shared.flush_pending.load(Ordering::SeqCst)
    }

    /// Cleans up one chunk of history below the compacted revision, without an fsync.
    fn compact_chunk(&mut self) -> Result<(), EmbeddedError> {
        let started = Instant::now();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        let last = compact::chunk(&txn, self.meta.cleaned, self.clean_limit())?;
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

    /// A durable empty commit, making non-durable clean-up progress durable.
    fn sync(&mut self) -> Result<(), EmbeddedError> {
        let mut txn = self.db.begin_write()?;
        txn.set_quick_repair(true);
        txn.commit()?;
        self.unsynced = false;
        Ok(())
    }
}
