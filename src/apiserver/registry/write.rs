//! Get, create and update of one object (patches: `patches.rs`, deletes: `delete.rs`).

use crate::apiserver::admission::{self, Operation};
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::object::{self, invalid, not_found, store_error, to_stored, to_wire};
use super::services::{allocate_cluster_ip, assign_node_ports, is_service};
use super::{json, parse_body, Call};
use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::status;
use crate::store::{self, KeyValue};

/// How many times an unconditional update retries a lost race.
const RETRIES: usize = 5;

/// A new namespace object as upstream creates it.
pub fn new_namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": object::new_uid(),
            "creationTimestamp": object::now_rfc3339(),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

pub(crate) fn key(call: &Call<'_>) -> String {
    object::key(call.def, call.ns(), call.name())
}

pub(crate) async fn current(call: &Call<'_>) -> Result<KeyValue, Response> {
    match call.reg.store.get(&key(call), 0).await {
        Ok(Some(kv)) => Ok(kv),
        Ok(None) => Err(not_found(call.def, call.name())),
        Err(e) => Err(store_error(call.def, call.name(), e)),
    }
}

/// The watch cache's copy of the call's object, if it holds one (it may lag the store).
async fn cached(call: &Call<'_>) -> Option<KeyValue> {
    let key = key(call);
    call.reg
        .cache
        .get(&key, crate::store::watch_cache::ReadFrom::Any)
        .await
        .ok()
        .flatten()
}

/// `GET` one object (or its status).
pub async fn get(call: &Call<'_>) -> Response {
    match current(call).await.and_then(|kv| to_wire(call.def, &kv)) {
        Ok(obj) => match call.table {
            Some(crate::apiserver::table::METADATA) => {
                json(StatusCode::OK, &crate::apiserver::table::partial(&obj))
            }
            Some(v) => {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"].clone()});
                json(
                    StatusCode::OK,
                    &call.table_of(v, std::slice::from_ref(&obj), meta),
                )
            }
            None => json(StatusCode::OK, &obj),
        },
        Err(r) => r,
    }
}

/// Checks apiVersion and kind of a request body against the endpoint.
fn check_type(def: &ResourceDef, obj: &mut Value) -> Result<(), Response> {
    let gv = def.group_version();
    let bad = |msg: String| status::failure(StatusCode::BAD_REQUEST, "BadRequest", &msg);
    match obj["apiVersion"].as_str() {
        None | Some("") => obj["apiVersion"] = json!(gv),
        Some(v) if v == gv => {}
        Some(v) => {
            return Err(bad(format!(
                "the API version in the data ({v}) does not match the expected API version ({gv})"
            )))
        }
    }
    match obj["kind"].as_str() {
        None | Some("") => obj["kind"] = json!(def.kind),
        Some(k) if k == def.kind => {}
        Some(k) => {
            return Err(bad(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )))
        }
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    Ok(())
}

