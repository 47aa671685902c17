//! VolumeBinding: a pod's claims must exist and not be going away; a bound claim's volume must
//! admit the node (its node affinity); an unbound claim may wait only if its class binds on
//! first consumer (`WaitForFirstConsumer`). Once the pod has a node, [`prebind`] asks for its
//! waiting claims to be provisioned there (`volume.kubernetes.io/selected-node`) and waits for
//! them to be bound before the pod is, as kube-scheduler's PreBind does.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::scheduler::cache::{NodeInfo, PodInfo};
use crate::scheduler::framework::{Plugin, Rejection};

const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// How long a pod waits for its claims to be bound before it is tried again.
const BIND_TIMEOUT: Duration = Duration::from_secs(600);

/// The claims, volumes and classes the scheduler has seen.
#[derive(Default)]
pub struct Volumes {
    claims: HashMap<(String, String), Arc<PersistentVolumeClaim>>,
    volumes: HashMap<String, Arc<PersistentVolume>>,
    classes: HashMap<String, Arc<StorageClass>>,
}

pub type Shared = Arc<RwLock<Volumes>>;

fn key(c: &PersistentVolumeClaim) -> (String, String) {
    (c.namespace().unwrap_or_default(), c.name_any())
}

impl Volumes {
    pub fn claim_event(&mut self, ev: watcher::Event<PersistentVolumeClaim>) {
        match ev {
            watcher::Event::InitApply(c) | watcher::Event::Apply(c) => {
                self.claims.insert(key(&c), Arc::new(c));
            }
            watcher::Event::Delete(c) => {
                self.claims.remove(&key(&c));
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    pub fn volume_event(&mut self, ev: watcher::Event<PersistentVolume>) {
        match ev {
            watcher::Event::InitApply(v) | watcher::Event::Apply(v) => {
                self.volumes.insert(v.name_any(), Arc::new(v));
            }
            watcher::Event::Delete(v) => {
                self.volumes.remove(&v.name_any());
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    pub fn class_event(&mut self, ev: watcher::Event<StorageClass>) {
        match ev {
            watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
                self.classes.insert(s.name_any(), Arc::new(s));
            }
            watcher::Event::Delete(s) => {
                self.classes.remove(&s.name_any());
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    fn waits_for_consumer(&self, c: &PersistentVolumeClaim) -> bool {
        let class = c
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        self.classes
            .get(&class)
            .and_then(|s| s.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer")
    }
}

/// The claims a pod uses: its `persistentVolumeClaim` volumes and its generic ephemeral ones.
pub fn claim_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| crate::ephemeral_claims::claim_name(pod, &v.name))
            }
        })
        .collect()
}

fn bound_to(c: &PersistentVolumeClaim) -> Option<&str> {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|n| !n.is_empty())
}

pub struct VolumeBinding(pub Shared);

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        "VolumeBinding"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
        let names = claim_names(&pod.pod);
        if names.is_empty() {
            return None;
        }
        let state = self.0.read().unwrap_or_else(|p| p.into_inner());
        let ns = pod.pod.namespace().unwrap_or_default();
        let ephemeral: Vec<String> = crate::ephemeral_claims::wanted_claims(&pod.pod)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        for name in names {
            let is_ephemeral = ephemeral.contains(&name);
            let Some(c) = state.claims.get(&(ns.clone(), name.clone())) else {
                return Some(Rejection::unresolvable(&if is_ephemeral {
                    format!("waiting for ephemeral volume controller to create the persistentvolumeclaim \"{name}\"")
                } else {
                    format!("persistentvolumeclaim \"{name}\" not found")
                }));
            };
            if is_ephemeral {
                if let Err(e) = crate::ephemeral_claims::is_for_pod(&pod.pod, c) {
                    return Some(Rejection::unresolvable(&e));
                }
            }
            if c.metadata.deletion_timestamp.is_some() {
                return Some(Rejection::unresolvable(&format!(
                    "persistentvolumeclaim \"{name}\" is being deleted"
                )));
            }
            match bound_to(c) {
                Some(pv) => {
                    let Some(v) = state.volumes.get(pv) else {
                        return Some(Rejection::unresolvable(
                            "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)",
                        ));
                    };
                    let required = v
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_affinity.as_ref())
                        .and_then(|a| a.required.as_ref());
                    if let Some(sel) = required {
                        let fits = sel
                            .node_selector_terms
                            .iter()
                            .any(|t| crate::placement::term_matches(t, &node.name, node.labels()));
                        if !fits {
                            return Some(Rejection::unresolvable(
                                "node(s) had volume node affinity conflict",
                            ));
                        }
                    }
                }
                None if state.waits_for_consumer(c) => {}
                None => {
                    return Some(Rejection::unresolvable(
                        "pod has unbound immediate PersistentVolumeClaims",
                    ))
                }
            }
        }
        None
    }
}

/// Before binding `pod` to `node`: selects the node for its waiting claims and waits until
/// every claim is bound. False when that does not happen in time.
pub async fn prebind(client: &Client, volumes: &Shared, pod: &Pod, node: &str) -> bool {
    let names = claim_names(pod);
    if names.is_empty() {
        return true;
    }
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let waiting: Vec<String> = {
        let state = volumes.read().unwrap_or_else(|p| p.into_inner());
        names
            .iter()
            .filter(|n| {
                state
                    .claims
                    .get(&(ns.clone(), (*n).clone()))
                    .is_some_and(|c| bound_to(c).is_none() && state.waits_for_consumer(c))
            })
            .cloned()
            .collect()
    };
    for name in &waiting {
        let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
        if let Err(e) = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(claim = %name, error = %e, "selecting a node for a claim");
            return false;
        }
    }
    let start = Instant::now();
    for name in &waiting {
        loop {
            match api.get(name).await {
                Ok(c) if bound_to(&c).is_some() => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(claim = %name, error = %e, "waiting for a claim to be bound");
                    return false;
                }
            }
            if start.elapsed() > BIND_TIMEOUT {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    true
}
