//! The service-account controller: a `default` ServiceAccount in every active namespace,
//! recreated if deleted.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use tokio::sync::watch;

use super::per_namespace::{self, Wanted};

/// Runs until `stop` turns true.
pub async fn run(shared: Client, writer: Client, stop: watch::Receiver<bool>) {
    let wanted = Wanted {
        name: "default",
        desired: ServiceAccount::default(),
        outdated: |_, _| false,
    };
    per_namespace::run(shared, writer, wanted, stop).await
}
