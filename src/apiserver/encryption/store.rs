//! A [`Store`] decorator that encrypts the values of configured resources on their way in and
//! decrypts them on their way out (gets, lists, watch events and their previous values).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::EncryptionConfig;
use crate::store::{
    Deleted, Error, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision, Store,
    WatchStream,
};

/// Wraps a store with encryption at rest.
pub struct EncryptingStore {
    inner: Arc<dyn Store>,
    config: Arc<EncryptionConfig>,
}

impl EncryptingStore {
    pub fn new(inner: Arc<dyn Store>, config: EncryptionConfig) -> Self {
        EncryptingStore {
            inner,
            config: Arc::new(config),
        }
    }
}

fn open(config: &EncryptionConfig, mut kv: KeyValue) -> Result<KeyValue> {
    if kv.value.is_empty() {
        return Ok(kv);
    }
    if let Some(t) = config.for_key(&kv.key) {
        let plain = t
            .decrypt(&kv.key, &kv.value)
            .map_err(|e| Error::backend("decrypting a stored object", e))?;
        kv.value = Bytes::from(plain);
    }
    Ok(kv)
}

fn seal(config: &EncryptionConfig, key: &str, value: Bytes) -> Result<Bytes> {
    match config.for_key(key) {
        Some(t) => t
            .encrypt(key, &value)
            .map(Bytes::from)
            .map_err(|e| Error::backend("encrypting an object", e)),
        None => Ok(value),
    }
}

fn open_event(config: &EncryptionConfig, e: Event) -> Result<Event> {
    Ok(Event {
        kind: e.kind,
        kv: open(config, e.kv)?,
        prev: e.prev.map(|p| open(config, p)).transpose()?,
    })
}

#[async_trait]
impl Store for EncryptingStore {
    async fn get(&self, key: &str, revision: Revision) -> Result<Option<KeyValue>> {
        self.inner
            .get(key, revision)
            .await?
            .map(|kv| open(&self.config, kv))
            .transpose()
    }
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let mut resp = self.inner.range(req).await?;
        resp.kvs = resp
            .kvs
            .into_iter()
            .map(|kv| open(&self.config, kv))
            .collect::<Result<_>>()?;
        Ok(resp)
    }
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let stored = seal(&self.config, key, value.clone())?;
        let mut kv = self.inner.create(key, stored).await?;
        kv.value = value;
        Ok(kv)
    }
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let stored = seal(&self.config, key, value.clone())?;
        let mut kv = self.inner.update(key, stored, expected).await?;
        kv.value = value;
        Ok(kv)
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted> {
        let d = self.inner.delete(key, expected).await?;
        Ok(Deleted {
            prev: open(&self.config, d.prev)?,
            revision: d.revision,
        })
    }
    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream> {
        let config = self.config.clone();
        let stream = self.inner.watch(prefix, start_revision).await?;
        Ok(stream
            .map(move |batch| {
                batch.and_then(|events| {
                    events
                        .into_iter()
                        .map(|e| open_event(&config, e))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .boxed())
    }
    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }
    async fn compacted_revision(&self) -> Result<Revision> {
        self.inner.compacted_revision().await
    }
    async fn shutdown(&self) -> Result<()> {
        self.inner.shutdown().await
    }
    async fn needs_rewrite(&self, key: &str) -> bool {
        let Some(t) = self.config.for_key(key) else {
            return false;
        };
        match self.inner.get(key, 0).await {
            Ok(Some(kv)) => t.stale(&kv.value),
            _ => false,
        }
    }
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}
