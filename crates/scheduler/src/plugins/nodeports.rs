//! NodePorts: host ports may not collide on a node.

use crate::framework::{Code, CycleState, FilterPlugin, Plugin, Status};
use crate::types::{NodeInfo, PodInfo};

/// The plugin's name.
pub const NAME: &str = "NodePorts";
/// Upstream's failure reason.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// The NodePorts plugin.
pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let conflict = pod
            .host_ports
            .iter()
            .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
        if conflict {
            Status::new(Code::Unschedulable, REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{info, node, pod};
    use serde_json::json;
    use std::sync::Arc;

    fn with_port(name: &str, port: i32, ip: &str, proto: &str) -> PodInfo {
        info(pod(
            name,
            "0",
            "0",
            json!({"spec": {"containers": [{"name": "c",
            "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": proto}]}]}}),
        ))
    }

    #[test]
    fn host_port_conflicts() {
        let mut n = NodeInfo::new(Arc::new(node("n", "1", "1Gi", json!({}))));
        n.add_pod(Arc::new(with_port("a", 8080, "127.0.0.1", "TCP")));
        let st = CycleState::default();
        assert_eq!(
            NodePorts
                .filter(&st, &with_port("b", 8080, "0.0.0.0", "TCP"), &n)
                .reasons,
            vec![REASON]
        );
        assert_eq!(
            NodePorts
                .filter(&st, &with_port("b", 8080, "127.0.0.1", "TCP"), &n)
                .code,
            Code::Unschedulable
        );
        assert!(NodePorts
            .filter(&st, &with_port("b", 8080, "10.0.0.1", "TCP"), &n)
            .is_success());
        assert!(NodePorts
            .filter(&st, &with_port("b", 8080, "127.0.0.1", "UDP"), &n)
            .is_success());
        assert!(NodePorts
            .filter(&st, &with_port("b", 8081, "0.0.0.0", "TCP"), &n)
            .is_success());
    }
}
