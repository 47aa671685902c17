//! Files of configMap, secret, downwardAPI and projected volumes written as upstream's
//! `AtomicWriter` does: the files go into a fresh `..TIMESTAMP` directory, the `..data` symlink
//! is swapped to it in one rename, and each top-level name is a symlink through `..data`, so a
//! container never sees half of an update.

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

/// Writes `files` (relative path -> payload) into `dir`, replacing what was there; does
/// nothing when the content is unchanged.
pub fn write_atomic(dir: &Path, files: &BTreeMap<String, Payload>) -> Result<bool, VolumeError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        if same_content(&dir.join(&current), files) {
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
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(p.mode & 0o777))
            .map_err(io(format!("setting the mode of {}", path.display())))?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link)
        .map_err(io(format!("linking {}", tmp_link.display())))?;
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

fn same_content(current: &Path, files: &BTreeMap<String, Payload>) -> bool {
    files.iter().all(|(rel, p)| {
        let path = current.join(rel);
        std::fs::read(&path).is_ok_and(|d| d == p.data)
            && std::fs::metadata(&path)
                .is_ok_and(|m| m.permissions().mode() & 0o777 == p.mode & 0o777)
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
        assert!(write_atomic(dir.path(), &files).expect("write"));
        assert_eq!(std::fs::read(dir.path().join("a")).expect("a"), b"1");
        assert_eq!(std::fs::read(dir.path().join("sub/b")).expect("b"), b"2");
        assert!(
            !write_atomic(dir.path(), &files).expect("same"),
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
        assert!(write_atomic(dir.path(), &files).expect("update"));
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
}
