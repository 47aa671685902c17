//! Service NodePort allocation from `30000-32767`: one store key per allocated port
//! (`/registry/k1s.io/servicenodeports/PORT`), so create-if-absent makes allocation atomic
//! across servers sharing one etcd; a repair pass at start-up makes the keys agree with the
//! Services.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde_json::{json, Value};

use super::catalog;
use super::registry::object;
use crate::store::{self, RangeRequest, Store};

/// The NodePort range upstream uses by default.
pub const RANGE: std::ops::RangeInclusive<i64> = 30000..=32767;
const PREFIX: &str = "/registry/k1s.io/servicenodeports/";

/// Why a port could not be allocated.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("provided port is not in the valid range. The range of valid ports is 30000-32767")]
    OutOfRange,
    #[error("provided port is already allocated")]
    Taken,
    #[error("range is full")]
    Full,
    #[error(transparent)]
    Store(#[from] store::Error),
}

fn key(port: i64) -> String {
    format!("{PREFIX}{port}")
}

async fn reserve(store: &dyn Store, port: i64, owner: &str) -> Result<bool, store::Error> {
    let value = Bytes::from(json!({"service": owner}).to_string());
    match store.create(&key(port), value).await {
        Ok(_) => Ok(true),
        Err(store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Allocates `requested`, or any free port, for the service `owner` (`namespace/name`).
pub async fn allocate(
    store: &dyn Store,
    owner: &str,
    requested: Option<i64>,
) -> Result<i64, PortError> {
    if let Some(port) = requested {
        if !RANGE.contains(&port) {
            return Err(PortError::OutOfRange);
        }
        return match reserve(store, port, owner).await? {
            true => Ok(port),
            false => Err(PortError::Taken),
        };
    }
    let span = (RANGE.end() - RANGE.start() + 1) as u64;
    let random = uuid::Uuid::new_v4().as_u128();
    for i in 0..16u32 {
        let port = RANGE.start() + ((random >> (i * 7)) as u64 % span) as i64;
        if reserve(store, port, owner).await? {
            return Ok(port);
        }
    }
    for port in RANGE {
        if reserve(store, port, owner).await? {
            return Ok(port);
        }
    }
    Err(PortError::Full)
}

/// Frees a port.
pub async fn release(store: &dyn Store, port: i64) {
    match store.delete(&key(port), None).await {
        Ok(_) | Err(store::Error::NotFound { .. }) => {}
        Err(e) => tracing::warn!(port, error = %e, "releasing a node port"),
    }
}

/// The node ports a Service holds.
pub fn ports_of(svc: &Value) -> Vec<i64> {
    svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .collect()
}

/// Whether a Service of this type gets node ports.
pub fn wants_node_ports(svc: &Value) -> bool {
    matches!(
        svc["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    )
}

/// Makes the port keys agree with the Services: missing ones created, orphans removed.
pub async fn repair(store: &dyn Store) -> Result<(usize, usize), store::Error> {
    let Some(svcdef) = catalog::find("", "v1", "services") else {
        return Ok((0, 0));
    };
    let mut used: BTreeMap<i64, String> = BTreeMap::new();
    for svc in object::stored_all(store, svcdef).await? {
        let (ns, name) = object::namespace_name(&svc);
        for port in ports_of(&svc) {
            used.insert(port, format!("{ns}/{name}"));
        }
    }
    let held = store
        .range(RangeRequest {
            prefix: PREFIX.to_string(),
            ..Default::default()
        })
        .await?;
    let mut have = BTreeSet::new();
    let mut removed = 0;
    for kv in &held.kvs {
        let port: i64 = kv.key.trim_start_matches(PREFIX).parse().unwrap_or(-1);
        if used.contains_key(&port) {
            have.insert(port);
        } else {
            let _ = store.delete(&kv.key, Some(kv.mod_revision)).await;
            removed += 1;
        }
    }
    let mut created = 0;
    for (port, owner) in used {
        if !have.contains(&port) && reserve(store, port, &owner).await? {
            created += 1;
        }
    }
    Ok((created, removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ports_are_read_from_the_spec() {
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}, {"port": 81}]}});
        assert_eq!(ports_of(&svc), vec![30080]);
        assert!(wants_node_ports(&svc));
        assert!(!wants_node_ports(&json!({"spec": {"type": "ClusterIP"}})));
    }
}
