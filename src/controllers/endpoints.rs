//! The Endpoints and EndpointSlice controllers (upstream's two controllers, kept in one file
//! so they share one watch of services and pods): for every Service with a selector, the pods
//! it selects that have an address become endpoints.
//! - EndpointSlices (`kubernetes.io/service-name`, managed by `endpointslice-controller.k8s.io`,
//!   owned by the Service): at most 100 endpoints each, one group of slices per distinct set of
//!   resolved ports (named target ports are looked up in each pod), every endpoint with its
//!   `ready`, `serving` and `terminating` conditions, node name, hostname and target reference.
//! - Endpoints (same name as the Service): ready addresses and `notReadyAddresses` (terminating
//!   pods left out), `publishNotReadyAddresses` honoured, truncated at 1000 addresses with the
//!   `endpoints.kubernetes.io/over-capacity` annotation, as upstream.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::conditions::pod_ready;
use crate::informer::Informer;
use crate::labels;

pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER: &str = "endpointslice-controller.k8s.io";
const MAX_PER_SLICE: usize = 100;
const MAX_ENDPOINTS: usize = 1000;

/// One pod as an endpoint, with the ports it resolves the service's to.
#[derive(Clone)]
struct PodEndpoint {
    ip: String,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: Option<String>,
    hostname: Option<String>,
    target: ObjectReference,
    ports: Vec<EndpointPort>,
}

/// The service's ports resolved against a pod, or `None` when a named port is missing.
fn resolve_ports(svc: &Service, pod: &Pod) -> Option<Vec<EndpointPort>> {
    let spec = svc.spec.as_ref()?;
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match &p.target_port {
            None => p.port,
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(name)) => pod
                .spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| {
                    cp.name.as_deref() == Some(name)
                        && cp.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|cp| cp.container_port)?,
        };
        out.push(EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(port),
            protocol: Some(protocol),
            app_protocol: p.app_protocol.clone(),
        });
    }
    Some(out)
}

fn endpoint_of(svc: &Service, pod: &Pod) -> Option<PodEndpoint> {
    let status = pod.status.as_ref()?;
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ports = resolve_ports(svc, pod)?;
    let spec = pod.spec.as_ref();
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let serving = pod_ready(pod) || publish;
    let svc_name = svc.name_any();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .filter(|_| spec.and_then(|s| s.subdomain.as_deref()) == Some(svc_name.as_str()));
    Some(PodEndpoint {
        ip,
        ready: serving && !terminating,
        serving,
        terminating,
        node: spec.and_then(|s| s.node_name.clone()),
        hostname,
        target: ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.namespace(),
            name: Some(pod.name_any()),
            uid: pod.uid(),
            ..Default::default()
        },
        ports,
    })
}

/// Marks the services of `p`'s namespace that select it.
fn touched_pod(
    p: &Pod,
    dirty: &mut HashSet<(String, String)>,
    services: &HashMap<(String, String), Arc<Service>>,
) {
    let ns = p.namespace().unwrap_or_default();
    for ((sns, name), svc) in services {
        if *sns == ns && selects(svc, p) {
            dirty.insert((sns.clone(), name.clone()));
        }
    }
}

fn selects(svc: &Service, pod: &Pod) -> bool {
    let sel = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    labels::map_matches(&sel, pod.labels())
}

/// One Endpoints subset being built: its ports, ready and not-ready addresses.
type Subset = (Vec<CorePort>, Vec<EndpointAddress>, Vec<EndpointAddress>);

struct Ctl {
    endpoints: Client,
    slices: Client,
}

