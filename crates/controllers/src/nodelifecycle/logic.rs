//! Pure node-lifecycle rules: node health from Leases, the Unknown status, the taints a
//! node's conditions call for, and when taint-based eviction deletes a pod.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Taint of a node whose Ready condition is `False`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of a node whose Ready condition is `Unknown`.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of a node marked unschedulable.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// NoSchedule taints for node conditions (condition type, status, taint key).
const CONDITION_TAINTS: &[(&str, &str, &str)] = &[
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
];

/// The conditions the controller marks Unknown when the kubelet goes silent.
const MONITORED_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// What the controller last saw of a node's heartbeats, stamped with its own clock (so
/// clock skew between nodes and the controller does not matter, as upstream).
#[derive(Debug, Clone)]
struct Health {
    probe: Instant,
    heartbeat: Option<Timestamp>,
    renew: Option<Timestamp>,
}

/// Per-node heartbeat tracking (upstream's `nodeHealthMap`).
#[derive(Debug, Default)]
pub struct HealthTracker {
    nodes: HashMap<String, Health>,
}

impl HealthTracker {
    /// Records what `node` and its Lease show at `now` and returns the last time a
    /// heartbeat (Ready's `lastHeartbeatTime` or the Lease's `renewTime`) changed. A node
    /// seen for the first time counts as just heard from.
    pub fn observe(&mut self, node: &Node, lease: Option<&Lease>, now: Instant) -> Instant {
        let name = node.metadata.name.clone().unwrap_or_default();
        let heartbeat = condition(node, "Ready").and_then(|c| c.last_heartbeat_time.clone());
        let heartbeat = heartbeat.map(|t| t.0);
        let renew = lease
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.renew_time.clone())
            .map(|t| t.0);
        let h = self.nodes.entry(name).or_insert(Health {
            probe: now,
            heartbeat,
            renew,
        });
        if h.heartbeat != heartbeat || h.renew != renew {
            h.probe = now;
            h.heartbeat = heartbeat;
            h.renew = renew;
        }
        h.probe
    }

    /// Forgets the nodes `keep` rejects (deleted ones).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.nodes.retain(|name, _| keep(name));
    }

    /// Whether the node was not heard from within `grace` before `now`.
    pub fn stale(&self, node: &str, grace: Duration, now: Instant) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|h| now.saturating_duration_since(h.probe) > grace)
    }
}

/// The node's condition of type `t`.
pub fn condition<'a>(node: &'a Node, t: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
}

/// The status of the node's Ready condition (`Unknown` when absent).
pub fn ready_status(node: &Node) -> &str {
    condition(node, "Ready").map_or("Unknown", |c| c.status.as_str())
}

/// The conditions of a node the kubelet stopped reporting for: every monitored condition
/// `Unknown` (reason `NodeStatusUnknown`; `NodeStatusNeverUpdated` for ones never posted).
/// `None` when they already are.
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conds = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for t in MONITORED_CONDITIONS {
        match conds.iter_mut().find(|c| c.type_ == *t) {
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            Some(_) => {}
            None => {
                conds.push(NodeCondition {
                    type_: t.to_string(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conds)
}

fn managed_key(t: &Taint) -> bool {
    let k = t.key.as_str();
    k == TAINT_UNSCHEDULABLE
        || CONDITION_TAINTS.iter().any(|(_, _, key)| *key == k)
        || k == TAINT_NOT_READY
        || k == TAINT_UNREACHABLE
}

fn managed_effect(t: &Taint) -> bool {
    t.effect == "NoSchedule" || t.effect == "NoExecute"
}

/// The taints the node should carry: the NoExecute `not-ready`/`unreachable` taint for a
/// Ready condition `False`/`Unknown`, NoSchedule taints for its conditions and for
/// `spec.unschedulable`, and every taint the controller does not manage unchanged. Taints
/// still wanted keep their `timeAdded`. `None` when nothing changes.
pub fn desired_taints(node: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut want: Vec<(String, &'static str)> = Vec::new();
    for (t, status, key) in CONDITION_TAINTS {
        let st = if *t == "Ready" {
            Some(ready_status(node))
        } else {
            condition(node, t).map(|c| c.status.as_str())
        };
        if st == Some(*status) {
            want.push((key.to_string(), "NoSchedule"));
        }
    }
    match ready_status(node) {
        "False" => want.push((TAINT_NOT_READY.into(), "NoExecute")),
        "Unknown" => want.push((TAINT_UNREACHABLE.into(), "NoExecute")),
        _ => {}
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        want.push((TAINT_UNSCHEDULABLE.into(), "NoSchedule"));
    }
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !(managed_key(t) && managed_effect(t))
                || want.iter().any(|(k, e)| *k == t.key && *e == t.effect)
        })
        .cloned()
        .collect();
    for (key, effect) in want {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(Taint {
                key,
                effect: effect.into(),
                value: None,
                time_added: (effect == "NoExecute").then_some(Time(now)),
            });
        }
    }
    (out != current).then_some(out)
}

/// Whether a toleration tolerates a taint (upstream's `ToleratesTaint`).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = tol.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = tol.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// When taint-based eviction deletes a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Eviction {
    /// The pod tolerates every NoExecute taint forever (or there are none).
    Never,
    /// It does not tolerate some NoExecute taint: delete it now.
    Now,
    /// It tolerates them for a while: delete it at this time.
    At(Timestamp),
}

/// Decides the eviction of `pod` from a node with `taints` (upstream's taint manager): an
/// untolerated NoExecute taint evicts at once; otherwise the smallest `tolerationSeconds`
/// among the matching tolerations counts from when the pod first shared the node with the
/// taints (the newer of the oldest taint's `timeAdded` and the pod's creation).
pub fn eviction(pod: &Pod, taints: &[Taint], now: Timestamp) -> Eviction {
    let taints: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    if taints.is_empty() {
        return Eviction::Never;
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut min: Option<i64> = None;
    for taint in &taints {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Eviction::Now;
        }
        for t in matching {
            if let Some(s) = t.toleration_seconds {
                let s = s.max(0);
                min = Some(min.map_or(s, |m| m.min(s)));
            }
        }
    }
    let Some(secs) = min else {
        return Eviction::Never;
    };
    let oldest = taints
        .iter()
        .filter_map(|t| t.time_added.as_ref())
        .map(|t| t.0)
        .min();
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let start = match (oldest, created) {
        (Some(a), Some(b)) => a.max(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => now,
    };
    let at = start + k8s_openapi::jiff::SignedDuration::from_secs(secs);
    if at <= now {
        Eviction::Now
    } else {
        Eviction::At(at)
    }
}

/// The condition upstream's taint manager adds to a pod before deleting it.
pub fn disruption_condition(now: Timestamp) -> PodCondition {
    PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByTaintManager".into()),
        message: Some("Taint manager: deleting due to NoExecute taint".into()),
        last_transition_time: Some(Time(now)),
        last_probe_time: None,
    }
}

/// The pod's conditions with Ready set to `False` (upstream's `MarkPodsNotReady`), or `None`
/// when it is not Ready now.
pub fn not_ready_conditions(pod: &Pod, now: Timestamp) -> Option<Vec<PodCondition>> {
    let mut conds = pod.status.as_ref()?.conditions.clone()?;
    let c = conds
        .iter_mut()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    c.status = "False".into();
    c.last_transition_time = Some(Time(now));
    Some(conds)
}
