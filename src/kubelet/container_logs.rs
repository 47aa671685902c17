//! Container logs on the node, as upstream's container log manager and log garbage collection
//! keep them: every 10 s a running container's log past `--container-log-max-size` is renamed
//! to `N.log.YYYYMMDD-HHMMSS` and the runtime reopens it (CRI ReopenContainerLog), keeping at
//! most `--container-log-max-files` files per container (the oldest rotated ones go); rotated
//! files but the newest are gzipped (`.gz`, written through `.tmp`); each
//! container's log is linked from `/var/log/containers/POD_NAMESPACE_CONTAINER-ID.log` (the
//! directory beside `--pod-log-dir`), as log shippers expect, and links whose log is gone are
//! removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::cri::{api, Runtime, LABEL_POD_NAME, LABEL_POD_NAMESPACE};

/// How often logs are looked at (upstream's `--container-log-monitor-interval`).
const EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> LogError {
    move |source| LogError::Io { context, source }
}

/// How big a log may grow and how many files a container keeps.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_size: u64,
    pub max_files: usize,
}

/// The rotated files of `log` (`log.SUFFIX`), oldest first.
fn rotated(log: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    // By rotation time: `X.gz` with `X`, before `X-1` (two rotations in one second).
    out.sort_by_key(|p| {
        let s = p.to_string_lossy();
        s.strip_suffix(".gz")
            .map(str::to_string)
            .unwrap_or_else(|| s.into_owned())
    });
    out
}

/// Gzips `file` into `file.gz` (through `file.gz.tmp`) and removes it.
fn compress(file: &Path) -> Result<(), LogError> {
    use std::io::Write;
    let gz = PathBuf::from(format!("{}.gz", file.display()));
    let tmp = PathBuf::from(format!("{}.tmp", gz.display()));
    let mut input = std::fs::File::open(file).map_err(io(format!("opening {}", file.display())))?;
    let out = std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let done = std::io::copy(&mut input, &mut enc)
        .and_then(|_| enc.flush())
        .and_then(|()| enc.finish())
        .and_then(|f| f.sync_all());
    if let Err(source) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(LogError::Io {
            context: format!("compressing {}", file.display()),
            source,
        });
    }
    std::fs::rename(&tmp, &gz).map_err(io(format!("renaming {}", tmp.display())))?;
    std::fs::remove_file(file).map_err(io(format!("removing {}", file.display())))
}

/// Makes room for one more rotated file of `log` and renames `log` to it (suffixed with
/// `stamp`, `YYYYMMDD-HHMMSS`); the rotated file's path.
pub fn rotate_files(log: &Path, policy: Policy, stamp: &str) -> Result<PathBuf, LogError> {
    let mut old = Vec::new();
    for f in rotated(log) {
        if f.extension().is_some_and(|e| e == "tmp") {
            std::fs::remove_file(&f).map_err(io(format!("removing {}", f.display())))?;
        } else {
            old.push(f);
        }
    }
    // The live log and the one about to be rotated count among the files kept.
    // A file compressed before a crash could remove it: the plain one goes.
    old.retain(|f| {
        let gz = PathBuf::from(format!("{}.gz", f.display()));
        let stale = f.extension().is_none_or(|e| e != "gz") && gz.exists();
        if stale {
            let _ = std::fs::remove_file(f);
        }
        !stale
    });
    let keep = policy.max_files.saturating_sub(2);
    let excess = old.len().saturating_sub(keep);
    for f in old.drain(..excess) {
        std::fs::remove_file(&f).map_err(io(format!("removing {}", f.display())))?;
    }
    // Every rotated file but the newest is compressed, as upstream's log manager does.
    if let Some((_, older)) = old.split_last() {
        for f in older
            .iter()
            .filter(|f| f.extension().is_none_or(|e| e != "gz"))
        {
            // A full disk keeps it plain: the live log is still rotated.
            if let Err(e) = compress(f) {
                tracing::warn!("compressing a rotated container log: {e}");
            }
        }
    }
    let mut to = PathBuf::from(format!("{}.{stamp}", log.display()));
    let mut n = 1;
    while to.exists() {
        to = PathBuf::from(format!("{}.{stamp}-{n}", log.display()));
        n += 1;
    }
    std::fs::rename(log, &to).map_err(io(format!("renaming {}", log.display())))?;
    Ok(to)
}

/// The `/var/log/containers` link name of a container (at most 255 bytes, as upstream's).
fn link_name(pod: &str, namespace: &str, container: &str, id: &str) -> String {
    let mut name = format!("{pod}_{namespace}_{container}");
    let suffix = format!("-{id}.log");
    let room = 255usize.saturating_sub(suffix.len());
    if name.len() > room {
        let mut cut = room;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name + &suffix
}

/// Links `links/NAME` to each container's log; removes links whose log is gone.
pub fn sync_links(links: &Path, containers: &[(String, PathBuf)]) -> Result<(), LogError> {
    std::fs::create_dir_all(links).map_err(io(format!("creating {}", links.display())))?;
    for (name, target) in containers {
        let link = links.join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link)
                .map_err(io(format!("linking {}", link.display())))?;
        }
    }
    for e in std::fs::read_dir(links).into_iter().flatten().flatten() {
        let p = e.path();
        let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
        if is_link && !p.exists() {
            let _ = std::fs::remove_file(&p);
        }
    }
    Ok(())
}

/// The directory of `/var/log/containers` links for `--pod-log-dir` (its sibling).
pub fn links_dir(pod_log_dir: &Path) -> PathBuf {
    pod_log_dir.with_file_name("containers")
}

