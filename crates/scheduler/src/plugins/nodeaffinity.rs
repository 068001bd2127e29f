//! NodeAffinity: `nodeSelector` and required node affinity filter; preferred terms score.

use crate::framework::{
    default_normalize, Code, CycleState, FilterPlugin, NodeScore, Plugin, PreFilterPlugin,
    PreFilterResult, PreScorePlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::types::{NodeInfo, PodInfo, Snapshot};

/// The plugin's name.
pub const NAME: &str = "NodeAffinity";
/// Upstream's failure reason.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// The NodeAffinity plugin.
pub struct NodeAffinity;

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
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

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let spec = pod.pod.spec.as_ref();
        let has_selector = spec
            .and_then(|s| s.node_selector.as_ref())
            .is_some_and(|m| !m.is_empty());
        let Some(terms) = pod.node_affinity.terms() else {
            if has_selector {
                return (None, Status::success());
            }
            return (None, Status::skip());
        };
        // When every term pins node names, only those nodes can fit.
        let mut names: Vec<String> = Vec::new();
        for t in terms {
            match t.name_set() {
                Some(n) => names.extend(n),
                None => return (None, Status::success()),
            }
        }
        names.sort();
        names.dedup();
        if names.is_empty() {
            return (
                None,
                Status::new(Code::UnschedulableAndUnresolvable, REASON),
            );
        }
        (
            Some(PreFilterResult {
                node_names: Some(names),
            }),
            Status::success(),
        )
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if pod.node_affinity.matches(&node.labels, &node.name) {
            Status::success()
        } else {
            Status::new(Code::UnschedulableAndUnresolvable, REASON)
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(&self, _: &mut CycleState, pod: &PodInfo, _: &[usize], _: &Snapshot) -> Status {
        if pod.preferred_node_affinity.is_empty() {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        pod.preferred_node_affinity
            .iter()
            .filter(|t| t.term.matches(&node.labels, &node.name))
            .map(|t| t.weight)
            .sum()
    }
    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) {
        default_normalize(MAX_NODE_SCORE, false, scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{info, node, pod};
    use serde_json::json;
    use std::sync::Arc;

    fn labelled(name: &str, labels: serde_json::Value) -> NodeInfo {
        NodeInfo::new(Arc::new(node(
            name,
            "1",
            "1Gi",
            json!({"metadata": {"labels": labels}}),
        )))
    }

    #[test]
    fn selector_and_required_affinity() {
        let ssd = labelled("a", json!({"disk": "ssd", "zone": "z1"}));
        let hdd = labelled("b", json!({"disk": "hdd", "zone": "z2"}));
        let st = CycleState::default();
        let p = info(pod(
            "p",
            "0",
            "0",
            json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
        ));
        assert!(NodeAffinity.filter(&st, &p, &ssd).is_success());
        let s = NodeAffinity.filter(&st, &p, &hdd);
        assert_eq!(
            (s.code, s.reasons.clone()),
            (Code::UnschedulableAndUnresolvable, vec![REASON.to_string()])
        );
        let aff = info(pod(
            "p",
            "0",
            "0",
            json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z9"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]}
            ]}}}}}),
        ));
        assert!(!NodeAffinity.filter(&st, &aff, &ssd).is_success());
        assert!(NodeAffinity.filter(&st, &aff, &hdd).is_success());
    }

    #[test]
    fn match_fields_narrow_prefilter() {
        let p = info(pod(
            "p",
            "0",
            "0",
            json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}
            ]}}}}}),
        ));
        let mut st = CycleState::default();
        let (r, s) = NodeAffinity.pre_filter(&mut st, &p, &Snapshot::default());
        assert!(s.is_success());
        assert_eq!(r.unwrap().node_names, Some(vec!["b".to_string()]));
        assert!(NodeAffinity
            .filter(&st, &p, &labelled("b", json!({})))
            .is_success());
        assert!(!NodeAffinity
            .filter(&st, &p, &labelled("a", json!({})))
            .is_success());
        let plain = info(pod("p", "0", "0", json!({})));
        assert_eq!(
            NodeAffinity
                .pre_filter(&mut st, &plain, &Snapshot::default())
                .1
                .code,
            Code::Skip
        );
    }

    #[test]
    fn preferred_terms_score() {
        let p = info(pod(
            "p",
            "0",
            "0",
            json!({"spec": {"affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 20, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
                {"weight": 80, "preference": {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}}
            ]}}}}),
        ));
        let st = CycleState::default();
        let a = labelled("a", json!({"disk": "ssd", "zone": "z1"}));
        let b = labelled("b", json!({"zone": "z1"}));
        let c = labelled("c", json!({}));
        let mut scores: Vec<NodeScore> = [&a, &b, &c]
            .iter()
            .enumerate()
            .map(|(i, n)| NodeScore {
                node: i,
                score: NodeAffinity.score(&st, &p, n),
            })
            .collect();
        NodeAffinity.normalize(&st, &p, &mut scores);
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            vec![100, 80, 0]
        );
    }
}
