//! The audit log, as kube-apiserver's: a Policy file (`--audit-policy-file`, upstream's
//! `audit.k8s.io/v1` format: rules matching users, groups, verbs, resources, namespaces and
//! non-resource URLs to a level, stages to omit) decides what each request records; events are
//! written as JSON lines (`--audit-log-path`, `-` for stdout) with size-based rotation
//! ([`writer`]).

pub mod layer;
pub mod writer;

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::rbac::rules::Attributes;
use super::http::User;

/// Why the audit policy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading the audit policy {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the audit policy {path} is not an audit.k8s.io Policy: {message}")]
    Parse { path: String, message: String },
    #[error("opening the audit log {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The audit policy and where its events go.
pub struct Auditor {
    pub policy: Policy,
    pub writer: writer::LogWriter,
}

impl Auditor {
    /// The auditor the options ask for: `None` unless both a policy and a log path are given.
    pub fn from_options(
        o: &crate::supervisor::AuditOptions,
    ) -> Result<Option<Auditor>, AuditError> {
        let (Some(policy), Some(path)) = (&o.policy_file, &o.log_path) else {
            return Ok(None);
        };
        Ok(Some(Auditor {
            policy: Policy::load(policy)?,
            writer: writer::LogWriter::open(path, o.max_size_mb, o.max_backups, o.max_age_days)?,
        }))
    }
}

/// How much of a request is recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    #[default]
    None,
    Metadata,
    Request,
    RequestResponse,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default, rename = "resourceNames")]
    resource_names: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<String>,
}

/// An audit Policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    kind: String,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    omit_stages: Vec<String>,
}

impl Policy {
    /// Reads a Policy file.
    pub fn load(path: &Path) -> Result<Policy, AuditError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuditError::Read {
            path: shown.clone(),
            source,
        })?;
        Policy::parse(&text, &shown)
    }

    /// Parses a Policy; `shown` names it in errors.
    pub fn parse(text: &str, shown: &str) -> Result<Policy, AuditError> {
        let p: Policy = serde_yaml_ng::from_str(text).map_err(|e| AuditError::Parse {
            path: shown.to_string(),
            message: e.to_string(),
        })?;
        if p.kind != "Policy" {
            return Err(AuditError::Parse {
                path: shown.to_string(),
                message: format!("kind is {:?}, expected Policy", p.kind),
            });
        }
        Ok(p)
    }

    /// The level of a request and the stages left out, by the first rule that matches.
    pub fn level(&self, user: Option<&User>, a: &Attributes) -> (Level, Vec<String>) {
        let name = user.map(|u| u.name.as_str()).unwrap_or("system:anonymous");
        let groups: &[String] = user.map(|u| u.groups.as_slice()).unwrap_or(&[]);
        for r in &self.rules {
            if !r.users.is_empty() && !r.users.iter().any(|u| u == name) {
                continue;
            }
            if !r.user_groups.is_empty() && !r.user_groups.iter().any(|g| groups.contains(g)) {
                continue;
            }
            if !r.verbs.is_empty() && !r.verbs.contains(&a.verb) {
                continue;
            }
            let matched = match &a.resource {
                Some(res) => {
                    let ns_ok = r.namespaces.is_empty() || r.namespaces.contains(&res.namespace);
                    let res_ok = r.resources.is_empty()
                        || r.resources.iter().any(|g| {
                            let full = if res.subresource.is_empty() {
                                res.resource.clone()
                            } else {
                                format!("{}/{}", res.resource, res.subresource)
                            };
                            g.group == res.group
                                && (g.resources.is_empty()
                                    || g.resources.iter().any(|x| {
                                        *x == full
                                            || *x == "*"
                                            || x.strip_prefix("*/") == Some(&res.subresource)
                                            || x.strip_suffix("/*") == Some(&res.resource)
                                    }))
                                && (g.resource_names.is_empty()
                                    || g.resource_names.contains(&res.name))
                        });
                    ns_ok && res_ok && r.non_resource_urls.is_empty()
                }
                None => {
                    r.resources.is_empty()
                        && r.namespaces.is_empty()
                        && (r.non_resource_urls.is_empty()
                            || r.non_resource_urls.iter().any(|u| {
                                u == &a.path
                                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
                            }))
                }
            };
            if matched {
                let mut omit = self.omit_stages.clone();
                omit.extend(r.omit_stages.iter().cloned());
                return (r.level, omit);
            }
        }
        (Level::None, Vec::new())
    }
}

/// What the audit middleware knows of one request.
pub struct Record<'a> {
    pub id: &'a str,
    pub stage: &'a str,
    pub level: Level,
    pub uri: &'a str,
    pub attrs: &'a Attributes,
    pub user: Option<&'a User>,
    pub impersonated: Option<&'a User>,
    pub source_ip: &'a str,
    pub user_agent: &'a str,
    pub received: &'a str,
    pub now: &'a str,
    pub code: Option<u16>,
    pub request_object: Option<&'a Value>,
    pub response_object: Option<&'a Value>,
    pub api_version: &'a str,
}

fn user_json(u: &User) -> Value {
    json!({"username": u.name, "groups": u.groups})
}

/// One audit event, as upstream writes it.
pub fn event(r: &Record) -> Value {
    let mut e = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": format!("{:?}", r.level),
        "auditID": r.id,
        "stage": r.stage,
        "requestURI": r.uri,
        "verb": r.attrs.verb,
        "user": r.user.map(user_json).unwrap_or_else(|| json!({})),
        "sourceIPs": [r.source_ip],
        "userAgent": r.user_agent,
        "requestReceivedTimestamp": r.received,
        "stageTimestamp": r.now,
    });
    if let Some(i) = r.impersonated {
        e["impersonatedUser"] = user_json(i);
    }
    if let Some(res) = &r.attrs.resource {
        let mut o = json!({"resource": res.resource, "apiVersion": r.api_version});
        for (k, v) in [
            ("namespace", &res.namespace),
            ("name", &res.name),
            ("apiGroup", &res.group),
            ("subresource", &res.subresource),
        ] {
            if !v.is_empty() {
                o[k] = json!(v);
            }
        }
        e["objectRef"] = o;
    }
    if let Some(code) = r.code {
        e["responseStatus"] = json!({"metadata": {}, "code": code});
    }
    if r.level >= Level::Request {
        if let Some(o) = r.request_object {
            e["requestObject"] = o.clone();
        }
    }
    if r.level >= Level::RequestResponse {
        if let Some(o) = r.response_object {
            e["responseObject"] = o.clone();
        }
    }
    e
}

#[cfg(test)]
mod tests;
