//! A shared informer, as upstream's SharedInformerFactory gives its controllers: one watch of a
//! kind for the whole controller manager, each object decoded once and held once (`Arc`), and
//! its events fanned out to every controller that subscribed. A controller that subscribes late
//! first receives the current list (`Init`, `InitApply`..., `InitDone`), as a fresh watch would
//! give it; a relist of the shared watch reaches every subscriber the same way. Each
//! subscriber's queue keeps one pending update per object (`queue`), so a controller that lags
//! during a burst holds the newest version of each object, not every version in between.

pub(crate) mod queue;
pub mod trim;

use std::collections::HashMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

/// Events handed to subscribers that they have not taken yet (a lagging controller's backlog).
static QUEUED: crate::metrics::Desc = crate::metrics::Desc {
    name: "k1s_informer_queued_events",
    help: "Events of a shared informer waiting for a subscriber, by kind and subscriber.",
    labels: &["kind", "subscriber"],
    buckets: &[],
};

/// The events a subscriber receives.
pub type Event<K> = watcher::Event<Arc<K>>;
/// A subscriber's queue.
type Sink<K> = Arc<queue::Queue<K>>;

/// A handle to one shared watch.
pub struct Informer<K> {
    join: mpsc::UnboundedSender<Sink<K>>,
}

/// What an informer keeps of each object it decodes (`trim`).
pub type Transform<K> = fn(K) -> K;

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            join: self.join.clone(),
        }
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    /// Starts watching `api` until `stop` turns true, keeping of each object what `transform`
    /// returns.
    pub fn start(api: Api<K>, transform: Transform<K>, stop: watch::Receiver<bool>) -> Informer<K> {
        let (join, joins) = mpsc::unbounded_channel();
        tokio::spawn(fan_out(api, transform, joins, stop));
        Informer { join }
    }

    /// A stream of this kind's events, starting with the current list.
    #[track_caller]
    pub fn subscribe(&self) -> impl Stream<Item = Event<K>> + Send + Unpin + 'static {
        let who = subscriber(std::panic::Location::caller().file());
        let sink = queue::Queue::new(K::kind(&Default::default()).into_owned(), who);
        if self.join.send(sink.clone()).is_err() {
            // The informer already stopped: the stream ends at once.
            sink.end();
        }
        queue::stream(sink).boxed()
    }
}

async fn fan_out<K>(
    api: Api<K>,
    transform: Transform<K>,
    mut joins: mpsc::UnboundedReceiver<Sink<K>>,
    mut stop: watch::Receiver<bool>,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let mut events = watcher(api, Default::default()).default_backoff().boxed();
    let mut store: HashMap<String, Arc<K>> = HashMap::new();
    // While a (re)list is in progress: what it brought so far.
    let mut listing: Option<HashMap<String, Arc<K>>> = None;
    let mut synced = false;
    let mut sinks = Sinks(Vec::new());
    loop {
        tokio::select! {
            sink = joins.recv() => {
                let Some(sink) = sink else { return };
                // Catch the newcomer up: the current list, then a list in progress.
                if synced {
                    sink.push(watcher::Event::Init);
                    for o in store.values() {
                        sink.push(watcher::Event::InitApply(o.clone()));
                    }
                    sink.push(watcher::Event::InitDone);
                }
                if let Some(partial) = &listing {
                    sink.push(watcher::Event::Init);
                    for o in partial.values() {
                        sink.push(watcher::Event::InitApply(o.clone()));
                    }
                }
                sinks.0.push(sink);
            }
            ev = events.next() => {
                let ev = match ev {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "shared watch");
                        continue;
                    }
                    None => return,
                };
                let ev = match ev {
                    watcher::Event::InitApply(o) => watcher::Event::InitApply(transform(o)),
                    watcher::Event::Apply(o) => watcher::Event::Apply(transform(o)),
                    watcher::Event::Delete(o) => watcher::Event::Delete(transform(o)),
                    other => other,
                };
                let out: Event<K> = match ev {
                    watcher::Event::Init => {
                        listing = Some(HashMap::new());
                        watcher::Event::Init
                    }
                    watcher::Event::InitApply(o) => {
                        let o = Arc::new(o);
                        listing
                            .get_or_insert_with(HashMap::new)
                            .insert(o.uid().unwrap_or_default(), o.clone());
                        watcher::Event::InitApply(o)
                    }
                    watcher::Event::InitDone => {
                        store = listing.take().unwrap_or_default();
                        synced = true;
                        watcher::Event::InitDone
                    }
                    watcher::Event::Apply(o) => {
                        let o = Arc::new(o);
                        store.insert(o.uid().unwrap_or_default(), o.clone());
                        watcher::Event::Apply(o)
                    }
                    watcher::Event::Delete(o) => {
                        let uid = o.uid().unwrap_or_default();
                        let o = store.remove(&uid).unwrap_or_else(|| Arc::new(o));
                        watcher::Event::Delete(o)
                    }
                };
                sinks.0.retain(|s| s.push(clone_event(&out)));
            }
            _ = stop.changed() => return,
        }
    }
}

/// The informer's subscribers; their streams end when the informer stops.
struct Sinks<K: Resource>(Vec<Sink<K>>);

impl<K: Resource> Drop for Sinks<K> {
    fn drop(&mut self) {
        for s in &self.0 {
            s.end();
        }
    }
}

/// `src/controllers/replicaset.rs` -> `replicaset`.
fn subscriber(file: &'static str) -> &'static str {
    let base = file.rsplit('/').next().unwrap_or(file);
    match base.strip_suffix(".rs") {
        Some("mod") | Some("sync") => file.rsplit('/').nth(1).unwrap_or(base),
        Some(name) => name,
        None => base,
    }
}

fn clone_event<K>(ev: &Event<K>) -> Event<K> {
    match ev {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.clone()),
        watcher::Event::InitDone => watcher::Event::InitDone,
        watcher::Event::Apply(o) => watcher::Event::Apply(o.clone()),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.clone()),
    }
}

/// The shared informers of the controller manager.
#[derive(Clone)]
pub struct Informers {
    pub pods: Informer<k8s_openapi::api::core::v1::Pod>,
    /// Nodes for the controllers that follow them (DaemonSets, pod GC); each held once.
    pub nodes: Informer<k8s_openapi::api::core::v1::Node>,
}

impl Informers {
    pub fn start(client: kube::Client, stop: watch::Receiver<bool>) -> Informers {
        Informers {
            pods: Informer::start(Api::all(client.clone()), trim::pod, stop.clone()),
            nodes: Informer::start(Api::all(client), trim::managed_fields, stop),
        }
    }
}
