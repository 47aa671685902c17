//! The scheduler: places pending pods on nodes as kube-scheduler does. Pods for
//! `default-scheduler` (any other `schedulerName` is left alone) wait in the [`queue`]; one at
//! a time they are filtered against the nodes of the [`cache`] and the feasible nodes scored
//! by the plugins of the [`framework`] ([`plugins`]); the pod is then assumed onto the best node
//! and bound through `pods/binding` while the next pod is scheduled. A pod that fits nowhere gets
//! a FailedScheduling event and a `PodScheduled=False` condition with upstream's message, and
//! tries again when a node is added or changed or a pod goes away.
//!
//! It is an API client like any other (`system:kube-scheduler`), in-process when embedded.

pub mod cache;
pub mod framework;
pub mod plugins;
pub mod preemption;
pub mod queue;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::events::{self, Recorder, Type};
use cache::{Cache, PodInfo};
use framework::{FitError, Plugin};

/// The name pods give to be scheduled by this scheduler.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// How a binding ended.
struct Bound {
    info: Arc<PodInfo>,
    ok: bool,
}

struct Scheduler {
    client: Client,
    cache: Cache,
    queue: queue::Queue,
    plugins: Vec<Box<dyn Plugin>>,
    next_start: usize,
    rng: u64,
    recorder: Arc<Recorder>,
    bound: mpsc::UnboundedSender<Bound>,
    volumes: plugins::volume_binding::Shared,
}

fn responsible(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n.is_empty() || n == DEFAULT_SCHEDULER)
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// The scheduler never reads managedFields, often the larger part of an object; as upstream's
/// informers do, they are not kept.
fn drop_managed_fields<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// Runs until `stop` turns true.
pub async fn run(
    client: Client,
    pod_informer: crate::informer::Informer<Pod>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pods = pod_informer.subscribe();
    let mut nodes = watcher(Api::<Node>::all(client.clone()), Default::default())
        .default_backoff()
        .modify(drop_managed_fields)
        .boxed();
    let mut claims = watcher(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        Default::default(),
    )
    .default_backoff()
    .modify(drop_managed_fields)
    .boxed();
    let mut pvs = watcher(
        Api::<PersistentVolume>::all(client.clone()),
        Default::default(),
    )
    .default_backoff()
    .modify(drop_managed_fields)
    .boxed();
    let mut classes = watcher(Api::<StorageClass>::all(client.clone()), Default::default())
        .default_backoff()
        .modify(drop_managed_fields)
        .boxed();
    let volumes = plugins::volume_binding::Shared::default();
    let (tx, mut bound) = mpsc::unbounded_channel();
    let mut s = Scheduler {
        recorder: Arc::new(Recorder::new(client.clone(), DEFAULT_SCHEDULER, None)),
        client,
        cache: Cache::default(),
        queue: queue::Queue::default(),
        plugins: plugins::default_plugins(volumes.clone()),
        volumes,
        next_start: 0,
        rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()),
        bound: tx,
    };
    let (mut pods_synced, mut nodes_synced) = (false, false);
    let (mut pod_init, mut node_init) = (HashSet::new(), HashSet::new());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let can_schedule = pods_synced && nodes_synced && s.queue.has_active();
        tokio::select! {
            ev = pods.next() => match ev {
                Some(ev) => {
                    if s.pod_event(ev, &mut pod_init) {
                        pods_synced = true;
                    }
                }
                None => return,
            },
            ev = nodes.next() => match ev {
                Some(Ok(ev)) => {
                    if s.node_event(ev, &mut node_init) {
                        nodes_synced = true;
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "watching nodes"),
                None => return,
            },
            Some(Ok(ev)) = claims.next() => {
                s.volumes.write().unwrap_or_else(|p| p.into_inner()).claim_event(ev);
                s.queue.move_all();
            }
            Some(Ok(ev)) = pvs.next() => {
                s.volumes.write().unwrap_or_else(|p| p.into_inner()).volume_event(ev);
                s.queue.move_all();
            }
            Some(Ok(ev)) = classes.next() => {
                s.volumes.write().unwrap_or_else(|p| p.into_inner()).class_event(ev);
            }
            Some(b) = bound.recv() => s.binding_done(b),
            _ = tick.tick() => s.queue.tick(),
            _ = std::future::ready(()), if can_schedule => s.schedule_one(),
            _ = stop.changed() => return,
        }
    }
}

