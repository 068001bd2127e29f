//! NodeResourcesFit and NodeResourcesBalancedAllocation.

use serde::Deserialize;

use crate::framework::{
    Code, CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreFilterResult, PreScorePlugin,
    ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::resource::{is_scalar_resource_name, Resource, ResourceName};
use crate::types::{NodeInfo, PodInfo, Snapshot};

/// The name of the fit plugin.
pub const FIT: &str = "NodeResourcesFit";
/// The name of the balanced allocation plugin.
pub const BALANCED: &str = "NodeResourcesBalancedAllocation";

/// A resource and its weight in scoring.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ResourceSpec {
    /// The resource name.
    pub name: String,
    /// Its weight (default 1).
    #[serde(default)]
    pub weight: i64,
}

/// A point of the RequestedToCapacityRatio shape.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct ShapePoint {
    /// Utilisation in percent.
    pub utilization: i64,
    /// Score 0-10.
    pub score: i64,
}

/// `requestedToCapacityRatio` arguments.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct RequestedToCapacityRatioParam {
    /// The scoring function's points.
    #[serde(default)]
    pub shape: Vec<ShapePoint>,
}

/// The NodeResourcesFit scoring strategy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScoringStrategy {
    /// `LeastAllocated`, `MostAllocated` or `RequestedToCapacityRatio`.
    #[serde(rename = "type", default = "least")]
    pub kind: String,
    /// Resources and weights.
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
    /// The shape for RequestedToCapacityRatio.
    #[serde(default)]
    pub requested_to_capacity_ratio: Option<RequestedToCapacityRatioParam>,
}

fn least() -> String {
    "LeastAllocated".into()
}

fn default_resources() -> Vec<ResourceSpec> {
    vec![
        ResourceSpec {
            name: "cpu".into(),
            weight: 1,
        },
        ResourceSpec {
            name: "memory".into(),
            weight: 1,
        },
    ]
}

/// NodeResourcesFitArgs.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FitArgs {
    /// Resources the filter ignores.
    #[serde(default)]
    pub ignored_resources: Vec<String>,
    /// Resource groups (name prefixes before `/`) the filter ignores.
    #[serde(default)]
    pub ignored_resource_groups: Vec<String>,
    /// How nodes are scored.
    #[serde(default)]
    pub scoring_strategy: Option<ScoringStrategy>,
}

#[derive(Clone, Debug)]
enum Scorer {
    Least,
    Most,
    Ratio(Vec<ShapePoint>),
}

/// Checks requests against allocatable; scores by a configurable strategy.
pub struct Fit {
    ignored: Vec<String>,
    ignored_groups: Vec<String>,
    resources: Vec<(ResourceName, i64)>,
    scorer: Scorer,
}

#[derive(Clone)]
struct FitState {
    requests: Resource,
}

impl Fit {
    /// Builds the plugin from its arguments.
    pub fn new(args: Option<&serde_json::Value>) -> anyhow::Result<Fit> {
        let args: FitArgs = match args {
            Some(v) => serde_json::from_value(v.clone())?,
            None => FitArgs {
                ignored_resources: Vec::new(),
                ignored_resource_groups: Vec::new(),
                scoring_strategy: None,
            },
        };
        let default = default_resources();
        let strategy = args.scoring_strategy.unwrap_or(ScoringStrategy {
            kind: least(),
            resources: Vec::new(),
            requested_to_capacity_ratio: None,
        });
        let resources = compile(if strategy.resources.is_empty() {
            &default
        } else {
            &strategy.resources
        });
        let scorer = match strategy.kind.as_str() {
            "LeastAllocated" | "" => Scorer::Least,
            "MostAllocated" => Scorer::Most,
            "RequestedToCapacityRatio" => {
                let shape = strategy
                    .requested_to_capacity_ratio
                    .map(|r| r.shape)
                    .unwrap_or_default();
                if shape.is_empty() {
                    anyhow::bail!(
                        "requestedToCapacityRatio: shape: at least one point must be specified"
                    );
                }
                Scorer::Ratio(shape)
            }
            other => anyhow::bail!("scoringStrategy.type: Unsupported value: {other:?}"),
        };
        Ok(Fit {
            ignored: args.ignored_resources,
            ignored_groups: args.ignored_resource_groups,
            resources,
            scorer,
        })
    }

