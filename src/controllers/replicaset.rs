//! The ReplicaSet and ReplicationController controllers (one implementation, two kinds), as
//! upstream's: each keeps `spec.replicas` active pods that its selector selects and that it
//! controls. It adopts matching orphans and releases pods that stopped matching, creates missing
//! pods from the template in slow-start batches (1, 2, 4, ...), deletes surplus pods in
//! upstream's order (unscheduled, pending, not ready, ready for the shortest time, most
//! restarts, newest first), and reports `replicas`, `fullyLabeledReplicas`, `readyReplicas`,
//! `availableReplicas` (after `minReadySeconds`) and the `ReplicaFailure` condition.
//!
//! Expectations, as upstream's: after creating or deleting pods it waits to see them come or go
//! in its watch before counting again, so a slow watch never makes it create twice.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::pacer::Pacer;
use super::pod_state::{active, ready_since};
use crate::events::{Recorder, Type};
use crate::informer::Informer;
use crate::labels;

/// The most pods created or deleted in one sync (upstream's burstReplicas).
const BURST: usize = 500;
/// How many owners sync at once (upstream's --concurrent-replicaset-syncs).
const WORKERS: usize = 5;
/// How long unmet expectations hold back a sync.
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

/// Which of the two kinds.
#[derive(Clone)]
pub struct Workload {
    pub resource: ApiResource,
    /// The event source (`replicaset-controller`).
    pub component: &'static str,
}

impl Workload {
    pub fn replica_sets() -> Workload {
        Workload {
            resource: ApiResource {
                group: "apps".into(),
                version: "v1".into(),
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                plural: "replicasets".into(),
            },
            component: "replicaset-controller",
        }
    }

    pub fn replication_controllers() -> Workload {
        Workload {
            resource: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "ReplicationController".into(),
                plural: "replicationcontrollers".into(),
            },
            component: "replication-controller",
        }
    }

    /// The owner's selector, read once per sync: whether it selects pods with given labels.
    fn selector(&self, owner: &Value) -> impl Fn(&BTreeMap<String, String>) -> bool {
        let sel = &owner["spec"]["selector"];
        let rc = self.resource.kind == "ReplicationController";
        let map: BTreeMap<String, String> = if rc {
            serde_json::from_value(sel.clone()).unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        let parsed: Option<LabelSelector> = if rc {
            None
        } else {
            serde_json::from_value(sel.clone()).ok()
        };
        move |labels: &BTreeMap<String, String>| {
            if rc {
                labels::map_matches(&map, labels)
            } else {
                // An empty ReplicaSet selector selects nothing (validation forbids it anyway).
                parsed
                    .as_ref()
                    .is_some_and(|s| s != &LabelSelector::default())
                    && labels::matches(parsed.as_ref(), labels)
            }
        }
    }
}

/// The pods the controller has seen, indexed by controlling owner.
#[derive(Default)]
struct Pods {
    by_uid: HashMap<String, Arc<Pod>>,
    by_owner: HashMap<String, HashSet<String>>,
    orphans: HashMap<String, HashSet<String>>,
}

fn controller_uid(pod: &Pod, kind: &str) -> Option<String> {
    pod.owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| {
            if r.kind == kind {
                r.uid.clone()
            } else {
                String::new()
            }
        })
}

impl Pods {
    fn insert(&mut self, pod: Arc<Pod>, kind: &str) {
        let uid = pod.uid().unwrap_or_default();
        self.remove(&uid, kind);
        match controller_uid(&pod, kind) {
            Some(owner) if !owner.is_empty() => {
                self.by_owner.entry(owner).or_default().insert(uid.clone());
            }
            Some(_) => {}
            None => {
                self.orphans
                    .entry(pod.namespace().unwrap_or_default())
                    .or_default()
                    .insert(uid.clone());
            }
        }
        self.by_uid.insert(uid, pod);
    }

