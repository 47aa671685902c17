//! The resource-quota controller: recounts what each ResourceQuota's namespace uses (in the
//! quota's scopes, for the resources it limits) and writes it to `status.used`, with
//! `status.hard` from the spec. Admission charges writes as they come; this gives back what
//! deletes and finished pods free, and fills in new quotas.
//!
//! Besides the core kinds with usage beyond a count ([`quota::TRACKED`]), any kind a quota
//! limits as `count/<resource>.<group>` (Deployments, custom resources...) is found through
//! discovery, then counted and watched like the rest. Every quota is also recounted
//! periodically, as upstream's `--resource-quota-sync-period` does, so a missed event cannot
//! leave usage wrong for long.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::quantity::format;
use crate::quota::{self, Usage};

/// How often every quota is recounted even without events.
const RESYNC: Duration = Duration::from_secs(60);

/// A core kind with tracked usage.
fn core(plural: &str, kind: &str) -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn tracked() -> Vec<ApiResource> {
    quota::TRACKED
        .iter()
        .map(|(_, plural)| {
            let kind = match *plural {
                "pods" => "Pod",
                "services" => "Service",
                "configmaps" => "ConfigMap",
                "secrets" => "Secret",
                "persistentvolumeclaims" => "PersistentVolumeClaim",
                "replicationcontrollers" => "ReplicationController",
                _ => "ResourceQuota",
            };
            core(plural, kind)
        })
        .collect()
}

/// `count/deployments.apps` -> ("apps", "deployments"); `count/endpoints` -> ("", "endpoints").
fn counted(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix("count/")?;
    Some(match rest.split_once('.') {
        Some((plural, group)) => (group.to_string(), plural.to_string()),
        None => (String::new(), rest.to_string()),
    })
}

/// The kinds the controller counts: the tracked ones, and those found through discovery.
struct Kinds {
    known: Vec<ApiResource>,
    /// `(group, plural)` looked up and not (yet) served, so each is asked for once per resync.
    missing: BTreeSet<(String, String)>,
}

impl Kinds {
    fn new() -> Self {
        Kinds {
            known: tracked(),
            missing: BTreeSet::new(),
        }
    }

    fn find(&self, group: &str, plural: &str) -> Option<&ApiResource> {
        self.known
            .iter()
            .find(|r| r.group == group && r.plural == plural)
    }

    /// Resolves the kinds `quotas` count that are not known yet; returns the new ones.
    async fn resolve(&mut self, client: &Client, quotas: &[ResourceQuota]) -> Vec<ApiResource> {
        let wanted: BTreeSet<(String, String)> = quotas
            .iter()
            .flat_map(|rq| rq.spec.iter().flat_map(|s| s.hard.iter().flatten()))
            .filter_map(|(k, _)| counted(k))
            .filter(|(g, p)| {
                self.find(g, p).is_none() && !self.missing.contains(&(g.clone(), p.clone()))
            })
            .collect();
        let mut added = Vec::new();
        let mut groups: HashMap<String, Vec<(ApiResource, kube::discovery::ApiCapabilities)>> =
            HashMap::new();
        for (group, plural) in wanted {
            if !groups.contains_key(&group) {
                let found = match kube::discovery::oneshot::group(client, &group).await {
                    Ok(g) => g.recommended_resources(),
                    Err(_) => Vec::new(),
                };
                groups.insert(group.clone(), found);
            }
            let hit = groups[&group].iter().find(|(r, caps)| {
                r.plural == plural && caps.scope == kube::discovery::Scope::Namespaced
            });
            match hit {
                Some((r, _)) => {
                    self.known.push(r.clone());
                    added.push(r.clone());
                }
                None => {
                    self.missing.insert((group, plural));
                }
            }
        }
        added
    }
}

/// Usage of every counted kind in `ns` that falls under `q`'s scopes.
async fn recount(
    client: &Client,
    kinds: &Kinds,
    ns: &str,
    rq: &ResourceQuota,
) -> Result<Usage, kube::Error> {
    let q = serde_json::to_value(rq).unwrap_or_default();
    let hard: BTreeSet<&String> = rq
        .spec
        .iter()
        .flat_map(|s| s.hard.iter().flatten())
        .map(|(k, _)| k)
        .collect();
    let mut total = Usage::new();
    for (i, r) in kinds.known.iter().enumerate() {
        // Discovered kinds are listed only for the quotas that count them.
        let extra = i >= quota::TRACKED.len();
        if extra
            && !hard
                .iter()
                .any(|k| counted(k) == Some((r.group.clone(), r.plural.clone())))
        {
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, r);
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            // A custom resource whose definition went away counts nothing.
            Err(kube::Error::Api(e)) if extra && e.code == 404 => continue,
            Err(e) => return Err(e),
        };
        for obj in list.items {
            let v = serde_json::to_value(&obj).unwrap_or_default();
            if quota::in_scope(&q, &r.group, &r.plural, &v) {
                quota::add(&mut total, &quota::usage(&r.group, &r.plural, &v));
            }
        }
    }
    Ok(total)
}

/// Brings one quota's status up to date.
async fn sync(
    shared: &Client,
    writer: &Client,
    kinds: &Kinds,
    rq: &ResourceQuota,
) -> Result<(), kube::Error> {
    let ns = rq.namespace().unwrap_or_default();
    let total = recount(shared, kinds, &ns, rq).await?;
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

/// The namespaces where objects of kind `r` change.
fn changes(client: &Client, r: &ApiResource) -> BoxStream<'static, Option<String>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), r);
    watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .map(|r| r.ok().and_then(|o| o.namespace()))
        .boxed()
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
    let mut kinds = Kinds::new();
    let mut events: SelectAll<BoxStream<'static, Option<String>>> = SelectAll::new();
    events.push(quota_events);
    for r in kinds.known.iter().filter(|r| r.plural != "resourcequotas") {
        events.push(changes(&shared, r));
    }
    let mut resync = tokio::time::interval(RESYNC);
    resync.tick().await;
    let mut dirty = BTreeSet::new();
    let mut all = false;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(ns) => dirty.extend(ns),
                None => return,
            },
            _ = resync.tick() => {
                all = true;
                kinds.missing.clear();
            }
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
        let state: Vec<ResourceQuota> = quotas.state().iter().map(|q| (**q).clone()).collect();
        for r in kinds.resolve(&shared, &state).await {
            events.push(changes(&shared, &r));
            all = true;
        }
        for rq in &state {
            if !all && !dirty.contains(&rq.namespace().unwrap_or_default()) {
                continue;
            }
            if let Err(e) = sync(&shared, &writer, &kinds, rq).await {
                tracing::debug!(quota = %rq.name_any(), error = %e, "recounting quota usage");
            }
        }
        dirty.clear();
        all = false;
    }
}

#[cfg(test)]
mod tests {
    use super::counted;

    #[test]
    fn count_keys_name_group_and_resource() {
        assert_eq!(
            counted("count/deployments.apps"),
            Some(("apps".into(), "deployments".into()))
        );
        assert_eq!(
            counted("count/widgets.example.com"),
            Some(("example.com".into(), "widgets".into()))
        );
        assert_eq!(
            counted("count/endpoints"),
            Some((String::new(), "endpoints".into()))
        );
        assert_eq!(counted("requests.cpu"), None);
    }
}
