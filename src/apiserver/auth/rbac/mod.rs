//! The RBAC authorizer, as upstream's: Roles, ClusterRoles, RoleBindings and ClusterRoleBindings
//! decide who may do what; nothing is allowed unless a rule allows it.
//!
//! The four kinds are kept in memory ([`Rbac`]), following the watch cache, so a decision never
//! touches the store. A decision that would refuse first waits (briefly) for the index to catch up
//! with the store, so a binding that was just written is honoured at once. Escalation prevention
//! ([`Rbac::check_escalation`]) refuses Roles and bindings that grant more than their writer holds
//! unless the writer may `escalate` or `bind`.

#![allow(clippy::result_large_err)]

pub mod bootstrap;
mod escalation;
pub mod rules;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;

use self::rules::{Attributes, ResourceAttrs, Rule};
use crate::apiserver::http::User;
use crate::store::watch_cache::WatchCache;
use crate::store::{EventKind, Revision, Store};

/// The group whose members may do everything, before RBAC is asked.
pub const MASTERS: &str = "system:masters";

/// A binding's roleRef.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct RoleRef {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

/// A binding's subject.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Subject {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Binding {
    #[serde(default)]
    role_ref: RoleRef,
    #[serde(default)]
    subjects: Vec<Subject>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct Role {
    #[serde(default)]
    rules: Vec<Rule>,
}

/// The RBAC objects, by name (and namespace).
#[derive(Default)]
struct Index {
    cluster_roles: HashMap<String, Vec<Rule>>,
    roles: HashMap<(String, String), Vec<Rule>>,
    cluster_bindings: BTreeMap<String, Binding>,
    bindings: BTreeMap<(String, String), Binding>,
}

impl Index {
    /// Applies one stored object (or its deletion) under `key`.
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        let Some(rest) = key.strip_prefix(crate::store::keys::REGISTRY_ROOT) else {
            return;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let nsname = |p: &[&str]| (p[1].to_string(), p[2].to_string());
        match parts.as_slice() {
            ["clusterroles", name] => {
                let role = value.and_then(|v| serde_json::from_slice::<Role>(v).ok());
                match role {
                    Some(r) => self.cluster_roles.insert(name.to_string(), r.rules),
                    None => self.cluster_roles.remove(*name),
                };
            }
            ["roles", _, _] => {
                let role = value.and_then(|v| serde_json::from_slice::<Role>(v).ok());
                match role {
                    Some(r) => self.roles.insert(nsname(&parts), r.rules),
                    None => self.roles.remove(&nsname(&parts)),
                };
            }
            ["clusterrolebindings", name] => {
                match value.and_then(|v| serde_json::from_slice::<Binding>(v).ok()) {
                    Some(b) => self.cluster_bindings.insert(name.to_string(), b),
                    None => self.cluster_bindings.remove(*name),
                };
            }
            ["rolebindings", _, _] => {
                match value.and_then(|v| serde_json::from_slice::<Binding>(v).ok()) {
                    Some(b) => self.bindings.insert(nsname(&parts), b),
                    None => self.bindings.remove(&nsname(&parts)),
                };
            }
            _ => {}
        }
    }

