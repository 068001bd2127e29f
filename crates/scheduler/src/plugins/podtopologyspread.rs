//! PodTopologySpread: keeps matching pods spread across topology domains within `maxSkew`;
//! pods without constraints get the cluster default ones (hostname 3, zone 5, ScheduleAnyway)
//! built from the Services and workloads selecting them.

use std::collections::HashMap;

use serde::Deserialize;

use crate::framework::{
    Code, CycleState, FilterPlugin, NodeScore, Plugin, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::selectors::{find_untolerated, Labels, Op, Requirement, Selector};
use crate::types::{NodeInfo, PodInfo, Snapshot};

/// The plugin's name.
pub const NAME: &str = "PodTopologySpread";
const SCORE_KEY: &str = "PodTopologySpread/score";
/// Upstream's reason when the skew would be exceeded.
pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
/// Upstream's reason when a node lacks a topology key.
pub const REASON_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
const HOSTNAME: &str = "kubernetes.io/hostname";

/// A default constraint from the plugin arguments.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultConstraint {
    /// maxSkew.
    pub max_skew: i64,
    /// topologyKey.
    pub topology_key: String,
    /// `DoNotSchedule` or `ScheduleAnyway`.
    pub when_unsatisfiable: String,
}

/// PodTopologySpreadArgs.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Args {
    /// Constraints for pods without their own (with `defaultingType: List`).
    #[serde(default)]
    pub default_constraints: Vec<DefaultConstraint>,
    /// `System` (upstream's built-in defaults) or `List`.
    #[serde(default = "system")]
    pub defaulting_type: String,
}

fn system() -> String {
    "System".into()
}

/// A spread constraint, compiled.
#[derive(Clone, Debug)]
pub struct Constraint {
    /// maxSkew.
    pub max_skew: i64,
    /// topologyKey.
    pub topology_key: String,
    /// The pods counted.
    pub selector: Selector,
    /// minDomains (1 when unset).
    pub min_domains: i64,
    /// nodeAffinityPolicy is Honor (the default).
    pub honor_affinity: bool,
    /// nodeTaintsPolicy is Honor (default Ignore).
    pub honor_taints: bool,
}

impl Constraint {
    fn includes(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        if self.honor_affinity && !pod.node_affinity.matches(&node.labels, &node.name) {
            return false;
        }
        if self.honor_taints
            && find_untolerated(&node.taints, &pod.tolerations, |t| {
                t.effect == "NoSchedule" || t.effect == "NoExecute"
            })
            .is_some()
        {
            return false;
        }
        true
    }
}

fn has_all_keys(labels: &Labels, cs: &[Constraint]) -> bool {
    cs.iter().all(|c| labels.contains_key(&c.topology_key))
}

fn count_matching(node: &NodeInfo, sel: &Selector, ns: &str) -> i64 {
    node.pods
        .iter()
        .filter(|p| !p.terminating && p.namespace == ns && sel.matches(&p.labels))
        .count() as i64
}

/// The PodTopologySpread plugin.
pub struct PodTopologySpread {
    defaults: Vec<DefaultConstraint>,
    system_defaulted: bool,
}

impl PodTopologySpread {
    /// Builds the plugin from its arguments.
    pub fn new(args: Option<&serde_json::Value>) -> anyhow::Result<PodTopologySpread> {
        let args: Args = match args {
            Some(v) => serde_json::from_value(v.clone())?,
            None => Args {
                default_constraints: Vec::new(),
                defaulting_type: system(),
            },
        };
        let system_defaulted = args.defaulting_type == "System";
        let defaults = if system_defaulted {
            vec![
                DefaultConstraint {
                    max_skew: 3,
                    topology_key: HOSTNAME.into(),
                    when_unsatisfiable: "ScheduleAnyway".into(),
                },
                DefaultConstraint {
                    max_skew: 5,
                    topology_key: "topology.kubernetes.io/zone".into(),
                    when_unsatisfiable: "ScheduleAnyway".into(),
                },
            ]
        } else {
            args.default_constraints
        };
        Ok(PodTopologySpread {
            defaults,
            system_defaulted,
        })
    }

