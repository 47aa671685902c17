//! `metrics.k8s.io/v1beta1`: NodeMetrics and PodMetrics, as metrics-server serves them, from the
//! usage the kubelets of this process report ([`crate::resource_metrics`]). Objects carry the
//! labels of their node or pod, so label selectors (`kubectl top pods -l`, the HPA) work; a node
//! or pod without a sample is absent, as upstream.

use std::time::SystemTime;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::object::{self, not_found};
use super::selector::Selector;
use super::{json, Call};
use crate::apiserver::catalog;
use crate::apiserver::status;
use crate::resource_metrics::{format_cpu, format_memory, NodeUsage};
use crate::store::watch_cache::ReadFrom;

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    object::rfc3339(secs)
}

fn window(n: &NodeUsage) -> String {
    format!("{}s", n.window.as_secs_f64())
}

/// `GET` of `nodes` or `pods` in `metrics.k8s.io`.
pub async fn serve(call: &Call<'_>) -> Response {
    let selector = match call.query.label_selector.as_deref() {
        Some(s) => match Selector::parse_labels(s) {
            Ok(sel) => Some(sel),
            Err(e) => return status::failure(StatusCode::BAD_REQUEST, "BadRequest", &e.0),
        },
        None => None,
    };
    let samples = call.reg.metrics.samples();
    let mut items: Vec<Value> = Vec::new();
    let node_def = catalog::find("", "v1", "nodes");
    let pod_def = catalog::find("", "v1", "pods");
    match call.def.plural {
        "nodes" => {
            for n in &samples {
                if call.info.name.as_deref().is_some_and(|want| want != n.node) {
                    continue;
                }
                let labels = match node_def {
                    Some(def) => labels_of(call, &object::key(def, None, &n.node)).await,
                    None => None,
                };
                let Some(labels) = labels else { continue };
                items.push(json!({
                    "kind": "NodeMetrics",
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "metadata": {"name": n.node, "creationTimestamp": object::now_rfc3339(), "labels": labels},
                    "timestamp": rfc3339(n.timestamp),
                    "window": window(n),
                    "usage": {"cpu": format_cpu(n.cpu_nanocores), "memory": format_memory(n.memory_bytes)},
                }));
            }
        }
        _ => {
            for n in &samples {
                for p in &n.pods {
                    if call.ns().is_some_and(|ns| ns != p.namespace)
                        || call.info.name.as_deref().is_some_and(|want| want != p.name)
                    {
                        continue;
                    }
                    let labels = match pod_def {
                        Some(def) => {
                            labels_of(call, &object::key(def, Some(&p.namespace), &p.name)).await
                        }
                        None => None,
                    };
                    let Some(labels) = labels else { continue };
                    let containers: Vec<Value> = p
                        .containers
                        .iter()
                        .map(|c| {
                            json!({
                                "name": c.name,
                                "usage": {"cpu": format_cpu(c.cpu_nanocores), "memory": format_memory(c.memory_bytes)},
                            })
                        })
                        .collect();
                    items.push(json!({
                        "kind": "PodMetrics",
                        "apiVersion": "metrics.k8s.io/v1beta1",
                        "metadata": {
                            "name": p.name, "namespace": p.namespace,
                            "creationTimestamp": object::now_rfc3339(), "labels": labels,
                        },
                        "timestamp": rfc3339(n.timestamp),
                        "window": window(n),
                        "containers": containers,
                    }));
                }
            }
        }
    }
    if let Some(sel) = &selector {
        items.retain(|o| sel.matches_labels(o));
    }
    items.sort_by(|a, b| {
        let key = |o: &Value| {
            (
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    if call.info.name.is_some() {
        return match items.into_iter().next() {
            Some(obj) => match call.table {
                Some(v) => json(
                    StatusCode::OK,
                    &call.table_of(v, std::slice::from_ref(&obj), json!({})),
                ),
                None => json(StatusCode::OK, &obj),
            },
            None => not_found(call.def, call.name()),
        };
    }
    match call.table {
        Some(v) => json(StatusCode::OK, &call.table_of(v, &items, json!({}))),
        None => json(
            StatusCode::OK,
            &json!({
                "kind": format!("{}List", call.def.kind),
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {},
                "items": items,
            }),
        ),
    }
}

/// The labels of the stored object at `key` (an empty map when it has none); None when absent.
async fn labels_of(call: &Call<'_>, key: &str) -> Option<Value> {
    let kv = call.reg.cache.get(key, ReadFrom::Any).await.ok()??;
    let obj: Value = serde_json::from_slice(&kv.value).ok()?;
    Some(match &obj["metadata"]["labels"] {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    })
}
