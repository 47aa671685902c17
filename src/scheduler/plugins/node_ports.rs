//! NodePorts: a pod's host ports must be free on the node (same protocol and port, and the
//! same host IP or either one the wildcard).

use crate::placement::ports_conflict;
use crate::scheduler::cache::{NodeInfo, PodInfo};
use crate::scheduler::framework::{Plugin, Rejection};

pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
        let taken = pod
            .ports
            .iter()
            .any(|p| node.ports.iter().any(|used| ports_conflict(p, used)));
        taken.then(|| {
            Rejection::resolvable(vec![
                "node(s) didn't have free ports for the requested pod ports".into(),
            ])
        })
    }
}
