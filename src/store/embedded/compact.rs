//! Physical compaction: dropping history below the compacted revision, one chunk at a time.

use redb::{ReadableTable, WriteTransaction};

use super::codec::{self, rev_key};
use super::tables::{LOG, REVS};
use super::EmbeddedError;
use crate::store::Revision;

/// Log entries cleaned up per compaction chunk (one short transaction).
pub const COMPACT_CHUNK: usize = 256;

/// Cleans the log entries in `(cleaned, compacted)`, at most [`COMPACT_CHUNK`] of them: each
/// key's revisions older than a logged one are dropped, and so is a logged tombstone. Returns the
/// revision below which everything is clean.
pub fn chunk(
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
