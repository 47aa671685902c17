//! Node IPAM, as upstream's range allocator (`--allocate-node-cidrs`): every node without a pod
//! CIDR gets the next free block of `--cluster-cidr` (a /24 of k3s's default `10.42.0.0/16`),
//! written to `spec.podCIDR` and `spec.podCIDRs`; the kubelet builds its pod network from it.
//! Blocks of nodes that went away are free again; nodes that brought their own CIDR (simulated
//! nodes do) keep it, and blocks they hold inside the range are not handed out twice.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::cache::Cache;
use crate::informer::Informer;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IpamError {
    #[error("cluster cidr {0:?}: expected an IPv4 network such as 10.42.0.0/16")]
    BadCidr(String),
    #[error("cluster cidr {cidr}: node blocks of /{mask} do not fit in it")]
    BadMask { cidr: String, mask: u8 },
}

/// The cluster range cut into equal node blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    base: u32,
    prefix: u8,
    mask: u8,
}

impl Range {
    /// `10.42.0.0/16` with node blocks of `/mask`.
    pub fn parse(cidr: &str, mask: u8) -> Result<Range, IpamError> {
        let bad = || IpamError::BadCidr(cidr.to_string());
        let (ip, bits) = cidr.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = bits.parse().map_err(|_| bad())?;
        if prefix > 32 || mask > 30 || mask < prefix {
            return Err(IpamError::BadMask {
                cidr: cidr.to_string(),
                mask,
            });
        }
        let netmask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Range {
            base: u32::from(ip) & netmask,
            prefix,
            mask,
        })
    }

    fn blocks(&self) -> u64 {
        1u64 << (self.mask - self.prefix)
    }

    fn block(&self, i: u64) -> String {
        let start = self.base + ((i as u32) << (32 - self.mask));
        format!("{}/{}", Ipv4Addr::from(start), self.mask)
    }

    /// The index of the block `cidr` is, if it is one of this range's.
    fn index_of(&self, cidr: &str) -> Option<u64> {
        let (ip, bits) = cidr.split_once('/')?;
        let ip = u32::from(ip.parse::<Ipv4Addr>().ok()?);
        if bits.parse::<u8>().ok()? != self.mask {
            return None;
        }
        let off = ip.checked_sub(self.base)?;
        let i = u64::from(off >> (32 - self.mask));
        (i < self.blocks()).then_some(i)
    }

    /// The first block not in `used`.
    fn next_free(&self, used: &BTreeSet<u64>) -> Option<String> {
        (0..self.blocks())
            .find(|i| !used.contains(i))
            .map(|i| self.block(i))
    }
}

fn pod_cidr(n: &Node) -> Option<&str> {
    n.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .filter(|c| !c.is_empty())
}

/// Runs until `stop` turns true.
pub async fn run(
    nodes_informer: Informer<Node>,
    writer: Client,
    range: Range,
    mut stop: watch::Receiver<bool>,
) {
    let mut events = nodes_informer.subscribe();
    let mut nodes: Cache<Node> = Cache::default();
    let api: Api<Node> = Api::all(writer);
    // Blocks handed out here that the cache may not show yet.
    let mut given: std::collections::HashMap<String, u64> = Default::default();
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(ev) => { nodes.apply_shared(ev); }
                None => return,
            },
            _ = stop.changed() => return,
        }
        if !nodes.synced {
            continue;
        }
        let mut used: BTreeSet<u64> = nodes
            .items
            .values()
            .filter_map(|n| pod_cidr(n).and_then(|c| range.index_of(c)))
            .collect();
        given.retain(|name, _| {
            nodes
                .items
                .values()
                .any(|n| n.name_any() == *name && pod_cidr(n).is_none())
        });
        used.extend(given.values());
        let mut waiting: Vec<String> = nodes
            .items
            .values()
            .filter(|n| pod_cidr(n).is_none() && !given.contains_key(&n.name_any()))
            .map(|n| n.name_any())
            .collect();
        waiting.sort();
        for name in waiting {
            let Some(cidr) = range.next_free(&used) else {
                tracing::warn!(node = %name, "no pod CIDR left in the cluster range");
                break;
            };
            let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(node = %name, %cidr, "allocated the node's pod CIDR");
                    if let Some(i) = range.index_of(&cidr) {
                        used.insert(i);
                        given.insert(name, i);
                    }
                }
                Err(e) => tracing::warn!(node = %name, "allocating a pod CIDR: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_handed_out_in_order_skipping_used_ones() {
        let r = Range::parse("10.42.0.0/16", 24).expect("range");
        assert_eq!(r.blocks(), 256);
        let mut used = BTreeSet::new();
        assert_eq!(r.next_free(&used).as_deref(), Some("10.42.0.0/24"));
        used.insert(r.index_of("10.42.0.0/24").expect("ours"));
        used.insert(r.index_of("10.42.1.0/24").expect("ours"));
        assert_eq!(r.next_free(&used).as_deref(), Some("10.42.2.0/24"));
        assert_eq!(r.index_of("100.64.3.0/24"), None, "outside the range");
        assert_eq!(r.index_of("10.42.3.0/25"), None, "another block size");
        assert_eq!(r.index_of("10.42.255.0/24"), Some(255));
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(Range::parse("10.42.0.0", 24).is_err());
        assert!(Range::parse("10.42.0.0/16", 8).is_err());
        assert!(Range::parse("fd00::/64", 80).is_err());
        let full = Range::parse("10.42.0.0/30", 30).expect("one block");
        let used: BTreeSet<u64> = [0].into();
        assert_eq!(full.next_free(&used), None);
    }
}
