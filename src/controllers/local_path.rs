//! The built-in local-path provisioner, as k3s ships Rancher's: for a claim handed to
//! `rancher.io/local-path` (by [`super::volume_binding`]) on the node the scheduler picked
//! (`volume.kubernetes.io/selected-node`), it creates a `hostPath` volume
//! `DATA_DIR/storage/pvc-UID_NAMESPACE_NAME` (created by the kubelet on first use,
//! `DirectoryOrCreate`) pinned to that node, pre-bound to the claim, with the class's reclaim
//! policy. Removing the directory once such a volume is deleted is the kubelet's part, under
//! the finalizer it puts on the volume ([`crate::local_path`]); [`release`] takes that finalizer
//! off a volume being deleted whose node is gone for good.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::cache::{Cache, Change};
use super::pacer::Pacer;
use super::storage_protection::without;
use super::volume_binding::{PROVISIONER_ANNOTATION, SELECTED_NODE};
use crate::events::{self, Recorder, Type};
use crate::informer::Informer;
pub use crate::local_path::PROVISIONER;
use crate::local_path::{has_finalizer, pinned_node_of, FINALIZER, PROVISIONED_BY};

/// The volume provisioned for `claim` on `node` under `dir`, with `class`'s reclaim policy.
pub fn volume_for(
    claim: &PersistentVolumeClaim,
    node: &str,
    dir: &std::path::Path,
    class: Option<&StorageClass>,
) -> Result<PersistentVolume, serde_json::Error> {
    let uid = claim.uid().unwrap_or_default();
    let ns = claim.namespace().unwrap_or_default();
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned());
    let path = dir.join(format!("pvc-{uid}_{ns}_{}", claim.name_any()));
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {
            "name": format!("pvc-{uid}"),
            "annotations": {PROVISIONED_BY: PROVISIONER, "local.path.provisioner/selected-node": node},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes,
            "volumeMode": spec.volume_mode.unwrap_or_else(|| "Filesystem".into()),
            "storageClassName": spec.storage_class_name,
            "persistentVolumeReclaimPolicy": class.and_then(|c| c.reclaim_policy.clone()).unwrap_or_else(|| "Delete".into()),
            "hostPath": {"path": path.to_string_lossy(), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            "claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "name": claim.name_any(), "namespace": ns, "uid": uid,
                "resourceVersion": claim.resource_version(),
            },
        },
    }))
}

