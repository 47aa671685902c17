//! The root CA publisher: a `kube-root-ca.crt` ConfigMap with the cluster CA in every active
//! namespace, so pods can verify the API server (the projected service-account volume mounts
//! it as `ca.crt`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use tokio::sync::watch;

use super::per_namespace::{self, Wanted};

const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The ConfigMap every namespace gets.
pub fn config_map(ca: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/description".to_string(),
                DESCRIPTION.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("ca.crt".to_string(), ca.to_string())])),
        ..Default::default()
    }
}

/// Runs until `stop` turns true.
pub async fn run(shared: Client, writer: Client, ca: String, stop: watch::Receiver<bool>) {
    let wanted = Wanted {
        name: "kube-root-ca.crt",
        desired: config_map(&ca),
        outdated: |cur, want| {
            cur.data != want.data || cur.metadata.annotations != want.metadata.annotations
        },
    };
    per_namespace::run(shared, writer, wanted, stop).await
}
