//! The plugin framework (upstream's `pkg/scheduler/framework`): statuses, per-cycle state and
//! one small trait per extension point.

use std::any::Any;
use std::sync::Arc;

use crate::types::{NodeInfo, PodInfo, Snapshot};

/// The highest score a plugin gives a node.
pub const MAX_NODE_SCORE: i64 = 100;

/// The outcome class of a plugin call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The pod may go on.
    Success,
    /// An internal error.
    Error,
    /// The pod does not fit now; preemption may help.
    Unschedulable,
    /// The pod does not fit and preemption cannot help.
    UnschedulableAndUnresolvable,
    /// The plugin has nothing to do for this pod (PreFilter, PreScore).
    Skip,
}

/// A plugin's verdict with reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The code.
    pub code: Code,
    /// Human-readable reasons (each counted separately in the failure message).
    pub reasons: Vec<String>,
    /// The plugin that failed, if any.
    pub plugin: &'static str,
}

impl Status {
    /// Success.
    pub fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }
    /// A status with one reason.
    pub fn new(code: Code, reason: impl Into<String>) -> Status {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }
    /// Skip.
    pub fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: Vec::new(),
            plugin: "",
        }
    }
    /// Whether the code is Success.
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
    /// Whether the code is one of the unschedulable codes.
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }
    /// The reasons joined.
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
    /// Records which plugin produced the status.
    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }
}

/// Data a plugin keeps for the rest of a cycle; cloned when preemption simulates removals.
pub trait StateData: Any + Send + Sync {
    /// A copy of the data.
    fn clone_box(&self) -> Box<dyn StateData>;
    /// Upcast for downcasting.
    fn as_any(&self) -> &dyn Any;
    /// Upcast for downcasting.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_box(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// State for one scheduling cycle, written by PreFilter/PreScore and read later.
#[derive(Default)]
pub struct CycleState {
    data: Vec<(&'static str, Box<dyn StateData>)>,
    /// Plugins that returned Skip at PreFilter (their Filter is not run).
    pub skip_filter: Vec<&'static str>,
    /// Plugins that returned Skip at PreScore (their Score is not run).
    pub skip_score: Vec<&'static str>,
    /// Bit i set: the i-th Filter plugin is skipped (computed from `skip_filter`).
    filter_mask: u64,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            data: self
                .data
                .iter()
                .map(|(k, v)| (*k, (**v).clone_box()))
                .collect(),
            skip_filter: self.skip_filter.clone(),
            skip_score: self.skip_score.clone(),
            filter_mask: self.filter_mask,
        }
    }
}

impl CycleState {
    /// Stores data under a key.
    pub fn write<T: StateData>(&mut self, key: &'static str, v: T) {
        if let Some(e) = self.data.iter_mut().find(|(k, _)| *k == key) {
            e.1 = Box::new(v);
        } else {
            self.data.push((key, Box::new(v)));
        }
    }
    /// Reads data stored under a key.
    pub fn read<T: 'static>(&self, key: &'static str) -> Option<&T> {
        self.data
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| (**v).as_any().downcast_ref())
    }
    /// Mutable access to data stored under a key.
    pub fn read_mut<T: 'static>(&mut self, key: &'static str) -> Option<&mut T> {
        self.data
            .iter_mut()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| (**v).as_any_mut().downcast_mut())
    }
}

/// What a PreFilter can narrow the candidate nodes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreFilterResult {
    /// Only these nodes can fit; `None` means all.
    pub node_names: Option<Vec<String>>,
}

/// A node and its score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeScore {
    /// Index of the node in the snapshot.
    pub node: usize,
    /// The score.
    pub score: i64,
}

/// A plugin: a name, and access to the extension points it implements.
pub trait Plugin: Send + Sync {
    /// The plugin's name as configuration files spell it.
    fn name(&self) -> &'static str;
    /// The queue-sort extension point.
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        None
    }
    /// The PreFilter extension point.
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    /// The Filter extension point.
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    /// The PostFilter extension point.
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        None
    }
    /// The PreScore extension point.
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    /// The Score extension point.
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    /// The Reserve extension point.
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    /// The Bind extension point (binding itself is done by the scheduler's binder).
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        None
    }
}

