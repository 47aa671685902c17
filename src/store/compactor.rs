//! Periodic compaction, as kube-apiserver's compactor does for etcd.
//!
//! Every `interval` the compactor notes the current revision and compacts to the revision it
//! noted one interval earlier, so at least one interval of history stays available for watches
//! that reconnect and lists that page. Several servers sharing one etcd may all run it: a
//! compaction someone else already did is not an error.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Error, Revision, Store};

/// Compacts `store` every `interval` until `stop` turns true.
pub async fn run(store: Arc<dyn Store>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut noted: Option<Revision> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if let Some(target) = noted {
            match compact_to(store.as_ref(), target).await {
                Ok(true) => tracing::debug!(revision = target, "store compacted"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, revision = target, "store compaction failed"),
            }
        }
        match store.current_revision().await {
            Ok(rev) => noted = Some(rev),
            Err(e) => tracing::warn!(error = %e, "compactor could not read the current revision"),
        }
    }
}

/// Compacts to `target` unless that is already done. Returns whether it compacted.
pub async fn compact_to(store: &dyn Store, target: Revision) -> Result<bool, Error> {
    if target <= store.compacted_revision().await? {
        return Ok(false);
    }
    match store.compact(target).await {
        Ok(()) => Ok(true),
        Err(Error::Compacted { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
