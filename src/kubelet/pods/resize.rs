//! In-place pod resize, as upstream's allocation manager and resize actuation. Every pod's
//! containers, and the pod itself when it sets resources of its own (PodLevelResources), get an
//! allocation (cpu and memory requests and limits) when the kubelet first sees the pod; the
//! allocations live in a checkpoint file (`resize/allocations.rs`), so a restarted kubelet
//! knows what it gave. Containers without limits of their own run within the pod's, so a resize
//! of the pod's limits reaches them too. When the spec asks for other resources
//! (`pods/NAME/resize`), the resize is allocated if the pod then fits the node's allocatable
//! next to the other pods' allocations; else it waits under `PodResizePending` (`Infeasible`
//! past the node's allocatable, `Deferred` past what is free) and the containers keep what they
//! had. An allocated resize is applied in upstream's order (container decreases, the pod
//! cgroup, container increases) through CRI UpdateContainerResources, or by restarting the
//! containers whose resize policy says `RestartContainer`; `PodResizeInProgress` shows it until
//! every running container has its allocation and the pod cgroup the pod's, with reason `Error`
//! when applying failed (a memory limit below what the container or the pod uses is refused, as
//! upstream does).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use serde_json::{json, Value};

use super::worker::{grace_seconds, Shared, State};
use crate::events::Type;
use crate::kubelet::cgroups::limits;

mod allocations;
pub use allocations::{Allocation, Allocations, Pending, Predicates};

/// The resources a resize may change.
const RESIZABLE: [&str; 2] = ["cpu", "memory"];

#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    #[error("writing the allocation checkpoint {path}: {source}")]
    Checkpoint {
        path: String,
        source: std::io::Error,
    },
    #[error("encoding the allocation checkpoint: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Only the cpu and memory of `r`.
pub(super) fn cpu_memory(r: Option<&ResourceRequirements>) -> ResourceRequirements {
    let keep = |m: Option<&BTreeMap<String, Quantity>>| {
        let out: BTreeMap<String, Quantity> = m
            .into_iter()
            .flatten()
            .filter(|(k, _)| RESIZABLE.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!out.is_empty()).then_some(out)
    };
    ResourceRequirements {
        requests: keep(r.and_then(|r| r.requests.as_ref())),
        limits: keep(r.and_then(|r| r.limits.as_ref())),
        claims: None,
    }
}

fn containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    })
}

/// What the pod's spec asks for.
pub fn desired(pod: &Pod) -> Allocation {
    let t = limits::totals(pod, true);
    let spec = pod.spec.as_ref();
    let requests = spec
        .and_then(|s| serde_json::to_value(s).ok())
        .map(|v| crate::quota::pod_resources(&v, "requests"))
        .unwrap_or_default();
    Allocation {
        containers: containers(pod)
            .map(|c| (c.name.clone(), cpu_memory(c.resources.as_ref())))
            .collect(),
        pod: spec
            .and_then(|s| s.resources.as_ref())
            .map(|r| cpu_memory(Some(r))),
        cpu_request: t.cpu_request,
        memory_request: t.memory_request,
        other: requests
            .into_iter()
            .filter(|(k, v)| !matches!(k.as_str(), "cpu" | "memory" | "pods") && *v > 0)
            .map(|(k, v)| (k, i64::try_from((v + 999) / 1000).unwrap_or(i64::MAX)))
            .collect(),
        host_ports: spec.map(crate::placement::host_ports).unwrap_or_default(),
    }
}

/// `c` with the cpu and memory of `r` (its other resources as they are).
fn with_cpu_memory(c: &Container, r: &ResourceRequirements) -> Container {
    let mut c = c.clone();
    set_cpu_memory(c.resources.get_or_insert_with(Default::default), r);
    c
}

/// `res` with the cpu and memory of `r` (its other resources as they are).
fn set_cpu_memory(res: &mut ResourceRequirements, r: &ResourceRequirements) {
    for (part, from) in [
        (&mut res.requests, &r.requests),
        (&mut res.limits, &r.limits),
    ] {
        let m = part.get_or_insert_with(Default::default);
        m.retain(|k, _| !RESIZABLE.contains(&k.as_str()));
        m.extend(from.clone().into_iter().flatten());
        if m.is_empty() {
            *part = None;
        }
    }
}

