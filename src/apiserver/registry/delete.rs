//! `DELETE` of one object: preconditions, DeleteOptions, graceful deletion of pods on a node,
//! finalizers, and the release of a Service's addresses and ports.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::object::{self, store_error, to_stored, to_wire};
use super::services::is_service;
use super::write::{current, key};
use super::{json, Call};
use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::status;

/// The grace period a pod's deletion gets, as upstream's pod strategy decides it: none for pods
/// that never reached a node or have finished, else the one asked for or the pod's own.
fn pod_grace_period(def: &ResourceDef, pod: &Value, asked: Option<i64>) -> Option<i64> {
    if !(def.group.is_empty() && def.plural == "pods") {
        return None;
    }
    let scheduled = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if !scheduled || finished {
        return Some(0);
    }
    Some(
        asked
            .or(pod["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30)
            .max(0),
    )
}

/// Stores an object newly marked for deletion (grace period or finalizers) and answers with it.
async fn store_marked(call: &Call<'_>, obj: &Value, expected: i64) -> Response {
    match call
        .reg
        .store
        .update(&key(call), to_stored(call.def, obj), expected)
        .await
    {
        Ok(kv) => match to_wire(call.def, &kv) {
            Ok(o) => json(StatusCode::OK, &o),
            Err(r) => r,
        },
        Err(e) => store_error(call.def, call.name(), e),
    }
}

/// `DELETE` one object: marked for deletion while finalizers remain, removed otherwise.
pub async fn delete(call: &Call<'_>, body: &Bytes) -> Response {
    let opts: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) if v.is_object() => v,
            _ => {
                return status::failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the body of the request could not be decoded as DeleteOptions",
                )
            }
        }
    };
    if let Some(p) = opts["propagationPolicy"]
        .as_str()
        .or(call.query.propagation_policy.as_deref())
    {
        if !matches!(p, "Orphan" | "Background" | "Foreground") {
            return object::invalid(
                call.def,
                call.name(),
                "propagationPolicy",
                &format!("Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""),
            );
        }
    }
    let grace_asked = opts["gracePeriodSeconds"]
        .as_i64()
        .or(call.query.grace_period_seconds);
    let kv = match current(call).await {
        Ok(kv) => kv,
        Err(r) => return r,
    };
    let mut obj = match to_wire(call.def, &kv) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let attrs = super::write::admission_attributes(
        call,
        call.name(),
        crate::apiserver::admission::Operation::Delete,
    );
    if let Err(r) = crate::apiserver::admission::validate(&attrs, &obj, None).await {
        return r;
    }
    let pre = &opts["preconditions"];
    if let Some(uid) = pre["uid"].as_str() {
        if obj["metadata"]["uid"].as_str() != Some(uid) {
            return object::error(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on {} \"{}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}", object::qualified(call.def), call.name(), obj["metadata"]["uid"].as_str().unwrap_or_default()),
                call.name(),
                call.def,
            );
        }
    }
    if let Some(rv) = pre["resourceVersion"].as_str() {
        if rv.parse::<i64>().ok() != Some(kv.mod_revision) {
            return object::error(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on {} \"{}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", object::qualified(call.def), call.name(), kv.mod_revision),
                call.name(),
                call.def,
            );
        }
    }
    // Foreground and Orphan propagation are recorded as the finalizers the garbage collector
    // acts on: it deletes or orphans the dependents, then removes the finalizer.
    let policy = opts["propagationPolicy"]
        .as_str()
        .or(call.query.propagation_policy.as_deref())
        .or((opts["orphanDependents"] == true).then_some("Orphan"));
    let gc_finalizer = match policy {
        Some("Foreground") => Some("foregroundDeletion"),
        Some("Orphan") => Some("orphan"),
        _ => None,
    };
    if let Some(f) = gc_finalizer.filter(|_| obj["metadata"]["deletionTimestamp"].is_null()) {
        let list = obj["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !list.iter().any(|x| x == f) {
            let mut list = list;
            list.push(json!(f));
            obj["metadata"]["finalizers"] = json!(list);
        }
    }
    let namespace_finalizers = call.def.plural == "namespaces"
        && obj["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
    let finalizers = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    // Pods on a node end gracefully: marked now, removed when the kubelet has stopped them
    // (or the grace period was 0).
    let grace = pod_grace_period(call.def, &obj, grace_asked);
    let dry_run = call.query.dry_run
        || opts["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    if dry_run {
        return json(StatusCode::OK, &obj);
    }
    if let Some(grace) = grace.filter(|g| *g > 0) {
        let marked = &obj["metadata"]["deletionGracePeriodSeconds"];
        // A second delete may only shorten the grace period.
        if marked.as_i64().is_none_or(|m| grace < m) {
            obj["metadata"]["deletionTimestamp"] =
                json!(object::rfc3339(object::epoch_now() + grace));
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            return store_marked(call, &obj, kv.mod_revision).await;
        }
        return json(StatusCode::OK, &obj);
    }
    if finalizers || namespace_finalizers {
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!(object::now_rfc3339());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if namespace_finalizers {
                obj["status"]["phase"] = json!("Terminating");
            }
            return store_marked(call, &obj, kv.mod_revision).await;
        }
        return json(StatusCode::OK, &obj);
    }
    match call
        .reg
        .store
        .delete(&key(call), Some(kv.mod_revision))
        .await
    {
        Ok(_) => {
            if is_service(call.def) {
                for port in crate::apiserver::portalloc::ports_of(&obj) {
                    crate::apiserver::portalloc::release(call.reg.store.as_ref(), port).await;
                }
                for ip in obj["spec"]["clusterIPs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if ip != "None" {
                        crate::apiserver::ipalloc::release(call.reg.store.as_ref(), ip).await;
                    }
                }
            }
            json(StatusCode::OK, &obj)
        }
        Err(e) => store_error(call.def, call.name(), e),
    }
}