/// Runs until `stop` turns true.
pub async fn run(
    shared: Client,
    pod_informer: Informer<Pod>,
    endpoints: Client,
    slices: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut svc_events = watcher(Api::<Service>::all(shared.clone()), Default::default())
        .default_backoff()
        .boxed();
    let mut pod_events = pod_informer.subscribe();
    let ctl = Ctl { endpoints, slices };
    let mut services: HashMap<(String, String), Arc<Service>> = HashMap::new();
    let mut pods: HashMap<String, HashMap<String, Arc<Pod>>> = HashMap::new(); // ns -> uid -> pod
    let (mut svc_init, mut pod_init) = (Vec::new(), Vec::new());
    let (mut svc_synced, mut pods_synced) = (false, false);
    let mut dirty: HashSet<(String, String)> = HashSet::new();
    let mut deleted: HashSet<(String, String)> = HashSet::new();
    let mut retry: Vec<(Instant, (String, String))> = Vec::new();
    let mut sync_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        if sync_at.is_none() && (!dirty.is_empty() || !deleted.is_empty()) {
            sync_at = Some(Instant::now() + Duration::from_millis(10));
        }
        tokio::select! {
            ev = svc_events.next() => match ev {
                Some(Ok(watcher::Event::Init)) => svc_init.clear(),
                Some(Ok(watcher::Event::InitApply(s))) => svc_init.push(s),
                Some(Ok(watcher::Event::InitDone)) => {
                    services = std::mem::take(&mut svc_init)
                        .into_iter()
                        .map(|s| ((s.namespace().unwrap_or_default(), s.name_any()), Arc::new(s)))
                        .collect();
                    dirty.extend(services.keys().cloned());
                    svc_synced = true;
                }
                Some(Ok(watcher::Event::Apply(s))) => {
                    let key = (s.namespace().unwrap_or_default(), s.name_any());
                    services.insert(key.clone(), Arc::new(s));
                    dirty.insert(key);
                }
                Some(Ok(watcher::Event::Delete(s))) => {
                    let key = (s.namespace().unwrap_or_default(), s.name_any());
                    services.remove(&key);
                    deleted.insert(key);
                }
                Some(Err(_)) => continue,
                None => return,
            },
            ev = pod_events.next() => match ev {
                Some(watcher::Event::Init) => pod_init.clear(),
                Some(watcher::Event::InitApply(p)) => pod_init.push(p),
                Some(watcher::Event::InitDone) => {
                    pods.clear();
                    for p in std::mem::take(&mut pod_init) {
                        pods.entry(p.namespace().unwrap_or_default()).or_default().insert(p.uid().unwrap_or_default(), p);
                    }
                    dirty.extend(services.keys().cloned());
                    pods_synced = true;
                }
                Some(watcher::Event::Apply(p)) => {
                    let ns = p.namespace().unwrap_or_default();
                    let old = pods.entry(ns).or_default().insert(p.uid().unwrap_or_default(), p.clone());
                    touched_pod(&p, &mut dirty, &services);
                    if let Some(old) = old {
                        touched_pod(&old, &mut dirty, &services);
                    }
                }
                Some(watcher::Event::Delete(p)) => {
                    if let Some(m) = pods.get_mut(&p.namespace().unwrap_or_default()) {
                        m.remove(&p.uid().unwrap_or_default());
                    }
                    touched_pod(&p, &mut dirty, &services);
                }
                None => return,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                retry.retain(|(t, k)| if *t <= now { dirty.insert(k.clone()); false } else { true });
            }
            _ = async { match sync_at { Some(t) => tokio::time::sleep_until(t.into()).await, None => std::future::pending().await } } => {
                sync_at = None;
            }
            _ = stop.changed() => return,
        }
        if !(svc_synced && pods_synced) || sync_at.is_some() {
            continue;
        }
        for key in std::mem::take(&mut deleted) {
            if !services.contains_key(&key) {
                ctl.forget(&key.0, &key.1).await;
            }
        }
        for key in std::mem::take(&mut dirty) {
            let Some(svc) = services.get(&key).cloned() else {
                continue;
            };
            let in_ns: Vec<Arc<Pod>> = pods
                .get(&key.0)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            if let Err(e) = ctl.sync(&svc, &in_ns).await {
                tracing::debug!(service = %key.1, error = %e, "syncing endpoints");
                retry.push((Instant::now() + Duration::from_secs(1), key));
            }
        }
    }
}

