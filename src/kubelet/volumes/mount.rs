//! The mounts the kubelet makes itself (tmpfs for `emptyDir.medium: Memory`, the bind mounts of
//! safe subPaths), behind a trait so volume policy is testable without privileges.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

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

fn mounted(dir: &Path) -> bool {
    mount_points().iter().any(|m| m == dir)
}

fn c_path(p: &Path) -> Result<std::ffi::CString, VolumeError> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| VolumeError::Invalid(format!("bad path {}", p.display())))
}

fn last_error(context: String) -> VolumeError {
    VolumeError::Io {
        context,
        source: std::io::Error::last_os_error(),
    }
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
        let open = |dir: Option<&OwnedFd>, name: &std::ffi::CStr, flags: i32| {
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
        };
        let mut fd = open(None, &c_path(root)?, libc::O_DIRECTORY)
            .ok_or_else(|| last_error(format!("opening volume path {}", root.display())))?;
        for part in rel.components() {
            let Component::Normal(name) = part else {
                return Err(VolumeError::Invalid(format!(
                    "subpath {} is not a plain relative path",
                    rel.display()
                )));
            };
            let name = c_path(Path::new(name))?;
            fd = open(Some(&fd), &name, libc::O_NOFOLLOW).ok_or_else(|| {
                last_error(format!(
                    "opening subpath {} beneath {} without following symlinks",
                    rel.display(),
                    root.display()
                ))
            })?;
        }
        // SAFETY: a zeroed stat is a valid out-parameter for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: an open descriptor and a stat buffer that outlives the call.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(last_error(format!("checking subpath {}", rel.display())));
        }
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFLNK {
            return Err(VolumeError::Invalid(format!(
                "subpath {} is a symlink",
                rel.display()
            )));
        }
        let made = if kind == libc::S_IFDIR {
            std::fs::create_dir_all(target)
        } else {
            target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(target)
                        .map(drop)
                })
        };
        made.map_err(|source| VolumeError::Io {
            context: format!("making subpath mount point {}", target.display()),
            source,
        })?;
        self.unmount(target);
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
        let under = |points: Vec<PathBuf>| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = points
                .into_iter()
                .filter(|m| m.starts_with(dir) && m != dir)
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
