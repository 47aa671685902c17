//! Subresources beyond status: `scale` (deployments, replicasets, statefulsets,
//! replicationcontrollers), `pods/binding`, `pods/eviction` (disruption budgets honoured) and
//! `serviceaccounts/token` (TokenRequest).

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
            let old = obj.clone();
            obj["spec"]["replicas"] = json!(replicas);
            let gen = obj["metadata"]["generation"].as_i64().unwrap_or(0);
            obj["metadata"]["generation"] = json!(gen + 1);
            super::write::record_fields(call, Some(&old), &mut obj);
        }
        if call.query.dry_run {
            return json(StatusCode::OK, &scale_of(&obj));
        }
        let key = object::key(call.def, call.ns(), call.name());
        match call
            .reg
            .store
            .update(&key, to_stored(call.def, &obj), kv.mod_revision)
            .await
        {
            Ok(kv) => {
                obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
                return json(StatusCode::OK, &scale_of(&obj));
            }
            // Lost a race: read again. A resourceVersion the client gave then no longer matches
            // (409); a patch that gave none applies to the newer object, as upstream retries.
            Err(store::Error::Conflict { .. }) => continue,
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
    // As upstream's GuaranteedUpdate: a concurrent write (the scheduler's own status update,
    // say) makes the compare fail; read again and re-check rather than answer 409.
    for _ in 0..RETRIES {
        let (kv, mut pod) = match current(call).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        if let Err(r) = assignable(call, &binding, &pod) {
            return r;
        }
        pod["spec"]["nodeName"] = json!(node);
        for (k, v) in binding["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
        {
            pod["metadata"]["annotations"][k] = v.clone();
        }
        set_scheduled(&mut pod);
        if call.query.dry_run {
            return bound();
        }
        let key = object::key(call.def, call.ns(), call.name());
        match call
            .reg
            .store
            .update(&key, to_stored(call.def, &pod), kv.mod_revision)
            .await
        {
            Ok(_) => return bound(),
            Err(store::Error::Conflict { .. }) => continue,
            Err(e) => return store_error(call.def, call.name(), e),
        }
    }
    object::conflict(call.def, call.name())
}

/// The answer to a binding that took.
fn bound() -> Response {
    json(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// Refuses a binding for another pod (uid precondition), a pod being deleted, or one already
/// on a node, in upstream's words.
fn assignable(call: &Call<'_>, binding: &Value, pod: &Value) -> Result<(), Response> {
    if let Some(uid) = binding["metadata"]["uid"]
        .as_str()
        .filter(|u| !u.is_empty())
    {
        if pod["metadata"]["uid"].as_str() != Some(uid) {
            return Err(object::conflict(call.def, call.name()));
        }
    }
    let name = call.name();
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return Err(object::error(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"),
            name,
            call.def,
        ));
    }
    if let Some(existing) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(object::error(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{existing}\""),
            name,
            call.def,
        ));
    }
    Ok(())
}

/// Sets the pod's PodScheduled condition to True, as upstream's binding does.
fn set_scheduled(pod: &mut Value) {
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let Some(conds) = pod["status"]["conditions"].as_array_mut() else {
        return;
    };
    let now = object::now_rfc3339();
    match conds.iter_mut().find(|c| c["type"] == "PodScheduled") {
        Some(c) if c["status"] == "True" => {}
        Some(c) => {
            *c = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
        }
        None => conds.push(
            json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}),
        ),
    }
}

/// Whether a PodDisruptionBudget's selector selects the pod's labels.
fn pdb_selects(pdb: &Value, pod: &Value) -> bool {
    let sel = &pdb["spec"]["selector"];
    sel.is_object() && super::selector::label_selector_matches(sel, &pod["metadata"]["labels"])
}

