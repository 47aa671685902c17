//! Events, recorded as upstream's components record them (core/v1 Events, which
//! `kubectl describe` and `kubectl get events` show): `source.component`, the object they
//! concern, a reason and a message. Repeats of the same event (same object, type, reason and
//! message) within the deduplication window are not new objects: the first one's `count` goes up
//! and its `lastTimestamp` moves, as upstream's event correlator does, so a pod that fails to
//! schedule a hundred times has one Event "x100 over 5m". Similar events (same object, type
//! and reason, different messages) are aggregated as upstream's EventAggregator does: from the
//! tenth distinct message within the window on, they become one event "(combined from similar
//! events): ..." whose count and message are updated, so a ReplicaSet that creates 1,000 pods
//! leaves ten events about itself, not 1,000. Last, as upstream's spam filter, a component
//! writes at most 25 events (new or repeats) about one object in a burst, then one per five
//! minutes: the rest are dropped.

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
/// Distinct messages of similar events within the window before they are combined
/// (upstream's maxEvents).
const SIMILAR: usize = 10;
/// What a combined event's message starts with, as upstream writes it.
const COMBINED: &str = "(combined from similar events): ";
/// Events about one object a component may write at once (upstream's defaultSpamBurst)...
const SPAM_BURST: f64 = 25.0;
/// ... and how often it gains another (defaultSpamQPS: one per 300 s).
const SPAM_REFILL: Duration = Duration::from_secs(300);

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

/// One object's token bucket in the spam filter.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Similar events of one object, type and reason: their distinct messages so far.
struct Similar {
    messages: std::collections::HashSet<String>,
    at: Instant,
}

/// What to do with an event.
#[derive(Debug, PartialEq)]
enum Decision {
    /// A new Event object with this message.
    Create { message: String },
    /// A repeat: the named Event gets this count and message.
    Repeat {
        name: String,
        count: i32,
        message: String,
    },
}

/// Upstream's event correlator without the API: aggregation of similar events, then
/// deduplication of repeats.
struct Correlator {
    /// Events recorded within the window.
    seen: HashMap<Key, Seen>,
    /// Similar events within the window, by their key without the message.
    similar: HashMap<Key, Similar>,
    /// The spam filter's buckets, by object (namespace, uid, name, kind).
    spam: HashMap<(String, String, String, String), Bucket>,
    /// When what left the window was last forgotten.
    pruned: Instant,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator {
            seen: HashMap::new(),
            similar: HashMap::new(),
            spam: HashMap::new(),
            pruned: Instant::now(),
        }
    }
}

impl Correlator {
    /// Decides about `key`; what it created is remembered through [`Correlator::created`].
    fn decide(&mut self, mut key: Key) -> (Key, Decision) {
        let now = Instant::now();
        // Pruning walks every entry: once a second at most, not per event.
        if self.pruned.elapsed() >= Duration::from_secs(1) {
            self.seen.retain(|_, s| s.at.elapsed() < WINDOW);
            self.similar.retain(|_, s| s.at.elapsed() < WINDOW);
            self.pruned = now;
        }
        if self.similar.len() >= REMEMBERED {
            self.similar.clear();
        }
        let mut subject = key.clone();
        subject.message.clear();
        let similar = self.similar.entry(subject.clone()).or_insert(Similar {
            messages: Default::default(),
            at: now,
        });
        if similar.at.elapsed() >= WINDOW {
            similar.messages.clear();
        }
        similar.at = now;
        if similar.messages.len() < SIMILAR {
            similar.messages.insert(key.message.clone());
        }
        if similar.messages.len() >= SIMILAR {
            let message = format!("{COMBINED}{}", key.message);
            key = subject;
            key.message = COMBINED.to_string();
            return self.repeat_or_create(key, message);
        }
        let message = key.message.clone();
        self.repeat_or_create(key, message)
    }

    fn repeat_or_create(&mut self, key: Key, message: String) -> (Key, Decision) {
        let decision = match self.seen.get_mut(&key).filter(|s| s.at.elapsed() < WINDOW) {
            Some(s) => {
                s.count += 1;
                s.at = Instant::now();
                Decision::Repeat {
                    name: s.name.clone(),
                    count: s.count,
                    message,
                }
            }
            None => Decision::Create { message },
        };
        (key, decision)
    }

