//! The embedded store's write-ahead log: what makes a write durable between checkpoints.
//!
//! Each committed batch is appended as one record and `fdatasync`ed before any of its writes is
//! acknowledged or visible. The log is a series of segment files (`DB.wal.SEQ`): when the writer
//! hands its unflushed writes to the flusher it seals the segment and starts the next; once the
//! flusher has made them durable in redb, the sealed segments are deleted. A batch thus costs one
//! sequential append and one fdatasync instead of rewriting the B-tree pages it touched, which is
//! also what spares an SD card. This is etcd's own scheme: a WAL in front of a B-tree committed in
//! the background.
//!
//! Record: `LEN(u32 LE) CRC32(u32 LE) PAYLOAD`; payload: `REVISION(u64) COMPACTED(u64)
//! COUNT(u32)` then per write `REV(u64) KEY_LEN(u32) KEY REC_LEN(u32) RECORD` (RECORD as in
//! [`super::codec`]). Recovery replays whole records above redb's durable revision and cuts the
//! log at the first torn one: that batch was never acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::store::Revision;

/// One write in a batch: its revision, key and encoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub rev: Revision,
    pub key: Vec<u8>,
    pub record: Vec<u8>,
}

/// One logged batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub revision: Revision,
    pub compacted: Revision,
    pub entries: Vec<Entry>,
}

/// The open segment of the log.
pub struct Wal {
    db: PathBuf,
    seq: u64,
    file: File,
    path: PathBuf,
    len: u64,
}

/// The path of segment `seq` beside the database file.
pub fn segment_path(db: &Path, seq: u64) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(format!(".wal.{seq:010}"));
    PathBuf::from(p)
}

/// The log's segments beside `db`, in order.
pub fn segments(db: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = db.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.wal.");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let file = entry.file_name();
        let Some(seq) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Every whole batch in every segment, in order, and the highest segment number seen.
pub fn recover(db: &Path) -> std::io::Result<(Vec<Batch>, u64)> {
    let mut batches = Vec::new();
    let mut last = 0;
    let segs = segments(db)?;
    let count = segs.len();
    for (i, (seq, path)) in segs.into_iter().enumerate() {
        let (mut b, valid) = read_all(&path)?;
        let len = std::fs::metadata(&path)?.len();
        if valid < len && i + 1 < count {
            tracing::error!(path = %path.display(), valid, len, "write-ahead log segment is damaged before its end; later segments are still replayed");
        }
        batches.append(&mut b);
        last = seq;
    }
    Ok((batches, last))
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => File::open(d)?.sync_all(),
        _ => Ok(()),
    }
}

fn encode(batch: &Batch) -> Vec<u8> {
    let size: usize = 20
        + batch
            .entries
            .iter()
            .map(|e| 16 + e.key.len() + e.record.len())
            .sum::<usize>();
    let mut payload = Vec::with_capacity(size);
    payload.extend_from_slice(&(batch.revision as u64).to_le_bytes());
    payload.extend_from_slice(&(batch.compacted as u64).to_le_bytes());
    payload.extend_from_slice(&(batch.entries.len() as u32).to_le_bytes());
    for e in &batch.entries {
        payload.extend_from_slice(&(e.rev as u64).to_le_bytes());
        payload.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
        payload.extend_from_slice(&e.key);
        payload.extend_from_slice(&(e.record.len() as u32).to_le_bytes());
        payload.extend_from_slice(&e.record);
    }
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn decode_payload(payload: &[u8]) -> Option<Batch> {
    let mut c = Cursor(payload);
    let revision = c.u64()? as Revision;
    let compacted = c.u64()? as Revision;
    let count = c.u32()? as usize;
    let mut entries = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let rev = c.u64()? as Revision;
        let klen = c.u32()? as usize;
        let key = c.take(klen)?.to_vec();
        let rlen = c.u32()? as usize;
        let record = c.take(rlen)?.to_vec();
        entries.push(Entry { rev, key, record });
    }
    c.0.is_empty().then_some(Batch {
        revision,
        compacted,
        entries,
    })
}

/// Reads every whole record; returns them and the length of the valid prefix.
pub fn read_all(path: &Path) -> std::io::Result<(Vec<Batch>, u64)> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut data)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    }
    let mut batches = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= 8 {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let Some(payload) = data.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(batch) = decode_payload(payload) else {
            break;
        };
        batches.push(batch);
        pos += 8 + len;
    }
    Ok((batches, pos as u64))
}

impl Wal {
    /// Starts segment `seq` (empty) for appending.
    pub fn create(db: &Path, seq: u64) -> std::io::Result<Wal> {
        let path = segment_path(db, seq);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        sync_dir(&path)?;
        Ok(Wal {
            db: db.to_path_buf(),
            seq,
            file,
            path,
            len: 0,
        })
    }

    /// Appends a batch and waits until it is on disk. On failure the segment is cut back, so a
    /// failed append never hides the records after it.
    pub fn append(&mut self, batch: &Batch) -> std::io::Result<()> {
        let bytes = encode(batch);
        let result = self
            .file
            .write_all(&bytes)
            .and_then(|_| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                use std::io::Seek;
                let _ = self.file.set_len(self.len);
                let _ = self.file.seek(std::io::SeekFrom::Start(self.len));
                Err(e)
            }
        }
    }

    /// Seals the current segment and starts the next; returns the sealed segment's number.
    pub fn rotate(&mut self) -> std::io::Result<u64> {
        let next = Wal::create(&self.db, self.seq + 1)?;
        let sealed = self.seq;
        *self = next;
        Ok(sealed)
    }

    /// Deletes the segments up to and including `seq` (their batches are durable in redb).
    pub fn remove_through(&self, seq: u64) -> std::io::Result<()> {
        for (s, path) in segments(&self.db)? {
            if s <= seq && s != self.seq {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }

    /// Bytes in the current segment.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// The current segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rev: Revision) -> Batch {
        Batch {
            revision: rev,
            compacted: 0,
            entries: vec![Entry {
                rev,
                key: format!("/k/{rev}").into_bytes(),
                record: vec![1; 20],
            }],
        }
    }

    #[test]
    fn segments_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("x.redb");
        let mut wal = Wal::create(&db, 1).expect("create");
        wal.append(&batch(1)).expect("append");
        let sealed = wal.rotate().expect("rotate");
        assert_eq!(sealed, 1);
        wal.append(&batch(2)).expect("append");
        // A torn third record: only part of it reached the disk.
        let mut f = OpenOptions::new()
            .append(true)
            .open(wal.path())
            .expect("reopen");
        f.write_all(&encode(&batch(3))[..10]).expect("write");
        let (batches, last) = recover(&db).expect("recover");
        assert_eq!(batches, vec![batch(1), batch(2)]);
        assert_eq!(last, 2);
        wal.remove_through(1).expect("remove");
        assert_eq!(segments(&db).expect("list").len(), 1);
        assert_eq!(recover(&db).expect("recover").0, vec![batch(2)]);
    }

    #[test]
    fn a_corrupt_record_ends_the_segment() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("x.redb");
        let mut wal = Wal::create(&db, 7).expect("create");
        wal.append(&batch(1)).expect("append");
        let first = wal.size();
        wal.append(&batch(2)).expect("append");
        let mut data = std::fs::read(wal.path()).expect("read");
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(wal.path(), data).expect("write");
        let (batches, valid) = read_all(wal.path()).expect("read");
        assert_eq!(batches, vec![batch(1)]);
        assert_eq!(valid, first);
    }
}