/// `POST pods/NAME/eviction`: deletes the pod unless that would break its disruption budget.
pub async fn evict(call: &Call<'_>, body: &Bytes, content_type: &str) -> Response {
    let eviction = match parse_body(body, content_type) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(name) = eviction["metadata"]["name"].as_str() {
        if name != call.name() {
            return object::error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "name in URL does not match name in Eviction object".to_string(),
                call.name(),
                call.def,
            );
        }
    }
    let (_, pod) = match current(call).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(node) = caller_node(call) {
        if pod["spec"]["nodeName"] != node {
            return crate::apiserver::admission::forbidden(
                call.def,
                call.name(),
                &format!("node \"{node}\" can only evict pods with spec.nodeName set to itself"),
            );
        }
    }
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    // Pods that are not running (or already going) are evicted without asking a budget.
    let ignore_budgets = matches!(phase, "Succeeded" | "Failed" | "Pending")
        || pod["metadata"]["deletionTimestamp"].is_string();
    if !ignore_budgets {
        if let Err(r) = take_disruption(call, &pod).await {
            return r;
        }
    }
    let opts = match &eviction["deleteOptions"] {
        Value::Object(o) => Bytes::from(Value::Object(o.clone()).to_string()),
        _ => Bytes::new(),
    };
    let resp = super::delete::delete(call, &opts).await;
    if !resp.status().is_success() {
        return resp;
    }
    json(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// Spends one allowed disruption of the pod's budget (if it has one), as upstream does.
async fn take_disruption(call: &Call<'_>, pod: &Value) -> Result<(), Response> {
    let Some(pdbs) = crate::apiserver::catalog::find("policy", "v1", "poddisruptionbudgets") else {
        return Ok(());
    };
    let too_many = |message: String| {
        crate::apiserver::status::failure_with_details(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
            json!({"causes": [{"reason": "DisruptionBudget", "message": message}]}),
        )
    };
    for _ in 0..RETRIES {
        let page = call
            .reg
            .store
            .range(store::RangeRequest {
                prefix: object::prefix(pdbs, call.ns()),
                ..Default::default()
            })
            .await
            .map_err(|e| store_error(pdbs, "", e))?;
        let mut matching = Vec::new();
        for kv in &page.kvs {
            let pdb = to_wire(pdbs, kv)?;
            if pdb_selects(&pdb, pod) {
                matching.push((kv.clone(), pdb));
            }
        }
        let (kv, mut pdb) = match matching.len() {
            0 => return Ok(()),
            1 => matching.remove(0),
            _ => {
                return Err(crate::apiserver::status::failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ))
            }
        };
        let name = pdb["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let st = &pdb["status"];
        if st["observedGeneration"].as_i64().unwrap_or(0)
            < pdb["metadata"]["generation"].as_i64().unwrap_or(0)
        {
            return Err(too_many(format!(
                "The disruption budget {name} is still being processed by the server."
            )));
        }
        let allowed = st["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed <= 0 {
            return Err(too_many(format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                st["desiredHealthy"].as_i64().unwrap_or(0),
                st["currentHealthy"].as_i64().unwrap_or(0)
            )));
        }
        if call.query.dry_run {
            return Ok(());
        }
        pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
        pdb["status"]["disruptedPods"][call.name()] = json!(object::now_rfc3339());
        match call
            .reg
            .store
            .update(&kv.key, to_stored(pdbs, &pdb), kv.mod_revision)
            .await
        {
            Ok(_) => return Ok(()),
            Err(store::Error::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(pdbs, &name, e)),
        }
    }
    Err(object::conflict(call.def, call.name()))
}

/// `POST serviceaccounts/NAME/token`: a signed, expiring token for the service account.
/// The node a kubelet caller acts for (NodeRestriction on subresources).
fn caller_node<'a>(call: &'a Call<'_>) -> Option<&'a str> {
    call.user
        .as_ref()
        .and_then(crate::apiserver::auth::node::node_name)
}

