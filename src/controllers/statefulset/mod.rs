//! The StatefulSet controller, as upstream's: a StatefulSet owns pods with stable names
//! (`NAME-0`, `NAME-1`, ... from `spec.ordinals.start`), each with its own claims from
//! `volumeClaimTemplates` (`TEMPLATE-NAME-i`), its hostname and the set's service as subdomain.
//! `OrderedReady` creates them one at a time in order, each after the one before is Running and
//! Ready, and removes surplus pods from the highest ordinal down, one at a time; `Parallel` does
//! both all at once. Templates are kept as ControllerRevisions ([`super::history`]) and each pod
//! is labelled with its revision (`controller-revision-hash`). `RollingUpdate` replaces pods
//! whose revision is out of date from the highest ordinal down to `partition`, one at a time and
//! only while the rest are healthy; `OnDelete` leaves that to the user. The claim retention
//! policy decides whether claims go with the set (`whenDeleted`) or with a scaled-away pod
//! (`whenScaled`). The status carries the counts and the current and update revisions that
//! `kubectl rollout status|history|undo` read.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::cache::{controller_of, orphan, Cache, Change};
use super::pacer::Pacer;
use crate::events::Recorder;
use crate::informer::Informer;
use crate::labels;

mod claims;
mod sync;

/// The pod label naming the revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The pod label with the pod's own name (so a Service can select one pod).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The pod label with its ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

const KIND: &str = "StatefulSet";

struct Ctl {
    writer: Client,
    recorder: Recorder,
}

/// The ordinal of a pod of set `set`, if its name is one of the set's.
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    if rest.starts_with('+') || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse().ok().filter(|n: &i32| *n >= 0)
}

fn controller_ref(set: &StatefulSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: KIND.into(),
        name: set.name_any(),
        uid: set.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Sets in the namespace that could adopt an orphan (their selector and naming match it).
fn adopters<K: kube::Resource>(
    obj: &K,
    sets: &Cache<StatefulSet>,
    name_matters: bool,
) -> Vec<String> {
    if !orphan(obj) {
        return Vec::new();
    }
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let name = obj.meta().name.clone().unwrap_or_default();
    sets.in_namespace(&ns)
        .filter(|s| labels::matches(Some(&s.spec.selector), obj.labels()))
        .filter(|s| !name_matters || ordinal(&s.name_any(), &name).is_some())
        .map(|s| s.uid().unwrap_or_default())
        .collect()
}

/// Runs until `stop` turns true.
pub async fn run(
    shared: Client,
    pod_informer: Informer<Pod>,
    writer: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut set_events = watcher(Api::<StatefulSet>::all(shared.clone()), Default::default())
        .default_backoff()
        .boxed();
    let mut pod_events = pod_informer.subscribe();
    let mut rev_events = watcher(Api::<ControllerRevision>::all(shared), Default::default())
        .default_backoff()
        .boxed();
    let ctl = Ctl {
        recorder: Recorder::new(writer.clone(), "statefulset-controller", None),
        writer,
    };
    let mut sets: Cache<StatefulSet> = Cache::default();
    let mut pods: Cache<Pod> = Cache::default();
    let mut revisions: Cache<ControllerRevision> = Cache::default();
    let mut dirty: HashSet<String> = HashSet::new();
    let mut pacer: Pacer<String> = Pacer::default();
    loop {
        pacer.arm(!dirty.is_empty());
        tokio::select! {
            ev = set_events.next() => match ev {
                Some(Ok(ev)) => match sets.apply(ev) {
                    Change::Resynced => dirty.extend(sets.items.keys().cloned()),
                    Change::Applied { new, .. } => { dirty.insert(new.uid().unwrap_or_default()); }
                    Change::Deleted(_) | Change::None => {}
                },
                Some(Err(_)) => continue,
                None => return,
            },
            ev = pod_events.next() => match ev {
                Some(ev) => match pods.apply_shared(ev) {
                    Change::Resynced => dirty.extend(sets.items.keys().cloned()),
                    Change::Applied { new, old } => {
                        for p in std::iter::once(&new).chain(old.as_ref()) {
                            dirty.extend(controller_of(p.as_ref(), KIND));
                        }
                        dirty.extend(adopters(new.as_ref(), &sets, true));
                    }
                    Change::Deleted(p) => dirty.extend(controller_of(p.as_ref(), KIND)),
                    Change::None => {}
                },
                None => return,
            },
            ev = rev_events.next() => match ev {
                Some(Ok(ev)) => match revisions.apply(ev) {
                    Change::Resynced => dirty.extend(sets.items.keys().cloned()),
                    Change::Applied { new: r, .. } | Change::Deleted(r) => {
                        dirty.extend(controller_of(r.as_ref(), KIND));
                    }
                    Change::None => {}
                },
                Some(Err(_)) => continue,
                None => return,
            },
            due = pacer.next() => dirty.extend(due),
            _ = stop.changed() => return,
        }
        if !(sets.synced && pods.synced && revisions.synced && pacer.ready(!dirty.is_empty())) {
            continue;
        }
        for uid in std::mem::take(&mut dirty) {
            let Some(set) = sets.items.get(&uid).cloned() else {
                continue;
            };
            let ns = set.namespace().unwrap_or_default();
            let mine: Vec<Arc<Pod>> = pods
                .in_namespace(&ns)
                .filter(|p| {
                    controller_of(p.as_ref(), KIND).as_deref() == Some(uid.as_str())
                        || adopters(p.as_ref(), &sets, true).contains(&uid)
                })
                .cloned()
                .collect();
            let revs: Vec<Arc<ControllerRevision>> = revisions
                .in_namespace(&ns)
                .filter(|r| controller_of(r.as_ref(), KIND).as_deref() == Some(uid.as_str()))
                .cloned()
                .collect();
            match ctl.sync(&set, mine, revs).await {
                Ok(Some(after)) => pacer.after(uid, after),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(statefulset = %set.name_any(), error = %e, "syncing a statefulset");
                    pacer.after(uid, Duration::from_secs(1));
                }
            }
        }
    }
}

/// The labels a set's claims carry: the template's plus the set's selector labels.
fn claim_labels(
    set: &StatefulSet,
    template: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut l = template.cloned().unwrap_or_default();
    if let Some(m) = &set.spec.selector.match_labels {
        l.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_follow_the_set_name() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "web-01"), None);
        assert_eq!(ordinal("web", "webx-1"), None);
        assert_eq!(ordinal("web-a", "web-1"), None);
    }
}
