//! The Deployment controller (upstream's pkg/controller/deployment): one ReplicaSet per pod
//! template, named `<deployment>-<pod-template-hash>`; RollingUpdate and Recreate
//! rollouts; revisions, history cleanup, pause, progress deadline and status conditions.

pub mod util;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use serde_json::json;

use crate::runtime::podutil::{self, LabelSelector};
use crate::runtime::{
    claim, controller_ref, get_controller_of, key_of, run_workers, ApiError, Cache, Change,
    Context, Control, WorkQueue,
};
use util::*;

/// The Deployment controller over shared caches.
pub struct DeploymentController {
    /// Deployments.
    pub deployments: Arc<Cache<Deployment>>,
    /// ReplicaSets.
    pub replica_sets: Arc<Cache<ReplicaSet>>,
    /// Pods (only to see that a Recreate rollout's old pods are gone).
    pub pods: Arc<Cache<Pod>>,
    /// Where writes go.
    pub control: Arc<dyn Control>,
    /// Keys to sync.
    pub queue: WorkQueue,
}

/// The working set of one sync: the Deployment as written so far, its new ReplicaSet and
/// the old ones (replaced as they are scaled, like upstream's pointers).
struct State {
    d: Deployment,
    new_rs: Option<ReplicaSet>,
    old: Vec<ReplicaSet>,
}

impl State {
    fn all(&self) -> Vec<&ReplicaSet> {
        self.old.iter().chain(self.new_rs.iter()).collect()
    }
}

fn sum(rss: &[&ReplicaSet], f: impl Fn(&ReplicaSet) -> i32) -> i32 {
    rss.iter().map(|rs| f(rs)).sum()
}

impl DeploymentController {
    /// A controller over the given caches, with handlers not yet registered.
    pub fn new(
        deployments: Arc<Cache<Deployment>>,
        replica_sets: Arc<Cache<ReplicaSet>>,
        pods: Arc<Cache<Pod>>,
        control: Arc<dyn Control>,
    ) -> Arc<Self> {
        Arc::new(DeploymentController {
            deployments,
            replica_sets,
            pods,
            control,
            queue: WorkQueue::default(),
        })
    }

    /// Registers the change handlers that feed the queue.
    pub fn register_handlers(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.deployments.add_handler(move |c: &Change<Deployment>| {
            if let Some(me) = me.upgrade() {
                me.queue.add(key_of(c.object().as_ref()));
            }
        });
        let me = Arc::downgrade(self);
        self.replica_sets
            .add_handler(move |c: &Change<ReplicaSet>| {
                if let Some(me) = me.upgrade() {
                    me.on_rs_change(c);
                }
            });
        let me = Arc::downgrade(self);
        self.pods.add_handler(move |c: &Change<Pod>| {
            if let (Some(me), Change::Deleted(pod)) = (me.upgrade(), c) {
                me.on_pod_deleted(pod);
            }
        });
    }