    fn remove(&mut self, uid: &str, kind: &str) -> Option<Arc<Pod>> {
        let old = self.by_uid.remove(uid)?;
        match controller_uid(&old, kind) {
            Some(owner) if !owner.is_empty() => {
                if let Some(set) = self.by_owner.get_mut(&owner) {
                    set.remove(uid);
                }
            }
            Some(_) => {}
            None => {
                if let Some(set) = self.orphans.get_mut(&old.namespace().unwrap_or_default()) {
                    set.remove(uid);
                }
            }
        }
        Some(old)
    }

    fn owned(&self, owner: &str) -> Vec<Arc<Pod>> {
        self.by_owner
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|u| self.by_uid.get(u).cloned())
            .collect()
    }

    fn orphans_in(&self, ns: &str) -> Vec<Arc<Pod>> {
        self.orphans
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(|u| self.by_uid.get(u).cloned())
            .collect()
    }
}

#[derive(Default)]
struct Expectation {
    adds: i64,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

impl Expectation {
    fn satisfied(&self) -> bool {
        (self.adds <= 0 && self.deletes.is_empty())
            || self
                .since
                .is_some_and(|t| t.elapsed() > EXPECTATIONS_TIMEOUT)
    }
}

/// Upstream's deletion order key: smaller goes first.
fn deletion_rank(pod: &Pod, on_same_node: usize) -> impl Ord {
    let assigned = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready = ready_since(pod);
    let restarts: i32 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0);
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        assigned,
        phase,
        ready.is_some(),
        Reverse(on_same_node),
        Reverse(ready),
        Reverse(restarts),
        Reverse(created),
    )
}

struct Ctl {
    kind: Workload,
    writer: Client,
    recorder: Recorder,
}