    /// The constraints of `action` (`DoNotSchedule`/`ScheduleAnyway`) that apply to a pod.
    pub fn constraints(&self, pod: &PodInfo, snapshot: &Snapshot, action: &str) -> Vec<Constraint> {
        let own = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .filter(|c| !c.is_empty());
        if let Some(own) = own {
            return own
                .iter()
                .filter(|c| c.when_unsatisfiable == action)
                .map(|c| {
                    let mut selector = Selector::from_label_selector(c.label_selector.as_ref());
                    if c.label_selector.is_some() {
                        for k in c.match_label_keys.iter().flatten() {
                            if let Some(v) = pod.labels.get(k) {
                                selector.reqs.push(Requirement {
                                    key: k.clone(),
                                    op: Op::In,
                                    values: vec![v.clone()],
                                });
                            }
                        }
                    }
                    Constraint {
                        max_skew: c.max_skew as i64,
                        topology_key: c.topology_key.clone(),
                        selector,
                        min_domains: c.min_domains.unwrap_or(1) as i64,
                        honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                        honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                    }
                })
                .collect();
        }
        let wanted: Vec<&DefaultConstraint> = self
            .defaults
            .iter()
            .filter(|d| d.when_unsatisfiable == action)
            .collect();
        if wanted.is_empty() {
            return Vec::new();
        }
        let selector = default_selector(pod, snapshot);
        if selector.reqs.is_empty() {
            return Vec::new();
        }
        wanted
            .into_iter()
            .map(|d| Constraint {
                max_skew: d.max_skew,
                topology_key: d.topology_key.clone(),
                selector: selector.clone(),
                min_domains: 1,
                honor_affinity: true,
                honor_taints: false,
            })
            .collect()
    }
}

/// Upstream's `DefaultSelector`: the union of the selectors of the Services, replication
/// controllers, ReplicaSets and StatefulSets that select the pod.
pub fn default_selector(pod: &PodInfo, snapshot: &Snapshot) -> Selector {
    let mut set = Labels::new();
    let mut reqs = Vec::new();
    for o in snapshot.owner_selectors.values() {
        if o.namespace != pod.namespace || o.selector.reqs.is_empty() {
            continue;
        }
        if !o.selector.matches(&pod.labels) {
            continue;
        }
        match &o.as_map {
            Some(m) => set.extend(m.iter().map(|(k, v)| (k.clone(), v.clone()))),
            None => reqs.extend(o.selector.reqs.iter().cloned()),
        }
    }
    let mut sel = Selector::from_map(&set);
    sel.reqs.extend(reqs);
    sel
}

#[derive(Clone)]
struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
    mins: Vec<Option<i64>>,
}

impl FilterState {
    fn recompute_min(&mut self, i: usize) {
        self.mins[i] = self.counts[i].values().min().copied();
    }
    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        if other.namespace != pod.namespace || !has_all_keys(&node.labels, &self.constraints) {
            return;
        }
        for i in 0..self.constraints.len() {
            let c = &self.constraints[i];
            if !c.includes(pod, node) || !c.selector.matches(&other.labels) {
                continue;
            }
            let v = node.labels[&c.topology_key].clone();
            *self.counts[i].entry(v).or_default() += delta;
            self.recompute_min(i);
        }
    }
}

impl Plugin for PodTopologySpread {
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

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        s: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let constraints = self.constraints(pod, s, "DoNotSchedule");
        if constraints.is_empty() {
            return (None, Status::skip());
        }
        let mut counts = vec![HashMap::<String, i64>::new(); constraints.len()];
        for node in &s.nodes {
            if !has_all_keys(&node.labels, &constraints) {
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if !c.includes(pod, node) {
                    continue;
                }
                let v = node.labels[&c.topology_key].clone();
                *counts[i].entry(v).or_default() +=
                    count_matching(node, &c.selector, &pod.namespace);
            }
        }
        let mut st = FilterState {
            mins: vec![None; constraints.len()],
            constraints,
            counts,
        };
        for i in 0..st.constraints.len() {
            st.recompute_min(i);
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
        _: &Snapshot,
    ) {
        if let Some(st) = state.read_mut::<FilterState>(NAME) {
            st.update(pod, other, node, 1);
        }
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot,
    ) {
        if let Some(st) = state.read_mut::<FilterState>(NAME) {
            st.update(pod, other, node, -1);
        }
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(st) = state.read::<FilterState>(NAME) else {
            return Status::success();
        };
        for (i, c) in st.constraints.iter().enumerate() {
            let Some(v) = node.labels.get(&c.topology_key) else {
                return Status::new(Code::UnschedulableAndUnresolvable, REASON_LABEL);
            };
            let Some(mut min) = st.mins[i] else {
                continue;
            };
            if (st.counts[i].len() as i64) < c.min_domains {
                min = 0;
            }
            let own = i64::from(c.selector.matches(&pod.labels));
            let matched = st.counts[i].get(v).copied().unwrap_or(0);
            if matched + own - min > c.max_skew {
                return Status::new(Code::Unschedulable, REASON);
            }
        }
        Status::success()
    }
}

