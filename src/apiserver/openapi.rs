//! OpenAPI: `/openapi/v2` and `/openapi/v3` (index plus one document per group-version), from
//! the same upstream document the catalog is built from, and the schema walk behind
//! `fieldValidation` (unknown fields).
//!
//! What writes need (the definitions, without their descriptions: a quarter of their size,
//! for unknown fields and merge keys) is parsed on first use, not at start-up; the served
//! documents (several megabytes) only when a client first asks for one, so a server whose
//! clients never read OpenAPI does not hold them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::catalog;
use super::status;
use crate::parts::KUBERNETES_VERSION;

static SWAGGER: &[u8] = include_bytes!("../../api/swagger-v1.36.json");

/// The definitions writes read, and the served documents once asked for.
pub struct OpenApi {
    /// Upstream's definitions without descriptions.
    definitions: Map<String, Value>,
    /// `group/version/kind` -> definition name.
    by_gvk: BTreeMap<(String, String, String), String>,
    served: OnceLock<Option<Served>>,
}

/// The documents served to clients.
struct Served {
    v2_bytes: Vec<u8>,
    /// The served v2 document as protobuf, made on first request.
    v2_proto: OnceLock<Vec<u8>>,
    v3: BTreeMap<String, (String, Vec<u8>)>,
}

static DOC: OnceLock<Option<Arc<OpenApi>>> = OnceLock::new();

/// The OpenAPI documents (parsed once).
pub fn get() -> Option<Arc<OpenApi>> {
    DOC.get_or_init(|| match OpenApi::build() {
        Ok(doc) => Some(Arc::new(doc)),
        Err(e) => {
            tracing::error!(error = %e, "the embedded OpenAPI document does not parse");
            None
        }
    })
    .clone()
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/definitions/") {
                    *r = format!("#/components/schemas/{name}");
                }
            }
            m.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// In OpenAPI 3.0 the siblings of a `$ref` are ignored, so upstream wraps a reference that
/// carries its own description or default in `allOf`; so do we.
fn wrap_refs_with_siblings(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.len() > 1 {
                if let Some(r) = m.remove("$ref") {
                    m.insert("allOf".into(), json!([{"$ref": r}]));
                }
            }
            m.values_mut().for_each(wrap_refs_with_siblings);
        }
        Value::Array(a) => a.iter_mut().for_each(wrap_refs_with_siblings),
        _ => {}
    }
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                if let Some(name) = r.strip_prefix("#/definitions/") {
                    out.insert(name.to_string());
                }
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// A v2 parameter as a v3 parameter (`type` and friends move under `schema`).
fn v3_parameter(p: &Value) -> Value {
    let mut out = Map::new();
    let mut schema = Map::new();
    if let Some(obj) = p.as_object() {
        for (k, v) in obj {
            match k.as_str() {
                "name" | "in" | "description" | "required" => {
                    out.insert(k.clone(), v.clone());
                }
                "type" | "format" | "items" | "enum" | "default" | "uniqueItems" => {
                    schema.insert(k.clone(), v.clone());
                }
                _ => {}
            }
        }
    }
    out.insert("schema".into(), Value::Object(schema));
    Value::Object(out)
}

/// Removes the `description` of a schema and of the schemas inside it (not properties that
/// happen to be called `description`).
fn strip_descriptions(schema: &mut Value) {
    let Some(m) = schema.as_object_mut() else {
        return;
    };
    m.remove("description");
    for (k, v) in m.iter_mut() {
        match k.as_str() {
            "items" | "additionalProperties" => strip_descriptions(v),
            "properties" => v
                .as_object_mut()
                .into_iter()
                .flat_map(|p| p.values_mut())
                .for_each(strip_descriptions),
            "allOf" | "anyOf" | "oneOf" => v
                .as_array_mut()
                .into_iter()
                .flatten()
                .for_each(strip_descriptions),
            _ => {}
        }
    }
}

impl OpenApi {
    fn build() -> Result<OpenApi, serde_json::Error> {
        let mut v2: Value = serde_json::from_slice(SWAGGER)?;
        let mut definitions = match v2.get_mut("definitions").map(Value::take) {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let mut by_gvk = BTreeMap::new();
        for (name, def) in definitions.iter_mut() {
            for gvk in def["x-kubernetes-group-version-kind"]
                .as_array()
                .into_iter()
                .flatten()
            {
                by_gvk.insert(
                    (
                        gvk["group"].as_str().unwrap_or_default().to_string(),
                        gvk["version"].as_str().unwrap_or_default().to_string(),
                        gvk["kind"].as_str().unwrap_or_default().to_string(),
                    ),
                    name.clone(),
                );
            }
            strip_descriptions(def);
        }
        Ok(OpenApi {
            definitions,
            by_gvk,
            served: OnceLock::new(),
        })
    }

    /// The served documents, made on first request.
    fn served(&self) -> Option<&Served> {
        self.served
            .get_or_init(|| match Served::build() {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "building the served OpenAPI documents");
                    None
                }
            })
            .as_ref()
    }
}

