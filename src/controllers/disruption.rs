//! The disruption controller, as upstream's: it keeps each PodDisruptionBudget's status, which
//! the eviction subresource spends. A budget counts the Ready, not terminating pods its
//! selector picks (`currentHealthy`), works out how many must stay (`desiredHealthy`) from
//! `minAvailable` or `maxUnavailable` (percentages and `maxUnavailable` against the scale of
//! the pods' controllers: ReplicaSets, Deployments, ReplicationControllers, StatefulSets), and
//! allows the difference (`disruptionsAllowed`, the DisruptionAllowed condition). Pods evicted
//! within the last two minutes (`disruptedPods`) count as gone until they are.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::cache::{Cache, Change};
use super::pacer::Pacer;
use super::pod_state::{ready_since, terminating};
use crate::informer::Informer;
use crate::labels;

/// How long an evicted pod counts as disrupted while it is not yet terminating.
const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    // policy/v1: an empty selector picks every pod, a missing one none.
    let sel = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
    sel.is_some_and(|s| labels::matches(Some(s), pod.labels()))
}

/// Runs until `stop` turns true.
pub async fn run(
    shared: Client,
    pod_informer: Informer<Pod>,
    writer: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut pdb_events = watcher(
        Api::<PodDisruptionBudget>::all(shared.clone()),
        Default::default(),
    )
    .default_backoff()
    .boxed();
    let mut pod_events = pod_informer.subscribe();
    let mut pdbs: Cache<PodDisruptionBudget> = Cache::default();
    let mut pods: Cache<Pod> = Cache::default();
    let mut dirty: HashSet<String> = HashSet::new();
    let mut pacer: Pacer<String> = Pacer::default();
    loop {
        pacer.arm(!dirty.is_empty());
        tokio::select! {
            ev = pdb_events.next() => match ev {
                Some(Ok(ev)) => match pdbs.apply(ev) {
                    Change::Resynced => dirty.extend(pdbs.items.keys().cloned()),
                    Change::Applied { new, .. } => { dirty.insert(new.uid().unwrap_or_default()); }
                    Change::Deleted(_) | Change::None => {}
                },
                Some(Err(_)) => continue,
                None => return,
            },
            ev = pod_events.next() => match ev {
                Some(ev) => {
                    let touched: Vec<Arc<Pod>> = match pods.apply_shared(ev) {
                        Change::Resynced => { dirty.extend(pdbs.items.keys().cloned()); Vec::new() }
                        Change::Applied { new, old } => std::iter::once(new).chain(old).collect(),
                        Change::Deleted(p) => vec![p],
                        Change::None => Vec::new(),
                    };
                    for p in touched {
                        let ns = p.namespace().unwrap_or_default();
                        dirty.extend(
                            pdbs.in_namespace(&ns)
                                .filter(|b| selects(b, &p))
                                .map(|b| b.uid().unwrap_or_default()),
                        );
                    }
                }
                None => return,
            },
            due = pacer.next() => dirty.extend(due),
            _ = stop.changed() => return,
        }
        if !(pdbs.synced && pods.synced && pacer.ready(!dirty.is_empty())) {
            continue;
        }
        for uid in std::mem::take(&mut dirty) {
            let Some(pdb) = pdbs.items.get(&uid).cloned() else {
                continue;
            };
            let ns = pdb.namespace().unwrap_or_default();
            let picked: Vec<Arc<Pod>> = pods
                .in_namespace(&ns)
                .filter(|p| selects(&pdb, p))
                .cloned()
                .collect();
            match sync(&writer, &pdb, &picked).await {
                Ok(Some(after)) => pacer.after(uid, after),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(pdb = %pdb.name_any(), error = %e, "syncing a disruption budget");
                    let conflict = matches!(&e, kube::Error::Api(s) if s.code == 409);
                    pacer.after(uid, Duration::from_millis(if conflict { 50 } else { 1000 }));
                }
            }
        }
    }
}