/// The pod with its own cpu and memory as `r` (none: as it is).
fn with_pod_level(pod: &Pod, r: Option<&ResourceRequirements>) -> Pod {
    let mut p = pod.clone();
    if let (Some(spec), Some(r)) = (p.spec.as_mut(), r) {
        set_cpu_memory(spec.resources.get_or_insert_with(Default::default), r);
    }
    p
}

/// What a container runs with: its own cpu and memory, and the pod's limits where it sets
/// none of its own (PodLevelResources), as [`super::spec::resources`] gives the runtime.
fn effective(
    c: &ResourceRequirements,
    pod_level: Option<&ResourceRequirements>,
) -> ResourceRequirements {
    let mut out = c.clone();
    for (name, q) in pod_level
        .and_then(|p| p.limits.as_ref())
        .into_iter()
        .flatten()
    {
        let limits = out.limits.get_or_insert_with(Default::default);
        limits.entry(name.clone()).or_insert_with(|| q.clone());
    }
    out
}

/// The pod with its own and its containers' cpu and memory as allocated.
pub fn apply(pod: &Pod, a: &Allocation) -> Pod {
    let mut p = with_pod_level(pod, a.pod.as_ref());
    if let Some(spec) = p.spec.as_mut() {
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            if let Some(r) = a.containers.get(&c.name) {
                *c = with_cpu_memory(c, r);
            }
        }
    }
    p
}

fn amount(r: &ResourceRequirements, limits: bool, name: &str) -> Option<i128> {
    let list = if limits { &r.limits } else { &r.requests };
    crate::quantity::milli(&list.as_ref()?.get(name)?.0)
}

/// Each of `a` and `b`'s amounts at its lower (an absent limit is no limit).
fn lower(a: &ResourceRequirements, b: &ResourceRequirements) -> ResourceRequirements {
    let mut out = b.clone();
    for name in RESIZABLE {
        let pick = |limits: bool| match (amount(a, limits, name), amount(b, limits, name)) {
            (Some(x), Some(y)) if x < y => true,
            (Some(_), None) => limits,
            _ => false,
        };
        for limits in [false, true] {
            if pick(limits) {
                let from = if limits { &a.limits } else { &a.requests };
                let to = if limits {
                    &mut out.limits
                } else {
                    &mut out.requests
                };
                if let Some(q) = from.as_ref().and_then(|m| m.get(name)) {
                    to.get_or_insert_with(Default::default)
                        .insert(name.to_string(), q.clone());
                }
            }
        }
    }
    out
}

/// What a worker knows of its pod's resize.
#[derive(Default)]
pub struct ResizeState {
    /// What each container (by id) runs with, as far as this kubelet applied or saw it (its
    /// own cpu and memory, and the pod's limits it inherits).
    pub(super) actuated: HashMap<String, ResourceRequirements>,
    /// What the pod cgroup was last given of the pod's own cpu and memory (None: not yet
    /// known to this worker; the inner None: the pod sets none).
    pod_actuated: Option<Option<ResourceRequirements>>,
    pending: Option<Pending>,
    error: Option<String>,
    in_progress: bool,
}

/// One running container whose resources differ from its allocation.
struct Change {
    id: String,
    container: Container,
    old: Option<ResourceRequirements>,
    new: ResourceRequirements,
}

