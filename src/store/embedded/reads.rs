//! Reads of the embedded store, each against one consistent view: the unflushed overlay over a
//! redb snapshot, the overlay winning.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use redb::Database;

use super::codec::{self, rev_key};
use super::overlay::Overlay;
use super::tables::{self, MetaState, LOG, REVS};
use super::{EmbeddedError, Shared};
use crate::store::keys::prefix_end;
use crate::store::{
    Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse, Result, Revision,
};

type RevsTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// Checks `revision` (0 = latest) against the view and returns the revision to read at.
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

/// The latest record of `key` at or below `rev` in the view.
fn latest(
    overlay: &Overlay,
    revs: &RevsTable,
    key: &[u8],
    rev: Revision,
) -> Result<Option<(Revision, codec::Record)>, EmbeddedError> {
    match overlay.latest_at(key, rev) {
        Some((r, raw)) => Ok(Some((
            r,
            codec::decode(raw).ok_or(EmbeddedError::Corrupt {
                what: "overlay record",
            })?,
        ))),
        None => tables::latest_at(revs, key, rev),
    }
}

/// The value of `key` at `revision`.
pub fn get(
    db: &Database,
    shared: &Shared,
    key: &str,
    revision: Revision,
) -> Result<Option<KeyValue>> {
    let (overlay, txn) = shared.snapshot(db)?;
    let at = read_revision(&overlay.meta, revision)?;
    let revs = txn.open_table(REVS).map_err(EmbeddedError::from)?;
    Ok(latest(&overlay, &revs, key.as_bytes(), at)?
        .and_then(|(r, rec)| rec.into_kv(key.as_bytes(), r)))
}

/// A history entry's value: from redb or from the overlay.
enum Val<'m> {
    Disk(redb::AccessGuard<'static, &'static [u8]>),
    Mem(&'m [u8]),
}

impl Val<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Val::Disk(g) => g.value(),
            Val::Mem(b) => b,
        }
    }
}

/// Merges redb's entries and the overlay's, in composite-key order, the overlay winning ties.
fn merged<'m>(
    disk: redb::Range<'static, &'static [u8], &'static [u8]>,
    mem: &'m BTreeMap<Vec<u8>, &'m [u8]>,
) -> impl Iterator<Item = Result<(Vec<u8>, Val<'m>), EmbeddedError>> + 'm {
    let mut disk = disk.peekable();
    let mut mem = mem.iter().peekable();
    std::iter::from_fn(move || {
        let disk_key = match disk.peek() {
            Some(Ok((k, _))) => Some(k.value().to_vec()),
            Some(Err(_)) => {
                return disk
                    .next()
                    .and_then(|r| r.err())
                    .map(|e| Err(EmbeddedError::from(e)));
            }
            None => None,
        };
        let take_mem = match (&disk_key, mem.peek()) {
            (Some(dk), Some((mk, _))) => mk.as_slice() <= dk.as_slice(),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if take_mem {
            let (mk, mv) = mem.next()?;
            if disk_key.as_deref() == Some(mk.as_slice()) {
                disk.next();
            }
            return Some(Ok((mk.clone(), Val::Mem(mv))));
        }
        let (k, v) = match disk.next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e.into())),
        };
        drop(k);
        Some(Ok((disk_key?, Val::Disk(v))))
    })
}

/// The keys under a prefix at a revision, with limit and count as etcd answers them.
pub fn range(db: &Database, shared: &Shared, req: &RangeRequest) -> Result<RangeResponse> {
    let (overlay, txn) = shared.snapshot(db)?;
    let at = read_revision(&overlay.meta, req.revision)?;
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
    let disk = revs
        .range::<&[u8]>((Bound::Included(lo.as_slice()), hi))
        .map_err(EmbeddedError::from)?;
    let mem = overlay.entries_in(&lo, &end);
    let mut out = RangeResponse {
        revision: at,
        ..Default::default()
    };
    let mut iter = merged(disk, &mem).peekable();
    while let Some(item) = iter.next() {
        let (k, v) = item?;
        let (key, rev) = codec::split_rev_key(&k).ok_or(EmbeddedError::Corrupt {
            what: "history key",
        })?;
        if rev > at {
            continue;
        }
        // Only the last revision at or below `at` of each key counts.
        let superseded = match iter.peek() {
            Some(Ok((nk, _))) => match codec::split_rev_key(nk) {
                Some((nkey, nrev)) => nkey == key && nrev <= at,
                None => false,
            },
            _ => false,
        };
        if superseded || codec::is_tombstone(v.bytes()) {
            continue;
        }
        out.count += 1;
        if req.limit > 0 && out.kvs.len() >= req.limit {
            out.more = true;
            if !req.count_all {
                break;
            }
            continue;
        }
        let rec = codec::decode(v.bytes()).ok_or(EmbeddedError::Corrupt {
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
    shared: &Shared,
    prefix: &str,
    from: Revision,
    to: Revision,
    max: usize,
) -> Result<(Vec<Event>, Revision)> {
    let (overlay, txn) = shared.snapshot(db)?;
    if from < overlay.meta.compacted {
        return Err(Error::Compacted {
            requested: from,
            compacted: overlay.meta.compacted,
        });
    }
    let to = to.min(overlay.meta.revision);
    let log = txn.open_table(LOG).map_err(EmbeddedError::from)?;
    let revs = txn.open_table(REVS).map_err(EmbeddedError::from)?;
    // redb holds the older part of the window, the overlay the newer; a revision in both (a
    // flush between the two reads of the view) is taken once.
    let mem_first = overlay.first_revision().unwrap_or(Revision::MAX);
    let mut entries: Vec<(Revision, Vec<u8>)> = Vec::new();
    if from < mem_first {
        let disk_to = to.min(mem_first - 1);
        if disk_to >= from {
            for item in log
                .range((from as u64)..=(disk_to as u64))
                .map_err(EmbeddedError::from)?
                .take(max)
            {
                let (r, k) = item.map_err(EmbeddedError::from)?;
                entries.push((r.value() as Revision, k.value().to_vec()));
            }
        }
    }
    if entries.len() < max {
        let room = max - entries.len();
        entries.extend(overlay.log_range(from, to).take(room).cloned());
    }
    let read = entries.len();
    let mut last = entries.last().map(|(r, _)| *r).unwrap_or(from - 1);
    let mut events = Vec::new();
    for (rev, key) in entries {
        if !key.starts_with(prefix.as_bytes()) {
            continue;
        }
        let raw = match overlay.record(&key, rev) {
            Some(raw) => raw.to_vec(),
            None => revs
                .get(rev_key(&key, rev).as_slice())
                .map_err(EmbeddedError::from)?
                .ok_or(EmbeddedError::Corrupt {
                    what: "log entry without its record",
                })?
                .value()
                .to_vec(),
        };
        let rec = codec::decode(&raw).ok_or(EmbeddedError::Corrupt {
            what: "history record",
        })?;
        let prev = latest(&overlay, &revs, &key, rev - 1)?.and_then(|(pr, p)| p.into_kv(&key, pr));
        let key_str = String::from_utf8_lossy(&key).into_owned();
        events.push(if rec.tombstone {
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
        });
    }
    if read < max {
        // The whole window was read, not just up to the last entry found.
        last = to;
    }
    Ok((events, last))
}
