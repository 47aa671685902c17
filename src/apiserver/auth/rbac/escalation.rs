//! Escalation prevention, as upstream's RBAC registry does it: a Role or ClusterRole may only
//! grant what its writer holds (unless the writer may `escalate` it), and a binding may only
//! grant a role whose permissions the writer holds (unless the writer may `bind` it).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::rules::{self, Rule};
use super::{binding_of, resource_attrs, Rbac, MASTERS};
use crate::apiserver::http::User;
use crate::apiserver::status;

const GROUP: &str = "rbac.authorization.k8s.io";

fn forbidden(plural: &str, name: &str, why: &str) -> Response {
    status::failure_with_details(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!("{plural}.{GROUP} {name:?} is forbidden: {why}"),
        json!({"name": name, "group": GROUP, "kind": plural}),
    )
}

/// Whether two versions of an object differ only in what the garbage collector writes.
fn only_gc_fields_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            for f in [
                "ownerReferences",
                "finalizers",
                "managedFields",
                "resourceVersion",
                "generation",
            ] {
                m.remove(f);
            }
        }
        v
    };
    strip(old) == strip(new)
}

impl Rbac {
    /// Refuses a write of a Role, ClusterRole, RoleBinding or ClusterRoleBinding that would grant
    /// `user` permissions it does not hold. `old` is the object being replaced, if any.
    pub async fn check_escalation(
        &self,
        user: &User,
        plural: &str,
        namespace: Option<&str>,
        new: &Value,
        old: Option<&Value>,
    ) -> Result<(), Response> {
        if !matches!(
            plural,
            "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings"
        ) || user.groups.iter().any(|g| g == MASTERS)
        {
            return Ok(());
        }
        if old.is_some_and(|o| only_gc_fields_changed(o, new)) {
            return Ok(());
        }
        self.sync().await;
        let ns = namespace.unwrap_or_default();
        let name = new["metadata"]["name"].as_str().unwrap_or_default();
        let wanted: Vec<Rule> = match plural {
            "roles" | "clusterroles" => {
                let asked = resource_attrs("escalate", GROUP, plural, ns, name);
                if self.decide(user, &asked).allowed {
                    return Ok(());
                }
                let had_aggregation = old.is_some_and(|o| !o["aggregationRule"].is_null());
                if plural == "clusterroles" && !new["aggregationRule"].is_null() && !had_aggregation
                {
                    return Err(forbidden(
                        plural,
                        name,
                        "must have cluster-admin privileges to use the aggregationRule",
                    ));
                }
                serde_json::from_value(new["rules"].clone()).unwrap_or_default()
            }
            _ => {
                let b = binding_of(new);
                let resource = match b.role_ref.kind.as_str() {
                    "Role" => "roles",
                    _ => "clusterroles",
                };
                let asked = resource_attrs("bind", GROUP, resource, ns, &b.role_ref.name);
                if self.decide(user, &asked).allowed {
                    return Ok(());
                }
                match self.role_ref_rules(&b.role_ref, ns) {
                    Ok(r) => r,
                    Err(e) => return Err(forbidden(plural, name, &e)),
                }
            }
        };
        let (owned, errors) = self.rules_for(user, ns);
        let missing = rules::uncovered(&owned, &wanted);
        if missing.is_empty() {
            return Ok(());
        }
        let mut missing = rules::compact(missing);
        missing.sort_by_key(rules::sort_key);
        let listed: Vec<String> = missing.iter().map(rules::compact_string).collect();
        let mut why = format!(
            "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
            user.name,
            rules::quoted(&user.groups),
            listed.join("\n")
        );
        if !errors.is_empty() {
            why.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
        }
        Err(forbidden(plural, name, &why))
    }
}
