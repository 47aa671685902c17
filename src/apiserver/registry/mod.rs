//! The generic registry: one REST handler for every built-in resource.
//!
//! A request is parsed into a [`request::RequestInfo`], looked up in the catalog, and served
//! from the store (writes, exact reads) or the watch cache (lists, watches). Objects are handled
//! as JSON; what differs per kind (defaults, validation, status handling) belongs in strategy
//! tables, of which only the common part exists so far: names, uid, timestamps, generation,
//! resourceVersion, finalizers, status kept apart from the main resource.
// Failures here are finished HTTP responses, built once per failed request and returned at once;
// boxing them would only add an allocation.
#![allow(clippy::result_large_err)]

mod delete;
mod list;
mod metrics;
pub(crate) mod object;
mod patches;
mod pick;
pub(crate) mod proxy;
mod rawjson;
pub(crate) mod request;
pub(crate) mod selector;
mod services;
mod subresource;
mod websocket;
pub(crate) mod write;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::catalog::{self, ResourceDef};
use super::status;
use crate::store::watch_cache::WatchCache;
use crate::store::Store;

pub use request::RequestInfo;

/// Largest request body accepted, as kube-apiserver's 3 MiB.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The namespaces that exist from the start.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Shared state of the registry.
#[derive(Clone)]
pub struct Registry {
    pub store: Arc<dyn Store>,
    pub cache: WatchCache,
    /// Where Service ClusterIPs come from.
    pub service_range: Option<crate::apiserver::ipalloc::ServiceRange>,
    /// Signs service-account tokens (`serviceaccounts/NAME/token`).
    pub tokens: Option<Arc<crate::apiserver::token::TokenSigner>>,
    /// The authorizer, for escalation checks on RBAC writes.
    pub rbac: crate::apiserver::auth::rbac::Rbac,
    /// The admission plugins' configuration (`--admission-control-config-file`).
    pub admission: Arc<crate::apiserver::admission::AdmissionConfig>,
    /// The usage `metrics.k8s.io` serves.
    pub metrics: crate::resource_metrics::Sources,
    /// Reaches kubelets, for the subresources they serve (`pods/log`).
    pub kubelets: Option<Arc<crate::apiserver::kubelet_client::KubeletClient>>,
}

/// One request, resolved against the catalog.
pub(crate) struct Call<'a> {
    pub reg: &'a Registry,
    pub def: &'static ResourceDef,
    pub info: RequestInfo,
    pub query: request::Query,
    /// The Table version asked for, if the client wants a Table.
    pub table: Option<&'static str>,
    /// The field manager of a write: `fieldManager`, else the User-Agent's product name.
    pub manager: String,
    /// Who is asking (after impersonation).
    pub user: Option<crate::apiserver::http::User>,
}

impl Call<'_> {
    /// Renders objects (with apiVersion and kind) as the Table the client asked for.
    fn table_of(&self, version: &str, objects: &[Value], list_meta: Value) -> Value {
        crate::apiserver::table::table(
            self.def,
            version,
            objects,
            list_meta,
            self.query.include_object.as_deref().unwrap_or("Metadata"),
        )
    }

    fn ns(&self) -> Option<&str> {
        self.info.namespace.as_deref()
    }
    fn name(&self) -> &str {
        self.info.name.as_deref().unwrap_or_default()
    }
}

/// JSON with the given status.
pub(crate) fn json(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        object::json_bytes(body),
    )
        .into_response()
}

fn method_not_allowed(info: &RequestInfo) -> Response {
    status::failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!(
            "the server does not allow this method on the requested resource ({} {})",
            info.verb, info.resource
        ),
    )
}

/// Parses a request body as JSON or YAML into an object.
pub(crate) fn parse_body(body: &Bytes, content_type: &str) -> Result<Value, Response> {
    let bad = |msg: String| status::failure(StatusCode::BAD_REQUEST, "BadRequest", &msg);
    let value: Value = if content_type.contains("yaml") {
        serde_yaml_ng::from_slice(body).map_err(|e| {
            bad(format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| bad(format!("the body of the request could not be decoded: {e}")))?
    };
    if !value.is_object() {
        return Err(bad("the body of the request must be an object".into()));
    }
    Ok(value)
}

/// A request's body, at most [`MAX_BODY`] bytes; a larger one is answered 413 as upstream does.
pub async fn read_body(req: Request) -> Result<Bytes, Response> {
    axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|_| {
            status::failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "the request body is too large",
            )
        })
}

