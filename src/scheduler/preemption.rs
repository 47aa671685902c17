//! Preemption, as kube-scheduler's DefaultPreemption: when a pod fits nowhere and may preempt
//! (`preemptionPolicy` is not Never), each node whose refusal evicting could resolve is tried
//! with every lower-priority pod removed; if the pod then fits, the removed pods are put back
//! from the most important down while it still fits, and those that cannot be are the victims.
//! The node with the least important victims wins (lowest highest priority, then lowest sum of
//! priorities, then fewest); the pod is nominated there (`status.nominatedNodeName`) and the
//! victims get a `DisruptionTarget` condition, a `Preempted` event and are deleted. The pod is
//! tried again once they are gone.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::cache::{Cache, NodeInfo, PodInfo};
use super::framework::{FitError, Plugin};
use crate::events::{self, Recorder, Type};

/// A node and the pods to evict there.
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

fn fits(plugins: &[Box<dyn Plugin>], pod: &PodInfo, node: &NodeInfo) -> bool {
    plugins.iter().all(|p| p.filter(pod, node).is_none())
}

/// When the pod started (for "more important": earlier is).
fn started(p: &PodInfo) -> Option<Timestamp> {
    p.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
}

/// The victims on one node, if evicting lower-priority pods makes room there.
fn victims_on(
    plugins: &[Box<dyn Plugin>],
    pod: &PodInfo,
    node: &NodeInfo,
) -> Option<Vec<Arc<PodInfo>>> {
    let mut lower: Vec<Arc<PodInfo>> = node
        .pods
        .values()
        .filter(|p| p.priority < pod.priority && p.pod.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    if lower.is_empty() {
        return None;
    }
    let mut sim = node.clone();
    for p in &lower {
        sim.remove(&p.uid);
    }
    if !fits(plugins, pod, &sim) {
        return None;
    }
    // The most important first: higher priority, then started earlier.
    lower.sort_by_key(|p| (std::cmp::Reverse(p.priority), started(p)));
    let mut victims = Vec::new();
    for p in lower {
        sim.add(p.clone());
        if !fits(plugins, pod, &sim) {
            sim.remove(&p.uid);
            victims.push(p);
        }
    }
    Some(victims)
}

/// Upstream's dry run over the nodes `fit` says preemption may help on.
pub fn find(
    cache: &Cache,
    plugins: &[Box<dyn Plugin>],
    pod: &PodInfo,
    fit: &FitError,
) -> Option<Candidate> {
    if !fit.may_preempt {
        return None;
    }
    let mut best: Option<((i32, i64, usize), Candidate)> = None;
    for (name, rejection) in &fit.rejections {
        if !rejection.resolvable {
            continue;
        }
        let Some(node) = cache.nodes.get(name) else {
            continue;
        };
        let Some(victims) = victims_on(plugins, pod, node) else {
            continue;
        };
        let rank = (
            victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
            victims.iter().map(|v| i64::from(v.priority)).sum::<i64>(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((
                rank,
                Candidate {
                    node: name.clone(),
                    victims,
                },
            ));
        }
    }
    best.map(|(_, c)| c)
}

/// Nominates the node for the pod and evicts the victims.
pub async fn carry_out(client: Client, recorder: Arc<Recorder>, pod: Arc<PodInfo>, c: Candidate) {
    let ns = pod.pod.namespace().unwrap_or_default();
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let nominate = json!({"status": {"nominatedNodeName": c.node}});
    if let Err(e) = api
        .patch_status(
            &pod.pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&nominate),
        )
        .await
    {
        tracing::debug!(pod = %pod.pod.name_any(), error = %e, "nominating a node");
    }
    for v in c.victims {
        let vns = v.pod.namespace().unwrap_or_default();
        let vapi: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &vns);
        let name = v.pod.name_any();
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": format!("{}: preempting to accommodate a higher priority pod", super::DEFAULT_SCHEDULER),
            "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        if let Err(e) = vapi
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(&condition),
            )
            .await
        {
            tracing::debug!(pod = %name, error = %e, "marking a preemption victim");
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(v.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match vapi.delete(&name, &dp).await {
            Ok(_) => {
                recorder
                    .record(
                        &events::reference(v.pod.as_ref()),
                        Type::Normal,
                        "Preempted",
                        &format!("Preempted by pod {} on node {}", pod.uid, c.node),
                    )
                    .await
            }
            Err(e) => tracing::debug!(pod = %name, error = %e, "evicting a preemption victim"),
        }
    }
}
