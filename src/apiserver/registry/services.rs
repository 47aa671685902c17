//! What creating or updating a Service takes beyond storing it: a ClusterIP from the service
//! range and node ports for NodePort and LoadBalancer types, released again when the write fails.

use axum::response::Response;
use serde_json::{json, Value};

use super::object::{invalid, store_error};
use super::Call;
use crate::apiserver::catalog::ResourceDef;

/// Whether `def` is core/v1 Services.
pub(crate) fn is_service(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.plural == "services"
}

/// Gives a new Service its ClusterIP (the one asked for, or any free one). Returns the
/// address allocated, to release if the create fails.
pub(crate) async fn allocate_cluster_ip(
    call: &Call<'_>,
    name: &str,
    obj: &mut Value,
) -> Result<Option<String>, Response> {
    let Some(range) = call
        .reg
        .service_range
        .as_ref()
        .filter(|_| is_service(call.def))
    else {
        return Ok(None);
    };
    let spec = &mut obj["spec"];
    let requested = spec["clusterIP"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if spec["type"] == "ExternalName" {
        return Ok(None);
    }
    if requested.as_deref() == Some("None") {
        spec["clusterIPs"] = json!(["None"]);
        return Ok(None);
    }
    let ns = call.ns().unwrap_or("default");
    match crate::apiserver::ipalloc::allocate(
        call.reg.store.as_ref(),
        range,
        ns,
        name,
        requested.as_deref(),
    )
    .await
    {
        Ok(ip) => {
            spec["clusterIP"] = json!(ip);
            spec["clusterIPs"] = json!([ip]);
            spec["ipFamilies"] = json!(["IPv4"]);
            spec["ipFamilyPolicy"] = json!("SingleStack");
            Ok(Some(ip))
        }
        Err(crate::apiserver::ipalloc::AllocError::Store(e)) => Err(store_error(call.def, name, e)),
        Err(e) => Err(invalid(
            call.def,
            name,
            "spec.clusterIPs",
            &format!(
                "Invalid value: []string{{\"{}\"}}: {e}",
                requested.unwrap_or_default()
            ),
        )),
    }
}

/// Gives the ports of a NodePort or LoadBalancer Service their node ports: kept from `old`
/// where the port is the same, the one asked for, or any free one; strips them from other types.
/// Returns the ports newly reserved.
pub(crate) async fn assign_node_ports(
    call: &Call<'_>,
    name: &str,
    old: &Value,
    obj: &mut Value,
) -> Result<Vec<i64>, Response> {
    use crate::apiserver::portalloc;
    if !is_service(call.def) {
        return Ok(Vec::new());
    }
    let store = call.reg.store.as_ref();
    let owner = format!("{}/{name}", call.ns().unwrap_or("default"));
    let held = portalloc::ports_of(old);
    let wants = portalloc::wants_node_ports(obj);
    let mut reserved = Vec::new();
    let count = obj["spec"]["ports"].as_array().map_or(0, |p| p.len());
    for i in 0..count {
        let p = &mut obj["spec"]["ports"][i];
        if !wants {
            if let Some(m) = p.as_object_mut() {
                m.remove("nodePort");
            }
            continue;
        }
        let kept = old["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| {
                o["port"] == p["port"] && o["protocol"] == p["protocol"] && o["nodePort"].is_i64()
            });
        let result = match (p["nodePort"].as_i64(), kept) {
            (Some(n), _) if held.contains(&n) => continue,
            (None, Some(k)) => {
                p["nodePort"] = k["nodePort"].clone();
                continue;
            }
            (requested, _) => portalloc::allocate(store, &owner, requested).await,
        };
        match result {
            Ok(port) => {
                obj["spec"]["ports"][i]["nodePort"] = json!(port);
                reserved.push(port);
            }
            Err(e) => {
                for port in reserved {
                    portalloc::release(store, port).await;
                }
                return Err(match e {
                    portalloc::PortError::Store(se) => store_error(call.def, name, se),
                    other => invalid(
                        call.def,
                        name,
                        &format!("spec.ports[{i}].nodePort"),
                        &format!(
                            "Invalid value: {}: {other}",
                            obj["spec"]["ports"][i]["nodePort"]
                        ),
                    ),
                });
            }
        }
    }
    // Ports the service no longer holds go back to the range.
    let now = portalloc::ports_of(obj);
    for port in held.into_iter().filter(|p| !now.contains(p)) {
        portalloc::release(store, port).await;
    }
    Ok(reserved)
}
