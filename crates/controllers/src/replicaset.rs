//! The ReplicaSet controller, also driving ReplicationControllers (upstream's
//! pkg/controller/replicaset): adopt and release pods, create or delete pods in slow-start
//! batches guarded by expectations, delete the least valuable pods first, write status.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::runtime::podutil::{self, LabelSelector};
use crate::runtime::{
    claim, controller_ref, create_pod_from_template, delete_pod, get_controller_of, key_of,
    run_workers, ApiError, Cache, Change, Context, Control, Expectations, WorkQueue,
};

/// Upstream's BurstReplicas: at most this many creates or deletes per sync.
pub const BURST_REPLICAS: usize = 500;
/// Upstream's SlowStartInitialBatchSize.
pub const SLOW_START_INITIAL_BATCH_SIZE: usize = 1;
/// The annotation ranking pods for scale-down (lower cost goes first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// What the controller needs of a ReplicaSet or a ReplicationController.
pub trait ReplicaOwner:
    Resource<DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// `spec.replicas` (defaults to 1).
    fn replicas(&self) -> i32;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i32;
    /// The pod selector.
    fn pod_selector(&self) -> Result<LabelSelector, String>;
    /// The pod template.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// The status, in ReplicaSet form (the two kinds' statuses have the same fields).
    fn rs_status(&self) -> ReplicaSetStatus;
    /// Replaces the status.
    fn set_rs_status(&mut self, status: ReplicaSetStatus);
}

impl ReplicaOwner for ReplicaSet {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn pod_selector(&self) -> Result<LabelSelector, String> {
        podutil::selector(self.spec.as_ref().map(|s| &s.selector))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn rs_status(&self) -> ReplicaSetStatus {
        self.status.clone().unwrap_or_default()
    }
    fn set_rs_status(&mut self, status: ReplicaSetStatus) {
        self.status = Some(status);
    }
}

impl ReplicaOwner for ReplicationController {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn pod_selector(&self) -> Result<LabelSelector, String> {
        let set = self
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        if set.is_empty() {
            // An RC with no selector is defaulted to its template labels; never select all.
            return Ok(LabelSelector::nothing());
        }
        Ok(podutil::selector_from_set(&set))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn rs_status(&self) -> ReplicaSetStatus {
        serde_json::to_value(&self.status)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }
    fn set_rs_status(&mut self, status: ReplicaSetStatus) {
        self.status = serde_json::to_value(status)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok());
    }
}

/// The controller for one owner kind `K` (ReplicaSet or ReplicationController).
pub struct ReplicaSetController<K: ReplicaOwner> {
    /// The shared pod cache.
    pub pods: Arc<Cache<Pod>>,
    /// The shared owner cache.
    pub owners: Arc<Cache<K>>,
    /// ReplicaSets, to rank pods of sibling ReplicaSets of one Deployment for scale-down.
    pub replica_sets: Option<Arc<Cache<ReplicaSet>>>,
    /// Expected creates and deletes per owner key.
    pub expectations: Expectations,
    /// Where writes go.
    pub control: Arc<dyn Control>,
    /// Keys to sync.
    pub queue: WorkQueue,
    /// Maximum creates or deletes per sync.
    pub burst_replicas: usize,
}

impl<K: ReplicaOwner> ReplicaSetController<K> {
    /// A controller over the given caches, with handlers not yet registered.
    pub fn new(
        pods: Arc<Cache<Pod>>,
        owners: Arc<Cache<K>>,
        replica_sets: Option<Arc<Cache<ReplicaSet>>>,
        control: Arc<dyn Control>,
    ) -> Arc<Self> {
        Arc::new(ReplicaSetController {
            pods,
            owners,
            replica_sets,
            expectations: Expectations::default(),
            control,
            queue: WorkQueue::default(),
            burst_replicas: BURST_REPLICAS,
        })
    }

