//! The garbage collector, as upstream's: it keeps a graph of every object's ownerReferences
//! (metadata-only watches of every resource that can be listed, watched and deleted, found
//! through discovery) and
//! - deletes a dependent whose owners are all gone (background propagation), or drops the
//!   references to the owners that are gone while others remain;
//! - for an owner deleted with `propagationPolicy: Foreground` (finalizer `foregroundDeletion`),
//!   deletes its dependents and removes the finalizer once no dependent with
//!   `blockOwnerDeletion` is left;
//! - for an owner deleted with `propagationPolicy: Orphan` (finalizer `orphan`), removes the
//!   references to it from its dependents, then the finalizer.
//!
//! An owner missing from the graph is looked up through the API before a dependent is deleted,
//! so a slow watch never deletes what still has an owner. Pods come from the controller
//! manager's shared pod informer rather than a watch of their own: they are most objects, and
//! decoding each pod event a second time (with its managedFields) cost more than the collector's
//! other work together.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use kube::discovery::{Discovery, Scope};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::json;
use tokio::sync::watch;

use crate::informer::Informer;

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
/// How often discovery is asked again for new resources (custom resources, aggregated APIs).
const REDISCOVER: Duration = Duration::from_secs(30);

/// A resource the collector watches.
#[derive(Clone)]
struct Kind {
    resource: ApiResource,
    namespaced: bool,
}

/// One object in the graph.
#[derive(Clone)]
struct Item {
    kind: usize,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    items: HashMap<String, Item>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn put(&mut self, uid: String, item: Item) {
        self.remove(&uid);
        for o in &item.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.items.insert(uid, item);
    }

