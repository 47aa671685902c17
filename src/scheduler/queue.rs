//! The scheduling queue, as kube-scheduler's: pods wait in the active set (highest priority
//! first, then oldest), in backoff after a failed attempt (1 s doubling to 10 s), or in the
//! unschedulable set until a cluster event (a node added or changed, a pod gone) may have made
//! room, or for at most 5 minutes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cache::PodInfo;

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The longest a pod stays unschedulable without another try.
const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Active,
    Backoff,
    Unschedulable,
    /// Popped and being scheduled.
    InFlight,
}

struct Queued {
    info: Arc<PodInfo>,
    state: State,
    attempts: u32,
    /// When the pod's backoff ends (after its last failure).
    backoff_until: Instant,
    since: Instant,
    /// Matches the pod's live heap entry; older entries are skipped.
    seq: u64,
    /// Whether a cluster event arrived while the pod was in flight.
    moved: bool,
}

#[derive(Default)]
pub struct Queue {
    heap: BinaryHeap<(i32, Reverse<u64>, String)>,
    pods: HashMap<String, Queued>,
    seq: u64,
}

impl Queue {
    fn push_active(&mut self, uid: &str) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(q) = self.pods.get_mut(uid) {
            q.state = State::Active;
            q.seq = seq;
            self.heap
                .push((q.info.priority, Reverse(seq), uid.to_string()));
        }
    }

    /// Adds a pending pod, or updates one already queued (an update may make it schedulable).
    pub fn add(&mut self, info: Arc<PodInfo>) {
        let uid = info.uid.clone();
        match self.pods.get_mut(&uid) {
            Some(q) => {
                // Only a change to what the pod asks for may make it schedulable; status
                // updates (the scheduler's own Unschedulable condition) do not.
                let relevant = q.info.pod.spec != info.pod.spec
                    || q.info.pod.metadata.labels != info.pod.metadata.labels;
                q.info = info;
                if relevant && q.state == State::Unschedulable {
                    self.requeue(&uid);
                }
            }
            None => {
                self.pods.insert(
                    uid.clone(),
                    Queued {
                        info,
                        state: State::Active,
                        attempts: 0,
                        backoff_until: Instant::now(),
                        since: Instant::now(),
                        seq: 0,
                        moved: false,
                    },
                );
                self.push_active(&uid);
            }
        }
    }

    pub fn remove(&mut self, uid: &str) {
        self.pods.remove(uid);
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Whether a pod may be waiting in the active set.
    pub fn has_active(&self) -> bool {
        !self.heap.is_empty()
    }

    /// Takes one pod out of the active set, as `pop` would.
    pub fn pop_uid(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let q = self.pods.get_mut(uid)?;
        if q.state != State::Active {
            return None;
        }
        q.state = State::InFlight;
        q.moved = false;
        Some(q.info.clone())
    }

    /// The next pod to schedule.
    pub fn pop(&mut self) -> Option<Arc<PodInfo>> {
        while let Some((_, Reverse(seq), uid)) = self.heap.pop() {
            let Some(q) = self.pods.get_mut(&uid) else {
                continue;
            };
            if q.state != State::Active || q.seq != seq {
                continue;
            }
            q.state = State::InFlight;
            q.moved = false;
            return Some(q.info.clone());
        }
        None
    }

    /// A scheduling attempt failed; `unschedulable` when no node fit (rather than an error).
    pub fn failed(&mut self, uid: &str, unschedulable: bool) {
        let Some(q) = self.pods.get_mut(uid) else {
            return;
        };
        q.attempts += 1;
        let backoff = INITIAL_BACKOFF
            .saturating_mul(1 << (q.attempts - 1).min(10))
            .min(MAX_BACKOFF);
        q.backoff_until = Instant::now() + backoff;
        q.since = Instant::now();
        q.state = if unschedulable && !q.moved {
            State::Unschedulable
        } else {
            State::Backoff
        };
    }

    /// The pod is bound (or being bound): it leaves the queue.
    pub fn done(&mut self, uid: &str) {
        self.pods.remove(uid);
    }

    fn requeue(&mut self, uid: &str) {
        let Some(q) = self.pods.get_mut(uid) else {
            return;
        };
        if q.backoff_until <= Instant::now() {
            self.push_active(uid);
        } else {
            q.state = State::Backoff;
        }
    }

    /// A cluster event may have made room: unschedulable pods try again (after their backoff).
    pub fn move_all(&mut self) {
        let uids: Vec<String> = self
            .pods
            .iter_mut()
            .filter_map(|(uid, q)| {
                if q.state == State::InFlight {
                    q.moved = true;
                }
                (q.state == State::Unschedulable).then(|| uid.clone())
            })
            .collect();
        for uid in uids {
            self.requeue(&uid);
        }
    }

    /// Moves pods whose backoff ended, and those unschedulable too long, to the active set.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, q)| {
                (q.state == State::Backoff && q.backoff_until <= now)
                    || (q.state == State::Unschedulable && now - q.since >= MAX_UNSCHEDULABLE)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in due {
            self.push_active(&uid);
        }
    }

    /// Pods waiting in each set: (active, backoff, unschedulable).
    pub fn sizes(&self) -> (usize, usize, usize) {
        let count = |s: State| self.pods.values().filter(|q| q.state == s).count();
        (
            count(State::Active),
            count(State::Backoff),
            count(State::Unschedulable),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod(uid: &str, priority: i32) -> Arc<PodInfo> {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": uid, "uid": uid},
            "spec": {"containers": [], "priority": priority},
        }))
        .expect("pod");
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    #[test]
    fn higher_priority_first_then_oldest() {
        let mut q = Queue::default();
        q.add(pod("a", 0));
        q.add(pod("b", 10));
        q.add(pod("c", 0));
        let order: Vec<String> = std::iter::from_fn(|| q.pop().map(|p| p.uid.clone())).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn unschedulable_pods_wait_for_an_event_and_their_backoff() {
        let mut q = Queue::default();
        q.add(pod("a", 0));
        assert!(q.pop().is_some());
        q.failed("a", true);
        assert_eq!(q.sizes(), (0, 0, 1));
        q.move_all();
        assert_eq!(q.sizes(), (0, 1, 0), "still backing off");
        q.pods.get_mut("a").expect("queued").backoff_until = Instant::now();
        q.tick();
        assert_eq!(q.pop().map(|p| p.uid.clone()).as_deref(), Some("a"));
        // An event while in flight sends a failed pod to backoff, not to the unschedulable set.
        q.move_all();
        q.failed("a", true);
        assert_eq!(q.sizes(), (0, 1, 0));
    }
}
