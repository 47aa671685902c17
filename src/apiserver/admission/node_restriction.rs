//! NodeRestriction: what a kubelet (`system:node:NAME`) may write is limited to its own Node
//! (without the labels reserved for administrators), its own Lease and CSINode, the status of
//! pods bound to it, mirror pods of its own, and the resize fields of its claims' status
//! (capacity, conditions, allocated resources); upstream's messages.

use axum::response::Response;
use serde_json::{Map, Value};

use super::{Attributes, Operation};
use crate::apiserver::auth::node::node_name;

const MIRROR: &str = "kubernetes.io/config.mirror";

/// Labels under `kubernetes.io`/`k8s.io` a kubelet may still set on its Node.
const ALLOWED_LABELS: [&str; 11] = [
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// Whether a kubelet may not set or change `label` on its Node.
fn reserved_label(label: &str) -> bool {
    let Some((prefix, _)) = label.split_once('/') else {
        return false;
    };
    if prefix == "node-restriction.kubernetes.io"
        || prefix.ends_with(".node-restriction.kubernetes.io")
    {
        return true;
    }
    let kube = |d: &str| prefix == d || prefix.ends_with(&format!(".{d}"));
    if !(kube("kubernetes.io") || kube("k8s.io")) {
        return false;
    }
    if ALLOWED_LABELS.contains(&label) {
        return false;
    }
    let free = |d: &str| prefix == d || prefix.ends_with(&format!(".{d}"));
    !(free("kubelet.kubernetes.io") || free("node.kubernetes.io"))
}

fn labels(obj: &Value) -> Map<String, Value> {
    obj["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// Refuses a kubelet's writes beyond its own node.
pub fn validate(a: &Attributes<'_>, obj: &Value, old: Option<&Value>) -> Result<(), Response> {
    let Some(node) = a.user.and_then(node_name) else {
        return Ok(());
    };
    let group = a.def.group;
    match (group, a.def.plural, a.subresource) {
        ("", "pods", None) => match a.op {
            Operation::Create => {
                if obj["metadata"]["annotations"].get(MIRROR).is_none() {
                    return Err(a.forbidden(&format!("pod does not have \"{MIRROR}\" annotation, node \"{node}\" can only create mirror pods")));
                }
                if obj["spec"]["nodeName"] != node {
                    return Err(a.forbidden(&format!(
                        "node \"{node}\" can only create pods with spec.nodeName set to itself"
                    )));
                }
                if obj["spec"]["serviceAccountName"].as_str().is_some_and(|s| !s.is_empty()) {
                    return Err(a.forbidden(&format!(
                        "node \"{node}\" can not create pods that reference a service account"
                    )));
                }
                Ok(())
            }
            Operation::Delete => {
                if obj["spec"]["nodeName"] != node {
                    return Err(a.forbidden(&format!(
                        "node \"{node}\" can only delete pods with spec.nodeName set to itself"
                    )));
                }
                Ok(())
            }
            Operation::Update => Err(a.forbidden(&format!(
                "unexpected operation \"UPDATE\", node \"{node}\" can only create and delete mirror pods"
            ))),
        },
        ("", "pods", Some("status")) => {
            let bound = old.unwrap_or(obj);
            if bound["spec"]["nodeName"] != node {
                return Err(a.forbidden(&format!(
                    "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                )));
            }
            Ok(())
        }
        ("", "persistentvolumeclaims", sub) => {
            if sub != Some("status") {
                return Err(a.forbidden("may only update PVC status"));
            }
            if a.op != Operation::Update {
                return Err(a.forbidden(&format!("unexpected operation {:?}", op_name(a.op))));
            }
            let changed = claim_changes(old.unwrap_or(obj), obj);
            if !changed.is_empty() {
                return Err(a.forbidden(&format!(
                    "node \"{node}\" is not allowed to update fields other than status.quantity and status.conditions: {}",
                    changed.join(", ")
                )));
            }
            Ok(())
        }
        ("", "persistentvolumes", _) => {
            let changed = match (a.op, old) {
                (Operation::Update, Some(old)) => volume_changes(old, obj),
                _ => return Err(a.forbidden(&format!("unexpected operation {:?}", op_name(a.op)))),
            };
            let provisioned = old.is_some_and(|o| {
                o["metadata"]["annotations"][crate::local_path::PROVISIONED_BY]
                    == crate::local_path::PROVISIONER
            });
            if !provisioned {
                return Err(a.forbidden(&format!(
                    "node \"{node}\" may only change persistentvolumes provisioned by {}",
                    crate::local_path::PROVISIONER
                )));
            }
            if !changed.is_empty() {
                return Err(a.forbidden(&format!(
                    "node \"{node}\" may only put the {} finalizer on a persistentvolume or take it off: {}",
                    crate::local_path::FINALIZER,
                    changed.join(", ")
                )));
            }
            Ok(())
        }
        ("", "nodes", _) => {
            if a.name != node {
                return Err(a.forbidden(&format!(
                    "node \"{node}\" is not allowed to modify node \"{}\"",
                    a.name
                )));
            }
            match (a.op, old) {
                (Operation::Create, _) => {
                    let mut bad: Vec<String> =
                        labels(obj).keys().filter(|k| reserved_label(k)).cloned().collect();
                    bad.sort();
                    if !bad.is_empty() {
                        return Err(a.forbidden(&format!(
                            "node \"{node}\" is not allowed to set the following labels: {}",
                            bad.join(", ")
                        )));
                    }
                }
                (Operation::Update, Some(old)) => {
                    let (was, now) = (labels(old), labels(obj));
                    let mut bad: Vec<String> = was
                        .keys()
                        .chain(now.keys())
                        .filter(|k| reserved_label(k) && was.get(*k) != now.get(*k))
                        .cloned()
                        .collect();
                    bad.sort();
                    bad.dedup();
                    if !bad.is_empty() {
                        return Err(a.forbidden(&format!(
                            "node \"{node}\" is not allowed to modify labels: {}",
                            bad.join(", ")
                        )));
                    }
                    if a.subresource.is_none() && old["spec"]["taints"] != obj["spec"]["taints"] {
                        return Err(a.forbidden(&format!(
                            "node \"{node}\" is not allowed to modify taints"
                        )));
                    }
                }
                _ => {}
            }
            Ok(())
        }
        ("coordination.k8s.io", "leases", _) | ("storage.k8s.io", "csinodes", _)
            if a.op == Operation::Create && a.name != node =>
        {
            Err(a.forbidden(&format!(
                "can only access {} with the same name as the requesting node",
                if group == "storage.k8s.io" { "CSINode" } else { "node lease" }
            )))
        }
        _ => Ok(()),
    }
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
    }
}

/// What changed in a volume beyond the local-path finalizer (a k1s addition: the kubelet holding
/// a local-path volume's data keeps the volume until that data is dealt with).
fn volume_changes(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for top in ["spec", "status"] {
        if old[top] != new[top] {
            out.push(top.to_string());
        }
    }
    let empty = Map::new();
    let (a, b) = (
        old["metadata"].as_object().unwrap_or(&empty),
        new["metadata"].as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let others = |m: &Map<String, Value>| -> Vec<Value> {
        let f = m.get("finalizers").and_then(Value::as_array);
        f.into_iter()
            .flatten()
            .filter(|x| *x != crate::local_path::FINALIZER)
            .cloned()
            .collect()
    };
    for k in keys {
        let changed = match k.as_str() {
            "resourceVersion" | "managedFields" => false,
            "finalizers" => others(a) != others(b),
            _ => a.get(k) != b.get(k),
        };
        if changed {
            out.push(format!("metadata.{k}"));
        }
    }
    out
}

/// The fields of a claim that changed beyond what a kubelet may write when it expands a
/// volume: `metadata.labels`, `status.phase`...
fn claim_changes(old: &Value, new: &Value) -> Vec<String> {
    const FREE_STATUS: [&str; 4] = [
        "capacity",
        "conditions",
        "allocatedResources",
        "allocatedResourceStatuses",
    ];
    let mut out = Vec::new();
    let empty = Map::new();
    for top in ["metadata", "spec", "status"] {
        let (a, b) = (
            old[top].as_object().unwrap_or(&empty),
            new[top].as_object().unwrap_or(&empty),
        );
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let free = match top {
                "metadata" => matches!(k.as_str(), "resourceVersion" | "managedFields"),
                "status" => FREE_STATUS.contains(&k.as_str()),
                _ => false,
            };
            if !free && a.get(k) != b.get(k) {
                out.push(format!("{top}.{k}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubelets_may_change_only_a_claims_resize_status() {
        let old = json!({"metadata": {"name": "d", "resourceVersion": "1"}, "spec": {"volumeName": "pv"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}});
        let mut grown = old.clone();
        grown["metadata"]["resourceVersion"] = json!("2");
        grown["status"]["capacity"] = json!({"storage": "2Gi"});
        grown["status"]["conditions"] =
            json!([{"type": "FileSystemResizePending", "status": "True"}]);
        assert!(claim_changes(&old, &grown).is_empty());
        let mut relabelled = grown.clone();
        relabelled["metadata"]["labels"] = json!({"x": "y"});
        relabelled["status"]["phase"] = json!("Lost");
        assert_eq!(
            claim_changes(&old, &relabelled),
            ["metadata.labels", "status.phase"]
        );
    }

    #[test]
    fn kubelets_may_change_only_the_local_path_finalizer_of_a_volume() {
        let old = json!({"metadata": {"name": "pvc-1", "resourceVersion": "1",
            "finalizers": ["kubernetes.io/pv-protection"]},
            "spec": {"persistentVolumeReclaimPolicy": "Delete"}, "status": {"phase": "Bound"}});
        let mut held = old.clone();
        held["metadata"]["resourceVersion"] = json!("2");
        held["metadata"]["finalizers"] =
            json!(["kubernetes.io/pv-protection", crate::local_path::FINALIZER]);
        assert!(volume_changes(&old, &held).is_empty());
        assert!(volume_changes(&held, &old).is_empty(), "taken off again");
        let mut unprotected = held.clone();
        unprotected["metadata"]["finalizers"] = json!([crate::local_path::FINALIZER]);
        unprotected["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
        unprotected["metadata"]["labels"] = json!({"x": "y"});
        assert_eq!(
            volume_changes(&held, &unprotected),
            ["spec", "metadata.finalizers", "metadata.labels"]
        );
    }

    #[test]
    fn reserved_labels_are_upstreams() {
        assert!(reserved_label("node-restriction.kubernetes.io/pool"));
        assert!(reserved_label("node-role.kubernetes.io/control-plane"));
        assert!(reserved_label("example.k8s.io/x"));
        assert!(!reserved_label("kubernetes.io/hostname"));
        assert!(!reserved_label(
            "node.kubernetes.io/exclude-from-external-load-balancers"
        ));
        assert!(!reserved_label("kubelet.kubernetes.io/x"));
        assert!(!reserved_label("example.com/team"));
        assert!(!reserved_label("plain"));
    }
}
