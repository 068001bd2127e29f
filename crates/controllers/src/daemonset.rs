//! The DaemonSet controller (upstream's pkg/controller/daemon): one pod per eligible node
//! (nodeSelector, required node affinity, taints against the pod's tolerations plus the
//! daemon tolerations upstream adds), placed by the scheduler through a node affinity on
//! `metadata.name`; pods follow nodes as they come and go; failed pods are killed and
//! replaced with a per-node exponential backoff; revisions as ControllerRevisions and a
//! RollingUpdate with maxUnavailable/maxSurge, or OnDelete.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;

use crate::deployment::util::compute_hash;
use crate::job::{Clock, SystemClock};
use crate::replicaset::slow_start_batch;
use crate::runtime::podutil;
use crate::runtime::{
    claim, controller_ref, delete_pod, get_controller_of, key_of, run_workers, ApiError, Cache,
    Change, Context, Control, Expectations, WorkQueue,
};

/// The pod label naming the revision (template hash) a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The deprecated pod label with the DaemonSet's generation at the pod's creation.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// Creations and deletions per sync at most (upstream's BurstReplicas).
const BURST_REPLICAS: usize = 250;
/// The first delay before a failed daemon pod of a node is killed again.
pub const FAILED_POD_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// The longest such delay.
pub const FAILED_POD_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

/// One key's state in [`FailedPodsBackoff`].
#[derive(Debug, Clone, Copy)]
struct BackoffEntry {
    backoff: Duration,
    last_update: Timestamp,
}

/// Upstream's failedPodsBackoff (a client-go flowcontrol.Backoff without jitter): per
/// DaemonSet generation and node, the delay doubles from 1 s up to 15 min each time a
/// failed pod is killed, and resets after twice the maximum without failures.
#[derive(Debug, Default)]
pub struct FailedPodsBackoff {
    entries: Mutex<HashMap<String, BackoffEntry>>,
}

impl FailedPodsBackoff {
    fn expired(e: &BackoffEntry, now: Timestamp) -> bool {
        elapsed(e.last_update, now) > FAILED_POD_BACKOFF_MAX * 2
    }

    /// Whether `key` was bumped less than its current delay ago.
    pub fn in_backoff(&self, key: &str, now: Timestamp) -> bool {
        let map = self.entries.lock().unwrap();
        map.get(key)
            .is_some_and(|e| !Self::expired(e, now) && elapsed(e.last_update, now) < e.backoff)
    }

    /// The current delay of `key`.
    pub fn get(&self, key: &str) -> Duration {
        let map = self.entries.lock().unwrap();
        map.get(key).map_or(Duration::ZERO, |e| e.backoff)
    }

    /// Records a kill at `now`: the first (or first after expiry) waits 1 s, each next
    /// one twice the last, at most 15 min. Expired keys are dropped on the way.
    pub fn next(&self, key: &str, now: Timestamp) {
        let mut map = self.entries.lock().unwrap();
        map.retain(|_, e| !Self::expired(e, now));
        let backoff = match map.get(key) {
            Some(e) => (e.backoff * 2).min(FAILED_POD_BACKOFF_MAX),
            None => FAILED_POD_BACKOFF_INITIAL,
        };
        map.insert(
            key.to_string(),
            BackoffEntry {
                backoff,
                last_update: now,
            },
        );
    }
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or_default()
}

/// The DaemonSet annotation upstream's API server keeps at the template's generation.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// The template generation: the deprecated annotation when set, else (skiff's API server
/// does not keep that annotation) the object's generation.
fn template_generation(ds: &DaemonSet) -> Option<i64> {
    ds.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TEMPLATE_GENERATION_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .or(ds.metadata.generation)
}

/// Upstream's failedPodsBackoffKey.
fn failed_pods_backoff_key(ds: &DaemonSet, node: &str) -> String {
    format!(
        "{}/{}/{node}",
        ds.metadata.uid.as_deref().unwrap_or_default(),
        ds.status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or(0)
    )
}

