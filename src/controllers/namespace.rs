//! The namespace controller, as upstream's: a namespace being deleted (`Terminating`, with the
//! `kubernetes` finalizer in `spec.finalizers`) has every namespaced resource in it deleted
//! (found through discovery, custom resources included), reports its progress in the
//! conditions upstream sets (`NamespaceContentRemaining`, `NamespaceFinalizersRemaining`, ...),
//! and once nothing is left, gives up its finalizer through `namespaces/NAME/finalize`, which
//! lets the API server remove the namespace.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use kube::discovery::{Discovery, Scope};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

const FINALIZER: &str = "kubernetes";
/// How often a terminating namespace is looked at again while content remains.
const RETRY: Duration = Duration::from_secs(2);
/// How long discovery results are reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(30);

struct Resource {
    ar: ApiResource,
    collection: bool,
}

struct Ctl {
    writer: Client,
    resources: Vec<Resource>,
    discovered: Option<Instant>,
}

/// Runs until `stop` turns true.
pub async fn run(shared: Client, writer: Client, mut stop: watch::Receiver<bool>) {
    let (store, w) = reflector::store::<Namespace>();
    let mut events = reflector(
        w,
        watcher(Api::<Namespace>::all(shared), Default::default()).default_backoff(),
    )
    .touched_objects()
    .boxed();
    let mut ctl = Ctl {
        writer,
        resources: Vec::new(),
        discovered: None,
    };
    let mut tick = tokio::time::interval(RETRY);
    loop {
        tokio::select! {
            ev = events.next() => if ev.is_none() { return },
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if !super::ready(&store) {
            continue;
        }
        let terminating: Vec<_> = store
            .state()
            .into_iter()
            .filter(|n| n.metadata.deletion_timestamp.is_some())
            .filter(|n| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.finalizers.as_ref())
                    .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
            })
            .collect();
        for ns in terminating {
            if let Err(e) = ctl.sync(&ns).await {
                tracing::debug!(namespace = %ns.name_any(), error = %e, "deleting a namespace's content");
            }
        }
    }
}