/// Runs until `stop` turns true.
pub async fn run(
    kind: Workload,
    shared: Client,
    pod_informer: Informer<Pod>,
    writer: Client,
    mut stop: watch::Receiver<bool>,
) {
    let owners_api: Api<DynamicObject> = Api::all_with(shared.clone(), &kind.resource);
    let mut owner_events = watcher(owners_api, Default::default())
        .default_backoff()
        .boxed();
    let mut pod_events = pod_informer.subscribe();
    let ctl = Ctl {
        recorder: Recorder::new(writer.clone(), kind.component, None),
        kind,
        writer,
    };
    let kind_name = ctl.kind.resource.kind.clone();
    let mut owners: HashMap<String, Value> = HashMap::new(); // by uid
    let mut pods = Pods::default();
    let mut expect: HashMap<String, Expectation> = HashMap::new();
    let mut dirty: HashSet<String> = HashSet::new(); // owner uids
    let mut dirty_ns: HashSet<String> = HashSet::new(); // namespaces with orphan changes
    let mut pacer: Pacer<String> = Pacer::default();
    let (mut owners_synced, mut pods_synced) = (false, false);
    let (mut owner_init, mut pod_init) = (HashMap::new(), HashMap::new());
    loop {
        pacer.arm(!dirty.is_empty() || !dirty_ns.is_empty());
        tokio::select! {
            ev = owner_events.next() => match ev {
                Some(Ok(ev)) => match ev {
                    watcher::Event::Init => owner_init.clear(),
                    watcher::Event::InitApply(o) => { owner_init.insert(o.uid().unwrap_or_default(), serde_json::to_value(&o).unwrap_or_default()); }
                    watcher::Event::InitDone => {
                        owners = std::mem::take(&mut owner_init);
                        dirty.extend(owners.keys().cloned());
                        owners_synced = true;
                    }
                    watcher::Event::Apply(o) => {
                        let uid = o.uid().unwrap_or_default();
                        owners.insert(uid.clone(), serde_json::to_value(&o).unwrap_or_default());
                        dirty.insert(uid);
                    }
                    watcher::Event::Delete(o) => {
                        let uid = o.uid().unwrap_or_default();
                        owners.remove(&uid);
                        expect.remove(&uid);
                    }
                },
                Some(Err(_)) => continue,
                None => return,
            },
            ev = pod_events.next() => match ev {
                Some(ev) => match ev {
                    watcher::Event::Init => pod_init.clear(),
                    watcher::Event::InitApply(p) => { pod_init.insert(p.uid().unwrap_or_default(), p); }
                    watcher::Event::InitDone => {
                        pods = Pods::default();
                        for (_, p) in std::mem::take(&mut pod_init) {
                            pods.insert(p, &kind_name);
                        }
                        dirty.extend(owners.keys().cloned());
                        pods_synced = true;
                    }
                    watcher::Event::Apply(p) => {
                        let uid = p.uid().unwrap_or_default();
                        let fresh = !pods.by_uid.contains_key(&uid);
                        note_pod(&p, &kind_name, &mut dirty, &mut dirty_ns);
                        if let Some(old) = pods.by_uid.get(&uid).cloned() {
                            note_pod(&old, &kind_name, &mut dirty, &mut dirty_ns);
                        }
                        if fresh {
                            if let Some(owner) = controller_uid(&p, &kind_name).filter(|o| !o.is_empty()) {
                                if let Some(e) = expect.get_mut(&owner) {
                                    e.adds -= 1;
                                }
                            }
                        }
                        if p.metadata.deletion_timestamp.is_some() {
                            observe_delete(&p, &kind_name, &mut expect);
                        }
                        pods.insert(p, &kind_name);
                    }
                    watcher::Event::Delete(p) => {
                        let uid = p.uid().unwrap_or_default();
                        if let Some(old) = pods.remove(&uid, &kind_name) {
                            note_pod(&old, &kind_name, &mut dirty, &mut dirty_ns);
                            observe_delete(&old, &kind_name, &mut expect);
                        }
                    }
                },
                None => return,
            },
            due = pacer.next() => dirty.extend(due),
            _ = stop.changed() => return,
        }
        if !(owners_synced && pods_synced && pacer.ready(!dirty.is_empty() || !dirty_ns.is_empty()))
        {
            continue;
        }
        if !dirty_ns.is_empty() {
            for (uid, o) in &owners {
                if o["metadata"]["namespace"]
                    .as_str()
                    .is_some_and(|ns| dirty_ns.contains(ns))
                {
                    dirty.insert(uid.clone());
                }
            }
            dirty_ns.clear();
        }
        // Owners sync side by side, as upstream's workers do: one owner's slow-start batches
        // no longer hold back every other owner's.
        let due: Vec<(String, &Value, Expectation)> = std::mem::take(&mut dirty)
            .into_iter()
            .filter_map(|uid| {
                let owner = owners.get(&uid)?;
                let e = expect.remove(&uid).unwrap_or_default();
                Some((uid, owner, e))
            })
            .collect();
        let (ctl, pods) = (&ctl, &pods);
        let mut work = Vec::with_capacity(due.len());
        for (uid, owner, mut e) in due {
            work.push(async move {
                let r = ctl.sync(owner, pods, &mut e).await;
                (uid, owner, e, r)
            });
        }
        let mut syncs = futures::stream::iter(work).buffer_unordered(WORKERS);
        while let Some((uid, owner, e, r)) = syncs.next().await {
            expect.insert(uid.clone(), e);
            match r {
                Ok(Some(after)) => pacer.after(uid, after),
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(owner = %owner["metadata"]["name"], error = %err, "syncing replicas");
                    pacer.after(uid, Duration::from_secs(1));
                }
            }
        }
    }
}

fn note_pod(pod: &Pod, kind: &str, dirty: &mut HashSet<String>, dirty_ns: &mut HashSet<String>) {
    match controller_uid(pod, kind) {
        Some(owner) if !owner.is_empty() => {
            dirty.insert(owner);
        }
        Some(_) => {}
        None => {
            dirty_ns.insert(pod.namespace().unwrap_or_default());
        }
    }
}

fn observe_delete(pod: &Pod, kind: &str, expect: &mut HashMap<String, Expectation>) {
    if let Some(owner) = controller_uid(pod, kind).filter(|o| !o.is_empty()) {
        if let Some(e) = expect.get_mut(&owner) {
            e.deletes.remove(&pod.uid().unwrap_or_default());
        }
    }
}

