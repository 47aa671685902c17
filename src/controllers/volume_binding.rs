//! The PersistentVolume controller's binding, as upstream's `persistent-volume-binder`: a
//! pending claim is bound to the smallest Available volume that satisfies it (class, access
//! modes, volume mode, size, selector) or to the volume pre-bound to it (`claimRef`), both sides
//! written (`claimRef` and `volumeName`, then the phases, capacity and access modes). A claim no
//! volume satisfies is handed to its class's provisioner (`volume.kubernetes.io/storage-provisioner`)
//! — for `WaitForFirstConsumer` classes only once the scheduler picked a node
//! (`volume.kubernetes.io/selected-node`). A volume whose claim is gone is Released, then
//! deleted (reclaim policy Delete) or kept (Retain).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::cache::{Cache, Change};
use super::pacer::Pacer;
use crate::events::{self, Recorder, Type};
use crate::labels;
use crate::quantity;

pub const PROVISIONER_ANNOTATION: &str = "volume.kubernetes.io/storage-provisioner";
const BETA_PROVISIONER_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";

/// What the loop works on: a claim (by uid) or a volume (by name).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Claim(String),
    Volume(String),
}

fn class_of_claim(c: &PersistentVolumeClaim) -> String {
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn class_of_volume(v: &PersistentVolume) -> String {
    v.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn phase_of(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The storage a claim asks for (in thousandths of a byte).
fn requested(c: &PersistentVolumeClaim) -> i128 {
    c.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| quantity::milli(&q.0))
        .unwrap_or(0)
}

fn capacity(v: &PersistentVolume) -> i128 {
    v.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| quantity::milli(&q.0))
        .unwrap_or(0)
}

/// Whether volume `v` can serve claim `c` (ignoring who it is bound to).
pub fn satisfies(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (v.spec.as_ref(), c.spec.as_ref()) else {
        return false;
    };
    let modes = vs.access_modes.clone().unwrap_or_default();
    let wanted_modes = cs.access_modes.as_deref().unwrap_or_default();
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "Filesystem".into());
    class_of_volume(v) == class_of_claim(c)
        && wanted_modes.iter().all(|m| modes.contains(m))
        && mode(&vs.volume_mode) == mode(&cs.volume_mode)
        && capacity(v) >= requested(c)
        && cs
            .selector
            .as_ref()
            .is_none_or(|s| labels::matches(Some(s), v.labels()))
}

fn claim_ref_matches(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    v.spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| {
            r.name == c.metadata.name
                && r.namespace == c.metadata.namespace
                && r.uid
                    .as_ref()
                    .is_none_or(|u| Some(u) == c.metadata.uid.as_ref())
        })
}

struct Ctl {
    writer: Client,
    recorder: Recorder,
}

/// Runs until `stop` turns true.
pub async fn run(shared: Client, writer: Client, mut stop: watch::Receiver<bool>) {
    let mut claim_events = watcher(
        Api::<PersistentVolumeClaim>::all(shared.clone()),
        Default::default(),
    )
    .default_backoff()
    .boxed();
    let mut volume_events = watcher(
        Api::<PersistentVolume>::all(shared.clone()),
        Default::default(),
    )
    .default_backoff()
    .boxed();
    let mut class_events = watcher(Api::<StorageClass>::all(shared), Default::default())
        .default_backoff()
        .boxed();
    let ctl = Ctl {
        recorder: Recorder::new(writer.clone(), "persistentvolume-controller", None),
        writer,
    };
    let mut claims: Cache<PersistentVolumeClaim> = Cache::default();
    let mut volumes: Cache<PersistentVolume> = Cache::default();
    let mut classes: Cache<StorageClass> = Cache::default();
    let mut dirty: HashSet<Key> = HashSet::new();
    let mut pacer: Pacer<Key> = Pacer::default();
    loop {
        pacer.arm(!dirty.is_empty());
        tokio::select! {
            ev = claim_events.next() => match ev {
                Some(Ok(ev)) => match claims.apply(ev) {
                    Change::Resynced => dirty.extend(claims.items.keys().cloned().map(Key::Claim)),
                    Change::Applied { new, .. } => { dirty.insert(Key::Claim(new.uid().unwrap_or_default())); }
                    Change::Deleted(c) => {
                        // Its volume is released.
                        dirty.extend(c.spec.as_ref().and_then(|s| s.volume_name.clone()).map(Key::Volume));
                    }
                    Change::None => {}
                },
                Some(Err(_)) => continue,
                None => return,
            },
            ev = volume_events.next() => match ev {
                Some(Ok(ev)) => match volumes.apply(ev) {
                    Change::Resynced => dirty.extend(volumes.items.values().map(|v| Key::Volume(v.name_any()))),
                    Change::Applied { new, .. } => {
                        dirty.insert(Key::Volume(new.name_any()));
                        // A new or freed volume may serve a pending claim.
                        dirty.extend(claims.items.iter().filter(|(_, c)| bound_name(c).is_none()).map(|(u, _)| Key::Claim(u.clone())));
                    }
                    Change::Deleted(_) | Change::None => {}
                },
                Some(Err(_)) => continue,
                None => return,
            },
            ev = class_events.next() => match ev {
                Some(Ok(ev)) => { classes.apply(ev); }
                Some(Err(_)) => continue,
                None => return,
            },
            due = pacer.next() => dirty.extend(due),
            _ = stop.changed() => return,
        }
        if !(claims.synced && volumes.synced && classes.synced && pacer.ready(!dirty.is_empty())) {
            continue;
        }
        let mut taken: HashSet<String> = HashSet::new();
        let mut work: Vec<Key> = std::mem::take(&mut dirty).into_iter().collect();
        work.sort();
        for key in work {
            let r = match &key {
                Key::Claim(uid) => match claims.items.get(uid).cloned() {
                    Some(c) => ctl.sync_claim(&c, &volumes, &classes, &mut taken).await,
                    None => Ok(()),
                },
                Key::Volume(name) => match volumes
                    .items
                    .values()
                    .find(|v| v.name_any() == *name)
                    .cloned()
                {
                    Some(v) => ctl.sync_volume(&v, &claims).await,
                    None => Ok(()),
                },
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "binding volumes");
                pacer.after(key, Duration::from_secs(1));
            }
        }
    }
}