impl Served {
    fn build() -> Result<Served, serde_json::Error> {
        let mut v2: Value = serde_json::from_slice(SWAGGER)?;
        v2["info"]["version"] = json!(KUBERNETES_VERSION);
        let v2_bytes = serde_json::to_vec(&v2)?;
        let defs = v2["definitions"].as_object().cloned().unwrap_or_default();
        let params = v2["parameters"].as_object().cloned().unwrap_or_default();
        let resolve_param = |p: &Value| -> Value {
            match p["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/parameters/"))
            {
                Some(name) => params.get(name).cloned().unwrap_or(Value::Null),
                None => p.clone(),
            }
        };
        // Group the paths by group-version.
        let mut served: Vec<String> = vec!["api/v1".into()];
        for g in catalog::groups() {
            for v in catalog::versions(g) {
                served.push(format!("apis/{g}/{v}"));
            }
        }
        let mut v3 = BTreeMap::new();
        let paths = v2["paths"].as_object().cloned().unwrap_or_default();
        for gv in served {
            let prefix = format!("/{gv}/");
            let mut out_paths = Map::new();
            let mut refs = BTreeSet::new();
            for (path, item) in paths.iter().filter(|(p, _)| p.starts_with(&prefix)) {
                let mut out_item = Map::new();
                for (method, op) in item.as_object().into_iter().flatten() {
                    if method == "parameters" {
                        let ps: Vec<Value> = op
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|p| v3_parameter(&resolve_param(p)))
                            .collect();
                        out_item.insert("parameters".into(), Value::Array(ps));
                        continue;
                    }
                    let mut o = op.clone();
                    let mut parameters = Vec::new();
                    for p in op["parameters"].as_array().into_iter().flatten() {
                        let p = resolve_param(p);
                        if p["in"] == "body" {
                            o["requestBody"] = json!({
                                "content": {"*/*": {"schema": p["schema"].clone()}},
                                "required": p["required"].as_bool().unwrap_or(false),
                            });
                        } else {
                            parameters.push(v3_parameter(&p));
                        }
                    }
                    if let Some(m) = o.as_object_mut() {
                        m.remove("consumes");
                        m.remove("produces");
                        m.remove("schemes");
                        if parameters.is_empty() {
                            m.remove("parameters");
                        } else {
                            m.insert("parameters".into(), Value::Array(parameters));
                        }
                    }
                    if let Some(resps) = o["responses"].as_object_mut() {
                        for r in resps.values_mut() {
                            if let Some(schema) = r.as_object_mut().and_then(|m| m.remove("schema"))
                            {
                                r["content"] = json!({"application/json": {"schema": schema}});
                            }
                        }
                    }
                    collect_refs(&o, &mut refs);
                    out_item.insert(method.clone(), o);
                }
                out_paths.insert(path.clone(), Value::Object(out_item));
            }
            // Every definition the paths reach.
            let mut schemas = Map::new();
            let mut todo: Vec<String> = refs.into_iter().collect();
            while let Some(name) = todo.pop() {
                if schemas.contains_key(&name) {
                    continue;
                }
                let Some(def) = defs.get(&name) else { continue };
                let mut more = BTreeSet::new();
                collect_refs(def, &mut more);
                todo.extend(more.into_iter().filter(|n| !schemas.contains_key(n)));
                schemas.insert(name, def.clone());
            }
            let mut schemas = Value::Object(schemas);
            wrap_refs_with_siblings(&mut schemas);
            let mut doc = json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
                "paths": out_paths,
                "components": {"schemas": schemas},
            });
            rewrite_refs(&mut doc);
            let bytes = serde_json::to_vec(&doc)?;
            let hash = format!("{:08X}{:08X}", crc32fast::hash(&bytes), bytes.len());
            v3.insert(gv, (hash, bytes));
        }
        Ok(Served {
            v2_bytes,
            v2_proto: OnceLock::new(),
            v3,
        })
    }
}

