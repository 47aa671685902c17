//! Files of configMap, secret, downwardAPI and projected volumes written as upstream's
//! `AtomicWriter` does: the files go into a fresh `..TIMESTAMP` directory, the `..data` symlink
//! is swapped to it in one rename, and each top-level name is a symlink through `..data`, so a
//! container never sees half of an update. With a pod `fsGroup`, files and directories belong
//! to that group and are group-readable (directories setgid), as upstream's
//! `SetVolumeOwnership` leaves them.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::VolumeError;

/// A file to write: its bytes and mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub data: Vec<u8>,
    pub mode: u32,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> VolumeError {
    move |source| VolumeError::Io { context, source }
}

/// Whether `rel` stays inside the volume (no absolute paths, no `..` elements).
pub fn safe_path(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.starts_with('/')
        && rel
            .split('/')
            .all(|p| !p.is_empty() && p != ".." && !p.starts_with(".."))
}

/// Upstream's masks for volume ownership: read-write and read-only files, and what
/// directories add.
const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const DIR_MASK: u32 = 0o2110;

/// A file's mode once the pod's fsGroup (if any) applies to a read-only volume.
fn effective(mode: u32, group: Option<u32>) -> u32 {
    match group {
        Some(_) => (mode & 0o777) | RO_MASK,
        None => mode & 0o777,
    }
}

/// Gives `path` (not following a symlink) to group `gid` and adds the group's mask.
fn own(path: &Path, gid: u32, read_only: bool) -> Result<(), VolumeError> {
    std::os::unix::fs::lchown(path, None, Some(gid))
        .map_err(io(format!("changing the group of {}", path.display())))?;
    let meta =
        std::fs::symlink_metadata(path).map_err(io(format!("reading {}", path.display())))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mut mask = if read_only { RO_MASK } else { RW_MASK };
    if meta.is_dir() {
        mask |= DIR_MASK;
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode | mask != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | mask))
            .map_err(io(format!("setting the mode of {}", path.display())))?;
    }
    Ok(())
}

/// Gives a whole volume to the pod's fsGroup, unless its root already belongs to it (a
/// volume set up earlier): upstream's `SetVolumeOwnership`.
pub fn set_ownership(dir: &Path, gid: u32, read_only: bool) -> Result<(), VolumeError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(io(format!("reading {}", dir.display())))?;
    if meta.gid() == gid && meta.mode() & 0o2000 != 0 {
        return Ok(());
    }
    fn walk(p: &Path, gid: u32, ro: bool) -> Result<(), VolumeError> {
        own(p, gid, ro)?;
        if std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
            for e in std::fs::read_dir(p)
                .map_err(io(format!("reading {}", p.display())))?
                .filter_map(Result::ok)
            {
                walk(&e.path(), gid, ro)?;
            }
        }
        Ok(())
    }
    walk(dir, gid, read_only)
}

