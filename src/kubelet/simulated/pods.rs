//! The pods of the simulated nodes. A pod bound to one of them is Running and Ready as soon as
//! it is seen (its containers "started", an address from the node's range); a deleted pod is
//! removed at once, as a kubelet does once its containers have stopped. A pod may ask to finish:
//! after `simulated.k1s.io/run-for` (a duration: `30s`, `2m`) its containers exit with
//! `simulated.k1s.io/exit-code` (default 0), and its `restartPolicy` decides what follows, as the
//! kubelet's does: Succeeded or Failed, or the containers restart (restartCount goes up). As the
//! kubelet does, a pod with `readinessGates` is Ready only while every gate's condition is True.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::node::SimNode;
use super::usage::Usage;

/// How long a simulated pod runs before its containers exit.
pub const RUN_FOR: &str = "simulated.k1s.io/run-for";
/// The exit code its containers exit with (default 0).
pub const EXIT_CODE: &str = "simulated.k1s.io/exit-code";

/// Pods handled at once.
const CONCURRENCY: usize = 64;

struct Sim {
    nodes: Arc<Vec<SimNode>>,
    /// What the running pods use, for `metrics.k8s.io`.
    usage: Arc<Usage>,
    by_name: HashMap<String, usize>,
    /// Pods (by uid) whose containers have an exit scheduled.
    timers: Mutex<HashSet<String>>,
}

/// Runs until `stop` turns true.
pub async fn run(
    nodes: Arc<Vec<SimNode>>,
    usage: Arc<Usage>,
    clients: super::Clients,
    mut stop: watch::Receiver<bool>,
) {
    let by_name = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    let sim = Arc::new(Sim {
        nodes,
        usage,
        by_name,
        timers: Mutex::new(HashSet::new()),
    });
    // One watch for every node when a reader may see all pods; else each node watches its own,
    // as kubelets do (the Node authorizer lets a node list only the pods bound to it).
    let mut events = match clients.reader {
        Some(reader) => {
            let cfg = watcher::Config::default().fields("spec.nodeName!=");
            watcher(Api::<Pod>::all(reader), cfg)
                .default_backoff()
                .boxed()
        }
        None => {
            let per_node = sim.nodes.iter().map(|n| {
                let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", n.name));
                watcher(Api::<Pod>::all((clients.for_node)(&n.name)), cfg)
                    .default_backoff()
                    .boxed()
            });
            futures::stream::select_all(per_node).boxed()
        }
    };
    // The watch is read without pause into a queue that keeps the newest version of each
    // pending pod, handled oldest first (the shared informer's queue): a reader that stopped
    // while a batch was handled fell behind the API server's watch buffer and had to watch
    // again. Applied pods are handled; deleted ones only leave the usage report.
    let queue = crate::informer::queue::Queue::<Pod>::new("Pod".into(), "simulated_kubelet");
    let reader = {
        let (sim, queue) = (sim.clone(), queue.clone());
        async move {
            while let Some(ev) = events.next().await {
                let ev = match ev {
                    Ok(watcher::Event::Apply(p)) => watcher::Event::Apply(Arc::new(p)),
                    Ok(watcher::Event::InitApply(p)) => watcher::Event::InitApply(Arc::new(p)),
                    Ok(watcher::Event::Delete(p)) => {
                        sim.usage.forget(&p.uid().unwrap_or_default());
                        watcher::Event::Delete(Arc::new(p))
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) | Err(_) => continue,
                };
                if !queue.push(ev) {
                    return;
                }
            }
        }
    };
    let handler = crate::informer::queue::stream(queue).for_each_concurrent(CONCURRENCY, |ev| {
        let sim = sim.clone();
        async move {
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev {
                sim.handle(Arc::unwrap_or_clone(p)).await;
            }
        }
    });
    tokio::select! {
        _ = reader => {}
        _ = handler => {}
        _ = stop.changed() => {}
    }
}

/// `30s`, `2m`, `1h`, `500ms` or plain seconds.
fn duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    let (num, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n * 60.0,
        'h' => n * 3600.0,
        _ => return None,
    };
    (secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

fn now() -> Value {
    json!(Time(Timestamp::now()))
}

fn condition(ty: &str, ok: bool, reason: Option<&str>) -> Value {
    let mut c = json!({"type": ty, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now()});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

/// The status of a container that runs (or ran and exited with `exit`).
fn container_status(pod: &Pod, c: &Value, restarts: i64, exit: Option<i64>, last: &Value) -> Value {
    let name = c["name"].as_str().unwrap_or_default();
    let image = c["image"].as_str().unwrap_or_default();
    let id = format!(
        "k1s-sim://{}-{name}-{restarts}",
        pod.uid().unwrap_or_default()
    );
    let state = match exit {
        None => json!({"running": {"startedAt": now()}}),
        Some(code) => json!({"terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": now(), "finishedAt": now(), "containerID": id,
        }}),
    };
    json!({
        "name": name, "image": image, "imageID": format!("sim://{image}"), "containerID": id,
        "ready": exit.is_none(), "started": exit.is_none(), "restartCount": restarts,
        "state": state, "lastState": last,
    })
}

/// The condition types of the pod's readiness gates.
fn gates(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .into_iter()
        .flatten()
        .map(|g| g.condition_type.clone())
        .collect()
}

/// Whether every readiness gate holds, as the kubelet requires for Ready.
fn gates_hold(pod: &Pod) -> bool {
    gates(pod)
        .iter()
        .all(|g| crate::conditions::pod_true(pod, g))
}

/// The pod's conditions with Ready set to `ready` (kept as they are otherwise).
fn with_ready(pod: &Pod, ready: bool) -> Vec<Value> {
    let mut out: Vec<Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_ != "Ready")
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .collect();
    let reason = (!ready).then_some("ReadinessGatesNotReady");
    out.push(condition("Ready", ready, reason));
    out
}