    fn remove(&mut self, uid: &str) -> Option<Item> {
        let old = self.items.remove(uid)?;
        for o in &old.owners {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        Some(old)
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// What to look at again.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Work {
    /// A dependent that may have lost its owners.
    Dependent(String),
    /// An owner being deleted with a finalizer of the collector.
    Owner(String),
}

/// What the collector reads of an object.
struct Meta {
    uid: String,
    item: Item,
}

impl Meta {
    fn of(kind: usize, m: &ObjectMeta) -> Meta {
        Meta {
            uid: m.uid.clone().unwrap_or_default(),
            item: Item {
                kind,
                namespace: m.namespace.clone(),
                name: m.name.clone().unwrap_or_default(),
                owners: m.owner_references.clone().unwrap_or_default(),
                deleting: m.deletion_timestamp.is_some(),
                finalizers: m.finalizers.clone().unwrap_or_default(),
            },
        }
    }
}

/// A watch event of one kind, as [`Meta`].
fn meta_event<K>(
    kind: usize,
    e: watcher::Event<K>,
    meta: impl Fn(&K) -> &ObjectMeta,
) -> watcher::Event<Meta> {
    match e {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(Meta::of(kind, meta(&o))),
        watcher::Event::Apply(o) => watcher::Event::Apply(Meta::of(kind, meta(&o))),
        watcher::Event::Delete(o) => watcher::Event::Delete(Meta::of(kind, meta(&o))),
    }
}

type Events = BoxStream<'static, (usize, watcher::Event<Meta>)>;

struct Gc {
    client: Client,
    kinds: Vec<Kind>,
    by_gvk: HashMap<(String, String), usize>,
    graph: Graph,
}

/// Runs until `stop` turns true.
pub async fn run(
    shared: Client,
    pods: Informer<Pod>,
    writer: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut gc = Gc {
        client: writer,
        kinds: Vec::new(),
        by_gvk: HashMap::new(),
        graph: Graph::default(),
    };
    let mut events: SelectAll<Events> = SelectAll::new();
    let mut synced: HashSet<usize> = HashSet::new();
    let mut work: HashSet<Work> = HashSet::new();
    let mut retry: Vec<(Instant, Work)> = Vec::new();
    let mut rediscover = tokio::time::interval(REDISCOVER);
    let mut sync_at: Option<Instant> = None;
    loop {
        if sync_at.is_none()
            && (!work.is_empty() || retry.iter().any(|(t, _)| *t <= Instant::now()))
        {
            sync_at = Some(Instant::now() + Duration::from_millis(20));
        }
        tokio::select! {
            _ = rediscover.tick() => {
                for (i, k) in gc.discover(&shared).await {
                    events.push(watch_kind(&shared, &pods, i, &k));
                }
                retry.retain(|(t, w)| {
                    if *t <= Instant::now() { work.insert(w.clone()); false } else { true }
                });
            }
            Some((kind, ev)) = events.next(), if !events.is_empty() => {
                gc.observe(kind, ev, &mut synced, &mut work);
            }
            _ = async { match sync_at { Some(t) => tokio::time::sleep_until(t.into()).await, None => std::future::pending().await } } => {
                sync_at = None;
                if synced.len() < gc.kinds.len() {
                    tracing::debug!(synced = synced.len(), kinds = gc.kinds.len(), "garbage collector waits for its watches");
                    continue; // act only on the whole graph
                }
                let now = Instant::now();
                retry.retain(|(t, w)| {
                    if *t <= now { work.insert(w.clone()); false } else { true }
                });
                for w in std::mem::take(&mut work) {
                    let again = match &w {
                        Work::Dependent(uid) => gc.attempt_delete(uid).await,
                        Work::Owner(uid) => gc.finish_owner(uid).await,
                    };
                    if again {
                        retry.push((now + Duration::from_secs(1), w));
                    }
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// The events of one kind: pods from the shared informer, others from a metadata watch.
fn watch_kind(client: &Client, pods: &Informer<Pod>, i: usize, k: &Kind) -> Events {
    if k.resource.group.is_empty() && k.resource.version == "v1" && k.resource.plural == "pods" {
        return pods
            .subscribe()
            .map(move |e| (i, meta_event(i, e, |p| &p.metadata)))
            .boxed();
    }
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client.clone(), &k.resource);
    let plural = k.resource.plural.clone();
    watcher(api, Default::default())
        .default_backoff()
        .filter_map(move |e| {
            let plural = plural.clone();
            async move {
                match e {
                    Ok(e) => Some((i, meta_event(i, e, |o| &o.metadata))),
                    Err(err) => {
                        tracing::debug!(resource = %plural, error = %err, "garbage collector watch");
                        None
                    }
                }
            }
        })
        .boxed()
}

impl Gc {
    /// Adds the deletable, watchable resources not watched yet; returns them with their index.
    async fn discover(&mut self, client: &Client) -> Vec<(usize, Kind)> {
        let discovery = match Discovery::new(client.clone()).run().await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "discovery for the garbage collector");
                return Vec::new();
            }
        };
        let mut added = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                let ops = &caps.operations;
                let watchable = ["list", "watch", "delete"]
                    .iter()
                    .all(|v| ops.iter().any(|o| o == v));
                let ignored = ar.plural == "events";
                let key = (ar.api_version.clone(), ar.kind.clone());
                if !watchable || ignored || self.by_gvk.contains_key(&key) {
                    continue;
                }
                let kind = Kind {
                    resource: ar,
                    namespaced: caps.scope == Scope::Namespaced,
                };
                let i = self.kinds.len();
                self.by_gvk.insert(key, i);
                self.kinds.push(kind.clone());
                added.push((i, kind));
            }
        }
        added
    }

    fn observe(
        &mut self,
        kind: usize,
        ev: watcher::Event<Meta>,
        synced: &mut HashSet<usize>,
        work: &mut HashSet<Work>,
    ) {
        match ev {
            watcher::Event::Init => {}
            watcher::Event::InitDone => {
                synced.insert(kind);
            }
            watcher::Event::Apply(Meta { uid, item })
            | watcher::Event::InitApply(Meta { uid, item }) => {
                if item.deleting
                    && item
                        .finalizers
                        .iter()
                        .any(|f| f == FOREGROUND || f == ORPHAN)
                {
                    work.insert(Work::Owner(uid.clone()));
                }
                // A dependent of an owner we have not seen (yet) is checked.
                if item
                    .owners
                    .iter()
                    .any(|o| !self.graph.items.contains_key(&o.uid))
                {
                    work.insert(Work::Dependent(uid.clone()));
                }
                self.graph.put(uid, item);
            }
            watcher::Event::Delete(Meta { uid, .. }) => {
                let old = self.graph.remove(&uid);
                for d in self.graph.dependents_of(&uid) {
                    work.insert(Work::Dependent(d));
                }
                // The owner of a deleted dependent may be waiting for it.
                for o in old.iter().flat_map(|i| i.owners.iter()) {
                    if self.graph.items.get(&o.uid).is_some_and(|i| i.deleting) {
                        work.insert(Work::Owner(o.uid.clone()));
                    }
                }
            }
        }
    }

    fn api_for(&self, kind: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let k = &self.kinds[kind];
        match namespace.filter(|_| k.namespaced) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &k.resource),
            None => Api::all_with(self.client.clone(), &k.resource),
        }
    }

    /// Whether the owner a reference names exists (with that uid); asks the API when the graph
    /// does not know it. `None` when that cannot be told.
    async fn owner_exists(&self, dep: &Item, r: &OwnerReference) -> Option<bool> {
        if self.graph.items.contains_key(&r.uid) {
            return Some(true);
        }
        let kind = *self.by_gvk.get(&(r.api_version.clone(), r.kind.clone()))?;
        let ns = dep.namespace.as_deref();
        match self.api_for(kind, ns).get_metadata_opt(&r.name).await {
            Ok(Some(o)) => Some(o.metadata.uid.as_deref() == Some(r.uid.as_str())),
            Ok(None) => Some(false),
            Err(_) => None,
        }
    }

    /// Deletes a dependent whose owners are all gone, or drops the references to those gone.
    /// True when it should be tried again.
    async fn attempt_delete(&mut self, uid: &str) -> bool {
        let Some(item) = self.graph.items.get(uid).cloned() else {
            return false;
        };
        if item.deleting || item.owners.is_empty() {
            return false;
        }
        let mut gone = Vec::new();
        for r in &item.owners {
            match self.owner_exists(&item, r).await {
                Some(true) => {}
                Some(false) => gone.push(r.uid.clone()),
                None => return true,
            }
        }
        let api = self.api_for(item.kind, item.namespace.as_deref());
        if gone.len() == item.owners.len() {
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            return match api.delete(&item.name, &dp).await {
                Ok(_) => false,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => false,
                Err(e) => {
                    tracing::debug!(name = %item.name, error = %e, "deleting a dependent whose owners are gone");
                    true
                }
            };
        }
        // Some owners remain: only the references to those gone go. (Owners deleted in the
        // foreground delete their dependents themselves.)
        if !gone.is_empty() {
            return self.drop_refs(&api, uid, &item.name, &gone).await;
        }
        false
    }

    /// Removes the references to `owners` from a dependent. True when to try again.
    async fn drop_refs(
        &self,
        api: &Api<DynamicObject>,
        uid: &str,
        name: &str,
        owners: &[String],
    ) -> bool {
        let refs: Vec<serde_json::Value> = owners
            .iter()
            .map(|o| json!({"$patch": "delete", "uid": o}))
            .collect();
        let patch = json!({"metadata": {"uid": uid, "ownerReferences": refs}});
        let result = match api
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            // Custom resources take no strategic merge patch: rewrite the list instead.
            Err(kube::Error::Api(e)) if e.code == 415 => {
                let current = match api.get(name).await {
                    Ok(o) => o,
                    Err(_) => return true,
                };
                let kept: Vec<&OwnerReference> = current
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| !owners.contains(&r.uid))
                    .collect();
                let patch = json!({"metadata": {"resourceVersion": current.metadata.resource_version, "ownerReferences": kept}});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            }
            other => other,
        };
        match result {
            Ok(_) => false,
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(e) => {
                tracing::debug!(%name, error = %e, "removing owner references");
                true
            }
        }
    }

    /// Foreground and orphan deletion of an owner. True when to try again.
    async fn finish_owner(&mut self, uid: &str) -> bool {
        let Some(owner) = self.graph.items.get(uid).cloned() else {
            return false;
        };
        if !owner.deleting {
            return false;
        }
        let dependents = self.graph.dependents_of(uid);
        let mut again = false;
        if owner.finalizers.iter().any(|f| f == ORPHAN) {
            for d in &dependents {
                let Some(item) = self.graph.items.get(d).cloned() else {
                    continue;
                };
                let api = self.api_for(item.kind, item.namespace.as_deref());
                again |= self
                    .drop_refs(&api, d, &item.name, &[uid.to_string()])
                    .await;
            }
            if again {
                return true;
            }
            return self.remove_finalizer(&owner, ORPHAN).await;
        }
        if !owner.finalizers.iter().any(|f| f == FOREGROUND) {
            return false;
        }
        let mut blocking = 0;
        for d in &dependents {
            let Some(item) = self.graph.items.get(d).cloned() else {
                continue;
            };
            let blocks = item
                .owners
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if item.deleting {
                continue;
            }
            // Dependents with dependents of their own go in the foreground too.
            let policy = if self.graph.dependents.contains_key(d) {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            };
            let dp = DeleteParams {
                propagation_policy: Some(policy),
                preconditions: Some(Preconditions {
                    uid: Some(d.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let api = self.api_for(item.kind, item.namespace.as_deref());
            match api.delete(&item.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    tracing::debug!(name = %item.name, error = %e, "deleting a dependent in the foreground");
                    again = true;
                }
            }
        }
        if blocking > 0 {
            // Waits for their deletion events.
            return again;
        }
        self.remove_finalizer(&owner, FOREGROUND).await || again
    }

    async fn remove_finalizer(&self, owner: &Item, finalizer: &str) -> bool {
        let api = self.api_for(owner.kind, owner.namespace.as_deref());
        let current = match api.get_metadata_opt(&owner.name).await {
            Ok(Some(o)) => o,
            Ok(None) => return false,
            Err(_) => return true,
        };
        let kept: Vec<&String> = current
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| f.as_str() != finalizer)
            .collect();
        let patch = json!({"metadata": {"resourceVersion": current.metadata.resource_version, "finalizers": kept}});
        match api
            .patch(&owner.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => false,
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(e) => {
                tracing::debug!(name = %owner.name, error = %e, "removing a finalizer");
                true
            }
        }
    }
}
