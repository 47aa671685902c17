//! Shared harness for the integration tests: a store of either backend, started for real.
#![allow(dead_code)]

pub mod node;
pub mod registry;
pub mod server;

use std::sync::Arc;

use k1s::store::embedded::{EmbeddedOptions, EmbeddedStore};
use k1s::store::etcd::{EtcdOptions, EtcdStore};
use k1s::store::Store;
use k1s::testing::etcd::EtcdServer;

/// A running store and what keeps it alive.
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub etcd: Option<EtcdServer>,
    pub dir: Option<tempfile::TempDir>,
}

impl Backend {
    /// A fresh embedded store in a temp dir.
    pub fn embedded() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path().join("state.redb")))
            .expect("open embedded store");
        Backend {
            store: Arc::new(store),
            etcd: None,
            dir: Some(dir),
        }
    }

    /// A fresh etcd on loopback and the etcd backend on it.
    pub async fn etcd() -> Backend {
        let server = tokio::task::spawn_blocking(EtcdServer::start)
            .await
            .expect("join")
            .expect("start etcd (is Debian's etcd-server installed?)");
        let store = EtcdStore::connect(EtcdOptions::new(vec![server.url().to_string()]))
            .await
            .expect("connect to etcd");
        Backend {
            store: Arc::new(store),
            etcd: Some(server),
            dir: None,
        }
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
}

/// Generates one test per case and backend: `mod embedded { fn case() }` and `mod etcd { ... }`,
/// each calling `crate::cases::case(store)`.
#[macro_export]
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = $crate::common::Backend::embedded();
                    $crate::cases::$case(backend.store()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = $crate::common::Backend::etcd().await;
                    $crate::cases::$case(backend.store()).await;
                }
            )*
        }
    };
}
