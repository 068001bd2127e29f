//! InterPodAffinity: required and preferred pod affinity and anti-affinity by topology key,
//! including the anti-affinity of pods already placed.

use std::collections::HashMap;

use serde::Deserialize;

use crate::framework::{
    Code, CycleState, FilterPlugin, NodeScore, Plugin, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::types::{AffinityTerm, NodeInfo, PodInfo, Snapshot, WeightedTerm};

/// The plugin's name.
pub const NAME: &str = "InterPodAffinity";
const SCORE_KEY: &str = "InterPodAffinity/score";
/// Upstream's reason when a placed pod's anti-affinity rejects the pod.
pub const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
/// Upstream's reason when the pod's affinity is not met.
pub const AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Upstream's reason when the pod's anti-affinity is not met.
pub const ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";

type Pair = (String, String);

/// InterPodAffinityArgs.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Args {
    /// The score weight of existing pods' required affinity terms.
    #[serde(default = "one")]
    pub hard_pod_affinity_weight: i64,
    /// Whether to ignore existing pods' preferred terms when the pod has none.
    #[serde(default)]
    pub ignore_preferred_terms_of_existing_pods: bool,
}

fn one() -> i64 {
    1
}

/// The InterPodAffinity plugin.
pub struct InterPodAffinity {
    args: Args,
}

impl InterPodAffinity {
    /// Builds the plugin from its arguments.
    pub fn new(args: Option<&serde_json::Value>) -> anyhow::Result<InterPodAffinity> {
        let args = match args {
            Some(v) => serde_json::from_value(v.clone())?,
            None => Args {
                hard_pod_affinity_weight: 1,
                ignore_preferred_terms_of_existing_pods: false,
            },
        };
        Ok(InterPodAffinity { args })
    }
}

#[derive(Clone, Default)]
struct FilterState {
    existing_anti: HashMap<Pair, i64>,
    affinity: HashMap<Pair, i64>,
    anti: HashMap<Pair, i64>,
}

fn bump(m: &mut HashMap<Pair, i64>, node: &NodeInfo, key: &str, v: i64) {
    if let Some(val) = node.labels.get(key) {
        let k = (key.to_string(), val.clone());
        let e = m.entry(k.clone()).or_default();
        *e += v;
        if *e == 0 {
            m.remove(&k);
        }
    }
}

fn matches_all(terms: &[AffinityTerm], pod: &PodInfo, s: &Snapshot) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches(pod, s))
}

impl FilterState {
    /// Accounts `other` on `node` for the incoming `pod` (`updateWithPod`).
    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, s: &Snapshot, v: i64) {
        for t in &other.required_anti_affinity {
            if t.matches(pod, s) {
                bump(&mut self.existing_anti, node, &t.topology_key, v);
            }
        }
        if matches_all(&pod.required_affinity, other, s) {
            for t in &pod.required_affinity {
                bump(&mut self.affinity, node, &t.topology_key, v);
            }
        }
        for t in &pod.required_anti_affinity {
            if t.matches(other, s) {
                bump(&mut self.anti, node, &t.topology_key, v);
            }
        }
    }
}

impl Plugin for InterPodAffinity {
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

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        s: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let own = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if !own && s.nodes_with_affinity_pods == 0 {
            return (None, Status::skip());
        }
        let mut st = FilterState::default();
        for node in &s.nodes {
            if own {
                for other in &node.pods {
                    st.update(pod, other, node, s, 1);
                }
            } else if node.pods_with_required_anti_affinity > 0 {
                for other in &node.pods {
                    for t in &other.required_anti_affinity {
                        if t.matches(pod, s) {
                            bump(&mut st.existing_anti, node, &t.topology_key, 1);
                        }
                    }
                }
            }
        }
        if !own && st.existing_anti.is_empty() {
            return (None, Status::skip());
        }
        state.write(NAME, st);
        (None, Status::success())
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        s: &Snapshot,
    ) {
        if let Some(st) = state.read_mut::<FilterState>(NAME) {
            st.update(pod, other, node, s, 1);
        }
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        s: &Snapshot,
    ) {
        if let Some(st) = state.read_mut::<FilterState>(NAME) {
            st.update(pod, other, node, s, -1);
        }
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(st) = state.read::<FilterState>(NAME) else {
            return Status::success();
        };
        if !st.existing_anti.is_empty()
            && node.labels.iter().any(|(k, v)| {
                st.existing_anti
                    .get(&(k.clone(), v.clone()))
                    .is_some_and(|c| *c > 0)
            })
        {
            return Status::new(Code::Unschedulable, EXISTING_ANTI_AFFINITY);
        }
        if !pod.required_affinity.is_empty() {
            let mut exist = true;
            for t in &pod.required_affinity {
                let Some(v) = node.labels.get(&t.topology_key) else {
                    return Status::new(Code::UnschedulableAndUnresolvable, AFFINITY);
                };
                if st
                    .affinity
                    .get(&(t.topology_key.clone(), v.clone()))
                    .copied()
                    .unwrap_or(0)
                    <= 0
                {
                    exist = false;
                }
            }
            // The first pod of a group with affinity to itself may go anywhere the keys exist.
            if !(exist || st.affinity.is_empty() && self_affinity(pod)) {
                return Status::new(Code::UnschedulableAndUnresolvable, AFFINITY);
            }
        }
        for t in &pod.required_anti_affinity {
            if let Some(v) = node.labels.get(&t.topology_key) {
                if st
                    .anti
                    .get(&(t.topology_key.clone(), v.clone()))
                    .copied()
                    .unwrap_or(0)
                    > 0
                {
                    return Status::new(Code::Unschedulable, ANTI_AFFINITY);
                }
            }
        }
        Status::success()
    }
}

