//! TaintToleration: NoSchedule/NoExecute taints must be tolerated; PreferNoSchedule taints
//! lower a node's score.

use k8s_openapi::api::core::v1::Toleration;

use crate::framework::{
    default_normalize, Code, CycleState, FilterPlugin, NodeScore, Plugin, PreScorePlugin,
    ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::selectors::{find_untolerated, tolerates};
use crate::types::{NodeInfo, PodInfo, Snapshot};

/// The plugin's name.
pub const NAME: &str = "TaintToleration";

/// The TaintToleration plugin.
pub struct TaintToleration;

#[derive(Clone)]
struct PreferState(Vec<Toleration>);

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match find_untolerated(&node.taints, &pod.tolerations, |t| {
            t.effect == "NoSchedule" || t.effect == "NoExecute"
        }) {
            None => Status::success(),
            Some(t) => Status::new(
                Code::UnschedulableAndUnresolvable,
                format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    t.key,
                    t.value.as_deref().unwrap_or("")
                ),
            ),
        }
    }
}

impl PreScorePlugin for TaintToleration {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[usize],
        _: &Snapshot,
    ) -> Status {
        let tols = pod
            .tolerations
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .cloned()
            .collect();
        state.write(NAME, PreferState(tols));
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        let empty = Vec::new();
        let tols = state
            .read::<PreferState>(NAME)
            .map(|s| &s.0)
            .unwrap_or(&empty);
        node.taints
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .filter(|t| !tols.iter().any(|tol| tolerates(tol, t)))
            .count() as i64
    }
    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) {
        default_normalize(MAX_NODE_SCORE, true, scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{info, node, pod};
    use serde_json::json;
    use std::sync::Arc;

    fn tainted(name: &str, taints: serde_json::Value) -> NodeInfo {
        NodeInfo::new(Arc::new(node(
            name,
            "1",
            "1Gi",
            json!({"spec": {"taints": taints}}),
        )))
    }

    #[test]
    fn filter_untolerated_taints() {
        let n = tainted(
            "cp",
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
        );
        let st = CycleState::default();
        let p = info(pod("p", "0", "0", json!({})));
        let s = TaintToleration.filter(&st, &p, &n);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(
            s.reasons,
            vec!["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"]
        );
        let t = info(pod(
            "p",
            "0",
            "0",
            json!({"spec": {"tolerations": [
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]}}),
        ));
        assert!(TaintToleration.filter(&st, &t, &n).is_success());
        let soft = tainted(
            "s",
            json!([{"key": "k", "value": "v", "effect": "PreferNoSchedule"}]),
        );
        assert!(TaintToleration.filter(&st, &p, &soft).is_success());
    }

    #[test]
    fn prefer_no_schedule_scores_lower() {
        let s = crate::types::Snapshot::default();
        let a = tainted(
            "a",
            json!([{"key": "k", "value": "v", "effect": "PreferNoSchedule"}]),
        );
        let b = tainted("b", json!([]));
        let p = info(pod("p", "0", "0", json!({})));
        let mut st = CycleState::default();
        TaintToleration.pre_score(&mut st, &p, &[], &s);
        let mut scores = vec![
            NodeScore {
                node: 0,
                score: TaintToleration.score(&st, &p, &a),
            },
            NodeScore {
                node: 1,
                score: TaintToleration.score(&st, &p, &b),
            },
        ];
        TaintToleration.normalize(&st, &p, &mut scores);
        assert_eq!((scores[0].score, scores[1].score), (0, 100));
        let tol = info(pod(
            "p",
            "0",
            "0",
            json!({"spec": {"tolerations": [{"key": "k", "operator": "Exists"}]}}),
        ));
        let mut st = CycleState::default();
        TaintToleration.pre_score(&mut st, &tol, &[], &s);
        assert_eq!(TaintToleration.score(&st, &tol, &a), 0);
    }
}