fn bound_name(c: &PersistentVolumeClaim) -> Option<String> {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| !n.is_empty())
}

impl Ctl {
    async fn sync_claim(
        &self,
        c: &PersistentVolumeClaim,
        volumes: &Cache<PersistentVolume>,
        classes: &Cache<StorageClass>,
        taken: &mut HashSet<String>,
    ) -> Result<(), kube::Error> {
        if c.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let ns = c.namespace().unwrap_or_default();
        let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(self.writer.clone(), &ns);
        if let Some(name) = bound_name(c) {
            // Bound on the claim's side: finish the volume's side and the claim's status.
            let Some(v) = volumes.items.values().find(|v| v.name_any() == name) else {
                return self.set_claim_phase(&claims_api, c, "Lost", None).await;
            };
            if !claim_ref_matches(v, c) {
                self.bind_volume(v, c).await?;
            }
            return self.set_claim_phase(&claims_api, c, "Bound", Some(v)).await;
        }
        // A volume pre-bound to this claim wins; else the smallest that fits.
        let mut candidates: Vec<&Arc<PersistentVolume>> = volumes
            .items
            .values()
            .filter(|v| !taken.contains(&v.name_any()) && v.metadata.deletion_timestamp.is_none())
            .filter(|v| satisfies(v, c))
            .collect();
        let pre_bound = candidates.iter().find(|v| claim_ref_matches(v, c)).cloned();
        let class = classes
            .items
            .values()
            .find(|s| s.name_any() == class_of_claim(c));
        let wait_for_consumer =
            class.and_then(|s| s.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer");
        let selected = c.annotations().get(SELECTED_NODE).cloned();
        candidates.retain(|v| {
            phase_of(v) == "Available"
                && v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none()
                && (!wait_for_consumer
                    || selected.as_deref().is_some_and(|n| volume_fits_node(v, n)))
        });
        candidates.sort_by_key(|v| capacity(v));
        if let Some(v) = pre_bound.or_else(|| candidates.first().cloned()) {
            taken.insert(v.name_any());
            let v = self.bind_volume(v, c).await?;
            let mut claim = c.clone();
            let spec = claim.spec.get_or_insert_with(Default::default);
            spec.volume_name = Some(v.name_any());
            let ann = claim
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            ann.insert(BIND_COMPLETED.into(), "yes".into());
            ann.insert(BOUND_BY_CONTROLLER.into(), "yes".into());
            let claim = claims_api
                .replace(&c.name_any(), &PostParams::default(), &claim)
                .await?;
            return self
                .set_claim_phase(&claims_api, &claim, "Bound", Some(&v))
                .await;
        }
        let about = events::reference(c);
        if wait_for_consumer && selected.is_none() {
            self.recorder
                .record(
                    &about,
                    Type::Normal,
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding",
                )
                .await;
            return self.set_claim_phase(&claims_api, c, "Pending", None).await;
        }
        match class.map(|s| s.provisioner.clone()) {
            Some(provisioner)
                if c.annotations().get(PROVISIONER_ANNOTATION) != Some(&provisioner) =>
            {
                let mut claim = c.clone();
                let ann = claim
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default);
                ann.insert(PROVISIONER_ANNOTATION.into(), provisioner.clone());
                ann.insert(BETA_PROVISIONER_ANNOTATION.into(), provisioner.clone());
                claims_api
                    .replace(&c.name_any(), &PostParams::default(), &claim)
                    .await?;
                self.recorder
                    .record(&about, Type::Normal, "ExternalProvisioning",
                        &format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."))
                    .await;
            }
            Some(_) => {}
            None if class_of_claim(c).is_empty() => {
                self.recorder
                    .record(&about, Type::Normal, "FailedBinding",
                        "no persistent volumes available for this claim and no storage class is set")
                    .await;
            }
            None => {
                self.recorder
                    .record(
                        &about,
                        Type::Warning,
                        "ProvisioningFailed",
                        &format!(
                            "storageclass.storage.k8s.io \"{}\" not found",
                            class_of_claim(c)
                        ),
                    )
                    .await;
            }
        }
        self.set_claim_phase(&claims_api, c, "Pending", None).await
    }

    /// Points volume `v` at claim `c` and marks it Bound.
    async fn bind_volume(
        &self,
        v: &PersistentVolume,
        c: &PersistentVolumeClaim,
    ) -> Result<PersistentVolume, kube::Error> {
        let api: Api<PersistentVolume> = Api::all(self.writer.clone());
        let mut vol = v.clone();
        let wanted = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            name: c.metadata.name.clone(),
            namespace: c.metadata.namespace.clone(),
            uid: c.metadata.uid.clone(),
            resource_version: c.metadata.resource_version.clone(),
            field_path: None,
        };
        let spec = vol.spec.get_or_insert_with(Default::default);
        if spec.claim_ref.as_ref().and_then(|r| r.uid.as_ref()) != c.metadata.uid.as_ref() {
            spec.claim_ref = Some(wanted);
            vol.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
            vol = api
                .replace(&v.name_any(), &PostParams::default(), &vol)
                .await?;
        }
        if phase_of(&vol) != "Bound" {
            vol.status = Some(PersistentVolumeStatus {
                phase: Some("Bound".into()),
                ..vol.status.clone().unwrap_or_default()
            });
            vol = api
                .replace_status(&v.name_any(), &PostParams::default(), &vol)
                .await?;
        }
        Ok(vol)
    }

