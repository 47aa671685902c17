//! The host directory of a pod's claim: a persistentVolumeClaim volume's, or a generic ephemeral
//! volume's (`POD-VOLUME`, made by the ephemeral volume controller and owned by the pod). Either
//! is the bound volume's hostPath or local path, as the local-path provisioner makes them.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::{local_path, make_dir, VolumeError};

/// The claim of a generic ephemeral volume, `POD-VOLUME`, once the ephemeral volume controller
/// made it for this pod: one the pod does not own is refused, as upstream's kubelet does.
pub async fn ephemeral_claim(
    client: &Client,
    pod: &Pod,
    volume: &str,
) -> Result<PersistentVolumeClaim, VolumeError> {
    let ns = pod.namespace().unwrap_or_default();
    let name = crate::ephemeral_claims::claim_name(pod, volume);
    let pvc = claim(client, &ns, &name).await?;
    crate::ephemeral_claims::is_for_pod(pod, &pvc).map_err(VolumeError::Invalid)?;
    Ok(pvc)
}

/// The claim `name` in `ns`, which must exist.
pub async fn claim(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<PersistentVolumeClaim, VolumeError> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    pvcs.get_opt(name)
        .await?
        .ok_or_else(|| VolumeError::Missing(format!("persistentvolumeclaim \"{name}\" not found")))
}

/// The host directory of a bound claim's volume (hostPath or local PVs, as local-path makes).
/// A volume of the built-in local-path provisioner is noted in `notes`, for reclaiming.
pub async fn claim_path(
    client: &Client,
    pvc: PersistentVolumeClaim,
    notes: &Path,
) -> Result<PathBuf, VolumeError> {
    let claim = pvc.name_any();
    let Some(pv_name) = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|n| !n.is_empty())
    else {
        return Err(VolumeError::Missing(format!(
            "persistentvolumeclaim \"{claim}\" is not bound"
        )));
    };
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&pv_name).await?;
    let spec = pv.spec.clone().unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .ok_or_else(|| {
            VolumeError::Invalid(format!(
                "persistentvolume \"{pv_name}\" is neither hostPath nor local"
            ))
        })?;
    let path = PathBuf::from(path);
    // Noted and held before its data is made, so the data never outlives the volume (a
    // noted volume that could not be held is held on the next reclaim pass).
    local_path::note(notes, &pv, &path)?;
    local_path::hold(client, &pv, &path).await?;
    if !path.exists() {
        // A new local-path volume, open to every user, as the provisioner's `mkdir -m 0777`.
        make_dir(&path, 0o777)?;
    }
    Ok(path)
}
