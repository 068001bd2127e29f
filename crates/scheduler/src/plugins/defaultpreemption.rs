//! DefaultPreemption: when no node fits, find the node where evicting the fewest and least
//! important lower-priority pods makes room, and nominate it.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::algorithm::{filter_with_nominated, fit_error_message};
use crate::framework::{
    Code, CycleState, Framework, Plugin, PostFilterPlugin, PostFilterResult, Status,
};
use crate::types::{NodeInfo, PodInfo, Snapshot};

/// The plugin's name.
pub const NAME: &str = "DefaultPreemption";
/// Upstream's reason when a node has no lower-priority pod.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Upstream's reason for nodes preemption cannot help.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// The DefaultPreemption plugin.
pub struct DefaultPreemption;

fn start_time(p: &PodInfo) -> Option<i128> {
    p.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.as_nanosecond())
}

/// Upstream's `MoreImportantPod`: higher priority, then started earlier.
fn more_important(a: &PodInfo, b: &PodInfo) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| match (start_time(a), start_time(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

/// The fewest lower-priority pods to remove from `node` so `pod` fits, or why none will do.
pub fn select_victims(
    fw: &Framework,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
    snapshot: &Snapshot,
) -> Result<Vec<Arc<PodInfo>>, Status> {
    let mut ni = node.clone();
    let mut st = state.clone();
    let mut potential: Vec<Arc<PodInfo>> = ni
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    for p in &potential {
        ni.remove_pod(&p.uid);
        fw.run_remove_pod(&mut st, pod, p, &ni, snapshot);
    }
    if potential.is_empty() {
        return Err(Status::new(Code::UnschedulableAndUnresolvable, NO_VICTIMS));
    }
    let s = filter_with_nominated(fw, &st, pod, &ni, snapshot);
    if !s.is_success() {
        return Err(s);
    }
    potential.sort_by(|a, b| more_important(a, b));
    // Reprieve the most important pods first, as many as still let the pod fit.
    let mut victims = Vec::new();
    for p in potential {
        ni.add_pod(p.clone());
        fw.run_add_pod(&mut st, pod, &p, &ni, snapshot);
        if !filter_with_nominated(fw, &st, pod, &ni, snapshot).is_success() {
            ni.remove_pod(&p.uid);
            fw.run_remove_pod(&mut st, pod, &p, &ni, snapshot);
            victims.push(p);
        }
    }
    Ok(victims)
}

/// Upstream's `pickOneNodeForPreemption` without disruption budgets: lowest highest-victim
/// priority, lowest priority sum, fewest victims, latest start of the top victims.
fn pick(candidates: &[(usize, Vec<Arc<PodInfo>>)]) -> usize {
    let key = |v: &Vec<Arc<PodInfo>>| {
        let highest = v.first().map(|p| p.priority as i64).unwrap_or(i64::MIN);
        let sum: i64 = v
            .iter()
            .map(|p| p.priority as i64 + i32::MAX as i64 + 1)
            .sum();
        let earliest_top = v
            .iter()
            .filter(|p| p.priority as i64 == highest)
            .filter_map(|p| start_time(p))
            .min()
            .unwrap_or_default();
        (highest, sum, v.len(), earliest_top)
    };
    let mut best = 0;
    for i in 1..candidates.len() {
        let (h, s, n, t) = key(&candidates[i].1);
        let (bh, bs, bn, bt) = key(&candidates[best].1);
        if (h, s, n) < (bh, bs, bn) || ((h, s, n) == (bh, bs, bn) && t > bt) {
            best = i;
        }
    }
    best
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        Some(self)
    }
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        fw: &Framework,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        statuses: &[Option<Status>],
    ) -> (Option<PostFilterResult>, Status) {
        let spec = pod.pod.spec.as_ref();
        if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
            return (
                None,
                Status::new(
                    Code::Unschedulable,
                    "preemption: not eligible due to preemptionPolicy=Never.",
                ),
            );
        }
        let nominated = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty());
        if let Some(i) = nominated.and_then(|n| snapshot.index_of(n)) {
            let unresolvable = statuses[i]
                .as_ref()
                .is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable);
            let terminating = snapshot.nodes[i]
                .pods
                .iter()
                .any(|p| p.terminating && p.priority < pod.priority);
            if !unresolvable && terminating {
                return (
                    None,
                    Status::new(
                        Code::Unschedulable,
                        "preemption: not eligible due to a terminating pod on the nominated node.",
                    ),
                );
            }
        }
        let potential: Vec<usize> = statuses
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.code == Code::Unschedulable))
            .map(|(i, _)| i)
            .collect();
        let want = (potential.len() * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
            .max(MIN_CANDIDATE_NODES_ABSOLUTE)
            .min(potential.len());
        let mut node_statuses: Vec<Option<Status>> = vec![None; snapshot.len()];
        let mut candidates = Vec::new();
        for &i in &potential {
            match select_victims(fw, state, pod, &snapshot.nodes[i], snapshot) {
                Ok(v) if !v.is_empty() => {
                    candidates.push((i, v));
                    if candidates.len() >= want {
                        break;
                    }
                }
                Ok(_) => node_statuses[i] = Some(Status::new(Code::Unschedulable, NO_VICTIMS)),
                Err(s) => node_statuses[i] = Some(s),
            }
        }
        if candidates.is_empty() {
            for s in node_statuses.iter_mut() {
                if s.is_none() {
                    *s = Some(Status::new(Code::UnschedulableAndUnresolvable, NOT_HELPFUL));
                }
            }
            let msg = fit_error_message(snapshot.len(), None, node_statuses.iter().flatten(), None);
            return (
                Some(PostFilterResult {
                    nominated_node: Some(String::new()),
                    victims: Vec::new(),
                }),
                Status::new(Code::Unschedulable, format!("preemption: {msg}")),
            );
        }
        let best = pick(&candidates);
        let (i, victims) = candidates.swap_remove(best);
        (
            Some(PostFilterResult {
                nominated_node: Some(snapshot.nodes[i].name.clone()),
                victims,
            }),
            Status::success(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::{Algorithm, Outcome};
    use crate::config::default_framework;
    use crate::testutil::{info, node, pod};
    use serde_json::json;

    fn placed(name: &str, node: &str, cpu: &str, prio: i32) -> k8s_openapi::api::core::v1::Pod {
        pod(
            name,
            cpu,
            "0",
            json!({"spec": {"nodeName": node, "priority": prio}}),
        )
    }

    #[test]
    fn evicts_minimal_lower_priority_set() {
        let s = Snapshot::new(
            vec![
                node("a", "4", "8Gi", json!({})),
                node("b", "4", "8Gi", json!({})),
            ],
            vec![
                placed("a1", "a", "2", 10),
                placed("a2", "a", "2", 5),
                placed("b1", "b", "2", 100),
                placed("b2", "b", "2", 1),
            ],
        );
        let fw = default_framework();
        let p = info(pod("hi", "2", "0", json!({"spec": {"priority": 50}})));
        match Algorithm::default().schedule(&fw, &p, &s) {
            Outcome::Unschedulable {
                preemption: Some(r),
                error,
            } => {
                // Evicting b2 (priority 1) costs less than a2 (priority 5).
                assert_eq!(r.nominated_node.as_deref(), Some("b"));
                assert_eq!(
                    r.victims
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>(),
                    vec!["b2"]
                );
                assert_eq!(
                    error.message(),
                    "0/2 nodes are available: 2 Insufficient cpu."
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_victims_message() {
        let s = Snapshot::new(
            vec![
                node(
                    "cp",
                    "4",
                    "8Gi",
                    json!({"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}),
                ),
                node("a", "1", "8Gi", json!({})),
                node("b", "1", "8Gi", json!({})),
            ],
            vec![],
        );
        let fw = default_framework();
        let p = info(pod("big", "2", "0", json!({})));
        match Algorithm::default().schedule(&fw, &p, &s) {
            Outcome::Unschedulable { error, .. } => assert_eq!(
                error.message(),
                "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.."
            ),
            other => panic!("{other:?}"),
        }
        let never = info(pod(
            "big",
            "2",
            "0",
            json!({"spec": {"preemptionPolicy": "Never"}}),
        ));
        match Algorithm::default().schedule(&fw, &never, &s) {
            Outcome::Unschedulable { error, .. } => assert!(
                error
                    .message()
                    .ends_with("preemption: not eligible due to preemptionPolicy=Never.."),
                "{}",
                error.message()
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn higher_priority_victims_are_reprieved() {
        let s = Snapshot::new(
            vec![node("a", "4", "8Gi", json!({}))],
            vec![
                placed("x", "a", "1", 1),
                placed("y", "a", "1", 2),
                placed("z", "a", "2", 3),
            ],
        );
        let fw = default_framework();
        let p = info(pod("hi", "1", "0", json!({"spec": {"priority": 10}})));
        let st = {
            let mut st = CycleState::default();
            fw.run_pre_filter(&mut st, &p, &s);
            st
        };
        let v = select_victims(&fw, &st, &p, &s.nodes[0], &s).unwrap();
        assert_eq!(
            v.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            vec!["x"]
        );
    }
}