impl Scheduler {
    /// Handles a pod watch event; true once the initial list is in.
    fn pod_event(&mut self, ev: crate::informer::Event<Pod>, init: &mut HashSet<String>) -> bool {
        match ev {
            watcher::Event::Init => init.clear(),
            watcher::Event::InitApply(p) => {
                init.insert(p.uid().unwrap_or_default());
                self.pod_changed(p);
            }
            watcher::Event::InitDone => {
                // Pods gone while the watch was down.
                let stale: Vec<String> = self
                    .cache_and_queue_uids()
                    .into_iter()
                    .filter(|u| !init.contains(u))
                    .collect();
                for uid in stale {
                    self.forget_pod(&uid);
                }
                return true;
            }
            watcher::Event::Apply(p) => self.pod_changed(p),
            watcher::Event::Delete(p) => self.forget_pod(&p.uid().unwrap_or_default()),
        }
        false
    }

    fn cache_and_queue_uids(&self) -> Vec<String> {
        self.cache
            .nodes
            .values()
            .flat_map(|n| n.pods.keys().cloned())
            .collect()
    }

    fn forget_pod(&mut self, uid: &str) {
        self.queue.remove(uid);
        if self.cache.is_placed(uid) {
            self.cache.remove_pod(uid);
            self.queue.move_all();
        }
    }

    fn pod_changed(&mut self, pod: Arc<Pod>) {
        let uid = pod.uid().unwrap_or_default();
        if terminal(&pod) {
            self.forget_pod(&uid);
            return;
        }
        if let Some(node) = node_name(&pod).map(str::to_string) {
            self.queue.remove(&uid);
            self.cache.confirm(Arc::new(PodInfo::new(pod)), &node);
            return;
        }
        if !responsible(&pod) || self.cache.is_placed(&uid) {
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            self.queue.remove(&uid);
            return;
        }
        self.queue.add(Arc::new(PodInfo::new(pod)));
    }

    fn node_event(&mut self, ev: watcher::Event<Node>, init: &mut HashSet<String>) -> bool {
        match ev {
            watcher::Event::Init => init.clear(),
            watcher::Event::InitApply(n) => {
                init.insert(n.name_any());
                self.cache.set_node(Arc::new(n));
            }
            watcher::Event::InitDone => {
                let stale: Vec<String> = self
                    .cache
                    .order
                    .iter()
                    .filter(|n| !init.contains(*n))
                    .cloned()
                    .collect();
                for n in stale {
                    self.cache.remove_node(&n);
                }
                self.queue.move_all();
                return true;
            }
            watcher::Event::Apply(n) => {
                self.cache.set_node(Arc::new(n));
                self.queue.move_all();
            }
            watcher::Event::Delete(n) => self.cache.remove_node(&n.name_any()),
        }
        false
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Filters and scores the nodes for one pod; the best node, or why none fits.
    fn find_node(&mut self, pod: &PodInfo) -> Result<String, FitError> {
        let all = self.cache.order.len();
        let may_preempt = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.preemption_policy.as_deref())
            != Some("Never");
        let mut fit = FitError {
            nodes: all,
            rejections: BTreeMap::new(),
            may_preempt,
            nominated: false,
        };
        if all == 0 {
            return Err(fit);
        }
        for p in &self.plugins {
            p.prefilter(pod, &self.cache);
        }
        let wanted = framework::feasible_wanted(all);
        let mut feasible = Vec::new();
        let mut processed = 0;
        for i in 0..all {
            processed = i + 1;
            let name = &self.cache.order[(self.next_start + i) % all];
            let Some(node) = self.cache.nodes.get(name) else {
                continue;
            };
            match self.plugins.iter().find_map(|p| p.filter(pod, node)) {
                Some(r) => {
                    fit.rejections.insert(name.clone(), r);
                }
                None => {
                    feasible.push(node);
                    if feasible.len() >= wanted {
                        break;
                    }
                }
            }
        }
        self.next_start = (self.next_start + processed) % all;
        if feasible.is_empty() {
            return Err(fit);
        }
        if feasible.len() == 1 {
            return Ok(feasible[0].name.clone());
        }
        let mut totals = vec![0i64; feasible.len()];
        for p in self.plugins.iter().filter(|p| p.scores()) {
            let mut raw: Vec<i64> = feasible.iter().map(|n| p.score(pod, n)).collect();
            p.normalize(&mut raw);
            for (t, r) in totals.iter_mut().zip(raw) {
                *t += r * p.weight();
            }
        }
        let best = totals.iter().copied().max().unwrap_or(0);
        let names: Vec<String> = feasible
            .iter()
            .zip(&totals)
            .filter(|(_, t)| **t == best)
            .map(|(n, _)| n.name.clone())
            .collect();
        let pick = (self.random() % names.len() as u64) as usize;
        Ok(names[pick].clone())
    }