    /// Registers the pod and owner change handlers that feed the queue.
    pub fn register_handlers(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.owners.add_handler(move |c: &Change<K>| {
            if let Some(me) = me.upgrade() {
                me.queue.add(key_of(c.object().as_ref()));
            }
        });
        let me = Arc::downgrade(self);
        self.pods.add_handler(move |c: &Change<Pod>| {
            if let Some(me) = me.upgrade() {
                me.on_pod_change(c);
            }
        });
    }

    /// The owner a controllerRef points at, if it is in the cache with the same UID.
    fn resolve_controller_ref(&self, namespace: &str, meta: &ObjectMeta) -> Option<Arc<K>> {
        let r = get_controller_of(meta)?;
        if r.kind != K::kind(&()) {
            return None;
        }
        let owner = self.owners.get(namespace, &r.name)?;
        (owner.meta().uid.as_deref() == Some(r.uid.as_str())).then_some(owner)
    }

    /// Owners whose selector matches an orphan pod.
    fn matching_owners(&self, pod: &Pod) -> Vec<Arc<K>> {
        let ns = pod.namespace().unwrap_or_default();
        self.owners
            .list(&ns)
            .into_iter()
            .filter(|o| {
                o.pod_selector().is_ok_and(|s| {
                    !s.is_empty() && podutil::matches(&s, pod.metadata.labels.as_ref())
                })
            })
            .collect()
    }

    fn on_pod_deleted(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        if let Some(owner) = self.resolve_controller_ref(&ns, &pod.metadata) {
            let key = key_of(owner.as_ref());
            self.expectations.deletion_observed(&key, &key_of(pod));
            self.queue.add(key);
        }
    }

