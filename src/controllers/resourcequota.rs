//! The resource-quota controller: recounts what each ResourceQuota's namespace uses (in the
//! quota's scopes, for the resources it limits) and writes it to `status.used`, with
//! `status.hard` from the spec. Admission charges writes as they come; this gives back what
//! deletes and finished pods free, and fills in new quotas.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::sync::watch;

use crate::quantity::format;
use crate::quota::{self, Usage};

fn resource(plural: &str) -> ApiResource {
    let kind = match plural {
        "pods" => "Pod",
        "services" => "Service",
        "configmaps" => "ConfigMap",
        "secrets" => "Secret",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "replicationcontrollers" => "ReplicationController",
        _ => "ResourceQuota",
    };
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The usage of every tracked object in `ns` that falls under `q`'s scopes.
async fn recount(client: &Client, ns: &str, q: &Value) -> Result<Usage, kube::Error> {
    let mut total = Usage::new();
    for (group, plural) in quota::TRACKED {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource(plural));
        for obj in api.list(&ListParams::default()).await?.items {
            let v = serde_json::to_value(&obj).unwrap_or_default();
            if quota::in_scope(q, group, plural, &v) {
                quota::add(&mut total, &quota::usage(group, plural, &v));
            }
        }
    }
    Ok(total)
}

/// Brings one quota's status up to date.
async fn sync(shared: &Client, writer: &Client, rq: &ResourceQuota) -> Result<(), kube::Error> {
    let ns = rq.namespace().unwrap_or_default();
    let q = serde_json::to_value(rq).unwrap_or_default();
    let total = recount(shared, &ns, &q).await?;
    let hard: BTreeMap<String, Quantity> = rq
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let used: BTreeMap<String, Quantity> = hard
        .iter()
        .map(|(k, limit)| {
            let v = total.get(k).copied().unwrap_or(0);
            (k.clone(), Quantity(format(v, &limit.0)))
        })
        .collect();
    let want = ResourceQuotaStatus {
        hard: Some(hard),
        used: Some(used),
    };
    if rq.status.as_ref() == Some(&want) {
        return Ok(());
    }
    let mut updated = rq.clone();
    updated.status = Some(want);
    Api::<ResourceQuota>::namespaced(writer.clone(), &ns)
        .replace_status(&rq.name_any(), &PostParams::default(), &updated)
        .await?;
    Ok(())
}

/// Runs until `stop` turns true.
pub async fn run(shared: Client, writer: Client, mut stop: watch::Receiver<bool>) {
    let (quotas, quota_writer) = reflector::store::<ResourceQuota>();
    let quota_events = reflector(
        quota_writer,
        watcher(
            Api::<ResourceQuota>::all(shared.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects()
    .map(|r| r.ok().and_then(|o| o.namespace()))
    .boxed();
    let mut streams = vec![quota_events];
    for (_, plural) in quota::TRACKED
        .iter()
        .filter(|(_, p)| *p != "resourcequotas")
    {
        let api: Api<DynamicObject> = Api::all_with(shared.clone(), &resource(plural));
        streams.push(
            watcher(api, watcher::Config::default())
                .default_backoff()
                .touched_objects()
                .map(|r| r.ok().and_then(|o| o.namespace()))
                .boxed(),
        );
    }
    let mut events = futures::stream::select_all(streams);
    loop {
        let mut dirty = BTreeSet::new();
        tokio::select! {
            ev = events.next() => match ev {
                Some(ns) => dirty.extend(ns),
                None => return,
            },
            _ = stop.changed() => return,
        }
        while let Ok(Some(ns)) =
            tokio::time::timeout(Duration::from_millis(50), events.next()).await
        {
            dirty.extend(ns);
        }
        if !super::ready(&quotas) {
            continue;
        }
        for rq in quotas.state() {
            if !dirty.contains(&rq.namespace().unwrap_or_default()) {
                continue;
            }
            if let Err(e) = sync(&shared, &writer, &rq).await {
                tracing::debug!(quota = %rq.name_any(), error = %e, "recounting quota usage");
            }
        }
    }
}