    fn owner_of(&self, ns: &str, meta: &ObjectMeta) -> Option<Arc<Deployment>> {
        let r = get_controller_of(meta)?;
        if r.kind != "Deployment" {
            return None;
        }
        let d = self.deployments.get(ns, &r.name)?;
        (d.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(d)
    }

    fn enqueue_matching(&self, rs: &ReplicaSet) {
        let ns = rs.namespace().unwrap_or_default();
        for d in self.deployments.list(&ns) {
            let sel = podutil::selector(d.spec.as_ref().map(|s| &s.selector));
            if sel.is_ok_and(|s| !s.is_empty() && podutil::matches(&s, rs.metadata.labels.as_ref()))
            {
                self.queue.add(key_of(d.as_ref()));
            }
        }
    }

    fn on_rs_change(&self, change: &Change<ReplicaSet>) {
        let rs = change.object();
        let ns = rs.namespace().unwrap_or_default();
        if let Change::Updated { old, new } = change {
            if old.metadata.resource_version == new.metadata.resource_version
                && old.metadata.resource_version.is_some()
            {
                return;
            }
            if get_controller_of(&old.metadata) != get_controller_of(&new.metadata) {
                if let Some(d) = self.owner_of(&ns, &old.metadata) {
                    self.queue.add(key_of(d.as_ref()));
                }
            }
        }
        if let Some(d) = self.owner_of(&ns, &rs.metadata) {
            self.queue.add(key_of(d.as_ref()));
            return;
        }
        if get_controller_of(&rs.metadata).is_none() && !matches!(change, Change::Deleted(_)) {
            self.enqueue_matching(rs);
        }
    }

    /// A Recreate rollout waits for every old pod to go.
    fn on_pod_deleted(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        let Some(r) = get_controller_of(&pod.metadata) else {
            return;
        };
        let Some(rs) = self.replica_sets.get(&ns, &r.name) else {
            return;
        };
        if let Some(d) = self.owner_of(&ns, &rs.metadata) {
            if !is_rolling_update(&d) {
                self.queue.add(key_of(d.as_ref()));
            }
        }
    }

    /// Reconciles the Deployment with key `key` (upstream's syncDeployment).
    pub async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(d) = self.deployments.get_by_key(key) else {
            return Ok(None);
        };
        let mut d = (*d).clone();
        let spec_selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        if spec_selector
            .match_labels
            .as_ref()
            .is_none_or(|m| m.is_empty())
            && spec_selector
                .match_expressions
                .as_ref()
                .is_none_or(|m| m.is_empty())
        {
            self.control
                .event_for(
                    &d,
                    "Warning",
                    "SelectingAll",
                    "This deployment is selecting all pods. A non-empty selector is required."
                        .into(),
                )
                .await;
            let observed = d
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if observed < d.metadata.generation.unwrap_or(0) {
                d.status
                    .get_or_insert_with(Default::default)
                    .observed_generation = d.metadata.generation;
                self.control.update_status_obj(&d).await?;
            }
            return Ok(None);
        }
        let rs_list = self.claim_replica_sets(&d).await?;
        if d.metadata.deletion_timestamp.is_some() {
            let mut st = self.get_all(d, &rs_list, false).await?;
            self.sync_deployment_status(&mut st).await?;
            return Ok(None);
        }
        self.check_paused_conditions(&mut d).await?;
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused || self.is_scaling_event(&d, &rs_list) {
            self.sync_scale(d, &rs_list, paused).await?;
            return Ok(None);
        }
        if is_rolling_update(&d) {
            self.rollout_rolling(d, &rs_list).await
        } else {
            self.rollout_recreate(d, &rs_list).await
        }
    }

    async fn claim_replica_sets(&self, d: &Deployment) -> Result<Vec<ReplicaSet>, ApiError> {
        let ns = d.namespace().unwrap_or_default();
        let sel = podutil::selector(d.spec.as_ref().map(|s| &s.selector))
            .unwrap_or_else(|_| LabelSelector::nothing());
        let claimed = claim(
            self.control.as_ref(),
            d,
            &sel,
            self.replica_sets.list(&ns),
            |_| true,
        )
        .await?;
        Ok(claimed.into_iter().map(|rs| (*rs).clone()).collect())
    }

    /// Upstream's checkPausedConditions: the Progressing condition says paused/resumed.
    async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<(), ApiError> {
        if progress_deadline(d).is_none() {
            return Ok(());
        }
        let status = d.status.get_or_insert_with(Default::default);
        let cond = get_condition(status, "Progressing");
        if cond.is_some_and(|c| c.reason.as_deref() == Some(reason::TIMED_OUT)) {
            return Ok(());
        }
        let paused_exists = cond.is_some_and(|c| c.reason.as_deref() == Some(reason::PAUSED));
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let c = if paused && !paused_exists {
            new_condition(
                "Progressing",
                "Unknown",
                reason::PAUSED,
                "Deployment is paused".into(),
            )
        } else if !paused && paused_exists {
            new_condition(
                "Progressing",
                "Unknown",
                reason::RESUMED,
                "Deployment is resumed".into(),
            )
        } else {
            return Ok(());
        };
        set_condition(status, c);
        *d = self.control.update_status_obj(d).await?;
        Ok(())
    }

    /// Upstream's isScalingEvent: an active ReplicaSet was sized for other replicas.
    fn is_scaling_event(&self, d: &Deployment, rs_list: &[ReplicaSet]) -> bool {
        rs_list
            .iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .filter_map(|rs| {
                rs.metadata
                    .annotations
                    .as_ref()?
                    .get(DESIRED_REPLICAS)?
                    .parse::<i32>()
                    .ok()
            })
            .any(|desired| desired != replicas(d))
    }

