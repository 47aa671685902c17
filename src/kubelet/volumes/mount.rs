//! The mounts the kubelet makes itself (tmpfs for `emptyDir.medium: Memory`, the bind mounts of
//! safe subPaths), behind a trait so volume policy is testable without privileges.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::nofollow::{self, c_path, last_error};

use super::VolumeError;

pub trait Mounter: Send + Sync {
    /// Mounts a tmpfs of at most `size` bytes at `dir` unless one is already there.
    fn tmpfs(&self, dir: &Path, size: Option<u64>) -> Result<(), VolumeError>;
    /// Unmounts `dir` if something is mounted there.
    fn unmount(&self, dir: &Path);
    /// Bind-mounts `rel` beneath the directory `root` at `target` (made as a directory or an
    /// empty file to match), opening each component of `rel` without following symlinks and
    /// mounting from the open file; whatever was mounted at `target` before goes first.
    fn bind_beneath(&self, root: &Path, rel: &Path, target: &Path) -> Result<(), VolumeError>;
    /// Unmounts everything mounted under `dir`, deepest first; whether nothing is left.
    fn unmount_under(&self, dir: &Path) -> bool;
}

/// mount(2) and umount2(2).
pub struct System;

/// A new empty directory, or a new empty file (never an existing one opened), to bind onto.
fn make_mount_point(target: &Path, dir: bool) -> std::io::Result<()> {
    if dir {
        return std::fs::create_dir_all(target);
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map(drop)
}

/// Removes `dir` and everything in it, never entering a mount point (a bind still mounted
/// there would lead into a volume's data); whether all of it went.
pub fn remove_unmounted(dir: &Path) -> bool {
    let dir = canonical(dir);
    let points: std::collections::HashSet<PathBuf> = mount_points().into_iter().collect();
    fn walk(p: &Path, points: &std::collections::HashSet<PathBuf>) -> bool {
        if points.contains(p) {
            tracing::warn!(path = %p.display(), "not removed: something is mounted there");
            return false;
        }
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return true;
        };
        if !meta.is_dir() {
            return std::fs::remove_file(p).is_ok();
        }
        let mut all = true;
        if let Ok(entries) = std::fs::read_dir(p) {
            for e in entries.flatten() {
                all &= walk(&e.path(), points);
            }
        }
        all && std::fs::remove_dir(p).is_ok()
    }
    walk(&dir, &points)
}

/// The mount points this process sees (`/proc/self/mounts`, octal escapes undone).
fn mount_points() -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|m| PathBuf::from(unescape(m)))
        .collect()
}

/// A mount point as the kernel writes it: space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = Vec::new();
    let b = field.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `p` with symlinks resolved, as the mount table shows paths (as given when it is gone).
fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

fn mounted(dir: &Path) -> bool {
    let dir = canonical(dir);
    mount_points().contains(&dir)
}

impl Mounter for System {
    fn tmpfs(&self, dir: &Path, size: Option<u64>) -> Result<(), VolumeError> {
        use std::os::unix::ffi::OsStrExt;
        if mounted(dir) {
            return Ok(());
        }
        let target = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| VolumeError::Invalid(format!("bad path {}", dir.display())))?;
        let data = size.map_or_else(String::new, |s| format!("size={s}"));
        let data = std::ffi::CString::new(data).unwrap_or_default();
        let fstype = c"tmpfs";
        // SAFETY: all pointers are NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(VolumeError::Io {
                context: format!("mounting a tmpfs at {}", dir.display()),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn bind_beneath(&self, root: &Path, rel: &Path, target: &Path) -> Result<(), VolumeError> {
        let fd = nofollow::open_beneath(root, rel, true)?;
        let kind = nofollow::kind(&fd, rel)?;
        if kind == libc::S_IFLNK {
            return Err(VolumeError::Invalid(format!(
                "subpath {} is a symlink",
                rel.display()
            )));
        }
        // The last run's bind goes first: what is under it is the kubelet's own mount point.
        self.unmount(target);
        let dir = kind == libc::S_IFDIR;
        let io = |what: &str| {
            let context = format!("{what} subpath mount point {}", target.display());
            move |source| VolumeError::Io { context, source }
        };
        match std::fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() == dir && !m.file_type().is_symlink() => {}
            Ok(m) => {
                // A subPath that changed between a file and a directory.
                if m.is_dir() {
                    std::fs::remove_dir(target).map_err(io("replacing"))?;
                } else {
                    std::fs::remove_file(target).map_err(io("replacing"))?;
                }
                make_mount_point(target, dir).map_err(io("making"))?;
            }
            Err(_) => make_mount_point(target, dir).map_err(io("making"))?,
        }
        let source = c_path(&PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))?;
        let dest = c_path(target)?;
        // SAFETY: NUL-terminated paths that outlive the call; a bind mount takes no data.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                dest.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(last_error(format!(
                "bind-mounting subpath {} at {}",
                rel.display(),
                target.display()
            )));
        }
        Ok(())
    }

    fn unmount_under(&self, dir: &Path) -> bool {
        let dir = canonical(dir);
        let under = |points: Vec<PathBuf>| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = points
                .into_iter()
                .filter(|m| m.starts_with(&dir) && *m != dir)
                .collect();
            v.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
            v.dedup();
            v
        };
        for m in under(mount_points()) {
            if let Ok(target) = c_path(&m) {
                // SAFETY: a NUL-terminated path; MNT_DETACH never blocks on busy mounts.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            }
        }
        under(mount_points()).is_empty()
    }

    fn unmount(&self, dir: &Path) {
        use std::os::unix::ffi::OsStrExt;
        if !mounted(dir) {
            return;
        }
        if let Ok(target) = std::ffi::CString::new(dir.as_os_str().as_bytes()) {
            // SAFETY: a NUL-terminated path; MNT_DETACH never blocks on busy mounts.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape("/var/lib/a\\040b"), "/var/lib/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trailing\\04"), "/trailing\\04");
    }
}
