//! The mounts the kubelet makes itself (tmpfs for `emptyDir.medium: Memory`), behind a trait so
//! volume policy is testable without privileges.

use std::path::Path;

use super::VolumeError;

pub trait Mounter: Send + Sync {
    /// Mounts a tmpfs of at most `size` bytes at `dir` unless one is already there.
    fn tmpfs(&self, dir: &Path, size: Option<u64>) -> Result<(), VolumeError>;
    /// Unmounts `dir` if something is mounted there.
    fn unmount(&self, dir: &Path);
}

/// mount(2) and umount2(2).
pub struct System;

fn mounted(dir: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let want = dir.to_string_lossy();
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|m| m == want)
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