    async fn set_claim_phase(
        &self,
        api: &Api<PersistentVolumeClaim>,
        c: &PersistentVolumeClaim,
        phase: &str,
        v: Option<&PersistentVolume>,
    ) -> Result<(), kube::Error> {
        let old = c.status.clone().unwrap_or_default();
        let mut status = PersistentVolumeClaimStatus {
            phase: Some(phase.into()),
            ..old.clone()
        };
        if let Some(v) = v {
            status.capacity = v.spec.as_ref().and_then(|s| s.capacity.clone());
            status.access_modes = v.spec.as_ref().and_then(|s| s.access_modes.clone());
        }
        if status == old {
            return Ok(());
        }
        let mut claim = c.clone();
        claim.status = Some(status);
        api.replace_status(&c.name_any(), &PostParams::default(), &claim)
            .await
            .map(|_| ())
    }

    async fn sync_volume(
        &self,
        v: &PersistentVolume,
        claims: &Cache<PersistentVolumeClaim>,
    ) -> Result<(), kube::Error> {
        if v.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let api: Api<PersistentVolume> = Api::all(self.writer.clone());
        let claim_ref = v.spec.as_ref().and_then(|s| s.claim_ref.clone());
        let phase = match &claim_ref {
            None => "Available",
            Some(r) => {
                let claim = claims
                    .items
                    .values()
                    .find(|c| c.metadata.name == r.name && c.metadata.namespace == r.namespace);
                match (claim, &r.uid) {
                    (Some(c), Some(uid)) if c.metadata.uid.as_ref() == Some(uid) => {
                        if bound_name(c).as_deref() == Some(v.name_any().as_str()) {
                            "Bound"
                        } else {
                            // Pre-bound, the claim not yet pointing back.
                            phase_of(v)
                        }
                    }
                    (Some(_), None) => phase_of(v),
                    // The claim it was bound to is gone.
                    _ if phase_of(v) == "Bound" || phase_of(v) == "Released" => "Released",
                    _ => phase_of(v),
                }
            }
        };
        let mut v = v.clone();
        if phase_of(&v) != phase || v.status.is_none() {
            v.status = Some(PersistentVolumeStatus {
                phase: Some(phase.into()),
                ..v.status.clone().unwrap_or_default()
            });
            v = api
                .replace_status(&v.name_any(), &PostParams::default(), &v)
                .await?;
        }
        let policy = v
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            .unwrap_or("Retain");
        if phase == "Released" && policy == "Delete" {
            // Released first, so the PV protection finalizer lets it go.
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: v.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            return match api.delete(&v.name_any(), &dp).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(e),
            };
        }
        Ok(())
    }
}

/// Whether volume `v`'s node affinity admits the node named `node` (by its hostname label,
/// which is the node name on k1s's nodes).
pub fn volume_fits_node(v: &PersistentVolume, node: &str) -> bool {
    let required = v
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref());
    let Some(sel) = required else {
        return true;
    };
    let labels = std::collections::BTreeMap::from([(
        "kubernetes.io/hostname".to_string(),
        node.to_string(),
    )]);
    sel.node_selector_terms
        .iter()
        .any(|t| crate::placement::term_matches(t, node, &labels))
}
