//! On-disk encoding of the embedded store: composite history keys and value records.
//!
//! Table `revs` maps `KEY 0x00 REV(8 bytes, big-endian)` to a record, so one key's revisions
//! sort together in revision order and a prefix of user keys is a prefix of composite keys
//! (user keys never hold NUL). A record is `TAG(1) CREATE_REV(8) VERSION(8) VALUE`, TAG being
//! [`TAG_PUT`] or [`TAG_TOMBSTONE`].

use bytes::Bytes;

use super::super::{KeyValue, Revision};

/// A record holding a value.
pub const TAG_PUT: u8 = 1;
/// A record marking a deletion.
pub const TAG_TOMBSTONE: u8 = 2;
const HEADER: usize = 17;

/// The composite `revs` key of `key` at `rev`.
pub fn rev_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 9);
    out.extend_from_slice(key);
    out.push(0);
    out.extend_from_slice(&(rev as u64).to_be_bytes());
    out
}

/// Splits a composite key into the user key and the revision; `None` if malformed.
pub fn split_rev_key(composite: &[u8]) -> Option<(&[u8], Revision)> {
    if composite.len() < 9 || composite[composite.len() - 9] != 0 {
        return None;
    }
    let (key, rest) = composite.split_at(composite.len() - 9);
    let rev = u64::from_be_bytes(rest[1..].try_into().ok()?);
    Some((key, rev as Revision))
}

/// The lowest composite key whose user key is `>= start`, for a list's start bound. A start
/// holding NUL (upstream's "key + \0" continuation) means "after the part before the NUL".
pub fn start_bound(start: &[u8]) -> Vec<u8> {
    match start.iter().position(|b| *b == 0) {
        Some(p) => {
            let mut out = start[..p].to_vec();
            out.push(1);
            out
        }
        None => start.to_vec(),
    }
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub tombstone: bool,
    pub create_revision: Revision,
    pub version: i64,
    pub value: Bytes,
}

impl Record {
    /// The key-value this record holds for `key` at `rev`; `None` for a tombstone.
    pub fn into_kv(self, key: &[u8], rev: Revision) -> Option<KeyValue> {
        if self.tombstone {
            return None;
        }
        Some(KeyValue {
            key: String::from_utf8_lossy(key).into_owned(),
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: rev,
            version: self.version,
        })
    }
}

/// Encodes a put record.
pub fn encode_put(create_revision: Revision, version: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + value.len());
    out.push(TAG_PUT);
    out.extend_from_slice(&(create_revision as u64).to_be_bytes());
    out.extend_from_slice(&(version as u64).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Encodes a tombstone record.
pub fn encode_tombstone() -> Vec<u8> {
    let mut out = vec![0; HEADER];
    out[0] = TAG_TOMBSTONE;
    out
}

/// Whether an encoded record is a tombstone, without decoding the rest.
pub fn is_tombstone(raw: &[u8]) -> bool {
    raw.first() == Some(&TAG_TOMBSTONE)
}

/// Decodes a record; `None` if malformed.
pub fn decode(raw: &[u8]) -> Option<Record> {
    if raw.len() < HEADER {
        return None;
    }
    let tombstone = match raw[0] {
        TAG_PUT => false,
        TAG_TOMBSTONE => true,
        _ => return None,
    };
    let create = u64::from_be_bytes(raw[1..9].try_into().ok()?) as Revision;
    let version = u64::from_be_bytes(raw[9..17].try_into().ok()?) as i64;
    Some(Record {
        tombstone,
        create_revision: create,
        version,
        value: Bytes::copy_from_slice(&raw[HEADER..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_round_trip_and_sort_by_key_then_revision() {
        let a5 = rev_key(b"/a", 5);
        let a10 = rev_key(b"/a", 10);
        let ab1 = rev_key(b"/ab", 1);
        assert!(a5 < a10 && a10 < ab1);
        assert_eq!(split_rev_key(&a10), Some((&b"/a"[..], 10)));
        assert_eq!(split_rev_key(b"short"), None);
    }

    #[test]
    fn start_bound_skips_the_key_before_a_nul() {
        let bound = start_bound(b"/a\0");
        assert!(rev_key(b"/a", 99) < bound);
        assert!(rev_key(b"/a-b", 1) >= bound);
        assert_eq!(start_bound(b"/a"), b"/a".to_vec());
    }

    #[test]
    fn records_round_trip() {
        let raw = encode_put(3, 2, b"hello");
        let rec = decode(&raw).expect("valid record");
        assert!(!rec.tombstone && rec.create_revision == 3 && rec.version == 2);
        assert_eq!(&rec.value[..], b"hello");
        assert!(is_tombstone(&encode_tombstone()));
        assert!(decode(&[9; 20]).is_none());
    }
}