    /// Upstream's getAllReplicaSetsAndSyncRevision.
    async fn get_all(
        &self,
        d: Deployment,
        rs_list: &[ReplicaSet],
        create: bool,
    ) -> Result<State, ApiError> {
        let new_name = find_new_rs(&d, rs_list).and_then(|rs| rs.metadata.name.clone());
        let old: Vec<ReplicaSet> = rs_list
            .iter()
            .filter(|rs| new_name.is_none() || rs.metadata.name != new_name)
            .cloned()
            .collect();
        let mut st = State {
            d,
            new_rs: None,
            old,
        };
        st.new_rs = self.get_new_rs(&mut st, rs_list, create).await?;
        Ok(st)
    }

    /// Writes the Deployment's revision annotation (a metadata write: a status update
    /// only changes status) and returns the object to continue with.
    async fn set_deployment_revision(
        &self,
        d: &mut Deployment,
        revision: &str,
    ) -> Result<(), ApiError> {
        if d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .map(String::as_str)
            == Some(revision)
        {
            return Ok(());
        }
        let ns = d.namespace().unwrap_or_default();
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        let patched: Deployment = self.control.patch_obj(&ns, &d.name_any(), patch).await?;
        d.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(REVISION.into(), revision.into());
        if patched.metadata.resource_version.is_some() {
            d.metadata.resource_version = patched.metadata.resource_version;
        }
        Ok(())
    }

