//! The in-memory overlay: writes that are durable in the write-ahead log but not yet in redb.
//!
//! The writer appends each committed batch as an immutable [`Frozen`] part and publishes a new
//! [`Overlay`] (cheap: a vector of `Arc`s); readers take the published overlay together with a
//! redb snapshot and read through both, the overlay winning. A flush writes the overlay into
//! redb and then publishes an empty one, so a reader sees either the old snapshot with the full
//! overlay, or the new snapshot with either overlay; both hold every write.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::codec::{self, rev_key};
use super::tables::MetaState;
use crate::store::Revision;

/// One committed batch, as readers see it.
#[derive(Debug, Default)]
pub struct Frozen {
    /// Composite `revs` key -> record.
    pub revs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Revision -> key, in revision order.
    pub log: Vec<(Revision, Vec<u8>)>,
}

/// Everything not yet flushed to redb, plus the metadata as of the last batch.
#[derive(Debug, Default, Clone)]
pub struct Overlay {
    pub parts: Vec<Arc<Frozen>>,
    pub meta: MetaState,
}

impl Overlay {
    /// The latest record of `key` at or below `rev` held in the overlay.
    pub fn latest_at(&self, key: &[u8], rev: Revision) -> Option<(Revision, &[u8])> {
        let lo = rev_key(key, 0);
        let hi = rev_key(key, rev);
        for part in self.parts.iter().rev() {
            if let Some((k, v)) = part.revs.range(lo.clone()..=hi.clone()).next_back() {
                let (_, r) = codec::split_rev_key(k)?;
                return Some((r, v.as_slice()));
            }
        }
        None
    }

    /// The record of `key` at exactly `rev`, if the overlay holds it.
    pub fn record(&self, key: &[u8], rev: Revision) -> Option<&[u8]> {
        let k = rev_key(key, rev);
        self.parts
            .iter()
            .rev()
            .find_map(|p| p.revs.get(&k).map(Vec::as_slice))
    }

    /// Overlay entries with composite keys in `[lo, hi)` (`hi` empty = no end), in order.
    pub fn entries_in(&self, lo: &[u8], hi: &[u8]) -> BTreeMap<Vec<u8>, &[u8]> {
        let mut out = BTreeMap::new();
        for part in &self.parts {
            let iter: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>> = if hi.is_empty() {
                Box::new(part.revs.range(lo.to_vec()..))
            } else {
                Box::new(part.revs.range(lo.to_vec()..hi.to_vec()))
            };
            for (k, v) in iter {
                out.insert(k.clone(), v.as_slice());
            }
        }
        out
    }

    /// Log entries with revisions in `from..=to`, in order.
    pub fn log_range(
        &self,
        from: Revision,
        to: Revision,
    ) -> impl Iterator<Item = &(Revision, Vec<u8>)> {
        self.parts
            .iter()
            .flat_map(|p| p.log.iter())
            .filter(move |(r, _)| *r >= from && *r <= to)
    }

    /// The oldest revision the overlay holds, if any.
    pub fn first_revision(&self) -> Option<Revision> {
        self.parts
            .iter()
            .find_map(|p| p.log.first().map(|(r, _)| *r))
    }
}

/// The writer's own view of the unflushed writes: one map for fast lookups.
#[derive(Debug, Default)]
pub struct Mirror {
    pub revs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub log: Vec<(Revision, Vec<u8>)>,
}

impl Mirror {
    /// The latest record of `key` (any revision) held here.
    pub fn latest(&self, key: &[u8]) -> Option<(Revision, &[u8])> {
        let lo = rev_key(key, 0);
        let hi = rev_key(key, Revision::MAX);
        let (k, v) = self.revs.range(lo..=hi).next_back()?;
        let (_, r) = codec::split_rev_key(k)?;
        Some((r, v.as_slice()))
    }
}
