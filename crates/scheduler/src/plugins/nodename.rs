//! NodeName: a pod that names a node fits only that node.

use crate::framework::{Code, CycleState, FilterPlugin, Plugin, Status};
use crate::types::{NodeInfo, PodInfo};

/// The plugin's name.
pub const NAME: &str = "NodeName";
/// Upstream's failure reason.
pub const REASON: &str = "node(s) didn't match the requested node name";

/// The NodeName plugin.
pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match &pod.node_name {
            Some(n) if *n != node.name => Status::new(Code::UnschedulableAndUnresolvable, REASON),
            _ => Status::success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{info, node, pod};
    use crate::types::NodeInfo;
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn only_the_named_node() {
        let n1 = NodeInfo::new(Arc::new(node("n1", "1", "1Gi", json!({}))));
        let n2 = NodeInfo::new(Arc::new(node("n2", "1", "1Gi", json!({}))));
        let p = info(pod("p", "0", "0", json!({"spec": {"nodeName": "n1"}})));
        let st = CycleState::default();
        assert!(NodeName.filter(&st, &p, &n1).is_success());
        let s = NodeName.filter(&st, &p, &n2);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, vec![REASON]);
    }
}
