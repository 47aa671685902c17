//! Resource quota accounting, shared by the ResourceQuota admission plugin (which charges each
//! write against the namespace's quotas) and the resource-quota controller (which recounts
//! usage): what an object uses, which quotas' scopes it falls under, and usage sums. Quantities
//! are in thousandths ([`crate::quantity::milli`]); an object count is 1000.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::milli;

/// Usage by resource name, in thousandths.
pub type Usage = BTreeMap<String, i128>;

const ONE: i128 = 1000;

/// The resources (group, plural) whose usage is tracked beyond object counts.
pub const TRACKED: [(&str, &str); 7] = [
    ("", "pods"),
    ("", "services"),
    ("", "configmaps"),
    ("", "secrets"),
    ("", "persistentvolumeclaims"),
    ("", "replicationcontrollers"),
    ("", "resourcequotas"),
];

fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

fn add_list(u: &mut Usage, prefix: &str, list: &Value) {
    for (k, v) in list.as_object().into_iter().flatten() {
        if let Some(q) = v.as_str().and_then(milli) {
            *u.entry(format!("{prefix}{k}")).or_default() += q;
        }
    }
}

fn max_into(into: &mut Usage, from: &Usage) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_default();
        *e = (*e).max(*v);
    }
}

/// The containers' aggregate requests or limits (`part`), as upstream's `PodRequests` without
/// pod-level resources or overhead: the app containers and sidecars together, or an init
/// container with the sidecars started before it, whichever is more.
pub fn container_aggregate(spec: &Value, part: &str) -> Usage {
    let mut sum = Usage::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        add_list(&mut sum, "", &c["resources"][part]);
    }
    let mut sidecars = Usage::new();
    let mut peak = Usage::new();
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        let mut one = Usage::new();
        add_list(&mut one, "", &c["resources"][part]);
        if c["restartPolicy"].as_str() == Some("Always") {
            for (k, v) in one {
                *sidecars.entry(k).or_default() += v;
            }
            max_into(&mut peak, &sidecars);
        } else {
            for (k, v) in &sidecars {
                *one.entry(k.clone()).or_default() += v;
            }
            max_into(&mut peak, &one);
        }
    }
    for (k, v) in &sidecars {
        *sum.entry(k.clone()).or_default() += v;
    }
    max_into(&mut sum, &peak);
    sum
}

/// Whether `name` may be set in a pod's own `spec.resources` (PodLevelResources).
pub fn pod_level_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory") || name.starts_with("hugepages-")
}

/// A pod's effective requests or limits: its pod-level amount where it sets one, else its
/// containers' aggregate, plus its overhead.
pub fn pod_resources(spec: &Value, part: &str) -> Usage {
    let mut sum = container_aggregate(spec, part);
    for (k, v) in spec["resources"][part].as_object().into_iter().flatten() {
        if let Some(q) = v.as_str().and_then(milli).filter(|_| pod_level_resource(k)) {
            sum.insert(k.clone(), q);
        }
    }
    add_list(&mut sum, "", &spec["overhead"]);
    sum
}

/// Whether a pod still counts: not finished, and not past its deletion grace.
fn pod_counts(pod: &Value) -> bool {
    !matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// What one object uses of quota-limited resources.
pub fn usage(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    if group.is_empty() && plural == "pods" && !pod_counts(obj) {
        return u;
    }
    u.insert(count_name(group, plural), ONE);
    if !group.is_empty() {
        return u;
    }
    match plural {
        "pods" => {
            u.insert("pods".into(), ONE);
            for (k, v) in pod_resources(&obj["spec"], "requests") {
                if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    u.insert(k.clone(), v);
                }
                u.insert(format!("requests.{k}"), v);
            }
            for (k, v) in pod_resources(&obj["spec"], "limits") {
                u.insert(format!("limits.{k}"), v);
            }
        }
        "services" => {
            u.insert("services".into(), ONE);
            let ty = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
            if ty == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), ONE);
            }
            if matches!(ty, "NodePort" | "LoadBalancer") {
                let ports = obj["spec"]["ports"].as_array().map(Vec::len).unwrap_or(0);
                u.insert("services.nodeports".into(), ports as i128 * ONE);
            }
        }
        "persistentvolumeclaims" => {
            u.insert("persistentvolumeclaims".into(), ONE);
            let storage = obj["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .and_then(milli)
                .unwrap_or(0);
            u.insert("requests.storage".into(), storage);
            if let Some(class) = obj["spec"]["storageClassName"].as_str() {
                let prefix = format!("{class}.storageclass.storage.k8s.io/");
                u.insert(format!("{prefix}requests.storage"), storage);
                u.insert(format!("{prefix}persistentvolumeclaims"), ONE);
            }
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
            u.insert(plural.to_string(), ONE);
        }
        _ => {}
    }
    u
}