    fn on_pod_change(&self, change: &Change<Pod>) {
        match change {
            Change::Added(pod) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    return self.on_pod_deleted(pod);
                }
                let ns = pod.namespace().unwrap_or_default();
                if let Some(owner) = self.resolve_controller_ref(&ns, &pod.metadata) {
                    let key = key_of(owner.as_ref());
                    self.expectations.creation_observed(&key);
                    self.queue.add(key);
                    return;
                }
                if get_controller_of(&pod.metadata).is_none() {
                    for o in self.matching_owners(pod) {
                        self.queue.add(key_of(o.as_ref()));
                    }
                }
            }
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version
                    && old.metadata.resource_version.is_some()
                {
                    return;
                }
                let label_changed = old.metadata.labels != new.metadata.labels;
                if new.metadata.deletion_timestamp.is_some() {
                    self.on_pod_deleted(new);
                    if label_changed {
                        self.on_pod_deleted(old);
                    }
                    return;
                }
                let ns = new.namespace().unwrap_or_default();
                let old_ref = get_controller_of(&old.metadata);
                let new_ref = get_controller_of(&new.metadata);
                let ref_changed = old_ref != new_ref;
                if ref_changed {
                    if let Some(o) = self.resolve_controller_ref(&ns, &old.metadata) {
                        self.queue.add(key_of(o.as_ref()));
                    }
                }
                if let Some(owner) = self.resolve_controller_ref(&ns, &new.metadata) {
                    let key = key_of(owner.as_ref());
                    let mrs = owner.min_ready_seconds();
                    if mrs > 0 && !podutil::is_pod_ready(old) && podutil::is_pod_ready(new) {
                        // Re-check availability once minReadySeconds have passed.
                        self.queue
                            .add_after(key.clone(), Duration::from_secs(mrs as u64 + 1));
                    }
                    self.queue.add(key);
                    return;
                }
                if new_ref.is_none() && (label_changed || ref_changed) {
                    for o in self.matching_owners(new) {
                        self.queue.add(key_of(o.as_ref()));
                    }
                }
            }
            Change::Deleted(pod) => self.on_pod_deleted(pod),
        }
    }

    /// Reconciles the owner with key `key`; `Ok(Some(d))` asks for a re-sync after `d`.
    pub async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(owner) = self.owners.get_by_key(key) else {
            self.expectations.delete(key);
            return Ok(None);
        };
        let needs_sync = self.expectations.satisfied(key);
        let selector = match owner.pod_selector() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%key, error = %e, "invalid selector");
                return Ok(None);
            }
        };
        let ns = owner.namespace().unwrap_or_default();
        let active: Vec<Arc<Pod>> = self
            .pods
            .list(&ns)
            .into_iter()
            .filter(|p| podutil::is_pod_active(p))
            .collect();
        let pods = claim(
            self.control.as_ref(),
            owner.as_ref(),
            &selector,
            active,
            |_| true,
        )
        .await?;

        let mut manage_err = None;
        if needs_sync && owner.meta().deletion_timestamp.is_none() {
            if let Err(e) = self.manage_replicas(key, &owner, &pods).await {
                manage_err = Some(e);
            }
        }

        let now = Timestamp::now();
        let status = calculate_status(owner.as_ref(), &pods, manage_err.as_ref(), now);
        let updated = self.update_status(owner.as_ref(), status).await?;
        let mrs = owner.min_ready_seconds();
        if let Some(e) = manage_err {
            return Err(e.into());
        }
        if mrs > 0
            && updated.ready_replicas.unwrap_or(0) == owner.replicas()
            && updated.available_replicas.unwrap_or(0) != owner.replicas()
        {
            return Ok(Some(Duration::from_secs(mrs as u64)));
        }
        Ok(None)
    }

    /// Creates or deletes pods to move toward `spec.replicas` (upstream's manageReplicas).
    async fn manage_replicas(
        &self,
        key: &str,
        owner: &K,
        pods: &[Arc<Pod>],
    ) -> Result<(), ApiError> {
        let diff = pods.len() as i64 - owner.replicas() as i64;
        if diff < 0 {
            let n = ((-diff) as usize).min(self.burst_replicas);
            let Some(template) = owner.template() else {
                return Ok(());
            };
            self.expectations.expect_creations(key, n);
            let cref = controller_ref(owner);
            let (ok, err) = slow_start_batch(n, SLOW_START_INITIAL_BATCH_SIZE, || {
                let cref = cref.clone();
                async move {
                    match create_pod_from_template(self.control.as_ref(), owner, template, cref)
                        .await
                    {
                        Err(e) if is_namespace_terminating(&e) => Ok(()),
                        r => r.map(|_| ()),
                    }
                }
            })
            .await;
            // Creations never attempted (or failed) will never be observed.
            for _ in ok..n {
                self.expectations.creation_observed(key);
            }
            if let Some(e) = err {
                return Err(e);
            }
        } else if diff > 0 {
            let n = (diff as usize).min(self.burst_replicas);
            let related = self.indirectly_related_pods(owner);
            let victims = pods_to_delete(pods, &related, n, Timestamp::now());
            let pod_keys = victims.iter().map(|p| key_of(p.as_ref())).collect();
            self.expectations.expect_deletions(key, pod_keys);
            let results = join_all(victims.iter().map(|p| async move {
                let r = delete_pod(self.control.as_ref(), owner, p).await;
                if r.is_err() {
                    // The delete will never be observed: do not wait for it.
                    self.expectations
                        .deletion_observed(key, &key_of(p.as_ref()));
                }
                r
            }))
            .await;
            if let Some(e) = results
                .into_iter()
                .filter_map(Result::err)
                .find(|e| !e.is_not_found())
            {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Active pods of the other ReplicaSets controlled by this ReplicaSet's controller.
    fn indirectly_related_pods(&self, owner: &K) -> Vec<Arc<Pod>> {
        let (Some(rss), Some(cref)) = (&self.replica_sets, get_controller_of(owner.meta())) else {
            return Vec::new();
        };
        let ns = owner.namespace().unwrap_or_default();
        let uids: HashSet<String> = rss
            .list(&ns)
            .iter()
            .filter(|rs| get_controller_of(&rs.metadata).is_some_and(|r| r.uid == cref.uid))
            .filter_map(|rs| rs.metadata.uid.clone())
            .collect();
        self.pods
            .list(&ns)
            .into_iter()
            .filter(|p| podutil::is_pod_active(p))
            .filter(|p| get_controller_of(&p.metadata).is_some_and(|r| uids.contains(&r.uid)))
            .collect()
    }

    /// Writes `status` unless nothing changed (upstream's updateReplicaSetStatus).
    async fn update_status(
        &self,
        owner: &K,
        mut status: ReplicaSetStatus,
    ) -> Result<ReplicaSetStatus, ApiError> {
        let current = owner.rs_status();
        status.observed_generation = owner.meta().generation;
        if current == status {
            return Ok(current);
        }
        let mut obj = owner.clone();
        obj.set_rs_status(status.clone());
        self.control.update_status_obj(&obj).await?;
        Ok(status)
    }
}

fn is_namespace_terminating(e: &ApiError) -> bool {
    matches!(e, ApiError::Status { message, .. } if message.contains("because it is being terminated"))
}

/// Runs `f` `count` times in batches of 1, 2, 4, … stopping after the first batch with
/// an error; returns the successes and the first error (upstream's slowStartBatch).
pub async fn slow_start_batch<F, Fut>(
    count: usize,
    initial: usize,
    f: F,
) -> (usize, Option<ApiError>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), ApiError>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch = remaining.min(initial);
    while batch > 0 {
        let results = join_all((0..batch).map(|_| f())).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(()) => successes += 1,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if first_err.is_some() {
            return (successes, first_err);
        }
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    (successes, None)
}

/// The `n` pods to delete first: upstream's getPodsToDelete with ActivePodsWithRanks,
/// where a pod's rank is the number of related pods on its node.
pub fn pods_to_delete(
    pods: &[Arc<Pod>],
    related: &[Arc<Pod>],
    n: usize,
    now: Timestamp,
) -> Vec<Arc<Pod>> {
    let mut ranked: Vec<(Arc<Pod>, usize)> = if n < pods.len() {
        let mut on_node: HashMap<&str, usize> = HashMap::new();
        for p in related {
            if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                *on_node.entry(node).or_default() += 1;
            }
        }
        pods.iter()
            .map(|p| {
                let node = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .unwrap_or("");
                (
                    p.clone(),
                    if node.is_empty() {
                        0
                    } else {
                        on_node.get(node).copied().unwrap_or(0)
                    },
                )
            })
            .collect()
    } else {
        pods.iter().map(|p| (p.clone(), 0)).collect()
    };
    ranked.sort_by(|a, b| compare_for_deletion(&a.0, a.1, &b.0, b.1, now));
    ranked.into_iter().take(n).map(|(p, _)| p).collect()
}

fn deletion_cost(p: &Pod) -> i64 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn log_rank(t: Timestamp, now: Timestamp) -> i64 {
    let d = now.duration_since(t).as_nanos();
    if d > 0 {
        (d as f64).log2() as i64
    } else {
        -1
    }
}

/// Orders by time as upstream's LogarithmicScaleDown does: newer (and unset) first, with
/// times in the same power-of-two age bucket compared by UID.
fn compare_times(t1: Option<Timestamp>, t2: Option<Timestamp>, now: Timestamp) -> Option<Ordering> {
    if t1 == t2 {
        return None;
    }
    match (t1, t2) {
        (None, _) => Some(Ordering::Less),
        (_, None) => Some(Ordering::Greater),
        (Some(a), Some(b)) => {
            // Upstream breaks ties inside a bucket by UID at once, which is not a total order
            // across criteria (Go's sort tolerates that; Rust's panics): fall through to the next
            // criterion instead, and break the final tie by UID.
            let diff = log_rank(a, now) - log_rank(b, now);
            (diff != 0).then(|| diff.cmp(&0))
        }
    }
}

/// Upstream's ActivePodsWithRanks.Less as an ordering: pods earlier go first.
pub fn compare_for_deletion(
    a: &Pod,
    rank_a: usize,
    b: &Pod,
    rank_b: usize,
    now: Timestamp,
) -> Ordering {
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default()
    };
    let (na, nb) = (node(a), node(b));
    // 1. Unassigned < assigned.
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // 2. Pending < Unknown < Running.
    let ord = |p: &Pod| match podutil::phase(p) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    if ord(a) != ord(b) {
        return ord(a).cmp(&ord(b));
    }
    // 3. Not ready < ready.
    let (ra, rb) = (podutil::is_pod_ready(a), podutil::is_pod_ready(b));
    if ra != rb {
        return if ra {
            Ordering::Greater
        } else {
            Ordering::Less
        };
    }
    // 4. Lower deletion cost < higher.
    if deletion_cost(a) != deletion_cost(b) {
        return deletion_cost(a).cmp(&deletion_cost(b));
    }
    // 5. Doubled up (more related pods on the node) < not.
    if rank_a != rank_b {
        return rank_b.cmp(&rank_a);
    }
    let ua = a.metadata.uid.clone().unwrap_or_default();
    let ub = b.metadata.uid.clone().unwrap_or_default();
    // 6. Ready for a shorter time < longer.
    if ra && rb {
        if let Some(o) = compare_times(podutil::pod_ready_time(a), podutil::pod_ready_time(b), now)
        {
            return o;
        }
    }
    // 7. More restarts < fewer.
    let (ca, cb) = (
        podutil::max_container_restarts(a),
        podutil::max_container_restarts(b),
    );
    if ca != cb {
        return cb.cmp(&ca);
    }
    // 8. Newer < older.
    let ct = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    compare_times(ct(a), ct(b), now).unwrap_or_else(|| ua.cmp(&ub))
}

