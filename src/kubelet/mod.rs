//! The kubelet part: the simulated nodes ([`simulated`]), nodes without containers that
//! register, renew their Leases and move the pods bound to them through their lifecycle, as
//! KWOK does, so the control plane can be tested at scale; and the pieces of the kubelet on real
//! containerd: the supervised containerd ([`containerd`]), images without a registry
//! ([`images`]), the CRI runtime ([`cri`]) and the pods' cgroups ([`cgroups`]).

pub mod agent;
pub mod api;
pub mod cgroups;
pub mod container_logs;
pub mod containerd;
pub mod cri;
pub mod eviction;
pub mod images;
pub mod join;
pub mod lease;
pub mod masquerade;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod run;
pub mod runtime_health;
pub mod simulated;
pub mod stats;
pub mod summary;
pub mod volumes;
