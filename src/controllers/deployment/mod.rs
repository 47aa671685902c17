//! The Deployment controller, as upstream's: a Deployment owns one ReplicaSet per pod template
//! (named `NAME-HASH`, its pods labelled `pod-template-hash`), numbered by the
//! `deployment.kubernetes.io/revision` annotation that `kubectl rollout history|undo` read.
//! RollingUpdate scales the new ReplicaSet up within `maxSurge` and the old ones down without
//! going below `replicas - maxUnavailable` available pods; Recreate scales the old ones to zero
//! and waits for their pods to go before starting the new one. It honours `paused`, keeps
//! `revisionHistoryLimit` old ReplicaSets, and reports the counts and the Available and
//! Progressing conditions (`progressDeadlineSeconds`) that `kubectl rollout status` follows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::pacer::Pacer;
use crate::events::{self, Recorder, Type};
use crate::labels;

mod rollout;
mod scaling;
mod status;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";

/// Annotations of a Deployment not copied to its ReplicaSets.
const NOT_COPIED: [&str; 5] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED,
    MAX_REPLICAS,
];

/// upstream's `rand.SafeEncodeString` alphabet (no vowels, no confusable characters).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A stable short hash of a pod template (FNV-1a over its JSON) and the collision count.
pub fn template_hash(template: &Value, collisions: i32) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(template.to_string().as_bytes());
    if collisions > 0 {
        feed(&collisions.to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// Resolves an absolute or percent value against `total` (rounding up or down).
fn resolve(v: Option<&IntOrString>, total: i32, default_pct: i32, round_up: bool) -> i32 {
    let pct = IntOrString::String(format!("{default_pct}%"));
    super::int_or_percent(v.unwrap_or(&pct), total, round_up)
        .or_else(|| super::int_or_percent(&pct, total, round_up))
        .unwrap_or(0)
}

/// `(maxSurge, maxUnavailable)` of a RollingUpdate deployment, as upstream resolves them.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let replicas = d.spec.replicas.unwrap_or(1);
    let rolling = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(
        rolling.and_then(|r| r.max_surge.as_ref()),
        replicas,
        25,
        true,
    );
    let mut unavailable = resolve(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        25,
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

fn status_of(
    rs: &ReplicaSet,
    f: impl Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Option<i32>,
) -> i32 {
    rs.status.as_ref().and_then(f).unwrap_or(0)
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The template without the hash label, as compared with the Deployment's.
fn template_without_hash(rs: &ReplicaSet) -> Value {
    let mut t = serde_json::to_value(&rs.spec.template).unwrap_or_default();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            t["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    t
}

fn deployment_template(d: &Deployment) -> Value {
    serde_json::to_value(&d.spec.template).unwrap_or_default()
}

struct Ctl {
    writer: Client,
    recorder: Recorder,
    /// ReplicaSets as this controller last wrote them, newer than the watch may show yet.
    written: std::sync::Mutex<HashMap<String, Arc<ReplicaSet>>>,
}

/// The numeric resourceVersion (0 when unknown).
fn rv(rs: &ReplicaSet) -> u64 {
    rs.resource_version()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs until `stop` turns true.
pub async fn run(shared: Client, writer: Client, mut stop: watch::Receiver<bool>) {
    let mut d_events = watcher(Api::<Deployment>::all(shared.clone()), Default::default())
        .default_backoff()
        .boxed();
    let mut rs_events = watcher(Api::<ReplicaSet>::all(shared), Default::default())
        .default_backoff()
        .boxed();
    let ctl = Ctl {
        recorder: Recorder::new(writer.clone(), "deployment-controller", None),
        writer,
        written: Default::default(),
    };
    let mut deployments: HashMap<String, Arc<Deployment>> = HashMap::new(); // by uid
    let mut sets: HashMap<String, Arc<ReplicaSet>> = HashMap::new(); // by uid
    let (mut d_init, mut rs_init) = (HashMap::new(), HashMap::new());
    let (mut d_synced, mut rs_synced) = (false, false);
    let mut dirty: HashSet<String> = HashSet::new();
    let mut pacer: Pacer<String> = Pacer::default();
    loop {
        pacer.arm(!dirty.is_empty());
        tokio::select! {
            ev = d_events.next() => match ev {
                Some(Ok(watcher::Event::Init)) => d_init.clear(),
                Some(Ok(watcher::Event::InitApply(d))) => { d_init.insert(d.uid().unwrap_or_default(), Arc::new(d)); }
                Some(Ok(watcher::Event::InitDone)) => {
                    deployments = std::mem::take(&mut d_init);
                    dirty.extend(deployments.keys().cloned());
                    d_synced = true;
                }
                Some(Ok(watcher::Event::Apply(d))) => {
                    let uid = d.uid().unwrap_or_default();
                    deployments.insert(uid.clone(), Arc::new(d));
                    dirty.insert(uid);
                }
                Some(Ok(watcher::Event::Delete(d))) => { deployments.remove(&d.uid().unwrap_or_default()); }
                Some(Err(_)) => continue,
                None => return,
            },
            ev = rs_events.next() => match ev {
                Some(Ok(watcher::Event::Init)) => rs_init.clear(),
                Some(Ok(watcher::Event::InitApply(r))) => { rs_init.insert(r.uid().unwrap_or_default(), Arc::new(r)); }
                Some(Ok(watcher::Event::InitDone)) => {
                    sets = std::mem::take(&mut rs_init);
                    dirty.extend(deployments.keys().cloned());
                    rs_synced = true;
                }
                Some(Ok(watcher::Event::Apply(r))) => {
                    dirty.extend(owner_uid(&r));
                    dirty.extend(orphan_owners(&r, &deployments));
                    sets.insert(r.uid().unwrap_or_default(), Arc::new(r));
                }
                Some(Ok(watcher::Event::Delete(r))) => {
                    dirty.extend(owner_uid(&r));
                    sets.remove(&r.uid().unwrap_or_default());
                }
                Some(Err(_)) => continue,
                None => return,
            },
            due = pacer.next() => dirty.extend(due),
            _ = stop.changed() => return,
        }
        if !(d_synced && rs_synced && pacer.ready(!dirty.is_empty())) {
            continue;
        }
        for uid in std::mem::take(&mut dirty) {
            let Some(d) = deployments.get(&uid).cloned() else {
                continue;
            };
            let ns = d.namespace().unwrap_or_default();
            let in_ns: Vec<Arc<ReplicaSet>> = {
                let mut written = ctl.written.lock().unwrap_or_else(|p| p.into_inner());
                // Forget own writes the watch has caught up with.
                written.retain(|uid, w| sets.get(uid).is_some_and(|s| rv(s) < rv(w)));
                sets.values()
                    .filter(|r| r.namespace().as_deref() == Some(ns.as_str()))
                    .map(|r| {
                        written
                            .get(&r.uid().unwrap_or_default())
                            .cloned()
                            .unwrap_or_else(|| r.clone())
                    })
                    .collect()
            };
            match ctl.sync(&d, &in_ns).await {
                Ok(Some(after)) => pacer.after(uid, after),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(deployment = %d.name_any(), error = %e, "syncing a deployment");
                    let conflict = matches!(&e, kube::Error::Api(s) if s.code == 409);
                    let after = if conflict {
                        Duration::from_millis(50)
                    } else {
                        Duration::from_secs(1)
                    };
                    pacer.after(uid, after);
                }
            }
        }
    }
}

fn owner_uid(rs: &ReplicaSet) -> Option<String> {
    rs.owner_references()
        .iter()
        .find(|r| r.controller == Some(true) && r.kind == "Deployment")
        .map(|r| r.uid.clone())
}

/// Deployments that might adopt an orphaned ReplicaSet.
fn orphan_owners(rs: &ReplicaSet, deployments: &HashMap<String, Arc<Deployment>>) -> Vec<String> {
    if rs
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true))
    {
        return Vec::new();
    }
    deployments
        .iter()
        .filter(|(_, d)| d.namespace() == rs.namespace())
        .filter(|(_, d)| {
            let sel = Some(&d.spec.selector);
            let labels = rs
                .spec
                .template
                .as_ref()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels::matches(sel, &labels)
        })
        .map(|(uid, _)| uid.clone())
        .collect()
}

/// What one sync found out, for the status.
struct Rollout {
    new_rs: Option<Arc<ReplicaSet>>,
    all: Vec<Arc<ReplicaSet>>,
    created: bool,
    /// ReplicaSets written during this sync.
    written: Vec<Arc<ReplicaSet>>,
}

impl Ctl {
    fn controller_ref(d: &Deployment) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: d.name_any(),
            uid: d.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    async fn sync(
        &self,
        d: &Deployment,
        in_ns: &[Arc<ReplicaSet>],
    ) -> Result<Option<Duration>, kube::Error> {
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let uid = d.uid().unwrap_or_default();
        let ns = d.namespace().unwrap_or_default();
        let rs_api: Api<ReplicaSet> = Api::namespaced(self.writer.clone(), &ns);
        let selector = Some(&d.spec.selector);
        let mut owned: Vec<Arc<ReplicaSet>> = Vec::new();
        for rs in in_ns {
            let labels = rs.labels();
            if owner_uid(rs).as_deref() == Some(uid.as_str()) {
                owned.push(rs.clone());
            } else if !rs
                .owner_references()
                .iter()
                .any(|r| r.controller == Some(true))
                && labels::matches(selector, labels)
                && rs.metadata.deletion_timestamp.is_none()
            {
                let patch = json!({"metadata": {"uid": rs.uid(), "ownerReferences": [Self::controller_ref(d)]}});
                if let Ok(r) = rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Strategic(&patch),
                    )
                    .await
                {
                    owned.push(Arc::new(r));
                }
            }
        }
        let template = deployment_template(d);
        let new_rs = owned
            .iter()
            .find(|r| template_without_hash(r) == template)
            .cloned();
        let paused = d.spec.paused.unwrap_or(false);
        let mut rollout = Rollout {
            new_rs,
            all: owned,
            created: false,
            written: Vec::new(),
        };
        if paused || scaling::is_scaling_event(d, &rollout) {
            self.sync_scale(d, &rs_api, &mut rollout).await?;
            if paused {
                self.cleanup(d, &rs_api, &rollout).await;
            }
        } else {
            let recreate =
                d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
            if recreate {
                self.recreate(d, &rs_api, &mut rollout).await?;
            } else {
                self.rolling(d, &rs_api, &mut rollout).await?;
            }
            self.cleanup(d, &rs_api, &rollout).await;
            self.remember(&mut rollout);
            if let Some(new) = &rollout.new_rs {
                // The Deployment carries its current revision too (`kubectl rollout undo`
                // patches it), written with `update` as upstream's role allows.
                if let Some(rev) = new.annotations().get(REVISION) {
                    if d.annotations().get(REVISION) != Some(rev) {
                        let mut whole = d.clone();
                        whole
                            .metadata
                            .annotations
                            .get_or_insert_with(Default::default)
                            .insert(REVISION.into(), rev.clone());
                        let api: Api<Deployment> = Api::namespaced(self.writer.clone(), &ns);
                        api.replace(&d.name_any(), &PostParams::default(), &whole)
                            .await?;
                        return Ok(None);
                    }
                }
            }
        }
        self.remember(&mut rollout);
        self.update_status(d, &rollout).await
    }

    /// Keeps this sync's writes for the next syncs, until the watch shows them.
    fn remember(&self, r: &mut Rollout) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        for w in r.written.drain(..) {
            written.insert(w.uid().unwrap_or_default(), w);
        }
    }
}

fn replace(r: &mut Rollout, updated: Arc<ReplicaSet>) {
    r.written.push(updated.clone());
    for x in r.all.iter_mut() {
        if x.uid() == updated.uid() {
            *x = updated.clone();
        }
    }
    if r.new_rs.as_ref().is_some_and(|n| n.uid() == updated.uid()) {
        r.new_rs = Some(updated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {
            "replicas": 10, "selector": {}, "template": {},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}}))
        .expect("deployment");
        assert_eq!(surge_and_unavailable(&d), (3, 2));
        let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {
            "replicas": 3, "selector": {}, "template": {},
            "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}}))
        .expect("deployment");
        assert_eq!(surge_and_unavailable(&d), (0, 1));
    }

    #[test]
    fn hashes_are_stable_and_safe() {
        let t = json!({"spec": {"containers": [{"name": "a", "image": "nginx"}]}});
        let h = template_hash(&t, 0);
        assert_eq!(h, template_hash(&t, 0));
        assert_ne!(h, template_hash(&t, 1));
        assert!(h.bytes().all(|b| ALPHABET.contains(&b)), "{h}");
    }
}
