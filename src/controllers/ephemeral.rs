//! The ephemeral volume controller, as upstream's: for every generic ephemeral volume of a pod
//! that is not being deleted, it creates the claim `POD-VOLUME` from the volume's
//! `volumeClaimTemplate` (its labels, annotations and spec), owned by the pod (controller, with
//! blockOwnerDeletion), so the scheduler binds it like any claim and the garbage collector
//! deletes it with the pod. A claim of that name the pod does not own is not touched; the pod
//! gets a FailedBinding event saying so.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::cache::{Cache, Change};
use super::pacer::Pacer;
use crate::ephemeral_claims::{is_for_pod, wanted_claims};
use crate::events::{self, Recorder, Type};
use crate::informer::Informer;

/// Runs until `stop` turns true: reads pods through the shared informer and claims as `shared`,
/// creates claims as `writer` (the `ephemeral-volume-controller` account).
pub async fn run(
    shared: Client,
    pod_informer: Informer<Pod>,
    writer: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut pod_events = pod_informer.subscribe();
    let mut pods: Cache<Pod> = Cache::default();
    let (claims, claim_w) = reflector::store::<PersistentVolumeClaim>();
    let mut claim_events = reflector(
        claim_w,
        watcher(
            Api::<PersistentVolumeClaim>::all(shared),
            Default::default(),
        )
        .default_backoff(),
    )
    .boxed();
    let recorder = Recorder::new(writer.clone(), "ephemeral_volume", None);
    let mut dirty: HashSet<String> = HashSet::new();
    let mut pacer: Pacer<String> = Pacer::default();
    // The last complaint recorded per pod, so a standing conflict is said once.
    let mut said: HashMap<String, String> = HashMap::new();
    let has_ephemeral = |p: &Pod| {
        p.spec
            .as_ref()
            .is_some_and(|s| s.volumes.iter().flatten().any(|v| v.ephemeral.is_some()))
    };
    loop {
        pacer.arm(!dirty.is_empty());
        tokio::select! {
            ev = pod_events.next() => match ev {
                Some(ev) => match pods.apply_shared(ev) {
                    Change::Resynced => dirty.extend(
                        pods.items.iter().filter(|(_, p)| has_ephemeral(p)).map(|(k, _)| k.clone()),
                    ),
                    Change::Applied { new, .. } if has_ephemeral(&new) => {
                        dirty.insert(new.uid().unwrap_or_default());
                    }
                    Change::Deleted(old) => { said.remove(&old.uid().unwrap_or_default()); }
                    _ => {}
                },
                None => return,
            },
            ev = claim_events.next() => match ev {
                // After a relist a claim may be gone unseen: every pod is looked at again.
                Some(Ok(watcher::Event::InitDone)) => dirty.extend(
                    pods.items.iter().filter(|(_, p)| has_ephemeral(p)).map(|(k, _)| k.clone()),
                ),
                // A claim gone (or changed hands) may have to be made again for its pod.
                Some(Ok(watcher::Event::Delete(c))) => dirty.extend(
                    pods.in_namespace(&c.namespace().unwrap_or_default())
                        .filter(|p| has_ephemeral(p))
                        .filter_map(|p| p.uid()),
                ),
                Some(_) => {}
                None => return,
            },
            due = pacer.next() => dirty.extend(due),
            _ = stop.changed() => return,
        }
        if !pods.synced || !super::ready(&claims) || !pacer.ready(!dirty.is_empty()) {
            continue;
        }
        for uid in std::mem::take(&mut dirty) {
            let Some(pod) = pods.items.get(&uid).cloned() else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Err(e) = sync_pod(&pod, &claims, &writer).await {
                if said.get(&uid) != Some(&e.message) {
                    let about = events::reference(pod.as_ref());
                    recorder
                        .record(&about, Type::Warning, "FailedBinding", &e.message)
                        .await;
                    said.insert(uid.clone(), e.message.clone());
                }
                // A claim the pod does not own may yet be deleted: looked at again, slowly.
                pacer.after(uid, Duration::from_secs(if e.retry { 5 } else { 30 }));
            }
        }
    }
}

/// Why a pod's claims could not all be made, and whether trying again may help.
struct SyncError {
    message: String,
    retry: bool,
}

async fn sync_pod(
    pod: &Arc<Pod>,
    claims: &reflector::Store<PersistentVolumeClaim>,
    writer: &Client,
) -> Result<(), SyncError> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(writer.clone(), &ns);
    for (name, claim) in wanted_claims(pod) {
        let key = reflector::ObjectRef::new(&name).within(&ns);
        if let Some(existing) = claims.get(&key) {
            is_for_pod(pod, &existing).map_err(|message| SyncError {
                message,
                retry: false,
            })?;
            continue;
        }
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {
                tracing::info!(pod = %pod.name_any(), claim = %name, "created a generic ephemeral volume's claim")
            }
            // Made a moment ago (the store lags), or by someone else: the claim's event says.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(SyncError {
                    message: format!("create PVC {name}: {e}"),
                    retry: true,
                })
            }
        }
    }
    Ok(())
}
