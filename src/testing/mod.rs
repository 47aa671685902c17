//! Test and benchmark harness pieces that start real dependencies on loopback.
//!
//! Used by the integration tests and by `k1s bench`; nothing here runs in a server.

pub mod etcd;
