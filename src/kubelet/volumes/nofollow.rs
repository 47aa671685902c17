//! Walking a volume without following symlinks (for [`super::mount::System`]): each component
//! of a relative path is opened with `O_PATH | O_NOFOLLOW` from the descriptor of its parent,
//! and missing directories are made with `mkdirat` on those descriptors, so a symlink a
//! container swaps in anywhere along the way makes the walk fail rather than leave the volume.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path};

use super::VolumeError;

pub(super) fn c_path(p: &Path) -> Result<std::ffi::CString, VolumeError> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| VolumeError::Invalid(format!("bad path {}", p.display())))
}

pub(super) fn last_error(context: String) -> VolumeError {
    VolumeError::Io {
        context,
        source: std::io::Error::last_os_error(),
    }
}

/// `openat(dir, name, flags | O_PATH | O_CLOEXEC)`, owned.
fn open_at(dir: Option<&OwnedFd>, name: &CStr, flags: i32) -> Option<OwnedFd> {
    // SAFETY: a NUL-terminated name; the returned descriptor is owned at once.
    let fd = unsafe {
        libc::openat(
            dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd()),
            name.as_ptr(),
            flags | libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a descriptor openat just returned, owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The plain names of `rel`, or an error for anything else (`..`, `/`).
fn names(rel: &Path) -> Result<Vec<std::ffi::CString>, VolumeError> {
    rel.components()
        .map(|part| match part {
            Component::Normal(name) => c_path(Path::new(name)),
            _ => Err(VolumeError::Invalid(format!(
                "subpath {} is not a plain relative path",
                rel.display()
            ))),
        })
        .collect()
}

/// Opens `rel` beneath the directory `root` without following any symlink; with `make`,
/// directories missing along the way are made (mode 0755, as upstream's kubelet makes them).
pub(super) fn open_beneath(root: &Path, rel: &Path, make: bool) -> Result<OwnedFd, VolumeError> {
    let mut fd = open_at(None, &c_path(root)?, libc::O_DIRECTORY)
        .ok_or_else(|| last_error(format!("opening volume path {}", root.display())))?;
    let failed = || {
        last_error(format!(
            "opening subpath {} beneath {} without following symlinks",
            rel.display(),
            root.display()
        ))
    };
    for name in names(rel)? {
        let next = match open_at(Some(&fd), &name, libc::O_NOFOLLOW) {
            Some(next) => next,
            None if make
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) =>
            {
                // SAFETY: an open directory descriptor and a NUL-terminated name.
                let rc = unsafe { libc::mkdirat(fd.as_raw_fd(), name.as_ptr(), 0o755) };
                if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                    return Err(last_error(format!(
                        "making subpath {} beneath {}",
                        rel.display(),
                        root.display()
                    )));
                }
                open_at(Some(&fd), &name, libc::O_NOFOLLOW | libc::O_DIRECTORY)
                    .ok_or_else(failed)?
            }
            None => return Err(failed()),
        };
        fd = next;
    }
    Ok(fd)
}

/// The file type bits (`S_IFMT`) of an open descriptor.
pub(super) fn kind(fd: &OwnedFd, what: &Path) -> Result<u32, VolumeError> {
    // SAFETY: a zeroed stat is a valid out-parameter for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor and a stat buffer that outlives the call.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_error(format!("checking subpath {}", what.display())));
    }
    Ok(st.st_mode & libc::S_IFMT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_refuse_symlinks_and_make_only_inside() {
        let vol = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        let root = vol.path();
        std::fs::create_dir(root.join("data")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), root.join("data/link")).expect("link");
        let fd = open_beneath(root, Path::new("data/new/deeper"), true).expect("made");
        assert_eq!(kind(&fd, Path::new("x")).expect("kind"), libc::S_IFDIR);
        assert!(root.join("data/new/deeper").is_dir());
        assert!(open_beneath(root, Path::new("data/link/x"), true).is_err());
        assert!(open_beneath(root, Path::new("data/missing"), false).is_err());
        assert!(open_beneath(root, Path::new("../x"), true).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).expect("ls").count(), 0);
        let link = open_beneath(root, Path::new("data/link"), false).expect("the link itself");
        assert_eq!(kind(&link, Path::new("x")).expect("kind"), libc::S_IFLNK);
    }
}