impl Ctl {
    fn controller_ref(&self, owner: &Value) -> OwnerReference {
        OwnerReference {
            api_version: self.kind.resource.api_version.clone(),
            kind: self.kind.resource.kind.clone(),
            name: owner["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            uid: owner["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// Brings one owner's pods and status in line; returns when to look again, if needed.
    async fn sync(
        &self,
        owner: &Value,
        pods: &Pods,
        expect: &mut Expectation,
    ) -> Result<Option<Duration>, kube::Error> {
        let meta = &owner["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or_default();
        let uid = meta["uid"].as_str().unwrap_or_default();
        if meta["deletionTimestamp"].is_string() {
            return Ok(None);
        }
        let api: Api<Pod> = Api::namespaced(self.writer.clone(), ns);
        let mut mine: Vec<Arc<Pod>> = Vec::new();
        let selects = self.kind.selector(owner);
        // Release what no longer matches; adopt matching orphans.
        for pod in pods.owned(uid) {
            if selects(pod.labels()) {
                mine.push(pod);
            } else if active(&pod) {
                let patch = json!({"metadata": {"uid": pod.uid(),
                    "ownerReferences": [{"$patch": "delete", "uid": uid}]}});
                if let Err(e) = api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Strategic(&patch),
                    )
                    .await
                {
                    tracing::debug!(pod = %pod.name_any(), error = %e, "releasing a pod");
                }
            }
        }
        for pod in pods.orphans_in(ns) {
            if !active(&pod) || !selects(pod.labels()) {
                continue;
            }
            let patch = json!({"metadata": {"uid": pod.uid(),
                "ownerReferences": [self.controller_ref(owner)]}});
            match api
                .patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => mine.push(pod),
                Err(e) => tracing::debug!(pod = %pod.name_any(), error = %e, "adopting a pod"),
            }
        }
        let live: Vec<Arc<Pod>> = mine.iter().filter(|p| active(p)).cloned().collect();
        let want = owner["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        let mut failure = None;
        if expect.satisfied() {
            if live.len() < want {
                failure = self.create(owner, want - live.len(), expect).await;
            } else if live.len() > want {
                self.delete(&api, &live, live.len() - want, expect).await;
            }
        }
        self.update_status(owner, &live, failure).await
    }

    async fn create(
        &self,
        owner: &Value,
        missing: usize,
        expect: &mut Expectation,
    ) -> Option<String> {
        let meta = &owner["metadata"];
        let (ns, name) = (
            meta["namespace"].as_str().unwrap_or_default(),
            meta["name"].as_str().unwrap_or_default(),
        );
        let template = &owner["spec"]["template"];
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": format!("{name}-"),
                "namespace": ns,
                "labels": template["metadata"]["labels"],
                "annotations": template["metadata"]["annotations"],
                "finalizers": template["metadata"]["finalizers"],
                "ownerReferences": [self.controller_ref(owner)],
            },
            "spec": template["spec"],
        });
        let pod: Pod = match serde_json::from_value(pod) {
            Ok(p) => p,
            Err(e) => return Some(format!("the pod template cannot be read: {e}")),
        };
        let api: Api<Pod> = Api::namespaced(self.writer.clone(), ns);
        let total = missing.min(BURST);
        expect.adds = total as i64;
        expect.since = Some(Instant::now());
        let (mut done, mut batch) = (0, 1);
        let mut failure = None;
        while done < total {
            let n = batch.min(total - done);
            let pp = PostParams::default();
            let results = futures::future::join_all((0..n).map(|_| api.create(&pp, &pod))).await;
            let mut failed = 0;
            for r in results {
                match r {
                    Ok(p) => {
                        self.recorder
                            .record(
                                &crate::events::reference_dynamic(owner, &self.kind.resource),
                                Type::Normal,
                                "SuccessfulCreate",
                                &format!("Created pod: {}", p.name_any()),
                            )
                            .await
                    }
                    Err(e) => {
                        failed += 1;
                        let msg = match &e {
                            kube::Error::Api(s) => s.message.clone(),
                            other => other.to_string(),
                        };
                        self.recorder
                            .record(
                                &crate::events::reference_dynamic(owner, &self.kind.resource),
                                Type::Warning,
                                "FailedCreate",
                                &format!("Error creating: {msg}"),
                            )
                            .await;
                        failure = Some(msg);
                    }
                }
            }
            done += n;
            if failed > 0 {
                // Pods never created are never observed; skip what was not tried either.
                expect.adds -= (failed + total - done) as i64;
                break;
            }
            batch *= 2;
        }
        failure
    }

