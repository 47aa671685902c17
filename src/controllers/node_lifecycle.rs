//! The node lifecycle controller, as upstream's: it watches each node's heartbeat (its Lease in
//! `kube-node-lease`, or its Ready condition) and, after the grace period
//! (`--node-monitor-grace-period`, 40 s; `--node-startup-grace-period`, 60 s, for a node that
//! never sent one) without one, sets the node's conditions to Unknown
//! ("Kubelet stopped posting node status.") and its pods' Ready to False. It keeps the
//! condition taints in step with the conditions (`not-ready`, `unreachable`, the pressure taints
//! and `unschedulable` as NoSchedule; `not-ready`/`unreachable` also as NoExecute), and evicts
//! the pods of NoExecute-tainted nodes that do not tolerate the taint, or once their
//! `tolerationSeconds` have passed since the taint was added.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::cache::Cache;
use crate::conditions::{node_condition, pod_ready};
use crate::events::{self, Recorder, Type};
use crate::informer::Informer;
use crate::taints;

const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Condition (type, status) -> the NoSchedule taint it brings.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
];
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// The taints the controller manages that `node` should carry, as (key, effect).
fn wanted_taints(node: &Node) -> BTreeSet<(&'static str, &'static str)> {
    let mut out = BTreeSet::new();
    for (ty, status, key) in CONDITION_TAINTS {
        if node_condition(node, ty) == Some(status) {
            out.insert((key, "NoSchedule"));
        }
    }
    match node_condition(node, "Ready") {
        Some("False") => {
            out.insert((NOT_READY, "NoExecute"));
        }
        Some("Unknown") => {
            out.insert((UNREACHABLE, "NoExecute"));
        }
        _ => {}
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.insert((UNSCHEDULABLE, "NoSchedule"));
    }
    out
}

fn managed(key: &str, effect: &str) -> bool {
    let keys = CONDITION_TAINTS.iter().map(|(_, _, k)| *k);
    match effect {
        "NoSchedule" => keys.chain([UNSCHEDULABLE]).any(|k| k == key),
        "NoExecute" => key == NOT_READY || key == UNREACHABLE,
        _ => false,
    }
}

/// The node's taints with the managed ones brought in line with its conditions, if different.
fn reconcile_taints(node: &Node) -> Option<Vec<Taint>> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let wanted = wanted_taints(node);
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !managed(&t.key, &t.effect) || wanted.contains(&(t.key.as_str(), t.effect.as_str()))
        })
        .cloned()
        .collect();
    for (key, effect) in &wanted {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: key.to_string(),
                effect: effect.to_string(),
                value: None,
                time_added: (*effect == "NoExecute").then(|| Time(Timestamp::now())),
            });
        }
    }
    (out != current).then_some(out)
}

/// When the node last showed it is alive: its Lease's renewTime or its Ready heartbeat.
fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let renew = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    renew.max(ready)
}

struct Ctl {
    writer: Client,
    grace: Duration,
    startup_grace: Duration,
    recorder: Recorder,
}