fn self_affinity(pod: &PodInfo) -> bool {
    // Namespace selectors need the snapshot; a term naming the pod's own namespace or selecting
    // all namespaces is what matters for a pod matching itself.
    pod.required_affinity.iter().all(|t| {
        (t.namespaces.contains(&pod.namespace)
            || t.namespace_selector
                .as_ref()
                .is_some_and(|s| s.is_everything()))
            && t.selector.matches(&pod.labels)
    })
}

#[derive(Clone, Default)]
struct ScoreState {
    scores: HashMap<String, HashMap<String, i64>>,
}

impl ScoreState {
    fn term(
        &mut self,
        t: &AffinityTerm,
        weight: i64,
        target: &PodInfo,
        node: &NodeInfo,
        s: &Snapshot,
    ) {
        if t.matches(target, s) {
            if let Some(v) = node.labels.get(&t.topology_key) {
                *self
                    .scores
                    .entry(t.topology_key.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_default() += weight;
            }
        }
    }
    fn terms(
        &mut self,
        ts: &[WeightedTerm],
        sign: i64,
        target: &PodInfo,
        node: &NodeInfo,
        s: &Snapshot,
    ) {
        for t in ts {
            self.term(&t.term, t.weight * sign, target, node, s);
        }
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[usize],
        s: &Snapshot,
    ) -> Status {
        let has = !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        if !has
            && (self.args.ignore_preferred_terms_of_existing_pods
                || s.nodes_with_affinity_pods == 0)
        {
            return Status::skip();
        }
        let mut st = ScoreState::default();
        for node in &s.nodes {
            if !has && node.pods_with_affinity == 0 {
                continue;
            }
            for other in &node.pods {
                if !has && !other.has_affinity() {
                    continue;
                }
                st.terms(&pod.preferred_affinity, 1, other, node, s);
                st.terms(&pod.preferred_anti_affinity, -1, other, node, s);
                if self.args.hard_pod_affinity_weight > 0 {
                    for t in &other.required_affinity {
                        st.term(t, self.args.hard_pod_affinity_weight, pod, node, s);
                    }
                }
                st.terms(&other.preferred_affinity, 1, pod, node, s);
                st.terms(&other.preferred_anti_affinity, -1, pod, node, s);
            }
        }
        if st.scores.is_empty() {
            return Status::skip();
        }
        state.write(SCORE_KEY, st);
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(st) = state.read::<ScoreState>(SCORE_KEY) else {
            return 0;
        };
        st.scores
            .iter()
            .filter_map(|(k, vals)| node.labels.get(k).and_then(|v| vals.get(v)))
            .sum()
    }
    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) {
        let min = scores.iter().map(|s| s.score).min().unwrap_or(0);
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
        let diff = max - min;
        for s in scores.iter_mut() {
            s.score = if diff > 0 {
                (MAX_NODE_SCORE as f64 * ((s.score - min) as f64 / diff as f64)) as i64
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{info, node, pod};
    use serde_json::json;
    use std::sync::Arc;

    fn zone_node(name: &str, zone: &str) -> k8s_openapi::api::core::v1::Node {
        node(
            name,
            "4",
            "8Gi",
            json!({"metadata": {"labels": {"zone": zone}}}),
        )
    }

    fn placed(
        name: &str,
        node: &str,
        labels: serde_json::Value,
        affinity: serde_json::Value,
    ) -> k8s_openapi::api::core::v1::Pod {
        pod(
            name,
            "0",
            "0",
            json!({"metadata": {"labels": labels},
            "spec": {"nodeName": node, "affinity": affinity}}),
        )
    }

    fn filter_all(p: &PodInfo, s: &Snapshot) -> Vec<Status> {
        let pl = InterPodAffinity::new(None).unwrap();
        let mut st = CycleState::default();
        let (_, status) = pl.pre_filter(&mut st, p, s);
        if status.code == Code::Skip {
            return s.nodes.iter().map(|_| Status::success()).collect();
        }
        s.nodes.iter().map(|n| pl.filter(&st, p, n)).collect()
    }

    fn anti(app: &str, key: &str) -> serde_json::Value {
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}})
    }