/// Runs until `stop` turns true.
pub async fn run(shared: Client, writer: Client, dir: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut claim_events = watcher(
        Api::<PersistentVolumeClaim>::all(shared.clone()),
        Default::default(),
    )
    .default_backoff()
    .boxed();
    let mut class_events = watcher(Api::<StorageClass>::all(shared), Default::default())
        .default_backoff()
        .boxed();
    let recorder = Recorder::new(writer.clone(), &format!("{PROVISIONER}_k1s"), None);
    let volumes: Api<PersistentVolume> = Api::all(writer);
    let mut claims: Cache<PersistentVolumeClaim> = Cache::default();
    let mut classes: Cache<StorageClass> = Cache::default();
    let mut dirty: HashSet<String> = HashSet::new();
    let mut pacer: Pacer<String> = Pacer::default();
    loop {
        pacer.arm(!dirty.is_empty());
        tokio::select! {
            ev = claim_events.next() => match ev {
                Some(Ok(ev)) => match claims.apply(ev) {
                    Change::Resynced => dirty.extend(claims.items.keys().cloned()),
                    Change::Applied { new, .. } => { dirty.insert(new.uid().unwrap_or_default()); }
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
        if !(claims.synced && classes.synced && pacer.ready(!dirty.is_empty())) {
            continue;
        }
        for uid in std::mem::take(&mut dirty) {
            let Some(c) = claims.items.get(&uid).cloned() else {
                continue;
            };
            let ann: &BTreeMap<String, String> = c.annotations();
            let wanted = ann.get(PROVISIONER_ANNOTATION).map(String::as_str) == Some(PROVISIONER);
            let bound = c
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_some_and(|v| !v.is_empty());
            if !wanted || bound || c.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let about = events::reference(c.as_ref());
            let Some(node) = ann.get(SELECTED_NODE) else {
                recorder
                    .record(
                        &about,
                        Type::Warning,
                        "ProvisioningFailed",
                        "configuration error, no node was specified",
                    )
                    .await;
                continue;
            };
            let class_name = c
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            let class = classes
                .items
                .values()
                .find(|s| s.name_any() == class_name)
                .map(|s| s.as_ref().clone());
            recorder
                .record(
                    &about,
                    Type::Normal,
                    "Provisioning",
                    &format!(
                        "External provisioner is provisioning volume for claim \"{}/{}\"",
                        c.namespace().unwrap_or_default(),
                        c.name_any()
                    ),
                )
                .await;
            let pv = match volume_for(&c, node, &dir, class.as_ref()) {
                Ok(pv) => pv,
                Err(e) => {
                    tracing::warn!(claim = %c.name_any(), error = %e, "building a local-path volume");
                    continue;
                }
            };
            match volumes.create(&PostParams::default(), &pv).await {
                Ok(_) => {
                    recorder
                        .record(
                            &about,
                            Type::Normal,
                            "ProvisioningSucceeded",
                            &format!("Successfully provisioned volume {}", pv.name_any()),
                        )
                        .await
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    recorder
                        .record(&about, Type::Warning, "ProvisioningFailed",
                            &format!("failed to provision volume with StorageClass \"{class_name}\": {e}"))
                        .await;
                    pacer.after(uid, Duration::from_secs(5));
                }
            }
        }
    }
}

/// Takes the local-path finalizer off volumes being deleted whose node is gone (its Node
/// deleted): no kubelet will come back for their data, which stays on that machine (its
/// kubelet removes it should the node return). Runs until `stop` turns true.
pub async fn release(
    nodes_informer: Informer<Node>,
    shared: Client,
    writer: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut node_events = nodes_informer.subscribe();
    let mut volume_events = watcher(Api::<PersistentVolume>::all(shared), Default::default())
        .default_backoff()
        .boxed();
    let recorder = Recorder::new(writer.clone(), &format!("{PROVISIONER}_k1s"), None);
    let api: Api<PersistentVolume> = Api::all(writer);
    let mut nodes: Cache<Node> = Cache::default();
    let mut volumes: Cache<PersistentVolume> = Cache::default();
    // Volumes released here that the cache may still show with the finalizer.
    let mut released: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            ev = node_events.next() => match ev {
                Some(ev) => { nodes.apply_shared(ev); }
                None => return,
            },
            ev = volume_events.next() => match ev {
                Some(Ok(ev)) => { volumes.apply(ev); }
                Some(Err(_)) => continue,
                None => return,
            },
            _ = stop.changed() => return,
        }
        if !(nodes.synced && volumes.synced) {
            continue;
        }
        let names: HashSet<String> = nodes.items.values().map(|n| n.name_any()).collect();
        released.retain(|uid| volumes.items.contains_key(uid));
        for (uid, pv) in &volumes.items {
            if pv.metadata.deletion_timestamp.is_none()
                || !has_finalizer(pv)
                || released.contains(uid)
            {
                continue;
            }
            let Some(node) = pinned_node_of(pv).filter(|n| !names.contains(n)) else {
                continue;
            };
            // Written back whole, as the binder's role may update volumes but not patch them;
            // a stale copy fails on its resourceVersion and is tried again with the next event.
            let Some(freed) = without(pv.as_ref(), FINALIZER) else {
                continue;
            };
            match api
                .replace(&pv.name_any(), &PostParams::default(), &freed)
                .await
            {
                Ok(_) => {
                    released.insert(uid.clone());
                    let message = format!(
                        "node \"{node}\" is gone: the volume's data stays on it, and its kubelet removes it should the node come back"
                    );
                    recorder
                        .record(
                            &events::reference(pv.as_ref()),
                            Type::Warning,
                            "NodeGone",
                            &message,
                        )
                        .await;
                }
                Err(e) => {
                    tracing::warn!(volume = %pv.name_any(), "releasing a local-path volume of a gone node: {e}");
                }
            }
        }
    }
}
