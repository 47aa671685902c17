//! The etcd backend (feature `etcd`): the [`Store`] trait over a real etcd v3 cluster.
//!
//! Guarded writes are single etcd transactions (compare, then put/delete, else get), exactly as
//! kube-apiserver issues them, so several k1s servers can share one etcd. Watches reconnect when
//! etcd restarts and resume from the revision after the last one they delivered, or end with
//! [`Error::Compacted`] if that history is gone.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions,
    EventType, GetOptions, Identity, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::keys::prefix_end;
use super::{
    check_key, check_size, Deleted, Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse,
    Result, Revision, Store, WatchStream, DEFAULT_MAX_VALUE_BYTES,
};

/// How to reach etcd.
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    /// `http://` or `https://` URLs.
    pub endpoints: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Largest value accepted (etcd's own limit also applies).
    pub max_value_bytes: usize,
}

impl EtcdOptions {
    /// Plain options for these endpoints.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdOptions {
            endpoints,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            ..Default::default()
        }
    }
}

/// A store backed by etcd.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    max_value_bytes: usize,
    closed: Arc<AtomicBool>,
    /// The highest compacted revision seen (by us or reported by etcd).
    compacted: Arc<AtomicI64>,
}

fn read_file(what: &'static str, path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Unavailable {
        reason: format!("reading the etcd {what} {}: {e}", path.display()),
    })
}

impl EtcdStore {
    /// Connects to etcd and checks it answers.
    pub async fn connect(opts: EtcdOptions) -> Result<Self> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if opts.ca_file.is_some() || opts.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &opts.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read_file("CA", ca)?));
            }
            match (&opts.cert_file, &opts.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(
                        read_file("client certificate", cert)?,
                        read_file("client key", key)?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Unavailable {
                        reason: "an etcd client certificate needs both a cert file and a key file"
                            .into(),
                    })
                }
            }
            connect = connect.with_tls(tls);
        }
        let client = Client::connect(&opts.endpoints, Some(connect))
            .await
            .map_err(map_err)?;
        let store = EtcdStore {
            client,
            max_value_bytes: opts.max_value_bytes,
            closed: Arc::new(AtomicBool::new(false)),
            compacted: Arc::new(AtomicI64::new(0)),
        };
        store.current_revision().await?;
        tracing::info!(endpoints = ?opts.endpoints, "etcd store connected");
        Ok(store)
    }

    fn writable(&self) -> Result<Client> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Unavailable {
                reason: "the store is shutting down".into(),
            });
        }
        Ok(self.client())
    }

    /// A handle on the shared connection.
    fn client(&self) -> Client {
        self.client.clone()
    }

    fn note_compacted(&self, rev: Revision) {
        self.compacted.fetch_max(rev, Ordering::SeqCst);
    }

    fn map(&self, e: etcd_client::Error, requested: Revision) -> Error {
        match map_err(e) {
            Error::Compacted { .. } => Error::Compacted {
                requested,
                compacted: self.compacted.load(Ordering::SeqCst),
            },
            Error::FutureRevision { .. } => Error::FutureRevision {
                requested,
                current: 0,
            },
            other => other,
        }
    }
}

/// Maps etcd's errors onto the store's.
fn map_err(e: etcd_client::Error) -> Error {
    match &e {
        etcd_client::Error::GRpcStatus(status) => {
            let msg = status.message();
            if msg.contains("required revision has been compacted") {
                Error::Compacted {
                    requested: 0,
                    compacted: 0,
                }
            } else if msg.contains("required revision is a future revision") {
                Error::FutureRevision {
                    requested: 0,
                    current: 0,
                }
            } else if msg.contains("request is too large") {
                Error::TooLarge {
                    key: String::new(),
                    size: 0,
                    limit: 0,
                }
            } else if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) || (status.code() == tonic::Code::Unknown
                // A connection that broke mid-request (the transport error is the source).
                && std::error::Error::source(status).is_some())
            {
                Error::Unavailable {
                    reason: format!("etcd: {msg}"),
                }
            } else {
                Error::backend("talking to etcd", e)
            }
        }
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_) => Error::Unavailable {
            reason: format!("etcd: {e}"),
        },
        _ => Error::backend("talking to etcd", e),
    }
}