    /// The rules a roleRef names, from a binding in `namespace` ("" for cluster bindings).
    fn role_rules(&self, r: &RoleRef, namespace: &str) -> Result<&[Rule], String> {
        match r.kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&r.name)
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io {:?} not found",
                        r.name
                    )
                }),
            "Role" => self
                .roles
                .get(&(namespace.to_string(), r.name.clone()))
                .map(Vec::as_slice)
                .ok_or_else(|| format!("role.rbac.authorization.k8s.io {:?} not found", r.name)),
            other => Err(format!("unsupported role reference kind: {other:?}")),
        }
    }

    /// Walks the rules that apply to `user` in `namespace` (cluster bindings first), until
    /// `visit` returns false. Errors (missing roles) are collected.
    fn visit(
        &self,
        user: &User,
        namespace: &str,
        mut visit: impl FnMut(String, &Rule) -> bool,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, b) in &self.cluster_bindings {
            let Some(subject) = b.subjects.iter().find(|s| applies(s, user, "")) else {
                continue;
            };
            match self.role_rules(&b.role_ref, "") {
                Ok(rules) => {
                    for r in rules {
                        let source = format!(
                            "ClusterRoleBinding {name:?} of {} {:?} to {}",
                            b.role_ref.kind,
                            b.role_ref.name,
                            describe(subject, "")
                        );
                        if !visit(source, r) {
                            return errors;
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if namespace.is_empty() {
            return errors;
        }
        let range = (namespace.to_string(), String::new())..;
        for ((ns, name), b) in self.bindings.range(range) {
            if ns != namespace {
                break;
            }
            let Some(subject) = b.subjects.iter().find(|s| applies(s, user, ns)) else {
                continue;
            };
            match self.role_rules(&b.role_ref, ns) {
                Ok(rules) => {
                    for r in rules {
                        let source = format!(
                            "RoleBinding {:?} of {} {:?} to {}",
                            format!("{name}/{ns}"),
                            b.role_ref.kind,
                            b.role_ref.name,
                            describe(subject, ns)
                        );
                        if !visit(source, r) {
                            return errors;
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }
}

/// Whether a binding's subject (in `namespace`, "" for cluster bindings) is `user`.
fn applies(s: &Subject, user: &User, namespace: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == user.name,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                namespace
            } else {
                &s.namespace
            };
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

fn describe(s: &Subject, namespace: &str) -> String {
    if s.kind == "ServiceAccount" {
        let ns = if s.namespace.is_empty() {
            namespace
        } else {
            &s.namespace
        };
        return format!("{} {:?}", s.kind, format!("{}/{ns}", s.name));
    }
    format!("{} {:?}", s.kind, s.name)
}

/// An authorization decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Why it was allowed (which binding), as upstream words it.
    pub reason: String,
    /// Problems met on the way (bindings to missing roles).
    pub errors: Vec<String>,
}

struct Inner {
    index: RwLock<Index>,
    /// The store revision the index has caught up with.
    progress: watch::Sender<Revision>,
    store: Arc<dyn Store>,
}

/// The RBAC authorizer over an in-memory index of the four kinds. Cheap to clone.
#[derive(Clone)]
pub struct Rbac {
    inner: Arc<Inner>,
}

impl Rbac {
    /// Loads the RBAC objects from `cache` and keeps following it.
    pub async fn start(
        store: Arc<dyn Store>,
        cache: &WatchCache,
    ) -> Result<Rbac, crate::store::Error> {
        let rbac = Rbac::empty(store);
        let (kvs, rev, stream) = cache
            .snapshot_and_watch(crate::store::keys::REGISTRY_ROOT)
            .await?;
        rbac.load(&kvs, rev);
        let follower = rbac.clone();
        let cache = cache.clone();
        tokio::spawn(async move { follower.follow(cache, stream).await });
        Ok(rbac)
    }

    /// An index with nothing in it (tests).
    pub fn empty(store: Arc<dyn Store>) -> Rbac {
        let (progress, _) = watch::channel(0);
        Rbac {
            inner: Arc::new(Inner {
                index: RwLock::new(Index::default()),
                progress,
                store,
            }),
        }
    }

    fn load(&self, kvs: &[crate::store::KeyValue], rev: Revision) {
        if let Ok(mut ix) = self.inner.index.write() {
            *ix = Index::default();
            for kv in kvs {
                ix.apply(&kv.key, Some(&kv.value));
            }
        }
        self.inner.progress.send_replace(rev);
    }

    async fn follow(self, cache: WatchCache, mut stream: crate::store::WatchStream) {
        loop {
            while let Some(batch) = stream.next().await {
                let Ok(events) = batch else { break };
                let mut last = 0;
                if let Ok(mut ix) = self.inner.index.write() {
                    for e in &events {
                        let value = (e.kind == EventKind::Put).then_some(&e.kv.value[..]);
                        ix.apply(&e.kv.key, value);
                        last = e.revision();
                    }
                }
                self.inner.progress.send_if_modified(|r| {
                    let newer = last > *r;
                    *r = (*r).max(last);
                    newer
                });
            }
            // Dropped as too slow, or the cache restarted: load again.
            tokio::time::sleep(Duration::from_millis(100)).await;
            match cache
                .snapshot_and_watch(crate::store::keys::REGISTRY_ROOT)
                .await
            {
                Ok((kvs, rev, s)) => {
                    self.load(&kvs, rev);
                    stream = s;
                }
                Err(e) => tracing::warn!(error = %e, "RBAC index: watching the cache failed"),
            }
        }
    }

    /// Waits (up to a second) until the index has seen every write the store has acknowledged.
    pub async fn sync(&self) {
        let Ok(current) = self.inner.store.current_revision().await else {
            return;
        };
        let mut rx = self.inner.progress.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|r| *r >= current)).await;
    }

    /// Whether RBAC allows the request (members of `system:masters` are allowed before RBAC).
    pub fn decide(&self, user: &User, a: &Attributes) -> Decision {
        if user.groups.iter().any(|g| g == MASTERS) {
            return Decision {
                allowed: true,
                ..Default::default()
            };
        }
        let Ok(ix) = self.inner.index.read() else {
            return Decision::default();
        };
        let ns = a
            .resource
            .as_ref()
            .map(|r| r.namespace.as_str())
            .unwrap_or_default();
        let (mut allowed, mut reason) = (false, String::new());
        let errors = ix.visit(user, ns, |source, rule| {
            if rules::allows(rule, a) {
                allowed = true;
                reason = format!("RBAC: allowed by {source}");
                return false;
            }
            true
        });
        Decision {
            allowed,
            reason,
            errors: if allowed { Vec::new() } else { errors },
        }
    }

    /// As [`Rbac::decide`], after catching up with the store when the answer would be no.
    pub async fn authorize(&self, user: &User, a: &Attributes) -> Decision {
        let d = self.decide(user, a);
        if d.allowed {
            return d;
        }
        self.sync().await;
        self.decide(user, a)
    }

    /// Every rule that applies to `user` in `namespace` ("" = cluster-wide only), and the
    /// problems met (SelfSubjectRulesReview, escalation checks). `system:masters` holds its
    /// rules through the `cluster-admin` binding, as upstream.
    pub fn rules_for(&self, user: &User, namespace: &str) -> (Vec<Rule>, Vec<String>) {
        let Ok(ix) = self.inner.index.read() else {
            return (Vec::new(), vec!["the RBAC index is unavailable".into()]);
        };
        let mut out = Vec::new();
        let errors = ix.visit(user, namespace, |_, r| {
            out.push(r.clone());
            true
        });
        (out, errors)
    }

    /// The rules a roleRef of a binding in `namespace` grants.
    fn role_ref_rules(&self, r: &RoleRef, namespace: &str) -> Result<Vec<Rule>, String> {
        let ix = self
            .inner
            .index
            .read()
            .map_err(|_| "the RBAC index is unavailable".to_string())?;
        ix.role_rules(r, namespace).map(<[Rule]>::to_vec)
    }
}

/// The attributes of a resource request (for checks the server makes on its own behalf).
pub fn resource_attrs(
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> Attributes {
    Attributes {
        verb: verb.into(),
        resource: Some(ResourceAttrs {
            group: group.into(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        }),
        path: String::new(),
    }
}

/// Reads a bound object's roleRef and subjects (escalation checks).
fn binding_of(obj: &Value) -> Binding {
    serde_json::from_value(obj.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
