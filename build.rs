//! Build script: derives the resource catalog from upstream's OpenAPI document.
//!
//! Reads `api/swagger-v1.36.json` and writes `$OUT_DIR/catalog.rs`: one entry per served
//! resource (group, version, kind, plural, scope, verbs) with its subresources (verbs and the
//! kind they answer with). Only stable versions are served, as upstream enables by default.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

#[derive(Default)]
struct Res {
    kind: String,
    namespaced: bool,
    verbs: BTreeSet<String>,
    subs: BTreeMap<String, Sub>,
}

#[derive(Default)]
struct Sub {
    gvk: (String, String, String),
    verbs: BTreeSet<String>,
}

fn verb(action: &str, method: &str) -> Option<&'static str> {
    Some(match action {
        "get" => "get",
        "list" => "list",
        "watch" | "watchlist" => "watch",
        "post" => "create",
        "put" => "update",
        "patch" => "patch",
        "delete" => "delete",
        "deletecollection" => "deletecollection",
        "connect" => match method {
            "get" => "get",
            "post" => "create",
            "put" => "update",
            "patch" => "patch",
            "delete" => "delete",
            _ => return None,
        },
        _ => return None,
    })
}

fn stable(version: &str) -> bool {
    !version.contains("alpha") && !version.contains("beta")
}

fn main() {
    let src = Path::new("api/swagger-v1.36.json");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed=build.rs");
    let text = std::fs::read_to_string(src).expect("read api/swagger-v1.36.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("parse the swagger document");
    let paths = doc["paths"].as_object().expect("paths");

    // (group, version, plural) -> resource
    let mut catalog: BTreeMap<(String, String, String), Res> = BTreeMap::new();
    for (path, item) in paths {
        let (group, version, rest) = if let Some(r) = path.strip_prefix("/api/v1/") {
            (String::new(), "v1".to_string(), r)
        } else if let Some(r) = path.strip_prefix("/apis/") {
            let mut it = r.splitn(3, '/');
            let (Some(g), Some(v), Some(rest)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            (g.to_string(), v.to_string(), rest)
        } else {
            continue;
        };
        if !stable(&version) || rest.is_empty() {
            continue;
        }
        let mut segs: Vec<&str> = rest.split('/').collect();
        let watch = segs.first() == Some(&"watch");
        if watch {
            segs.remove(0);
        }
        let namespaced = segs.len() >= 3 && segs[0] == "namespaces" && segs[1] == "{namespace}";
        if namespaced {
            segs.drain(..2);
        }
        let Some(plural) = segs.first().map(|s| s.to_string()) else {
            continue;
        };
        let sub = match (segs.get(1), segs.get(2)) {
            (Some(&"{name}"), Some(s)) => Some(s.to_string()),
            _ => None,
        };
        let Some(ops) = item.as_object() else {
            continue;
        };
        for (method, op) in ops {
            let Some(action) = op["x-kubernetes-action"].as_str() else {
                continue;
            };
            let Some(v) = verb(action, method) else {
                continue;
            };
            let gvk = &op["x-kubernetes-group-version-kind"];
            let gvk = (
                gvk["group"].as_str().unwrap_or_default().to_string(),
                gvk["version"].as_str().unwrap_or_default().to_string(),
                gvk["kind"].as_str().unwrap_or_default().to_string(),
            );
            let res = catalog
                .entry((group.clone(), version.clone(), plural.clone()))
                .or_default();
            res.namespaced |= namespaced;
            match &sub {
                None => {
                    res.verbs.insert(v.to_string());
                    if res.kind.is_empty() && !watch && gvk.2 != "Status" {
                        res.kind = gvk.2.clone();
                    }
                }
                Some(s) => {
                    let entry = res.subs.entry(s.clone()).or_default();
                    entry.verbs.insert(v.to_string());
                    if entry.gvk.2.is_empty() && !gvk.2.is_empty() {
                        entry.gvk = gvk;
                    }
                }
            }
        }
    }

    // metrics.k8s.io, which metrics-server adds upstream and k1s serves itself.
    for (plural, kind, namespaced) in [
        ("nodes", "NodeMetrics", false),
        ("pods", "PodMetrics", true),
    ] {
        let res = catalog
            .entry(("metrics.k8s.io".into(), "v1beta1".into(), plural.into()))
            .or_default();
        res.kind = kind.into();
        res.namespaced = namespaced;
        res.verbs = ["get", "list"].iter().map(|v| v.to_string()).collect();
    }

    let mut out =
        String::from("// Generated by build.rs from api/swagger-v1.36.json. Do not edit.\n");
    out.push_str("pub static RESOURCES: &[ResourceDef] = &[\n");
    for ((group, version, plural), res) in &catalog {
        // A subresource-only path (e.g. a kind with no collection) has no kind: skip it.
        if res.kind.is_empty() {
            continue;
        }
        let verbs: Vec<String> = res.verbs.iter().map(|v| format!("{v:?}")).collect();
        let _ = write!(
            out,
            "    ResourceDef {{ group: {group:?}, version: {version:?}, kind: {:?}, plural: {plural:?}, namespaced: {}, verbs: &[{}], subresources: &[",
            res.kind,
            res.namespaced,
            verbs.join(", ")
        );
        for (name, sub) in &res.subs {
            let verbs: Vec<String> = sub.verbs.iter().map(|v| format!("{v:?}")).collect();
            let (g, v, k) = if sub.gvk.2.is_empty() {
                (group.clone(), version.clone(), res.kind.clone())
            } else {
                sub.gvk.clone()
            };
            let _ = write!(
                out,
                "SubresourceDef {{ name: {name:?}, group: {g:?}, version: {v:?}, kind: {k:?}, verbs: &[{}] }}, ",
                verbs.join(", ")
            );
        }
        out.push_str("] },\n");
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("catalog.rs");
    std::fs::write(dest, out).expect("write catalog.rs");
}
