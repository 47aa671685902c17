//! subPath and subPathExpr mounts made safe, as upstream's kubelet makes them since
//! CVE-2017-1002101: a container can put symlinks in a volume, and a subPath naming one must not
//! hand it the host.
//!
//! The subPath is resolved inside the volume: symlinks that stay inside are followed, one that
//! leads out is refused (`subpath ... not within volume path ...`). Then what it names is
//! opened component by component without following symlinks (missing directories made on the
//! way with `mkdirat`, as upstream's `doSafeMakeDir`) and
//! bind-mounted from that open file to `PODS_DIR/UID/volume-subpaths/VOLUME/CONTAINER/INDEX`
//! ([`Mounter::bind_beneath`]), which is what the runtime mounts: a directory swapped for a
//! symlink between the check and the mount makes the open fail instead of escaping. The pod's
//! files are removed only once nothing is mounted under them.

use std::path::{Component, Path, PathBuf};

use super::mount::Mounter;
use super::VolumeError;

/// Where container `container`'s `index`-th volumeMount (a subPath of `volume`) is bound.
pub fn target(pod_dir: &Path, volume: &str, container: &str, index: usize) -> PathBuf {
    pod_dir
        .join("volume-subpaths")
        .join(volume)
        .join(container)
        .join(index.to_string())
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> VolumeError {
    move |source| VolumeError::Io { context, source }
}

/// `sub` inside the volume at `root`: the resolved root, and the resolved path relative to it
/// (its missing part as written). Refused when what exists of it resolves outside.
pub fn resolve(root: &Path, sub: &str) -> Result<(PathBuf, PathBuf), VolumeError> {
    let root = root
        .canonicalize()
        .map_err(io(format!("resolving volume path {}", root.display())))?;
    let mut existing = root.join(sub);
    let mut missing = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
            break;
        };
        missing.push(name);
        existing.pop();
    }
    let outside = |p: &Path| {
        VolumeError::Invalid(format!(
            "subpath {:?} not within volume path {:?}",
            p.display().to_string(),
            root.display().to_string()
        ))
    };
    let resolved = existing
        .canonicalize()
        .map_err(io(format!("resolving subpath {sub:?}")))?;
    if !resolved.starts_with(&root) {
        return Err(outside(&resolved));
    }
    // What is missing is made by the bind's walk, beneath the volume and never through a
    // symlink (a directory swapped for one meanwhile fails it).
    let mut rel = resolved
        .strip_prefix(&root)
        .map_err(|_| outside(&resolved))?
        .to_path_buf();
    for name in missing.into_iter().rev() {
        rel.push(name);
    }
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(outside(&resolved));
    }
    Ok((root, rel))
}

/// Prepares a subPath mount: resolves `sub` in the volume at `root` and binds it at `target`.
pub fn prepare(
    mounter: &dyn Mounter,
    root: &Path,
    sub: &str,
    target: &Path,
) -> Result<(), VolumeError> {
    let (root, rel) = resolve(root, sub)?;
    mounter.bind_beneath(&root, &rel, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subpaths_stay_inside_their_volume() {
        let vol = tempfile::tempdir().expect("tmp");
        let root = vol.path();
        std::fs::create_dir(root.join("data")).expect("mkdir");
        std::fs::write(root.join("data/file"), b"x").expect("write");
        std::os::unix::fs::symlink("data", root.join("inside")).expect("link");
        std::os::unix::fs::symlink("/etc", root.join("escape")).expect("link");
        std::os::unix::fs::symlink("../..", root.join("data/up")).expect("link");

        assert_eq!(resolve(root, "data").expect("dir").1, Path::new("data"));
        assert_eq!(
            resolve(root, "inside/file").expect("a link inside").1,
            Path::new("data/file")
        );
        assert_eq!(
            resolve(root, "new/deeper").expect("missing").1,
            Path::new("new/deeper")
        );
        assert_eq!(
            resolve(root, "inside/made")
                .expect("missing behind a link")
                .1,
            Path::new("data/made")
        );
        for bad in ["escape", "escape/passwd", "data/up", "data/up/x/y"] {
            let err = resolve(root, bad).expect_err(bad).to_string();
            assert!(err.contains("not within volume path"), "{bad}: {err}");
        }
        let above = root.parent().expect("a parent").join("x");
        assert!(!above.exists(), "nothing made outside");
        assert_eq!(
            target(Path::new("/p/uid"), "vol", "c", 2),
            Path::new("/p/uid/volume-subpaths/vol/c/2")
        );
    }
}
