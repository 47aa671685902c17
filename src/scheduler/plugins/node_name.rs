//! NodeName: a pod that names its node fits only that node.

use crate::scheduler::cache::{NodeInfo, PodInfo};
use crate::scheduler::framework::{Plugin, Rejection};

pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
        let wanted = pod.pod.spec.as_ref()?.node_name.as_deref()?;
        (!wanted.is_empty() && wanted != node.name)
            .then(|| Rejection::unresolvable("node(s) didn't match the requested node name"))
    }
}