/// Sets and checks the namespace of a body against the URL.
fn check_namespace(call: &Call<'_>, obj: &mut Value) -> Result<(), Response> {
    let Some(ns) = call.ns() else {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        return Ok(());
    };
    match obj["metadata"]["namespace"].as_str() {
        None | Some("") => obj["metadata"]["namespace"] = json!(ns),
        Some(n) if n == ns => {}
        Some(_) => return Err(status::failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
    Ok(())
}

/// Refuses objects in namespaces that are missing or terminating.
async fn check_namespace_open(call: &Call<'_>, name: &str) -> Result<(), Response> {
    let Some(ns) = call.ns() else { return Ok(()) };
    let Some(nsdef) = crate::apiserver::catalog::find("", "v1", "namespaces") else {
        return Ok(());
    };
    match call.reg.store.get(&object::key(nsdef, None, ns), 0).await {
        Ok(Some(kv)) => {
            let obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            if obj["metadata"]["deletionTimestamp"].is_string()
                || obj["status"]["phase"] == "Terminating"
            {
                return Err(status::failure_with_details(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    &format!("{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", object::qualified(call.def), name),
                    json!({"name": name, "kind": call.def.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
                ));
            }
            Ok(())
        }
        Ok(None) => Err(not_found(nsdef, ns)),
        Err(e) => Err(store_error(nsdef, ns, e)),
    }
}

/// Drops unknown fields as upstream's decoder does: `fieldValidation=Strict` refuses them,
/// `Warn` (the default) reports them in Warning headers, `Ignore` says nothing.
fn check_fields(
    call: &Call<'_>,
    obj: &mut Value,
    duplicates: &[String],
) -> Result<Vec<String>, Response> {
    let Some(doc) = crate::apiserver::openapi::get() else {
        return Ok(Vec::new());
    };
    let unknown: Vec<String> = doc
        .prune_unknown(call.def.group, call.def.version, call.def.kind, obj)
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .chain(
            duplicates
                .iter()
                .map(|f| format!("duplicate field \"{f}\"")),
        )
        .collect();
    if unknown.is_empty() {
        return Ok(unknown);
    }
    match call.query.field_validation.as_deref().unwrap_or("Warn") {
        "Strict" => Err(status::failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                unknown.join(", "),
                kind = call.def.kind,
                version = call.def.version,
            ),
        )),
        "Ignore" => Ok(Vec::new()),
        _ => Ok(unknown),
    }
}

/// Adds `Warning: 299 - "..."` headers.
fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

/// `POST` a new object.
pub async fn create(call: &Call<'_>, body: &Bytes, content_type: &str) -> Response {
    match parse_body(body, content_type) {
        Ok(obj) => create_object(call, obj, false, duplicates(body, content_type)).await,
        Err(r) => r,
    }
}

/// Keys given twice in a JSON body (YAML bodies with duplicate keys fail to parse).
fn duplicates(body: &Bytes, content_type: &str) -> Vec<String> {
    if content_type.contains("yaml") {
        return Vec::new();
    }
    super::rawjson::duplicate_fields(body)
}

/// Records a write by `call`'s manager in `new`'s managedFields (`old` is None on create).
pub(crate) fn record_fields(call: &Call<'_>, old: Option<&Value>, new: &mut Value) {
    let Some(doc) = crate::apiserver::openapi::get() else {
        return;
    };
    let schema = doc.kind_schema(call.def.group, call.def.version, call.def.kind);
    let now = object::now_rfc3339();
    let api_version = call.def.group_version();
    crate::apiserver::apply::record_update(
        &doc.schemas(),
        schema.as_ref(),
        old,
        new,
        &crate::apiserver::apply::Writer {
            manager: &call.manager,
            api_version: &api_version,
            subresource: call.info.subresource.as_deref(),
            now: &now,
        },
    );
}

/// Creates `obj`; `applied` when server-side apply made it (its managedFields are set).
pub(super) async fn create_object(
    call: &Call<'_>,
    mut obj: Value,
    applied: bool,
    duplicates: Vec<String>,
) -> Response {
    if let Err(r) = check_type(call.def, &mut obj).and_then(|_| check_namespace(call, &mut obj)) {
        return r;
    }
    let warnings = match check_fields(call, &mut obj, &duplicates) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let name = match obj["metadata"]["name"].as_str() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match obj["metadata"]["generateName"].as_str() {
            Some(g) if !g.is_empty() => format!("{g}{}", object::name_suffix()),
            _ => {
                return invalid(
                    call.def,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                )
            }
        },
    };
    if let Err(r) = check_namespace_open(call, &name).await {
        return r;
    }
    let meta = &mut obj["metadata"];
    meta["name"] = json!(name);
    meta["uid"] = json!(object::new_uid());
    meta["creationTimestamp"] = json!(object::now_rfc3339());
    if let Some(m) = meta.as_object_mut() {
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
    }
    if crate::apiserver::strategy::tracks_generation(call.def) {
        obj["metadata"]["generation"] = json!(1);
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("generation");
    }
    crate::apiserver::strategy::apply_defaults(call.def, &mut obj);
    crate::apiserver::strategy::prepare_create(call.def, &mut obj);
    let attrs = admission_attributes(call, &name, Operation::Create);
    if let Err(r) = admission::admit(&attrs, &mut obj, None).await {
        return r;
    }
    object::drop_empty_metadata(&mut obj);
    let errs = crate::apiserver::validation::validate_create(call.def, &obj);
    if !errs.is_empty() {
        return crate::apiserver::validation::response(call.def, &name, &errs);
    }
    if let Err(r) = check_escalation(call, &obj, None).await {
        return r;
    }
    let mut warnings = warnings;
    match admission::validate(&attrs, &obj, None).await {
        Ok(w) => warnings.extend(w),
        Err(r) => return r,
    }
    if call.def.plural == "namespaces" && call.def.group.is_empty() {
        let fresh = new_namespace(&name);
        obj["spec"] = fresh["spec"].clone();
        obj["status"] = fresh["status"].clone();
        let labels = obj["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        obj["metadata"]["labels"] = json!(labels);
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
    } else if let Some(status) = crate::apiserver::strategy::initial_status(call.def, &obj) {
        obj["status"] = status;
    }
    if !applied {
        crate::apiserver::apply::strip(&mut obj);
        record_fields(call, None, &mut obj);
    }
    if call.query.dry_run {
        return with_warnings(json(StatusCode::CREATED, &obj), &warnings);
    }
    let allocated = match allocate_cluster_ip(call, &name, &mut obj).await {
        Ok(ip) => ip,
        Err(r) => return r,
    };
    let ports = match assign_node_ports(call, &name, &Value::Null, &mut obj).await {
        Ok(p) => p,
        Err(r) => {
            if let Some(ip) = &allocated {
                crate::apiserver::ipalloc::release(call.reg.store.as_ref(), ip).await;
            }
            return r;
        }
    };
    let key = object::key(call.def, call.ns(), &name);
    match call.reg.store.create(&key, to_stored(call.def, &obj)).await {
        Ok(kv) => {
            // The object as stored, without reading it back: its resourceVersion is the new
            // revision.
            obj["apiVersion"] = json!(call.def.group_version());
            obj["kind"] = json!(call.def.kind);
            obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
            with_warnings(json(StatusCode::CREATED, &obj), &warnings)
        }
        Err(e) => {
            if let Some(ip) = allocated {
                crate::apiserver::ipalloc::release(call.reg.store.as_ref(), &ip).await;
            }
            for port in ports {
                crate::apiserver::portalloc::release(call.reg.store.as_ref(), port).await;
            }
            store_error(call.def, &name, e)
        }
    }
}

/// Merges `new` onto `old` for an update: immutable metadata kept, status or spec kept apart.
fn prepare_update(call: &Call<'_>, old: &Value, mut new: Value) -> Value {
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old["metadata"].get(field) {
            Some(v) => new["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    if call.info.subresource.as_deref() == Some("finalize") {
        // Only a namespace's spec.finalizers change through /finalize.
        let mut merged = old.clone();
        merged["spec"]["finalizers"] = new["spec"]["finalizers"].clone();
        return merged;
    }
    if call.info.subresource.as_deref() == Some("ephemeralcontainers") {
        // Only spec.ephemeralContainers changes through /ephemeralcontainers (a new generation).
        let mut merged = old.clone();
        merged["spec"]["ephemeralContainers"] = new["spec"]["ephemeralContainers"].clone();
        if merged["spec"]["ephemeralContainers"].is_null() {
            if let Some(s) = merged["spec"].as_object_mut() {
                s.remove("ephemeralContainers");
            }
        }
        new = merged;
    }
    if call.info.subresource.as_deref() == Some("resize") {
        // Only the containers' resources and resize policies change through /resize.
        new = crate::apiserver::validation::resize_merge(old, &new);
    }
    let status_call = call.info.subresource.as_deref() == Some("status");
    if status_call {
        // Only the status changes through /status.
        let mut merged = old.clone();
        merged["status"] = new["status"].clone();
        return merged;
    }
    if call.def.has_subresource("status") {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    let gen = old["metadata"]["generation"].as_i64();
    if let Some(g) = gen {
        let bumped = if old.get("spec") != new.get("spec") {
            g + 1
        } else {
            g
        };
        new["metadata"]["generation"] = json!(bumped);
    } else if let Some(m) = new["metadata"].as_object_mut() {
        m.remove("generation");
    }
    new
}

/// Writes `obj` over the stored object at `expected`; deletes it instead when it is being
/// deleted and its last finalizer is gone.
async fn store_update(
    call: &Call<'_>,
    mut obj: Value,
    expected: i64,
) -> Result<Value, store::Error> {
    let key = key(call);
    // A namespace also waits for its spec.finalizers (the namespace controller's `kubernetes`).
    let finalizers_done = obj["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|f| f.is_empty())
        && (call.def.plural != "namespaces"
            || obj["spec"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty()));
    if obj["metadata"]["deletionTimestamp"].is_string() && finalizers_done {
        let deleted = call.reg.store.delete(&key, Some(expected)).await?;
        obj["metadata"]["resourceVersion"] = json!(deleted.revision.to_string());
        return Ok(obj);
    }
    let kv = call
        .reg
        .store
        .update(&key, to_stored(call.def, &obj), expected)
        .await?;
    obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(obj)
}

/// Once an object is being deleted, finalizers may only be removed.
fn check_finalizers(call: &Call<'_>, old: &Value, new: &Value) -> Result<(), Response> {
    if old["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let list = |v: &Value| -> Vec<String> {
        v["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect()
    };
    let before = list(old);
    let added: Vec<String> = list(new)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    let go_list = added
        .iter()
        .map(|f| format!("{f:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(invalid(
        call.def,
        call.name(),
        "metadata.finalizers",
        &format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{go_list}}}"),
    ))
}

/// Whether `new` is `old` apart from the resourceVersion the client sent.
fn unchanged(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        v
    };
    strip(old) == strip(new)
}

/// Applies `change` to the current object and stores the result, retrying lost races when the
/// caller gave no resourceVersion.
pub(super) async fn read_modify_write(
    call: &Call<'_>,
    change: impl Fn(&Value) -> Result<Value, Response>,
    record: bool,
    duplicates: &[String],
) -> Response {
    for attempt in 0..RETRIES {
        // The first attempt starts from the watch cache's copy, as upstream's GuaranteedUpdate
        // starts from the cacher's: the write is guarded by the copy's revision. Anything but a
        // write worked out from that copy (a refusal, a no-op) may be stale: it is worked out
        // again from the store's. Services and dry runs read the store: an attempt may
        // allocate node ports, and a dry run writes nothing that would catch a stale copy.
        let cached = match attempt == 0 && !is_service(call.def) && !call.query.dry_run {
            true => cached(call).await,
            false => None,
        };
        let from_cache = cached.is_some();
        let kv = match cached {
            Some(kv) => kv,
            None => match current(call).await {
                Ok(kv) => kv,
                Err(r) => return r,
            },
        };
        match write_once(call, &change, record, duplicates, &kv).await {
            Outcome::Lost => continue,
            Outcome::Refused(_) | Outcome::Unchanged(_) if from_cache => continue,
            Outcome::Stored(r) | Outcome::Refused(r) | Outcome::Unchanged(r) => return r,
        }
    }
    object::conflict(call.def, call.name())
}

/// How one attempt of [`read_modify_write`] ended.
enum Outcome {
    /// Written (or a dry run's result).
    Stored(Response),
    /// Nothing to write: the object as it is.
    Unchanged(Response),
    /// Refused: the answer.
    Refused(Response),
    /// Another write came first.
    Lost,
}

/// One attempt of [`read_modify_write`] on `kv`.
async fn write_once(
    call: &Call<'_>,
    change: &impl Fn(&Value) -> Result<Value, Response>,
    record: bool,
    duplicates: &[String],
    kv: &KeyValue,
) -> Outcome {
    let old = match to_wire(call.def, kv) {
        Ok(o) => o,
        Err(r) => return Outcome::Refused(r),
    };
    let mut new = match change(&old) {
        Ok(n) => n,
        Err(r) => return Outcome::Refused(r),
    };
    if let Err(r) = check_type(call.def, &mut new).and_then(|_| check_namespace(call, &mut new)) {
        return Outcome::Refused(r);
    }
    let warnings = match check_fields(call, &mut new, duplicates) {
        Ok(w) => w,
        Err(r) => return Outcome::Refused(r),
    };
    if new["metadata"]["name"].as_str() != Some(call.name()) {
        return Outcome::Refused(status::failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                new["metadata"]["name"].as_str().unwrap_or_default(),
                call.name()
            ),
        ));
    }
    let wanted = new["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string);
    if let Some(rv) = &wanted {
        if !rv.is_empty() && rv.parse::<i64>().ok() != Some(kv.mod_revision) {
            return Outcome::Refused(object::conflict(call.def, call.name()));
        }
    }
    crate::apiserver::strategy::apply_defaults(call.def, &mut new);
    if is_service(call.def) {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            let (o, n) = (&old["spec"][field], &new["spec"][field]);
            if n.is_null() || n == "" {
                new["spec"][field] = o.clone();
            } else if field == "clusterIP" && !o.is_null() && o != n {
                return Outcome::Refused(invalid(
                    call.def,
                    call.name(),
                    "spec.clusterIPs[0]",
                    "Invalid value: may not change once set",
                ));
            }
        }
    }
    if is_service(call.def) && call.info.subresource.is_none() && !call.query.dry_run {
        if let Err(r) = assign_node_ports(call, call.name(), &old, &mut new).await {
            return Outcome::Refused(r);
        }
    }
    let mut new = prepare_update(call, &old, new);
    let attrs = admission_attributes(call, call.name(), Operation::Update);
    if let Err(r) = admission::admit(&attrs, &mut new, Some(&old)).await {
        return Outcome::Refused(r);
    }
    if record {
        // managedFields are the server's to keep: the old ones, with this write added.
        new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
        record_fields(call, Some(&old), &mut new);
    }
    object::drop_empty_metadata(&mut new);
    if let Err(r) = check_finalizers(call, &old, &new) {
        return Outcome::Refused(r);
    }
    if call.info.subresource.is_none() {
        let errs = crate::apiserver::validation::validate_update(call.def, &old, &new);
        if !errs.is_empty() {
            return Outcome::Refused(crate::apiserver::validation::response(
                call.def,
                call.name(),
                &errs,
            ));
        }
        if let Err(r) = check_escalation(call, &new, Some(&old)).await {
            return Outcome::Refused(r);
        }
    } else if call.info.subresource.as_deref() == Some("ephemeralcontainers") {
        let errs = crate::apiserver::validation::validate_ephemeral(&old, &new);
        if !errs.is_empty() {
            return Outcome::Refused(crate::apiserver::validation::response(
                call.def,
                call.name(),
                &errs,
            ));
        }
    } else if call.info.subresource.as_deref() == Some("resize") {
        let errs = crate::apiserver::validation::validate_resize(&old, &new);
        if !errs.is_empty() {
            return Outcome::Refused(crate::apiserver::validation::response(
                call.def,
                call.name(),
                &errs,
            ));
        }
    }
    let mut warnings = warnings;
    match admission::validate(&attrs, &new, Some(&old)).await {
        Ok(w) => warnings.extend(w),
        Err(r) => return Outcome::Refused(r),
    }
    if unchanged(&old, &new) && !call.reg.store.needs_rewrite(&kv.key).await {
        // As upstream, an update that changes nothing is not written: no new
        // resourceVersion, no watch event.
        return Outcome::Unchanged(with_warnings(json(StatusCode::OK, &old), &warnings));
    }
    if call.query.dry_run {
        return Outcome::Stored(with_warnings(json(StatusCode::OK, &new), &warnings));
    }
    match store_update(call, new, kv.mod_revision).await {
        Ok(obj) => Outcome::Stored(with_warnings(json(StatusCode::OK, &obj), &warnings)),
        // Lost a race: read again. A resourceVersion the client asked for (in a PUT body or
        // a patch) no longer matches then and ends in 409; a patch that named none, or a PUT
        // without one, is applied to the newer object, as upstream's GuaranteedUpdate does.
        Err(store::Error::Conflict { .. }) => Outcome::Lost,
        Err(e) => Outcome::Refused(store_error(call.def, call.name(), e)),
    }
}

/// What admission sees of a write.
pub(crate) fn admission_attributes<'a>(
    call: &'a Call<'_>,
    name: &'a str,
    op: Operation,
) -> admission::Attributes<'a> {
    admission::Attributes {
        reg: call.reg,
        def: call.def,
        subresource: call.info.subresource.as_deref(),
        namespace: call.ns(),
        name,
        user: call.user.as_ref(),
        op,
    }
}

/// Refuses RBAC objects that grant more than their writer holds.
async fn check_escalation(
    call: &Call<'_>,
    new: &Value,
    old: Option<&Value>,
) -> Result<(), Response> {
    match &call.user {
        Some(user) if call.def.group == "rbac.authorization.k8s.io" => {
            call.reg
                .rbac
                .check_escalation(user, call.def.plural, call.ns(), new, old)
                .await
        }
        _ => Ok(()),
    }
}

/// `PUT` an object (or its status).
pub async fn update(call: &Call<'_>, body: &Bytes, content_type: &str) -> Response {
    let obj = match parse_body(body, content_type) {
        Ok(o) => o,
        Err(r) => return r,
    };
    read_modify_write(
        call,
        |_| Ok(obj.clone()),
        true,
        &duplicates(body, content_type),
    )
    .await
}
