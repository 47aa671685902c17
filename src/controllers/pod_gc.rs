//! The pod garbage collector, as upstream's: every 20 seconds it force-deletes pods bound to a
//! node that no longer exists (after 40 s of quarantine, first marking them
//! `DisruptionTarget` with reason `DeletionByPodGC`), terminating pods that were never
//! scheduled, and terminating pods on nodes tainted `node.kubernetes.io/out-of-service`; and it
//! deletes the oldest finished pods beyond `--terminated-pod-gc-threshold` (12,500).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::cache::Cache;
use super::pod_state::{phase, terminating};
use crate::informer::Informer;

/// How often the collector looks.
const PERIOD: Duration = Duration::from_secs(20);
/// How long a node must be missing before its pods are deleted.
const QUARANTINE: Duration = Duration::from_secs(40);
/// Finished pods kept at most (upstream's `--terminated-pod-gc-threshold` default).
pub const TERMINATED_THRESHOLD: usize = 12_500;

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Runs until `stop` turns true.
pub async fn run(
    pod_informer: Informer<Pod>,
    node_informer: Informer<Node>,
    writer: Client,
    threshold: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut pod_events = pod_informer.subscribe();
    let mut node_events = node_informer.subscribe();
    let mut pods: Cache<Pod> = Cache::default();
    let mut nodes: Cache<Node> = Cache::default();
    // Nodes first seen missing, and when.
    let mut missing_since: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            ev = pod_events.next() => match ev {
                Some(ev) => { pods.apply_shared(ev); }
                None => return,
            },
            ev = node_events.next() => match ev {
                Some(ev) => { nodes.apply_shared(ev); }
                None => return,
            },
            _ = tick.tick() => {
                if pods.synced && nodes.synced {
                    collect(&writer, &pods, &nodes, &mut missing_since, threshold).await;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn collect(
    writer: &Client,
    pods: &Cache<Pod>,
    nodes: &Cache<Node>,
    missing_since: &mut HashMap<String, Instant>,
    threshold: usize,
) {
    for (p, mark) in plan(pods, nodes, missing_since, threshold) {
        let api: Api<Pod> = Api::namespaced(writer.clone(), &p.namespace().unwrap_or_default());
        let name = p.name_any();
        if let Some(message) = mark {
            let patch = json!({"status": {"conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                "message": message,
                "lastTransitionTime": Time(Timestamp::now()),
            }]}});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "marking a pod for collection");
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: p.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => tracing::info!(pod = %name, namespace = ?p.namespace(), "collected a pod"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::debug!(pod = %name, error = %e, "collecting a pod"),
        }
    }
}

/// The pods to delete now, each with the DisruptionTarget message to mark it with, if any.
fn plan(
    pods: &Cache<Pod>,
    nodes: &Cache<Node>,
    missing_since: &mut HashMap<String, Instant>,
    threshold: usize,
) -> Vec<(Arc<Pod>, Option<&'static str>)> {
    let known: HashSet<String> = nodes.items.values().map(|n| n.name_any()).collect();
    let out_of_service: HashSet<String> = nodes
        .items
        .values()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|ts| {
                    ts.iter()
                        .any(|t| t.key == "node.kubernetes.io/out-of-service")
                })
        })
        .map(|n| n.name_any())
        .collect();
    missing_since.retain(|n, _| !known.contains(n));
    let mut doomed: Vec<(Arc<Pod>, Option<&'static str>)> = Vec::new(); // (pod, DisruptionTarget message)
    let mut finished: Vec<Arc<Pod>> = Vec::new();
    for p in pods.items.values() {
        match node_of(p) {
            Some(n) if !known.contains(n) => {
                let since = *missing_since
                    .entry(n.to_string())
                    .or_insert_with(Instant::now);
                if since.elapsed() >= QUARANTINE {
                    doomed.push((p.clone(), Some("PodGC: node no longer exists")));
                }
            }
            Some(n) if terminating(p) && out_of_service.contains(n) => {
                doomed.push((p.clone(), Some("PodGC: node is out-of-service")))
            }
            None if terminating(p) => doomed.push((p.clone(), None)),
            _ => {}
        }
        if matches!(phase(p), "Succeeded" | "Failed") && !terminating(p) {
            finished.push(p.clone());
        }
    }
    if finished.len() > threshold {
        finished.sort_by_key(|p| (p.creation_timestamp().map(|t| t.0), p.name_any()));
        let excess = finished.len() - threshold;
        doomed.extend(finished.into_iter().take(excess).map(|p| (p, None)));
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, phase: &str, deleting: bool, created: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": name, "creationTimestamp": created,
                "deletionTimestamp": deleting.then_some("2026-01-01T00:00:00Z")},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase},
        }))
        .expect("pod")
    }

    #[test]
    fn orphans_unscheduled_terminating_and_surplus_finished_pods_go() {
        let mut pods: Cache<Pod> = Cache::default();
        let mut nodes: Cache<Node> = Cache::default();
        for p in [
            pod(
                "on-ghost",
                Some("ghost"),
                "Running",
                false,
                "2026-01-01T00:00:00Z",
            ),
            pod("fine", Some("n1"), "Running", false, "2026-01-01T00:00:00Z"),
            pod(
                "never-scheduled",
                None,
                "Pending",
                true,
                "2026-01-01T00:00:00Z",
            ),
            pod(
                "done-old",
                Some("n1"),
                "Succeeded",
                false,
                "2026-01-01T00:00:00Z",
            ),
            pod(
                "done-new",
                Some("n1"),
                "Failed",
                false,
                "2026-01-02T00:00:00Z",
            ),
        ] {
            pods.apply(watcher::Event::Apply(p));
        }
        let n1: Node =
            serde_json::from_value(json!({"metadata": {"name": "n1", "uid": "n1"}})).expect("node");
        nodes.apply(watcher::Event::Apply(n1));
        let mut missing = HashMap::new();
        let names = |plan: Vec<(Arc<Pod>, Option<&str>)>| {
            let mut v: Vec<String> = plan.iter().map(|(p, _)| p.name_any()).collect();
            v.sort();
            v
        };
        // The ghost node is only quarantined at first.
        assert_eq!(
            names(plan(&pods, &nodes, &mut missing, 1)),
            ["done-old", "never-scheduled"]
        );
        missing.insert("ghost".to_string(), Instant::now() - QUARANTINE);
        let p = plan(&pods, &nodes, &mut missing, 2);
        assert_eq!(names(p.clone()), ["never-scheduled", "on-ghost"]);
        let ghost = p
            .iter()
            .find(|(p, _)| p.name_any() == "on-ghost")
            .map(|(_, m)| *m);
        assert_eq!(ghost, Some(Some("PodGC: node no longer exists")));
    }
}
