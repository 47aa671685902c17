//! The bootstrap roles and bindings upstream's kube-apiserver creates at start
//! (`bootstrap-policy.yaml`), reconciled on every start as upstream does: missing objects are
//! created; existing ones annotated `rbac.authorization.kubernetes.io/autoupdate: "true"` get
//! the rules, aggregation selectors, labels, annotations and subjects they lack, and nothing of a
//! user's is taken away; those annotated `"false"` are left alone.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::rules::{self, Rule};
use super::Subject;
use crate::apiserver::catalog;
use crate::apiserver::registry::object;
use crate::store::{self, Store};

const POLICY: &str = include_str!("bootstrap-policy.yaml");
const API_VERSION: &str = "rbac.authorization.k8s.io/v1";
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// Why the bootstrap policy could not be reconciled.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("the built-in bootstrap policy does not parse: {0}")]
    Policy(#[from] serde_yaml_ng::Error),
    #[error("storing bootstrap RBAC objects: {0}")]
    Store(#[from] store::Error),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Policy {
    cluster_roles: Vec<RoleData>,
    cluster_role_bindings: Vec<BindingData>,
    #[serde(default)]
    roles: Vec<RoleData>,
    #[serde(default)]
    role_bindings: Vec<BindingData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleData {
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    #[serde(default)]
    labels: Map<String, Value>,
    #[serde(default)]
    aggregation_rule: Option<Value>,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RoleName {
    ClusterRole(String),
    Ref { kind: String, name: String },
}

#[derive(Deserialize)]
struct BindingData {
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    role: RoleName,
    #[serde(default)]
    subjects: Vec<Subject>,
}

fn metadata(name: &str, namespace: Option<&str>, labels: &Map<String, Value>) -> Value {
    let mut l = labels.clone();
    l.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    let mut m = json!({
        "name": name,
        "uid": object::new_uid(),
        "creationTimestamp": object::now_rfc3339(),
        "labels": l,
        "annotations": {AUTOUPDATE: "true"},
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

fn subject_json(s: &Subject) -> Value {
    let mut v = json!({"kind": s.kind, "name": s.name});
    if s.kind == "ServiceAccount" {
        v["namespace"] = json!(s.namespace);
    } else {
        v["apiGroup"] = json!("rbac.authorization.k8s.io");
    }
    v
}

fn role_object(kind: &str, r: &RoleData) -> Value {
    let mut v = json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata(&r.name, r.namespace.as_deref(), &r.labels),
    });
    if let Some(a) = &r.aggregation_rule {
        v["aggregationRule"] = a.clone();
    }
    if !r.rules.is_empty() {
        v["rules"] = json!(r.rules);
    }
    v
}

fn binding_object(kind: &str, b: &BindingData) -> Value {
    let (rkind, rname) = match &b.role {
        RoleName::ClusterRole(n) => ("ClusterRole", n.as_str()),
        RoleName::Ref { kind, name } => (kind.as_str(), name.as_str()),
    };
    json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata(&b.name, b.namespace.as_deref(), &Map::new()),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": rkind, "name": rname},
        "subjects": b.subjects.iter().map(subject_json).collect::<Vec<_>>(),
    })
}

/// Adds to `existing` what `expected` has and it lacks; `None` when nothing is missing.
fn reconcile(existing: &Value, expected: &Value) -> Option<Value> {
    if existing["metadata"]["annotations"][AUTOUPDATE] == "false" {
        return None;
    }
    let mut out = existing.clone();
    for field in ["labels", "annotations"] {
        for (k, v) in expected["metadata"][field]
            .as_object()
            .into_iter()
            .flatten()
        {
            if out["metadata"][field].get(k).is_none() {
                out["metadata"][field][k] = v.clone();
            }
        }
    }
    if let Some(selectors) = expected["aggregationRule"]["clusterRoleSelectors"].as_array() {
        for s in selectors {
            let have = out["aggregationRule"]["clusterRoleSelectors"]
                .as_array()
                .is_some_and(|a| a.contains(s));
            if !have {
                match out["aggregationRule"]["clusterRoleSelectors"].as_array_mut() {
                    Some(a) => a.push(s.clone()),
                    None => out["aggregationRule"] = json!({"clusterRoleSelectors": [s]}),
                }
            }
        }
    }
    if expected.get("rules").is_some() && expected["aggregationRule"].is_null() {
        let have: Vec<Rule> = serde_json::from_value(out["rules"].clone()).unwrap_or_default();
        let want: Vec<Rule> = serde_json::from_value(expected["rules"].clone()).unwrap_or_default();
        let missing = rules::uncovered(&have, &want);
        if !missing.is_empty() {
            let mut all = have;
            all.extend(missing);
            out["rules"] = json!(all);
        }
    }
    if let Some(subjects) = expected["subjects"].as_array() {
        for s in subjects {
            let have = out["subjects"].as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["kind"] == s["kind"]
                        && x["name"] == s["name"]
                        && x["namespace"].as_str().unwrap_or_default()
                            == s["namespace"].as_str().unwrap_or_default()
                })
            });
            if !have {
                match out["subjects"].as_array_mut() {
                    Some(a) => a.push(s.clone()),
                    None => out["subjects"] = json!([s]),
                }
            }
        }
    }
    (out != *existing).then_some(out)
}