    fn ignored(&self, name: &str) -> bool {
        self.ignored.iter().any(|i| i == name)
            || name
                .split_once('/')
                .is_some_and(|(g, _)| self.ignored_groups.iter().any(|i| i == g))
    }
}

/// The reasons a pod's requests do not fit a node (`fitsRequest`).
pub fn insufficient(
    req: &Resource,
    node: &NodeInfo,
    ignored: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    if node.pods.len() as i64 + 1 > node.allowed_pods() {
        out.push("Too many pods".to_string());
    }
    if req.is_zero() {
        return out;
    }
    let a = &node.allocatable;
    let u = &node.requested;
    if req.milli_cpu > 0 && req.milli_cpu > a.milli_cpu - u.milli_cpu {
        out.push("Insufficient cpu".into());
    }
    if req.memory > 0 && req.memory > a.memory - u.memory {
        out.push("Insufficient memory".into());
    }
    if req.ephemeral_storage > 0
        && req.ephemeral_storage > a.ephemeral_storage - u.ephemeral_storage
    {
        out.push("Insufficient ephemeral-storage".into());
    }
    for (name, q) in &req.scalar {
        if *q == 0 || (is_scalar_resource_name(name) && ignored(name)) {
            continue;
        }
        let avail =
            a.scalar.get(name).copied().unwrap_or(0) - u.scalar.get(name).copied().unwrap_or(0);
        if *q > avail {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

impl Plugin for Fit {
    fn name(&self) -> &'static str {
        FIT
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for Fit {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        state.write(
            FIT,
            FitState {
                requests: pod.requests.clone(),
            },
        );
        (None, Status::success())
    }
}

impl FilterPlugin for Fit {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let req = state
            .read::<FitState>(FIT)
            .map(|s| &s.requests)
            .unwrap_or(&pod.requests);
        let reasons = insufficient(req, node, |n| self.ignored(n));
        if reasons.is_empty() {
            Status::success()
        } else {
            Status {
                code: Code::Unschedulable,
                reasons,
                plugin: FIT,
            }
        }
    }
}

/// Calls `f(requested with the pod, allocatable, weight)` for each scored resource, skipping
/// resources the node does not have and unrequested scalar ones
/// (`resourceAllocationScorer.score`).
fn each_resource(
    resources: &[(ResourceName, i64)],
    pod: &PodInfo,
    node: &NodeInfo,
    use_requested: bool,
    mut f: impl FnMut(i64, i64, i64),
) {
    for (name, weight) in resources {
        let pod_req = if use_requested {
            pod.requests.amount(name)
        } else {
            pod.non_zero_requests.amount(name)
        };
        if pod_req == 0 && name.is_scalar() {
            continue;
        }
        let alloc = node.allocatable.amount(name);
        if alloc == 0 {
            continue;
        }
        let used = if use_requested {
            node.requested.amount(name)
        } else {
            node.non_zero_requested.amount(name)
        };
        f(used + pod_req, alloc, *weight);
    }
}

fn compile(resources: &[ResourceSpec]) -> Vec<(ResourceName, i64)> {
    resources
        .iter()
        .map(|r| {
            (
                ResourceName::new(&r.name),
                if r.weight == 0 { 1 } else { r.weight },
            )
        })
        .collect()
}

fn broken_linear(shape: &[ShapePoint], p: i64) -> i64 {
    let scale = MAX_NODE_SCORE / 10;
    for (i, pt) in shape.iter().enumerate() {
        if p <= pt.utilization {
            if i == 0 {
                return shape[0].score * scale;
            }
            let prev = shape[i - 1];
            return (prev.score * scale)
                + (pt.score * scale - prev.score * scale) * (p - prev.utilization)
                    / (pt.utilization - prev.utilization);
        }
    }
    shape[shape.len() - 1].score * scale
}

impl ScorePlugin for Fit {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let (mut sum, mut wsum) = (0, 0);
        match &self.scorer {
            Scorer::Least | Scorer::Most => {
                each_resource(&self.resources, pod, node, false, |req, alloc, w| {
                    let s = if matches!(self.scorer, Scorer::Least) {
                        if req > alloc {
                            0
                        } else {
                            (alloc - req) * MAX_NODE_SCORE / alloc
                        }
                    } else {
                        req.min(alloc) * MAX_NODE_SCORE / alloc
                    };
                    sum += s * w;
                    wsum += w;
                });
                if wsum == 0 {
                    0
                } else {
                    sum / wsum
                }
            }
            Scorer::Ratio(shape) => {
                each_resource(&self.resources, pod, node, false, |req, alloc, w| {
                    let util = if req > alloc { 100 } else { req * 100 / alloc };
                    let s = broken_linear(shape, util);
                    if s > 0 {
                        sum += s * w;
                        wsum += w;
                    }
                });
                if wsum == 0 {
                    0
                } else {
                    (sum as f64 / wsum as f64).round() as i64
                }
            }
        }
    }
}

/// NodeResourcesBalancedAllocationArgs.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct BalancedArgs {
    /// Resources to balance (default cpu and memory).
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
}

