//! The small mutating plugins: TaintNodesByCondition (new nodes start tainted not-ready),
//! DefaultTolerationSeconds (pods tolerate not-ready and unreachable for 300 s),
//! DefaultStorageClass (claims without a class get the default one) and
//! StorageObjectInUseProtection (claims and volumes carry their protection finalizers).

use serde_json::{json, Value};

use super::{list, Attributes, Operation};

const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// New nodes get the `not-ready:NoSchedule` taint until the node lifecycle controller lifts it.
pub fn taint_nodes_by_condition(a: &Attributes<'_>, obj: &mut Value) {
    if a.op != Operation::Create || !a.is("", "nodes") {
        return;
    }
    let has = obj["spec"]["taints"].as_array().is_some_and(|t| {
        t.iter()
            .any(|t| t["key"] == NOT_READY && t["effect"] == "NoSchedule")
    });
    if has {
        return;
    }
    let taint = json!({"key": NOT_READY, "effect": "NoSchedule"});
    match obj["spec"]["taints"].as_array_mut() {
        Some(t) => t.push(taint),
        None => obj["spec"]["taints"] = json!([taint]),
    }
}

/// Pods tolerate not-ready and unreachable nodes for 300 seconds unless they say otherwise.
pub fn default_toleration_seconds(a: &Attributes<'_>, obj: &mut Value) {
    if a.op != Operation::Create || !a.is("", "pods") {
        return;
    }
    let tolerates = |key: &str, obj: &Value| {
        obj["spec"]["tolerations"].as_array().is_some_and(|ts| {
            ts.iter().any(|t| {
                let k = t["key"].as_str().unwrap_or_default();
                let e = t["effect"].as_str().unwrap_or_default();
                (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
            })
        })
    };
    for key in [NOT_READY, UNREACHABLE] {
        if tolerates(key, obj) {
            continue;
        }
        let t = json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300});
        match obj["spec"]["tolerations"].as_array_mut() {
            Some(ts) => ts.push(t),
            None => obj["spec"]["tolerations"] = json!([t]),
        }
    }
}

/// Whether a StorageClass is marked as the default.
fn is_default_class(sc: &Value) -> bool {
    let ann = &sc["metadata"]["annotations"];
    ann["storageclass.kubernetes.io/is-default-class"] == "true"
        || ann["storageclass.beta.kubernetes.io/is-default-class"] == "true"
}

/// A claim that names no class gets the default one (the newest, if several are marked).
pub async fn default_storage_class(a: &Attributes<'_>, obj: &mut Value) {
    if a.op != Operation::Create || !a.is("", "persistentvolumeclaims") {
        return;
    }
    if obj["spec"]
        .get("storageClassName")
        .is_some_and(|v| !v.is_null())
    {
        return;
    }
    let mut defaults: Vec<Value> = list(a.reg, "storage.k8s.io", "storageclasses", None)
        .await
        .into_iter()
        .filter(is_default_class)
        .collect();
    defaults.sort_by(|x, y| {
        let t = |v: &Value| {
            v["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        let n = |v: &Value| v["metadata"]["name"].as_str().unwrap_or("").to_string();
        t(y).cmp(&t(x)).then(n(x).cmp(&n(y)))
    });
    if let Some(name) = defaults
        .first()
        .and_then(|c| c["metadata"]["name"].as_str())
    {
        obj["spec"]["storageClassName"] = json!(name);
    }
}

/// Claims and volumes in use are not deleted under their users: they carry a finalizer that the
/// protection controllers remove once nothing uses them.
pub fn storage_object_in_use_protection(a: &Attributes<'_>, obj: &mut Value) {
    if a.op != Operation::Create {
        return;
    }
    let finalizer = if a.is("", "persistentvolumeclaims") {
        "kubernetes.io/pvc-protection"
    } else if a.is("", "persistentvolumes") {
        "kubernetes.io/pv-protection"
    } else {
        return;
    };
    let has = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == finalizer));
    if !has {
        match obj["metadata"]["finalizers"].as_array_mut() {
            Some(f) => f.push(json!(finalizer)),
            None => obj["metadata"]["finalizers"] = json!([finalizer]),
        }
    }
}
