//! Admission: upstream's built-in plugins, run on every write between defaulting and storage.
//!
//! The mutating phase ([`admit`]) runs after defaults and before validation, the validating phase
//! ([`validate`]) after validation, as kube-apiserver orders them. Plugins, in upstream's order:
//! NamespaceLifecycle (the namespace checks of the registry, plus [`lifecycle`]), NodeRestriction
//! ([`node_restriction`]), PodSecurity ([`pod_security`]), LimitRanger
//! ([`limit_ranger`]), ServiceAccount ([`service_account`]), TaintNodesByCondition,
//! Priority ([`priority`]), DefaultTolerationSeconds, DefaultStorageClass and
//! StorageObjectInUseProtection ([`defaults`]), RuntimeClass ([`runtime_class`]), and last
//! ResourceQuota ([`resource_quota`]).
//!
//! Refusals are 403 Forbidden worded as upstream: `pods "web" is forbidden: ...`.

#![allow(clippy::result_large_err)]

pub mod config;
pub mod defaults;
pub mod lifecycle;
pub mod limit_ranger;
pub mod node_restriction;
pub mod pod_security;
pub mod priority;
pub mod resource_quota;
pub mod runtime_class;
pub mod service_account;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

pub use config::AdmissionConfig;

use super::catalog::{self, ResourceDef};
use super::http::User;
use super::registry::{object, Registry};
use super::status;
use crate::store::watch_cache::ReadFrom;

/// What a write does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// One write, as the plugins see it.
pub struct Attributes<'a> {
    pub reg: &'a Registry,
    pub def: &'static ResourceDef,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub user: Option<&'a User>,
    pub op: Operation,
}

impl Attributes<'_> {
    /// Whether this is a write of `group`/`plural` itself (not a subresource).
    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.def.group == group && self.def.plural == plural && self.subresource.is_none()
    }

    /// The 403 a plugin answers with.
    pub fn forbidden(&self, why: &str) -> Response {
        forbidden(self.def, self.name, why)
    }
}

/// `{resource} "{name}" is forbidden: {why}`, 403.
pub fn forbidden(def: &ResourceDef, name: &str, why: &str) -> Response {
    let mut details = json!({"name": name, "kind": def.plural});
    if !def.group.is_empty() {
        details["group"] = json!(def.group);
    }
    status::failure_with_details(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!("{} {name:?} is forbidden: {why}", object::qualified(def)),
        details,
    )
}

/// The mutating plugins.
pub async fn admit(
    a: &Attributes<'_>,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), Response> {
    if a.op == Operation::Delete {
        return Ok(());
    }
    limit_ranger::admit(a, obj).await?;
    service_account::admit(a, obj).await?;
    defaults::taint_nodes_by_condition(a, obj);
    priority::admit(a, obj, old).await?;
    defaults::default_toleration_seconds(a, obj);
    defaults::default_storage_class(a, obj).await;
    defaults::storage_object_in_use_protection(a, obj);
    runtime_class::admit(a, obj).await?;
    Ok(())
}

/// The validating plugins; `obj` is the object written (the old one for a delete), `old` the one
/// it replaces. Returns the warnings for the response.
pub async fn validate(
    a: &Attributes<'_>,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Vec<String>, Response> {
    lifecycle::validate(a)?;
    node_restriction::validate(a, obj, old)?;
    let warnings = pod_security::validate(a, obj, old).await?;
    limit_ranger::validate(a, obj).await?;
    runtime_class::validate(a, obj).await?;
    resource_quota::validate(a, obj, old).await?;
    Ok(warnings)
}

/// One object by name, from the watch cache (as upstream's plugins read their informers).
pub async fn lookup(
    reg: &Registry,
    group: &str,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<Value> {
    let def = catalog::find(group, "v1", plural)?;
    let kv = reg
        .cache
        .get(&object::key(def, namespace, name), ReadFrom::Any)
        .await
        .ok()??;
    object::to_wire(def, &kv).ok()
}

/// Every object of a resource in a namespace (or all), from the watch cache.
pub async fn list(
    reg: &Registry,
    group: &str,
    plural: &str,
    namespace: Option<&str>,
) -> Vec<Value> {
    let Some(def) = catalog::find(group, "v1", plural) else {
        return Vec::new();
    };
    let Ok(page) = reg
        .cache
        .list(&object::prefix(def, namespace), None, 0, ReadFrom::Any)
        .await
    else {
        return Vec::new();
    };
    page.kvs
        .iter()
        .filter_map(|kv| object::to_wire(def, kv).ok())
        .collect()
}