    fn schedule_one(&mut self) {
        let Some(info) = self.queue.pop() else {
            return;
        };
        match self.find_node(&info) {
            Ok(node) => {
                self.cache.assume(info.clone(), &node);
                self.queue.done(&info.uid);
                tokio::spawn(bind(
                    self.client.clone(),
                    self.volumes.clone(),
                    self.recorder.clone(),
                    info,
                    node,
                    self.bound.clone(),
                ));
            }
            Err(mut fit) => {
                self.queue.failed(&info.uid, true);
                if let Some(c) = preemption::find(&self.cache, &self.plugins, &info, &fit) {
                    fit.nominated = true;
                    tokio::spawn(preemption::carry_out(
                        self.client.clone(),
                        self.recorder.clone(),
                        info.clone(),
                        c,
                    ));
                }
                tokio::spawn(report_unschedulable(
                    self.client.clone(),
                    self.recorder.clone(),
                    info,
                    fit.message(),
                ));
            }
        }
    }

    fn binding_done(&mut self, b: Bound) {
        if b.ok {
            return;
        }
        // The assumption did not hold: forget it and try the pod again after a backoff.
        self.cache.remove_pod(&b.info.uid);
        self.queue.add(b.info.clone());
        if let Some(p) = self.queue.pop_uid(&b.info.uid) {
            self.queue.failed(&p.uid, false);
        }
    }
}

async fn bind(
    client: Client,
    volumes: plugins::volume_binding::Shared,
    recorder: Arc<Recorder>,
    info: Arc<PodInfo>,
    node: String,
    done: mpsc::UnboundedSender<Bound>,
) {
    let pod = &info.pod;
    if !plugins::volume_binding::prebind(&client, &volumes, pod, &node).await {
        let _ = done.send(Bound { info, ok: false });
        return;
    }
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": info.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let ok = match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => {
            recorder
                .record(
                    &events::reference(pod.as_ref()),
                    Type::Normal,
                    "Scheduled",
                    &format!("Successfully assigned {ns}/{name} to {node}"),
                )
                .await;
            true
        }
        Err(e) => {
            tracing::debug!(pod = %name, %node, error = %e, "binding a pod");
            false
        }
    };
    let _ = done.send(Bound { info, ok });
}

async fn report_unschedulable(
    client: Client,
    recorder: Arc<Recorder>,
    info: Arc<PodInfo>,
    message: String,
) {
    let pod = &info.pod;
    recorder
        .record(
            &events::reference(pod.as_ref()),
            Type::Warning,
            "FailedScheduling",
            &message,
        )
        .await;
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
    if current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(&message)) {
        return;
    }
    let api: Api<Pod> = Api::namespaced(client, &pod.namespace().unwrap_or_default());
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null, "lastTransitionTime": Time(Timestamp::now()),
    }]}});
    if let Err(e) = api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        tracing::debug!(pod = %pod.name_any(), error = %e, "marking a pod unschedulable");
    }
}