/// Favours nodes whose resource fractions stay close to each other.
pub struct Balanced {
    resources: Vec<(ResourceName, i64)>,
}

impl Balanced {
    /// Builds the plugin from its arguments.
    pub fn new(args: Option<&serde_json::Value>) -> anyhow::Result<Balanced> {
        let args: BalancedArgs = match args {
            Some(v) => serde_json::from_value(v.clone())?,
            None => BalancedArgs::default(),
        };
        let default = default_resources();
        let resources = compile(if args.resources.is_empty() {
            &default
        } else {
            &args.resources
        });
        Ok(Balanced { resources })
    }
}

impl Plugin for Balanced {
    fn name(&self) -> &'static str {
        BALANCED
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for Balanced {
    fn pre_score(&self, _: &mut CycleState, pod: &PodInfo, _: &[usize], _: &Snapshot) -> Status {
        // A pod that requests none of the balanced resources cannot unbalance a node.
        if self
            .resources
            .iter()
            .all(|(r, _)| pod.requests.amount(r) == 0)
        {
            return Status::skip();
        }
        Status::success()
    }
}

impl ScorePlugin for Balanced {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let mut buf = [0f64; 16];
        let mut len = 0;
        each_resource(&self.resources, pod, node, true, |req, alloc, _| {
            if len < buf.len() {
                buf[len] = (req as f64 / alloc as f64).min(1.0);
                len += 1;
            }
        });
        let fractions = &buf[..len];
        let std = match fractions.len() {
            0 | 1 => 0.0,
            2 => ((fractions[0] - fractions[1]) / 2.0).abs(),
            n => {
                let mean = fractions.iter().sum::<f64>() / n as f64;
                (fractions
                    .iter()
                    .map(|f| (f - mean) * (f - mean))
                    .sum::<f64>()
                    / n as f64)
                    .sqrt()
            }
        };
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{info, node, pod};
    use crate::types::Snapshot;
    use serde_json::json;
    use std::sync::Arc;

    fn snap() -> Snapshot {
        Snapshot::new(
            vec![
                node(
                    "n1",
                    "4",
                    "8Gi",
                    json!({"status": {"allocatable": {"example.com/gpu": "1"}}}),
                ),
                node("n2", "2", "4Gi", json!({})),
            ],
            vec![pod("p0", "1", "1Gi", json!({"spec": {"nodeName": "n1"}}))],
        )
    }

    fn run_filter(fit: &Fit, p: &PodInfo, s: &Snapshot, n: &str) -> Status {
        let mut st = CycleState::default();
        fit.pre_filter(&mut st, p, s);
        fit.filter(&st, p, s.get(n).unwrap())
    }

