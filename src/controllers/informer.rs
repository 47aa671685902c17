//! A shared informer, as upstream's SharedInformerFactory gives its controllers: one watch of a
//! kind for the whole controller manager, each object decoded once and held once (`Arc`), and
//! its events fanned out to every controller that subscribed. A controller that subscribes late
//! first receives the current list (`Init`, `InitApply`..., `InitDone`), as a fresh watch would
//! give it; a relist of the shared watch reaches every subscriber the same way.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

/// The events a subscriber receives.
pub type Event<K> = watcher::Event<Arc<K>>;
type Sink<K> = mpsc::UnboundedSender<Event<K>>;

/// A handle to one shared watch.
pub struct Informer<K> {
    join: mpsc::UnboundedSender<Sink<K>>,
}

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
    /// Starts watching `api` until `stop` turns true.
    pub fn start(api: Api<K>, stop: watch::Receiver<bool>) -> Informer<K> {
        let (join, joins) = mpsc::unbounded_channel();
        tokio::spawn(fan_out(api, joins, stop));
        Informer { join }
    }

    /// A stream of this kind's events, starting with the current list.
    pub fn subscribe(&self) -> impl Stream<Item = Event<K>> + Send + Unpin + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.join.send(tx);
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
    }
}

async fn fan_out<K>(
    api: Api<K>,
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
    let mut sinks: Vec<Sink<K>> = Vec::new();
    loop {
        tokio::select! {
            sink = joins.recv() => {
                let Some(sink) = sink else { return };
                // Catch the newcomer up: the current list, then a list in progress.
                if synced {
                    let _ = sink.send(watcher::Event::Init);
                    for o in store.values() {
                        let _ = sink.send(watcher::Event::InitApply(o.clone()));
                    }
                    let _ = sink.send(watcher::Event::InitDone);
                }
                if let Some(partial) = &listing {
                    let _ = sink.send(watcher::Event::Init);
                    for o in partial.values() {
                        let _ = sink.send(watcher::Event::InitApply(o.clone()));
                    }
                }
                sinks.push(sink);
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
                sinks.retain(|s| s.send(clone_event(&out)).is_ok());
            }
            _ = stop.changed() => return,
        }
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
}

impl Informers {
    pub fn start(client: kube::Client, stop: watch::Receiver<bool>) -> Informers {
        Informers {
            pods: Informer::start(Api::all(client), stop),
        }
    }
}
