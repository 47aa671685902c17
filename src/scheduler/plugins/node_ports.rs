//! NodePorts: a pod's host ports must be free on the node (same protocol and port, and the
//! same host IP or either one the wildcard).

use crate::scheduler::cache::{HostPort, NodeInfo, PodInfo};
use crate::scheduler::framework::{Plugin, Rejection};

pub struct NodePorts;

fn conflicts(a: &HostPort, b: &HostPort) -> bool {
    let any = |ip: &str| ip == "0.0.0.0" || ip == "::" || ip.is_empty();
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || any(&a.1) || any(&b.1))
}

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
        let taken = pod
            .ports
            .iter()
            .any(|p| node.ports.iter().any(|used| conflicts(p, used)));
        taken.then(|| {
            Rejection::resolvable(vec![
                "node(s) didn't have free ports for the requested pod ports".into(),
            ])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::conflicts;

    #[test]
    fn wildcard_addresses_conflict_with_any() {
        let p = |ip: &str, port| ("TCP".to_string(), ip.to_string(), port);
        assert!(conflicts(&p("0.0.0.0", 80), &p("10.0.0.1", 80)));
        assert!(!conflicts(&p("10.0.0.2", 80), &p("10.0.0.1", 80)));
        assert!(!conflicts(&p("0.0.0.0", 80), &p("0.0.0.0", 81)));
        assert!(!conflicts(
            &p("0.0.0.0", 80),
            &("UDP".into(), "0.0.0.0".into(), 80)
        ));
    }
}
