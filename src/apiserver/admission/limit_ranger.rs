//! LimitRanger: the LimitRanges of a namespace give containers their default requests and limits
//! (noted in the `kubernetes.io/limit-ranger` annotation) and bound what containers, pods and
//! claims may ask for, with upstream's messages.

use std::collections::BTreeMap;

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{list, Attributes, Operation};
use crate::quantity::milli;

const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// One `spec.limits` item, with upstream's LimitRange defaults filled in.
struct Item {
    kind: String,
    min: Map<String, Value>,
    max: Map<String, Value>,
    default: Map<String, Value>,
    default_request: Map<String, Value>,
    ratio: Map<String, Value>,
}

fn map(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn items(ranges: &[Value]) -> Vec<Item> {
    let mut out = Vec::new();
    for r in ranges {
        for l in r["spec"]["limits"].as_array().into_iter().flatten() {
            let mut item = Item {
                kind: l["type"].as_str().unwrap_or_default().to_string(),
                min: map(&l["min"]),
                max: map(&l["max"]),
                default: map(&l["default"]),
                default_request: map(&l["defaultRequest"]),
                ratio: map(&l["maxLimitRequestRatio"]),
            };
            if item.kind == "Container" {
                for (k, v) in item.max.clone() {
                    item.default.entry(k).or_insert(v);
                }
                for (k, v) in item.default.clone() {
                    item.default_request.entry(k).or_insert(v);
                }
                for (k, v) in item.min.clone() {
                    item.default_request.entry(k).or_insert(v);
                }
            }
            out.push(item);
        }
    }
    out
}

async fn ranges(a: &Attributes<'_>) -> Vec<Item> {
    match a.namespace {
        Some(ns) => items(&list(a.reg, "", "limitranges", Some(ns)).await),
        None => Vec::new(),
    }
}

/// Gives each container the defaults it lacks.
pub async fn admit(a: &Attributes<'_>, obj: &mut Value) -> Result<(), Response> {
    if a.op != Operation::Create || !a.is("", "pods") {
        return Ok(());
    }
    let items = ranges(a).await;
    let mut notes = Vec::new();
    for item in items.iter().filter(|i| i.kind == "Container") {
        for (field, label) in [
            ("initContainers", "init container"),
            ("containers", "container"),
        ] {
            for c in obj["spec"]
                .get_mut(field)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                let set = |part: &str, defaults: &Map<String, Value>, c: &mut Value| {
                    let mut set_names = Vec::new();
                    for (k, v) in defaults {
                        if c["resources"][part].get(k).is_none() {
                            c["resources"][part][k] = v.clone();
                            set_names.push(k.clone());
                        }
                    }
                    set_names.sort();
                    set_names
                };
                let limits = set("limits", &item.default, c);
                let reqs = set("requests", &item.default_request, c);
                if !reqs.is_empty() {
                    notes.push(format!("{} request for {label} {name}", reqs.join(", ")));
                }
                if !limits.is_empty() {
                    notes.push(format!("{} limit for {label} {name}", limits.join(", ")));
                }
            }
        }
    }
    if !notes.is_empty() {
        if !obj["metadata"]["annotations"].is_object() {
            obj["metadata"]["annotations"] = json!({});
        }
        obj["metadata"]["annotations"][ANNOTATION] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
    Ok(())
}

/// Checks min, max and maxLimitRequestRatio of one request/limit pair.
fn check(
    kind: &str,
    item: &Item,
    requests: &Map<String, Value>,
    limits: &Map<String, Value>,
    errs: &mut Vec<String>,
) {
    let q = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    for (res, min) in &item.min {
        let min_s = min.as_str().unwrap_or_default();
        let (req, lim) = (q(requests, res), q(limits, res));
        match (&req, &lim) {
            (None, _) => errs.push(format!(
                "minimum {res} usage per {kind} is {min_s}.  No request is specified"
            )),
            (Some(r), _) if milli(r) < milli(min_s) => errs.push(format!(
                "minimum {res} usage per {kind} is {min_s}, but request is {r}"
            )),
            (_, Some(l)) if milli(l) < milli(min_s) => errs.push(format!(
                "minimum {res} usage per {kind} is {min_s}, but limit is {l}"
            )),
            _ => {}
        }
    }
    for (res, max) in &item.max {
        let max_s = max.as_str().unwrap_or_default();
        let (req, lim) = (q(requests, res), q(limits, res));
        match (&lim, &req) {
            (None, _) => errs.push(format!(
                "maximum {res} usage per {kind} is {max_s}.  No limit is specified"
            )),
            (Some(l), _) if milli(l) > milli(max_s) => errs.push(format!(
                "maximum {res} usage per {kind} is {max_s}, but limit is {l}"
            )),
            (_, Some(r)) if milli(r) > milli(max_s) => errs.push(format!(
                "maximum {res} usage per {kind} is {max_s}, but request is {r}"
            )),
            _ => {}
        }
    }
    for (res, ratio) in &item.ratio {
        let ratio_s = ratio.as_str().unwrap_or_default();
        let (req, lim) = (q(requests, res), q(limits, res));
        let Some(l) = lim.as_deref().and_then(milli) else {
            errs.push(format!("{res} max limit to request ratio per {kind} is {ratio_s}, but no limit is specified"));
            continue;
        };
        let Some(r) = req.as_deref().and_then(milli).filter(|r| *r > 0) else {
            errs.push(format!("{res} max limit to request ratio per {kind} is {ratio_s}, but no request is specified or request is 0"));
            continue;
        };
        let observed = l as f64 / r as f64;
        let allowed = milli(ratio_s).unwrap_or(0) as f64 / 1000.0;
        if observed > allowed {
            errs.push(format!("{res} max limit to request ratio per {kind} is {ratio_s}, but provided ratio is {observed:.6}"));
        }
    }
}

/// Sums quantities per resource (a pod's total over its containers).
fn add(total: &mut BTreeMap<String, i128>, m: &Map<String, Value>) {
    for (k, v) in m {
        if let Some(x) = v.as_str().and_then(milli) {
            *total.entry(k.clone()).or_default() += x;
        }
    }
}

fn as_map(total: &BTreeMap<String, i128>) -> Map<String, Value> {
    total
        .iter()
        .map(|(k, v)| {
            let text = if v % 1000 == 0 {
                (v / 1000).to_string()
            } else {
                format!("{v}m")
            };
            (k.clone(), json!(text))
        })
        .collect()
}

/// Refuses containers, pods and claims outside their namespace's ranges.
pub async fn validate(a: &Attributes<'_>, obj: &Value) -> Result<(), Response> {
    let pod = a.is("", "pods") && a.op == Operation::Create;
    let claim = a.is("", "persistentvolumeclaims") && a.op != Operation::Delete;
    if !pod && !claim {
        return Ok(());
    }
    let items = ranges(a).await;
    let mut errs = Vec::new();
    for item in &items {
        match item.kind.as_str() {
            "Container" if pod => {
                for f in ["initContainers", "containers"] {
                    for c in obj["spec"][f].as_array().into_iter().flatten() {
                        check(
                            "Container",
                            item,
                            &map(&c["resources"]["requests"]),
                            &map(&c["resources"]["limits"]),
                            &mut errs,
                        );
                    }
                }
            }
            "Pod" if pod => {
                let (mut req, mut lim) = (BTreeMap::new(), BTreeMap::new());
                for c in obj["spec"]["containers"].as_array().into_iter().flatten() {
                    add(&mut req, &map(&c["resources"]["requests"]));
                    add(&mut lim, &map(&c["resources"]["limits"]));
                }
                check("Pod", item, &as_map(&req), &as_map(&lim), &mut errs);
            }
            "PersistentVolumeClaim" if claim => {
                let r = &obj["spec"]["resources"];
                check(
                    "PersistentVolumeClaim",
                    item,
                    &map(&r["requests"]),
                    &map(&r["limits"]),
                    &mut errs,
                );
            }
            _ => {}
        }
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(a.forbidden(&errs[0])),
        _ => Err(a.forbidden(&format!("[{}]", errs.join(", ")))),
    }
}