/// Runs until `stop` turns true.
pub async fn run(
    shared: Client,
    pod_informer: Informer<Pod>,
    writer: Client,
    (grace, startup_grace): (Duration, Duration),
    mut stop: watch::Receiver<bool>,
) {
    let (nodes, w) = reflector::store::<Node>();
    let node_events = reflector(
        w,
        watcher(Api::<Node>::all(shared.clone()), Default::default()).default_backoff(),
    )
    .touched_objects()
    .map(|_| ())
    .boxed();
    let (leases, w) = reflector::store::<Lease>();
    let lease_events = reflector(
        w,
        watcher(
            Api::<Lease>::namespaced(shared.clone(), "kube-node-lease"),
            Default::default(),
        )
        .default_backoff(),
    )
    .map(|_| ());
    let mut pod_events = pod_informer.subscribe();
    let mut pods: Cache<Pod> = Cache::default();
    // Leases and pods only feed their stores; nodes and the clock drive the passes.
    let mut background = lease_events.boxed();
    let mut node_events = node_events;
    let ctl = Ctl {
        recorder: Recorder::new(writer.clone(), "node-controller", None),
        writer,
        grace,
        startup_grace,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let started = Timestamp::now();
    loop {
        tokio::select! {
            ev = node_events.next() => if ev.is_none() { return },
            // A stream that ended (at shutdown) must not be polled again.
            ev = background.next() => if ev.is_none() { return } else { continue },
            ev = pod_events.next() => match ev {
                Some(ev) => { pods.apply_shared(ev); continue; }
                None => return,
            },
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // A pass reads every node, lease and pod: take what is queued first, so the pass
        // never works from stale objects (with 1,000 nodes, passes over a stale node store
        // had every taint and status write conflict) and nothing piles up behind passes.
        while let Some(Some(_)) = node_events.next().now_or_never() {}
        while let Some(Some(_)) = background.next().now_or_never() {}
        while let Some(Some(ev)) = pod_events.next().now_or_never() {
            pods.apply_shared(ev);
        }
        if !(super::ready(&nodes) && super::ready(&leases) && pods.synced) {
            continue;
        }
        let mut by_node: HashMap<&str, Vec<std::sync::Arc<Pod>>> = HashMap::new();
        for p in pods.items.values() {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                by_node.entry(n).or_default().push(p.clone());
            }
        }
        for node in nodes.state() {
            let name = node.name_any();
            let lease = leases.get(&reflector::ObjectRef::new(&name).within("kube-node-lease"));
            let on_node = by_node
                .get(name.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            if let Err(e) = ctl.sync(&node, lease.as_deref(), on_node, started).await {
                tracing::debug!(node = %name, error = %e, "node lifecycle");
            }
        }
    }
}

impl Ctl {
    async fn sync(
        &self,
        node: &Node,
        lease: Option<&Lease>,
        pods: &[std::sync::Arc<Pod>],
        started: Timestamp,
    ) -> Result<(), kube::Error> {
        let name = node.name_any();
        let api: Api<Node> = Api::all(self.writer.clone());
        let now = Timestamp::now();
        // A node seen only since this controller started gets a full grace period; one that
        // never sent a heartbeat gets the startup grace period from its creation.
        let created = node
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(started, |t| t.0.max(started));
        let (seen, grace) = match last_heartbeat(node, lease) {
            Some(t) => (t.max(started), self.grace),
            None => (created, self.startup_grace),
        };
        let stale = now.duration_since(seen).unsigned_abs() > grace;
        if stale && node_condition(node, "Ready") != Some("Unknown") {
            self.mark_unknown(&api, node).await?;
            self.mark_pods_not_ready(pods).await;
            return Ok(()); // the node event that follows brings the taints
        }
        if let Some(taints) = reconcile_taints(node) {
            let patch = json!({
                "metadata": {"resourceVersion": node.resource_version()},
                "spec": {"taints": taints},
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            return Ok(());
        }
        self.evict(node, pods).await;
        Ok(())
    }

    async fn mark_unknown(&self, api: &Api<Node>, node: &Node) -> Result<(), kube::Error> {
        let now = json!(Time(Timestamp::now()));
        let mut conditions: Vec<serde_json::Value> = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                v["status"] = json!("Unknown");
                v["reason"] = json!("NodeStatusUnknown");
                v["message"] = json!("Kubelet stopped posting node status.");
                v["lastTransitionTime"] = now.clone();
                v
            })
            .collect();
        if !conditions.iter().any(|c| c["type"] == "Ready") {
            conditions.push(json!({
                "type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                "message": "Kubelet never posted node status.", "lastTransitionTime": now,
                "lastHeartbeatTime": now,
            }));
        }
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "status": {"conditions": conditions},
        });
        api.patch_status(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        self.recorder
            .record(
                &events::reference(node),
                Type::Normal,
                "NodeNotReady",
                &format!("Node {} status is now: NodeNotReady", node.name_any()),
            )
            .await;
        Ok(())
    }

    async fn mark_pods_not_ready(&self, pods: &[std::sync::Arc<Pod>]) {
        for pod in pods {
            if !pod_ready(pod) {
                continue;
            }
            let Some(conditions) = pod.status.as_ref().and_then(|s| s.conditions.clone()) else {
                continue;
            };
            let conditions: Vec<serde_json::Value> = conditions
                .iter()
                .map(|c| {
                    let mut v = serde_json::to_value(c).unwrap_or_default();
                    if c.type_ == "Ready" {
                        v["status"] = json!("False");
                        v["lastTransitionTime"] = json!(Time(Timestamp::now()));
                    }
                    v
                })
                .collect();
            let api: Api<Pod> =
                Api::namespaced(self.writer.clone(), &pod.namespace().unwrap_or_default());
            let patch = json!({"status": {"conditions": conditions}});
            if let Err(e) = api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::debug!(pod = %pod.name_any(), error = %e, "marking a pod not ready");
            }
        }
    }

    /// Deletes the pods that do not tolerate the node's NoExecute taints (now, or once their
    /// tolerationSeconds have run out).
    async fn evict(&self, node: &Node, pods: &[std::sync::Arc<Pod>]) {
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        if taints.is_empty() {
            return;
        }
        let now = Timestamp::now();
        for pod in pods {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            let due = taints.iter().any(|taint| {
                let matching: Vec<_> = tolerations
                    .iter()
                    .filter(|t| taints::tolerates(t, taint))
                    .collect();
                if matching.is_empty() {
                    return true;
                }
                // The shortest tolerationSeconds of the matching tolerations; none is forever.
                let Some(secs) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
                    return false;
                };
                let added = taint.time_added.as_ref().map_or(now, |t| t.0);
                now.duration_since(added).as_secs() >= secs.max(0)
            });
            if due {
                self.delete_pod(pod).await;
            }
        }
    }

    async fn delete_pod(&self, pod: &Pod) {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let api: Api<Pod> = Api::namespaced(self.writer.clone(), &ns);
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        let _ = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(&condition),
            )
            .await;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {
                self.recorder
                    .record(
                        &events::reference(pod),
                        Type::Normal,
                        "TaintManagerEviction",
                        &format!("Marking for deletion Pod {ns}/{name}"),
                    )
                    .await
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::debug!(pod = %name, error = %e, "evicting a pod from a tainted node")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("node")
    }

    #[test]
    fn condition_taints_follow_the_conditions() {
        let ready = node(json!({"metadata": {"name": "n"}, "spec": {"taints": [
            {"key": NOT_READY, "effect": "NoSchedule"},
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
        let fixed = reconcile_taints(&ready).expect("change");
        assert_eq!(fixed.len(), 1);
        assert_eq!(fixed[0].key, "dedicated");

        let gone = node(
            json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"},
                {"type": "MemoryPressure", "status": "True"}]}}),
        );
        let mut keys: Vec<(String, String, bool)> = reconcile_taints(&gone)
            .expect("change")
            .into_iter()
            .map(|t| (t.key, t.effect, t.time_added.is_some()))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                (
                    "node.kubernetes.io/memory-pressure".into(),
                    "NoSchedule".into(),
                    false
                ),
                (UNREACHABLE.into(), "NoExecute".into(), true),
                (UNREACHABLE.into(), "NoSchedule".into(), false),
                (UNSCHEDULABLE.into(), "NoSchedule".into(), false),
            ]
        );
        let settled = node(
            json!({"metadata": {"name": "n"}, "spec": {"taints": serde_json::to_value(reconcile_taints(&gone)).unwrap_or_default(), "unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"},
                {"type": "MemoryPressure", "status": "True"}]}}),
        );
        assert_eq!(reconcile_taints(&settled), None);
    }
}