    /// Upstream's getNewReplicaSet.
    async fn get_new_rs(
        &self,
        st: &mut State,
        rs_list: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, ApiError> {
        let existing = find_new_rs(&st.d, rs_list).cloned();
        let new_revision = max_revision(st.old.iter()) + 1;
        if let Some(mut rs) = existing {
            let annotations_updated =
                set_new_replica_set_annotations(&st.d, &mut rs, new_revision, true);
            let mrs = st.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let spec = rs.spec.get_or_insert_with(Default::default);
            if annotations_updated || spec.min_ready_seconds != mrs {
                spec.min_ready_seconds = mrs;
                return Ok(Some(self.control.update_obj(&rs).await?));
            }
            let rev = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .cloned()
                .unwrap_or_default();
            self.set_deployment_revision(&mut st.d, &rev).await?;
            let has_deadline = progress_deadline(&st.d).is_some();
            let status = st.d.status.get_or_insert_with(Default::default);
            if has_deadline && get_condition(status, "Progressing").is_none() {
                let msg = format!("Found new replica set {:?}", rs.name_any());
                set_condition(
                    status,
                    new_condition("Progressing", "True", reason::FOUND_NEW_RS, msg),
                );
                st.d = self.control.update_status_obj(&st.d).await?;
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }
        let d = &st.d;
        let spec = d.spec.clone().unwrap_or_default();
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&spec.template, collision);
        let mut template = spec.template.clone();
        let tm = template.metadata.get_or_insert_with(Default::default);
        tm.labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let labels = tm.labels.clone();
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: d.namespace(),
                owner_references: Some(vec![controller_ref(d)]),
                labels,
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = st.old.iter().chain(std::iter::once(&new_rs)).collect();
        let count = new_rs_new_replicas(d, &all, &new_rs);
        new_rs.spec.as_mut().unwrap().replicas = Some(count);
        set_new_replica_set_annotations(d, &mut new_rs, new_revision, false);
        let mut already_exists = false;
        let created = match self.control.create_obj(&new_rs).await {
            Ok(rs) => rs,
            Err(e) if e.is_already_exists() => {
                already_exists = true;
                let ns = d.namespace().unwrap_or_default();
                let found = self
                    .replica_sets
                    .get(&ns, &new_rs.name_any())
                    .ok_or_else(|| e.clone())?;
                let ours = get_controller_of(&found.metadata)
                    .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                let same = found
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &spec.template));
                if ours && same {
                    (*found).clone()
                } else {
                    // A hash collision: bump the count so the next hash differs.
                    let status = st.d.status.get_or_insert_with(Default::default);
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.control.update_status_obj(&st.d).await?;
                    return Err(e);
                }
            }
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set {:?}: {e}",
                    new_rs.name_any()
                );
                if progress_deadline(d).is_some() {
                    let mut d2 = st.d.clone();
                    let status = d2.status.get_or_insert_with(Default::default);
                    set_condition(
                        status,
                        new_condition(
                            "Progressing",
                            "False",
                            reason::FAILED_RS_CREATE,
                            msg.clone(),
                        ),
                    );
                    let _ = self.control.update_status_obj(&d2).await;
                }
                self.control
                    .event_for(&st.d, "Warning", reason::FAILED_RS_CREATE, msg)
                    .await;
                return Err(e);
            }
        };
        if !already_exists && count > 0 {
            let msg = format!(
                "Scaled up replica set {} from 0 to {count}",
                created.name_any()
            );
            self.control
                .event_for(&st.d, "Normal", "ScalingReplicaSet", msg)
                .await;
        }
        self.set_deployment_revision(&mut st.d, &new_revision.to_string())
            .await?;
        if !already_exists && progress_deadline(&st.d).is_some() {
            let msg = format!("Created new replica set {:?}", created.name_any());
            let status = st.d.status.get_or_insert_with(Default::default);
            set_condition(
                status,
                new_condition("Progressing", "True", reason::NEW_RS_CREATED, msg),
            );
            st.d = self.control.update_status_obj(&st.d).await?;
        }
        Ok(Some(created))
    }

    /// Upstream's scaleReplicaSet, returning the written ReplicaSet when it changed.
    async fn scale_rs(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
        new_scale: i32,
        op: &str,
    ) -> Result<Option<ReplicaSet>, ApiError> {
        let size_changes = rs_replicas(rs) != new_scale;
        let mut copy = rs.clone();
        let annotations_change =
            set_replicas_annotations(&mut copy, replicas(d), replicas(d) + max_surge(d));
        if !size_changes && !annotations_change {
            return Ok(None);
        }
        copy.spec.get_or_insert_with(Default::default).replicas = Some(new_scale);
        let updated = self.control.update_obj(&copy).await?;
        if size_changes {
            let msg = format!(
                "Scaled {op} replica set {} from {} to {new_scale}",
                rs.name_any(),
                rs_replicas(rs)
            );
            self.control
                .event_for(d, "Normal", "ScalingReplicaSet", msg)
                .await;
        }
        Ok(Some(updated))
    }

    /// Upstream's scaleReplicaSetAndRecordEvent: whether it scaled.
    async fn scale_and_record(
        &self,
        d: &Deployment,
        rs: &mut ReplicaSet,
        new_scale: i32,
    ) -> Result<bool, ApiError> {
        if rs_replicas(rs) == new_scale {
            return Ok(false);
        }
        let op = if rs_replicas(rs) > new_scale {
            "down"
        } else {
            "up"
        };
        if let Some(updated) = self.scale_rs(d, rs, new_scale, op).await? {
            *rs = updated;
        }
        Ok(true)
    }

    /// Upstream's sync: scaling (including proportional scaling mid-rollout) and status,
    /// for paused Deployments and scaling events.
    async fn sync_scale(
        &self,
        d: Deployment,
        rs_list: &[ReplicaSet],
        paused: bool,
    ) -> Result<(), ApiError> {
        let mut st = self.get_all(d, rs_list, false).await?;
        self.scale(&mut st).await?;
        if paused {
            self.cleanup(&st).await?;
        }
        self.sync_deployment_status(&mut st).await
    }

    /// Upstream's scale.
    async fn scale(&self, st: &mut State) -> Result<(), ApiError> {
        let d = st.d.clone();
        let want = replicas(&d);
        // One active (or only the latest) ReplicaSet takes the full size.
        st.old.sort_by(|a, b| by_creation(b, a));
        let active: Vec<usize> = (0..st.old.len())
            .filter(|i| rs_replicas(&st.old[*i]) > 0)
            .collect();
        let new_active = st.new_rs.as_ref().is_some_and(|rs| rs_replicas(rs) > 0);
        let n_active = active.len() + usize::from(new_active);
        if st.new_rs.is_some() || !st.old.is_empty() {
            let target: Option<&mut ReplicaSet> = match n_active {
                0 => match st.new_rs.as_mut() {
                    Some(n) => Some(n),
                    None => st.old.first_mut(),
                },
                1 if new_active => st.new_rs.as_mut(),
                1 => Some(&mut st.old[active[0]]),
                _ => None,
            };
            if let Some(rs) = target {
                if rs_replicas(rs) != want {
                    self.scale_and_record(&d, rs, want).await?;
                }
                return Ok(());
            }
        }
        if st.new_rs.as_ref().is_some_and(|rs| is_saturated(&d, rs)) {
            for rs in st.old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
                self.scale_and_record(&d, rs, 0).await?;
            }
            return Ok(());
        }
        if !is_rolling_update(&d) {
            return Ok(());
        }
        let mut all: Vec<ReplicaSet> = st
            .old
            .iter()
            .chain(st.new_rs.iter())
            .filter(|rs| rs_replicas(rs) > 0)
            .cloned()
            .collect();
        let current: i32 = all.iter().map(rs_replicas).sum();
        let allowed = if want > 0 { want + max_surge(&d) } else { 0 };
        let to_add = allowed - current;
        let op = match to_add.cmp(&0) {
            std::cmp::Ordering::Greater => {
                all.sort_by(by_size_newer);
                "up"
            }
            std::cmp::Ordering::Less => {
                all.sort_by(by_size_older);
                "down"
            }
            std::cmp::Ordering::Equal => "",
        };
        let mut added = 0;
        let mut sizes = Vec::with_capacity(all.len());
        for rs in &all {
            if to_add != 0 {
                let p = proportion(rs, &d, to_add, added);
                sizes.push(rs_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(rs_replicas(rs));
            }
        }
        for (i, rs) in all.iter().enumerate() {
            if i == 0 && to_add != 0 {
                sizes[0] = (sizes[0] + to_add - added).max(0);
            }
            if let Some(updated) = self.scale_rs(&d, rs, sizes[i], op).await? {
                replace_rs(st, updated);
            }
        }
        Ok(())
    }

    /// Upstream's rolloutRolling.
    async fn rollout_rolling(
        &self,
        d: Deployment,
        rs_list: &[ReplicaSet],
    ) -> anyhow::Result<Option<Duration>> {
        let mut st = self.get_all(d, rs_list, true).await?;
        if self.reconcile_new_rs(&mut st).await? {
            return Ok(self.sync_rollout_status(&mut st).await?);
        }
        if self.reconcile_old_rss(&mut st).await? {
            return Ok(self.sync_rollout_status(&mut st).await?);
        }
        if deployment_complete(&st.d, &st.d.status.clone().unwrap_or_default()) {
            self.cleanup(&st).await?;
        }
        Ok(self.sync_rollout_status(&mut st).await?)
    }

    /// Upstream's reconcileNewReplicaSet: scale the new ReplicaSet up within maxSurge.
    async fn reconcile_new_rs(&self, st: &mut State) -> Result<bool, ApiError> {
        let d = st.d.clone();
        let Some(new_rs) = st.new_rs.clone() else {
            return Ok(false);
        };
        let want = replicas(&d);
        let target = match rs_replicas(&new_rs).cmp(&want) {
            std::cmp::Ordering::Equal => return Ok(false),
            std::cmp::Ordering::Greater => want,
            std::cmp::Ordering::Less => new_rs_new_replicas(&d, &st.all(), &new_rs),
        };
        let mut rs = new_rs;
        let scaled = self.scale_and_record(&d, &mut rs, target).await?;
        st.new_rs = Some(rs);
        Ok(scaled)
    }

    /// Upstream's reconcileOldReplicaSets: scale old ReplicaSets down within maxUnavailable,
    /// unhealthy replicas first.
    async fn reconcile_old_rss(&self, st: &mut State) -> Result<bool, ApiError> {
        let d = st.d.clone();
        let old_count = sum(&st.old.iter().collect::<Vec<_>>(), rs_replicas);
        if old_count == 0 {
            return Ok(false);
        }
        let Some(new_rs) = st.new_rs.clone() else {
            return Ok(false);
        };
        let all_count = sum(&st.all(), rs_replicas);
        let min_available = replicas(&d) - max_unavailable(&d);
        let new_unavailable = rs_replicas(&new_rs) - rs_available(&new_rs);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // Unhealthy old replicas go first: they would otherwise block the rollout.
        st.old.sort_by(by_creation);
        let mut cleaned = 0;
        for rs in st.old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            if rs_replicas(rs) == 0 || rs_replicas(rs) == rs_available(rs) {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(rs_replicas(rs) - rs_available(rs));
            let target = rs_replicas(rs) - down;
            self.scale_and_record(&d, rs, target).await?;
            cleaned += down;
        }
        // Then available ones, as far as maxUnavailable allows.
        let available = sum(&st.all(), rs_available);
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in st.old.iter_mut() {
                if scaled >= total {
                    break;
                }
                if rs_replicas(rs) == 0 {
                    continue;
                }
                let down = rs_replicas(rs).min(total - scaled);
                let target = rs_replicas(rs) - down;
                self.scale_and_record(&d, rs, target).await?;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    /// Upstream's rolloutRecreate: all old pods go before the new ReplicaSet scales up.
    async fn rollout_recreate(
        &self,
        d: Deployment,
        rs_list: &[ReplicaSet],
    ) -> anyhow::Result<Option<Duration>> {
        let mut st = self.get_all(d, rs_list, false).await?;
        let mut scaled_down = false;
        let dd = st.d.clone();
        for rs in st.old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
            if self.scale_and_record(&dd, rs, 0).await? {
                scaled_down = true;
            }
        }
        if scaled_down || self.old_pods_running(&st) {
            return Ok(self.sync_rollout_status(&mut st).await?);
        }
        if st.new_rs.is_none() {
            st = self.get_all(st.d, rs_list, true).await?;
        }
        if let Some(mut rs) = st.new_rs.clone() {
            self.scale_and_record(&st.d, &mut rs, replicas(&st.d))
                .await?;
            st.new_rs = Some(rs);
        }
        if deployment_complete(&st.d, &st.d.status.clone().unwrap_or_default()) {
            self.cleanup(&st).await?;
        }
        Ok(self.sync_rollout_status(&mut st).await?)
    }

    /// Upstream's oldPodsRunning: old ReplicaSets still have pods that did not finish.
    fn old_pods_running(&self, st: &State) -> bool {
        if st.old.iter().map(rs_actual).sum::<i32>() > 0 {
            return true;
        }
        let ns = st.d.namespace().unwrap_or_default();
        let new_uid = st.new_rs.as_ref().and_then(|rs| rs.metadata.uid.clone());
        let old_uids: Vec<String> = st
            .old
            .iter()
            .filter_map(|rs| rs.metadata.uid.clone())
            .collect();
        self.pods.list(&ns).iter().any(|p| {
            get_controller_of(&p.metadata)
                .is_some_and(|r| old_uids.contains(&r.uid) && Some(&r.uid) != new_uid.as_ref())
                && !matches!(podutil::phase(p), "Succeeded" | "Failed")
        })
    }

    /// Upstream's cleanupDeployment: delete the oldest empty ReplicaSets beyond
    /// revisionHistoryLimit.
    async fn cleanup(&self, st: &State) -> Result<(), ApiError> {
        let Some(limit) =
            st.d.spec
                .as_ref()
                .and_then(|s| s.revision_history_limit)
                .filter(|l| *l != i32::MAX)
        else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = st
            .old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - limit as i64;
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| by_revision(a, b));
        for rs in cleanable.into_iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_actual(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let ns = rs.namespace().unwrap_or_default();
            match self
                .control
                .delete_obj::<ReplicaSet>(&ns, &rs.name_any(), rs.metadata.uid.as_deref())
                .await
            {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Upstream's calculateStatus.
    fn calculate_status(&self, st: &State) -> DeploymentStatus {
        let all = st.all();
        let d = &st.d;
        let available = sum(&all, rs_available);
        let total = sum(&all, rs_replicas);
        let mut status = d.status.clone().unwrap_or_default();
        status.observed_generation = d.metadata.generation;
        status.replicas = nz(sum(&all, rs_actual));
        status.updated_replicas = nz(st.new_rs.as_ref().map(rs_actual).unwrap_or(0));
        status.ready_replicas = nz(sum(&all, |rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        }));
        status.available_replicas = nz(available);
        status.unavailable_replicas = nz((total - available).max(0));
        let cond = if available >= replicas(d) - max_unavailable(d) {
            new_condition(
                "Available",
                "True",
                reason::MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
            )
        } else {
            new_condition(
                "Available",
                "False",
                reason::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
            )
        };
        set_condition(&mut status, cond);
        status
    }

    /// Upstream's syncDeploymentStatus.
    async fn sync_deployment_status(&self, st: &mut State) -> Result<(), ApiError> {
        let status = self.calculate_status(st);
        if st.d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        st.d.status = Some(status);
        st.d = self.control.update_status_obj(&st.d).await?;
        Ok(())
    }

    /// Upstream's syncRolloutStatus: status plus the Progressing condition; returns when to
    /// look again for a stuck rollout (upstream's requeueStuckDeployment).
    async fn sync_rollout_status(&self, st: &mut State) -> Result<Option<Duration>, ApiError> {
        let mut status = self.calculate_status(st);
        let d = &st.d;
        let deadline = progress_deadline(d);
        if deadline.is_none() {
            remove_condition(&mut status, "Progressing");
        }
        let current = d
            .status
            .as_ref()
            .and_then(|s| get_condition(s, "Progressing"))
            .cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
        let rs_name = st.new_rs.as_ref().map(|rs| rs.name_any());
        let what = |verb: &str| match &rs_name {
            Some(n) => format!("ReplicaSet {n:?} {verb}."),
            None => format!("Deployment {:?} {verb}.", d.name_any()),
        };
        if deadline.is_some() && !complete_before {
            if deployment_complete(d, &status) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        reason::NEW_RS_AVAILABLE,
                        what("has successfully progressed"),
                    ),
                );
            } else if deployment_progressing(d, &status) {
                let mut c = new_condition(
                    "Progressing",
                    "True",
                    reason::RS_UPDATED,
                    what("is progressing"),
                );
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, c);
            } else if deployment_timed_out(d, &status, Timestamp::now()) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "False",
                        reason::TIMED_OUT,
                        what("has timed out progressing"),
                    ),
                );
            }
        }
        match replica_failure(st) {
            Some(c) => set_condition(&mut status, c),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if st.d.status.as_ref() == Some(&status) {
            return Ok(self.requeue_stuck(&st.d, &status));
        }
        st.d.status = Some(status);
        st.d = self.control.update_status_obj(&st.d).await?;
        Ok(None)
    }

    fn requeue_stuck(&self, d: &Deployment, new: &DeploymentStatus) -> Option<Duration> {
        let deadline = progress_deadline(d)?;
        let cur = d
            .status
            .as_ref()
            .and_then(|s| get_condition(s, "Progressing"))?;
        if deployment_complete(d, new) || cur.reason.as_deref() == Some(reason::TIMED_OUT) {
            return None;
        }
        let at = cur.last_update_time.as_ref()?.0 + SignedDuration::from_secs(deadline as i64);
        let after = at.duration_since(Timestamp::now());
        Some(if after < SignedDuration::from_secs(1) {
            Duration::from_secs(1)
        } else {
            Duration::from_secs_f64(after.as_secs_f64())
        })
    }
}

