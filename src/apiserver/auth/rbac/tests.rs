//! Decisions over a hand-built index.

use super::*;
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};

fn user(name: &str, groups: &[&str]) -> User {
    User {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn put(rbac: &Rbac, key: &str, v: Value) {
    let bytes = serde_json::to_vec(&v).expect("json");
    rbac.inner
        .index
        .write()
        .expect("lock")
        .apply(&format!("/registry/{key}"), Some(&bytes));
}

async fn rbac() -> (Rbac, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        EmbeddedStore::open(EmbeddedOptions::new(dir.path().join("t.redb"))).expect("store");
    let rbac = Rbac::empty(Arc::new(store));
    put(
        &rbac,
        "clusterroles/pod-reader",
        serde_json::json!({"rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}),
    );
    put(
        &rbac,
        "roles/team/cm-one",
        serde_json::json!({"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["one"]}]}),
    );
    put(
        &rbac,
        "rolebindings/team/readers",
        serde_json::json!({"roleRef": {"kind": "ClusterRole", "name": "pod-reader"},
            "subjects": [{"kind": "Group", "name": "devs"}, {"kind": "ServiceAccount", "name": "bot"}]}),
    );
    put(
        &rbac,
        "rolebindings/team/one",
        serde_json::json!({"roleRef": {"kind": "Role", "name": "cm-one"},
            "subjects": [{"kind": "User", "name": "ann"}]}),
    );
    put(
        &rbac,
        "clusterrolebindings/broken",
        serde_json::json!({"roleRef": {"kind": "ClusterRole", "name": "missing"},
            "subjects": [{"kind": "User", "name": "ann"}]}),
    );
    (rbac, dir)
}

#[tokio::test]
async fn bindings_grant_in_their_namespace_only() {
    let (rbac, _dir) = rbac().await;
    let dev = user("dev", &["devs", "system:authenticated"]);
    let d = rbac.decide(&dev, &resource_attrs("list", "", "pods", "team", ""));
    assert!(d.allowed);
    assert_eq!(
        d.reason,
        r#"RBAC: allowed by RoleBinding "readers/team" of ClusterRole "pod-reader" to Group "devs""#
    );
    assert!(
        !rbac
            .decide(&dev, &resource_attrs("list", "", "pods", "other", ""))
            .allowed
    );
    assert!(
        !rbac
            .decide(&dev, &resource_attrs("list", "", "pods", "", ""))
            .allowed
    );
    assert!(
        !rbac
            .decide(&dev, &resource_attrs("delete", "", "pods", "team", "p"))
            .allowed
    );
    let bot = user("system:serviceaccount:team:bot", &[]);
    assert!(
        rbac.decide(&bot, &resource_attrs("get", "", "pods", "team", "p"))
            .allowed
    );
    let other_bot = user("system:serviceaccount:other:bot", &[]);
    assert!(
        !rbac
            .decide(&other_bot, &resource_attrs("get", "", "pods", "team", "p"))
            .allowed
    );
}

#[tokio::test]
async fn resource_names_and_missing_roles() {
    let (rbac, _dir) = rbac().await;
    let ann = user("ann", &["system:authenticated"]);
    assert!(
        rbac.decide(
            &ann,
            &resource_attrs("get", "", "configmaps", "team", "one")
        )
        .allowed
    );
    let d = rbac.decide(
        &ann,
        &resource_attrs("get", "", "configmaps", "team", "two"),
    );
    assert!(!d.allowed);
    assert_eq!(
        d.errors,
        vec![r#"clusterrole.rbac.authorization.k8s.io "missing" not found"#.to_string()]
    );
    let admin = user("root", &[MASTERS]);
    assert!(
        rbac.decide(&admin, &resource_attrs("delete", "", "nodes", "", "n"))
            .allowed
    );
}

#[tokio::test]
async fn writers_cannot_grant_what_they_do_not_hold() {
    let (rbac, _dir) = rbac().await;
    let dev = user("dev", &["devs"]);
    let role = |verbs: &[&str]| {
        serde_json::json!({"metadata": {"name": "r", "namespace": "team"},
            "rules": [{"verbs": verbs, "apiGroups": [""], "resources": ["pods"]}]})
    };
    assert!(rbac
        .check_escalation(&dev, "roles", Some("team"), &role(&["get"]), None)
        .await
        .is_ok());
    let refused = rbac
        .check_escalation(&dev, "roles", Some("team"), &role(&["get", "delete"]), None)
        .await
        .expect_err("escalation");
    assert_eq!(refused.status(), axum::http::StatusCode::FORBIDDEN);
    let binding = serde_json::json!({"metadata": {"name": "b", "namespace": "team"},
        "roleRef": {"kind": "ClusterRole", "name": "pod-reader"},
        "subjects": [{"kind": "User", "name": "eve"}]});
    assert!(rbac
        .check_escalation(&dev, "rolebindings", Some("team"), &binding, None)
        .await
        .is_ok());
    assert!(rbac
        .check_escalation(&dev, "rolebindings", Some("other"), &binding, None)
        .await
        .is_err());
}
