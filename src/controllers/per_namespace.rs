//! The shape of the controllers that keep one object in every active namespace (the `default`
//! ServiceAccount, the `kube-root-ca.crt` ConfigMap): follow namespaces and those objects, and
//! create (or bring up to date) what is missing.

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

/// What to keep in every namespace.
pub struct Wanted<K> {
    /// The object's name.
    pub name: &'static str,
    /// The object as it should be (without namespace).
    pub desired: K,
    /// Whether an existing object must be brought up to `desired` (never, for objects a user
    /// may change).
    pub outdated: fn(existing: &K, desired: &K) -> bool,
}

fn active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

/// Keeps `wanted` in every active namespace until `stop` turns true. `shared` reads (as the
/// controller manager's informers do), `writer` writes with the controller's own identity.
pub async fn run<K>(
    shared: Client,
    writer: Client,
    wanted: Wanted<K>,
    mut stop: watch::Receiver<bool>,
) where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (ns_reader, ns_writer) = reflector::store::<Namespace>();
    let (obj_reader, obj_writer) = reflector::store::<K>();
    let ns_events = reflector(
        ns_writer,
        watcher(
            Api::<Namespace>::all(shared.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .map(|e| e.is_ok())
    .boxed();
    let by_name = watcher::Config::default().fields(&format!("metadata.name={}", wanted.name));
    let obj_events = reflector(
        obj_writer,
        watcher(Api::<K>::all(shared), by_name).default_backoff(),
    )
    .map(|e| e.is_ok())
    .boxed();
    let mut events = futures::stream::select(ns_events, obj_events);
    loop {
        if !super::next_burst(&mut events, &mut stop).await {
            return;
        }
        if !super::ready(&ns_reader) || !super::ready(&obj_reader) {
            continue;
        }
        for ns in ns_reader.state().iter().filter(|n| active(n)) {
            let ns_name = ns.name_any();
            let api: Api<K> = Api::namespaced(writer.clone(), &ns_name);
            let existing = obj_reader.get(&ObjectRef::new(wanted.name).within(&ns_name));
            let result = match existing {
                None => {
                    let mut obj = wanted.desired.clone();
                    obj.meta_mut().name = Some(wanted.name.to_string());
                    obj.meta_mut().namespace = Some(ns_name.clone());
                    api.create(&PostParams::default(), &obj).await.map(|_| ())
                }
                Some(cur) if (wanted.outdated)(&cur, &wanted.desired) => {
                    let mut obj = wanted.desired.clone();
                    let meta = obj.meta_mut();
                    meta.name = Some(wanted.name.to_string());
                    meta.namespace = Some(ns_name.clone());
                    meta.resource_version = cur.meta().resource_version.clone();
                    meta.uid = cur.meta().uid.clone();
                    api.replace(wanted.name, &PostParams::default(), &obj)
                        .await
                        .map(|_| ())
                }
                Some(_) => Ok(()),
            };
            match result {
                Ok(()) => {}
                // Created meanwhile, or the namespace is going away: the next event settles it.
                Err(kube::Error::Api(e)) if matches!(e.code, 403 | 404 | 409) => {}
                Err(e) => {
                    tracing::warn!(namespace = %ns_name, object = wanted.name, error = %e, "keeping a per-namespace object")
                }
            }
        }
    }
}