/// The DaemonSet controller over shared caches.
pub struct DaemonSetController {
    /// DaemonSets.
    pub sets: Arc<Cache<DaemonSet>>,
    /// Pods.
    pub pods: Arc<Cache<Pod>>,
    /// Nodes.
    pub nodes: Arc<Cache<Node>>,
    /// Revisions.
    pub revisions: Arc<Cache<ControllerRevision>>,
    /// Where writes go.
    pub control: Arc<dyn Control>,
    /// Keys to sync.
    pub queue: WorkQueue,
    /// Creations in flight per DaemonSet.
    pub expectations: Expectations,
    /// Deletions in flight per DaemonSet (kept apart: one sync may both create and
    /// delete, and [`Expectations`] records one kind at a time).
    pub deletions: Expectations,
    /// Delays between kills of failed daemon pods.
    pub failed_pods_backoff: FailedPodsBackoff,
    /// The time source.
    pub clock: Arc<dyn Clock>,
}

/// Whether `toleration` tolerates `taint` (upstream's Toleration.ToleratesTaint).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// Adds the tolerations upstream gives every daemon pod (AddOrUpdateDaemonPodTolerations):
/// not-ready and unreachable NoExecute without tolerationSeconds (so daemon pods are never
/// evicted for them), the pressure and unschedulable NoSchedule taints, and
/// network-unavailable for host-network pods.
pub fn add_daemon_tolerations(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    let mut wanted = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    for t in wanted {
        // Upstream's AddOrUpdateTolerationInPodSpec: a toleration of the same key,
        // operator and effect is replaced (dropping any tolerationSeconds).
        match list.iter_mut().find(|o| {
            o.key == t.key
                && o.operator.as_deref().unwrap_or("Equal") == "Exists"
                && o.effect == t.effect
        }) {
            Some(o) => *o = t,
            None => list.push(t),
        }
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value.and_then(|v| v.parse::<i64>().ok()), values) else {
                return false;
            };
            let Ok(b) = bound.parse::<i64>() else {
                return false;
            };
            if r.operator == "Gt" {
                v > b
            } else {
                v < b
            }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_deref())
        })
}

/// Whether the pod's nodeSelector and required node affinity select `node`.
pub fn fits_node_affinity(spec: &k8s_openapi::api::core::v1::PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(sel) = &spec.node_selector {
        if sel.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    match spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }) {
        Some(req) => req
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
        None => true,
    }
}

/// Upstream's NodeShouldRunDaemonPod: `(should_run, should_continue_running)` for a pod of
/// `template` (daemon tolerations included) on `node`. Untolerated NoSchedule taints keep
/// new pods away; only untolerated NoExecute taints evict running ones.
pub fn node_should_run(template: &PodTemplateSpec, node: &Node) -> (bool, bool) {
    let mut spec = template.spec.clone().unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if Some(n) != node.metadata.name.as_deref() {
            return (false, false);
        }
    }
    if !fits_node_affinity(&spec, node) {
        return (false, false);
    }
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    let untolerated = |effect: &str| {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.effect == effect)
            .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    let no_execute = untolerated("NoExecute");
    (!no_execute && !untolerated("NoSchedule"), !no_execute)
}

/// The node a daemon pod is bound or targeted to (upstream's GetTargetNodeName): its
/// `nodeName`, else the `metadata.name` node affinity the controller gave it.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// Sets the pod's required node affinity to exactly `node` by name, as upstream's
/// ReplaceDaemonSetPodNodeNameNodeAffinity does, so the scheduler binds it there.
fn pin_to_node(spec: &mut k8s_openapi::api::core::v1::PodSpec, node: &str) {
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    });
}