    #[test]
    fn filter_counts_requests_and_extended_resources() {
        let s = snap();
        let fit = Fit::new(None).unwrap();
        let p = info(pod("p", "3", "1Gi", json!({})));
        assert!(run_filter(&fit, &p, &s, "n1").is_success());
        let st = run_filter(&fit, &p, &s, "n2");
        assert_eq!(st.code, Code::Unschedulable);
        assert_eq!(st.reasons, vec!["Insufficient cpu"]);
        let big = info(pod("p", "4", "16Gi", json!({})));
        assert_eq!(
            run_filter(&fit, &big, &s, "n1").reasons,
            vec!["Insufficient cpu", "Insufficient memory"]
        );
        let gpu = info(pod(
            "g",
            "0",
            "0",
            json!({"spec": {"containers": [{"name": "c",
            "resources": {"requests": {"example.com/gpu": "2"}}}]}}),
        ));
        assert_eq!(
            run_filter(&fit, &gpu, &s, "n1").reasons,
            vec!["Insufficient example.com/gpu"]
        );
        let ignoring = Fit::new(Some(&json!({"ignoredResources": ["example.com/gpu"]}))).unwrap();
        assert!(run_filter(&ignoring, &gpu, &s, "n1").is_success());
    }

    #[test]
    fn too_many_pods() {
        let mut s = Snapshot::new(
            vec![node(
                "n",
                "4",
                "8Gi",
                json!({"status": {"allocatable": {"pods": "1"}}}),
            )],
            vec![],
        );
        let fit = Fit::new(None).unwrap();
        let p = info(pod("p", "0", "0", json!({})));
        assert!(run_filter(&fit, &p, &s, "n").is_success());
        s.add_pod("n", Arc::new(info(pod("q", "0", "0", json!({})))));
        assert_eq!(run_filter(&fit, &p, &s, "n").reasons, vec!["Too many pods"]);
    }

    #[test]
    fn scoring_strategies() {
        let s = snap();
        let p = info(pod("p", "1", "2Gi", json!({})));
        let least = Fit::new(None).unwrap();
        let st = CycleState::default();
        // n1: cpu (4000-2000)/4000=50, memory (8-3)/8=62 -> 56; n2: cpu 50, memory 50 -> 50.
        assert_eq!(least.score(&st, &p, s.get("n1").unwrap()), 56);
        assert_eq!(least.score(&st, &p, s.get("n2").unwrap()), 50);
        let most = Fit::new(Some(&json!({"scoringStrategy": {"type": "MostAllocated"}}))).unwrap();
        assert_eq!(most.score(&st, &p, s.get("n1").unwrap()), 43);
        assert_eq!(most.score(&st, &p, s.get("n2").unwrap()), 50);
        let ratio = Fit::new(Some(&json!({"scoringStrategy": {
            "type": "RequestedToCapacityRatio",
            "resources": [{"name": "cpu", "weight": 1}],
            "requestedToCapacityRatio": {"shape": [{"utilization": 0, "score": 0}, {"utilization": 100, "score": 10}]}
        }}))).unwrap();
        assert_eq!(ratio.score(&st, &p, s.get("n1").unwrap()), 50);
        assert!(Fit::new(Some(&json!({"scoringStrategy": {"type": "Bogus"}}))).is_err());
    }

    #[test]
    fn balanced_allocation() {
        let s = snap();
        let b = Balanced::new(None).unwrap();
        let st = CycleState::default();
        // n2 after the pod: cpu 1/2, memory 1/4 -> std 0.125 -> 87.
        let p = info(pod("p", "1", "1Gi", json!({})));
        assert_eq!(b.score(&st, &p, s.get("n2").unwrap()), 87);
        let none = info(pod("p", "0", "0", json!({})));
        let mut st = CycleState::default();
        assert_eq!(b.pre_score(&mut st, &none, &[], &s).code, Code::Skip);
    }
}
