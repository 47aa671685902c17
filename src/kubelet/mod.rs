//! The kubelet part. So far it holds the simulated nodes ([`simulated`]): nodes without
//! containers that register, renew their Leases and move the pods bound to them through their
//! lifecycle, as KWOK does, so the control plane can be tested at scale. The kubelet on real
//! containerd comes with its own issue.

pub mod join;
pub mod simulated;