/// One pass: links every container's log, rotates running ones past the size limit.
async fn pass(
    runtime: &dyn Runtime,
    policy: Policy,
    links: &Path,
    paths: &mut HashMap<String, PathBuf>,
) {
    let containers = match runtime.list_containers(None).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("listing containers for their logs: {e}");
            return;
        }
    };
    paths.retain(|id, _| containers.iter().any(|c| &c.id == id));
    let mut named = Vec::new();
    for c in &containers {
        if !paths.contains_key(&c.id) {
            match runtime.container_status(&c.id).await {
                Ok(s) if !s.log_path.is_empty() => {
                    paths.insert(c.id.clone(), PathBuf::from(s.log_path));
                }
                _ => continue,
            }
        }
        let Some(log) = paths.get(&c.id) else {
            continue;
        };
        let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
        let container = c
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let name = link_name(
            &label(LABEL_POD_NAME),
            &label(LABEL_POD_NAMESPACE),
            &container,
            &c.id,
        );
        named.push((name, log.clone()));
        let running = c.state == api::ContainerState::ContainerRunning as i32;
        let size = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        if !running || size < policy.max_size {
            continue;
        }
        let stamp = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y%m%d-%H%M%S")
            .to_string();
        let (from, stamp) = (log.clone(), stamp.clone());
        let rotated = tokio::task::spawn_blocking(move || rotate_files(&from, policy, &stamp));
        let to = match rotated.await {
            Ok(Ok(to)) => to,
            Err(e) => {
                tracing::warn!(container = %c.id, "rotating a container log: {e}");
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!(container = %c.id, "rotating a container log: {e}");
                continue;
            }
        };
        if let Err(e) = runtime.reopen_container_log(&c.id).await {
            // Renamed back, to try again next round.
            let _ = std::fs::rename(&to, log);
            tracing::warn!(container = %c.id, "reopening a container log: {e}");
        }
    }
    if let Err(e) = sync_links(links, &named) {
        tracing::warn!("linking container logs: {e}");
    }
}

/// Looks after the containers' logs every 10 s until `stop`.
pub async fn run(
    runtime: Arc<dyn Runtime>,
    policy: Policy,
    pod_log_dir: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let links = links_dir(&pod_log_dir);
    let mut paths = HashMap::new();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => pass(runtime.as_ref(), policy, &links, &mut paths).await,
            _ = stop.changed() => return,
        }
    }
}

/// Removes the log directory of the pod `uid` (`NAMESPACE_NAME_UID` under `pod_log_dir`).
pub fn remove_pod_logs(pod_log_dir: &Path, uid: &str) {
    let suffix = format!("_{uid}");
    for e in std::fs::read_dir(pod_log_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().ends_with(&suffix) {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(dir = %e.path().display(), "removing a pod's logs: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_at_most_max_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("0.log");
        let policy = Policy {
            max_size: 10,
            max_files: 3,
        };
        for (i, stamp) in ["20261203-080000", "20261203-080010", "20261203-080020"]
            .iter()
            .enumerate()
        {
            std::fs::write(&log, format!("line {i}\n")).expect("write");
            let to = rotate_files(&log, policy, stamp).expect("rotate");
            assert_eq!(to, dir.path().join(format!("0.log.{stamp}")));
            assert!(!log.exists());
        }
        let names = |log: &Path| -> Vec<String> {
            rotated(log)
                .iter()
                .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
                .collect()
        };
        // With the live log, three files: the oldest rotated one went.
        assert_eq!(
            names(&log),
            ["0.log.20261203-080010", "0.log.20261203-080020"]
        );
        std::fs::write(dir.path().join("0.log.x.tmp"), "").expect("tmp");
        std::fs::write(&log, "live").expect("write");
        let five = Policy {
            max_size: 10,
            max_files: 5,
        };
        rotate_files(&log, five, "20261203-080030").expect("rotate");
        // The leftover temporary file went; rotated files but the newest are gzipped.
        assert_eq!(
            names(&log),
            [
                "0.log.20261203-080010.gz",
                "0.log.20261203-080020",
                "0.log.20261203-080030"
            ]
        );
        let gz = std::fs::File::open(dir.path().join("0.log.20261203-080010.gz")).expect("open");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut text)
            .expect("gunzip");
        assert_eq!(text, "line 1\n");
        // Compressed ones count among the files kept, and go oldest first.
        std::fs::write(&log, "more").expect("write");
        rotate_files(&log, policy, "20261203-080040").expect("rotate");
        assert_eq!(
            names(&log),
            ["0.log.20261203-080030", "0.log.20261203-080040"]
        );
    }

    #[test]
    fn links_follow_the_logs() {
        let dir = tempfile::tempdir().expect("tmp");
        let pods = dir.path().join("pods");
        let log = pods.join("ns_p_u1").join("c").join("0.log");
        std::fs::create_dir_all(log.parent().expect("dir")).expect("mkdir");
        std::fs::write(&log, "x").expect("write");
        let links = links_dir(&pods);
        assert_eq!(links, dir.path().join("containers"));
        let name = link_name("p", "ns", "c", "abc");
        assert_eq!(name, "p_ns_c-abc.log");
        sync_links(&links, &[(name.clone(), log.clone())]).expect("link");
        assert_eq!(
            std::fs::read_to_string(links.join(&name)).expect("read"),
            "x"
        );
        remove_pod_logs(&pods, "u1");
        assert!(!log.exists());
        sync_links(&links, &[]).expect("sweep");
        assert!(std::fs::symlink_metadata(links.join(&name)).is_err());
        assert_eq!(link_name(&"p".repeat(300), "ns", "c", "abc").len(), 255);
    }
}
