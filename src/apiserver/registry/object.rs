//! Object bookkeeping shared by every kind: storage keys, names, uids, timestamps, the
//! resourceVersion on the wire, and error Status bodies.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::status;
use crate::store::{self, KeyValue};

/// Where upstream keeps a resource in etcd when it differs from its plural name.
fn storage_resource(def: &ResourceDef) -> String {
    match (def.group, def.plural) {
        ("", "nodes") => "minions".into(),
        ("", "services") => "services/specs".into(),
        ("", "replicationcontrollers") => "controllers".into(),
        ("networking.k8s.io", "ingresses") => "ingress".into(),
        ("apiextensions.k8s.io", p) | ("apiregistration.k8s.io", p) => format!("{}/{p}", def.group),
        (_, p) => p.into(),
    }
}

/// The key of one object.
pub fn key(def: &ResourceDef, namespace: Option<&str>, name: &str) -> String {
    store::keys::object_key(&storage_resource(def), namespace, name)
}

/// The prefix of a resource's objects (in one namespace, or all).
pub fn prefix(def: &ResourceDef, namespace: Option<&str>) -> String {
    store::keys::list_prefix(&storage_resource(def), namespace)
}

/// Every stored object of a resource (all namespaces), decoded; undecodable ones are skipped.
pub async fn stored_all(
    store: &dyn store::Store,
    def: &ResourceDef,
) -> Result<Vec<Value>, store::Error> {
    let page = store
        .range(store::RangeRequest {
            prefix: prefix(def, None),
            ..Default::default()
        })
        .await?;
    Ok(page
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

/// `namespace` and `name` of an object.
pub fn namespace_name(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().unwrap_or_default().to_string(),
    )
}

/// The current time as upstream writes timestamps (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    rfc3339(epoch_now())
}

/// Seconds since the epoch, now.
pub fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Drops empty label, annotation, finalizer, owner and managedFields collections, which
/// upstream's JSON leaves out (`omitempty`): a patch that removes the last label leaves none.
pub fn drop_empty_metadata(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, v| {
            let empty = v.is_null()
                || v.as_object().is_some_and(|m| m.is_empty())
                || v.as_array().is_some_and(|a| a.is_empty());
            !(empty
                && matches!(
                    k.as_str(),
                    "labels" | "annotations" | "finalizers" | "ownerReferences" | "managedFields"
                ))
        });
    }
}

/// A random v4 uid.
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The 5-character suffix upstream appends to `generateName`.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

pub use crate::names::name_problem;

/// The stored object as the wire shows it: resourceVersion from the store, apiVersion and kind.
pub fn to_wire(def: &ResourceDef, kv: &KeyValue) -> Result<Value, Response> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        tracing::error!(key = %kv.key, error = %e, "stored object is not JSON");
        status::failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "stored object is corrupt",
        )
    })?;
    crate::apiserver::convert::from_storage(def, &mut obj);
    obj["apiVersion"] = json!(def.group_version());
    obj["kind"] = json!(def.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(obj)
}

/// The bytes stored for an object: without its resourceVersion, as upstream stores it.
pub fn to_stored(def: &ResourceDef, obj: &Value) -> bytes::Bytes {
    if crate::apiserver::convert::stored_as_is(def) {
        return bytes::Bytes::from(json_bytes(&WithoutVersion(obj)));
    }
    let mut o = obj.clone();
    crate::apiserver::convert::to_storage(def, &mut o);
    bytes::Bytes::from(json_bytes(&WithoutVersion(&o)))
}

/// JSON bytes of a value that cannot fail to serialize (string keys only).
pub(crate) fn json_bytes(v: &impl serde::Serialize) -> Vec<u8> {
    match serde_json::to_vec(v) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "object does not serialize");
            b"{}".to_vec()
        }
    }
}

/// An object serialized without its `metadata.resourceVersion`, without copying it.
struct WithoutVersion<'a>(&'a Value);

impl serde::Serialize for WithoutVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(top) = self.0.as_object() else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(Some(top.len()))?;
        for (k, v) in top {
            match v.as_object() {
                Some(meta) if k == "metadata" => {
                    map.serialize_entry(k, &Skipping(meta, "resourceVersion"))?
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

/// A map serialized without one key.
struct Skipping<'a>(&'a serde_json::Map<String, Value>, &'static str);

impl serde::Serialize for Skipping<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().filter(|(k, _)| *k != self.1))
    }
}

fn details(name: &str, def: &ResourceDef) -> Value {
    let mut d = json!({"name": name, "kind": def.plural});
    if !def.group.is_empty() {
        d["group"] = json!(def.group);
    }
    d
}

/// A Status error with details naming the object.
pub fn error(
    code: StatusCode,
    reason: &str,
    message: String,
    name: &str,
    def: &ResourceDef,
) -> Response {
    status::failure_with_details(code, reason, &message, details(name, def))
}

/// `resource "name"`, or `resource.group "name"`, as upstream quotes objects in messages.
pub fn qualified(def: &ResourceDef) -> String {
    if def.group.is_empty() {
        def.plural.to_string()
    } else {
        format!("{}.{}", def.plural, def.group)
    }
}

/// 404 for a missing object.
pub fn not_found(def: &ResourceDef, name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", qualified(def)),
        name,
        def,
    )
}

/// 409 for an update against a stale resourceVersion.
pub fn conflict(def: &ResourceDef, name: &str) -> Response {
    error(
        StatusCode::CONFLICT,
        "Conflict",
        format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", qualified(def)),
        name,
        def,
    )
}

/// 422 for an invalid object: `field: problem`.
pub fn invalid(def: &ResourceDef, name: &str, field: &str, problem: &str) -> Response {
    let mut d = details(name, def);
    // Invalid names the kind, not the resource, as upstream's NewInvalid does.
    d["kind"] = json!(def.kind);
    d["causes"] = json!([{"reason": "FieldValueInvalid", "message": problem, "field": field}]);
    status::failure_with_details(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {field}: {problem}", def.kind),
        d,
    )
}

/// The Status for a store failure on `name`.
pub fn store_error(def: &ResourceDef, name: &str, e: store::Error) -> Response {
    match e {
        store::Error::NotFound { .. } => not_found(def, name),
        store::Error::AlreadyExists { .. } => error(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(def)),
            name,
            def,
        ),
        store::Error::Conflict { .. } => conflict(def, name),
        store::Error::TooLarge { .. } => status::failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "etcdserver: request is too large",
        ),
        store::Error::Compacted {
            requested,
            compacted,
        } => status::failure(
            StatusCode::GONE,
            "Expired",
            &format!("too old resource version: {requested} ({compacted})"),
        ),
        store::Error::FutureRevision { requested, .. } => status::failure(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            &format!("Too large resource version: {requested}"),
        ),
        store::Error::Unavailable { reason } => status::failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            &reason,
        ),
        other => {
            tracing::error!(error = %other, "store failure");
            status::failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "storage failure",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn generated_name_suffixes_have_five_letters() {
        assert_eq!(name_suffix().len(), 5);
    }
}
