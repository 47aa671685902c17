//! The `kubernetes` Service's Endpoints and EndpointSlice, which each API server keeps itself
//! as kube-apiserver's lease reconciler does: every server holds a lease
//! (`/registry/masterleases/IP`, renewed every 10 s, good for 15 s), and the endpoints list the
//! addresses of the servers whose lease is current. A server that stops gives its lease up, so
//! in-cluster clients move to the servers left.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::catalog;
use super::registry::object;
use crate::store::{self, RangeRequest, Store};

const LEASES: &str = "/registry/masterleases/";
const RENEW: Duration = Duration::from_secs(10);
const TTL_SECS: i64 = 15;

/// Why one round of reconciling failed (the next round tries again).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("endpoint reconciler store access: {0}")]
    Store(#[from] store::Error),
    #[error("endpoint reconciler: resource {0} is not served")]
    NotServed(&'static str),
}

/// Keeps this server's lease and the `kubernetes` endpoints until `stop`, then gives the lease up.
pub async fn run(store: Arc<dyn Store>, ip: IpAddr, port: u16, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = round(store.as_ref(), ip, port, true).await {
            tracing::warn!(error = %e, "the kubernetes service's endpoints are not up to date");
        }
        tokio::select! {
            _ = tokio::time::sleep(RENEW) => {}
            _ = stop.changed() => break,
        }
    }
    if let Err(e) = round(store.as_ref(), ip, port, false).await {
        tracing::debug!(error = %e, "could not give up the API server lease");
    }
}

/// Renews (or drops) this server's lease, then writes the endpoints of the current leases.
async fn round(store: &dyn Store, ip: IpAddr, port: u16, keep: bool) -> Result<(), ReconcileError> {
    let key = format!("{LEASES}{ip}");
    let now = object::epoch_now();
    if keep {
        let lease = json!({"ip": ip.to_string(), "port": port, "expires": now + TTL_SECS});
        let value = bytes::Bytes::from(lease.to_string());
        match store.get(&key, 0).await? {
            Some(kv) => store.update(&key, value, kv.mod_revision).await.map(drop)?,
            None => store.create(&key, value).await.map(drop)?,
        }
    } else {
        match store.delete(&key, None).await {
            Ok(_) | Err(store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let leases = store
        .range(RangeRequest {
            prefix: LEASES.to_string(),
            ..Default::default()
        })
        .await?;
    let mut servers: Vec<(String, u16)> = Vec::new();
    for kv in &leases.kvs {
        let Ok(lease) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if lease["expires"].as_i64().unwrap_or(0) < now {
            // Expired: a server that went away without giving it up.
            let _ = store.delete(&kv.key, Some(kv.mod_revision)).await;
            continue;
        }
        if let (Some(ip), Some(port)) = (lease["ip"].as_str(), lease["port"].as_u64()) {
            servers.push((ip.to_string(), u16::try_from(port).unwrap_or(443)));
        }
    }
    servers.sort();
    servers.dedup();
    // All servers of a cluster serve on one port, as upstream assumes; take this one's.
    let port = servers.first().map(|s| s.1).unwrap_or(port);
    let ips: Vec<&str> = servers.iter().map(|s| s.0.as_str()).collect();
    write_endpoints(store, &ips, port).await?;
    write_slice(store, &ips, port).await
}

async fn write_endpoints(store: &dyn Store, ips: &[&str], port: u16) -> Result<(), ReconcileError> {
    let def = catalog::find("", "v1", "endpoints").ok_or(ReconcileError::NotServed("endpoints"))?;
    let subsets = if ips.is_empty() {
        json!([])
    } else {
        json!([{
            "addresses": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }])
    };
    let labels = json!({"endpointslice.kubernetes.io/skip-mirror": "true"});
    put(store, def, "Endpoints", labels, json!({"subsets": subsets})).await
}

async fn write_slice(store: &dyn Store, ips: &[&str], port: u16) -> Result<(), ReconcileError> {
    let def = catalog::find("discovery.k8s.io", "v1", "endpointslices")
        .ok_or(ReconcileError::NotServed("endpointslices"))?;
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    let labels = json!({"kubernetes.io/service-name": "kubernetes"});
    let body = json!({
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    put(store, def, "EndpointSlice", labels, body).await
}

/// Writes `default/kubernetes` with `body`'s fields when they differ from the stored ones.
async fn put(
    store: &dyn Store,
    def: &catalog::ResourceDef,
    kind: &str,
    labels: Value,
    body: Value,
) -> Result<(), ReconcileError> {
    let key = object::key(def, Some("default"), "kubernetes");
    let current = store.get(&key, 0).await?;
    let mut obj = match &current {
        Some(kv) => serde_json::from_slice::<Value>(&kv.value).unwrap_or_else(|_| json!({})),
        None => json!({
            "apiVersion": def.group_version(),
            "kind": kind,
            "metadata": {
                "name": "kubernetes", "namespace": "default", "uid": object::new_uid(),
                "creationTimestamp": object::now_rfc3339(),
            },
        }),
    };
    let mut changed = current.is_none();
    if obj["metadata"]["labels"] != labels {
        obj["metadata"]["labels"] = labels;
        changed = true;
    }
    if let Some(fields) = body.as_object() {
        for (k, v) in fields {
            if obj[k] != *v {
                obj[k] = v.clone();
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(());
    }
    let value = object::to_stored(def, &obj);
    match current {
        Some(kv) => store.update(&key, value, kv.mod_revision).await.map(drop)?,
        None => store.create(&key, value).await.map(drop)?,
    }
    Ok(())
}
