//! The Node authorizer, as upstream's: a kubelet (`system:node:NAME` in `system:nodes`) may read
//! the secrets, configmaps, claims and volumes of the pods bound to its node and create tokens
//! for their service accounts, reach only its own Node, Lease and CSINode, list and watch only
//! its own pods, and otherwise do what upstream's static `system:node` rules allow. It runs
//! before RBAC; where it has no opinion, RBAC decides.

use serde_json::Value;

use super::rbac::bootstrap;
use super::rbac::rules::{self, Attributes, ResourceAttrs};
use super::{exact_match, Authenticator};
use crate::apiserver::catalog;
use crate::apiserver::http::User;
use crate::apiserver::registry::object;
use crate::store::watch_cache::ReadFrom;

/// The group every kubelet is in.
pub const NODES: &str = "system:nodes";

/// The node a kubelet's identity names, if `user` is one.
pub fn node_name(user: &User) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES) {
        return None;
    }
    user.name.strip_prefix("system:node:")
}

/// What the Node authorizer says.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// No opinion, and why (joined into the 403's message when RBAC refuses too).
    NoOpinion(String),
}

fn no(why: impl Into<String>) -> Verdict {
    Verdict::NoOpinion(why.into())
}

/// What a pod refers to, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Secret,
    ConfigMap,
    Claim,
    ServiceAccount,
}

fn names<'a>(v: &'a Value, pointers: &[&str]) -> Vec<&'a str> {
    pointers
        .iter()
        .filter_map(|p| v.pointer(p).and_then(Value::as_str))
        .collect()
}

/// The objects of `kind` a pod uses.
fn pod_refs(pod: &Value, kind: Kind) -> Vec<String> {
    let spec = &pod["spec"];
    let mut out: Vec<String> = Vec::new();
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    if kind == Kind::ServiceAccount {
        out.extend(spec["serviceAccountName"].as_str().map(str::to_string));
        return out;
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let found = match kind {
            Kind::Secret => names(
                v,
                &[
                    "/secret/secretName",
                    "/csi/nodePublishSecretRef/name",
                    "/azureFile/secretName",
                    "/cephfs/secretRef/name",
                    "/rbd/secretRef/name",
                    "/flexVolume/secretRef/name",
                    "/iscsi/secretRef/name",
                ],
            ),
            Kind::ConfigMap => names(v, &["/configMap/name"]),
            Kind::Claim => names(v, &["/persistentVolumeClaim/claimName"]),
            Kind::ServiceAccount => Vec::new(),
        };
        out.extend(found.into_iter().map(str::to_string));
        if kind == Kind::Claim && v.get("ephemeral").is_some() {
            let vol = v["name"].as_str().unwrap_or_default();
            out.push(format!("{pod_name}-{vol}"));
        }
        for src in v["projected"]["sources"].as_array().into_iter().flatten() {
            let p = match kind {
                Kind::Secret => "/secret/name",
                Kind::ConfigMap => "/configMap/name",
                _ => continue,
            };
            out.extend(names(src, &[p]).into_iter().map(str::to_string));
        }
    }
    if kind == Kind::Secret {
        for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
            out.extend(s["name"].as_str().map(str::to_string));
        }
    }
    let (key_ref, from_ref) = match kind {
        Kind::Secret => ("/valueFrom/secretKeyRef/name", "/secretRef/name"),
        Kind::ConfigMap => ("/valueFrom/configMapKeyRef/name", "/configMapRef/name"),
        _ => return out,
    };
    for field in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[field].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                out.extend(names(e, &[key_ref]).into_iter().map(str::to_string));
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                out.extend(names(e, &[from_ref]).into_iter().map(str::to_string));
            }
        }
    }
    out
}

/// The pods bound to `node` (in `namespace`, or all).
async fn pods_on(auth: &Authenticator, namespace: Option<&str>, node: &str) -> Vec<Value> {
    let Some(def) = catalog::find("", "v1", "pods") else {
        return Vec::new();
    };
    let Ok(page) = auth
        .cache
        .list(&object::prefix(def, namespace), None, 0, ReadFrom::Latest)
        .await
    else {
        return Vec::new();
    };
    page.kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|p| p["spec"]["nodeName"] == node)
        .collect()
}

