//! The DaemonSet controller, as upstream's: one pod per eligible node. A node is eligible when
//! the template's nodeSelector and required node affinity admit it and it has no taint the pod
//! does not tolerate (the daemon tolerations added below count); a pod stays while the node has
//! no untolerated NoExecute taint. Pods are pinned to their node with a `matchFields`
//! `metadata.name` node affinity and bound by the scheduler, carry the template's revision
//! (`controller-revision-hash`, from [`super::history`]) and `pod-template-generation`, and are
//! replaced on RollingUpdate within `maxUnavailable` (or ahead of time within `maxSurge`), or
//! left for the user with OnDelete. The status carries the counts `kubectl rollout status`
//! reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::cache::{controller_of, Cache, Change};
use super::pacer::Pacer;
use crate::events::Recorder;
use crate::informer::Informer;
use crate::placement;

mod sync;

/// The pod label with the hash of the revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The pod label with the DaemonSet generation a pod was made from.
pub const GENERATION_LABEL: &str = "pod-template-generation";

const KIND: &str = "DaemonSet";
/// How long unmet expectations hold back a sync.
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

/// Creations and deletions a DaemonSet waits to see in its watch before counting again.
#[derive(Default)]
struct Expectation {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

impl Expectation {
    fn satisfied(&self) -> bool {
        (self.creates.is_empty() && self.deletes.is_empty())
            || self
                .since
                .is_some_and(|t| t.elapsed() > EXPECTATIONS_TIMEOUT)
    }
}

struct Ctl {
    writer: Client,
    recorder: Recorder,
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// Adds the tolerations every daemon pod gets, as upstream's `AddOrUpdateDaemonPodTolerations`.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    let have = spec.tolerations.get_or_insert_with(Vec::new);
    for t in wanted {
        if !have.iter().any(|h| h.key == t.key && h.effect == t.effect) {
            have.push(t);
        }
    }
}

/// Whether a daemon pod should run on `node`, and whether one already there may stay.
pub fn should_run(spec: &PodSpec, node: &Node) -> (bool, bool) {
    let name = node.name_any();
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return (false, false);
    }
    if !placement::affinity_admits(spec, &name, node.labels()) {
        return (false, false);
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    if placement::untolerated_taint(spec, taints, &["NoExecute"]).is_some() {
        return (false, false);
    }
    if placement::untolerated_taint(spec, taints, &["NoSchedule"]).is_some() {
        return (false, true);
    }
    (true, true)
}

/// The node a daemon pod is for: its `nodeName`, or the node its affinity pins it to.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|f| {
            (f.key == "metadata.name" && f.operator == "In")
                .then(|| f.values.as_ref().and_then(|v| v.first().cloned()))
                .flatten()
        })
    })
}