fn kv_from(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map(|h| h.revision()).unwrap_or(0)
}

/// The `get` answer in the else-branch of a failed transaction.
fn else_get(responses: &[TxnOpResponse]) -> Option<KeyValue> {
    responses.iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(kv_from),
        _ => None,
    })
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str, revision: Revision) -> Result<Option<KeyValue>> {
        check_key(key)?;
        let mut opts = GetOptions::new();
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let resp = self
            .client()
            .get(key, Some(opts))
            .await
            .map_err(|e| self.map(e, revision))?;
        Ok(resp.kvs().first().map(kv_from))
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let start = match &req.start {
            Some(s) if s.as_str() > req.prefix.as_str() => s.clone(),
            _ => req.prefix.clone(),
        };
        let end = prefix_end(req.prefix.as_bytes());
        let mut opts = GetOptions::new().with_range(if end.is_empty() { vec![0] } else { end });
        if req.revision > 0 {
            opts = opts.with_revision(req.revision);
        }
        if req.limit > 0 {
            opts = opts.with_limit(req.limit as i64);
        }
        let resp = self
            .client()
            .get(start, Some(opts))
            .await
            .map_err(|e| self.map(e, req.revision))?;
        Ok(RangeResponse {
            kvs: resp.kvs().iter().map(kv_from).collect(),
            revision: if req.revision > 0 {
                req.revision
            } else {
                header_rev(resp.header())
            },
            more: resp.more(),
            count: resp.count(),
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        check_key(key)?;
        check_size(key, &value, self.max_value_bytes)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let resp = self.writable()?.txn(txn).await.map_err(map_err)?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists {
                key: key.to_string(),
            });
        }
        let rev = header_rev(resp.header());
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: rev,
            mod_revision: rev,
            version: 1,
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        check_key(key)?;
        check_size(key, &value, self.max_value_bytes)?;
        let txn = Txn::new()
            .when([
                Compare::version(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(
                key,
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.writable()?.txn(txn).await.map_err(map_err)?;
        let ops = resp.op_responses();
        if !resp.succeeded() {
            return Err(match else_get(&ops) {
                Some(cur) => Error::Conflict {
                    key: key.to_string(),
                    expected,
                    current: Some(Box::new(cur)),
                },
                None => Error::NotFound {
                    key: key.to_string(),
                },
            });
        }
        let rev = header_rev(resp.header());
        let prev = ops.iter().find_map(|r| match r {
            TxnOpResponse::Put(p) => p.prev_key().map(kv_from),
            _ => None,
        });
        let (create_revision, version) = prev
            .map(|p| (p.create_revision, p.version + 1))
            .unwrap_or((rev, 1));
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: rev,
            version,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted> {
        check_key(key)?;
        let guard = match expected {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
            None => Compare::version(key, CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Greater, 0), guard])
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.writable()?.txn(txn).await.map_err(map_err)?;
        let ops = resp.op_responses();
        if !resp.succeeded() {
            return Err(match (else_get(&ops), expected) {
                (Some(cur), Some(expected)) => Error::Conflict {
                    key: key.to_string(),
                    expected,
                    current: Some(Box::new(cur)),
                },
                _ => Error::NotFound {
                    key: key.to_string(),
                },
            });
        }
        let prev = ops
            .iter()
            .find_map(|r| match r {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(kv_from),
                _ => None,
            })
            .ok_or_else(|| Error::NotFound {
                key: key.to_string(),
            })?;
        Ok(Deleted {
            prev,
            revision: header_rev(resp.header()),
        })
    }

    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream> {
        let start = if start_revision > 0 {
            start_revision
        } else {
            self.current_revision().await? + 1
        };
        let compacted = self.compacted.load(Ordering::SeqCst);
        if start < compacted {
            return Err(Error::Compacted {
                requested: start,
                compacted,
            });
        }
        let (tx, rx) = mpsc::channel(64);
        let watcher = EtcdWatcher {
            store: self.clone(),
            prefix: prefix.to_string(),
            next: start,
            tx,
        };
        tokio::spawn(watcher.run());
        Ok(ReceiverStream::new(rx).boxed())
    }

    async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .client()
            .get(
                "\u{1}k1s-revision-probe",
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(map_err)?;
        Ok(header_rev(resp.header()))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.writable()?
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .map_err(|e| self.map(e, revision))?;
        self.note_compacted(revision);
        Ok(())
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        // A watch from revision 1 is refused with the compacted revision if there is one.
        let mut client = self.client();
        let mut stream = client
            .watch(
                "\u{1}k1s-compaction-probe",
                Some(WatchOptions::new().with_start_revision(1)),
            )
            .await
            .map_err(map_err)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(msg) = tokio::time::timeout_at(deadline, stream.message()).await {
            match msg.map_err(map_err)? {
                Some(resp) if resp.compact_revision() > 0 => {
                    self.note_compacted(resp.compact_revision());
                    break;
                }
                Some(resp) if resp.created() && !resp.canceled() => {
                    // Created at revision 1: nothing is compacted beyond what we know.
                    let _ = stream.cancel(resp.watch_id()).await;
                    break;
                }
                Some(_) => continue,
                None => break,
            }
        }
        Ok(self.compacted.load(Ordering::SeqCst))
    }

    async fn shutdown(&self) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "etcd"
    }
}

/// One watch, re-established from `next` whenever its etcd stream breaks.
struct EtcdWatcher {
    store: EtcdStore,
    prefix: String,
    next: Revision,
    tx: mpsc::Sender<Result<Vec<Event>>>,
}

impl EtcdWatcher {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.follow().await {
                Ok(()) => return,
                Err(e @ Error::Compacted { .. }) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
                Err(e) => {
                    if self.store.closed.load(Ordering::SeqCst) {
                        let _ = self.tx.send(Err(e)).await;
                        return;
                    }
                    tracing::debug!(error = %e, next = self.next, "etcd watch broke; resuming");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.tx.closed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Follows one etcd watch stream. `Ok` means the consumer went away.
    async fn follow(&mut self) -> Result<()> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.next)
            .with_prev_key()
            .with_progress_notify();
        let mut stream = self
            .store
            .client()
            .watch(self.prefix.as_str(), Some(opts))
            .await
            .map_err(map_err)?;
        loop {
            let msg = tokio::select! {
                m = stream.message() => m.map_err(map_err)?,
                _ = self.tx.closed() => return Ok(()),
            };
            let Some(resp) = msg else {
                return Err(Error::Unavailable {
                    reason: "etcd closed the watch stream".into(),
                });
            };
            if resp.compact_revision() > 0 {
                self.store.note_compacted(resp.compact_revision());
                return Err(Error::Compacted {
                    requested: self.next,
                    compacted: resp.compact_revision(),
                });
            }
            if resp.canceled() {
                return Err(Error::Unavailable {
                    reason: format!("etcd canceled the watch: {}", resp.cancel_reason()),
                });
            }
            let events: Vec<Event> = resp
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = kv_from(e.kv()?);
                    let prev = e.prev_kv().map(kv_from);
                    Some(match e.event_type() {
                        EventType::Put => Event {
                            kind: EventKind::Put,
                            kv,
                            prev,
                        },
                        EventType::Delete => Event {
                            kind: EventKind::Delete,
                            kv,
                            prev,
                        },
                    })
                })
                .collect();
            if let Some(last) = events.last() {
                self.next = last.revision() + 1;
                if self.tx.send(Ok(events)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}
