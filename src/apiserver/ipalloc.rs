//! Service ClusterIP allocation, as upstream's IPAddress-based allocator (GA in 1.33): each
//! allocated address is a `networking.k8s.io/v1` IPAddress object named by the address, so the
//! store's create-if-absent makes allocation atomic across servers sharing one etcd. A repair
//! pass at start-up recreates missing IPAddresses and removes ones no Service uses.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::catalog;
use super::registry::object;
use crate::store::{self, RangeRequest, Store};

/// Why an address could not be allocated.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("failed to allocate IP {0}: provided IP is not in the valid range. The range of valid IPs is {1}")]
    OutOfRange(String, String),
    #[error("failed to allocate IP {0}: provided IP is already allocated")]
    Taken(String),
    #[error("range is full")]
    Full,
    #[error("invalid service CIDR {0:?}")]
    BadRange(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// An IPv4 service range.
#[derive(Clone, Debug)]
pub struct ServiceRange {
    cidr: String,
    base: u32,
    size: u32,
}

impl ServiceRange {
    /// Parses `10.43.0.0/16`.
    pub fn parse(cidr: &str) -> Result<Self, AllocError> {
        let bad = || AllocError::BadRange(cidr.to_string());
        let (ip, bits) = cidr.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let bits: u32 = bits.parse().map_err(|_| bad())?;
        if !(1..=30).contains(&bits) {
            return Err(bad());
        }
        let size = 1u32 << (32 - bits);
        let base = u32::from(ip) & !(size - 1);
        Ok(ServiceRange {
            cidr: cidr.to_string(),
            base,
            size,
        })
    }

    /// The first usable address: the `kubernetes` service's.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v > self.base && v < self.base + self.size - 1
    }

    /// A pseudo-random usable address (the network and broadcast addresses excluded).
    fn candidate(&self, seed: u32) -> Ipv4Addr {
        let usable = self.size - 2;
        Ipv4Addr::from(self.base + 1 + seed % usable)
    }
}

fn ipaddress_def() -> Option<&'static catalog::ResourceDef> {
    catalog::find("networking.k8s.io", "v1", "ipaddresses")
}

fn ipaddress(ip: &str, namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip,
            "uid": object::new_uid(),
            "creationTimestamp": object::now_rfc3339(),
            "labels": {
                "ipaddress.kubernetes.io/ip-family": "IPv4",
                "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
            },
        },
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": namespace, "name": name}},
    })
}

async fn reserve(
    store: &dyn Store,
    ip: &str,
    namespace: &str,
    name: &str,
) -> Result<bool, AllocError> {
    let Some(def) = ipaddress_def() else {
        return Ok(true);
    };
    let obj = ipaddress(ip, namespace, name);
    match store
        .create(&object::key(def, None, ip), object::to_stored(def, &obj))
        .await
    {
        Ok(_) => Ok(true),
        Err(store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Allocates `requested`, or any free address, for service `namespace/name`.
pub async fn allocate(
    store: &dyn Store,
    range: &ServiceRange,
    namespace: &str,
    name: &str,
    requested: Option<&str>,
) -> Result<String, AllocError> {
    if let Some(ip) = requested {
        let parsed: Ipv4Addr = ip
            .parse()
            .map_err(|_| AllocError::OutOfRange(ip.to_string(), range.cidr.clone()))?;
        if !range.contains(parsed) {
            return Err(AllocError::OutOfRange(ip.to_string(), range.cidr.clone()));
        }
        return match reserve(store, ip, namespace, name).await? {
            true => Ok(ip.to_string()),
            false => Err(AllocError::Taken(ip.to_string())),
        };
    }
    // Random probes, then a scan, skipping the first address (kept for `kubernetes`).
    let random = uuid::Uuid::new_v4();
    let bytes = random.as_bytes();
    for i in 0..16 {
        let seed = u32::from_le_bytes([
            bytes[i % 16],
            bytes[(i + 1) % 16],
            bytes[(i + 2) % 16],
            bytes[(i + 3) % 16],
        ]);
        let ip = range.candidate(seed);
        if ip == range.first() {
            continue;
        }
        if reserve(store, &ip.to_string(), namespace, name).await? {
            return Ok(ip.to_string());
        }
    }
    for off in 2..range.size - 1 {
        let ip = Ipv4Addr::from(range.base + off).to_string();
        if reserve(store, &ip, namespace, name).await? {
            return Ok(ip);
        }
    }
    Err(AllocError::Full)
}

/// Frees an address.
pub async fn release(store: &dyn Store, ip: &str) {
    let Some(def) = ipaddress_def() else { return };
    match store.delete(&object::key(def, None, ip), None).await {
        Ok(_) | Err(store::Error::NotFound { .. }) => {}
        Err(e) => tracing::warn!(%ip, error = %e, "releasing a service IP"),
    }
}

/// Makes the IPAddress objects agree with the Services: missing ones created, orphans removed.
pub async fn repair(store: &dyn Store) -> Result<(usize, usize), store::Error> {
    let (Some(ipdef), Some(svcdef)) = (ipaddress_def(), catalog::find("", "v1", "services")) else {
        return Ok((0, 0));
    };
    let mut used = std::collections::BTreeMap::new();
    for svc in object::stored_all(store, svcdef).await? {
        for ip in svc["spec"]["clusterIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if ip != "None" {
                used.insert(ip.to_string(), object::namespace_name(&svc));
            }
        }
    }
    let ips = store
        .range(RangeRequest {
            prefix: object::prefix(ipdef, None),
            ..Default::default()
        })
        .await?;
    let mut removed = 0;
    let mut have = std::collections::BTreeSet::new();
    for kv in &ips.kvs {
        let obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        let ip = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let managed =
            obj["metadata"]["labels"]["ipaddress.kubernetes.io/managed-by"] == "ipallocator.k8s.io";
        if managed && !used.contains_key(&ip) {
            let _ = store.delete(&kv.key, Some(kv.mod_revision)).await;
            removed += 1;
        } else {
            have.insert(ip);
        }
    }
    let mut created = 0;
    for (ip, (ns, name)) in used {
        if !have.contains(&ip) {
            let obj = ipaddress(&ip, &ns, &name);
            if store
                .create(
                    &object::key(ipdef, None, &ip),
                    object::to_stored(ipdef, &obj),
                )
                .await
                .is_ok()
            {
                created += 1;
            }
        }
    }
    Ok((created, removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_exclude_network_and_broadcast() {
        let r = ServiceRange::parse("10.43.0.0/16").expect("range");
        assert_eq!(r.first(), Ipv4Addr::new(10, 43, 0, 1));
        assert!(!r.contains(Ipv4Addr::new(10, 43, 0, 0)));
        assert!(!r.contains(Ipv4Addr::new(10, 43, 255, 255)));
        assert!(r.contains(Ipv4Addr::new(10, 43, 1, 2)));
        assert!(!r.contains(Ipv4Addr::new(10, 44, 0, 1)));
        for seed in [0, 1, u32::MAX, 65_533] {
            assert!(r.contains(r.candidate(seed)));
        }
        assert!(ServiceRange::parse("10.43.0.0").is_err());
    }
}
