//! The controllers: API clients (kube-rs) that reconcile the cluster towards what its objects
//! ask for. Each runs with its own identity, the service account upstream's
//! kube-controller-manager gives it (`--use-service-account-credentials`), so RBAC limits each to
//! what its bootstrap role allows.
//!
//! So far: the ClusterRole aggregation controller ([`clusterrole_aggregation`]).

pub mod clusterrole_aggregation;

use std::sync::Arc;

use tokio::sync::watch;

/// Makes an API client acting as the service account `kube-system:NAME`.
pub type ClientFor = Arc<dyn Fn(&str) -> kube::Client + Send + Sync>;

/// Runs every controller until `stop` turns true.
pub async fn run(client_for: ClientFor, stop: watch::Receiver<bool>) {
    let aggregation = tokio::spawn(clusterrole_aggregation::run(
        client_for("clusterrole-aggregation-controller"),
        stop.clone(),
    ));
    let _ = aggregation.await;
}
