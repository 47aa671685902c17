//! Reads of the embedded store, each against one redb snapshot: get, range and log replay.

use bytes::Bytes;
use redb::{Database, ReadableDatabase};
use std::ops::Bound;

use super::codec::{self, rev_key};
use super::tables::{self, MetaState, LOG, META, REVS};
use super::writer::latest_at;
use super::EmbeddedError;
use crate::store::keys::prefix_end;
use crate::store::{
    Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse, Result, Revision,
};

/// Checks `revision` (0 = latest) against the snapshot and returns the revision to read at.
fn read_revision(meta: &MetaState, revision: Revision) -> Result<Revision> {
    if revision <= 0 {
        return Ok(meta.revision);
    }
    if revision < meta.compacted {
        return Err(Error::Compacted {
            requested: revision,
            compacted: meta.compacted,
        });
    }
    if revision > meta.revision {
        return Err(Error::FutureRevision {
            requested: revision,
            current: meta.revision,
        });
    }
    Ok(revision)
}

/// The value of `key` at `revision`.
pub fn get(db: &Database, key: &str, revision: Revision) -> Result<Option<KeyValue>> {
    let txn = db.begin_read().map_err(EmbeddedError::from)?;
    let meta = tables::read_meta(&txn.open_table(META).map_err(EmbeddedError::from)?)?;
    let at = read_revision(&meta, revision)?;
    let revs = txn.open_table(REVS).map_err(EmbeddedError::from)?;
    Ok(latest_at(&revs, key.as_bytes(), at)?.and_then(|(r, rec)| rec.into_kv(key.as_bytes(), r)))
}

/// The keys under a prefix at a revision, with limit and count as etcd answers them.
pub fn range(db: &Database, req: &RangeRequest) -> Result<RangeResponse> {
    let txn = db.begin_read().map_err(EmbeddedError::from)?;
    let meta = tables::read_meta(&txn.open_table(META).map_err(EmbeddedError::from)?)?;
    let at = read_revision(&meta, req.revision)?;
    let revs = txn.open_table(REVS).map_err(EmbeddedError::from)?;

    let prefix = req.prefix.as_bytes();
    let mut lo = prefix.to_vec();
    if let Some(start) = &req.start {
        let bound = codec::start_bound(start.as_bytes());
        if bound > lo {
            lo = bound;
        }
    }
    let end = prefix_end(prefix);
    let hi = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end.as_slice())
    };
    let mut out = RangeResponse {
        revision: at,
        ..Default::default()
    };
    let mut iter = revs
        .range::<&[u8]>((Bound::Included(lo.as_slice()), hi))
        .map_err(EmbeddedError::from)?
        .peekable();
    while let Some(item) = iter.next() {
        let (k, v) = item.map_err(EmbeddedError::from)?;
        let (key, rev) = codec::split_rev_key(k.value()).ok_or(EmbeddedError::Corrupt {
            what: "history key",
        })?;
        if rev > at {
            continue;
        }
        // Only the last revision at or below `at` of each key counts.
        let superseded = match iter.peek() {
            Some(Ok((nk, _))) => match codec::split_rev_key(nk.value()) {
                Some((nkey, nrev)) => nkey == key && nrev <= at,
                None => false,
            },
            _ => false,
        };
        if superseded || codec::is_tombstone(v.value()) {
            continue;
        }
        out.count += 1;
        if req.limit > 0 && out.kvs.len() >= req.limit {
            out.more = true;
            continue;
        }
        let rec = codec::decode(v.value()).ok_or(EmbeddedError::Corrupt {
            what: "history record",
        })?;
        if let Some(kv) = rec.into_kv(key, rev) {
            out.kvs.push(kv);
        }
    }
    Ok(out)
}

/// Events under `prefix` with revisions in `from..=to`, at most `max` log entries read.
/// Returns the events and the last revision read.
pub fn read_log(
    db: &Database,
    prefix: &str,
    from: Revision,
    to: Revision,
    max: usize,
) -> Result<(Vec<Event>, Revision)> {
    let txn = db.begin_read().map_err(EmbeddedError::from)?;
    let meta = tables::read_meta(&txn.open_table(META).map_err(EmbeddedError::from)?)?;
    if from < meta.compacted {
        return Err(Error::Compacted {
            requested: from,
            compacted: meta.compacted,
        });
    }
    let to = to.min(meta.revision);
    let log = txn.open_table(LOG).map_err(EmbeddedError::from)?;
    let revs = txn.open_table(REVS).map_err(EmbeddedError::from)?;
    let mut events = Vec::new();
    let mut last = from - 1;
    let mut read = 0usize;
    for item in log
        .range((from as u64)..=(to.max(0) as u64))
        .map_err(EmbeddedError::from)?
        .take(max)
    {
        let (r, k) = item.map_err(EmbeddedError::from)?;
        let rev = r.value() as Revision;
        last = rev;
        read += 1;
        let key = k.value();
        if !key.starts_with(prefix.as_bytes()) {
            continue;
        }
        let raw = revs
            .get(rev_key(key, rev).as_slice())
            .map_err(EmbeddedError::from)?
            .ok_or(EmbeddedError::Corrupt {
                what: "log entry without its record",
            })?;
        let rec = codec::decode(raw.value()).ok_or(EmbeddedError::Corrupt {
            what: "history record",
        })?;
        let prev = latest_at(&revs, key, rev - 1)?.and_then(|(pr, prec)| prec.into_kv(key, pr));
        let key_str = String::from_utf8_lossy(key).into_owned();
        let event = if rec.tombstone {
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key_str,
                    value: Bytes::new(),
                    create_revision: 0,
                    mod_revision: rev,
                    version: 0,
                },
                prev,
            }
        } else {
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key_str,
                    value: rec.value,
                    create_revision: rec.create_revision,
                    mod_revision: rev,
                    version: rec.version,
                },
                prev,
            }
        };
        events.push(event);
    }
    if read < max {
        // The whole window was read, not just up to the last entry found.
        last = to;
    }
    Ok((events, last))
}
