//! Leader election through a Lease, as upstream's components do it (`kube-system/kube-scheduler`,
//! `kube-system/kube-controller-manager`): one holder at a time runs the work; it renews every
//! 2 s, others take over once a renewal is 15 s overdue, and a holder that could not renew for
//! 10 s stops its work. A clean shutdown releases the Lease so the next holder need not wait.
//! The identity is the host name and a digest of the data directory, so a server restarted on
//! the same data takes its Lease back at once.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

const LEASE_DURATION: i32 = 15;
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(2);

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
        }
    }

    /// Takes or renews the Lease; true while this candidate holds it.
    async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(LEASE_DURATION),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity && !holder.is_empty() {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_DURATION));
            let renewed = spec
                .renew_time
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
            if Timestamp::now().duration_since(renewed).as_secs() < duration {
                return Ok(false);
            }
        }
        if holder != self.identity {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(LEASE_DURATION);
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (clean shutdown), if this candidate holds it.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(lease = %self.name, error = %e, "releasing the lease");
        }
    }

    /// Runs `work` whenever this candidate leads, until `stop` turns true.
    pub async fn run<F, Fut>(self, mut stop: watch::Receiver<bool>, work: F)
    where
        F: Fn(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            // Candidate: try until the Lease is ours.
            loop {
                match self.try_hold().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(lease = %self.name, error = %e, "acquiring the lease")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stop.changed() => return,
                }
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(work(rx));
            let mut renewed = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stop.changed() => {
                        tx.send_replace(true);
                        let _ = task.await;
                        self.release().await;
                        return;
                    }
                }
                match self.try_hold().await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        renewed = Instant::now() - RENEW_DEADLINE - Duration::from_secs(1);
                    }
                    Err(e) => tracing::debug!(lease = %self.name, error = %e, "renewing the lease"),
                }
                if renewed.elapsed() > RENEW_DEADLINE {
                    tracing::warn!(lease = %self.name, "lost the lease; stopping until it is ours again");
                    tx.send_replace(true);
                    let _ = task.await;
                    break;
                }
            }
        }
    }
}

/// This server's identity: its host name and a digest of its data directory.
pub fn identity(data_dir: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "k1s".into());
    let mut h: u32 = 0x811c_9dc5;
    for b in data_dir.to_string_lossy().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{host}_{h:08x}")
}