/// Orders the scheduling queue.
pub trait QueueSortPlugin {
    /// Whether `a` should be scheduled before `b`.
    fn less(&self, a: (&PodInfo, u64), b: (&PodInfo, u64)) -> bool;
}

/// Computes per-cycle data and may reject a pod before any node is looked at.
pub trait PreFilterPlugin {
    /// Runs once per cycle.
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Option<PreFilterResult>, Status);
    /// Updates the state as if `other` were added to `node` (used by preemption and
    /// nominated pods).
    fn add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _other: &PodInfo,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) {
    }
    /// Updates the state as if `other` were removed from `node`.
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _other: &PodInfo,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) {
    }
}

/// Decides whether a pod fits a node.
pub trait FilterPlugin {
    /// Success, or why the pod does not fit.
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// The outcome of a PostFilter that made room.
#[derive(Clone, Debug, Default)]
pub struct PostFilterResult {
    /// The node the pod is nominated to (empty clears the nomination).
    pub nominated_node: Option<String>,
    /// Pods (`namespace/name`, uid) to delete to make room.
    pub victims: Vec<Arc<PodInfo>>,
}

/// Runs after no node fits (preemption).
pub trait PostFilterPlugin {
    /// Tries to make the pod schedulable.
    fn post_filter(
        &self,
        fw: &Framework,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        statuses: &[Option<Status>],
    ) -> (Option<PostFilterResult>, Status);
}

/// Computes per-cycle data for scoring.
pub trait PreScorePlugin {
    /// Runs once per cycle with the feasible nodes.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[usize],
        snapshot: &Snapshot,
    ) -> Status;
}

/// Ranks feasible nodes.
pub trait ScorePlugin {
    /// The raw score of one node.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Maps raw scores into `0..=MAX_NODE_SCORE`.
    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [NodeScore]) {}
}

/// Reserves resources for a pod on its chosen node before binding.
pub trait ReservePlugin {
    /// Reserves.
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
    /// Undoes `reserve` when the cycle fails later.
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str);
}

/// Binds a pod to a node; the scheduler issues the API call this plugin names.
pub trait BindPlugin {
    /// Whether this plugin binds the pod (else the next one is asked).
    fn handles(&self, pod: &PodInfo) -> bool;
}

/// Upstream's `DefaultNormalizeScore`: scale to `0..=max` by the highest score, optionally
/// reversed.
pub fn default_normalize(max: i64, reverse: bool, scores: &mut [NodeScore]) {
    let highest = scores.iter().map(|s| s.score).max().unwrap_or(0);
    if highest == 0 {
        if reverse {
            for s in scores.iter_mut() {
                s.score = max;
            }
        }
        return;
    }
    for s in scores.iter_mut() {
        let mut v = max * s.score / highest;
        if reverse {
            v = max - v;
        }
        s.score = v;
    }
}

/// A score plugin with its weight.
#[derive(Clone)]
pub struct WeightedScore {
    /// The plugin.
    pub plugin: Arc<dyn Plugin>,
    /// Its weight.
    pub weight: i64,
}

/// One profile's plugins at each extension point, in order.
#[derive(Clone, Default)]
pub struct Framework {
    /// The profile's scheduler name.
    pub scheduler_name: String,
    /// The queue sort plugin.
    pub queue_sort: Option<Arc<dyn Plugin>>,
    /// PreFilter plugins.
    pub pre_filter: Vec<Arc<dyn Plugin>>,
    /// Filter plugins.
    pub filter: Vec<Arc<dyn Plugin>>,
    /// PostFilter plugins.
    pub post_filter: Vec<Arc<dyn Plugin>>,
    /// PreScore plugins.
    pub pre_score: Vec<Arc<dyn Plugin>>,
    /// Score plugins with weights.
    pub score: Vec<WeightedScore>,
    /// Reserve plugins.
    pub reserve: Vec<Arc<dyn Plugin>>,
    /// Bind plugins.
    pub bind: Vec<Arc<dyn Plugin>>,
    /// `percentageOfNodesToScore` (0 = adaptive).
    pub percentage_of_nodes_to_score: u32,
}

