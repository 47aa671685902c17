//! ResourceQuota: each write is charged against the quotas of its namespace before it is
//! stored. A write that would take usage past a hard limit is refused with upstream's 403
//! ("exceeded quota: ..."); otherwise the quota's `status.used` is raised at once (compare and
//! swap, so concurrent writes cannot both take the last unit). The resource-quota controller
//! recounts usage, giving back what deletes free.

use std::collections::BTreeMap;

use axum::response::Response;
use serde_json::{json, Value};

use super::{Attributes, Operation};
use crate::apiserver::catalog;
use crate::apiserver::registry::object;
use crate::quantity::{format, milli};
use crate::quota::{self, Usage};
use crate::store;

/// `a=1,b=2`, sorted by name.
fn pretty(values: &BTreeMap<String, String>) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Containers lacking a request or limit that a quota limits, as upstream lists them.
fn missing_requests(hard: &BTreeMap<String, (i128, String)>, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (res, part, key) in [
        ("requests.cpu", "requests", "cpu"),
        ("cpu", "requests", "cpu"),
        ("requests.memory", "requests", "memory"),
        ("memory", "requests", "memory"),
        ("limits.cpu", "limits", "cpu"),
        ("limits.memory", "limits", "memory"),
    ] {
        if !hard.contains_key(res) {
            continue;
        }
        let lacking: Vec<String> = ["initContainers", "containers"]
            .iter()
            .flat_map(|f| obj["spec"][*f].as_array().into_iter().flatten())
            .filter(|c| c["resources"][part].get(key).is_none())
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        if !lacking.is_empty() {
            out.push(format!("{res} for: {}", lacking.join(",")));
        }
    }
    out
}

/// Charges a create or update against every quota of the namespace.
pub async fn validate(
    a: &Attributes<'_>,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), Response> {
    if a.op == Operation::Delete
        || a.subresource
            .is_some_and(|s| s != "status" && s != "resize")
    {
        return Ok(());
    }
    let Some(ns) = a.namespace else {
        return Ok(());
    };
    let Some(def) = catalog::find("", "v1", "resourcequotas") else {
        return Ok(());
    };
    // Most namespaces have no quota: the watch cache says so without a store read.
    if super::list(a.reg, "", "resourcequotas", Some(ns))
        .await
        .is_empty()
    {
        return Ok(());
    }
    let (group, plural) = (a.def.group, a.def.plural);
    let mut delta: Usage = quota::usage(group, plural, obj);
    if let Some(old) = old {
        for (k, v) in quota::usage(group, plural, old) {
            *delta.entry(k).or_default() -= v;
        }
    }
    delta.retain(|_, v| *v > 0);
    if delta.is_empty() {
        return Ok(());
    }
    // Retry when a concurrent write moved a quota first; quotas already charged stay charged.
    let mut done = std::collections::HashSet::new();
    for _ in 0..10 {
        let page = match a
            .reg
            .store
            .range(store::RangeRequest {
                prefix: object::prefix(def, Some(ns)),
                ..Default::default()
            })
            .await
        {
            Ok(p) => p,
            Err(e) => return Err(object::store_error(def, a.name, e)),
        };
        let mut conflicted = false;
        for kv in &page.kvs {
            let Ok(mut q) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let qname = q["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if done.contains(&qname) || !quota::in_scope(&q, group, plural, obj) {
                continue;
            }
            let hard = quota::hard(&q);
            if group.is_empty() && plural == "pods" && a.op == Operation::Create {
                let missing = missing_requests(&hard, obj);
                if !missing.is_empty() {
                    return Err(a.forbidden(&format!(
                        "failed quota: {qname}: must specify {}",
                        missing.join("; ")
                    )));
                }
            }
            let charged: Vec<&String> = delta.keys().filter(|k| hard.contains_key(*k)).collect();
            if charged.is_empty() {
                continue;
            }
            let used_of = |k: &str| q["status"]["used"][k].as_str().and_then(milli);
            let unknown: Vec<&str> = charged
                .iter()
                .filter(|k| used_of(k).is_none())
                .map(|k| k.as_str())
                .collect();
            if !unknown.is_empty() {
                return Err(a.forbidden(&format!(
                    "status unknown for quota: {qname}, resource: {}",
                    unknown.join(", ")
                )));
            }
            let mut requested = BTreeMap::new();
            let mut used = BTreeMap::new();
            let mut limited = BTreeMap::new();
            let mut new_used = BTreeMap::new();
            for k in &charged {
                let (limit, limit_text) = &hard[*k];
                let now = used_of(k).unwrap_or(0);
                let after = now + delta[*k];
                if after > *limit {
                    requested.insert(k.to_string(), format(delta[*k], limit_text));
                    used.insert(k.to_string(), format(now, limit_text));
                    limited.insert(k.to_string(), limit_text.clone());
                }
                new_used.insert(k.to_string(), format(after, limit_text));
            }
            if !limited.is_empty() {
                return Err(a.forbidden(&format!(
                    "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                    pretty(&requested),
                    pretty(&used),
                    pretty(&limited)
                )));
            }
            for (k, v) in new_used {
                q["status"]["used"][k] = json!(v);
            }
            match a
                .reg
                .store
                .update(&kv.key, object::to_stored(def, &q), kv.mod_revision)
                .await
            {
                Ok(_) => {
                    done.insert(qname);
                }
                Err(store::Error::Conflict { .. }) => {
                    conflicted = true;
                    break;
                }
                Err(e) => return Err(object::store_error(def, &qname, e)),
            }
        }
        if !conflicted {
            return Ok(());
        }
    }
    Err(a.forbidden("the quotas of this namespace changed too often to be charged; try again"))
}
