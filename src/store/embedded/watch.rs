//! Watches on the embedded store: replay from the on-disk log, then follow live batches.
//!
//! A watcher is a small state machine around `next`, the first revision it has not delivered:
//! `CatchUp` reads the `log` table from `next` to the current revision; `Live` forwards batches
//! from the writer's broadcast. It subscribes before catching up, so no batch falls between the
//! two, and drops what it already sent. A watcher whose consumer is slow falls behind the
//! broadcast; it then goes back to `CatchUp` and reads from disk, so writers never wait for it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::reads;
use super::{db_of, DbSlot, Shared};
use crate::store::{Error, Event, Result, Revision, WatchStream};

/// Batches buffered between a watcher and its consumer.
const BUFFER: usize = 64;
/// Log entries read from disk per catch-up step.
const CATCH_UP_STEP: usize = 1000;

enum State {
    CatchUp,
    Live(broadcast::Receiver<Arc<Vec<Event>>>),
    Done,
}

/// Starts a watcher task and returns its stream.
pub(super) fn spawn(
    db: DbSlot,
    shared: Arc<Shared>,
    prefix: String,
    start: Revision,
) -> WatchStream {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let mut w = Watcher {
            db,
            shared,
            prefix,
            next: start,
            tx,
        };
        let mut state = State::CatchUp;
        loop {
            state = match state {
                State::CatchUp => w.catch_up().await,
                State::Live(rx) => w.live(rx).await,
                State::Done => break,
            };
        }
    });
    ReceiverStream::new(rx).boxed()
}

struct Watcher {
    db: DbSlot,
    shared: Arc<Shared>,
    prefix: String,
    next: Revision,
    tx: mpsc::Sender<Result<Vec<Event>>>,
}

impl Watcher {
    async fn deliver(&self, events: Vec<Event>) -> bool {
        events.is_empty() || self.tx.send(Ok(events)).await.is_ok()
    }

    async fn fail(&self, e: Error) -> State {
        let _ = self.tx.send(Err(e)).await;
        State::Done
    }

    async fn catch_up(&mut self) -> State {
        let sub = match self.shared.subscribe() {
            Some(sub) => sub,
            None => {
                return self
                    .fail(Error::Unavailable {
                        reason: "the store is shut down".into(),
                    })
                    .await
            }
        };
        loop {
            let current = self.shared.current.load(Ordering::SeqCst);
            if self.next > current {
                return State::Live(sub);
            }
            let db = match db_of(&self.db) {
                Ok(db) => db,
                Err(e) => return self.fail(e).await,
            };
            let shared = self.shared.clone();
            let (prefix, from) = (self.prefix.clone(), self.next);
            let read = tokio::task::spawn_blocking(move || {
                reads::read_log(&db, &shared, &prefix, from, current, CATCH_UP_STEP)
            })
            .await;
            let (events, last) = match read {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return self.fail(e).await,
                Err(e) => return self.fail(Error::backend("replaying the log", e)).await,
            };
            if !self.deliver(events).await {
                return State::Done;
            }
            self.next = last + 1;
        }
    }

    async fn live(&mut self, mut sub: broadcast::Receiver<Arc<Vec<Event>>>) -> State {
        loop {
            let received = tokio::select! {
                r = sub.recv() => r,
                _ = self.tx.closed() => return State::Done,
            };
            match received {
                Ok(batch) => {
                    let Some(last) = batch.last().map(Event::revision) else {
                        continue;
                    };
                    if last < self.next {
                        continue;
                    }
                    let events: Vec<Event> = batch
                        .iter()
                        .filter(|e| e.revision() >= self.next && e.kv.key.starts_with(&self.prefix))
                        .cloned()
                        .collect();
                    self.next = last + 1;
                    if !self.deliver(events).await {
                        return State::Done;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return State::CatchUp,
                Err(broadcast::error::RecvError::Closed) => return State::Done,
            }
        }
    }
}
