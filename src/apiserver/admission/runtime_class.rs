//! RuntimeClass: a new pod naming a `runtimeClassName` gets that class's pod overhead and its
//! scheduling constraints (node selector merged, tolerations added); a class that does not
//! exist, an overhead other than the class's, or an overhead without a class refuses the pod,
//! in upstream's words.

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{lookup, Attributes, Operation};

const GROUP: &str = "node.k8s.io";

/// The class the pod names, if any (a refusal when it does not exist).
async fn class_of(a: &Attributes<'_>, pod: &Value) -> Result<Option<Value>, Response> {
    let Some(name) = pod["spec"]["runtimeClassName"]
        .as_str()
        .filter(|n| !n.is_empty())
    else {
        return Ok(None);
    };
    match lookup(a.reg, GROUP, "runtimeclasses", None, name).await {
        Some(c) => Ok(Some(c)),
        None => Err(a.forbidden(&format!("pod rejected: RuntimeClass {name:?} not found"))),
    }
}

fn applies(a: &Attributes<'_>) -> bool {
    a.op == Operation::Create && a.is("", "pods")
}

/// Whether two resource lists hold the same quantities (`1Gi` equals `1024Mi`).
fn same_resources(x: &Value, y: &Value) -> bool {
    let parse = |v: &Value| -> Option<Vec<(String, i128)>> {
        let mut out: Vec<(String, i128)> = v
            .as_object()?
            .iter()
            .map(|(k, q)| Some((k.clone(), crate::quantity::milli(q.as_str()?)?)))
            .collect::<Option<_>>()?;
        out.sort();
        Some(out)
    };
    match (parse(x), parse(y)) {
        (Some(a), Some(b)) => a == b,
        _ => x == y,
    }
}

const MISMATCH: &str = "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead";

/// The mutating half: overhead and scheduling from the pod's class.
pub async fn admit(a: &Attributes<'_>, pod: &mut Value) -> Result<(), Response> {
    if !applies(a) {
        return Ok(());
    }
    let Some(class) = class_of(a, pod).await? else {
        return Ok(());
    };
    let fixed = &class["overhead"]["podFixed"];
    if fixed.is_object() {
        let given = &pod["spec"]["overhead"];
        if given.as_object().is_some_and(|o| !o.is_empty()) && !same_resources(given, fixed) {
            return Err(a.forbidden(MISMATCH));
        }
        pod["spec"]["overhead"] = fixed.clone();
    }
    let scheduling = &class["scheduling"];
    if let Some(selector) = scheduling["nodeSelector"]
        .as_object()
        .filter(|s| !s.is_empty())
    {
        let mut merged = pod["spec"]["nodeSelector"]
            .as_object()
            .cloned()
            .unwrap_or_else(Map::new);
        for (key, value) in selector {
            if let Some(mine) = merged.get(key) {
                if mine != value {
                    let (theirs, mine) = (
                        value.as_str().unwrap_or_default(),
                        mine.as_str().unwrap_or_default(),
                    );
                    return Err(a.forbidden(&format!(
                        "conflict: runtimeClass.scheduling.nodeSelector[{key}] = {theirs}; pod.spec.nodeSelector[{key}] = {mine}"
                    )));
                }
            }
            merged.insert(key.clone(), value.clone());
        }
        pod["spec"]["nodeSelector"] = Value::Object(merged);
    }
    if let Some(tolerations) = scheduling["tolerations"]
        .as_array()
        .filter(|t| !t.is_empty())
    {
        let mine = pod["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        pod["spec"]["tolerations"] = json!(merge_tolerations(&mine, tolerations));
    }
    Ok(())
}

/// Two lists of tolerations as one, keeping only the wider of two where one tolerates all the
/// other does (upstream's `MergeTolerations`).
fn merge_tolerations(first: &[Value], second: &[Value]) -> Vec<Value> {
    let all: Vec<&Value> = first.iter().chain(second).collect();
    let mut merged: Vec<Value> = Vec::new();
    'next: for (i, t) in all.iter().enumerate() {
        if merged.iter().any(|m| covers(m, t)) {
            continue;
        }
        for later in &all[i + 1..] {
            // Of two equal ones, the first stays.
            if !same_toleration(t, later) && covers(later, t) {
                continue 'next;
            }
        }
        merged.push((*t).clone());
    }
    merged
}

