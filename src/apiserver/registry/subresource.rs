//! Subresources beyond status: `scale` (deployments, replicasets, statefulsets,
//! replicationcontrollers) and `pods/binding`.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::object::{self, store_error, to_stored, to_wire};
use super::{json, parse_body, Call};
use crate::store;

const RETRIES: usize = 5;

/// The autoscaling/v1 Scale of a scalable object.
fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": super::selector::selector_string(&obj["spec"]["selector"]),
        },
    })
}

async fn current(call: &Call<'_>) -> Result<(store::KeyValue, Value), Response> {
    let key = object::key(call.def, call.ns(), call.name());
    let kv = match call.reg.store.get(&key, 0).await {
        Ok(Some(kv)) => kv,
        Ok(None) => return Err(object::not_found(call.def, call.name())),
        Err(e) => return Err(store_error(call.def, call.name(), e)),
    };
    let obj = to_wire(call.def, &kv)?;
    Ok((kv, obj))
}

/// `GET .../scale`.
pub async fn get_scale(call: &Call<'_>) -> Response {
    match current(call).await {
        Ok((_, obj)) => json(StatusCode::OK, &scale_of(&obj)),
        Err(r) => r,
    }
}

/// `PUT` or `PATCH .../scale`: `change` turns the current Scale into the wanted one.
pub async fn update_scale(
    call: &Call<'_>,
    change: impl Fn(&Value) -> Result<Value, Response>,
) -> Response {
    for _ in 0..RETRIES {
        let (kv, mut obj) = match current(call).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let scale = scale_of(&obj);
        let wanted = match change(&scale) {
            Ok(w) => w,
            Err(r) => return r,
        };
        let rv = wanted["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if !rv.is_empty() && rv.parse::<i64>().ok() != Some(kv.mod_revision) {
            return object::conflict(call.def, call.name());
        }
        let Some(replicas) = wanted["spec"]["replicas"].as_i64() else {
            return object::invalid(call.def, call.name(), "spec.replicas", "Required value");
        };
        if replicas < 0 {
            return object::invalid(
                call.def,
                call.name(),
                "spec.replicas",
                &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            );
        }
        if obj["spec"]["replicas"].as_i64() != Some(replicas) {
            obj["spec"]["replicas"] = json!(replicas);
            let gen = obj["metadata"]["generation"].as_i64().unwrap_or(0);
            obj["metadata"]["generation"] = json!(gen + 1);
        }
        if call.query.dry_run {
            return json(StatusCode::OK, &scale_of(&obj));
        }
        let key = object::key(call.def, call.ns(), call.name());
        match call
            .reg
            .store
            .update(&key, to_stored(&obj), kv.mod_revision)
            .await
        {
            Ok(kv) => {
                obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
                return json(StatusCode::OK, &scale_of(&obj));
            }
            Err(store::Error::Conflict { .. }) if rv.is_empty() => continue,
            Err(e) => return store_error(call.def, call.name(), e),
        }
    }
    object::conflict(call.def, call.name())
}

/// `POST pods/NAME/binding`: assigns the pod to a node, once.
pub async fn bind(call: &Call<'_>, body: &Bytes, content_type: &str) -> Response {
    let binding = match parse_body(body, content_type) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(node) = binding["target"]["name"].as_str().filter(|n| !n.is_empty()) else {
        return object::invalid(call.def, call.name(), "target.name", "Required value");
    };
    let (kv, mut pod) = match current(call).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(uid) = binding["metadata"]["uid"]
        .as_str()
        .filter(|u| !u.is_empty())
    {
        if pod["metadata"]["uid"].as_str() != Some(uid) {
            return object::conflict(call.def, call.name());
        }
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return object::error(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on pods/binding \"{}\": pod {} is being deleted, cannot be assigned to a host", call.name(), call.name()),
            call.name(),
            call.def,
        );
    }
    if let Some(existing) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return object::error(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on pods/binding \"{}\": pod {} is already assigned to node \"{existing}\"", call.name(), call.name()),
            call.name(),
            call.def,
        );
    }
    pod["spec"]["nodeName"] = json!(node);
    for (k, v) in binding["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        pod["metadata"]["annotations"][k] = v.clone();
    }
    if !call.query.dry_run {
        let key = object::key(call.def, call.ns(), call.name());
        if let Err(e) = call
            .reg
            .store
            .update(&key, to_stored(&pod), kv.mod_revision)
            .await
        {
            return store_error(call.def, call.name(), e);
        }
    }
    json(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}