impl Sim {
    fn node_of(&self, pod: &Pod) -> Option<&SimNode> {
        let name = pod.spec.as_ref()?.node_name.as_deref()?;
        self.by_name.get(name).map(|i| &self.nodes[*i])
    }

    async fn handle(self: &Arc<Self>, pod: Pod) {
        let Some(node) = self.node_of(&pod) else {
            return;
        };
        self.usage.observe(&pod);
        let api: Api<Pod> =
            Api::namespaced(node.client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::debug!(pod = %name, error = %e, "removing a simulated pod"),
            }
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        match phase {
            None | Some("Pending") => {
                let status = self.running_status(node, &pod, 0, &json!({}));
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    tracing::debug!(pod = %name, error = %e, "starting a simulated pod");
                    return;
                }
                self.schedule_exit(node, &pod);
            }
            Some("Running") => {
                // A readiness gate's condition changed: Ready follows it.
                if !gates(&pod).is_empty()
                    && gates_hold(&pod) != crate::conditions::pod_true(&pod, "Ready")
                {
                    let status =
                        json!({"status": {"conditions": with_ready(&pod, gates_hold(&pod))}});
                    if let Err(e) = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                    {
                        tracing::debug!(pod = %name, error = %e, "updating a simulated pod's readiness");
                    }
                }
                self.schedule_exit(node, &pod);
            }
            _ => {}
        }
    }

    fn running_status(&self, node: &SimNode, pod: &Pod, restarts: i64, last: &Value) -> Value {
        let spec = serde_json::to_value(&pod.spec).unwrap_or_default();
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_else(|| node.pod_ip().to_string());
        let host = node.address().to_string();
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .map(|t| json!(t))
            .unwrap_or_else(now);
        let containers: Vec<Value> = spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| container_status(pod, c, restarts, None, last))
            .collect();
        let inits: Vec<Value> = spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let sidecar = c["restartPolicy"] == "Always";
                let mut s = container_status(pod, c, 0, (!sidecar).then_some(0), &json!({}));
                s["ready"] = json!(true);
                s
            })
            .collect();
        let ready = gates_hold(pod);
        let mut conditions = vec![
            condition("PodReadyToStartContainers", true, None),
            condition("Initialized", true, None),
            condition("Ready", ready, (!ready).then_some("ReadinessGatesNotReady")),
            condition("ContainersReady", true, None),
            condition("PodScheduled", true, None),
        ];
        for g in gates(pod) {
            if let Some(c) = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == g))
            {
                conditions.push(serde_json::to_value(c).unwrap_or_default());
            }
        }
        json!({"status": {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": host, "hostIPs": [{"ip": host}],
            "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": started,
            "containerStatuses": containers,
            // Omitted without init containers, as upstream's omitempty list (null removes it).
            "initContainerStatuses": if inits.is_empty() { Value::Null } else { json!(inits) },
        }})
    }

    /// Arms the exit of a pod that asks to finish (once per pod).
    fn schedule_exit(self: &Arc<Self>, node: &SimNode, pod: &Pod) {
        let Some(after) = pod.annotations().get(RUN_FOR).and_then(|d| duration(d)) else {
            return;
        };
        let uid = pod.uid().unwrap_or_default();
        if !self
            .timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.clone())
        {
            return;
        }
        let sim = self.clone();
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let client = node.client.clone();
        let index = self.by_name.get(&node.name).copied().unwrap_or_default();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            sim.timers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&uid);
            let api: Api<Pod> = Api::namespaced(client, &ns);
            if let Err(e) = sim.exit(&api, &sim.nodes[index], &name, &uid).await {
                tracing::debug!(pod = %name, error = %e, "finishing a simulated pod");
            }
        });
    }

    /// The containers exit; the restart policy decides the rest.
    async fn exit(
        self: &Arc<Self>,
        api: &Api<Pod>,
        node: &SimNode,
        name: &str,
        uid: &str,
    ) -> Result<(), kube::Error> {
        let pod = api.get(name).await?;
        if pod.uid().as_deref() != Some(uid) || pod.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let code: i64 = pod
            .annotations()
            .get(EXIT_CODE)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        let spec = serde_json::to_value(&pod.spec).unwrap_or_default();
        let status = if restart {
            let restarts = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .map(|c| i64::from(c.restart_count))
                .unwrap_or(0)
                + 1;
            let last = json!({"terminated": {
                "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": now(), "finishedAt": now(),
            }});
            self.running_status(node, &pod, restarts, &last)
        } else {
            let containers: Vec<Value> = spec["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| container_status(&pod, c, 0, Some(code), &json!({})))
                .collect();
            let reason = Some("PodCompleted");
            json!({"status": {
                "phase": if code == 0 { "Succeeded" } else { "Failed" },
                "conditions": [
                    condition("PodReadyToStartContainers", false, None),
                    condition("Initialized", true, reason),
                    condition("Ready", false, reason),
                    condition("ContainersReady", false, reason),
                    condition("PodScheduled", true, None),
                ],
                "containerStatuses": containers,
            }})
        };
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        if restart {
            self.schedule_exit(node, &pod);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::duration;
    use std::time::Duration;

    #[test]
    fn run_for_takes_go_style_durations() {
        assert_eq!(duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(duration("soon"), None);
    }
}
