//! One scheduling cycle for one pod (upstream's `schedulePod`): PreFilter, Filter over a
//! sample of nodes, PreScore, Score, pick the best; on failure upstream's `FitError`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::framework::{Code, CycleState, Framework, PostFilterResult, Status};
use crate::types::{NodeInfo, PodInfo, Snapshot};

/// Below this many nodes every node is examined (upstream's `minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The least adaptive percentage (upstream's `minFeasibleNodesPercentageToFind`).
pub const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// How many feasible nodes to find before stopping: all below 100 nodes, else the configured
/// percentage or the adaptive one (50% minus 1% per 125 nodes, at least 5%), at least 100.
pub fn num_feasible_nodes_to_find(percentage: u32, num_all: usize) -> usize {
    if num_all < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all;
    }
    let mut pct = percentage as usize;
    if pct == 0 {
        pct = 50usize.saturating_sub(num_all / 125);
        if pct < MIN_FEASIBLE_NODES_PERCENTAGE {
            pct = MIN_FEASIBLE_NODES_PERCENTAGE;
        }
    }
    if pct >= 100 {
        return num_all;
    }
    (num_all * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Upstream's `FitError` text: `0/N nodes are available: <counted reasons>.` plus the
/// PreFilter or PostFilter message.
pub fn fit_error_message<'a>(
    num_nodes: usize,
    pre_filter_msg: Option<&str>,
    statuses: impl Iterator<Item = &'a Status>,
    post_filter_msg: Option<&str>,
) -> String {
    let mut msg = format!("0/{num_nodes} nodes are available:");
    if let Some(p) = pre_filter_msg.filter(|m| !m.is_empty()) {
        msg.push_str(&format!(" {p}."));
    } else {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in statuses {
            for r in &s.reasons {
                *counts.entry(r.as_str()).or_default() += 1;
            }
        }
        let mut parts: Vec<String> = counts.iter().map(|(r, c)| format!("{c} {r}")).collect();
        parts.sort();
        if !parts.is_empty() {
            msg.push_str(&format!(" {}.", parts.join(", ")));
        }
    }
    if let Some(p) = post_filter_msg.filter(|m| !m.is_empty()) {
        msg.push_str(&format!(" {p}."));
    }
    msg
}

/// Why a pod could not be placed.
#[derive(Clone, Debug)]
pub struct FitError {
    /// Nodes in the snapshot.
    pub num_nodes: usize,
    /// The PreFilter rejection, if the cycle stopped there.
    pub pre_filter: Option<Status>,
    /// Per node index: the filter status (absent for nodes not examined).
    pub statuses: Vec<Option<Status>>,
    /// The PostFilter (preemption) message.
    pub post_filter_msg: Option<String>,
}

impl FitError {
    /// The upstream message.
    pub fn message(&self) -> String {
        fit_error_message(
            self.num_nodes,
            self.pre_filter.as_ref().map(|s| s.message()).as_deref(),
            self.statuses.iter().flatten(),
            self.post_filter_msg.as_deref(),
        )
    }
}

/// The outcome of one cycle.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Bind to this node.
    Scheduled {
        /// The node's name.
        node: String,
    },
    /// No node fits; preemption may have nominated a node and picked victims.
    Unschedulable {
        /// The failure.
        error: FitError,
        /// Preemption's result.
        preemption: Option<PostFilterResult>,
    },
    /// A plugin failed.
    Error(String),
}

/// Runs the Filter plugins on a node, also with the higher-or-equal priority pods nominated
/// to it (upstream's `RunFilterPluginsWithNominatedPods`).
pub fn filter_with_nominated(
    fw: &Framework,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
    snapshot: &Snapshot,
) -> Status {
    if snapshot.nominated.is_empty() {
        return fw.run_filter(state, pod, node);
    }
    let nominated: Vec<&Arc<PodInfo>> = snapshot
        .nominated
        .get(&node.name)
        .into_iter()
        .flatten()
        .filter(|p| p.priority >= pod.priority && p.uid != pod.uid)
        .collect();
    if nominated.is_empty() {
        return fw.run_filter(state, pod, node);
    }
    let mut st = state.clone();
    let mut ni = node.clone();
    for p in nominated {
        ni.add_pod(p.clone());
        fw.run_add_pod(&mut st, pod, p, &ni, snapshot);
    }
    let s = fw.run_filter(&st, pod, &ni);
    if !s.is_success() {
        return s;
    }
    fw.run_filter(state, pod, node)
}

