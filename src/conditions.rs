//! Reading the conditions of Nodes and Pods (`Ready`, `Initialized`, readiness gates...), for
//! every part that acts on them: node lifecycle, endpoints, jobs, the simulated kubelet and the
//! scale benchmark.

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition};

/// A condition of either kind: its type and status.
trait Condition {
    fn kind(&self) -> &str;
    fn status(&self) -> &str;
}

impl Condition for NodeCondition {
    fn kind(&self) -> &str {
        &self.type_
    }
    fn status(&self) -> &str {
        &self.status
    }
}

impl Condition for PodCondition {
    fn kind(&self) -> &str {
        &self.type_
    }
    fn status(&self) -> &str {
        &self.status
    }
}

fn status_of<'a, C: Condition>(conditions: Option<&'a Vec<C>>, ty: &str) -> Option<&'a str> {
    conditions?
        .iter()
        .find(|c| c.kind() == ty)
        .map(|c| c.status())
}

/// The status (`True`, `False`, `Unknown`) of the node's condition `ty`, if it has one.
pub fn node_condition<'a>(node: &'a Node, ty: &str) -> Option<&'a str> {
    status_of(node.status.as_ref()?.conditions.as_ref(), ty)
}

/// Whether the node's Ready condition is True.
pub fn node_ready(node: &Node) -> bool {
    node_condition(node, "Ready") == Some("True")
}

/// The status of the pod's condition `ty`, if it has one.
pub fn pod_condition<'a>(pod: &'a Pod, ty: &str) -> Option<&'a str> {
    status_of(pod.status.as_ref()?.conditions.as_ref(), ty)
}

/// Whether the pod's condition `ty` is True.
pub fn pod_true(pod: &Pod, ty: &str) -> bool {
    pod_condition(pod, ty) == Some("True")
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod_true(pod, "Ready")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_read_by_type() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "Unknown"}]}}))
        .unwrap_or_default();
        assert_eq!(node_condition(&node, "Ready"), Some("Unknown"));
        assert!(!node_ready(&node));
        assert_eq!(node_condition(&node, "DiskPressure"), None);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap_or_default();
        assert!(pod_ready(&pod));
        assert!(!pod_true(&pod, "Initialized"));
        assert!(!pod_ready(&Pod::default()));
    }
}
