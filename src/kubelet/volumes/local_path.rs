//! The data of this node's local-path volumes, removed once their PersistentVolume is deleted
//! (reclaim policy Delete), as Rancher's provisioner has a helper pod do on the node.
//!
//! When the kubelet sets up a volume the built-in provisioner made
//! (`pv.kubernetes.io/provisioned-by: rancher.io/local-path`), it notes it under
//! `DATA_DIR/agent/local-path/PV_NAME` (the file holds the directory). Every
//! [`RECLAIM_EVERY`] it asks the API server after each noted volume: a 404 means the volume was
//! deleted (its claim went first, and no pod could use it then), so its directory goes. A
//! Retain volume is kept, Released, and so is its data. Only directories named `pvc-*`, as the
//! provisioner names them, are ever removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::VolumeError;

/// How often noted volumes are checked.
pub const RECLAIM_EVERY: Duration = Duration::from_secs(15);

/// The provisioner whose volumes are noted.
const PROVISIONER: &str = "rancher.io/local-path";

/// Where the notes are, beside the pods' directory (`DATA_DIR/agent/pods`).
pub fn notes_dir(pods_dir: &Path) -> PathBuf {
    pods_dir.with_file_name("local-path")
}

/// Whether `pv` is the provisioner's, with a directory it names: the volumes this module reclaims.
fn reclaimable(pv: &PersistentVolume, path: &Path) -> bool {
    pv.annotations()
        .get("pv.kubernetes.io/provisioned-by")
        .is_some_and(|p| p == PROVISIONER)
        && path.is_absolute()
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("pvc-"))
}

/// Notes that `pv`'s data is at `path` on this node, when it is a local-path volume.
pub fn note(notes: &Path, pv: &PersistentVolume, path: &Path) -> Result<(), VolumeError> {
    if !reclaimable(pv, path) {
        return Ok(());
    }
    let name = pv.name_any();
    let file = notes.join(&name);
    if std::fs::read(&file).is_ok_and(|had| had == path.as_os_str().as_encoded_bytes()) {
        return Ok(());
    }
    let io = |what: &'static str| {
        let context = format!("{what} the note of local-path volume {name}");
        move |source| VolumeError::Io { context, source }
    };
    std::fs::create_dir_all(notes).map_err(io("making the directory of"))?;
    let tmp = notes.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, path.as_os_str().as_encoded_bytes()).map_err(io("writing"))?;
    std::fs::rename(&tmp, &file).map_err(io("renaming"))
}

/// Checks every noted volume once; the directories removed.
pub async fn reclaim(client: &Client, notes: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(notes) else {
        return Vec::new();
    };
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path()) else {
            continue;
        };
        let path = PathBuf::from(String::from_utf8_lossy(&raw).into_owned());
        match api.get(&name).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // Still there (bound, or Released and retained), or no answer: keep it.
            _ => continue,
        }
        let gone = match std::fs::remove_dir_all(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                tracing::warn!(volume = %name, path = %path.display(), "removing a deleted local-path volume's data: {e}");
                false
            }
        };
        if gone {
            tracing::info!(volume = %name, path = %path.display(), "removed a deleted local-path volume's data");
            let _ = std::fs::remove_file(entry.path());
            removed.push(path);
        }
    }
    removed
}

/// Reclaims every [`RECLAIM_EVERY`] until `stop` turns true.
pub async fn run(client: Client, notes: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(RECLAIM_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        reclaim(&client, &notes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(provisioner: Option<&str>) -> PersistentVolume {
        let mut pv = PersistentVolume::default();
        pv.metadata.name = Some("pvc-1".into());
        if let Some(p) = provisioner {
            pv.annotations_mut()
                .insert("pv.kubernetes.io/provisioned-by".into(), p.into());
        }
        pv
    }

    #[test]
    fn only_the_provisioners_directories_are_noted() {
        let dir = tempfile::tempdir().expect("tmp");
        let notes = dir.path().join("local-path");
        let data = Path::new("/var/lib/k1s/storage/pvc-1_default_data");
        note(&notes, &pv(None), data).expect("not noted");
        note(&notes, &pv(Some("example.com/nfs")), data).expect("not noted");
        note(&notes, &pv(Some(PROVISIONER)), Path::new("/srv")).expect("not noted");
        assert!(!notes.exists());
        note(&notes, &pv(Some(PROVISIONER)), data).expect("noted");
        assert_eq!(
            std::fs::read_to_string(notes.join("pvc-1")).ok().as_deref(),
            Some("/var/lib/k1s/storage/pvc-1_default_data")
        );
        assert_eq!(
            notes_dir(Path::new("/d/agent/pods")),
            Path::new("/d/agent/local-path")
        );
    }
}
