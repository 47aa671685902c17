//! Events, recorded as upstream's components record them (core/v1 Events, which
//! `kubectl describe` and `kubectl get events` show): `source.component`, the object they
//! concern, a reason and a message. Repeats of the same event (same object, type, reason and
//! message) within the deduplication window are not new objects: the first one's `count` goes up
//! and its `lastTimestamp` moves, as upstream's event correlator does, so a pod that fails to
//! schedule a hundred times has one Event "x100 over 5m".

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use tokio::sync::mpsc;

/// How long a recorded event keeps absorbing repeats (upstream's correlator: 10 minutes).
const WINDOW: Duration = Duration::from_secs(600);
/// How many distinct events are remembered for deduplication.
const REMEMBERED: usize = 4096;

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Normal,
    Warning,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Normal => "Normal",
            Type::Warning => "Warning",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    uid: String,
    name: String,
    kind: String,
    ty: Type,
    reason: String,
    message: String,
}

struct Seen {
    name: String,
    count: i32,
    at: Instant,
}

/// How many events may wait for the writer before new ones are dropped (upstream's
/// broadcaster queues 1,000 and drops when full, so a burst never stalls a controller).
const QUEUED: usize = 1000;

/// One event waiting to be written.
struct Pending {
    about: ObjectReference,
    ty: Type,
    reason: String,
    message: String,
    at: Timestamp,
}

/// Records the events of one component. Recording never waits for the API: events go to a
/// queue that one background task writes, deduplicating repeats, as upstream's event
/// broadcaster and correlator do.
pub struct Recorder {
    queue: mpsc::Sender<Pending>,
}

/// The background writer's state.
struct Writer {
    client: Client,
    component: String,
    host: Option<String>,
    /// Events recorded within the window, and when the map was last pruned.
    seen: HashMap<Key, Seen>,
    pruned: Instant,
}

impl Recorder {
    /// A recorder for `component` (`default-scheduler`, `replicaset-controller`, `kubelet`),
    /// on `host` for node-local components. Must be called inside the tokio runtime; the
    /// writer stops once the recorder is dropped and its queue is written.
    pub fn new(client: Client, component: &str, host: Option<&str>) -> Recorder {
        let (queue, mut rx) = mpsc::channel::<Pending>(QUEUED);
        let mut writer = Writer {
            client,
            component: component.to_string(),
            host: host.map(str::to_string),
            seen: HashMap::new(),
            pruned: Instant::now(),
        };
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                writer.write(p).await;
            }
        });
        Recorder { queue }
    }

    /// Queues an event about `about`; dropped (and logged) if the queue is full.
    pub async fn record(&self, about: &ObjectReference, ty: Type, reason: &str, message: &str) {
        let pending = Pending {
            about: about.clone(),
            ty,
            reason: reason.to_string(),
            message: message.to_string(),
            at: Timestamp::now(),
        };
        if let Err(e) = self.queue.try_send(pending) {
            tracing::debug!(reason, error = %e, "event queue full; dropping an event");
        }
    }
}

impl Writer {
    async fn write(&mut self, p: Pending) {
        let Pending {
            about,
            ty,
            reason,
            message,
            at: now,
        } = p;
        let ns = about
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let key = Key {
            namespace: ns.clone(),
            uid: about.uid.clone().unwrap_or_default(),
            name: about.name.clone().unwrap_or_default(),
            kind: about.kind.clone().unwrap_or_default(),
            ty,
            reason: reason.clone(),
            message: message.clone(),
        };
        // Pruning walks every entry: once a second at most, not per event.
        if self.pruned.elapsed() >= Duration::from_secs(1) {
            self.seen.retain(|_, s| s.at.elapsed() < WINDOW);
            self.pruned = Instant::now();
        }
        let repeat = match self.seen.get_mut(&key).filter(|s| s.at.elapsed() < WINDOW) {
            Some(s) => {
                s.count += 1;
                s.at = Instant::now();
                Some((s.name.clone(), s.count))
            }
            None => None,
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Some((name, count)) = repeat {
            let patch = json!({"count": count, "lastTimestamp": Time(now)});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(event = %name, error = %e, "updating a repeated event; recording it anew")
                }
            }
        }
        let name = format!(
            "{}.{:x}",
            key.name,
            now.as_nanosecond() as u128 & 0xffff_ffff_ffff_ffff
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: about,
            reason: Some(reason.clone()),
            message: Some(message),
            type_: Some(ty.as_str().to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                if self.seen.len() >= REMEMBERED {
                    self.seen.clear();
                }
                self.seen.insert(
                    key,
                    Seen {
                        name,
                        count: 1,
                        at: Instant::now(),
                    },
                );
            }
            Err(e) => tracing::debug!(reason = %reason, error = %e, "recording an event"),
        }
    }
}

/// A reference to an object for an event's `involvedObject`.
pub fn reference<K>(obj: &K) -> ObjectReference
where
    K: kube::Resource<DynamicType = ()>,
{
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}

/// A reference to an object known only as JSON of the kind `r`.
pub fn reference_dynamic(obj: &serde_json::Value, r: &kube::api::ApiResource) -> ObjectReference {
    let meta = &obj["metadata"];
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
    ObjectReference {
        api_version: Some(r.api_version.clone()),
        kind: Some(r.kind.clone()),
        namespace: s(&meta["namespace"]),
        name: s(&meta["name"]),
        uid: s(&meta["uid"]),
        resource_version: s(&meta["resourceVersion"]),
        ..Default::default()
    }
}
