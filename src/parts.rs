//! The parts k1s is made of, which of them this binary was built with, and which a run enables.
//!
//! Each part sits behind a cargo feature. A part that a command needs but the binary lacks is
//! refused with [`PartError::NotBuilt`], naming the feature and the flag that leaves it out.

use std::fmt;

/// One part of k1s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    ApiServer,
    Scheduler,
    Controllers,
    Kubelet,
    /// The etcd store backend (`--datastore-endpoint`).
    Etcd,
}

impl Part {
    /// Every part, in start order.
    pub const ALL: [Part; 5] = [
        Part::Etcd,
        Part::ApiServer,
        Part::Scheduler,
        Part::Controllers,
        Part::Kubelet,
    ];

    /// The cargo feature that builds this part.
    pub fn feature(self) -> &'static str {
        match self {
            Part::ApiServer => "apiserver",
            Part::Scheduler => "scheduler",
            Part::Controllers => "controllers",
            Part::Kubelet => "kubelet",
            Part::Etcd => "etcd",
        }
    }

    /// Whether this binary was built with the part.
    pub fn built(self) -> bool {
        match self {
            Part::ApiServer => cfg!(feature = "apiserver"),
            Part::Scheduler => cfg!(feature = "scheduler"),
            Part::Controllers => cfg!(feature = "controllers"),
            Part::Kubelet => cfg!(feature = "kubelet"),
            Part::Etcd => cfg!(feature = "etcd"),
        }
    }

    /// The flag that leaves this part out at run time, if there is one.
    pub fn disable_flag(self) -> Option<&'static str> {
        match self {
            Part::Scheduler => Some("--disable-scheduler"),
            Part::Controllers => Some("--disable-controllers"),
            Part::Kubelet => Some("--disable-kubelet"),
            Part::ApiServer | Part::Etcd => None,
        }
    }

    /// Fails with [`PartError::NotBuilt`] if the binary lacks this part.
    pub fn require(self) -> Result<(), PartError> {
        if self.built() {
            Ok(())
        } else {
            Err(PartError::NotBuilt(self))
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::ApiServer => "the API server",
            Part::Scheduler => "the scheduler",
            Part::Controllers => "the controllers",
            Part::Kubelet => "the kubelet",
            Part::Etcd => "the etcd store backend",
        })
    }
}

/// A part asked for but missing.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("{0} is not built into this binary (cargo feature `{f}`){hint}", f = .0.feature(), hint = .0.disable_flag().map(|d| format!("; pass {d} to run without it")).unwrap_or_default())]
    NotBuilt(Part),
}

/// The version line `k1s version` prints.
pub fn version_line() -> String {
    let built: Vec<&str> = Part::ALL
        .iter()
        .filter(|p| p.built())
        .map(|p| p.feature())
        .collect();
    format!(
        "k1s version v{} (speaks Kubernetes {}; built with: {})",
        env!("CARGO_PKG_VERSION"),
        KUBERNETES_VERSION,
        built.join(", ")
    )
}

/// The Kubernetes API version k1s speaks.
pub const KUBERNETES_VERSION: &str = "v1.37.1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_part_names_feature_and_flag() {
        let msg = PartError::NotBuilt(Part::Kubelet).to_string();
        assert!(msg.contains("cargo feature `kubelet`"), "{msg}");
        assert!(msg.contains("--disable-kubelet"), "{msg}");
        let msg = PartError::NotBuilt(Part::ApiServer).to_string();
        assert_eq!(
            msg,
            "the API server is not built into this binary (cargo feature `apiserver`)"
        );
    }
}
