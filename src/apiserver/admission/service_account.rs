//! ServiceAccount: every pod runs as a service account (`default` unless it names one), which
//! must exist; unless automounting is turned off, the pod gets the projected
//! `kube-api-access-XXXXX` volume (a bound token, the cluster CA and its namespace) mounted at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container, and the account's
//! imagePullSecrets when it has none.

use std::time::Duration;

use axum::response::Response;
use serde_json::{json, Value};

use super::{Attributes, Operation};
use crate::apiserver::catalog;
use crate::apiserver::registry::object;

const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const MIRROR: &str = "kubernetes.io/config.mirror";

/// The service account, read from the store: the `default` one is retried for a while, since
/// the service-account controller creates it right after its namespace.
async fn service_account(a: &Attributes<'_>, ns: &str, name: &str) -> Option<Value> {
    let def = catalog::find("", "v1", "serviceaccounts")?;
    let key = object::key(def, Some(ns), name);
    let attempts = if name == "default" { 20 } else { 1 };
    for i in 0..attempts {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Ok(Some(kv)) = a.reg.store.get(&key, 0).await {
            return object::to_wire(def, &kv).ok();
        }
    }
    None
}

/// The projected volume a service-account token is mounted from.
fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

/// Names the pod's service account, checks it exists and mounts its token.
pub async fn admit(a: &Attributes<'_>, obj: &mut Value) -> Result<(), Response> {
    if a.op != Operation::Create || !a.is("", "pods") {
        return Ok(());
    }
    if obj["metadata"]["annotations"].get(MIRROR).is_some() {
        return Ok(());
    }
    let ns = a.namespace.unwrap_or("default");
    let name = match obj["spec"]["serviceAccountName"].as_str() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => "default".to_string(),
    };
    obj["spec"]["serviceAccountName"] = json!(name);
    obj["spec"]["serviceAccount"] = json!(name);
    let Some(sa) = service_account(a, ns, &name).await else {
        return Err(a.forbidden(&format!(
            "error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found"
        )));
    };
    let automount = obj["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or(sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    let spec = &mut obj["spec"];
    if automount {
        let containers = ["initContainers", "containers"];
        let all_mounted = containers.iter().all(|f| {
            spec[*f].as_array().into_iter().flatten().all(|c| {
                c["volumeMounts"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == MOUNT_PATH))
            })
        });
        if !all_mounted {
            let volume = format!("kube-api-access-{}", object::name_suffix());
            match spec["volumes"].as_array_mut() {
                Some(v) => v.push(token_volume(&volume)),
                None => spec["volumes"] = json!([token_volume(&volume)]),
            }
            for f in containers {
                for c in spec
                    .get_mut(f)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    let mounted = c["volumeMounts"]
                        .as_array()
                        .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == MOUNT_PATH));
                    if mounted {
                        continue;
                    }
                    let m = json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH});
                    match c["volumeMounts"].as_array_mut() {
                        Some(ms) => ms.push(m),
                        None => c["volumeMounts"] = json!([m]),
                    }
                }
            }
        }
    }
    let has_pull_secrets = spec["imagePullSecrets"]
        .as_array()
        .is_some_and(|s| !s.is_empty());
    if !has_pull_secrets {
        if let Some(secrets) = sa["imagePullSecrets"].as_array().filter(|s| !s.is_empty()) {
            spec["imagePullSecrets"] = json!(secrets);
        }
    }
    Ok(())
}
