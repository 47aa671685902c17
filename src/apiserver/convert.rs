//! Conversion between the versions of one resource that share storage.
//!
//! Upstream stores each resource in one version and converts on the way in and out. Two pairs
//! of served versions differ in shape: Events (stored as core/v1; events.k8s.io/v1 renames and
//! regroups fields) and HorizontalPodAutoscalers (stored as autoscaling/v2; v1 has only a CPU
//! target, the rest rides in annotations, as upstream keeps it).

use serde_json::{json, Map, Value};

use super::catalog::ResourceDef;

/// events.k8s.io/v1 name -> core/v1 name.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// Whether objects of `def` are stored in another shape than they are served.
pub fn converts(def: &ResourceDef) -> bool {
    matches!(
        (def.group, def.version, def.plural),
        ("events.k8s.io", "v1", "events") | ("autoscaling", "v1", "horizontalpodautoscalers")
    )
}

fn rename(obj: &mut Value, pairs: &[(&str, &str)], forward: bool) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    for (a, b) in pairs {
        let (from, to) = if forward { (a, b) } else { (b, a) };
        if let Some(v) = m.remove(*from) {
            m.insert(to.to_string(), v);
        }
    }
}

/// Whether `def`'s objects are stored in the version they are served in.
pub fn stored_as_is(def: &ResourceDef) -> bool {
    !matches!(
        (def.group, def.version, def.plural),
        ("events.k8s.io", "v1", "events") | ("autoscaling", "v1", "horizontalpodautoscalers")
    )
}

/// Turns an object of `def`'s version into the storage version.
pub fn to_storage(def: &ResourceDef, obj: &mut Value) {
    match (def.group, def.version, def.plural) {
        ("events.k8s.io", "v1", "events") => {
            rename(obj, EVENT_FIELDS, true);
            obj["apiVersion"] = json!("v1");
        }
        ("autoscaling", "v1", "horizontalpodautoscalers") => {
            hpa_v1_to_v2(obj);
            obj["apiVersion"] = json!("autoscaling/v2");
        }
        _ => {}
    }
}

/// Turns a stored object into `def`'s version.
pub fn from_storage(def: &ResourceDef, obj: &mut Value) {
    match (def.group, def.version, def.plural) {
        ("events.k8s.io", "v1", "events") => rename(obj, EVENT_FIELDS, false),
        ("autoscaling", "v1", "horizontalpodautoscalers") => hpa_v2_to_v1(obj),
        _ => {}
    }
}

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
}

fn annotations(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = json!({});
    }
    match obj["metadata"]["annotations"].as_object_mut() {
        Some(m) => m,
        None => unreachable!("annotations were just made an object"),
    }
}

fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let text = obj["metadata"]["annotations"]
        .as_object_mut()?
        .remove(key)?;
    serde_json::from_str(text.as_str()?).ok()
}

fn hpa_v1_to_v2(obj: &mut Value) {
    let mut metrics: Vec<Value> = take_annotation(obj, METRICS_ANNOTATION)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let behavior = take_annotation(obj, BEHAVIOR_ANNOTATION);
    let conditions = take_annotation(obj, CONDITIONS_ANNOTATION);
    let mut current: Vec<Value> = take_annotation(obj, CURRENT_METRICS_ANNOTATION)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    if obj["metadata"]["annotations"]
        .as_object()
        .is_some_and(Map::is_empty)
    {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("annotations");
        }
    }
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(cpu) = spec.remove("targetCPUUtilizationPercentage") {
            metrics.insert(
                0,
                json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}),
            );
        }
        if !metrics.is_empty() {
            spec.insert("metrics".into(), Value::Array(metrics));
        }
        if let Some(b) = behavior {
            spec.insert("behavior".into(), b);
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(cpu) = status.remove("currentCPUUtilizationPercentage") {
            current.insert(
                0,
                json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}),
            );
        }
        if !current.is_empty() {
            status.insert("currentMetrics".into(), Value::Array(current));
        }
        if let Some(c) = conditions {
            status.insert("conditions".into(), c);
        }
    }
}

fn hpa_v2_to_v1(obj: &mut Value) {
    let metrics = obj
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .and_then(|s| s.remove("metrics"))
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    let behavior = obj
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .and_then(|s| s.remove("behavior"));
    let (cpu, rest): (Vec<Value>, Vec<Value>) = metrics.into_iter().partition(is_cpu_utilization);
    if let Some(c) = cpu.first() {
        obj["spec"]["targetCPUUtilizationPercentage"] =
            c["resource"]["target"]["averageUtilization"].clone();
    }
    let current = obj
        .get_mut("status")
        .and_then(Value::as_object_mut)
        .and_then(|s| s.remove("currentMetrics"))
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    let conditions = obj
        .get_mut("status")
        .and_then(Value::as_object_mut)
        .and_then(|s| s.remove("conditions"));
    let (cur_cpu, cur_rest): (Vec<Value>, Vec<Value>) = current
        .into_iter()
        .partition(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu");
    if let Some(c) = cur_cpu.first() {
        if let Some(u) = c["resource"]["current"]["averageUtilization"].as_i64() {
            obj["status"]["currentCPUUtilizationPercentage"] = json!(u);
        }
    }
    let mut keep = |key: &str, v: Value| {
        annotations(obj).insert(key.to_string(), Value::String(v.to_string()));
    };
    if !rest.is_empty() {
        keep(METRICS_ANNOTATION, Value::Array(rest));
    }
    if !cur_rest.is_empty() {
        keep(CURRENT_METRICS_ANNOTATION, Value::Array(cur_rest));
    }
    if let Some(b) = behavior {
        keep(BEHAVIOR_ANNOTATION, b);
    }
    if let Some(c) = conditions.filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
        keep(CONDITIONS_ANNOTATION, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::catalog::find;

    #[test]
    fn events_round_trip_between_the_two_apis() {
        let v1 = find("events.k8s.io", "v1", "events").expect("events.k8s.io");
        let mut e = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "regarding": {"kind": "Pod", "name": "p"}, "note": "pulled", "reason": "Pulled",
            "reportingController": "kubelet", "type": "Normal", "deprecatedCount": 2});
        let original = e.clone();
        to_storage(v1, &mut e);
        assert_eq!(e["involvedObject"]["name"], "p");
        assert_eq!(e["message"], "pulled");
        assert_eq!(e["reportingComponent"], "kubelet");
        assert_eq!(e["count"], 2);
        from_storage(v1, &mut e);
        e["apiVersion"] = original["apiVersion"].clone();
        assert_eq!(e, original);
    }

    #[test]
    fn hpa_v1_keeps_what_only_v2_can_say() {
        let v1 = find("autoscaling", "v1", "horizontalpodautoscalers").expect("hpa v1");
        let mut stored = json!({"apiVersion": "autoscaling/v2", "metadata": {"name": "h"}, "spec": {
            "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
            ],
        }});
        let original = stored.clone();
        from_storage(v1, &mut stored);
        assert_eq!(stored["spec"]["targetCPUUtilizationPercentage"], 70);
        assert!(stored["metadata"]["annotations"][METRICS_ANNOTATION].is_string());
        to_storage(v1, &mut stored);
        assert_eq!(stored, original);
    }
}