/// Writes `files` (relative path -> payload) into `dir`, replacing what was there; does
/// nothing when the content is unchanged. `group`: the pod's fsGroup.
pub fn write_atomic(
    dir: &Path,
    files: &BTreeMap<String, Payload>,
    group: Option<u32>,
) -> Result<bool, VolumeError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        if same_content(&dir.join(&current), files, group) {
            return Ok(false);
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let stamp = format!("..{nanos}");
    let target = dir.join(&stamp);
    for (rel, p) in files {
        if !safe_path(rel) {
            return Err(VolumeError::Invalid(format!(
                "invalid path {rel:?} in a volume"
            )));
        }
        let path = target.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&path, &p.data).map_err(io(format!("writing {}", path.display())))?;
        std::fs::set_permissions(
            &path,
            std::fs::Permissions::from_mode(effective(p.mode, group)),
        )
        .map_err(io(format!("setting the mode of {}", path.display())))?;
    }
    if let Some(gid) = group {
        set_ownership(&target, gid, true)?;
        own(dir, gid, true)?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link)
        .map_err(io(format!("linking {}", tmp_link.display())))?;
    if let Some(gid) = group {
        own(&tmp_link, gid, true)?;
    }
    let old = std::fs::read_link(&data_link).ok();
    std::fs::rename(&tmp_link, &data_link)
        .map_err(io(format!("swapping {}", data_link.display())))?;
    // Top-level names through ..data; names no longer written go.
    let tops: std::collections::BTreeSet<&str> =
        files.keys().filter_map(|k| k.split('/').next()).collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link)
                .map_err(io(format!("linking {}", link.display())))?;
            if let Some(gid) = group {
                own(&link, gid, true)?;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !tops.contains(name.as_str()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

fn same_content(current: &Path, files: &BTreeMap<String, Payload>, group: Option<u32>) -> bool {
    use std::os::unix::fs::MetadataExt;
    files.iter().all(|(rel, p)| {
        let path = current.join(rel);
        std::fs::read(&path).is_ok_and(|d| d == p.data)
            && std::fs::metadata(&path).is_ok_and(|m| {
                m.permissions().mode() & 0o777 == effective(p.mode, group)
                    && group.is_none_or(|g| m.gid() == g)
            })
    }) && count_files(current) == files.len()
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_swap_the_whole_set_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut files = BTreeMap::new();
        files.insert(
            "a".to_string(),
            Payload {
                data: b"1".to_vec(),
                mode: 0o644,
            },
        );
        files.insert(
            "sub/b".to_string(),
            Payload {
                data: b"2".to_vec(),
                mode: 0o400,
            },
        );
        assert!(write_atomic(dir.path(), &files, None).expect("write"));
        assert_eq!(std::fs::read(dir.path().join("a")).expect("a"), b"1");
        assert_eq!(std::fs::read(dir.path().join("sub/b")).expect("b"), b"2");
        assert!(
            !write_atomic(dir.path(), &files, None).expect("same"),
            "unchanged: nothing written"
        );
        files.remove("sub/b");
        files.insert(
            "a".to_string(),
            Payload {
                data: b"3".to_vec(),
                mode: 0o644,
            },
        );
        assert!(write_atomic(dir.path(), &files, None).expect("update"));
        assert_eq!(std::fs::read(dir.path().join("a")).expect("a"), b"3");
        assert!(!dir.path().join("sub").exists(), "a dropped key goes");
        let stamps = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("..1"))
            .count();
        assert_eq!(stamps, 1, "the old generation is removed");
        assert!(!safe_path("../x") && !safe_path("/x") && !safe_path("a/../b") && safe_path("a/b"));
    }

    #[test]
    fn an_fs_group_owns_the_files_and_can_read_them() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tmp");
        let gid = 4321;
        let mut files = BTreeMap::new();
        files.insert(
            "secret".to_string(),
            Payload {
                data: b"x".to_vec(),
                mode: 0o400,
            },
        );
        assert!(write_atomic(dir.path(), &files, Some(gid)).expect("write"));
        let m = std::fs::metadata(dir.path().join("secret")).expect("file");
        assert_eq!((m.gid(), m.mode() & 0o777), (gid, 0o440));
        assert!(
            !write_atomic(dir.path(), &files, Some(gid)).expect("again"),
            "owned files are unchanged content"
        );
        let d = std::fs::metadata(dir.path()).expect("dir");
        assert_eq!(d.gid(), gid);
        assert_ne!(d.mode() & 0o2000, 0, "setgid directory");
        let empty = tempfile::tempdir().expect("tmp");
        std::fs::write(empty.path().join("f"), b"y").expect("write");
        set_ownership(empty.path(), gid, false).expect("own");
        let f = std::fs::metadata(empty.path().join("f")).expect("f");
        assert_eq!(
            (f.gid(), f.mode() & 0o060),
            (gid, 0o060),
            "group read-write"
        );
    }
}