/// Replaces the ReplicaSet with `rs`'s name in `st`.
fn replace_rs(st: &mut State, rs: ReplicaSet) {
    if st
        .new_rs
        .as_ref()
        .is_some_and(|n| n.metadata.name == rs.metadata.name)
    {
        st.new_rs = Some(rs);
    } else if let Some(o) = st
        .old
        .iter_mut()
        .find(|o| o.metadata.name == rs.metadata.name)
    {
        *o = rs;
    }
}

/// A ReplicaFailure of the new ReplicaSet (or else of any) as a Deployment condition.
fn replica_failure(st: &State) -> Option<k8s_openapi::api::apps::v1::DeploymentCondition> {
    let to_dc = |rs: &ReplicaSet| {
        let c = rs
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "ReplicaFailure")?
            .clone();
        Some(k8s_openapi::api::apps::v1::DeploymentCondition {
            type_: c.type_,
            status: c.status,
            reason: c.reason,
            message: c.message,
            last_update_time: c.last_transition_time.clone(),
            last_transition_time: c.last_transition_time,
        })
    };
    st.new_rs
        .as_ref()
        .and_then(to_dc)
        .or_else(|| st.old.iter().find_map(to_dc))
}

/// Upstream's FindNewReplicaSet: the oldest ReplicaSet whose template equals the
/// Deployment's, ignoring the hash label.
pub fn find_new_rs<'a>(d: &Deployment, rs_list: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let template = &d.spec.as_ref()?.template;
    let mut sorted: Vec<&ReplicaSet> = rs_list.iter().collect();
    sorted.sort_by(|a, b| by_creation(a, b));
    sorted.into_iter().find(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| equal_ignore_hash(t, template))
    })
}

/// Runs the Deployment controller until dropped.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let c = DeploymentController::new(
        ctx.informers.cache::<Deployment>(),
        ctx.informers.cache::<ReplicaSet>(),
        ctx.informers.cache::<Pod>(),
        ctx.control.clone(),
    );
    c.register_handlers();
    ctx.informers.wait_for_sync().await;
    for d in c.deployments.list_all() {
        c.queue.add(key_of(d.as_ref()));
    }
    let queue = c.queue.clone();
    run_workers("deployment", queue, ctx.config.workers, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests;
