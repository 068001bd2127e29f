//! NodeUnschedulable: cordoned nodes take only pods tolerating the unschedulable taint.

use k8s_openapi::api::core::v1::Taint;

use crate::framework::{Code, CycleState, FilterPlugin, Plugin, Status};
use crate::selectors::tolerates;
use crate::types::{NodeInfo, PodInfo};

/// The plugin's name.
pub const NAME: &str = "NodeUnschedulable";
/// Upstream's failure reason.
pub const REASON: &str = "node(s) were unschedulable";

/// The NodeUnschedulable plugin.
pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.unschedulable {
            return Status::success();
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
            Status::success()
        } else {
            Status::new(Code::UnschedulableAndUnresolvable, REASON)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{info, node, pod};
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn cordoned_nodes() {
        let n = NodeInfo::new(Arc::new(node(
            "n",
            "1",
            "1Gi",
            json!({"spec": {"unschedulable": true}}),
        )));
        let st = CycleState::default();
        let p = info(pod("p", "0", "0", json!({})));
        assert_eq!(NodeUnschedulable.filter(&st, &p, &n).reasons, vec![REASON]);
        let t = info(pod(
            "p",
            "0",
            "0",
            json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
        ));
        assert!(NodeUnschedulable.filter(&st, &t, &n).is_success());
    }
}