/// The scale of the controllers of `pods` summed (each controller once), as upstream's
/// `getExpectedScale`; an error names a pod without a controller it knows.
async fn expected_scale(client: &Client, ns: &str, pods: &[Arc<Pod>]) -> Result<i32, String> {
    let mut seen: HashMap<String, i32> = HashMap::new();
    for p in pods {
        let Some(owner) = p
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true))
        else {
            return Err(format!(
                "found no controller ref for pod {:?}",
                p.name_any()
            ));
        };
        if seen.contains_key(&owner.uid) {
            continue;
        }
        let replicas = match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                    .get(&owner.name)
                    .await
                    .map_err(|e| e.to_string())?;
                // A Deployment's ReplicaSets share its scale.
                match rs
                    .owner_references()
                    .iter()
                    .find(|r| r.controller == Some(true) && r.kind == "Deployment")
                {
                    Some(d) => {
                        if seen.contains_key(&d.uid) {
                            seen.insert(owner.uid.clone(), 0);
                            continue;
                        }
                        let dep = Api::<Deployment>::namespaced(client.clone(), ns)
                            .get(&d.name)
                            .await
                            .map_err(|e| e.to_string())?;
                        seen.insert(d.uid.clone(), dep.spec.replicas.unwrap_or(1));
                        seen.insert(owner.uid.clone(), 0);
                        continue;
                    }
                    None => rs.spec.replicas.unwrap_or(1),
                }
            }
            "ReplicationController" => Api::<ReplicationController>::namespaced(client.clone(), ns)
                .get(&owner.name)
                .await
                .map_err(|e| e.to_string())?
                .spec
                .and_then(|s| s.replicas)
                .unwrap_or(1),
            "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get(&owner.name)
                .await
                .map_err(|e| e.to_string())?
                .spec
                .replicas
                .unwrap_or(1),
            other => {
                return Err(format!(
                    "found no controllers for pod {:?} (controller kind {other})",
                    p.name_any()
                ))
            }
        };
        seen.insert(owner.uid.clone(), replicas);
    }
    Ok(seen.values().sum())
}

fn condition(
    old: Option<&PodDisruptionBudgetStatus>,
    allowed: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let status = if allowed { "True" } else { "False" };
    let prev = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionAllowed"));
    let since = prev
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(Timestamp::now()));
    Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

async fn sync(
    writer: &Client,
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
) -> Result<Option<Duration>, kube::Error> {
    let ns = pdb.namespace().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let old = pdb.status.as_ref();
    let now = Timestamp::now();
    let mut recheck: Option<Duration> = None;

    // Evicted pods stay counted as disrupted until they terminate or two minutes pass.
    let mut disrupted: BTreeMap<String, Time> = BTreeMap::new();
    for (name, at) in old
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default()
    {
        let Some(p) = pods.iter().find(|p| p.name_any() == name) else {
            continue;
        };
        if terminating(p) {
            continue;
        }
        let expires = at.0 + DELETION_TIMEOUT;
        if expires <= now {
            continue;
        }
        let wait = Duration::try_from(expires.duration_since(now)).unwrap_or_default();
        recheck = Some(recheck.map_or(wait, |r| r.min(wait)));
        disrupted.insert(name, at);
    }
    let healthy = pods
        .iter()
        .filter(|p| {
            !terminating(p) && ready_since(p).is_some() && !disrupted.contains_key(&p.name_any())
        })
        .count() as i32;

    let resolved: Result<(i32, i32), String> = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => match expected_scale(writer, &ns, pods).await {
            Ok(expected) => {
                let max = super::int_or_percent(max, expected, true).unwrap_or(0);
                Ok((expected, (expected - max).max(0)))
            }
            Err(e) => Err(e),
        },
        (None, Some(IntOrString::Int(n))) => Ok((pods.len() as i32, *n)),
        (None, Some(min @ IntOrString::String(_))) => match expected_scale(writer, &ns, pods).await
        {
            Ok(expected) => Ok((
                expected,
                super::int_or_percent(min, expected, true).unwrap_or(0),
            )),
            Err(e) => Err(e),
        },
        (None, None) => Ok((pods.len() as i32, 0)),
    };
    let generation = pdb.metadata.generation;
    let status = match resolved {
        Ok((expected, desired)) => {
            let allowed = (healthy - desired).max(0);
            let (reason, ok) = if allowed > 0 {
                ("SufficientPods", true)
            } else {
                ("InsufficientPods", false)
            };
            PodDisruptionBudgetStatus {
                current_healthy: Some(healthy),
                desired_healthy: Some(desired),
                expected_pods: Some(expected),
                disruptions_allowed: Some(allowed),
                observed_generation: generation,
                disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
                conditions: Some(vec![condition(old, ok, reason, "", generation)]),
            }
        }
        Err(msg) => PodDisruptionBudgetStatus {
            current_healthy: Some(healthy),
            desired_healthy: Some(0),
            expected_pods: Some(0),
            disruptions_allowed: Some(0),
            observed_generation: generation,
            disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
            conditions: Some(vec![condition(old, false, "SyncFailed", &msg, generation)]),
        },
    };
    if old != Some(&status) {
        let mut whole = pdb.clone();
        whole.status = Some(status);
        Api::<PodDisruptionBudget>::namespaced(writer.clone(), &ns)
            .replace_status(&pdb.name_any(), &PostParams::default(), &whole)
            .await?;
    }
    Ok(recheck)
}
