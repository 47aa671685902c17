//! A [`Store`] decorator that records each operation's latency, as kube-apiserver's
//! `etcd_request_duration_seconds{operation, type}` (type: the resource of the key).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Deleted, KeyValue, RangeRequest, RangeResponse, Result, Revision, Store, WatchStream};
use crate::metrics::{registry, Desc, LATENCY_BUCKETS};

const DURATION: Desc = Desc {
    name: "etcd_request_duration_seconds",
    help: "Store request latency in seconds for each operation and object type.",
    labels: &["operation", "type"],
    buckets: LATENCY_BUCKETS,
};

const ERRORS: Desc = Desc {
    name: "etcd_request_errors_total",
    help: "Store requests that failed, by operation and object type.",
    labels: &["operation", "type"],
    buckets: &[],
};

/// The resource segment of a key (`/registry/pods/ns/name` -> `pods`).
fn kind_of(key: &str) -> &str {
    key.trim_start_matches(super::keys::REGISTRY_ROOT)
        .split('/')
        .next()
        .unwrap_or_default()
}

/// Wraps a store and times every call.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        MeteredStore { inner }
    }
}

async fn timed<T>(
    op: &str,
    key: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let start = Instant::now();
    let r = fut.await;
    let kind = kind_of(key);
    registry().observe(&DURATION, &[op, kind], start.elapsed().as_secs_f64());
    if r.is_err() {
        registry().inc(&ERRORS, &[op, kind], 1.0);
    }
    r
}

#[async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str, revision: Revision) -> Result<Option<KeyValue>> {
        timed("get", key, self.inner.get(key, revision)).await
    }
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let prefix = req.prefix.clone();
        timed("list", &prefix, self.inner.range(req)).await
    }
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        timed("create", key, self.inner.create(key, value)).await
    }
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        timed("update", key, self.inner.update(key, value, expected)).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted> {
        timed("delete", key, self.inner.delete(key, expected)).await
    }
    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream> {
        timed("watch", prefix, self.inner.watch(prefix, start_revision)).await
    }
    async fn current_revision(&self) -> Result<Revision> {
        timed("current_revision", "", self.inner.current_revision()).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        timed("compact", "", self.inner.compact(revision)).await
    }
    async fn compacted_revision(&self) -> Result<Revision> {
        self.inner.compacted_revision().await
    }
    async fn shutdown(&self) -> Result<()> {
        self.inner.shutdown().await
    }
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    async fn needs_rewrite(&self, key: &str) -> bool {
        self.inner.needs_rewrite(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_resource() {
        assert_eq!(kind_of("/registry/pods/default/web"), "pods");
        assert_eq!(kind_of("/registry/services/specs/default/x"), "services");
        assert_eq!(kind_of(""), "");
    }
}