/// Serves every request under `/api/v1` and `/apis/GROUP/VERSION` that discovery does not.
pub async fn handle(State(reg): State<Registry>, req: Request) -> Response {
    let query = request::parse_query(req.uri().query());
    let user = req
        .extensions()
        .get::<crate::apiserver::http::Caller>()
        .and_then(|c| c.0.clone());
    let Some(info) = request::parse(req.method(), req.uri().path(), query.watch) else {
        return status::not_found();
    };
    let Some(def) = catalog::find(&info.group, &info.version, &info.resource) else {
        return status::not_found();
    };
    // Scope: namespaced resources may be addressed across namespaces only to list and watch.
    if !def.namespaced && info.namespace.is_some() {
        return status::not_found();
    }
    if def.namespaced && info.namespace.is_none() && !matches!(info.verb, "list" | "watch") {
        return status::not_found();
    }
    let verbs: &[&str] = match &info.subresource {
        None => def.verbs,
        Some(sub) => match def.subresources.iter().find(|s| s.name == sub) {
            Some(s) => s.verbs,
            None => return status::not_found(),
        },
    };
    if !verbs.contains(&info.verb) {
        return method_not_allowed(&info);
    }
    if def.group.is_empty()
        && def.plural == "pods"
        && info.subresource.as_deref() == Some("log")
        && info.verb == "get"
    {
        let ns = info.namespace.clone().unwrap_or_default();
        let name = info.name.clone().unwrap_or_default();
        return proxy::pod_log(&reg, &ns, &name, req).await;
    }
    if def.group.is_empty() && def.plural == "nodes" && info.subresource.as_deref() == Some("proxy")
    {
        let name = info.name.clone().unwrap_or_default();
        return proxy::node_proxy(&reg, &name, req).await;
    }
    if def.group.is_empty() && def.plural == "pods" {
        if let Some(sub @ ("exec" | "attach" | "portforward")) = info.subresource.as_deref() {
            let ns = info.namespace.clone().unwrap_or_default();
            let name = info.name.clone().unwrap_or_default();
            return proxy::pod_stream(&reg, &ns, &name, sub, req).await;
        }
    }
    if let Some(sub) = &info.subresource {
        if !matches!(
            sub.as_str(),
            "status"
                | "scale"
                | "binding"
                | "eviction"
                | "token"
                | "finalize"
                | "ephemeralcontainers"
                | "resize"
        ) {
            return status::failure(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                &format!("the {}/{sub} subresource is not served yet", def.plural),
            );
        }
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let table = crate::apiserver::table::wants_table(accept);
    // A Table only exists for reads of the resource itself (and its status).
    let table_possible = matches!(info.verb, "get" | "list" | "watch")
        && matches!(info.subresource.as_deref(), None | Some("status"));
    if !crate::apiserver::table::accepts_plain(accept) && (table.is_none() || !table_possible) {
        return status::failure(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        );
    }
    let table = table.filter(|_| table_possible);
    let manager = match &query.field_manager {
        Some(m) if !m.is_empty() => m.clone(),
        _ => req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown")
            .chars()
            .take(128)
            .collect(),
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    // JSON, YAML and protobuf bodies. CBOR gets a 415, on which client-go switches to JSON.
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let writes = matches!(
        info.verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    );
    if writes && media.contains("cbor") {
        return status::failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf ({media})"),
        );
    }
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // A protobuf body becomes the JSON upstream would have written for it.
    let (body, content_type) =
        if media == crate::apiserver::protobuf::MEDIA_TYPE && !body.is_empty() {
            let api_version = match def.group {
                "" => def.version.to_string(),
                g => format!("{g}/{}", def.version),
            };
            match crate::apiserver::protobuf::to_json(&body, Some((&api_version, def.kind))) {
                Ok(v) => (Bytes::from(v.to_string()), "application/json".to_string()),
                Err(e) => {
                    return status::failure(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("the body of the request could not be decoded: {e}"),
                    )
                }
            }
        } else {
            (body, content_type)
        };
    let call = Call {
        reg: &reg,
        def,
        info,
        query,
        table,
        manager,
        user,
    };
    let mut resp = dispatch(call, body, content_type).await;
    if let Some(w) = deprecation(def) {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("299 - \"{w}\"")) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

/// Upstream's deprecation warning for an API that is still served.
fn deprecation(def: &ResourceDef) -> Option<&'static str> {
    match (def.group, def.version, def.plural) {
        ("", "v1", "endpoints") => {
            Some("v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice")
        }
        ("", "v1", "componentstatuses") => Some("v1 ComponentStatus is deprecated in v1.19+"),
        _ => None,
    }
}

async fn dispatch(call: Call<'_>, body: Bytes, content_type: String) -> Response {
    if call.def.group == "metrics.k8s.io" {
        return metrics::serve(&call).await;
    }
    match (call.info.subresource.as_deref(), call.info.verb) {
        (Some("scale"), "get") => return subresource::get_scale(&call).await,
        (Some("scale"), "update") => {
            return match parse_body(&body, &content_type) {
                Ok(wanted) => subresource::update_scale(&call, |_| Ok(wanted.clone())).await,
                Err(r) => r,
            };
        }
        (Some("scale"), "patch") => {
            return match patches::Patcher::new(&body, &content_type, ("autoscaling", "v1", "Scale"))
            {
                Ok(p) => subresource::update_scale(&call, |scale| p.apply(scale)).await,
                Err(r) => r,
            };
        }
        (Some("binding"), "create") => return subresource::bind(&call, &body, &content_type).await,
        (Some("eviction"), "create") => {
            return subresource::evict(&call, &body, &content_type).await
        }
        (Some("token"), "create") => return subresource::token(&call, &body, &content_type).await,
        _ => {}
    }
    match call.info.verb {
        "get" => write::get(&call).await,
        "list" => list::list(&call).await,
        "watch" => list::watch(&call).await,
        "create" => write::create(&call, &body, &content_type).await,
        "update" => write::update(&call, &body, &content_type).await,
        "patch" => patches::patch(&call, &body, &content_type).await,
        "delete" => delete::delete(&call, &body).await,
        "deletecollection" => list::delete_collection(&call, &body).await,
        _ => method_not_allowed(&call.info),
    }
}

/// Creates the system namespaces, the `kubernetes` Service, the system priority classes,
/// (with `local_storage`) the default `local-path` StorageClass and (with `runtime_classes`)
/// a RuntimeClass for each OCI runtime besides runc that a k1s kubelet can offer, that do not
/// exist yet.
pub async fn bootstrap(
    store: &dyn Store,
    range: &crate::apiserver::ipalloc::ServiceRange,
    api_port: u16,
    local_storage: bool,
    runtime_classes: bool,
) -> Result<(), crate::apiserver::ApiError> {
    let ignore_exists = |r: Result<crate::store::KeyValue, crate::store::Error>| match r {
        Ok(_) | Err(crate::store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    };
    if let Some(def) = catalog::find("", "v1", "namespaces") {
        for ns in SYSTEM_NAMESPACES {
            let obj = write::new_namespace(ns);
            ignore_exists(
                store
                    .create(&object::key(def, None, ns), object::to_stored(def, &obj))
                    .await,
            )?;
        }
    }
    if let Some(def) = catalog::find("", "v1", "services") {
        let key = object::key(def, Some("default"), "kubernetes");
        if store.get(&key, 0).await?.is_none() {
            let ip = range.first().to_string();
            let svc = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kubernetes", "namespace": "default", "uid": object::new_uid(),
                    "creationTimestamp": object::now_rfc3339(),
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                    "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                    "internalTrafficPolicy": "Cluster", "sessionAffinity": "None",
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}],
                },
                "status": {"loadBalancer": {}},
            });
            ignore_exists(store.create(&key, object::to_stored(def, &svc)).await)?;
        }
    }
    if let Some(def) =
        catalog::find("storage.k8s.io", "v1", "storageclasses").filter(|_| local_storage)
    {
        // As k3s ships it: the default class, served by the built-in local-path provisioner.
        let sc = serde_json::json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "local-path", "uid": object::new_uid(), "creationTimestamp": object::now_rfc3339(),
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": crate::apiserver::LOCAL_PATH_PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        });
        ignore_exists(
            store
                .create(
                    &object::key(def, None, "local-path"),
                    object::to_stored(def, &sc),
                )
                .await,
        )?;
    }
    if let Some(def) =
        catalog::find("node.k8s.io", "v1", "runtimeclasses").filter(|_| runtime_classes)
    {
        // As k3s's runtimes manifest: a class per runtime, named as its handler. A pod of a
        // class its node lacks fails its sandbox there with the runtime's own message.
        for name in RUNTIME_CLASSES {
            let rc = serde_json::json!({
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {
                    "name": name, "uid": object::new_uid(), "creationTimestamp": object::now_rfc3339(),
                    "labels": {"app.kubernetes.io/managed-by": "k1s"},
                },
                "handler": name,
            });
            ignore_exists(
                store
                    .create(&object::key(def, None, name), object::to_stored(def, &rc))
                    .await,
            )?;
        }
    }
    if let Some(def) = catalog::find("scheduling.k8s.io", "v1", "priorityclasses") {
        for (name, value, description) in SYSTEM_PRIORITY_CLASSES {
            let pc = serde_json::json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name, "uid": object::new_uid(), "creationTimestamp": object::now_rfc3339()},
                "value": value,
                "description": description,
                "preemptionPolicy": "PreemptLowerPriority",
            });
            ignore_exists(
                store
                    .create(&object::key(def, None, name), object::to_stored(def, &pc))
                    .await,
            )?;
        }
    }
    Ok(())
}

/// The RuntimeClasses created at start: the handlers a k1s-supervised containerd offers besides
/// runc when their runtime is installed (kept in step with the kubelet's `OTHER_RUNTIMES`).
pub const RUNTIME_CLASSES: [&str; 2] = ["crun", "youki"];

/// The priority classes upstream creates at start.
const SYSTEM_PRIORITY_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_past_the_limit_is_answered_413() {
        let req = |n: usize| {
            axum::http::Request::post("/api/v1/namespaces/default/configmaps")
                .body(axum::body::Body::from(vec![b' '; n]))
                .unwrap_or_default()
        };
        let body = read_body(req(MAX_BODY)).await.map(|b| b.len());
        assert_eq!(body.ok(), Some(MAX_BODY));
        let Err(resp) = read_body(req(MAX_BODY + 1)).await else {
            panic!("a body past the limit was read");
        };
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let raw = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let status: Value = serde_json::from_slice(&raw).unwrap_or_default();
        assert_eq!(status["reason"], "RequestEntityTooLarge");
        assert_eq!(status["code"], 413);
    }
}
