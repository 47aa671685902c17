//! The data of this node's local-path volumes, removed once their PersistentVolume is deleted
//! (reclaim policy Delete), as Rancher's provisioner has a helper pod do on the node.
//!
//! Before the kubelet first sets up a volume the built-in provisioner made, it puts the
//! [`FINALIZER`] on it and notes it under `DATA_DIR/agent/local-path/PV_NAME` (its directory,
//! uid and reclaim policy). Every [`RECLAIM_EVERY`] it asks the API server after each noted
//! volume: one being deleted, no longer bound and held by nothing else (PV protection lets go
//! once no claim or pod uses it), has its directory removed when its policy is Delete or kept
//! when Retain, then the finalizer taken off, and the volume goes. A volume found gone (its finalizer removed by hand) has its data
//! removed only when last seen with policy Delete. Only directories named `pvc-*`, as the
//! provisioner names them, are ever removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::VolumeError;
use crate::local_path::{
    add_finalizer_patch, has_finalizer, provisioned, remove_finalizer_patch, FINALIZER,
};

/// How often noted volumes are checked.
pub const RECLAIM_EVERY: Duration = Duration::from_secs(15);

/// Where the notes are, beside the pods' directory (`DATA_DIR/agent/pods`).
pub fn notes_dir(pods_dir: &Path) -> PathBuf {
    pods_dir.with_file_name("local-path")
}

/// Whether `pv` is the provisioner's, with a directory it names: the volumes this module reclaims.
fn reclaimable(pv: &PersistentVolume, path: &Path) -> bool {
    provisioned(pv)
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
        policy: policy(pv).into(),
    }
}

fn policy(pv: &PersistentVolume) -> &str {
    pv.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Delete")
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

/// Puts the [`FINALIZER`] on a local-path volume whose data is to be at `path` on this node,
/// so the volume is not gone before its data is dealt with: called before the data is made.
pub async fn hold(client: &Client, pv: &PersistentVolume, path: &Path) -> Result<(), VolumeError> {
    if !reclaimable(pv, path) {
        return Ok(());
    }
    let Some(patch) = add_finalizer_patch(pv) else {
        return Ok(());
    };
    if pv.metadata.deletion_timestamp.is_some() {
        return Err(VolumeError::Invalid(format!(
            "persistentvolume \"{}\" is being deleted",
            pv.name_any()
        )));
    }
    let api: Api<PersistentVolume> = Api::all(client.clone());
    api.patch(
        &pv.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Removes a deleted volume's data at `path`: whether it is gone.
fn remove_data(name: &str, path: &Path) -> bool {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {
            tracing::info!(volume = %name, path = %path.display(), "removed a deleted local-path volume's data");
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(volume = %name, path = %path.display(), "removing a deleted local-path volume's data: {e}");
            false
        }
    }
}

/// Deals with a noted volume as the API server has it now: whether its note is done with.
async fn settle(client: &Client, notes: &Path, noted: &Note, pv: &PersistentVolume) -> bool {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let name = pv.name_any();
    if pv.uid().is_some_and(|u| u != noted.uid) {
        // Another volume of the same name: the noted one is long gone.
        return true;
    }
    if pv.metadata.deletion_timestamp.is_none() {
        // Seen again: its policy (an admin may switch it to Retain) and uid kept current, and
        // the finalizer put on a volume noted before it was used.
        let now = note_of(pv, &noted.path);
        if now != *noted && reclaimable(pv, &noted.path) {
            if let Err(e) = write_note(notes, &name, &now) {
                tracing::warn!(volume = %name, "updating a local-path volume's note: {e}");
            }
        }
        if let Err(e) = hold(client, pv, &noted.path).await {
            tracing::warn!(volume = %name, "putting the {FINALIZER} finalizer on a local-path volume: {e}");
        }
        return false;
    }
    if !has_finalizer(pv) {
        // Not ours to hold (the finalizer was taken off by hand): left to go.
        return false;
    }
    let others = pv.finalizers().iter().any(|f| f != FINALIZER);
    let bound = pv
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Bound");
    if others || bound {
        // Still bound, or still in use (PV protection holds it): its data stays until the
        // volume is let go by all else.
        return false;
    }
    if policy(pv) == "Delete" {
        if !remove_data(&name, &noted.path) {
            return false;
        }
    } else {
        tracing::info!(volume = %name, path = %noted.path.display(), "a retained local-path volume is being deleted; its data is kept");
    }
    match remove_finalizer_patch(pv) {
        Some(patch) => match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.code == 404 => true,
            Err(e) => {
                tracing::warn!(volume = %name, "taking the {FINALIZER} finalizer off a local-path volume: {e}");
                false
            }
        },
        None => true,
    }
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
        let done = match api.get(&name).await {
            Ok(pv) => {
                let done = settle(client, notes, &noted, &pv).await;
                if done && pv.metadata.deletion_timestamp.is_some() && policy(&pv) == "Delete" {
                    removed.push(noted.path.clone());
                }
                done
            }
            // Gone without this kubelet (its finalizer taken off by hand): the data goes
            // only when the volume was last seen with policy Delete.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                if noted.policy != "Delete" {
                    tracing::info!(volume = %name, path = %noted.path.display(), "a retained local-path volume was deleted; its data is kept");
                    true
                } else if remove_data(&name, &noted.path) {
                    removed.push(noted.path.clone());
                    true
                } else {
                    false
                }
            }
            // No answer (or a volume this node may no longer see): ask again next time.
            Err(_) => false,
        };
        if done {
            let _ = std::fs::remove_file(entry.path());
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
                .insert(crate::local_path::PROVISIONED_BY.into(), p.into());
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
        note(
            &notes,
            &pv(Some(crate::local_path::PROVISIONER)),
            Path::new("/srv"),
        )
        .expect("not noted");
        assert!(!notes.exists());
        note(&notes, &pv(Some(crate::local_path::PROVISIONER)), data).expect("noted");
        let noted = read_note(&notes.join("pvc-1")).expect("a note");
        assert_eq!(noted.path, data);
        assert_eq!(noted.policy, "Delete");
        assert_eq!(
            notes_dir(Path::new("/d/agent/pods")),
            Path::new("/d/agent/local-path")
        );
    }
}