fn template(ds: &DaemonSet) -> PodTemplateSpec {
    ds.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

/// The hash of the set's current template (its ControllerRevision is `<set>-<hash>`).
pub fn current_hash(ds: &DaemonSet) -> String {
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    compute_hash(&template(ds), collisions)
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

fn min_ready(ds: &DaemonSet) -> i32 {
    ds.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

fn is_rolling(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// Resolves an int-or-percent against `total`, rounding up or down.
fn scaled(v: Option<&IntOrString>, total: i32, default: i32, round_up: bool) -> i32 {
    match v {
        None => default,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let x = pct * total as f64 / 100.0;
            if round_up {
                x.ceil() as i32
            } else {
                x.floor() as i32
            }
        }
    }
}

/// Upstream's updatedDesiredNodeCounts: `(max_surge, max_unavailable)` for `desired`
/// scheduled pods; both zero means one may be unavailable.
pub fn surge_and_unavailable(ds: &DaemonSet, desired: i32) -> (i32, i32) {
    let ru = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref());
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), desired, 0, true);
    let unavailable = scaled(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        desired,
        1,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn created(p: &Pod) -> Option<Timestamp> {
    p.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// The node's pods, bound ones first, then oldest first (upstream's
/// podByCreationTimestampAndPhase).
fn sort_oldest_first(pods: &mut [Arc<Pod>]) {
    let unbound = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(str::is_empty)
    };
    pods.sort_by(|a, b| {
        unbound(a)
            .cmp(&unbound(b))
            .then_with(|| created(a).cmp(&created(b)))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// The new-hash and the old-hash pod of one node.
type NewAndOld<'a> = (Option<&'a Arc<Pod>>, Option<&'a Arc<Pod>>);

/// Upstream's findUpdatedPodsOnNode: the live new-hash and old-hash pods on a node, or
/// `None` when there are duplicates of either (the manage pass cleans those up).
fn updated_and_old<'a>(pods: &'a [Arc<Pod>], hash: &str) -> Option<NewAndOld<'a>> {
    let (mut new, mut old) = (None, None);
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let slot = if hash_of(p) == Some(hash) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

impl DaemonSetController {
    /// A controller over the given caches, with handlers not yet registered.
    pub fn new(
        sets: Arc<Cache<DaemonSet>>,
        pods: Arc<Cache<Pod>>,
        nodes: Arc<Cache<Node>>,
        revisions: Arc<Cache<ControllerRevision>>,
        control: Arc<dyn Control>,
    ) -> Arc<Self> {
        Self::with_clock(sets, pods, nodes, revisions, control, Arc::new(SystemClock))
    }

    /// [`DaemonSetController::new`] with a given time source (tests).
    pub fn with_clock(
        sets: Arc<Cache<DaemonSet>>,
        pods: Arc<Cache<Pod>>,
        nodes: Arc<Cache<Node>>,
        revisions: Arc<Cache<ControllerRevision>>,
        control: Arc<dyn Control>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(DaemonSetController {
            sets,
            pods,
            nodes,
            revisions,
            control,
            queue: WorkQueue::default(),
            expectations: Expectations::default(),
            deletions: Expectations::default(),
            failed_pods_backoff: FailedPodsBackoff::default(),
            clock,
        })
    }

    fn owner_of(&self, pod: &Pod) -> Option<Arc<DaemonSet>> {
        let r = get_controller_of(&pod.metadata).filter(|r| r.kind == "DaemonSet")?;
        self.sets
            .get(&pod.namespace().unwrap_or_default(), &r.name)
            .filter(|s| s.metadata.uid.as_deref() == Some(&r.uid))
    }

    /// Registers the change handlers that feed the queue.
    pub fn register_handlers(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.sets.add_handler(move |c: &Change<DaemonSet>| {
            if let Some(me) = me.upgrade() {
                let key = key_of(c.object().as_ref());
                if matches!(c, Change::Deleted(_)) {
                    me.expectations.delete(&key);
                    me.deletions.delete(&key);
                }
                me.queue.add(key);
            }
        });
        let me = Arc::downgrade(self);
        self.pods.add_handler(move |c: &Change<Pod>| {
            let Some(me) = me.upgrade() else { return };
            let pod = c.object();
            match c {
                Change::Added(_) => {
                    if let Some(ds) = me.owner_of(pod) {
                        let key = key_of(ds.as_ref());
                        if pod.metadata.deletion_timestamp.is_some() {
                            me.deletions.deletion_observed(&key, &key_of(pod.as_ref()));
                        } else {
                            me.expectations.creation_observed(&key);
                        }
                        me.queue.add(key);
                    }
                }
                Change::Updated { old, new } => {
                    for p in [old, new] {
                        if let Some(ds) = me.owner_of(p) {
                            let key = key_of(ds.as_ref());
                            if new.metadata.deletion_timestamp.is_some() {
                                me.deletions.deletion_observed(&key, &key_of(new.as_ref()));
                            }
                            me.queue.add(key);
                        }
                    }
                }
                Change::Deleted(_) => {
                    if let Some(ds) = me.owner_of(pod) {
                        let key = key_of(ds.as_ref());
                        me.deletions.deletion_observed(&key, &key_of(pod.as_ref()));
                        me.queue.add(key);
                    }
                }
            }
        });
        let me = Arc::downgrade(self);
        self.nodes.add_handler(move |c: &Change<Node>| {
            let Some(me) = me.upgrade() else { return };
            if let Change::Updated { old, new } = c {
                // Heartbeats change only status: they cannot change where daemons run.
                if old.metadata.labels == new.metadata.labels
                    && old.spec.as_ref().map(|s| &s.taints) == new.spec.as_ref().map(|s| &s.taints)
                {
                    return;
                }
            }
            for ds in me.sets.list_all() {
                me.queue.add(key_of(ds.as_ref()));
            }
        });
    }

    fn satisfied(&self, key: &str) -> bool {
        self.expectations.satisfied(key) && self.deletions.satisfied(key)
    }

    /// Reconciles the DaemonSet with key `key`.
    pub async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(ds) = self.sets.get_by_key(key) else {
            self.expectations.delete(key);
            self.deletions.delete(key);
            return Ok(None);
        };
        let ds = (*ds).clone();
        let ns = ds.namespace().unwrap_or_default();
        // Read before the pods: a creation or deletion observed after the listing must not
        // count as seen by it.
        let satisfied = self.satisfied(key);
        let selector =
            podutil::selector(ds.spec.as_ref().map(|s| &s.selector)).map_err(anyhow::Error::msg)?;
        let pods = claim(
            self.control.as_ref(),
            &ds,
            &selector,
            self.pods.list(&ns),
            podutil::is_pod_active,
        )
        .await?;
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        // History keeps the revisions of terminal pods being deleted too.
        let mut with_deleted: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in pods {
            // Upstream skips pods whose node cannot be told (adopted, never targeted).
            let Some(n) = target_node(&p) else { continue };
            with_deleted.entry(n.clone()).or_default().push(p.clone());
            let terminal = matches!(podutil::phase(&p), "Succeeded" | "Failed");
            if !(terminal && p.metadata.deletion_timestamp.is_some()) {
                by_node.entry(n).or_default().push(p);
            }
        }
        for pods in by_node.values_mut() {
            sort_oldest_first(pods);
        }
        let hash = current_hash(&ds);
        if ds.metadata.deletion_timestamp.is_some() {
            self.write_status(&ds, &by_node, &hash).await?;
            return Ok(None);
        }
        self.ensure_revision(&ds, &hash).await?;
        let mut requeue = None;
        if satisfied {
            requeue = self.manage(key, &ds, &by_node, &hash).await?;
            // The rollout acts only on a node state manage left untouched.
            if is_rolling(&ds) && self.satisfied(key) {
                self.rolling_update(key, &ds, &by_node, &hash).await?;
            }
            self.cleanup_history(&ds, &with_deleted, &hash).await?;
        }
        self.write_status(&ds, &by_node, &hash).await?;
        // Availability comes with time, not with an event.
        let ready_after = (min_ready(&ds) > 0).then(|| Duration::from_secs(min_ready(&ds) as u64));
        Ok(match (requeue, ready_after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Creates the ControllerRevision of the current template if missing.
    async fn ensure_revision(&self, ds: &DaemonSet, hash: &str) -> Result<(), ApiError> {
        let ns = ds.namespace().unwrap_or_default();
        let name = format!("{}-{hash}", ds.name_any());
        if self.revisions.get(&ns, &name).is_some() {
            return Ok(());
        }
        let mut t = serde_json::to_value(template(ds)).unwrap_or_default();
        t["$patch"] = json!("replace");
        let max = self
            .owned_revisions(ds)
            .iter()
            .map(|r| r.revision)
            .max()
            .unwrap_or(0);
        let mut labels = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(REVISION_LABEL.into(), hash.into());
        let rev = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns),
                labels: Some(labels),
                owner_references: Some(vec![controller_ref(ds)]),
                ..Default::default()
            },
            data: Some(RawExtension(json!({"spec": {"template": t}}))),
            revision: max + 1,
        };
        match self.control.create_obj(&rev).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_already_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn owned_revisions(&self, ds: &DaemonSet) -> Vec<Arc<ControllerRevision>> {
        self.revisions
            .list(&ds.namespace().unwrap_or_default())
            .into_iter()
            .filter(|r| {
                get_controller_of(&r.metadata)
                    .is_some_and(|o| Some(&o.uid) == ds.metadata.uid.as_ref())
            })
            .collect()
    }

    /// Deletes the oldest revisions no pod runs beyond `revisionHistoryLimit` (default 10).
    async fn cleanup_history(
        &self,
        ds: &DaemonSet,
        by_node: &HashMap<String, Vec<Arc<Pod>>>,
        hash: &str,
    ) -> Result<(), ApiError> {
        let limit = ds
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let live: Vec<&str> = by_node
            .values()
            .flatten()
            .filter_map(|p| hash_of(p))
            .collect();
        let current = format!("{}-{hash}", ds.name_any());
        let mut old: Vec<Arc<ControllerRevision>> = self
            .owned_revisions(ds)
            .into_iter()
            .filter(|r| r.metadata.name.as_deref() != Some(current.as_str()))
            .filter(|r| {
                let h = r
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(REVISION_LABEL))
                    .map(String::as_str);
                !h.is_some_and(|h| live.contains(&h))
            })
            .collect();
        if old.len() <= limit {
            return Ok(());
        }
        old.sort_by_key(|r| r.revision);
        let ns = ds.namespace().unwrap_or_default();
        for r in &old[..old.len() - limit] {
            match self
                .control
                .delete_obj::<ControllerRevision>(&ns, &r.name_any(), r.metadata.uid.as_deref())
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The pod to create on `node` from the current template.
    pub fn new_pod(&self, ds: &DaemonSet, node: &str, hash: &str) -> Pod {
        let t = template(ds);
        let tm = t.metadata.unwrap_or_default();
        let mut labels = tm.labels.unwrap_or_default();
        labels.insert(REVISION_LABEL.into(), hash.into());
        if let Some(g) = template_generation(ds) {
            labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.to_string());
        }
        let mut spec = t.spec.unwrap_or_default();
        add_daemon_tolerations(&mut spec);
        pin_to_node(&mut spec, node);
        Pod {
            metadata: ObjectMeta {
                namespace: ds.namespace(),
                generate_name: Some(format!("{}-", ds.name_any())),
                labels: Some(labels),
                annotations: tm.annotations,
                finalizers: tm.finalizers,
                owner_references: Some(vec![controller_ref(ds)]),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    /// Upstream's manage: which nodes need a daemon pod and which pods must go
    /// (misscheduled, duplicate, failed, or on nodes that no longer exist); returns when
    /// to look again at failed pods held back by their backoff.
    async fn manage(
        &self,
        key: &str,
        ds: &DaemonSet,
        by_node: &HashMap<String, Vec<Arc<Pod>>>,
        hash: &str,
    ) -> Result<Option<Duration>, ApiError> {
        let t = template(ds);
        let (max_surge, _) = surge_and_unavailable(ds, 0);
        let surge = is_rolling(ds) && max_surge > 0;
        let now = self.clock.now();
        let mut requeue: Option<Duration> = None;
        let mut create_on: Vec<String> = Vec::new();
        let mut delete: Vec<Arc<Pod>> = Vec::new();
        let nodes: BTreeMap<String, Arc<Node>> = self
            .nodes
            .list_all()
            .into_iter()
            .map(|n| (n.name_any(), n))
            .collect();
        for (name, node) in &nodes {
            let (should_run, keep_running) = node_should_run(&t, node);
            let pods = by_node.get(name).cloned().unwrap_or_default();
            if should_run && pods.is_empty() {
                create_on.push(name.clone());
            } else if keep_running {
                let mut running = Vec::new();
                for p in &pods {
                    if p.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if podutil::phase(p) == "Failed" {
                        // Kubelets that keep rejecting a pod would make the controller
                        // hot-loop: kills of failed pods back off per node.
                        let bkey = failed_pods_backoff_key(ds, name);
                        if self.failed_pods_backoff.in_backoff(&bkey, now) {
                            let d = self.failed_pods_backoff.get(&bkey);
                            requeue = Some(requeue.map_or(d, |r| r.min(d)));
                            continue;
                        }
                        self.failed_pods_backoff.next(&bkey, now);
                        // Replaced on the next pass, once the deletion is observed.
                        let msg = format!(
                            "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                            p.namespace().unwrap_or_default(),
                            p.name_any()
                        );
                        self.control
                            .event_for(ds, "Warning", "FailedDaemonPod", msg)
                            .await;
                        delete.push(p.clone());
                        continue;
                    }
                    running.push(p.clone());
                }
                if running.len() > 1 {
                    delete.extend(excess_pods(&running, surge, hash, min_ready(ds), now));
                }
            } else {
                delete.extend(
                    pods.iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .cloned(),
                );
            }
        }
        // Pods of nodes that are gone.
        for (name, pods) in by_node {
            if !nodes.contains_key(name) {
                delete.extend(
                    pods.iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .cloned(),
                );
            }
        }
        self.sync_nodes(key, ds, delete, create_on, hash).await?;
        Ok(requeue)
    }

    /// Deletes `delete` and creates one pod on each of `create_on`, at most
    /// [`BURST_REPLICAS`] of each, guarded by expectations (upstream's syncNodes).
    async fn sync_nodes(
        &self,
        key: &str,
        ds: &DaemonSet,
        mut delete: Vec<Arc<Pod>>,
        mut create_on: Vec<String>,
        hash: &str,
    ) -> Result<(), ApiError> {
        delete.truncate(BURST_REPLICAS);
        create_on.truncate(BURST_REPLICAS);
        if delete.is_empty() && create_on.is_empty() {
            return Ok(());
        }
        self.expectations.expect_creations(key, create_on.len());
        self.deletions
            .expect_deletions(key, delete.iter().map(|p| key_of(p.as_ref())).collect());
        let mut first_err = None;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(create_on.len(), 1, || {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let pod = self.new_pod(ds, &create_on[i], hash);
            async move {
                match self.control.create_obj(&pod).await {
                    Ok(p) => {
                        let msg = format!("Created pod: {}", p.name_any());
                        self.control
                            .event_for(ds, "Normal", "SuccessfulCreate", msg)
                            .await;
                        Ok(())
                    }
                    Err(e) => {
                        let msg = format!("Error creating: {e}");
                        self.control
                            .event_for(ds, "Warning", "FailedCreate", msg)
                            .await;
                        Err(e)
                    }
                }
            }
        })
        .await;
        for _ in ok..create_on.len() {
            self.expectations.creation_observed(key);
        }
        if let Some(e) = err {
            first_err.get_or_insert(e);
        }
        let results = join_all(delete.iter().map(|p| async move {
            let r = delete_pod(self.control.as_ref(), ds, p).await;
            if r.is_err() {
                self.deletions.deletion_observed(key, &key_of(p.as_ref()));
            }
            r
        }))
        .await;
        if let Some(e) = results
            .into_iter()
            .filter_map(Result::err)
            .find(|e| !e.is_not_found())
        {
            first_err.get_or_insert(e);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Upstream's rollingUpdate: replace old-hash pods within maxUnavailable, or (with
    /// maxSurge) start new pods beside old ones and delete the old once the new are available.
    async fn rolling_update(
        &self,
        key: &str,
        ds: &DaemonSet,
        by_node: &HashMap<String, Vec<Arc<Pod>>>,
        hash: &str,
    ) -> Result<(), ApiError> {
        let t = template(ds);
        let nodes = self.nodes.list_all();
        let desired = nodes.iter().filter(|n| node_should_run(&t, n).0).count() as i32;
        let (max_surge, max_unavailable) = surge_and_unavailable(ds, desired);
        let now = self.clock.now();
        let available = |p: &Pod| podutil::is_pod_available(p, min_ready(ds), now);
        let mut names: Vec<&String> = by_node.keys().collect();
        names.sort();
        if max_surge == 0 {
            let mut unavailable = 0;
            let mut allowed = Vec::new();
            let mut candidates = Vec::new();
            for n in names {
                let Some((new, old)) = updated_and_old(&by_node[n], hash) else {
                    unavailable += 1;
                    continue;
                };
                match (new, old) {
                    (None, None) | (Some(_), Some(_)) => unavailable += 1,
                    (Some(new), None) => {
                        if !available(new) {
                            unavailable += 1;
                        }
                    }
                    (None, Some(old)) => {
                        if !available(old) {
                            allowed.push(old.clone());
                        } else if unavailable < max_unavailable {
                            candidates.push(old.clone());
                        }
                    }
                }
            }
            let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i32) as usize;
            allowed.extend(candidates.into_iter().take(room));
            return self.sync_nodes(key, ds, allowed, Vec::new(), hash).await;
        }
        let mut surged = 0;
        let mut allowed_nodes = Vec::new();
        let mut candidate_nodes = Vec::new();
        let mut delete = Vec::new();
        for n in names {
            let Some((new, old)) = updated_and_old(&by_node[n], hash) else {
                continue;
            };
            match (new, old) {
                (_, None) => {}
                (None, Some(old)) => {
                    if !available(old) {
                        allowed_nodes.push(n.clone());
                    } else if surged < max_surge {
                        candidate_nodes.push(n.clone());
                    }
                }
                (Some(new), Some(old)) => {
                    if available(new) {
                        delete.push(old.clone());
                    } else {
                        surged += 1;
                    }
                }
            }
        }
        let room = (max_surge - surged).clamp(0, candidate_nodes.len() as i32) as usize;
        allowed_nodes.extend(candidate_nodes.into_iter().take(room));
        self.sync_nodes(key, ds, delete, allowed_nodes, hash).await
    }

    async fn write_status(
        &self,
        ds: &DaemonSet,
        by_node: &HashMap<String, Vec<Arc<Pod>>>,
        hash: &str,
    ) -> Result<(), ApiError> {
        let t = template(ds);
        let now = self.clock.now();
        let generation = template_generation(ds).map(|g| g.to_string());
        let (mut desired, mut current, mut misscheduled) = (0, 0, 0);
        let (mut ready, mut available, mut updated) = (0, 0, 0);
        for node in self.nodes.list_all() {
            let (should_run, _) = node_should_run(&t, &node);
            let pods = by_node.get(&node.name_any());
            let scheduled = pods.is_some_and(|p| !p.is_empty());
            if !should_run {
                if scheduled {
                    misscheduled += 1;
                }
                continue;
            }
            desired += 1;
            let Some(pod) = pods.and_then(|p| p.first()).filter(|_| scheduled) else {
                continue;
            };
            current += 1;
            if podutil::is_pod_ready(pod) {
                ready += 1;
                if podutil::is_pod_available(pod, min_ready(ds), now) {
                    available += 1;
                }
            }
            let labels = pod.metadata.labels.as_ref();
            let gen_matches = generation.is_some()
                && labels.and_then(|l| l.get(TEMPLATE_GENERATION_LABEL)) == generation.as_ref();
            // Upstream's IsPodUpdated: the hash or the deprecated template generation.
            if hash_of(pod) == Some(hash) || gen_matches {
                updated += 1;
            }
        }
        let old = ds.status.clone().unwrap_or_default();
        let new = DaemonSetStatus {
            collision_count: old.collision_count,
            conditions: old.conditions.clone(),
            current_number_scheduled: current,
            desired_number_scheduled: desired,
            number_available: (available != 0).then_some(available),
            number_misscheduled: misscheduled,
            number_ready: ready,
            number_unavailable: (desired - available != 0).then_some(desired - available),
            observed_generation: ds.metadata.generation,
            updated_number_scheduled: (updated != 0).then_some(updated),
        };
        if ds.status.as_ref() == Some(&new) {
            return Ok(());
        }
        let mut obj = ds.clone();
        obj.status = Some(new);
        self.control.update_status_obj(&obj).await.map(|_| ())
    }
}

/// The surplus daemon pods of one node (oldest first in `running`): without surge the
/// oldest stays; with surge the oldest updated pod stays, and the oldest old one too until
/// the updated pod is available.
fn excess_pods(
    running: &[Arc<Pod>],
    surge: bool,
    hash: &str,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Vec<Arc<Pod>> {
    if !surge {
        return running[1..].to_vec();
    }
    let new = running.iter().find(|p| hash_of(p) == Some(hash));
    let old = running.iter().find(|p| hash_of(p) != Some(hash));
    let keep: Vec<&Arc<Pod>> = match (new, old) {
        (Some(n), Some(o)) if !podutil::is_pod_available(n, min_ready_seconds, now) => {
            vec![n, o]
        }
        (Some(n), _) => vec![n],
        (None, Some(o)) => vec![o],
        (None, None) => Vec::new(),
    };
    running
        .iter()
        .filter(|p| !keep.iter().any(|k| Arc::ptr_eq(k, p)))
        .cloned()
        .collect()
}

/// Runs the DaemonSet controller until dropped.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let c = DaemonSetController::new(
        ctx.informers.cache(),
        ctx.informers.cache(),
        ctx.informers.cache(),
        ctx.informers.cache(),
        ctx.control.clone(),
    );
    c.register_handlers();
    ctx.informers.wait_for_sync().await;
    for s in c.sets.list_all() {
        c.queue.add(key_of(s.as_ref()));
    }
    let queue = c.queue.clone();
    run_workers("daemonset", queue, ctx.config.workers, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests;
