//! The embedded store's redb tables and the metadata it keeps beside them.
//!
//! - `revs`: composite `KEY 0 REV` -> record (see [`super::codec`]): every live revision of
//!   every key, plus tombstones, until compaction drops what is superseded.
//! - `log`: revision -> key: the order of writes, replayed by watches, walked by compaction.
//! - `meta`: the current revision, the compacted revision and the clean-up progress.

use redb::{Database, ReadableTable, TableDefinition};

use super::codec;

use super::codec::rev_key;
use super::wal::Batch;
use super::EmbeddedError;
use crate::store::Revision;

pub const REVS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("revs");
pub const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub const META_REVISION: &str = "revision";
pub const META_COMPACTED: &str = "compacted";
pub const META_CLEANED: &str = "cleaned";

/// The metadata as of one snapshot.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetaState {
    pub revision: Revision,
    pub compacted: Revision,
    pub cleaned: Revision,
}

/// Reads the metadata from any table handle.
pub fn read_meta(meta: &impl ReadableTable<&'static str, u64>) -> Result<MetaState, EmbeddedError> {
    let get = |name: &str| -> Result<Revision, EmbeddedError> {
        Ok(meta.get(name)?.map(|v| v.value() as Revision).unwrap_or(0))
    };
    Ok(MetaState {
        revision: get(META_REVISION)?,
        compacted: get(META_COMPACTED)?,
        cleaned: get(META_CLEANED)?,
    })
}

/// Creates the tables if missing and returns the stored metadata.
pub fn init(db: &Database) -> Result<MetaState, EmbeddedError> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    let state = {
        txn.open_table(REVS)?;
        txn.open_table(LOG)?;
        let meta = txn.open_table(META)?;
        read_meta(&meta)?
    };
    txn.commit()?;
    Ok(state)
}

/// Replays logged batches above the durable revision into redb and commits durably. Returns the
/// recovered metadata and how many writes were replayed.
pub fn replay(
    db: &Database,
    batches: &[Batch],
    mut state: MetaState,
) -> Result<(MetaState, usize), EmbeddedError> {
    let durable = state.revision;
    let mut replayed = 0;
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    {
        let mut revs = txn.open_table(REVS)?;
        let mut log = txn.open_table(LOG)?;
        for batch in batches {
            for e in batch.entries.iter().filter(|e| e.rev > durable) {
                revs.insert(rev_key(&e.key, e.rev).as_slice(), e.record.as_slice())?;
                log.insert(e.rev as u64, e.key.as_slice())?;
                replayed += 1;
            }
            state.revision = state.revision.max(batch.revision);
            state.compacted = state.compacted.max(batch.compacted);
        }
        let mut meta = txn.open_table(META)?;
        meta.insert(META_REVISION, state.revision as u64)?;
        meta.insert(META_COMPACTED, state.compacted as u64)?;
    }
    txn.commit()?;
    Ok((state, replayed))
}

/// The latest record of `key` at or below `rev`: its revision and decoded record.
pub fn latest_at(
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