/// Per-profile state kept between cycles.
#[derive(Clone, Debug)]
pub struct Algorithm {
    next_start: usize,
    rng: u64,
}

impl Default for Algorithm {
    fn default() -> Self {
        Algorithm {
            next_start: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

impl Algorithm {
    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Schedules one pod against the snapshot (which it does not change).
    pub fn schedule(&mut self, fw: &Framework, pod: &PodInfo, snapshot: &Snapshot) -> Outcome {
        let n = snapshot.len();
        let mut state = CycleState::default();
        if n == 0 {
            return Outcome::Unschedulable {
                error: FitError {
                    num_nodes: 0,
                    pre_filter: None,
                    statuses: Vec::new(),
                    post_filter_msg: None,
                },
                preemption: None,
            };
        }
        let (pre, status) = fw.run_pre_filter(&mut state, pod, snapshot);
        if status.code == Code::Error {
            return Outcome::Error(status.message());
        }
        if !status.is_success() {
            let statuses = vec![Some(status.clone()); n];
            return self.fail(fw, &state, pod, snapshot, statuses, Some(status));
        }
        // A pod nominated by an earlier preemption tries that node first.
        let nominated = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .and_then(|n| snapshot.index_of(n));
        if let Some(i) = nominated {
            let in_result = pre
                .as_ref()
                .and_then(|r| r.node_names.as_ref())
                .is_none_or(|names| names.contains(&snapshot.nodes[i].name));
            if in_result
                && filter_with_nominated(fw, &state, pod, &snapshot.nodes[i], snapshot).is_success()
            {
                return Outcome::Scheduled {
                    node: snapshot.nodes[i].name.clone(),
                };
            }
        }
        // Candidate node indexes, in round-robin order from where the last cycle stopped.
        let narrowed: Option<Vec<usize>> = pre.and_then(|r| r.node_names).map(|names| {
            names
                .iter()
                .filter_map(|nm| snapshot.index_of(nm))
                .collect()
        });
        let total = narrowed.as_ref().map(|v| v.len()).unwrap_or(n);
        // Rejections, recorded by node index; the full per-node list is built only on failure.
        let mut failures: Vec<(usize, Status)> = Vec::new();
        let want = num_feasible_nodes_to_find(fw.percentage_of_nodes_to_score, total);
        let mut feasible: Vec<usize> = Vec::with_capacity(want);
        let start = if narrowed.is_some() {
            0
        } else {
            self.next_start % n
        };
        let mut examined = 0;
        for k in 0..total {
            let idx = match &narrowed {
                Some(v) => v[k],
                None => (start + k) % n,
            };
            examined += 1;
            let s = filter_with_nominated(fw, &state, pod, &snapshot.nodes[idx], snapshot);
            if s.is_success() {
                feasible.push(idx);
                if feasible.len() >= want {
                    break;
                }
            } else if s.code == Code::Error {
                return Outcome::Error(s.message());
            } else {
                failures.push((idx, s));
            }
        }
        if narrowed.is_none() {
            self.next_start = (start + examined) % n;
        }
        if feasible.is_empty() {
            let mut statuses: Vec<Option<Status>> = vec![None; n];
            if let Some(v) = &narrowed {
                // Nodes outside the PreFilter result are rejected as upstream records them.
                for (i, s) in statuses.iter_mut().enumerate() {
                    if !v.contains(&i) {
                        *s = Some(Status::new(
                            Code::UnschedulableAndUnresolvable,
                            "node(s) didn't satisfy plugin(s) [NodeAffinity]",
                        ));
                    }
                }
            }
            for (i, s) in failures {
                statuses[i] = Some(s);
            }
            return self.fail(fw, &state, pod, snapshot, statuses, None);
        }
        if feasible.len() == 1 {
            return Outcome::Scheduled {
                node: snapshot.nodes[feasible[0]].name.clone(),
            };
        }
        let s = fw.run_pre_score(&mut state, pod, &feasible, snapshot);
        if !s.is_success() {
            return Outcome::Error(s.message());
        }
        let scores = fw.run_score(&state, pod, &feasible, snapshot);
        // Highest score; ties broken uniformly at random (reservoir sampling).
        let mut best = scores[0].clone();
        let mut ties = 1u64;
        for s in &scores[1..] {
            if s.score > best.score {
                best = s.clone();
                ties = 1;
            } else if s.score == best.score {
                ties += 1;
                if self.rand().is_multiple_of(ties) {
                    best = s.clone();
                }
            }
        }
        Outcome::Scheduled {
            node: snapshot.nodes[best.node].name.clone(),
        }
    }

    fn fail(
        &mut self,
        fw: &Framework,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        statuses: Vec<Option<Status>>,
        pre_filter: Option<Status>,
    ) -> Outcome {
        let mut preemption = None;
        let mut post_filter_msg = None;
        for p in &fw.post_filter {
            let Some(pf) = p.as_post_filter() else {
                continue;
            };
            let (r, s) = pf.post_filter(fw, state, pod, snapshot, &statuses);
            if !s.reasons.is_empty() {
                post_filter_msg = Some(s.message());
            }
            if s.is_success() || r.is_some() {
                preemption = r;
            }
            if s.is_success() {
                break;
            }
        }
        Outcome::Unschedulable {
            error: FitError {
                num_nodes: snapshot.len(),
                pre_filter,
                statuses,
                post_filter_msg,
            },
            preemption,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_percentage() {
        assert_eq!(num_feasible_nodes_to_find(0, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(0, 1000), 420);
        assert_eq!(num_feasible_nodes_to_find(0, 5000), 500);
        assert_eq!(num_feasible_nodes_to_find(0, 6000), 300);
        assert_eq!(num_feasible_nodes_to_find(0, 200), 100);
        assert_eq!(num_feasible_nodes_to_find(10, 500), 100);
        assert_eq!(num_feasible_nodes_to_find(100, 5000), 5000);
    }

    #[test]
    fn nominated_node_is_tried_first_and_nominated_pods_hold_room() {
        use crate::config::default_framework;
        use crate::testutil::{info, node, pod};
        use serde_json::json;
        let mut s = Snapshot::new(
            vec![
                node("a", "8", "8Gi", json!({})),
                node("b", "2", "8Gi", json!({})),
            ],
            vec![],
        );
        let fw = default_framework();
        let p = info(pod(
            "p",
            "1",
            "0",
            json!({"status": {"nominatedNodeName": "b"}}),
        ));
        match Algorithm::default().schedule(&fw, &p, &s) {
            Outcome::Scheduled { node } => assert_eq!(node, "b"),
            other => panic!("{other:?}"),
        }
        // A higher-priority pod nominated to b keeps its room from an equal-or-lower one.
        let holder = Arc::new(info(pod("h", "2", "0", json!({"spec": {"priority": 5}}))));
        s.nominated.insert("b".into(), vec![holder]);
        let low = info(pod(
            "l",
            "1",
            "0",
            json!({"spec": {"nodeName": null,
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}}}),
        ));
        match Algorithm::default().schedule(&fw, &low, &s) {
            Outcome::Unschedulable { error, .. } => assert!(
                error.message().starts_with("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't satisfy plugin(s) [NodeAffinity]."),
                "{}",
                error.message()
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn snapshot_keeps_pods_of_removed_nodes() {
        use crate::testutil::{info, node, pod};
        use serde_json::json;
        let mut s = Snapshot::new(
            vec![
                node("a", "1", "1Gi", json!({})),
                node("b", "1", "1Gi", json!({})),
            ],
            vec![pod("p", "500m", "0", json!({"spec": {"nodeName": "a"}}))],
        );
        assert_eq!(s.get("a").unwrap().requested.milli_cpu, 500);
        s.remove_node("a");
        assert_eq!(s.len(), 1);
        assert_eq!(s.get("b").unwrap().name, "b");
        s.upsert_node(Arc::new(node("a", "1", "1Gi", json!({}))));
        assert_eq!(s.get("a").unwrap().requested.milli_cpu, 500);
        assert!(s.remove_pod("default/p").is_some());
        assert_eq!(s.get("a").unwrap().requested.milli_cpu, 0);
        s.add_pod("b", Arc::new(info(pod("q", "1", "0", json!({})))));
        assert_eq!(s.node_of("default/q"), Some("b"));
    }

    #[test]
    fn message_counts_reasons() {
        let taint = Status::new(
            Code::UnschedulableAndUnresolvable,
            "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",
        );
        let cpu = Status::new(Code::Unschedulable, "Insufficient cpu");
        let msg = fit_error_message(3, None, [&taint, &cpu, &cpu].into_iter(), None);
        assert_eq!(
            msg,
            "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu."
        );
    }
}
