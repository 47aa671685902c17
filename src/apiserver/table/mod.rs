//! Server-side printing: `meta.k8s.io/v1` Tables with upstream's columns per kind, for
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` (what `kubectl get` asks for).
//!
//! Each kind's columns are a small table of (name, type, priority, cell function); kinds without
//! one get upstream's default columns, Name and Created At.

use serde_json::{json, Value};

use crate::apiserver::catalog::ResourceDef;

mod more;

/// One column: header, OpenAPI type and format, priority (1 = only with `-o wide`), cell.
struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    priority: u8,
    cell: fn(&Value, i64) -> Value,
}

const fn col(
    name: &'static str,
    kind: &'static str,
    priority: u8,
    cell: fn(&Value, i64) -> Value,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        priority,
        cell,
    }
}

/// The representation meaning "metadata only" (`as=PartialObjectMetadata[List]`), carried where
/// a Table version would be.
pub const METADATA: &str = "PartialObjectMetadata";

/// Whether the client asked for a Table (v1 or v1beta1), or for metadata only ([`METADATA`]).
pub fn wants_table(accept: Option<&str>) -> Option<&'static str> {
    let accept = accept?;
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        let meta_group = params.contains(&"g=meta.k8s.io")
            && (params.contains(&"v=v1") || params.contains(&"v=v1beta1"));
        if meta_group
            && (params.contains(&"as=PartialObjectMetadata")
                || params.contains(&"as=PartialObjectMetadataList"))
        {
            return Some(METADATA);
        }
        if params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io") {
            if params.contains(&"v=v1") {
                return Some("v1");
            }
            if params.contains(&"v=v1beta1") {
                return Some("v1beta1");
            }
        }
    }
    None
}

/// Whether the client takes a plain object (JSON, YAML, protobuf, or anything), not only Tables.
pub fn accepts_plain(accept: Option<&str>) -> bool {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return true;
    };
    accept.split(',').any(|part| {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or_default();
        let plain = params.all(|p| !p.starts_with("as="));
        plain
            && matches!(
                media,
                "*/*"
                    | "application/*"
                    | "application/json"
                    | "application/yaml"
                    | "application/vnd.kubernetes.protobuf"
                    | "application/json-patch+json"
                    | "application/merge-patch+json"
            )
    })
}

/// Upstream's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    let minutes = secs / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    if secs < 120 {
        format!("{secs}s")
    } else if minutes < 10 {
        match secs % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if hours < 24 * 365 * 8 {
        match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        }
    } else {
        format!("{}y", days / 365)
    }
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`2024-01-02T03:04:05Z`).
fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn age_of(ts: &Value, now: i64) -> Value {
    match ts.as_str().and_then(parse_time) {
        Some(t) => json!(human_duration(now - t)),
        None => json!("<unknown>"),
    }
}

fn name(o: &Value, _: i64) -> Value {
    o["metadata"]["name"].clone()
}
fn age(o: &Value, now: i64) -> Value {
    age_of(&o["metadata"]["creationTimestamp"], now)
}
fn count(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len()) + v.as_array().map_or(0, |a| a.len())
}
fn str_or(v: &Value, default: &str) -> Value {
    json!(v.as_str().unwrap_or(default))
}
fn none_if_empty(s: String) -> Value {
    json!(if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    })
}
fn selector_text(sel: &Value) -> Value {
    none_if_empty(crate::apiserver::registry::selector::selector_string(sel))
}
fn containers(o: &Value, field: &str) -> Value {
    let list = o["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    json!(list
        .iter()
        .filter_map(|c| c[field].as_str())
        .collect::<Vec<_>>()
        .join(","))
}

fn pod_ready(o: &Value, _: i64) -> Value {
    let total = o["spec"]["containers"].as_array().map_or(0, |c| c.len());
    let ready = o["status"]["containerStatuses"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
    json!(format!("{ready}/{total}"))
}
fn pod_status(o: &Value, _: i64) -> Value {
    if o["metadata"]["deletionTimestamp"].is_string() {
        return json!("Terminating");
    }
    for cs in o["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(reason) = cs["state"]["waiting"]["reason"].as_str() {
            return json!(reason);
        }
        if let Some(reason) = cs["state"]["terminated"]["reason"].as_str() {
            return json!(reason);
        }
    }
    str_or(&o["status"]["phase"], "Pending")
}
/// Restarts of the containers, with how long ago the last one ended, as upstream's `printPod`.
fn pod_restarts(o: &Value, now: i64) -> Value {
    let statuses = o["status"]["containerStatuses"].as_array();
    let restarts: i64 = statuses.map_or(0, |s| {
        s.iter()
            .filter_map(|c| c["restartCount"].as_i64())
            .sum::<i64>()
    });
    let last = statuses
        .into_iter()
        .flatten()
        .filter_map(|c| c["lastState"]["terminated"]["finishedAt"].as_str())
        .filter_map(parse_time)
        .max();
    match last {
        Some(t) if restarts != 0 => json!(format!("{restarts} ({} ago)", human_duration(now - t))),
        _ => json!(restarts.to_string()),
    }
}

fn columns(def: &ResourceDef) -> Vec<Column> {
    let name_col = Column {
        name: "Name",
        kind: "string",
        format: "name",
        priority: 0,
        cell: name,
    };
    let age_col = col("Age", "string", 0, age);
    let mut cols = vec![name_col];
    match (def.group, def.plural) {
        ("", "configmaps") => cols.push(col("Data", "integer", 0, |o, _| {
            json!(count(&o["data"]) + count(&o["binaryData"]))
        })),
        ("", "secrets") => {
            cols.push(col("Type", "string", 0, |o, _| {
                str_or(&o["type"], "Opaque")
            }));
            cols.push(col("Data", "integer", 0, |o, _| json!(count(&o["data"]))));
        }
        ("", "namespaces") => cols.push(col("Status", "string", 0, |o, _| {
            str_or(&o["status"]["phase"], "Active")
        })),
        ("", "serviceaccounts") => cols.push(col("Secrets", "integer", 0, |o, _| {
            json!(count(&o["secrets"]))
        })),
        ("", "pods") => {
            cols.push(col("Ready", "string", 0, pod_ready));
            cols.push(col("Status", "string", 0, pod_status));
            cols.push(col("Restarts", "string", 0, pod_restarts));
            cols.push(age_col);
            cols.push(col("IP", "string", 1, |o, _| {
                str_or(&o["status"]["podIP"], "<none>")
            }));
            cols.push(col("Node", "string", 1, |o, _| {
                str_or(&o["spec"]["nodeName"], "<none>")
            }));
            cols.push(col("Nominated Node", "string", 1, |o, _| {
                str_or(&o["status"]["nominatedNodeName"], "<none>")
            }));
            cols.push(col("Readiness Gates", "string", 1, |o, _| {
                match o["spec"]["readinessGates"]
                    .as_array()
                    .map_or(0, |g| g.len())
                {
                    0 => json!("<none>"),
                    n => json!(format!("0/{n}")),
                }
            }));
            return cols;
        }
        ("", "services") => {
            cols.push(col("Type", "string", 0, |o, _| {
                str_or(&o["spec"]["type"], "ClusterIP")
            }));
            cols.push(col("Cluster-IP", "string", 0, |o, _| {
                str_or(&o["spec"]["clusterIP"], "<none>")
            }));
            cols.push(col("External-IP", "string", 0, |o, _| {
                none_if_empty(
                    o["spec"]["externalIPs"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default(),
                )
            }));
            cols.push(col("Port(s)", "string", 0, |o, _| {
                none_if_empty(
                    o["spec"]["ports"]
                        .as_array()
                        .map(|ports| {
                            ports
                                .iter()
                                .map(|p| {
                                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                                    match p["nodePort"].as_i64() {
                                        Some(np) => format!("{}:{np}/{proto}", p["port"]),
                                        None => format!("{}/{proto}", p["port"]),
                                    }
                                })
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default(),
                )
            }));
            cols.push(age_col);
            cols.push(col("Selector", "string", 1, |o, _| {
                selector_text(&o["spec"]["selector"])
            }));
            return cols;
        }
        ("apps", "deployments") => {
            cols.push(col("Ready", "string", 0, |o, _| {
                json!(format!(
                    "{}/{}",
                    o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                    o["spec"]["replicas"].as_i64().unwrap_or(1)
                ))
            }));
            cols.push(col("Up-to-date", "integer", 0, |o, _| {
                json!(o["status"]["updatedReplicas"].as_i64().unwrap_or(0))
            }));
            cols.push(col("Available", "integer", 0, |o, _| {
                json!(o["status"]["availableReplicas"].as_i64().unwrap_or(0))
            }));
        }
        ("apps", "replicasets") => {
            cols.push(col("Desired", "integer", 0, |o, _| {
                json!(o["spec"]["replicas"].as_i64().unwrap_or(1))
            }));
            cols.push(col("Current", "integer", 0, |o, _| {
                json!(o["status"]["replicas"].as_i64().unwrap_or(0))
            }));
            cols.push(col("Ready", "integer", 0, |o, _| {
                json!(o["status"]["readyReplicas"].as_i64().unwrap_or(0))
            }));
        }
        ("apps", "statefulsets") => cols.push(col("Ready", "string", 0, |o, _| {
            json!(format!(
                "{}/{}",
                o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                o["spec"]["replicas"].as_i64().unwrap_or(1)
            ))
        })),
        ("coordination.k8s.io", "leases") => cols.push(col("Holder", "string", 0, |o, _| {
            str_or(&o["spec"]["holderIdentity"], "")
        })),
        ("", "events") => {
            return vec![
                col("Last Seen", "string", 0, |o, now| {
                    let t = if o["lastTimestamp"].is_string() {
                        &o["lastTimestamp"]
                    } else if o["eventTime"].is_string() {
                        &o["eventTime"]
                    } else {
                        &o["metadata"]["creationTimestamp"]
                    };
                    age_of(t, now)
                }),
                col("Type", "string", 0, |o, _| str_or(&o["type"], "")),
                col("Reason", "string", 0, |o, _| str_or(&o["reason"], "")),
                col("Object", "string", 0, |o, _| {
                    json!(format!(
                        "{}/{}",
                        o["involvedObject"]["kind"]
                            .as_str()
                            .unwrap_or_default()
                            .to_lowercase(),
                        o["involvedObject"]["name"].as_str().unwrap_or_default()
                    ))
                }),
                col("Message", "string", 0, |o, _| str_or(&o["message"], "")),
            ];
        }
        _ => {
            if let Some(more) = more::columns(def) {
                return more;
            }
            cols.push(Column {
                name: "Created At",
                kind: "date",
                format: "",
                priority: 0,
                cell: |o, _| o["metadata"]["creationTimestamp"].clone(),
            });
            return cols;
        }
    }
    cols.push(age_col);
    if matches!(
        (def.group, def.plural),
        ("apps", "deployments" | "replicasets" | "statefulsets")
    ) {
        cols.push(col("Containers", "string", 1, |o, _| containers(o, "name")));
        cols.push(col("Images", "string", 1, |o, _| containers(o, "image")));
        if def.plural != "statefulsets" {
            cols.push(col("Selector", "string", 1, |o, _| {
                selector_text(&o["spec"]["selector"])
            }));
        }
    }
    cols
}

/// The `object` of a row: the metadata (default), the whole object, or nothing.
fn row_object(obj: &Value, include: &str) -> Value {
    match include {
        "None" => Value::Null,
        "Object" => obj.clone(),
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"].clone(),
        }),
    }
}

/// An object's metadata alone, as `PartialObjectMetadata`.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"].clone(),
    })
}

/// A Table of `objects` (each with apiVersion and kind set), or their metadata as a
/// `PartialObjectMetadataList` when `version` is [`METADATA`].
pub fn table(
    def: &ResourceDef,
    version: &str,
    objects: &[Value],
    list_meta: Value,
    include: &str,
) -> Value {
    if version == METADATA {
        return json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": list_meta,
            "items": objects.iter().map(partial).collect::<Vec<_>>(),
        });
    }
    let cols = columns(def);
    let now = crate::apiserver::registry::object::epoch_now();
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": "",
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = cols.iter().map(|c| (c.cell)(o, now)).collect();
            let mut row = json!({"cells": cells});
            let object = row_object(o, include);
            if !object.is_null() {
                row["object"] = object;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86_400 + 3600), "3d1h");
        assert_eq!(human_duration(400 * 86_400), "400d");
    }

    #[test]
    fn timestamps_parse_back() {
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_time("bad"), None);
    }

    #[test]
    fn table_is_negotiated_from_kubectls_accept() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(wants_table(Some(kubectl)), Some("v1"));
        assert_eq!(wants_table(Some("application/json")), None);
        assert!(accepts_plain(Some(kubectl)));
        assert!(accepts_plain(None));
        assert!(!accepts_plain(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io"
        )));
        assert!(!accepts_plain(Some("text/html")));
    }
}