    async fn delete(
        &self,
        api: &Api<Pod>,
        live: &[Arc<Pod>],
        surplus: usize,
        expect: &mut Expectation,
    ) {
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for p in live {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                *per_node.entry(n).or_default() += 1;
            }
        }
        let mut ranked: Vec<&Arc<Pod>> = live.iter().collect();
        ranked.sort_by_cached_key(|p| {
            let n = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            deletion_rank(p, per_node.get(&n).copied().unwrap_or(0))
        });
        let victims: Vec<&Arc<Pod>> = ranked.into_iter().take(surplus.min(BURST)).collect();
        expect.deletes = victims
            .iter()
            .map(|p| p.uid().unwrap_or_default())
            .collect();
        expect.since = Some(Instant::now());
        let results = futures::future::join_all(victims.iter().map(|p| {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let name = p.name_any();
            async move { (api.delete(&name, &dp).await, name) }
        }))
        .await;
        for ((r, name), p) in results.into_iter().zip(&victims) {
            match r {
                Ok(_) => {}
                Err(e) => {
                    expect.deletes.remove(&p.uid().unwrap_or_default());
                    tracing::debug!(pod = %name, error = %e, "deleting a surplus pod");
                }
            }
        }
    }

    async fn update_status(
        &self,
        owner: &Value,
        live: &[Arc<Pod>],
        failure: Option<String>,
    ) -> Result<Option<Duration>, kube::Error> {
        let template_labels: BTreeMap<String, String> =
            serde_json::from_value(owner["spec"]["template"]["metadata"]["labels"].clone())
                .unwrap_or_default();
        let min_ready = owner["spec"]["minReadySeconds"]
            .as_i64()
            .unwrap_or(0)
            .max(0);
        let now = Timestamp::now();
        let mut recheck: Option<Duration> = None;
        let (mut ready, mut available, mut labelled) = (0, 0, 0);
        for p in live {
            if template_labels
                .iter()
                .all(|(k, v)| p.labels().get(k) == Some(v))
            {
                labelled += 1;
            }
            if let Some(since) = ready_since(p) {
                ready += 1;
                let age = now.duration_since(since).as_secs();
                if age >= min_ready {
                    available += 1;
                } else {
                    let wait = Duration::from_secs((min_ready - age) as u64 + 1);
                    recheck = Some(recheck.map_or(wait, |r| r.min(wait)));
                }
            }
        }
        let mut conditions: Vec<Value> = owner["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "ReplicaFailure")
            .collect();
        if let Some(msg) = &failure {
            let old = owner["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "ReplicaFailure")
                .cloned();
            conditions.push(json!({
                "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": msg,
                "lastTransitionTime": old.map(|o| o["lastTransitionTime"].clone()).unwrap_or_else(|| json!(Time(now))),
            }));
        }
        let mut status = json!({
            "replicas": live.len(),
            "fullyLabeledReplicas": labelled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": owner["metadata"]["generation"],
        });
        if !conditions.is_empty() {
            status["conditions"] = json!(conditions);
        }
        let old = &owner["status"];
        let same = [
            "replicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
            "observedGeneration",
        ]
        .iter()
        .all(|k| old[*k].as_i64().unwrap_or(0) == status[*k].as_i64().unwrap_or(0))
            && old["conditions"].as_array().cloned().unwrap_or_default() == conditions;
        if !same {
            let ns = owner["metadata"]["namespace"].as_str().unwrap_or_default();
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.writer.clone(), ns, &self.kind.resource);
            // Upstream's role grants `update` on the status, not `patch`: a full write, guarded
            // by the resourceVersion it was read at.
            let mut whole = owner.clone();
            whole["status"] = status;
            let obj: DynamicObject =
                serde_json::from_value(whole).map_err(kube::Error::SerdeError)?;
            api.replace_status(
                owner["metadata"]["name"].as_str().unwrap_or_default(),
                &PostParams::default(),
                &obj,
            )
            .await?;
        }
        Ok(recheck)
    }
}
