//! `PATCH` of one object: JSON patch, JSON merge patch, strategic merge patch, and server-side
//! apply (which creates the object when it does not exist yet). Each is a change handed to
//! [`read_modify_write`], like an update's.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::object::{self, not_found, store_error};
use super::write::{create_object, key, read_modify_write};
use super::Call;
use crate::apiserver::status;

/// `PATCH` an object: JSON patch, JSON merge patch or strategic merge patch.
pub async fn patch(call: &Call<'_>, body: &Bytes, content_type: &str) -> Response {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if media == "application/apply-patch+yaml" {
        return apply_patch(call, body).await;
    }
    let patcher = match Patcher::new(
        body,
        content_type,
        (call.def.group, call.def.version, call.def.kind),
    ) {
        Ok(p) => p,
        Err(r) => return r,
    };
    read_modify_write(call, |old| patcher.apply(old), true, &[]).await
}

/// `PATCH` with `application/apply-patch+yaml`: server-side apply, creating the object when it
/// does not exist yet.
async fn apply_patch(call: &Call<'_>, body: &Bytes) -> Response {
    let bad = |msg: &str| status::failure(StatusCode::BAD_REQUEST, "BadRequest", msg);
    if call
        .query
        .field_manager
        .as_deref()
        .is_none_or(str::is_empty)
    {
        return bad("PATCH /apply requests require a fieldManager: the fieldManager parameter is required for apply requests");
    }
    let mut config: Value = match serde_yaml_ng::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad("error decoding YAML: the applied configuration must be an object"),
        Err(e) => return bad(&format!("error decoding YAML: {e}")),
    };
    crate::apiserver::apply::strip(&mut config);
    if config["metadata"]["name"].as_str() != Some(call.name()) {
        return bad(&format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            config["metadata"]["name"].as_str().unwrap_or_default(),
            call.name()
        ));
    }
    let Some(doc) = crate::apiserver::openapi::get() else {
        return status::failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the OpenAPI schema is unavailable",
        );
    };
    let schema = doc.kind_schema(call.def.group, call.def.version, call.def.kind);
    let now = object::now_rfc3339();
    let api_version = call.def.group_version();
    let writer = crate::apiserver::apply::Writer {
        manager: &call.manager,
        api_version: &api_version,
        subresource: call.info.subresource.as_deref(),
        now: &now,
    };
    let run = |live: Option<&Value>| {
        crate::apiserver::apply::apply(
            &doc.schemas(),
            schema.as_ref(),
            live,
            &config,
            call.query.force,
            &writer,
        )
        .map_err(|c| {
            let mut details =
                json!({"name": call.name(), "kind": call.def.plural, "causes": c.causes()});
            if !call.def.group.is_empty() {
                details["group"] = json!(call.def.group);
            }
            status::failure_with_details(StatusCode::CONFLICT, "Conflict", &c.message(), details)
        })
    };
    match call.reg.store.get(&key(call), 0).await {
        Ok(None) if call.info.subresource.is_none() => match run(None) {
            Ok(obj) => create_object(call, obj, true, Vec::new()).await,
            Err(r) => r,
        },
        Ok(None) => not_found(call.def, call.name()),
        Ok(Some(_)) => read_modify_write(call, |old| run(Some(old)), false, &[]).await,
        Err(e) => store_error(call.def, call.name(), e),
    }
}

/// A parsed patch of one of the three types, ready to apply to any number of objects.
pub(crate) enum Patcher {
    Json(json_patch::Patch),
    Merge(Value),
    Strategic(
        Value,
        Option<Value>,
        std::sync::Arc<crate::apiserver::openapi::OpenApi>,
    ),
}

impl Patcher {
    /// Parses `body` as the patch `content_type` names, for objects of kind `(group, version, kind)`.
    pub(crate) fn new(
        body: &Bytes,
        content_type: &str,
        gvk: (&str, &str, &str),
    ) -> Result<Patcher, Response> {
        let bad = |msg: String| status::failure(StatusCode::BAD_REQUEST, "BadRequest", &msg);
        let ct = content_type.split(';').next().unwrap_or_default().trim();
        let patch: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("error decoding patch: {e}")))?;
        match ct {
            "application/json-patch+json" => serde_json::from_value(patch)
                .map(Patcher::Json)
                .map_err(|e| bad(format!("error decoding JSON patch: {e}"))),
            "application/merge-patch+json" => Ok(Patcher::Merge(patch)),
            "application/strategic-merge-patch+json" => {
                let doc = crate::apiserver::openapi::get().ok_or_else(|| {
                    status::failure(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "the OpenAPI schema is unavailable")
                })?;
                let schema = doc.kind_schema(gvk.0, gvk.1, gvk.2);
                Ok(Patcher::Strategic(patch, schema, doc))
            }
            other => Err(status::failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml ({other})"),
            )),
        }
    }

    /// The patched copy of `old`.
    pub(crate) fn apply(&self, old: &Value) -> Result<Value, Response> {
        let invalid = |e: String| status::failure(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e);
        match self {
            Patcher::Json(ops) => {
                let mut doc = old.clone();
                json_patch::patch(&mut doc, ops).map_err(|e| {
                    invalid(format!(
                        "the server rejected our request due to an error in our request: {e}"
                    ))
                })?;
                Ok(doc)
            }
            Patcher::Merge(patch) => {
                let mut doc = old.clone();
                json_patch::merge(&mut doc, patch);
                Ok(doc)
            }
            Patcher::Strategic(patch, schema, doc) => {
                crate::apiserver::patch::apply(&doc.schemas(), schema.as_ref(), old, patch)
                    .map_err(|e| invalid(e.to_string()))
            }
        }
    }
}