#[derive(Clone)]
struct ScoreState {
    constraints: Vec<Constraint>,
    ignored: Vec<String>,
    pair_counts: HashMap<(usize, String), i64>,
    weights: Vec<f64>,
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[usize],
        s: &Snapshot,
    ) -> Status {
        if nodes.is_empty() {
            return Status::skip();
        }
        let own = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .is_some_and(|c| !c.is_empty());
        let constraints = self.constraints(pod, s, "ScheduleAnyway");
        if constraints.is_empty() {
            return Status::skip();
        }
        let require_all = own || !self.system_defaulted;
        let mut ignored = Vec::new();
        let mut pair_counts = HashMap::new();
        let mut sizes = vec![0usize; constraints.len()];
        for &n in nodes {
            let node = &s.nodes[n];
            if require_all && !has_all_keys(&node.labels, &constraints) {
                ignored.push(node.name.clone());
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if c.topology_key == HOSTNAME {
                    continue;
                }
                let v = node
                    .labels
                    .get(&c.topology_key)
                    .cloned()
                    .unwrap_or_default();
                if let std::collections::hash_map::Entry::Vacant(e) = pair_counts.entry((i, v)) {
                    e.insert(0i64);
                    sizes[i] += 1;
                }
            }
        }
        let weights = constraints
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let size = if c.topology_key == HOSTNAME {
                    nodes.len() - ignored.len()
                } else {
                    sizes[i]
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        if constraints.iter().any(|c| c.topology_key != HOSTNAME) {
            for node in &s.nodes {
                if require_all && !has_all_keys(&node.labels, &constraints) {
                    continue;
                }
                for (i, c) in constraints.iter().enumerate() {
                    if c.topology_key == HOSTNAME || !c.includes(pod, node) {
                        continue;
                    }
                    let v = node
                        .labels
                        .get(&c.topology_key)
                        .cloned()
                        .unwrap_or_default();
                    if let Some(cnt) = pair_counts.get_mut(&(i, v)) {
                        *cnt += count_matching(node, &c.selector, &pod.namespace);
                    }
                }
            }
        }
        state.write(
            SCORE_KEY,
            ScoreState {
                constraints,
                ignored,
                pair_counts,
                weights,
            },
        );
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(st) = state.read::<ScoreState>(SCORE_KEY) else {
            return 0;
        };
        if st.ignored.contains(&node.name) {
            return -1;
        }
        let mut score = 0.0;
        for (i, c) in st.constraints.iter().enumerate() {
            let Some(v) = node.labels.get(&c.topology_key) else {
                continue;
            };
            let cnt = if c.topology_key == HOSTNAME {
                count_matching(node, &c.selector, &pod.namespace)
            } else {
                st.pair_counts.get(&(i, v.clone())).copied().unwrap_or(0)
            };
            score += cnt as f64 * st.weights[i] + (c.max_skew - 1) as f64;
        }
        score.round() as i64
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) {
        let valid = scores.iter().filter(|s| s.score >= 0).map(|s| s.score);
        let min = valid.clone().min().unwrap_or(0);
        let max = valid.max().unwrap_or(0);
        for s in scores.iter_mut() {
            s.score = if s.score < 0 {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - s.score) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{info, node, pod};
    use crate::types::OwnerSelector;
    use serde_json::json;

    fn zn(name: &str, zone: &str) -> k8s_openapi::api::core::v1::Node {
        node(
            name,
            "4",
            "8Gi",
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}}),
        )
    }

    fn web(name: &str, node: &str) -> k8s_openapi::api::core::v1::Pod {
        pod(
            name,
            "0",
            "0",
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"nodeName": node}}),
        )
    }

    fn spread(extra: serde_json::Value) -> PodInfo {
        let mut c = json!({"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}});
        crate::testutil::merge(&mut c, extra);
        info(pod(
            "new",
            "0",
            "0",
            json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"topologySpreadConstraints": [c]}}),
        ))
    }

    fn filter(p: &PodInfo, s: &Snapshot) -> Vec<Status> {
        let pl = PodTopologySpread::new(None).unwrap();
        let mut st = CycleState::default();
        pl.pre_filter(&mut st, p, s);
        s.nodes.iter().map(|n| pl.filter(&st, p, n)).collect()
    }

    #[test]
    fn max_skew_across_zones() {
        let s = Snapshot::new(
            vec![
                zn("a", "z1"),
                zn("b", "z2"),
                node("c", "4", "8Gi", json!({})),
            ],
            vec![web("w1", "a")],
        );
        let r = filter(&spread(json!({})), &s);
        // z1 has 1, z2 has 0: another in z1 makes skew 2.
        assert_eq!(r[0].reasons, vec![REASON]);
        assert!(r[1].is_success());
        assert_eq!(r[2].reasons, vec![REASON_LABEL]);
        assert_eq!(r[2].code, Code::UnschedulableAndUnresolvable);
    }

    #[test]
    fn min_domains_and_affinity_policy() {
        let s = Snapshot::new(
            vec![zn("a", "z1"), zn("b", "z2")],
            vec![web("w1", "a"), web("w2", "b")],
        );
        // Two domains exist but three are required: the global minimum counts as 0.
        let r = filter(&spread(json!({"minDomains": 3})), &s);
        assert!(!r[0].is_success() && !r[1].is_success());
        // With nodeAffinityPolicy Honor, nodes the pod cannot go to do not count as domains.
        let s = Snapshot::new(
            vec![
                zn("a", "z1"),
                node(
                    "b",
                    "4",
                    "8Gi",
                    json!({"metadata": {"labels": {"topology.kubernetes.io/zone": "z2", "pool": "x"}}}),
                ),
            ],
            vec![web("w1", "b")],
        );
        let mut raw = (*spread(json!({})).pod).clone();
        raw.spec.as_mut().unwrap().node_selector =
            Some([("pool".to_string(), "x".to_string())].into());
        let r = filter(&info(raw.clone()), &s);
        assert!(r[1].is_success(), "{r:?}");
        raw.spec
            .as_mut()
            .unwrap()
            .topology_spread_constraints
            .as_mut()
            .unwrap()[0]
            .node_affinity_policy = Some("Ignore".into());
        let r = filter(&info(raw), &s);
        assert_eq!(r[1].reasons, vec![REASON]);
    }

    #[test]
    fn default_constraints_from_services() {
        let mut s = Snapshot::new(
            vec![zn("a", "z1"), zn("b", "z2")],
            vec![web("w1", "a"), web("w2", "a"), web("w3", "a")],
        );
        let p = info(pod(
            "new",
            "0",
            "0",
            json!({"metadata": {"labels": {"app": "web"}}}),
        ));
        let pl = PodTopologySpread::new(None).unwrap();
        assert!(pl.constraints(&p, &s, "ScheduleAnyway").is_empty());
        s.owner_selectors.insert(
            "Service/default/web".into(),
            OwnerSelector {
                namespace: "default".into(),
                selector: Selector::from_map(&[("app".to_string(), "web".to_string())].into()),
                as_map: Some([("app".to_string(), "web".to_string())].into()),
            },
        );
        let cs = pl.constraints(&p, &s, "ScheduleAnyway");
        assert_eq!(cs.len(), 2);
        assert_eq!((cs[0].max_skew, cs[1].max_skew), (3, 5));
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
        assert!(scores[1].score > scores[0].score, "{scores:?}");
    }
}
