//! Whether a pod may be placed on a node, as the scheduler's filters and the DaemonSet
//! controller both decide it: node selector requirements (upstream's `NodeSelectorRequirement`
//! operators, `matchFields` on `metadata.name`), a pod's `nodeSelector` and required node
//! affinity, the node taints it does not tolerate, and host ports (the kubelet's admission
//! decides the same for the pods it is given).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint};

fn requirement_holds(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches the node named `name` with `labels` (an empty term
/// matches nothing).
pub fn term_matches(
    term: &NodeSelectorTerm,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_holds(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let v = (r.key == "metadata.name").then_some(name);
            requirement_holds(r, v)
        })
}

/// Whether the pod's nodeSelector and required node affinity admit the node.
pub fn affinity_admits(spec: &PodSpec, name: &str, labels: &BTreeMap<String, String>) -> bool {
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, name, labels)),
        None => true,
    }
}

/// The first of the node's `taints` with one of `effects` that the pod does not tolerate.
pub fn untolerated_taint<'a>(
    spec: &PodSpec,
    taints: &'a [Taint],
    effects: &[&str],
) -> Option<&'a Taint> {
    crate::taints::untolerated(
        taints,
        spec.tolerations.as_deref().unwrap_or_default(),
        effects,
    )
}

/// A host port: protocol, host IP (`0.0.0.0` when unset) and port.
pub type HostPort = (String, String, i32);

/// The host ports the pod's containers and init containers ask for.
pub fn host_ports(spec: &PodSpec) -> Vec<HostPort> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            Some((
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                port,
            ))
        })
        .collect()
}

/// Whether two host ports clash: same protocol and port, and the same host IP or either one
/// the wildcard.
pub fn ports_conflict(a: &HostPort, b: &HostPort) -> bool {
    let any = |ip: &str| ip == "0.0.0.0" || ip == "::" || ip.is_empty();
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || any(&a.1) || any(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_and_expressions_match_as_upstream() {
        let term: NodeSelectorTerm = serde_json::from_value(json!({
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}],
            "matchExpressions": [{"key": "size", "operator": "Gt", "values": ["3"]}],
        }))
        .expect("term");
        let labels = BTreeMap::from([("size".to_string(), "4".to_string())]);
        assert!(term_matches(&term, "n1", &labels));
        assert!(!term_matches(&term, "n2", &labels));
        assert!(!term_matches(&term, "n1", &BTreeMap::new()));
        assert!(!term_matches(&NodeSelectorTerm::default(), "n1", &labels));
    }

    #[test]
    fn wildcard_addresses_conflict_with_any() {
        let p = |ip: &str, port| ("TCP".to_string(), ip.to_string(), port);
        assert!(ports_conflict(&p("0.0.0.0", 80), &p("10.0.0.1", 80)));
        assert!(!ports_conflict(&p("10.0.0.2", 80), &p("10.0.0.1", 80)));
        assert!(!ports_conflict(&p("0.0.0.0", 80), &p("0.0.0.0", 81)));
        assert!(!ports_conflict(
            &p("0.0.0.0", 80),
            &("UDP".into(), "0.0.0.0".into(), 80)
        ));
    }
}
