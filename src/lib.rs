//! k1s: Kubernetes in one Rust binary.
//!
//! The library holds every part; `src/main.rs` only calls [`cli::main`]. See ARCHITECTURE.md for
//! the code map. Parts behind cargo features: `apiserver`, `scheduler`, `controllers`, `kubelet`
//! and the `etcd` store backend.

#[cfg(feature = "apiserver")]
pub mod apiserver;
pub mod bench;
#[cfg(any(feature = "apiserver", feature = "kubelet"))]
pub mod certs;
pub mod cli;
#[cfg(any(feature = "scheduler", feature = "controllers", feature = "kubelet"))]
pub mod conditions;
#[cfg(feature = "controllers")]
pub mod controllers;
#[cfg(any(feature = "apiserver", feature = "controllers"))]
pub mod cron;
#[cfg(any(feature = "scheduler", feature = "controllers", feature = "kubelet"))]
pub mod ephemeral_claims;
#[cfg(any(feature = "scheduler", feature = "controllers", feature = "kubelet"))]
pub mod events;
#[cfg(any(feature = "scheduler", feature = "controllers", feature = "kubelet"))]
pub mod informer;
#[cfg(feature = "kubelet")]
pub mod kubelet;
#[cfg(any(feature = "scheduler", feature = "controllers", feature = "kubelet"))]
pub mod labels;
#[cfg(any(feature = "scheduler", feature = "controllers"))]
pub mod leader;
pub mod local_path;
pub mod metrics;
pub mod names;
pub mod parts;
#[cfg(any(feature = "scheduler", feature = "controllers", feature = "kubelet"))]
pub mod placement;
pub mod quantity;
pub mod quota;
pub mod resource_metrics;
#[cfg(any(feature = "scheduler", feature = "controllers", feature = "kubelet"))]
pub mod retry;
#[cfg(feature = "scheduler")]
pub mod scheduler;
#[cfg(feature = "kubelet")]
pub mod spdy;
pub mod store;
pub mod supervisor;
#[cfg(any(feature = "scheduler", feature = "controllers", feature = "kubelet"))]
pub mod taints;
pub mod testing;
#[cfg(any(feature = "apiserver", feature = "kubelet"))]
pub mod tls_any;
#[cfg(any(feature = "apiserver", feature = "kubelet"))]
pub mod upgrade;
#[cfg(any(feature = "apiserver", feature = "kubelet"))]
pub mod websocket;