    #[test]
    fn required_anti_affinity_by_hostname() {
        let s = Snapshot::new(
            vec![
                node("a", "4", "8Gi", json!({})),
                node("b", "4", "8Gi", json!({})),
            ],
            vec![placed("w1", "a", json!({"app": "web"}), json!({}))],
        );
        let p = info(placed(
            "w2",
            "",
            json!({"app": "web"}),
            anti("web", "kubernetes.io/hostname"),
        ));
        let r = filter_all(&p, &s);
        assert_eq!(r[0].reasons, vec![ANTI_AFFINITY]);
        assert_eq!(r[0].code, Code::Unschedulable);
        assert!(r[1].is_success());
    }

    #[test]
    fn existing_pods_anti_affinity() {
        let s = Snapshot::new(
            vec![
                zone_node("a", "z1"),
                zone_node("b", "z1"),
                zone_node("c", "z2"),
            ],
            vec![placed("db", "a", json!({"app": "db"}), anti("web", "zone"))],
        );
        let p = info(pod(
            "w",
            "0",
            "0",
            json!({"metadata": {"labels": {"app": "web"}}}),
        ));
        let r = filter_all(&p, &s);
        assert_eq!(r[0].reasons, vec![EXISTING_ANTI_AFFINITY]);
        assert_eq!(r[1].reasons, vec![EXISTING_ANTI_AFFINITY]);
        assert!(r[2].is_success());
    }

    #[test]
    fn required_affinity_and_first_pod_of_group() {
        let aff = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}]}});
        let s = Snapshot::new(
            vec![
                zone_node("a", "z1"),
                zone_node("b", "z2"),
                node("c", "4", "8Gi", json!({})),
            ],
            vec![placed("c1", "a", json!({"app": "cache"}), json!({}))],
        );
        let p = info(placed("x", "", json!({"app": "web"}), aff.clone()));
        let r = filter_all(&p, &s);
        assert!(r[0].is_success());
        assert_eq!(r[1].reasons, vec![AFFINITY]);
        assert_eq!(r[1].code, Code::UnschedulableAndUnresolvable);
        assert_eq!(r[2].reasons, vec![AFFINITY]);
        // A pod matching its own affinity, with no matching pod anywhere, may start the group.
        let empty = Snapshot::new(
            vec![zone_node("a", "z1"), node("c", "4", "8Gi", json!({}))],
            vec![],
        );
        let first = info(placed("c0", "", json!({"app": "cache"}), aff));
        let r = filter_all(&first, &empty);
        assert!(r[0].is_success());
        assert!(!r[1].is_success());
    }

    #[test]
    fn add_and_remove_pod_update_state() {
        let s = Snapshot::new(vec![node("a", "4", "8Gi", json!({}))], vec![]);
        let pl = InterPodAffinity::new(None).unwrap();
        let p = info(placed(
            "w2",
            "",
            json!({"app": "web"}),
            anti("web", "kubernetes.io/hostname"),
        ));
        let mut st = CycleState::default();
        pl.pre_filter(&mut st, &p, &s);
        let other = info(placed("w1", "a", json!({"app": "web"}), json!({})));
        pl.add_pod(&mut st, &p, &other, &s.nodes[0], &s);
        assert!(!pl.filter(&st, &p, &s.nodes[0]).is_success());
        pl.remove_pod(&mut st, &p, &other, &s.nodes[0], &s);
        assert!(pl.filter(&st, &p, &s.nodes[0]).is_success());
    }

    #[test]
    fn preferred_terms_score() {
        let s = Snapshot::new(
            vec![zone_node("a", "z1"), zone_node("b", "z2")],
            vec![placed("c1", "a", json!({"app": "cache"}), json!({}))],
        );
        let p = info(placed(
            "x",
            "",
            json!({}),
            json!({"podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm":
                {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}}]}}),
        ));
        let pl = InterPodAffinity::new(None).unwrap();
        let mut st = CycleState::default();
        assert!(pl.pre_score(&mut st, &p, &[0, 1], &s).is_success());
        let mut scores: Vec<NodeScore> = s
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeScore {
                node: i,
                score: pl.score(&st, &p, n),
            })
            .collect();
        pl.normalize(&st, &p, &mut scores);
        assert_eq!((scores[0].score, scores[1].score), (100, 0));
        let _ = Arc::new(0);
    }
}