fn field(v: &Value, f: &str) -> String {
    v[f].as_str().unwrap_or_default().to_string()
}

/// The operator, `Equal` when unset.
fn operator(v: &Value) -> String {
    let o = field(v, "operator");
    if o.is_empty() {
        "Equal".into()
    } else {
        o
    }
}

fn same_toleration(a: &Value, b: &Value) -> bool {
    ["key", "value", "effect"]
        .iter()
        .all(|f| field(a, f) == field(b, f))
        && operator(a) == operator(b)
        && a["tolerationSeconds"].as_i64() == b["tolerationSeconds"].as_i64()
}

/// Whether the toleration `wide` tolerates everything `t` does (upstream's `isSuperset`).
fn covers(wide: &Value, t: &Value) -> bool {
    if same_toleration(wide, t) {
        return true;
    }
    let any_key = field(wide, "key").is_empty() && operator(wide) == "Exists";
    if field(t, "key") != field(wide, "key") && !any_key {
        return false;
    }
    if field(t, "effect") != field(wide, "effect") && !field(wide, "effect").is_empty() {
        return false;
    }
    if field(wide, "effect") == "NoExecute" {
        if let Some(limit) = wide["tolerationSeconds"].as_i64() {
            match t["tolerationSeconds"].as_i64() {
                Some(s) if s <= limit => {}
                _ => return false,
            }
        }
    }
    match operator(wide).as_str() {
        "Equal" => operator(t) == "Equal" && field(t, "value") == field(wide, "value"),
        "Exists" => true,
        _ => false,
    }
}

/// The validating half: the overhead is the class's, and none without a class that sets one.
pub async fn validate(a: &Attributes<'_>, pod: &Value) -> Result<(), Response> {
    if !applies(a) {
        return Ok(());
    }
    let class = class_of(a, pod).await?;
    let given = &pod["spec"]["overhead"];
    match class.as_ref().map(|c| &c["overhead"]["podFixed"]) {
        Some(fixed) if fixed.is_object() => {
            if !same_resources(given, fixed) {
                return Err(a.forbidden(MISMATCH));
            }
        }
        _ => {
            if !given.is_null() {
                return Err(a.forbidden(
                    "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_already_tolerated_are_not_added_twice() {
        let all = json!({"operator": "Exists"});
        let gpu =
            json!({"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"});
        let gpu_any = json!({"key": "gpu", "operator": "Exists"});
        assert!(covers(&all, &gpu));
        assert!(covers(&gpu_any, &gpu));
        assert!(covers(&gpu, &gpu));
        assert!(!covers(&gpu, &gpu_any));
        let other = json!({"key": "gpu", "value": "no", "effect": "NoSchedule"});
        assert!(!covers(&gpu, &other));
    }

    #[test]
    fn a_class_toleration_without_seconds_replaces_the_pods_timed_one() {
        let key = "node.kubernetes.io/not-ready";
        let timed = json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300});
        let forever = json!({"key": key, "operator": "Exists", "effect": "NoExecute"});
        let gpu = json!({"key": "gpu", "operator": "Exists"});
        let merged = merge_tolerations(
            &[timed.clone(), gpu.clone()],
            &[forever.clone(), gpu.clone()],
        );
        assert_eq!(merged, vec![gpu, forever.clone()]);
        assert!(!covers(&timed, &forever), "a limit does not cover no limit");
    }

    #[test]
    fn overheads_compare_by_quantity() {
        assert!(same_resources(
            &json!({"memory": "1Gi", "cpu": "100m"}),
            &json!({"cpu": "0.1", "memory": "1024Mi"})
        ));
        assert!(!same_resources(
            &json!({"cpu": "100m"}),
            &json!({"cpu": "200m"})
        ));
        assert!(!same_resources(&Value::Null, &json!({"cpu": "200m"})));
    }
}