/// Creates or tops up one bootstrap object. A binding whose roleRef differs is replaced, as
/// upstream does (a roleRef cannot be changed in place).
async fn ensure(store: &dyn Store, plural: &str, expected: Value) -> Result<(), store::Error> {
    let Some(def) = catalog::find("rbac.authorization.k8s.io", "v1", plural) else {
        return Ok(());
    };
    let (ns, name) = object::namespace_name(&expected);
    let key = object::key(def, (!ns.is_empty()).then_some(ns.as_str()), &name);
    for _ in 0..5 {
        let Some(kv) = store.get(&key, 0).await? else {
            match store.create(&key, object::to_stored(def, &expected)).await {
                Err(store::Error::AlreadyExists { .. }) => continue,
                r => return r.map(|_| ()),
            }
        };
        let Ok(existing) = serde_json::from_slice::<Value>(&kv.value) else {
            return Ok(());
        };
        let role_ref_differs =
            expected.get("roleRef").is_some() && existing["roleRef"] != expected["roleRef"];
        let updated = if role_ref_differs {
            if existing["metadata"]["annotations"][AUTOUPDATE] == "false" {
                return Ok(());
            }
            expected.clone()
        } else {
            match reconcile(&existing, &expected) {
                Some(mut u) => {
                    if let Some(m) = u["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    u
                }
                None => return Ok(()),
            }
        };
        match store
            .update(&key, object::to_stored(def, &updated), kv.mod_revision)
            .await
        {
            Err(store::Error::Conflict { .. }) => continue,
            r => return r.map(|_| ()),
        }
    }
    Ok(())
}

/// Upstream's static rules for kubelets: the `system:node` role's, which the Node authorizer
/// applies itself (the role is not bound to anyone by default).
pub fn node_rules() -> &'static [Rule] {
    static RULES: std::sync::OnceLock<Vec<Rule>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        serde_yaml_ng::from_str::<Policy>(POLICY)
            .ok()
            .and_then(|p| {
                p.cluster_roles
                    .into_iter()
                    .find(|r| r.name == "system:node")
            })
            .map(|r| r.rules)
            .unwrap_or_default()
    })
}

/// Reconciles the bootstrap policy into the store.
pub async fn reconcile_all(store: &dyn Store) -> Result<usize, BootstrapError> {
    let policy: Policy = serde_yaml_ng::from_str(POLICY)?;
    let mut n = 0;
    for r in &policy.cluster_roles {
        ensure(store, "clusterroles", role_object("ClusterRole", r)).await?;
        n += 1;
    }
    for r in &policy.roles {
        ensure(store, "roles", role_object("Role", r)).await?;
        n += 1;
    }
    for b in &policy.cluster_role_bindings {
        ensure(
            store,
            "clusterrolebindings",
            binding_object("ClusterRoleBinding", b),
        )
        .await?;
        n += 1;
    }
    for b in &policy.role_bindings {
        ensure(store, "rolebindings", binding_object("RoleBinding", b)).await?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_parses_and_has_upstreams_roles() {
        let p: Policy = serde_yaml_ng::from_str(POLICY).expect("policy");
        let names: Vec<&str> = p.cluster_roles.iter().map(|r| r.name.as_str()).collect();
        for want in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:basic-user",
            "system:discovery",
            "system:public-info-viewer",
            "system:node",
            "system:kube-scheduler",
            "system:kube-controller-manager",
            "system:controller:deployment-controller",
        ] {
            assert!(names.contains(&want), "{want}");
        }
        let crb: Vec<&str> = p
            .cluster_role_bindings
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        assert!(crb.contains(&"cluster-admin"));
        assert!(crb.contains(&"system:basic-user"));
        assert!(!node_rules().is_empty());
    }

    #[test]
    fn reconciling_adds_what_is_missing_and_keeps_the_users_changes() {
        let expected = json!({
            "metadata": {"labels": {"a": "1"}, "annotations": {AUTOUPDATE: "true"}},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
        });
        let mine = json!({
            "metadata": {"labels": {"mine": "x"}, "annotations": {AUTOUPDATE: "true"}},
            "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["nodes"]}],
        });
        let out = reconcile(&mine, &expected).expect("changed");
        assert_eq!(out["metadata"]["labels"]["mine"], "x");
        assert_eq!(out["metadata"]["labels"]["a"], "1");
        assert_eq!(out["rules"].as_array().map(Vec::len), Some(2));
        assert!(reconcile(&out, &expected).is_none(), "converged");
        let frozen = json!({"metadata": {"annotations": {AUTOUPDATE: "false"}}});
        assert!(reconcile(&frozen, &expected).is_none());
    }
}