impl Ctl {
    async fn discover(&mut self) -> Result<(), kube::Error> {
        if self.discovered.is_some_and(|t| t.elapsed() < DISCOVERY_TTL) {
            return Ok(());
        }
        let discovery = Discovery::new(self.writer.clone()).run().await?;
        self.resources.clear();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                let ops = &caps.operations;
                if caps.scope != Scope::Namespaced
                    || !ops.iter().any(|o| o == "delete")
                    || !ops.iter().any(|o| o == "list")
                {
                    continue;
                }
                self.resources.push(Resource {
                    collection: ops.iter().any(|o| o == "deletecollection"),
                    ar,
                });
            }
        }
        self.discovered = Some(Instant::now());
        Ok(())
    }

    async fn sync(&mut self, ns: &Namespace) -> Result<(), kube::Error> {
        let name = ns.name_any();
        let discovered = self.discover().await;
        let mut deletion_failed = None;
        let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
        let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
        let mut seen = HashSet::new();
        let mut unknown = false;
        for r in &self.resources {
            // One version of each kind is enough.
            if !seen.insert((r.ar.group.clone(), r.ar.plural.clone())) {
                continue;
            }
            let api: Api<PartialObjectMeta<DynamicObject>> =
                Api::namespaced_with(self.writer.clone(), &name, &r.ar);
            let items = match api.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => continue,
                Err(e) => {
                    // Unknown content: the namespace is not finalized on a guess.
                    tracing::debug!(resource = %r.ar.plural, error = %e, "listing a namespace's content");
                    deletion_failed = Some(e.to_string());
                    *remaining
                        .entry(format!("{}.{}", r.ar.plural, r.ar.group))
                        .or_default() += 0;
                    unknown = true;
                    continue;
                }
            };
            if items.is_empty() {
                continue;
            }
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            let objs: Api<DynamicObject> = Api::namespaced_with(self.writer.clone(), &name, &r.ar);
            let live: Vec<_> = items
                .iter()
                .filter(|o| o.metadata.deletion_timestamp.is_none())
                .collect();
            if !live.is_empty() {
                if r.collection {
                    if let Err(e) = objs.delete_collection(&dp, &ListParams::default()).await {
                        deletion_failed = Some(e.to_string());
                    }
                } else {
                    for o in live {
                        if let Err(e) = objs
                            .delete(o.metadata.name.as_deref().unwrap_or_default(), &dp)
                            .await
                        {
                            if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                                deletion_failed = Some(e.to_string());
                            }
                        }
                    }
                }
            }
            let left = match api.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(_) => items,
            };
            if !left.is_empty() {
                *remaining
                    .entry(format!("{}.{}", r.ar.plural, r.ar.group))
                    .or_default() += left.len();
                for o in &left {
                    for f in o.metadata.finalizers.iter().flatten() {
                        *finalizers.entry(f.clone()).or_default() += 1;
                    }
                }
            }
        }
        self.update_conditions(
            ns,
            discovered.err().map(|e| e.to_string()),
            deletion_failed,
            &remaining,
            &finalizers,
        )
        .await?;
        if remaining.is_empty() && !unknown && self.discovered.is_some() {
            let api: Api<Namespace> = Api::all(self.writer.clone());
            // The status write above moved the resourceVersion: finalize the latest.
            let Some(mut done) = api.get_opt(&name).await? else {
                return Ok(());
            };
            if let Some(spec) = done.spec.as_mut() {
                if let Some(f) = spec.finalizers.as_mut() {
                    f.retain(|f| f != FINALIZER);
                }
            }
            api.replace_subresource("finalize", &name, &PostParams::default(), &done)
                .await?;
        }
        Ok(())
    }

    async fn update_conditions(
        &self,
        ns: &Namespace,
        discovery_failed: Option<String>,
        deletion_failed: Option<String>,
        remaining: &BTreeMap<String, usize>,
        finalizers: &BTreeMap<String, usize>,
    ) -> Result<(), kube::Error> {
        let cond =
            |ty: &str, bad: Option<String>, ok_reason: &str, ok_msg: &str, bad_reason: &str| {
                let (status, reason, message) = match bad {
                    Some(m) => ("True", bad_reason.to_string(), m),
                    None => ("False", ok_reason.to_string(), ok_msg.to_string()),
                };
                (ty.to_string(), status.to_string(), reason, message)
            };
        let remaining_msg = (!remaining.is_empty()).then(|| {
            let parts: Vec<String> = remaining
                .iter()
                .map(|(r, n)| format!("{r} has {n} resource instances"))
                .collect();
            format!("Some resources are remaining: {}", parts.join(", "))
        });
        let finalizers_msg = (!finalizers.is_empty()).then(|| {
            let parts: Vec<String> = finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            )
        });
        let wanted = [
            cond(
                "NamespaceDeletionDiscoveryFailure",
                discovery_failed.map(|e| format!("Discovery failed for some groups: {e}")),
                "ResourcesDiscovered",
                "All resources successfully discovered",
                "DiscoveryFailed",
            ),
            cond(
                "NamespaceDeletionGroupVersionParsingFailure",
                None,
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed",
                "GroupVersionParsingFailed",
            ),
            cond(
                "NamespaceDeletionContentFailure",
                deletion_failed
                    .map(|e| format!("Failed to delete all resource types, 1 remaining: {e}")),
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization",
                "ContentDeletionFailed",
            ),
            cond(
                "NamespaceContentRemaining",
                remaining_msg,
                "ContentRemoved",
                "All content successfully removed",
                "SomeResourcesRemain",
            ),
            cond(
                "NamespaceFinalizersRemaining",
                finalizers_msg,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished",
                "SomeFinalizersRemain",
            ),
        ];
        let old: Vec<NamespaceCondition> = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let now = Time(Timestamp::now());
        let mut changed = false;
        let conditions: Vec<NamespaceCondition> = wanted
            .iter()
            .map(|(ty, status, reason, message)| {
                let prev = old.iter().find(|c| &c.type_ == ty);
                let same = prev.is_some_and(|p| {
                    &p.status == status
                        && p.reason.as_deref() == Some(reason)
                        && p.message.as_deref() == Some(message)
                });
                if !same {
                    changed = true;
                }
                NamespaceCondition {
                    type_: ty.clone(),
                    status: status.clone(),
                    reason: Some(reason.clone()),
                    message: Some(message.clone()),
                    last_transition_time: match prev {
                        Some(p) if &p.status == status => p.last_transition_time.clone(),
                        _ => Some(now.clone()),
                    },
                }
            })
            .collect();
        if !changed {
            return Ok(());
        }
        let mut updated = ns.clone();
        updated
            .status
            .get_or_insert_with(Default::default)
            .conditions = Some(conditions);
        let api: Api<Namespace> = Api::all(self.writer.clone());
        match api
            .replace_status(&ns.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