fn qos_best_effort(spec: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|f| {
        spec[*f].as_array().into_iter().flatten().all(|c| {
            let r = &c["resources"];
            r["requests"].as_object().is_none_or(|m| m.is_empty())
                && r["limits"].as_object().is_none_or(|m| m.is_empty())
        })
    })
}

/// Whether an object falls under a quota's scopes (scopes only ever select pods).
pub fn in_scope(quota: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let mut scopes: Vec<(String, String, Vec<String>)> = quota["spec"]["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            s.as_str()
                .map(|s| (s.to_string(), "Exists".to_string(), Vec::new()))
        })
        .collect();
    for e in quota["spec"]["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let values = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        scopes.push((
            e["scopeName"].as_str().unwrap_or_default().to_string(),
            e["operator"].as_str().unwrap_or_default().to_string(),
            values,
        ));
    }
    if scopes.is_empty() {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    let spec = &obj["spec"];
    scopes.iter().all(|(scope, op, values)| {
        let holds = match scope.as_str() {
            "Terminating" => spec["activeDeadlineSeconds"].is_i64(),
            "NotTerminating" => !spec["activeDeadlineSeconds"].is_i64(),
            "BestEffort" => qos_best_effort(spec),
            "NotBestEffort" => !qos_best_effort(spec),
            "PriorityClass" => {
                let class = spec["priorityClassName"].as_str().unwrap_or_default();
                return match op.as_str() {
                    "In" => values.iter().any(|v| v == class),
                    "NotIn" => !values.iter().any(|v| v == class),
                    "Exists" => !class.is_empty(),
                    "DoesNotExist" => class.is_empty(),
                    _ => false,
                };
            }
            "CrossNamespacePodAffinity" => false,
            _ => false,
        };
        match op.as_str() {
            "DoesNotExist" => !holds,
            _ => holds,
        }
    })
}

/// A quota's hard limits (spec), by resource, in thousandths.
pub fn hard(quota: &Value) -> BTreeMap<String, (i128, String)> {
    quota["spec"]["hard"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let s = v.as_str()?;
            Some((k.clone(), (milli(s)?, s.to_string())))
        })
        .collect()
}

/// Sums `usage` into `total`.
pub fn add(total: &mut Usage, usage: &Usage) {
    for (k, v) in usage {
        *total.entry(k.clone()).or_default() += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_use_their_containers_requests_and_limits() {
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m"}}},
                {"name": "b", "resources": {"requests": {"cpu": "300m"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}],
        }});
        let u = usage("", "pods", &pod);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        assert_eq!(
            u["requests.cpu"], 1000,
            "the init container's request is larger"
        );
        assert_eq!(u["cpu"], 1000);
        assert_eq!(u["requests.memory"], 64 * 1024 * 1024 * 1000);
        assert_eq!(u["limits.cpu"], 200);
        let done = json!({"status": {"phase": "Succeeded"}});
        assert!(usage("", "pods", &done).is_empty());
    }

    #[test]
    fn scopes_select_pods() {
        let be = json!({"spec": {"containers": [{"name": "a"}]}});
        let q = |scopes: Value| json!({"spec": {"scopes": scopes}});
        assert!(in_scope(&q(json!(["BestEffort"])), "", "pods", &be));
        assert!(!in_scope(&q(json!(["NotBestEffort"])), "", "pods", &be));
        assert!(!in_scope(&q(json!(["BestEffort"])), "", "services", &be));
        assert!(in_scope(&json!({"spec": {}}), "", "services", &be));
        let sel = json!({"spec": {"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        let high = json!({"spec": {"priorityClassName": "high"}});
        assert!(in_scope(&sel, "", "pods", &high));
        assert!(!in_scope(&sel, "", "pods", &be));
    }
}