fn controller_ref(ds: &DaemonSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: KIND.into(),
        name: ds.name_any(),
        uid: ds.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What about a node decides where daemons run.
fn placement_of(n: &Node) -> impl PartialEq {
    let spec = n.spec.as_ref();
    (
        n.labels().clone(),
        spec.and_then(|s| s.taints.clone()),
        spec.and_then(|s| s.unschedulable),
    )
}

/// Runs until `stop` turns true.
pub async fn run(
    shared: Client,
    pod_informer: Informer<Pod>,
    node_informer: Informer<Node>,
    writer: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut ds_events = watcher(Api::<DaemonSet>::all(shared.clone()), Default::default())
        .default_backoff()
        .boxed();
    let mut pod_events = pod_informer.subscribe();
    let mut node_events = node_informer.subscribe();
    let mut rev_events = watcher(Api::<ControllerRevision>::all(shared), Default::default())
        .default_backoff()
        .boxed();
    let ctl = Ctl {
        recorder: Recorder::new(writer.clone(), "daemonset-controller", None),
        writer,
    };
    let mut sets: Cache<DaemonSet> = Cache::default();
    let mut pods: Cache<Pod> = Cache::default();
    let mut nodes: Cache<Node> = Cache::default();
    let mut revisions: Cache<ControllerRevision> = Cache::default();
    let mut expect: HashMap<String, Expectation> = HashMap::new();
    let mut dirty: HashSet<String> = HashSet::new();
    let mut pacer: Pacer<String> = Pacer::default();
    loop {
        pacer.arm(!dirty.is_empty());
        tokio::select! {
            ev = ds_events.next() => match ev {
                Some(Ok(ev)) => match sets.apply(ev) {
                    Change::Resynced => dirty.extend(sets.items.keys().cloned()),
                    Change::Applied { new, .. } => { dirty.insert(new.uid().unwrap_or_default()); }
                    Change::Deleted(d) => { expect.remove(&d.uid().unwrap_or_default()); }
                    Change::None => {}
                },
                Some(Err(_)) => continue,
                None => return,
            },
            ev = pod_events.next() => match ev {
                Some(ev) => match pods.apply_shared(ev) {
                    Change::Resynced => dirty.extend(sets.items.keys().cloned()),
                    Change::Applied { new, old } => {
                        if let Some(owner) = controller_of(new.as_ref(), KIND) {
                            if let Some(e) = expect.get_mut(&owner) {
                                if old.is_none() {
                                    e.creates.remove(&target_node(&new).unwrap_or_default());
                                }
                                if new.metadata.deletion_timestamp.is_some() {
                                    e.deletes.remove(&new.uid().unwrap_or_default());
                                }
                            }
                            dirty.insert(owner);
                        }
                    }
                    Change::Deleted(p) => {
                        if let Some(owner) = controller_of(p.as_ref(), KIND) {
                            if let Some(e) = expect.get_mut(&owner) {
                                e.deletes.remove(&p.uid().unwrap_or_default());
                            }
                            dirty.insert(owner);
                        }
                    }
                    Change::None => {}
                },
                None => return,
            },
            ev = node_events.next() => match ev {
                Some(ev) => match nodes.apply_shared(ev) {
                    Change::Applied { new, old } => {
                        if old.is_none_or(|o| placement_of(&o) != placement_of(&new)) {
                            dirty.extend(sets.items.keys().cloned());
                        }
                    }
                    Change::Resynced | Change::Deleted(_) => dirty.extend(sets.items.keys().cloned()),
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
        if !(sets.synced
            && pods.synced
            && nodes.synced
            && revisions.synced
            && pacer.ready(!dirty.is_empty()))
        {
            continue;
        }
        let all_nodes: Vec<Arc<Node>> = nodes.items.values().cloned().collect();
        for uid in std::mem::take(&mut dirty) {
            let Some(ds) = sets.items.get(&uid).cloned() else {
                continue;
            };
            let ns = ds.namespace().unwrap_or_default();
            let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
            for p in pods.in_namespace(&ns) {
                if controller_of(p.as_ref(), KIND).as_deref() == Some(uid.as_str()) {
                    by_node
                        .entry(target_node(p).unwrap_or_default())
                        .or_default()
                        .push(p.clone());
                }
            }
            let revs: Vec<Arc<ControllerRevision>> = revisions
                .in_namespace(&ns)
                .filter(|r| controller_of(r.as_ref(), KIND).as_deref() == Some(uid.as_str()))
                .cloned()
                .collect();
            let e = expect.entry(uid.clone()).or_default();
            match ctl.sync(&ds, &all_nodes, by_node, revs, e).await {
                Ok(Some(after)) => pacer.after(uid, after),
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(daemonset = %ds.name_any(), error = %err, "syncing a daemonset");
                    pacer.after(uid, Duration::from_secs(1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn eligibility_follows_selectors_and_taints() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"role": "edge"}},
            "spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]},
        }))
        .expect("node");
        let mut spec: PodSpec = serde_json::from_value(json!({"containers": []})).expect("spec");
        add_daemon_tolerations(&mut spec);
        assert_eq!(
            should_run(&spec, &node),
            (false, true),
            "NoSchedule keeps running pods"
        );
        spec.tolerations
            .get_or_insert_with(Vec::new)
            .push(toleration("dedicated", "NoSchedule"));
        assert_eq!(should_run(&spec, &node), (true, true));
        spec.node_selector = Some([("role".to_string(), "core".to_string())].into());
        assert_eq!(should_run(&spec, &node), (false, false));
        let mut cordoned = node.clone();
        if let Some(s) = cordoned.spec.as_mut() {
            s.unschedulable = Some(true);
        }
        spec.node_selector = None;
        assert_eq!(
            should_run(&spec, &cordoned),
            (true, true),
            "daemons ignore cordons"
        );
    }

    #[test]
    fn pods_are_pinned_by_field_affinity() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}]}]}}}},
        }))
        .expect("pod");
        assert_eq!(target_node(&pod).as_deref(), Some("n7"));
    }
}
