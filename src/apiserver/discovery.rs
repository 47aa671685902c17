//! Discovery: `/api`, `/api/v1`, `/apis`, `/apis/GROUP`, `/apis/GROUP/VERSION`, and aggregated
//! discovery (`apidiscovery.k8s.io` v2 and v2beta1) on `/api` and `/apis`, all from the catalog.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::catalog::{self, ResourceDef};
use super::status;

/// What discovery needs besides the catalog.
#[derive(Clone)]
pub struct Discovery {
    /// `HOST:PORT` clients reach this server at.
    pub server_address: String,
}

/// The aggregated discovery version the client asked for, if any.
fn aggregated(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    let wants = |v: &str| {
        accept.split(',').any(|part| {
            let params: Vec<&str> = part.split(';').map(str::trim).collect();
            params.contains(&"g=apidiscovery.k8s.io")
                && params.contains(&format!("v={v}").as_str())
                && params.contains(&"as=APIGroupDiscoveryList")
        })
    };
    ["v2", "v2beta1"].into_iter().find(|v| wants(v))
}

fn json_response(body: Value, content_type: &str) -> Response {
    let mut resp = body.to_string().into_response();
    let h = resp.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

fn legacy(body: Value) -> Response {
    json_response(body, "application/json")
}

fn aggregated_response(version: &str, groups: &[&str]) -> Response {
    let items: Vec<Value> = groups.iter().map(|g| group_discovery(g)).collect();
    json_response(
        json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": format!("apidiscovery.k8s.io/{version}"),
            "metadata": {},
            "items": items,
        }),
        &format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"),
    )
}

/// One group in aggregated discovery.
fn group_discovery(group: &str) -> Value {
    let versions: Vec<Value> = catalog::versions(group)
        .into_iter()
        .map(|v| {
            let resources: Vec<Value> = catalog::resources(group, v)
                .map(|r| {
                    let subs: Vec<Value> = r
                        .subresources
                        .iter()
                        .map(|s| {
                            json!({
                                "subresource": s.name,
                                "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                                "verbs": s.verbs,
                            })
                        })
                        .collect();
                    let mut res = json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular(),
                        "verbs": r.verbs,
                    });
                    if !r.short_names().is_empty() {
                        res["shortNames"] = json!(r.short_names());
                    }
                    if !r.categories().is_empty() {
                        res["categories"] = json!(r.categories());
                    }
                    if !subs.is_empty() {
                        res["subresources"] = json!(subs);
                    }
                    res
                })
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": versions,
    })
}

/// The legacy `APIResourceList` entries of one resource and its subresources.
fn api_resources(r: &ResourceDef) -> Vec<Value> {
    let mut main = json!({
        "name": r.plural,
        "singularName": r.singular(),
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs,
    });
    if !r.short_names().is_empty() {
        main["shortNames"] = json!(r.short_names());
    }
    if !r.categories().is_empty() {
        main["categories"] = json!(r.categories());
    }
    let mut out = vec![main];
    for s in r.subresources {
        let mut sub = json!({
            "name": format!("{}/{}", r.plural, s.name),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": s.kind,
            "verbs": s.verbs,
        });
        if s.group != r.group || s.version != r.version {
            sub["group"] = json!(s.group);
            sub["version"] = json!(s.version);
        }
        out.push(sub);
    }
    out
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = catalog::resources(group, version)
        .flat_map(api_resources)
        .collect();
    if resources.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": catalog::group_version(group, version),
        "resources": resources,
    }))
}

fn api_group(group: &str) -> Value {
    let versions: Vec<Value> = catalog::versions(group)
        .into_iter()
        .map(|v| json!({"groupVersion": catalog::group_version(group, v), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": preferred,
    })
}

/// `GET /api`.
pub async fn core(State(d): State<Discovery>, headers: HeaderMap) -> Response {
    if let Some(v) = aggregated(&headers) {
        return aggregated_response(v, &[""]);
    }
    legacy(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": d.server_address}],
    }))
}

/// `GET /api/v1`.
pub async fn core_v1() -> Response {
    resource_list("", "v1")
        .map(legacy)
        .unwrap_or_else(status::not_found)
}

/// `GET /apis`.
pub async fn groups(headers: HeaderMap) -> Response {
    let groups = catalog::groups();
    if let Some(v) = aggregated(&headers) {
        return aggregated_response(v, &groups);
    }
    let list: Vec<Value> = groups.iter().map(|g| api_group(g)).collect();
    legacy(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list}))
}

/// `GET /apis/GROUP`.
pub async fn group(Path(group): Path<String>) -> Response {
    if group.is_empty() || catalog::versions(&group).is_empty() {
        return status::not_found();
    }
    let mut g = api_group(&group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    legacy(g)
}

/// `GET /apis/GROUP/VERSION`.
pub async fn group_version(Path((group, version)): Path<(String, String)>) -> Response {
    if group.is_empty() {
        return status::not_found();
    }
    resource_list(&group, &version)
        .map(legacy)
        .unwrap_or_else(status::not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn aggregated_discovery_is_negotiated_like_kubectl_asks() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated(&accept(kubectl)), Some("v2"));
        assert_eq!(
            aggregated(&accept(
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            )),
            Some("v2beta1")
        );
        assert_eq!(aggregated(&accept("application/json")), None);
    }

    #[test]
    fn legacy_lists_name_subresources_with_their_group() {
        let list = resource_list("apps", "v1").expect("apps/v1");
        let scale = list["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .expect("deployments/scale");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        assert!(resource_list("apps", "v9").is_none());
    }
}
