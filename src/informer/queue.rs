//! A subscriber's queue that holds at most one pending update per object, as upstream's
//! controllers get from their work queues: while a controller is busy, an object that changes
//! five times waits in its queue once, as its newest version, in the place of its first
//! update. Markers of a (re)list (`Init`, `InitDone`) and deletions keep their order, and an
//! update is never merged across a marker, so a subscriber sees the same sequence of states a
//! watch would give it, minus the versions it would have overtaken anyway.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::Stream;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;

use super::{Event, QUEUED};

/// One subscriber's queue, shared by the informer (pushing) and the subscriber (taking); the
/// simulated kubelet queues its own pod watch in one the same way.
pub(crate) struct Queue<K> {
    state: Mutex<State<K>>,
    ready: Notify,
    kind: String,
    who: &'static str,
}

struct State<K> {
    slots: VecDeque<Event<K>>,
    /// How many slots were ever taken: slot `seq` sits at `seq - taken`.
    taken: u64,
    /// The slot of each object's pending update since the last marker.
    pending: HashMap<String, u64>,
    /// The subscriber is gone: pushes are dropped.
    closed: bool,
    /// The informer stopped: the subscriber's stream ends once the queue is empty.
    ended: bool,
}

impl<K: Resource> Queue<K> {
    pub(crate) fn new(kind: String, who: &'static str) -> Arc<Queue<K>> {
        Arc::new(Queue {
            state: Mutex::new(State {
                slots: VecDeque::new(),
                taken: 0,
                pending: HashMap::new(),
                closed: false,
                ended: false,
            }),
            ready: Notify::new(),
            kind,
            who,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gauge(&self, by: f64) {
        crate::metrics::registry().add_gauge(&QUEUED, &[&self.kind, self.who], by);
    }

    /// Queues `ev`, merging an update into the object's pending one; false once the
    /// subscriber is gone.
    pub(crate) fn push(&self, ev: Event<K>) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        let seq = s.taken + s.slots.len() as u64;
        match &ev {
            watcher::Event::Init | watcher::Event::InitDone => s.pending.clear(),
            watcher::Event::Delete(o) => {
                s.pending.remove(&o.uid().unwrap_or_default());
            }
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                let uid = o.uid().unwrap_or_default();
                match s.pending.get(&uid).copied() {
                    // A pending entry points to a slot not yet taken (taking removes it);
                    // should it not, the update is queued anew.
                    Some(at) => {
                        let slot = at
                            .checked_sub(s.taken)
                            .and_then(|i| usize::try_from(i).ok());
                        if let Some(slot) = slot.and_then(|i| s.slots.get_mut(i)) {
                            *slot = ev;
                            return true;
                        }
                        s.pending.insert(uid, seq);
                    }
                    None => {
                        s.pending.insert(uid, seq);
                    }
                }
            }
        }
        s.slots.push_back(ev);
        drop(s);
        self.gauge(1.0);
        self.ready.notify_one();
        true
    }

    /// Ends the subscriber's stream once it has taken what is queued.
    pub(super) fn end(&self) {
        self.lock().ended = true;
        self.ready.notify_one();
    }

    /// Takes the next event, waiting for one; None once the informer stopped.
    async fn take(&self) -> Option<Event<K>> {
        loop {
            {
                let mut s = self.lock();
                if let Some(ev) = s.slots.pop_front() {
                    let seq = s.taken;
                    s.taken += 1;
                    if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = &ev {
                        let uid = o.uid().unwrap_or_default();
                        if s.pending.get(&uid) == Some(&seq) {
                            s.pending.remove(&uid);
                        }
                    }
                    drop(s);
                    self.gauge(-1.0);
                    return Some(ev);
                }
                if s.ended {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// The subscriber is gone: drops what it never took.
    fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        let left = s.slots.len();
        s.slots.clear();
        s.pending.clear();
        drop(s);
        self.gauge(-(left as f64));
    }
}

/// The subscriber's end: closes the queue when dropped.
struct Taker<K: Resource>(Arc<Queue<K>>);

impl<K: Resource> Drop for Taker<K> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The subscriber's stream of events from `queue`.
pub(crate) fn stream<K>(queue: Arc<Queue<K>>) -> impl Stream<Item = Event<K>> + Send + 'static
where
    K: Resource + Send + Sync + 'static,
{
    futures::stream::unfold(Taker(queue), |taker| async move {
        let ev = taker.0.take().await?;
        Some((ev, taker))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(uid: &str, rv: &str) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        p.metadata.resource_version = Some(rv.into());
        Arc::new(p)
    }

    fn show(ev: &Event<Pod>) -> String {
        let id = |o: &Pod| {
            format!(
                "{}@{}",
                o.uid().unwrap_or_default(),
                o.resource_version().unwrap_or_default()
            )
        };
        match ev {
            watcher::Event::Init => "init".into(),
            watcher::Event::InitDone => "done".into(),
            watcher::Event::InitApply(o) => format!("list {}", id(o)),
            watcher::Event::Apply(o) => format!("apply {}", id(o)),
            watcher::Event::Delete(o) => format!("delete {}", id(o)),
        }
    }

    #[tokio::test]
    async fn updates_merge_in_place_but_never_across_markers_or_deletions() {
        let q = Queue::<Pod>::new("Pod".into(), "test");
        for ev in [
            watcher::Event::Init,
            watcher::Event::InitApply(pod("a", "1")),
            watcher::Event::InitApply(pod("b", "1")),
            watcher::Event::InitApply(pod("a", "2")),
            watcher::Event::InitDone,
            watcher::Event::Apply(pod("a", "3")),
            watcher::Event::Apply(pod("b", "2")),
            watcher::Event::Apply(pod("a", "4")),
            watcher::Event::Delete(pod("a", "5")),
            watcher::Event::Apply(pod("b", "3")),
        ] {
            assert!(q.push(ev));
        }
        q.end();
        let seen: Vec<String> = stream(q).map(|e| show(&e)).collect().await;
        assert_eq!(
            seen,
            [
                "init",
                "list a@2",
                "list b@1",
                "done",
                "apply a@4",
                "apply b@3",
                "delete a@5",
            ]
        );
    }

    #[tokio::test]
    async fn a_taken_update_is_not_merged_into_and_a_dropped_subscriber_refuses_pushes() {
        let q = Queue::<Pod>::new("Pod".into(), "test");
        let mut s = Box::pin(stream(q.clone()));
        q.push(watcher::Event::Apply(pod("a", "1")));
        assert_eq!(
            s.next().await.map(|e| show(&e)).as_deref(),
            Some("apply a@1")
        );
        q.push(watcher::Event::Apply(pod("a", "2")));
        assert_eq!(
            s.next().await.map(|e| show(&e)).as_deref(),
            Some("apply a@2")
        );
        drop(s);
        assert!(!q.push(watcher::Event::Apply(pod("a", "3"))));
    }
}