/// Upstream's calculateStatus: counts, and the ReplicaFailure condition after a failed
/// create or delete.
pub fn calculate_status<K: ReplicaOwner>(
    owner: &K,
    pods: &[Arc<Pod>],
    manage_err: Option<&ApiError>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let mut status = owner.rs_status();
    let template_labels: BTreeMap<String, String> = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let (mut fully, mut ready, mut available) = (0, 0, 0);
    for p in pods {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            fully += 1;
        }
        if podutil::is_pod_ready(p) {
            ready += 1;
            if podutil::is_pod_available(p, owner.min_ready_seconds(), now) {
                available += 1;
            }
        }
    }
    let mut conditions = status.conditions.take().unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match manage_err {
        Some(e) if !has_failure => {
            let reason = if (pods.len() as i32) < owner.replicas() {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(e.to_string()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    status.replicas = pods.len() as i32;
    status.fully_labeled_replicas = Some(fully);
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status
}

async fn run_kind<K: ReplicaOwner>(ctx: Arc<Context>, name: &'static str) -> anyhow::Result<()> {
    let rss = ctx.informers.cache::<ReplicaSet>();
    let c = ReplicaSetController::new(
        ctx.informers.cache::<Pod>(),
        ctx.informers.cache::<K>(),
        Some(rss),
        ctx.control.clone(),
    );
    c.register_handlers();
    ctx.informers.wait_for_sync().await;
    for o in c.owners.list_all() {
        c.queue.add(key_of(o.as_ref()));
    }
    let queue = c.queue.clone();
    run_workers(name, queue, ctx.config.workers, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

/// Runs the ReplicaSet controller until dropped.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    run_kind::<ReplicaSet>(ctx, "replicaset").await
}

/// Runs the ReplicationController controller until dropped.
pub async fn run_replication_controllers(ctx: Arc<Context>) -> anyhow::Result<()> {
    run_kind::<ReplicationController>(ctx, "replicationcontroller").await
}

#[cfg(test)]
mod tests;
