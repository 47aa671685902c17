//! The PVC and PV protection controllers: a claim being deleted keeps its
//! `kubernetes.io/pvc-protection` finalizer while a pod that has not finished uses it, and a
//! volume being deleted keeps `kubernetes.io/pv-protection` while it is bound; then the
//! finalizer goes and the deletion completes.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch;

use super::cache::Cache;
use crate::informer::Informer;

const PVC: &str = "kubernetes.io/pvc-protection";
const PV: &str = "kubernetes.io/pv-protection";

/// Whether a pod that has not finished uses the claim `name` in `ns`.
fn claim_in_use(pods: &[std::sync::Arc<Pod>], ns: &str, name: &str) -> bool {
    pods.iter().any(|p| {
        p.namespace().as_deref() == Some(ns)
            && !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
            && p.spec.as_ref().is_some_and(|s| {
                s.volumes.iter().flatten().any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == name)
                        || (v.ephemeral.is_some()
                            && crate::ephemeral_claims::claim_name(p, &v.name) == name)
                })
            })
    })
}

/// The object without `finalizer`, if it has it (written back with update, which the
/// controllers' roles allow, guarded by the resourceVersion it carries).
pub(super) fn without<K: Resource + Clone>(obj: &K, finalizer: &str) -> Option<K> {
    let list = obj.meta().finalizers.clone().unwrap_or_default();
    if !list.iter().any(|f| f == finalizer) {
        return None;
    }
    let mut out = obj.clone();
    out.meta_mut().finalizers = Some(list.into_iter().filter(|f| f != finalizer).collect());
    Some(out)
}

/// Runs both until `stop` turns true. `shared` reads; `pvc_writer` and `pv_writer` write as the
/// two controllers' accounts.
pub async fn run(
    shared: Client,
    pod_informer: Informer<Pod>,
    pvc_writer: Client,
    pv_writer: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut pod_events = pod_informer.subscribe();
    let mut pods: Cache<Pod> = Cache::default();
    let (claims, claim_w) = reflector::store::<PersistentVolumeClaim>();
    let (volumes, volume_w) = reflector::store::<PersistentVolume>();
    let cfg = watcher::Config::default;
    let streams = vec![
        reflector(
            claim_w,
            watcher(Api::<PersistentVolumeClaim>::all(shared.clone()), cfg()).default_backoff(),
        )
        .map(|e| e.is_ok())
        .boxed(),
        reflector(
            volume_w,
            watcher(Api::<PersistentVolume>::all(shared.clone()), cfg()).default_backoff(),
        )
        .map(|e| e.is_ok())
        .boxed(),
    ];
    let mut events = futures::stream::select_all(streams);
    loop {
        tokio::select! {
            ev = pod_events.next() => match ev {
                Some(ev) => { pods.apply_shared(ev); }
                None => return,
            },
            more = events.next() => if more.is_none() { return },
            _ = stop.changed() => return,
        }
        if !pods.synced || !super::ready(&claims) || !super::ready(&volumes) {
            continue;
        }
        for c in claims.state() {
            if c.metadata.deletion_timestamp.is_none() {
                continue;
            }
            let ns = c.namespace().unwrap_or_default();
            let in_ns: Vec<std::sync::Arc<Pod>> = pods.in_namespace(&ns).cloned().collect();
            if claim_in_use(&in_ns, &ns, &c.name_any()) {
                continue;
            }
            if let Some(released) = without(c.as_ref(), PVC) {
                let api: Api<PersistentVolumeClaim> = Api::namespaced(pvc_writer.clone(), &ns);
                if let Err(e) = api
                    .replace(&c.name_any(), &PostParams::default(), &released)
                    .await
                {
                    tracing::debug!(claim = %c.name_any(), error = %e, "releasing a claim");
                }
            }
        }
        for v in volumes.state() {
            let bound = v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            if v.metadata.deletion_timestamp.is_none() || bound {
                continue;
            }
            if let Some(released) = without(v.as_ref(), PV) {
                let api: Api<PersistentVolume> = Api::all(pv_writer.clone());
                if let Err(e) = api
                    .replace(&v.name_any(), &PostParams::default(), &released)
                    .await
                {
                    tracing::debug!(volume = %v.name_any(), error = %e, "releasing a volume");
                }
            }
        }
    }
}