pub async fn token(call: &Call<'_>, body: &Bytes, content_type: &str) -> Response {
    let req = match parse_body(body, content_type) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(signer) = call.reg.tokens.as_deref() else {
        return crate::apiserver::status::failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource (service account tokens are not enabled)",
        );
    };
    let (_, sa) = match current(call).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let spec = &req["spec"];
    let expiration = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    let invalid = |field: &str, problem: String| {
        crate::apiserver::validation::response(
            &TOKEN_REQUEST,
            call.name(),
            &[crate::apiserver::validation::FieldError {
                kind: crate::apiserver::validation::Kind::Invalid,
                field: field.into(),
                value: Some(expiration.to_string()),
                detail: problem,
            }],
        )
    };
    if expiration < 600 {
        return invalid(
            "spec.expirationSeconds",
            "may not specify a duration less than 10 minutes".into(),
        );
    }
    if expiration > 1 << 32 {
        return invalid(
            "spec.expirationSeconds",
            "may not specify a duration larger than 2^32 seconds".into(),
        );
    }
    let audiences: Vec<String> = match spec["audiences"].as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec![crate::apiserver::token::ISSUER.to_string()],
    };
    let bound = &spec["boundObjectRef"];
    let bound_ref = match bound["kind"].as_str() {
        None => None,
        Some(kind @ ("Pod" | "Secret" | "Node")) => {
            let plural = match kind {
                "Pod" => "pods",
                "Secret" => "secrets",
                _ => "nodes",
            };
            let Some(def) = crate::apiserver::catalog::find("", "v1", plural) else {
                return object::not_found(call.def, call.name());
            };
            let name = bound["name"].as_str().unwrap_or_default();
            let ns = (kind != "Node").then_some(call.ns()).flatten();
            let obj = match call.reg.store.get(&object::key(def, ns, name), 0).await {
                Ok(Some(kv)) => match to_wire(def, &kv) {
                    Ok(o) => o,
                    Err(r) => return r,
                },
                Ok(None) => return object::not_found(def, name),
                Err(e) => return store_error(def, name, e),
            };
            let uid = obj["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if bound["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty() && u != uid)
            {
                return object::conflict(def, name);
            }
            if let Some(node) = caller_node(call) {
                let why = if kind != "Pod" {
                    Some("node requested token not bound to a pod")
                } else if obj["spec"]["nodeName"] != node {
                    Some("node requested token bound to a pod scheduled on a different node")
                } else if obj["spec"]["serviceAccountName"] != call.name() {
                    Some("node requested token bound to a pod with a different service account")
                } else {
                    None
                };
                if let Some(why) = why {
                    return crate::apiserver::admission::forbidden(call.def, call.name(), why);
                }
            }
            Some((kind.to_lowercase(), name.to_string(), uid))
        }
        Some(other) => {
            return crate::apiserver::validation::response(
                &TOKEN_REQUEST,
                call.name(),
                &[crate::apiserver::validation::FieldError {
                    kind: crate::apiserver::validation::Kind::NotSupported,
                    field: "spec.boundObjectRef.kind".into(),
                    value: Some(format!("{other:?}")),
                    detail: "supported values: \"Pod\", \"Secret\", \"Node\"".into(),
                }],
            )
        }
    };
    if bound_ref.is_none() && caller_node(call).is_some() {
        return crate::apiserver::admission::forbidden(
            call.def,
            call.name(),
            "node requested token not bound to a pod",
        );
    }
    let now = object::epoch_now();
    let claims = crate::apiserver::token::Claims {
        namespace: call.ns().unwrap_or_default(),
        account: call.name(),
        account_uid: sa["metadata"]["uid"].as_str().unwrap_or_default(),
        audiences: audiences.clone(),
        issued: now,
        expires: now + expiration,
        bound: bound_ref
            .as_ref()
            .map(|(k, n, u)| (k.as_str(), n.as_str(), u.as_str())),
    };
    let token = match signer.sign(&claims.to_json()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "signing a service-account token");
            return crate::apiserver::status::failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "failed to sign the token",
            );
        }
    };
    let mut out_spec =
        json!({"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": null});
    if bound.is_object() {
        out_spec["boundObjectRef"] = bound.clone();
    }
    json(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": call.name(), "namespace": call.ns(), "creationTimestamp": null},
            "spec": out_spec,
            "status": {"token": token, "expirationTimestamp": object::rfc3339(now + expiration)},
        }),
    )
}

/// TokenRequest, for its Invalid answers.
static TOKEN_REQUEST: crate::apiserver::catalog::ResourceDef =
    crate::apiserver::catalog::ResourceDef {
        group: "authentication.k8s.io",
        version: "v1",
        kind: "TokenRequest",
        plural: "tokenrequests",
        namespaced: true,
        verbs: &[],
        subresources: &[],
    };