/// Whether a pod on `node` uses the `kind` object `name` in `namespace`.
async fn related(
    auth: &Authenticator,
    node: &str,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> bool {
    pods_on(auth, Some(namespace), node)
        .await
        .iter()
        .any(|p| pod_refs(p, kind).iter().any(|n| n == name))
}

/// Whether the PersistentVolume `name` is bound to a claim a pod on `node` uses.
async fn volume_related(auth: &Authenticator, node: &str, name: &str) -> bool {
    let Some(def) = catalog::find("", "v1", "persistentvolumeclaims") else {
        return false;
    };
    for pod in pods_on(auth, None, node).await {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        for claim in pod_refs(&pod, Kind::Claim) {
            let key = object::key(def, Some(ns), &claim);
            let Ok(Some(kv)) = auth.cache.get(&key, ReadFrom::Any).await else {
                continue;
            };
            let pvc: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if pvc["spec"]["volumeName"] == name {
                return true;
            }
        }
    }
    false
}

/// A volume pinned to `node` (a local-path or local volume, whose data is on its disk), or a
/// provisioner-named one that is gone: its kubelet asks after the local-path volumes it set up,
/// to learn when one is being deleted and its data is to go (a k1s addition; upstream's
/// provisioner sends a helper pod).
async fn volume_on_node(auth: &Authenticator, node: &str, name: &str) -> bool {
    let Some(def) = catalog::find("", "v1", "persistentvolumes") else {
        return false;
    };
    match auth
        .cache
        .get(&object::key(def, None, name), ReadFrom::Any)
        .await
    {
        Ok(Some(kv)) => {
            let pv: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            crate::local_path::pinned_node(&pv) == Some(node)
        }
        // Gone: a kubelet learns that a local-path volume it held was deleted (one whose
        // finalizer was taken off by hand, or that its node was away for). Only names of the
        // provisioner's form (`pvc-UID`), which no one guesses, are answered.
        Ok(None) => crate::local_path::provisioner_name(name),
        Err(_) => false,
    }
}

fn relationship(node: &str) -> Verdict {
    no(format!(
        "no relationship found between node '{node}' and this object"
    ))
}

/// Upstream's static rules for kubelets (the `system:node` role's).
fn static_rules(a: &Attributes) -> Verdict {
    if bootstrap::node_rules().iter().any(|r| rules::allows(r, a)) {
        Verdict::Allow
    } else {
        no("")
    }
}

/// Decides a kubelet's request.
pub async fn authorize(auth: &Authenticator, node: &str, a: &Attributes) -> Verdict {
    if node.is_empty() {
        return no("unknown node");
    }
    let Some(r) = &a.resource else {
        return static_rules(a);
    };
    match (r.group.as_str(), r.resource.as_str()) {
        ("", "secrets") => read_related(auth, node, Kind::Secret, a, r).await,
        ("", "configmaps") => read_related(auth, node, Kind::ConfigMap, a, r).await,
        ("", "persistentvolumeclaims") if r.subresource == "status" => {
            if !matches!(a.verb.as_str(), "update" | "patch") {
                return no("can only get/update/patch this type");
            }
            if related(auth, node, Kind::Claim, &r.namespace, &r.name).await {
                Verdict::Allow
            } else {
                relationship(node)
            }
        }
        ("", "persistentvolumeclaims") => {
            if a.verb != "get" || r.name.is_empty() || !r.subresource.is_empty() {
                return no("can only get individual resources of this type");
            }
            if related(auth, node, Kind::Claim, &r.namespace, &r.name).await {
                Verdict::Allow
            } else {
                relationship(node)
            }
        }
        ("", "persistentvolumes") => {
            if r.name.is_empty() || !r.subresource.is_empty() {
                return no("can only get individual resources of this type");
            }
            // Updating is k1s's: a kubelet takes the local-path finalizer on and off the
            // volumes pinned to it (NodeRestriction holds it to that).
            let on_node = || volume_on_node(auth, node, &r.name);
            let allowed = match a.verb.as_str() {
                "get" => volume_related(auth, node, &r.name).await || on_node().await,
                "update" | "patch" => on_node().await,
                _ => return no("can only get individual resources of this type"),
            };
            if allowed {
                Verdict::Allow
            } else {
                relationship(node)
            }
        }
        ("", "serviceaccounts") => {
            if a.verb != "create" || r.name.is_empty() {
                return no("can only create tokens for individual service accounts");
            }
            if r.subresource != "token" {
                return no("can only create token subresource of serviceaccount");
            }
            if related(auth, node, Kind::ServiceAccount, &r.namespace, &r.name).await {
                Verdict::Allow
            } else {
                relationship(node)
            }
        }
        ("coordination.k8s.io", "leases") => {
            if !matches!(
                a.verb.as_str(),
                "get" | "create" | "update" | "patch" | "delete"
            ) {
                return no("can only get, create, update, patch, or delete a node lease");
            }
            if r.namespace != "kube-node-lease" {
                return no("can only access leases in the kube-node-lease namespace");
            }
            if r.name != node && !(a.verb == "create" && r.name.is_empty()) {
                return no("can only access node lease with the same name as the requesting node");
            }
            Verdict::Allow
        }
        ("storage.k8s.io", "csinodes") => {
            if !matches!(
                a.verb.as_str(),
                "get" | "create" | "update" | "patch" | "delete"
            ) {
                return no("can only get, create, update, patch, or delete a CSINode");
            }
            if r.name != node && !(a.verb == "create" && r.name.is_empty()) {
                return no("can only access CSINode with the same name as the requesting node");
            }
            Verdict::Allow
        }
        ("", "nodes") if matches!(a.verb.as_str(), "get" | "list" | "watch") => {
            if r.name == node {
                Verdict::Allow
            } else {
                no(format!(
                    "node '{node}' cannot read '{}', only its own Node object",
                    r.name
                ))
            }
        }
        ("", "pods") if matches!(a.verb.as_str(), "list" | "watch") => {
            if exact_match(&r.field_selector, "spec.nodeName") == Some(node) {
                Verdict::Allow
            } else {
                no(format!(
                    "can only list/watch pods with spec.nodeName={node} field selector"
                ))
            }
        }
        _ => static_rules(a),
    }
}

/// Reads of secrets and configmaps: by name, of objects a pod on the node uses.
async fn read_related(
    auth: &Authenticator,
    node: &str,
    kind: Kind,
    a: &Attributes,
    r: &ResourceAttrs,
) -> Verdict {
    if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
        return no("can only read resources of this type");
    }
    if !r.subresource.is_empty() {
        return no("cannot read subresource");
    }
    if r.namespace.is_empty() {
        return no("can only read namespaced object of this type");
    }
    if r.name.is_empty() {
        return no("No Object name found");
    }
    if related(auth, node, kind, &r.namespace, &r.name).await {
        Verdict::Allow
    } else {
        relationship(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_refer_to_secrets_configmaps_claims_and_accounts() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {
            "serviceAccountName": "robot",
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol-secret"}},
                {"name": "b", "configMap": {"name": "vol-cm"}},
                {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "d", "ephemeral": {}},
                {"name": "e", "projected": {"sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "proj-cm"}}]}},
            ],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "env-cm"}}]}],
        }});
        let mut s = pod_refs(&pod, Kind::Secret);
        s.sort();
        assert_eq!(s, vec!["env-secret", "proj", "pull", "vol-secret"]);
        let mut c = pod_refs(&pod, Kind::ConfigMap);
        c.sort();
        assert_eq!(c, vec!["env-cm", "proj-cm", "vol-cm"]);
        assert_eq!(pod_refs(&pod, Kind::Claim), vec!["data", "web-d"]);
        assert_eq!(pod_refs(&pod, Kind::ServiceAccount), vec!["robot"]);
    }

    #[test]
    fn only_kubelets_have_a_node_name() {
        let kubelet = User {
            name: "system:node:n1".into(),
            groups: vec![NODES.into(), "system:authenticated".into()],
        };
        assert_eq!(node_name(&kubelet), Some("n1"));
        let pretender = User {
            name: "system:node:n1".into(),
            groups: vec!["system:authenticated".into()],
        };
        assert_eq!(node_name(&pretender), None);
    }
}
