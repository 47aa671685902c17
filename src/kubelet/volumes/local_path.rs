//! The data of this node's local-path volumes, removed once their PersistentVolume is deleted
//! (reclaim policy Delete), as Rancher's provisioner has a helper pod do on the node.
//!
//! When the kubelet sets up a volume the built-in provisioner made
//! (`pv.kubernetes.io/provisioned-by: rancher.io/local-path`), it notes it under
//! `DATA_DIR/agent/local-path/PV_NAME` (its directory, uid and reclaim policy). Every
//! [`RECLAIM_EVERY`] it asks the API server after each noted volume, keeping the note's policy
//! current: a 404 for a volume last seen with policy Delete means it was deleted (its claim
//! went first, and no pod could use it then), so its directory goes. A Retain volume keeps its
//! data, even once deleted by hand. Only directories named `pvc-*`, as the provisioner names
//! them, are ever removed.

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

/// What is noted of a volume: where its data is and how it was last seen.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Note {
    path: PathBuf,
    uid: String,
    /// Its reclaim policy when last seen: only a `Delete` volume's data is ever removed.
    policy: String,
}

fn note_of(pv: &PersistentVolume, path: &Path) -> Note {
    Note {
        path: path.to_path_buf(),
        uid: pv.uid().unwrap_or_default(),
        policy: pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.clone())
            .unwrap_or_else(|| "Delete".into()),
    }
}

fn write_note(notes: &Path, name: &str, note: &Note) -> Result<(), VolumeError> {
    let io = |what: &'static str| {
        let context = format!("{what} the note of local-path volume {name}");
        move |source| VolumeError::Io { context, source }
    };
    let text = serde_json::to_vec(note).map_err(|e| VolumeError::Invalid(e.to_string()))?;
    std::fs::create_dir_all(notes).map_err(io("making the directory of"))?;
    let tmp = notes.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).map_err(io("writing"))?;
    std::fs::rename(&tmp, notes.join(name)).map_err(io("renaming"))
}

fn read_note(file: &Path) -> Option<Note> {
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

/// Notes that `pv`'s data is at `path` on this node, when it is a local-path volume.
pub fn note(notes: &Path, pv: &PersistentVolume, path: &Path) -> Result<(), VolumeError> {
    if !reclaimable(pv, path) {
        return Ok(());
    }
    let name = pv.name_any();
    let want = note_of(pv, path);
    if read_note(&notes.join(&name)).as_ref() == Some(&want) {
        return Ok(());
    }
    write_note(notes, &name, &want)
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
        let Some(noted) = read_note(&entry.path()) else {
            continue;
        };
        match api.get(&name).await {
            // Seen again: its policy (an admin may switch it to Retain) and uid kept current.
            Ok(pv) => {
                let now = note_of(&pv, &noted.path);
                if now != noted && reclaimable(&pv, &noted.path) {
                    if let Err(e) = write_note(notes, &name, &now) {
                        tracing::warn!(volume = %name, "updating a local-path volume's note: {e}");
                    }
                }
                continue;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // No answer: ask again next time.
            Err(_) => continue,
        }
        if noted.policy != "Delete" {
            // A retained volume deleted by hand keeps its data, as upstream's provisioner does.
            tracing::info!(volume = %name, path = %noted.path.display(), "a retained local-path volume was deleted; its data is kept");
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        let path = noted.path;
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
        let noted = read_note(&notes.join("pvc-1")).expect("a note");
        assert_eq!(noted.path, data);
        assert_eq!(noted.policy, "Delete");
        assert_eq!(
            notes_dir(Path::new("/d/agent/pods")),
            Path::new("/d/agent/local-path")
        );
    }
}