impl Framework {
    /// Runs every PreFilter; the narrowed node set (intersection) or a rejection.
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let mut result: Option<PreFilterResult> = None;
        for p in &self.pre_filter {
            let Some(pf) = p.as_pre_filter() else {
                continue;
            };
            let (r, s) = pf.pre_filter(state, pod, snapshot);
            match s.code {
                Code::Skip => {
                    state.skip_filter.push(p.name());
                    continue;
                }
                Code::Success => {}
                _ => return (None, s.with_plugin(p.name())),
            }
            if let Some(names) = r.and_then(|r| r.node_names) {
                result = Some(match result.and_then(|r| r.node_names) {
                    Some(prev) => PreFilterResult {
                        node_names: Some(prev.into_iter().filter(|n| names.contains(n)).collect()),
                    },
                    None => PreFilterResult {
                        node_names: Some(names),
                    },
                });
            }
        }
        state.filter_mask = 0;
        for (i, p) in self.filter.iter().enumerate().take(64) {
            if state.skip_filter.contains(&p.name()) {
                state.filter_mask |= 1 << i;
            }
        }
        (result, Status::success())
    }

    /// Runs the Filter plugins on one node, stopping at the first rejection.
    pub fn run_filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for (i, p) in self.filter.iter().enumerate() {
            if i < 64 && state.filter_mask & (1 << i) != 0 {
                continue;
            }
            let Some(f) = p.as_filter() else { continue };
            let s = f.filter(state, pod, node);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Tells every PreFilter extension that `other` joins `node`.
    pub fn run_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) {
        for p in &self.pre_filter {
            if state.skip_filter.contains(&p.name()) {
                continue;
            }
            if let Some(pf) = p.as_pre_filter() {
                pf.add_pod(state, pod, other, node, snapshot);
            }
        }
    }

    /// Tells every PreFilter extension that `other` leaves `node`.
    pub fn run_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) {
        for p in &self.pre_filter {
            if state.skip_filter.contains(&p.name()) {
                continue;
            }
            if let Some(pf) = p.as_pre_filter() {
                pf.remove_pod(state, pod, other, node, snapshot);
            }
        }
    }

    /// Runs the PreScore plugins.
    pub fn run_pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[usize],
        snapshot: &Snapshot,
    ) -> Status {
        for p in &self.pre_score {
            let Some(ps) = p.as_pre_score() else { continue };
            let s = ps.pre_score(state, pod, nodes, snapshot);
            match s.code {
                Code::Skip => state.skip_score.push(p.name()),
                Code::Success => {}
                _ => return s.with_plugin(p.name()),
            }
        }
        Status::success()
    }

    /// Scores the nodes: each plugin's normalised score times its weight, summed.
    pub fn run_score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        nodes: &[usize],
        snapshot: &Snapshot,
    ) -> Vec<NodeScore> {
        let mut total: Vec<NodeScore> = nodes
            .iter()
            .map(|n| NodeScore { node: *n, score: 0 })
            .collect();
        let mut scores = total.clone();
        for ws in &self.score {
            if state.skip_score.contains(&ws.plugin.name()) {
                continue;
            }
            let Some(sp) = ws.plugin.as_score() else {
                continue;
            };
            for s in scores.iter_mut() {
                s.score = sp.score(state, pod, &snapshot.nodes[s.node]);
            }
            sp.normalize(state, pod, &mut scores);
            for (t, s) in total.iter_mut().zip(scores.iter()) {
                t.score += s.score * ws.weight;
            }
        }
        total
    }

    /// Runs the Reserve plugins; on failure the ones already run are undone.
    pub fn run_reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status {
        for (i, p) in self.reserve.iter().enumerate() {
            let Some(r) = p.as_reserve() else { continue };
            let s = r.reserve(state, pod, node);
            if !s.is_success() {
                for q in self.reserve[..i].iter().rev() {
                    if let Some(r) = q.as_reserve() {
                        r.unreserve(state, pod, node);
                    }
                }
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Runs the Unreserve step of every Reserve plugin, in reverse.
    pub fn run_unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) {
        for p in self.reserve.iter().rev() {
            if let Some(r) = p.as_reserve() {
                r.unreserve(state, pod, node);
            }
        }
    }
}