    /// Whether an event about `key`'s object may be written now (upstream's
    /// EventSourceObjectSpamFilter, which sees every event after deduplication: a repeat
    /// counts as one). A refused repeat still counted: the next one written carries it.
    fn allow(&mut self, key: &Key) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&mut self, key: &Key, now: Instant) -> bool {
        if self.spam.len() >= REMEMBERED {
            self.spam.clear();
        }
        let object = (
            key.namespace.clone(),
            key.uid.clone(),
            key.name.clone(),
            key.kind.clone(),
        );
        let b = self.spam.entry(object).or_insert(Bucket {
            tokens: SPAM_BURST,
            at: now,
        });
        let gained = now.saturating_duration_since(b.at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        b.tokens = (b.tokens + gained).min(SPAM_BURST);
        b.at = now;
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }

    /// Remembers an event just created as `name`.
    fn created(&mut self, key: Key, name: String) {
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
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Pending>,
}

/// The background writer's state.
struct Writer {
    client: Client,
    component: String,
    host: Option<String>,
    correlator: Correlator,
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
            correlator: Correlator::default(),
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
        let (key, decision) = self.correlator.decide(key);
        if !self.correlator.allow(&key) {
            tracing::debug!(reason = %reason, object = ?about.name, "too many events about one object; dropping one");
            return;
        }
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let message = match decision {
            Decision::Create { message } => message,
            Decision::Repeat {
                name,
                count,
                message,
            } => {
                let patch = json!({"count": count, "lastTimestamp": Time(now), "message": message});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::debug!(event = %name, error = %e, "updating a repeated event; recording it anew");
                        message
                    }
                }
            }
        };
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
            Ok(_) => self.correlator.created(key, name),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, reason: &str, message: &str) -> Key {
        Key {
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            name: name.into(),
            kind: "ReplicaSet".into(),
            ty: Type::Normal,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// Decides and, for a new event, creates it as `n{i}`.
    fn record(c: &mut Correlator, k: Key, i: usize) -> Decision {
        let (k, d) = c.decide(k);
        if matches!(d, Decision::Create { .. }) {
            c.created(k, format!("n{i}"));
        }
        d
    }

    #[test]
    fn repeats_count_up_one_event() {
        let mut c = Correlator::default();
        for i in 0..5 {
            let d = record(&mut c, key("web", "FailedCreate", "quota"), i);
            let want = match i {
                0 => Decision::Create {
                    message: "quota".into(),
                },
                _ => Decision::Repeat {
                    name: "n0".into(),
                    count: i as i32 + 1,
                    message: "quota".into(),
                },
            };
            assert_eq!(d, want);
        }
    }

    #[test]
    fn similar_events_combine_from_the_tenth_message() {
        let mut c = Correlator::default();
        let decisions: Vec<Decision> = (0..1000)
            .map(|i| {
                let msg = format!("Created pod: web-{i}");
                record(&mut c, key("web", "SuccessfulCreate", &msg), i)
            })
            .collect();
        let created: Vec<&Decision> = decisions
            .iter()
            .filter(|d| matches!(d, Decision::Create { .. }))
            .collect();
        // Nine on their own, then one combined event that counts the rest.
        assert_eq!(created.len(), 10);
        assert_eq!(
            created[9],
            &Decision::Create {
                message: "(combined from similar events): Created pod: web-9".into()
            }
        );
        assert_eq!(
            decisions[999],
            Decision::Repeat {
                name: "n9".into(),
                count: 991,
                message: "(combined from similar events): Created pod: web-999".into()
            }
        );
        // Another object or reason is not similar.
        let other = record(
            &mut c,
            key("db", "SuccessfulCreate", "Created pod: db-0"),
            1000,
        );
        assert!(matches!(other, Decision::Create { .. }));
        let other = record(
            &mut c,
            key("web", "SuccessfulDelete", "Deleted pod: web-0"),
            1001,
        );
        assert!(matches!(other, Decision::Create { .. }));
    }

    #[test]
    fn the_spam_filter_lets_25_events_about_an_object_through() {
        let mut c = Correlator::default();
        let web = key("web", "SuccessfulCreate", "x");
        let allowed = (0..100).filter(|_| c.allow(&web)).count();
        assert_eq!(allowed, 25);
        // Another object has its own budget; time refills one per five minutes.
        assert!(c.allow(&key("db", "SuccessfulCreate", "x")));
        let later = Instant::now() + SPAM_REFILL;
        assert!(c.allow_at(&web, later));
        assert!(!c.allow_at(&web, later));
    }
}
