//! When a controller works on its keys: a short deadline after the first change of a burst (so
//! one pass handles the whole burst, even under a steady stream of events), and rechecks or
//! retries asked for at a later time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// How long a burst of events may gather before a pass.
const BURST: Duration = Duration::from_millis(10);

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// The pacing of one controller's keys.
pub struct Pacer<K> {
    later: BinaryHeap<Reverse<(Instant, K)>>,
    pass_at: Option<Instant>,
    /// The burst deadline passed: the next pass may run.
    due: bool,
}

impl<K: Ord + Clone> Default for Pacer<K> {
    fn default() -> Self {
        Pacer {
            later: BinaryHeap::new(),
            pass_at: None,
            due: false,
        }
    }
}

impl<K: Ord + Clone> Pacer<K> {
    /// Starts the burst deadline when there is work and no deadline is running or passed.
    pub fn arm(&mut self, work: bool) {
        if work && self.pass_at.is_none() && !self.due {
            self.pass_at = Some(Instant::now() + BURST);
        }
    }

    /// Whether a pass may run now (its burst deadline passed; the pass is then taken). Called
    /// after each event with whether there is work: new work starts a deadline instead, so a
    /// stream of events is handled in passes over bursts, never one pass per event.
    pub fn ready(&mut self, work: bool) -> bool {
        if self.due {
            self.due = false;
            return true;
        }
        self.arm(work);
        false
    }

    /// Looks at `key` again after `delay`.
    pub fn after(&mut self, key: K, delay: Duration) {
        self.later.push(Reverse((Instant::now() + delay, key)));
    }

    /// Waits for the burst deadline (no keys) or for rechecks falling due (their keys).
    pub async fn next(&mut self) -> Vec<K> {
        let wake = self.later.peek().map(|Reverse((t, _))| *t);
        tokio::select! {
            _ = sleep_until(wake) => {
                let mut due = Vec::new();
                while let Some(Reverse((t, _))) = self.later.peek() {
                    if *t > Instant::now() {
                        break;
                    }
                    if let Some(Reverse((_, k))) = self.later.pop() {
                        due.push(k);
                    }
                }
                due
            }
            _ = sleep_until(self.pass_at) => {
                self.pass_at = None;
                self.due = true;
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bursts_settle_and_rechecks_fall_due() {
        let mut p: Pacer<&str> = Pacer::default();
        assert!(!p.ready(true), "new work waits for its burst");
        assert!(!p.ready(true), "more work joins the burst");
        p.after("a", Duration::from_millis(50));
        assert!(p.next().await.is_empty(), "the burst deadline comes first");
        assert!(p.ready(true));
        assert!(!p.ready(false), "a pass is taken once");
        assert_eq!(p.next().await, ["a"]);
    }
}