impl Shared {
    /// The pod as allocated: a resize its spec asks for is allocated when it fits, else it
    /// waits (and the pod keeps its allocation). None: the pod was new and did not fit, and
    /// is rejected.
    pub(super) async fn allocate<'a>(&self, pod: &'a Pod, st: &mut State) -> Option<Cow<'a, Pod>> {
        let uid = pod.uid().unwrap_or_default();
        let want = desired(pod);
        let Some(current) = self.allocations.get(&uid) else {
            st.resize.pending = None;
            let started = pod.status.as_ref().and_then(|s| s.start_time.as_ref());
            if started.is_some() {
                // Admitted by this node before (a checkpoint lost): it keeps its place.
                if let Err(e) = self.allocations.set(&uid, want) {
                    tracing::warn!(pod = %pod.name_any(), "{e}");
                }
                return Some(Cow::Borrowed(pod));
            }
            return match self.admission(pod, &uid, want) {
                Ok(()) => Some(Cow::Borrowed(pod)),
                Err(r) => {
                    self.reject(pod, st, &r).await;
                    None
                }
            };
        };
        if current.containers == want.containers && current.pod == want.pod {
            st.resize.pending = None;
            return Some(Cow::Borrowed(pod));
        }
        Some(match self.allocations.check(&uid, &want) {
            None => {
                if let Err(e) = self.allocations.set(&uid, want) {
                    tracing::warn!(pod = %pod.name_any(), "{e}");
                    return Some(Cow::Owned(apply(pod, &current)));
                }
                st.resize.pending = None;
                Cow::Borrowed(pod)
            }
            Some(p) => {
                if st.resize.pending.as_ref() != Some(&p) {
                    let msg = format!("Pod resize {}: {}", p.0, summary(pod, Some(&p.1)));
                    self.event(pod, None, Type::Warning, &format!("Resize{}", p.0), &msg)
                        .await;
                }
                st.resize.pending = Some(p);
                Cow::Owned(apply(pod, &current))
            }
        })
    }

    /// Whether CRI says the container runs with `c`'s resources.
    async fn applied(&self, pod: &Pod, c: &Container, id: &str) -> bool {
        let want = super::spec::resources(pod, c, &self.env);
        match self.runtime.container_status(id).await {
            Ok(s) => s.resources.and_then(|r| r.linux).is_some_and(|l| {
                l.cpu_shares == want.cpu_shares
                    && l.cpu_quota == want.cpu_quota
                    && l.memory_limit_in_bytes == want.memory_limit_in_bytes
            }),
            Err(_) => false,
        }
    }

    /// Brings the running containers (and the pod cgroup) to the allocated pod `pod`.
    pub(super) async fn actuate(&self, pod: &Pod, st: &mut State) {
        let running: Vec<(String, String)> = st
            .running
            .iter()
            .map(|(id, name, _)| (id.clone(), name.clone()))
            .collect();
        st.resize
            .actuated
            .retain(|id, _| !st.exited.contains_key(id));
        let pod_level = pod
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .map(|r| cpu_memory(Some(r)));
        let mut changes = Vec::new();
        for (id, name) in running {
            let Some(c) = containers(pod).find(|c| c.name == name) else {
                continue;
            };
            let new = effective(&cpu_memory(c.resources.as_ref()), pod_level.as_ref());
            let old = st.resize.actuated.get(&id).cloned();
            if old.as_ref() == Some(&new) {
                continue;
            }
            if old.is_none() && self.applied(pod, c, &id).await {
                // Adopted after a restart, already as allocated.
                st.resize.actuated.insert(id, new);
                continue;
            }
            changes.push(Change {
                id,
                container: c.clone(),
                old,
                new,
            });
        }
        st.resize.error = None;
        // A pod without resources of its own has nothing of its own to apply; one this worker
        // has not applied yet is given its allocation once (a resize may have been allocated
        // before a restart and not applied).
        let pod_changed = match &st.resize.pod_actuated {
            None => pod_level.is_some(),
            Some(was) => *was != pod_level,
        };
        if changes.is_empty() && !pod_changed {
            return;
        }
        // Containers whose policy says so restart with their new resources.
        let mut updates = Vec::new();
        for ch in changes {
            let Some(old) = &ch.old else {
                updates.push(ch);
                continue;
            };
            let changed: Vec<&str> = RESIZABLE
                .into_iter()
                .filter(|n| {
                    amount(old, false, n) != amount(&ch.new, false, n)
                        || amount(old, true, n) != amount(&ch.new, true, n)
                })
                .collect();
            let restart = ch.container.resize_policy.iter().flatten().any(|p| {
                p.restart_policy == "RestartContainer"
                    && changed.contains(&p.resource_name.as_str())
            });
            if !restart {
                updates.push(ch);
                continue;
            }
            let name = ch.container.name.clone();
            let msg = format!("Container {name} resize requires restart");
            self.event(pod, Some(&name), Type::Normal, "Killing", &msg)
                .await;
            if let Err(e) = self
                .runtime
                .stop_container(&ch.id, grace_seconds(pod))
                .await
            {
                st.resize.error = Some(format!("restarting container {name:?}: {e}"));
            }
            st.backoff.remove(&name);
            st.resize.actuated.remove(&ch.id);
        }
        match self.update(pod, &updates, pod_changed, st).await {
            Ok(()) => st.resize.pod_actuated = Some(pod_level),
            Err(e) => st.resize.error = Some(e),
        }
    }

    /// Applies `updates` (and the pod cgroup when `pod_changed`) in upstream's order; the
    /// first failure.
    async fn update(
        &self,
        pod: &Pod,
        updates: &[Change],
        pod_changed: bool,
        st: &mut State,
    ) -> Result<(), String> {
        if updates.is_empty() && !pod_changed {
            return Ok(());
        }
        let decreasing: Vec<(&Change, i128)> = updates
            .iter()
            .filter_map(|ch| {
                let new = amount(&ch.new, true, "memory")?;
                let old = ch.old.as_ref().map(|o| amount(o, true, "memory"));
                match old {
                    Some(Some(o)) if o <= new => None,
                    Some(_) => Some((ch, new / 1000)),
                    None => None,
                }
            })
            .collect();
        // The pod's own memory limit, when it lowers what the pod cgroup has.
        let pod_limit = super::spec::pod_limit(pod, "memory")
            .map(|m| m / 1000)
            .filter(|_| pod_changed)
            .filter(|new| {
                // Unknown to this worker (it just started): checked, as it may be lower.
                let was = st.resize.pod_actuated.as_ref().map(|r| {
                    r.as_ref()
                        .and_then(|r| amount(r, true, "memory"))
                        .map(|m| m / 1000)
                });
                !matches!(was, Some(Some(old)) if old <= *new)
            });
        if !decreasing.is_empty() || pod_limit.is_some() {
            // A memory limit below what the container (or pod) uses now is not set.
            let stats = self
                .runtime
                .list_container_stats()
                .await
                .map_err(|e| e.to_string())?;
            if let Some(limit) = pod_limit {
                let uid = pod.uid().unwrap_or_default();
                // The pod cgroup's usage, as upstream; without pod cgroups, its containers'.
                let cgroup = self.cgroups.as_ref().map(|c| c.pod_memory_usage(pod));
                let usage: i128 = match cgroup {
                    Some(usage) => i128::from(usage.map_err(|e| e.to_string())?),
                    None => stats
                        .iter()
                        .filter(|s| {
                            s.attributes.as_ref().is_some_and(|a| {
                                a.labels.get(crate::kubelet::cri::LABEL_POD_UID) == Some(&uid)
                            })
                        })
                        .filter_map(|s| s.memory.as_ref()?.working_set_bytes.as_ref())
                        .map(|v| i128::from(v.value))
                        .sum(),
                };
                if usage >= limit {
                    return Err(format!(
                        "attempting to set pod memory limit ({limit}) below current usage ({usage})"
                    ));
                }
            }
            for (ch, limit) in decreasing {
                let name = &ch.container.name;
                let usage = stats
                    .iter()
                    .find(|s| s.attributes.as_ref().is_some_and(|a| a.id == ch.id))
                    .and_then(|s| s.memory.as_ref())
                    .and_then(|m| m.working_set_bytes.as_ref())
                    .map(|v| i128::from(v.value))
                    .ok_or_else(|| format!("missing container {name:?} memory usage"))?;
                if usage >= limit {
                    return Err(format!(
                        "attempting to set container {name:?} memory limit ({limit}) below current usage ({usage})"
                    ));
                }
            }
        }
        // `r` holds what the container inherits from the pod too, so it is set as its own.
        let set = |ch: &Change, r: &ResourceRequirements| {
            let c = with_cpu_memory(&ch.container, r);
            super::spec::resources(pod, &c, &self.env)
        };
        // Decreases first, so the pod cgroup can shrink; then the pod cgroup; then increases.
        for ch in updates {
            if let Some(old) = &ch.old {
                let low = lower(old, &ch.new);
                if low != *old {
                    self.runtime
                        .update_container_resources(&ch.id, set(ch, &low))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        if let Some(cgroups) = &self.cgroups {
            cgroups.ensure_pod(pod).map_err(|e| e.to_string())?;
        }
        for ch in updates {
            self.runtime
                .update_container_resources(&ch.id, set(ch, &ch.new))
                .await
                .map_err(|e| e.to_string())?;
            st.resize.actuated.insert(ch.id.clone(), ch.new.clone());
        }
        if let Some(sandbox) = &st.sandbox_id {
            self.tell_sandbox(pod, sandbox).await;
        }
        Ok(())
    }

    /// Tells the runtime the pod's resized resources, best effort as upstream: a runtime
    /// without the call (containerd before 2.1) or failing it does not hold the resize up.
    async fn tell_sandbox(&self, pod: &Pod, sandbox: &str) {
        let resources = super::spec::pod_resources(pod, false);
        let overhead = super::spec::pod_overhead(pod);
        match self
            .runtime
            .update_pod_sandbox_resources(sandbox, overhead, resources)
            .await
        {
            Ok(()) => {}
            Err(crate::kubelet::cri::RuntimeError::Status {
                code: tonic::Code::Unimplemented,
                ..
            }) => {
                tracing::debug!(pod = %pod.name_any(), "the runtime does not take pod sandbox resources")
            }
            Err(e) => tracing::warn!(pod = %pod.name_any(), "{e}"),
        }
    }

    /// Adds the resize's part to the status `body` of `pod` (the spec's, not the allocated):
    /// each container's allocated and applied resources, `PodResizePending` and
    /// `PodResizeInProgress`, and the generation observed.
    pub(super) async fn resize_status(&self, pod: &Pod, st: &mut State, body: &mut Value) {
        let uid = pod.uid().unwrap_or_default();
        let generation = pod.metadata.generation;
        body["status"]["observedGeneration"] = json!(generation);
        let Some(a) = self.allocations.get(&uid) else {
            return;
        };
        let mut in_progress = false;
        for key in ["containerStatuses", "initContainerStatuses"] {
            for s in body["status"][key].as_array_mut().into_iter().flatten() {
                let name = s["name"].as_str().unwrap_or_default().to_string();
                let Some(alloc) = a.containers.get(&name) else {
                    continue;
                };
                if let Some(req) = &alloc.requests {
                    s["allocatedResources"] = json!(req);
                }
                let running = st.running.iter().find(|(_, n, _)| *n == name);
                let applied = match running {
                    Some((id, _, _)) => {
                        let applied = st.resize.actuated.get(id);
                        let done = applied == Some(&effective(alloc, a.pod.as_ref()));
                        in_progress |= !done;
                        // Its own resources once applied; what it runs with meanwhile.
                        if done {
                            alloc
                        } else {
                            applied.unwrap_or(alloc)
                        }
                    }
                    None => alloc,
                };
                if applied.requests.is_some() || applied.limits.is_some() {
                    s["resources"] = json!(applied);
                }
            }
        }
        if pod.spec.as_ref().is_some_and(|s| s.resources.is_some()) {
            // The pod's own: what it was allocated and what its cgroup was given.
            let allocated = limits::totals(&apply(pod, &a), false);
            body["status"]["allocatedResources"] = json!({
                "cpu": cpu_quantity(allocated.cpu_request),
                "memory": memory_quantity(allocated.memory_request),
            });
            let applied = match &st.resize.pod_actuated {
                Some(r) => with_pod_level(&apply(pod, &a), r.as_ref()),
                None => apply(pod, &a),
            };
            in_progress |= st.resize.pod_actuated.as_ref().is_some_and(|r| *r != a.pod);
            body["status"]["resources"] = pod_resources(&applied);
        }
        let old = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let now = k8s_openapi::jiff::Timestamp::now();
        let had = |ty: &str| old.iter().any(|c| c.type_ == ty);
        let since = |ty: &str, reason: &str| {
            old.iter()
                .find(|c| c.type_ == ty && c.reason.as_deref().unwrap_or_default() == reason)
                .and_then(|c| c.last_transition_time.clone())
                .map_or_else(|| json!(now), |t| json!(t))
        };
        let mut extra = Vec::new();
        match &st.resize.pending {
            Some((reason, message)) => extra.push(json!({
                "type": "PodResizePending", "status": "True", "reason": reason,
                "message": message, "observedGeneration": generation,
                "lastProbeTime": null, "lastTransitionTime": since("PodResizePending", reason),
            })),
            None if had("PodResizePending") => {
                extra.push(json!({"type": "PodResizePending", "$patch": "delete"}))
            }
            None => {}
        }
        let error = st.resize.error.clone();
        if in_progress || error.is_some() {
            let reason = if error.is_some() { "Error" } else { "" };
            let mut c = json!({
                "type": "PodResizeInProgress", "status": "True",
                "observedGeneration": generation, "lastProbeTime": null,
                "lastTransitionTime": since("PodResizeInProgress", reason),
            });
            if let Some(e) = &error {
                c["reason"] = json!("Error");
                c["message"] = json!(e);
            }
            extra.push(c);
        } else if had("PodResizeInProgress") {
            extra.push(json!({"type": "PodResizeInProgress", "$patch": "delete"}));
        }
        if let Some(list) = body["status"]["conditions"].as_array_mut() {
            list.extend(extra);
        }
        let was = std::mem::replace(&mut st.resize.in_progress, in_progress || error.is_some());
        if was && !st.resize.in_progress {
            let msg = format!("Pod resize completed: {}", summary(pod, None));
            self.event(pod, None, Type::Normal, "ResizeCompleted", &msg)
                .await;
        }
        if let Some(e) = error {
            let msg = format!("Pod resize error: {}", summary(pod, Some(&e)));
            self.event_once(st, pod, None, Type::Warning, "ResizeError", &msg)
                .await;
        }
    }
}

/// A pod's resources as its status shows them: its requests, and its limits where it has them
/// (its own, or every container's).
fn pod_resources(pod: &Pod) -> Value {
    let t = limits::totals(pod, false);
    let mut v = json!({"requests": {
        "cpu": cpu_quantity(t.cpu_request),
        "memory": memory_quantity(t.memory_request),
    }});
    if let Some(cpu) = t.cpu_limit {
        v["limits"]["cpu"] = json!(cpu_quantity(cpu));
    }
    if let Some(memory) = t.memory_limit {
        v["limits"]["memory"] = json!(memory_quantity(memory));
    }
    v
}

fn cpu_quantity(milli: i64) -> String {
    crate::quantity::format(i128::from(milli), "m")
}

fn memory_quantity(bytes: i64) -> String {
    crate::quantity::format(i128::from(bytes) * 1000, "Mi")
}

/// The resize as upstream's events show it: the containers' resources, the generation and
/// the error if any.
fn summary(pod: &Pod, error: Option<&str>) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let list = |cs: &[Container]| -> Vec<Value> {
        cs.iter()
            .map(|c| json!({"name": c.name, "resources": cpu_memory(c.resources.as_ref())}))
            .collect()
    };
    let mut v = json!({
        "containers": list(&spec.containers),
        "generation": pod.metadata.generation,
    });
    if let Some(r) = &spec.resources {
        v["resources"] = json!(cpu_memory(Some(r)));
    }
    if let Some(init) = spec.init_containers.as_deref().filter(|i| !i.is_empty()) {
        v["initContainers"] = json!(list(init));
    }
    if let Some(e) = error {
        v["error"] = json!(e);
    }
    v.to_string()
}

#[cfg(test)]
mod tests;