impl Ctl {
    async fn sync(&self, svc: &Service, pods: &[Arc<Pod>]) -> Result<(), kube::Error> {
        let selector = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .filter(|s| !s.is_empty());
        // Services without a selector have their endpoints written by someone else.
        if selector.is_none() || svc.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let mut eps: Vec<PodEndpoint> = pods
            .iter()
            .filter(|p| selects(svc, p))
            .filter_map(|p| endpoint_of(svc, p))
            .collect();
        eps.sort_by(|a, b| a.target.name.cmp(&b.target.name));
        self.sync_endpoints(svc, &eps).await?;
        self.sync_slices(svc, &eps).await
    }

    async fn sync_endpoints(&self, svc: &Service, eps: &[PodEndpoint]) -> Result<(), kube::Error> {
        let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
        let publish = svc
            .spec
            .as_ref()
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false);
        // Subsets by port set, ready addresses apart from the others; terminating pods left out.
        let mut groups: BTreeMap<String, Subset> = BTreeMap::new();
        for e in eps
            .iter()
            .filter(|e| !e.terminating || publish)
            .take(MAX_ENDPOINTS)
        {
            let key = serde_json::to_string(&e.ports).unwrap_or_default();
            let entry = groups.entry(key).or_insert_with(|| {
                let ports = e
                    .ports
                    .iter()
                    .map(|p| CorePort {
                        name: p.name.clone().filter(|n| !n.is_empty()),
                        port: p.port.unwrap_or(0),
                        protocol: p.protocol.clone(),
                        app_protocol: p.app_protocol.clone(),
                    })
                    .collect();
                (ports, Vec::new(), Vec::new())
            });
            let addr = EndpointAddress {
                ip: e.ip.clone(),
                hostname: e.hostname.clone(),
                node_name: e.node.clone(),
                target_ref: Some(e.target.clone()),
            };
            if e.ready || publish {
                entry.1.push(addr);
            } else {
                entry.2.push(addr);
            }
        }
        let subsets: Vec<EndpointSubset> = groups
            .into_values()
            .map(|(ports, ready, not_ready)| EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            })
            .collect();
        let mut labels = svc.labels().clone();
        labels.insert(
            "endpointslice.kubernetes.io/skip-mirror".into(),
            "true".into(),
        );
        let mut annotations = BTreeMap::new();
        if eps.len() > MAX_ENDPOINTS {
            annotations.insert(
                "endpoints.kubernetes.io/over-capacity".to_string(),
                "truncated".to_string(),
            );
        }
        let api: Api<Endpoints> = Api::namespaced(self.endpoints.clone(), &ns);
        let current = api.get_opt(&name).await?;
        let want = Endpoints {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                resource_version: current.as_ref().and_then(|c| c.resource_version()),
                ..Default::default()
            },
            subsets: (!subsets.is_empty()).then_some(subsets),
        };
        match current {
            None => {
                api.create(&PostParams::default(), &want).await?;
            }
            Some(cur) => {
                let same = cur.subsets.clone().unwrap_or_default()
                    == want.subsets.clone().unwrap_or_default()
                    && cur.metadata.labels == want.metadata.labels
                    && cur
                        .metadata
                        .annotations
                        .clone()
                        .unwrap_or_default()
                        .get("endpoints.kubernetes.io/over-capacity")
                        == want
                            .metadata
                            .annotations
                            .clone()
                            .unwrap_or_default()
                            .get("endpoints.kubernetes.io/over-capacity");
                if !same {
                    let mut merged = want;
                    merged.metadata.annotations = {
                        let mut a = cur.metadata.annotations.clone().unwrap_or_default();
                        a.remove("endpoints.kubernetes.io/over-capacity");
                        a.extend(merged.metadata.annotations.unwrap_or_default());
                        (!a.is_empty()).then_some(a)
                    };
                    api.replace(&name, &PostParams::default(), &merged).await?;
                }
            }
        }
        Ok(())
    }

    async fn sync_slices(&self, svc: &Service, eps: &[PodEndpoint]) -> Result<(), kube::Error> {
        let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
        let family = svc
            .spec
            .as_ref()
            .and_then(|s| s.ip_families.as_ref())
            .and_then(|f| f.first().cloned())
            .unwrap_or_else(|| "IPv4".into());
        // The desired slices: per port set, chunks of 100 endpoints.
        let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
        for e in eps {
            if e.ip.contains(':') != (family == "IPv6") {
                continue;
            }
            let key = serde_json::to_string(&e.ports).unwrap_or_default();
            let entry = groups
                .entry(key)
                .or_insert_with(|| (e.ports.clone(), Vec::new()));
            entry.1.push(Endpoint {
                addresses: vec![e.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(e.ready),
                    serving: Some(e.serving),
                    terminating: Some(e.terminating),
                }),
                hostname: e.hostname.clone(),
                node_name: e.node.clone(),
                target_ref: Some(e.target.clone()),
                ..Default::default()
            });
        }
        let mut desired: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
        for (_, (ports, list)) in groups {
            for chunk in list.chunks(MAX_PER_SLICE) {
                desired.push((ports.clone(), chunk.to_vec()));
            }
        }
        if desired.is_empty() {
            // An empty slice says "no endpoints", as upstream keeps one.
            desired.push((Vec::new(), Vec::new()));
        }
        let api: Api<EndpointSlice> = Api::namespaced(self.slices.clone(), &ns);
        let lp = ListParams::default()
            .labels(&format!("{SERVICE_NAME}={name},{MANAGED_BY}={CONTROLLER}"));
        let mut existing = api.list(&lp).await?.items;
        existing.sort_by_key(|s| s.name_any());
        let mut labels = svc.labels().clone();
        labels.insert(SERVICE_NAME.into(), name.clone());
        labels.insert(MANAGED_BY.into(), CONTROLLER.into());
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: name.clone(),
            uid: svc.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let mut current = existing.into_iter();
        for (ports, endpoints) in desired {
            let body = |base: Option<&EndpointSlice>| EndpointSlice {
                metadata: ObjectMeta {
                    name: base.map(|b| b.name_any()),
                    generate_name: base.is_none().then(|| format!("{name}-")),
                    namespace: Some(ns.clone()),
                    labels: Some(labels.clone()),
                    owner_references: Some(vec![owner.clone()]),
                    resource_version: base.and_then(|b| b.resource_version()),
                    annotations: base.and_then(|b| b.metadata.annotations.clone()),
                    ..Default::default()
                },
                address_type: family.clone(),
                endpoints: Some(endpoints.clone()),
                ports: Some(ports.clone()),
            };
            match current.next() {
                Some(cur) => {
                    let same = cur.endpoints.clone().unwrap_or_default() == endpoints
                        && cur.ports.clone().unwrap_or_default() == ports
                        && cur.metadata.labels.as_ref() == Some(&labels)
                        && cur.address_type == family;
                    if !same {
                        api.replace(&cur.name_any(), &PostParams::default(), &body(Some(&cur)))
                            .await?;
                    }
                }
                None => {
                    api.create(&PostParams::default(), &body(None)).await?;
                }
            }
        }
        for extra in current {
            match api
                .delete(&extra.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A deleted Service's Endpoints go (its slices go with it through their owner reference).
    async fn forget(&self, ns: &str, name: &str) {
        let api: Api<Endpoints> = Api::namespaced(self.endpoints.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::debug!(service = %name, error = %e, "deleting a service's endpoints")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_ports_resolve_per_pod_and_conditions_follow_readiness() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "d"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
        .expect("service");
        let pod = |port: i32, ready: bool, deleting: bool| -> Pod {
            let mut p = json!({"metadata": {"name": "p", "namespace": "d", "uid": "u", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port}]}], "nodeName": "n1"},
                "status": {"podIP": "10.0.0.5", "phase": "Running",
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(p).expect("pod")
        };
        let e = endpoint_of(&svc, &pod(8080, true, false)).expect("endpoint");
        assert_eq!(e.ports[0].port, Some(8080));
        assert!(e.ready && e.serving && !e.terminating);
        let e = endpoint_of(&svc, &pod(8080, true, true)).expect("endpoint");
        assert!(!e.ready && e.serving && e.terminating);
        let e = endpoint_of(&svc, &pod(9090, false, false)).expect("endpoint");
        assert_eq!(e.ports[0].port, Some(9090));
        assert!(!e.ready && !e.serving);
    }
}