impl OpenApi {
    /// The upstream definitions, for strategic merge patches.
    pub fn schemas(&self) -> super::patch::Schemas<'_> {
        super::patch::Schemas {
            definitions: &self.definitions,
        }
    }

    /// A reference to the schema of a kind, if upstream defines one.
    pub fn kind_schema(&self, group: &str, version: &str, kind: &str) -> Option<Value> {
        self.by_gvk
            .get(&(group.into(), version.into(), kind.into()))
            .map(|name| json!({"$ref": format!("#/definitions/{name}")}))
    }

    /// Removes the fields of `obj` the schema of its kind does not know, as upstream's decoder
    /// drops them; returns their dotted paths.
    pub fn prune_unknown(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        obj: &mut Value,
    ) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(name) = self
            .by_gvk
            .get(&(group.into(), version.into(), kind.into()))
        {
            self.walk(
                &json!({"$ref": format!("#/definitions/{name}")}),
                obj,
                "",
                &mut out,
                0,
            );
        }
        out
    }

    fn walk(
        &self,
        schema: &Value,
        value: &mut Value,
        path: &str,
        out: &mut Vec<String>,
        depth: usize,
    ) {
        if depth > 64 {
            return;
        }
        let schema = match schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/definitions/"))
        {
            Some(name) => self.definitions.get(name).unwrap_or(&Value::Null),
            None => schema,
        };
        if schema["x-kubernetes-preserve-unknown-fields"] == true {
            return;
        }
        let join = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        match value {
            Value::Object(m) => {
                let props = schema["properties"].as_object();
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                if props.is_none() && additional.is_none() {
                    return;
                }
                let mut unknown = Vec::new();
                for (k, v) in m.iter_mut() {
                    match props.and_then(|p| p.get(k)) {
                        Some(s) => self.walk(s, v, &join(k), out, depth + 1),
                        None => match additional {
                            Some(a) => self.walk(a, v, &join(k), out, depth + 1),
                            None => unknown.push(k.clone()),
                        },
                    }
                }
                for k in unknown {
                    m.remove(&k);
                    out.push(join(&k));
                }
            }
            Value::Array(items) => {
                if let Some(s) = schema.get("items") {
                    for (i, v) in items.iter_mut().enumerate() {
                        self.walk(s, v, &format!("{path}[{i}]"), out, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
}

fn accepts_json(headers: &HeaderMap) -> bool {
    match headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(a) => a.contains("json") || a.contains("*/*"),
    }
}

fn json_bytes(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        bytes,
    )
        .into_response()
}

fn unavailable() -> Response {
    status::failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "the OpenAPI document is unavailable",
    )
    .into_response()
}

/// `GET /openapi/v2` (JSON only: protobuf is answered with 406, so clients ask for JSON).
pub async fn v2(headers: HeaderMap) -> Response {
    // What kube-openapi answers with (the `@` form clients ask for is not a valid media type).
    const PROTO: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
    let wants_proto = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/com.github.proto-openapi.spec.v2"));
    if wants_proto {
        let Some(doc) = get() else {
            return unavailable();
        };
        let Some(doc) = doc.served() else {
            return unavailable();
        };
        let bytes = doc
            .v2_proto
            .get_or_init(|| {
                let served: Value = serde_json::from_slice(&doc.v2_bytes).unwrap_or(Value::Null);
                super::openapi_pb::document(&served)
            })
            .clone();
        return ([(axum::http::header::CONTENT_TYPE, PROTO)], bytes).into_response();
    }
    if !accepts_json(&headers) {
        return status::failure(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            "only application/json is served for /openapi/v2",
        );
    }
    match get().as_deref().and_then(OpenApi::served) {
        Some(doc) => json_bytes(doc.v2_bytes.clone()),
        None => unavailable(),
    }
}

/// `GET /openapi/v3`: the index of per-group-version documents.
pub async fn v3_index() -> Response {
    let Some(doc) = get() else {
        return unavailable();
    };
    let Some(doc) = doc.served() else {
        return unavailable();
    };
    let paths: Map<String, Value> = doc
        .v3
        .iter()
        .map(|(gv, (hash, _))| {
            (
                gv.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")}),
            )
        })
        .collect();
    json_bytes(json!({"paths": paths}).to_string().into_bytes())
}

/// `GET /openapi/v3/{api/v1 | apis/GROUP/VERSION}`.
pub async fn v3_doc(Path(gv): Path<String>) -> Response {
    let Some(doc) = get() else {
        return unavailable();
    };
    let Some(doc) = doc.served() else {
        return unavailable();
    };
    match doc.v3.get(gv.trim_matches('/')) {
        Some((_, bytes)) => json_bytes(bytes.clone()),
        None => status::not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_documents_resolve_refs_and_move_bodies() {
        let doc = get().expect("document");
        let doc = doc.served().expect("served documents");
        let (_, core) = doc.v3.get("api/v1").expect("api/v1");
        let core: Value = serde_json::from_slice(core).expect("json");
        let post = &core["paths"]["/api/v1/namespaces/{namespace}/configmaps"]["post"];
        assert_eq!(
            post["requestBody"]["content"]["*/*"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.ConfigMap"
        );
        assert!(post["parameters"]
            .as_array()
            .expect("params")
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["schema"]["type"] == "string"));
        assert!(
            core["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]
                .is_object()
        );
        assert!(doc.v3.contains_key("apis/apps/v1"));
    }

    #[test]
    fn unknown_fields_are_found_by_schema() {
        let doc = get().expect("document");
        let mut obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "Always"}]}}},
        });
        let unknown = doc.prune_unknown("apps", "v1", "Deployment", &mut obj);
        assert_eq!(
            unknown,
            vec![
                "metadata.bogus",
                "spec.template.spec.containers[0].imagePullPolicyy"
            ]
        );
        assert!(obj["metadata"].get("bogus").is_none());
        assert_eq!(obj["metadata"]["labels"]["a"], "b");
        // Fields called `description` are kept; only the schemas' own descriptions go.
        let pc = &doc.definitions["io.k8s.api.scheduling.v1.PriorityClass"];
        assert!(pc.get("description").is_none());
        assert_eq!(pc["properties"]["description"]["type"], "string");
        let mut obj = json!({"metadata": {"name": "p"}, "value": 5, "description": "d"});
        assert!(doc
            .prune_unknown("scheduling.k8s.io", "v1", "PriorityClass", &mut obj)
            .is_empty());
    }
}
