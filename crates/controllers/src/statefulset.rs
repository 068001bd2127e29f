//! The StatefulSet controller (upstream's pkg/controller/statefulset): pods with stable
//! names `<set>-<ordinal>` and PersistentVolumeClaims from volumeClaimTemplates, created in
//! order (OrderedReady) or all at once (Parallel), removed from the highest ordinal down;
//! revisions as ControllerRevisions and a RollingUpdate with a partition and
//! maxUnavailable; `ordinals.start`; `minReadySeconds`; and the
//! `persistentVolumeClaimRetentionPolicy`, enforced through claim ownerReferences that the
//! garbage collector acts on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;

use crate::deployment::util::{compute_hash, nz};
use crate::job::{Clock, SystemClock};
use crate::runtime::podutil;
use crate::runtime::{
    claim, controller_ref, delete_pod, get_controller_of, key_of, run_workers, ApiError, Cache,
    Change, Context, Control, WorkQueue,
};

/// The pod label naming the revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The pod label with the pod's own name (for per-pod Services).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The pod label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The StatefulSet controller over shared caches.
pub struct StatefulSetController {
    /// StatefulSets.
    pub sets: Arc<Cache<StatefulSet>>,
    /// Pods.
    pub pods: Arc<Cache<Pod>>,
    /// Claims.
    pub claims: Arc<Cache<PersistentVolumeClaim>>,
    /// Revisions.
    pub revisions: Arc<Cache<ControllerRevision>>,
    /// Where writes go.
    pub control: Arc<dyn Control>,
    /// Keys to sync.
    pub queue: WorkQueue,
    /// The time source (pod availability).
    pub clock: Arc<dyn Clock>,
}

/// The ordinal of `pod` if it is named `<set>-<n>`.
pub fn ordinal_of(set: &str, pod: &Pod) -> Option<i32> {
    pod.metadata
        .name
        .as_deref()?
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
}

fn parallel(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
        == Some("Parallel")
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

fn running_and_ready(pod: &Pod) -> bool {
    podutil::phase(pod) == "Running" && podutil::is_pod_ready(pod)
}

fn healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && pod.metadata.deletion_timestamp.is_none()
}

fn min_ready_seconds(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// Running, ready, and ready for at least `minReadySeconds`.
fn available(pod: &Pod, set: &StatefulSet, now: Timestamp) -> bool {
    running_and_ready(pod) && podutil::is_pod_available(pod, min_ready_seconds(set), now)
}

/// Upstream's getStatefulSetMaxUnavailable: `rollingUpdate.maxUnavailable` (default 1)
/// scaled down against the replicas, at least 1.
pub fn max_unavailable(set: &StatefulSet) -> i32 {
    let v = set
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let n = match v {
        IntOrString::Int(i) => i,
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map_or(1, |p| (p * replicas(set) as i64 / 100) as i32),
    };
    n.max(1)
}

/// `(whenDeleted, whenScaled)`, each `true` for Delete (default Retain).
fn retention(set: &StatefulSet) -> (bool, bool) {
    let p = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let del = |v: Option<&String>| v.is_some_and(|v| v == "Delete");
    (
        del(p.and_then(|p| p.when_deleted.as_ref())),
        del(p.and_then(|p| p.when_scaled.as_ref())),
    )
}

fn refers_to(r: &OwnerReference, api_version: &str, kind: &str, name: &str) -> bool {
    r.api_version == api_version && r.kind == kind && r.name == name
}

/// The claim's ownerReferences as the retention policy wants them for `pod` (upstream's
/// updateClaimOwnerRefForSetAndPod), or `None` when they already are (upstream's
/// isClaimOwnerUpToDate). References of an earlier set or pod of the same name, or another
/// controller, mean the claim is left alone.
fn claim_owner_refs(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: &Pod,
    scaled_down: bool,
) -> Option<Vec<OwnerReference>> {
    let refs = claim.metadata.owner_references.clone().unwrap_or_default();
    let set_uid = set.metadata.uid.clone().unwrap_or_default();
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    let set_name = set.name_any();
    let pod_name = pod.name_any();
    let is_set = |r: &OwnerReference| refers_to(r, "apps/v1", "StatefulSet", &set_name);
    let is_pod = |r: &OwnerReference| refers_to(r, "v1", "Pod", &pod_name);
    // Stale: a ref to the same name with another UID (a previous incarnation).
    if refs
        .iter()
        .any(|r| (is_set(r) && r.uid != set_uid) || (is_pod(r) && r.uid != pod_uid))
    {
        return None;
    }
    let (when_deleted, when_scaled) = retention(set);
    let other_controller = (when_deleted || when_scaled)
        && refs
            .iter()
            .any(|r| !is_set(r) && !is_pod(r) && r.controller == Some(true));
    let has = |uid: &str| refs.iter().any(|r| r.uid == uid);
    let mut kept: Vec<OwnerReference> = refs
        .iter()
        .filter(|r| !is_set(r) && !is_pod(r))
        .cloned()
        .collect();
    if other_controller {
        if !has(&set_uid) && !has(&pod_uid) {
            return None;
        }
        return Some(kept);
    }
    let want_set = when_deleted && !(when_scaled && scaled_down);
    let want_pod = when_scaled && scaled_down && !pod_uid.is_empty();
    let non_controller = refs
        .iter()
        .any(|r| (r.uid == set_uid || r.uid == pod_uid) && r.controller != Some(true));
    if !non_controller && has(&set_uid) == want_set && has(&pod_uid) == want_pod {
        return None;
    }
    if want_set {
        kept.push(controller_ref(set));
    }
    if want_pod {
        kept.push(controller_ref(pod));
    }
    Some(kept)
}

/// The revision name of the set's current template (`<set>-<hash>`, as upstream names
/// ControllerRevisions).
pub fn revision_name(set: &StatefulSet) -> String {
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let collisions = set.status.as_ref().and_then(|s| s.collision_count);
    format!("{}-{}", set.name_any(), compute_hash(&template, collisions))
}

impl StatefulSetController {
    /// A controller over the given caches, with handlers not yet registered.
    pub fn new(
        sets: Arc<Cache<StatefulSet>>,
        pods: Arc<Cache<Pod>>,
        claims: Arc<Cache<PersistentVolumeClaim>>,
        revisions: Arc<Cache<ControllerRevision>>,
        control: Arc<dyn Control>,
    ) -> Arc<Self> {
        Self::with_clock(
            sets,
            pods,
            claims,
            revisions,
            control,
            Arc::new(SystemClock),
        )
    }

    /// [`StatefulSetController::new`] with a given time source (tests).
    pub fn with_clock(
        sets: Arc<Cache<StatefulSet>>,
        pods: Arc<Cache<Pod>>,
        claims: Arc<Cache<PersistentVolumeClaim>>,
        revisions: Arc<Cache<ControllerRevision>>,
        control: Arc<dyn Control>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(StatefulSetController {
            sets,
            pods,
            claims,
            revisions,
            control,
            queue: WorkQueue::default(),
            clock,
        })
    }

    /// Registers the change handlers that feed the queue.
    pub fn register_handlers(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.sets.add_handler(move |c: &Change<StatefulSet>| {
            if let Some(me) = me.upgrade() {
                me.queue.add(key_of(c.object().as_ref()));
            }
        });
        let me = Arc::downgrade(self);
        self.pods.add_handler(move |c: &Change<Pod>| {
            let Some(me) = me.upgrade() else { return };
            let pod = c.object();
            let ns = pod.namespace().unwrap_or_default();
            if let Some(r) = get_controller_of(&pod.metadata).filter(|r| r.kind == "StatefulSet") {
                if let Some(set) = me
                    .sets
                    .get(&ns, &r.name)
                    .filter(|s| s.metadata.uid.as_deref() == Some(&r.uid))
                {
                    me.queue.add(key_of(set.as_ref()));
                }
            }
        });
    }

    /// Reconciles the StatefulSet with key `key`.
    pub async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(set) = self.sets.get_by_key(key) else {
            return Ok(None);
        };
        let set = (*set).clone();
        let ns = set.namespace().unwrap_or_default();
        let selector = podutil::selector(set.spec.as_ref().map(|s| &s.selector))
            .map_err(anyhow::Error::msg)?;
        let pods = claim(
            self.control.as_ref(),
            &set,
            &selector,
            self.pods.list(&ns),
            |_| true,
        )
        .await?;
        let update_revision = self.ensure_revision(&set).await?;
        let current_revision = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .unwrap_or_else(|| update_revision.clone());
        let mut by_ordinal: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        for p in pods {
            if let Some(o) = ordinal_of(&set.name_any(), &p) {
                by_ordinal.insert(o, p);
            }
        }
        if set.metadata.deletion_timestamp.is_none() {
            self.update_pods(&set, &by_ordinal, &update_revision)
                .await?;
        }
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list(&ns)
            .into_iter()
            .filter(|p| {
                get_controller_of(&p.metadata)
                    .is_some_and(|r| Some(&r.uid) == set.metadata.uid.as_ref())
            })
            .collect();
        let st = self
            .write_status(&set, &pods, &current_revision, &update_revision)
            .await?;
        // Availability comes with time, not with an event.
        let mrs = min_ready_seconds(&set);
        let waiting = mrs > 0 && st.ready_replicas != st.available_replicas;
        Ok(waiting.then(|| Duration::from_secs(mrs as u64)))
    }

    /// Upstream's PodClaimIsStale for a pod about to be made at `ordinal`: with whenScaled
    /// Delete, a claim still owned by an earlier pod of that name is on its way out.
    fn claim_is_stale(&self, set: &StatefulSet, ordinal: i32) -> bool {
        if !retention(set).1 {
            return false;
        }
        let ns = set.namespace().unwrap_or_default();
        let pod_name = format!("{}-{ordinal}", set.name_any());
        set.spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|t| self.claims.get(&ns, &claim_name(set, t, ordinal)))
            .any(|c| {
                c.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| refers_to(r, "v1", "Pod", &pod_name))
            })
    }

    /// Brings the ownerReferences of `pod`'s claims in line with the retention policy.
    async fn fix_claim_owners(
        &self,
        set: &StatefulSet,
        pod: &Pod,
        ordinal: i32,
    ) -> Result<(), ApiError> {
        let ns = set.namespace().unwrap_or_default();
        let start = start_ordinal(set);
        let scaled_down = ordinal < start || ordinal >= start + replicas(set);
        for t in set
            .spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.clone())
            .unwrap_or_default()
        {
            let name = claim_name(set, &t, ordinal);
            let Some(claim) = self.claims.get(&ns, &name) else {
                continue;
            };
            let Some(refs) = claim_owner_refs(&claim, set, pod, scaled_down) else {
                continue;
            };
            let mut c = (*claim).clone();
            c.metadata.owner_references = Some(refs);
            match self.control.update_obj(&c).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Creates the ControllerRevision of the current template if missing; returns its name.
    async fn ensure_revision(&self, set: &StatefulSet) -> Result<String, ApiError> {
        let name = revision_name(set);
        let ns = set.namespace().unwrap_or_default();
        if self.revisions.get(&ns, &name).is_some() {
            return Ok(name);
        }
        let template = set
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut t = serde_json::to_value(&template).unwrap_or_default();
        t["$patch"] = json!("replace");
        let max = self
            .revisions
            .list(&ns)
            .iter()
            .filter(|r| {
                get_controller_of(&r.metadata)
                    .is_some_and(|o| Some(&o.uid) == set.metadata.uid.as_ref())
            })
            .map(|r| r.revision)
            .max()
            .unwrap_or(0);
        let mut labels = set
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(
            REVISION_LABEL.into(),
            name.rsplit('-').next().unwrap_or_default().into(),
        );
        let rev = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns),
                labels: Some(labels),
                owner_references: Some(vec![controller_ref(set)]),
                ..Default::default()
            },
            data: Some(RawExtension(json!({"spec": {"template": t}}))),
            revision: max + 1,
        };
        match self.control.create_obj(&rev).await {
            Ok(_) => Ok(name),
            Err(e) if e.is_already_exists() => Ok(name),
            Err(e) => Err(e),
        }
    }

    /// A pod of `ordinal` at `revision`, with its identity and claims.
    fn new_pod(&self, set: &StatefulSet, ordinal: i32, revision: &str) -> Pod {
        let spec = set.spec.clone().unwrap_or_default();
        let name = format!("{}-{ordinal}", set.name_any());
        let tm = spec.template.metadata.clone().unwrap_or_default();
        let mut labels = tm.labels.unwrap_or_default();
        labels.insert(POD_NAME_LABEL.into(), name.clone());
        labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
        labels.insert(REVISION_LABEL.into(), revision.to_string());
        let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
        pod_spec.hostname = Some(name.clone());
        pod_spec.subdomain = spec.service_name.clone().filter(|s| !s.is_empty());
        for t in spec.volume_claim_templates.iter().flatten() {
            let tname = t.metadata.name.clone().unwrap_or_default();
            let claim = claim_name(set, t, ordinal);
            let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
            volumes.retain(|v| v.name != tname);
            volumes.push(k8s_openapi::api::core::v1::Volume {
                name: tname,
                persistent_volume_claim: Some(
                    k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                        claim_name: claim,
                        read_only: None,
                    },
                ),
                ..Default::default()
            });
        }
        Pod {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: set.namespace(),
                labels: Some(labels),
                annotations: tm.annotations,
                owner_references: Some(vec![controller_ref(set)]),
                ..Default::default()
            },
            spec: Some(pod_spec),
            status: None,
        }
    }

    /// Creates the claims of `ordinal` that do not exist yet.
    async fn create_claims(&self, set: &StatefulSet, ordinal: i32) -> Result<(), ApiError> {
        let ns = set.namespace().unwrap_or_default();
        let sel_labels = set
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
            .unwrap_or_default();
        for t in set
            .spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.clone())
            .unwrap_or_default()
        {
            let name = claim_name(set, &t, ordinal);
            if self.claims.get(&ns, &name).is_some() {
                continue;
            }
            let mut pvc = t.clone();
            pvc.metadata.name = Some(name);
            pvc.metadata.namespace = Some(ns.clone());
            let labels = pvc.metadata.labels.get_or_insert_with(Default::default);
            labels.extend(sel_labels.clone());
            pvc.status = None;
            // whenDeleted: Delete hands the claim to the garbage collector with the set.
            if retention(set).0 {
                pvc.metadata.owner_references = Some(vec![controller_ref(set)]);
            }
            match self.control.create_obj(&pvc).await {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes `pod` of `set`, recording upstream's event.
    async fn delete_stateful_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<(), ApiError> {
        delete_pod(self.control.as_ref(), set, pod)
            .await
            .or_else(ignore_not_found)?;
        let msg = format!(
            "delete Pod {} in StatefulSet {} successful",
            pod.name_any(),
            set.name_any()
        );
        self.control
            .event_for(set, "Normal", "SuccessfulDelete", msg)
            .await;
        Ok(())
    }

    /// Upstream's updateStatefulSet for one pass: create missing replicas, replace failed
    /// ones, delete condemned ones from the top, then roll out the update revision.
    async fn update_pods(
        &self,
        set: &StatefulSet,
        pods: &BTreeMap<i32, Arc<Pod>>,
        update_rev: &str,
    ) -> Result<(), ApiError> {
        let now = self.clock.now();
        let start = start_ordinal(set);
        let end = start + replicas(set);
        let ordered = !parallel(set);
        let partition = set
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let current_rev = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .unwrap_or_else(|| update_rev.to_string());
        let rolling = set
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        // Replicas, lowest ordinal first.
        for ordinal in start..end {
            match pods.get(&ordinal) {
                None => {
                    if self.claim_is_stale(set, ordinal) {
                        // The claim still belongs to the pod scaled away; wait for the
                        // garbage collector rather than bind the new pod to it.
                        if ordered {
                            return Ok(());
                        }
                        continue;
                    }
                    let rev = if rolling && ordinal - start < partition {
                        &current_rev
                    } else {
                        update_rev
                    };
                    self.create_claims(set, ordinal).await?;
                    let pod = self.new_pod(set, ordinal, rev);
                    match self.control.create_obj(&pod).await {
                        Ok(p) => {
                            let msg = format!(
                                "create Pod {} in StatefulSet {} successful",
                                p.name_any(),
                                set.name_any()
                            );
                            self.control
                                .event_for(set, "Normal", "SuccessfulCreate", msg)
                                .await;
                        }
                        Err(e) if e.is_already_exists() => {}
                        Err(e) => return Err(e),
                    }
                    if ordered {
                        return Ok(());
                    }
                }
                Some(p)
                    if matches!(podutil::phase(p), "Failed" | "Succeeded")
                        && p.metadata.deletion_timestamp.is_none() =>
                {
                    // A terminated pod is replaced under the same name.
                    self.delete_stateful_pod(set, p).await?;
                    if ordered {
                        return Ok(());
                    }
                }
                Some(p) => {
                    if p.metadata.deletion_timestamp.is_none() {
                        // The policy may have changed since the claims were made.
                        self.fix_claim_owners(set, p, ordinal).await?;
                    }
                    // OrderedReady: every predecessor is Running, Ready and available.
                    if ordered && !(healthy(p) && available(p, set, now)) {
                        return Ok(());
                    }
                }
            }
        }
        // Condemned pods, highest ordinal first; their claims first take the owners the
        // retention policy wants for scaled-down pods.
        let condemned: Vec<(i32, &Arc<Pod>)> = pods
            .iter()
            .filter(|(o, _)| **o < start || **o >= end)
            .map(|(o, p)| (*o, p))
            .rev()
            .collect();
        for (o, p) in &condemned {
            self.fix_claim_owners(set, p, *o).await?;
        }
        for (_, p) in &condemned {
            if p.metadata.deletion_timestamp.is_some() {
                if ordered {
                    return Ok(());
                }
                continue;
            }
            if ordered
                && pods
                    .values()
                    .any(|q| !healthy(q) && q.metadata.deletion_timestamp.is_none())
            {
                return Ok(());
            }
            self.delete_stateful_pod(set, p).await?;
            if ordered {
                return Ok(());
            }
        }
        if !condemned.is_empty() || !rolling {
            return Ok(());
        }
        // Rolling update (upstream's MaxUnavailableStatefulSet): with fewer than
        // maxUnavailable replicas unavailable, replace old pods from the top down to the
        // partition until maxUnavailable are.
        let max = max_unavailable(set);
        let unavailable = (start..end)
            .filter(|o| {
                !pods
                    .get(o)
                    .is_some_and(|p| healthy(p) && available(p, set, now))
            })
            .count() as i32;
        let mut budget = max - unavailable;
        for ordinal in (start + partition.max(0)..end).rev() {
            if budget <= 0 {
                break;
            }
            let Some(p) = pods.get(&ordinal) else {
                continue;
            };
            if revision_of(p) != Some(update_rev) && p.metadata.deletion_timestamp.is_none() {
                self.delete_stateful_pod(set, p).await?;
                budget -= 1;
            }
        }
        Ok(())
    }

    /// Upstream's computeReplicaStatus and completeRollingUpdate; returns the status.
    async fn write_status(
        &self,
        set: &StatefulSet,
        pods: &[Arc<Pod>],
        current_rev: &str,
        update_rev: &str,
    ) -> Result<StatefulSetStatus, ApiError> {
        let mut st = set.status.clone().unwrap_or_default();
        let now = self.clock.now();
        let created = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_ref()).is_some();
        let count = |f: &dyn Fn(&Pod) -> bool| pods.iter().filter(|p| f(p)).count() as i32;
        let counted_rev = |p: &Pod, rev: &str| {
            created(p) && p.metadata.deletion_timestamp.is_none() && revision_of(p) == Some(rev)
        };
        let replicas_n = count(&|p| created(p));
        let ready = count(&|p| running_and_ready(p));
        let updated = count(&|p| counted_rev(p, update_rev));
        let rolling = set
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        let mut current_rev = current_rev.to_string();
        let mut current = count(&|p| counted_rev(p, &current_rev));
        if rolling && updated == replicas_n && ready == replicas_n {
            current_rev = update_rev.to_string();
            current = updated;
        }
        let new = StatefulSetStatus {
            observed_generation: set.metadata.generation,
            replicas: replicas_n,
            ready_replicas: nz(ready),
            available_replicas: nz(count(&|p| available(p, set, now))),
            current_replicas: nz(current),
            updated_replicas: nz(updated),
            current_revision: Some(current_rev),
            update_revision: Some(update_rev.to_string()),
            collision_count: st.collision_count,
            conditions: st.conditions.take(),
        };
        if set.status.as_ref() == Some(&new) {
            return Ok(new);
        }
        let mut obj = set.clone();
        obj.status = Some(new.clone());
        self.control.update_status_obj(&obj).await?;
        Ok(new)
    }
}

/// The claim of template `t` for `ordinal`: `<template>-<set>-<ordinal>`.
fn claim_name(set: &StatefulSet, t: &PersistentVolumeClaim, ordinal: i32) -> String {
    format!(
        "{}-{}-{ordinal}",
        t.metadata.name.as_deref().unwrap_or_default(),
        set.name_any()
    )
}

fn ignore_not_found(e: ApiError) -> Result<(), ApiError> {
    if e.is_not_found() {
        Ok(())
    } else {
        Err(e)
    }
}

/// Runs the StatefulSet controller until dropped.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let c = StatefulSetController::new(
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
    run_workers("statefulset", queue, ctx.config.workers, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{RecordingControl, SharedInformers, Verb};
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    fn set(replicas: i32, policy: &str) -> StatefulSet {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let mut claim = PersistentVolumeClaim::default();
        claim.metadata.name = Some("data".into());
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("ss".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                pod_management_policy: Some(policy.into()),
                service_name: Some("web".into()),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec::default()),
                },
                volume_claim_templates: Some(vec![claim]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn fixture(s: StatefulSet) -> (Arc<StatefulSetController>, Arc<RecordingControl>) {
        let inf = SharedInformers::new(None);
        let fake = Arc::new(RecordingControl::new());
        let c = StatefulSetController::new(
            inf.cache(),
            inf.cache(),
            inf.cache(),
            inf.cache(),
            fake.clone(),
        );
        c.sets.apply(s);
        (c, fake)
    }

    fn healthy_pod(c: &StatefulSetController, s: &StatefulSet, ordinal: i32) -> Pod {
        let mut p = c.new_pod(s, ordinal, &revision_name(s));
        p.metadata.uid = Some(format!("p{ordinal}"));
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    fn created_pods(fake: &RecordingControl) -> Vec<String> {
        fake.of(Verb::Create, "Pod")
            .into_iter()
            .map(|a| a.name)
            .collect()
    }

    #[tokio::test]
    async fn ordered_ready_creates_one_at_a_time_with_claims() {
        let s = set(3, "OrderedReady");
        let (c, fake) = fixture(s.clone());
        c.sync("default/web").await.unwrap();
        assert_eq!(created_pods(&fake), vec!["web-0"]);
        let pvc = &fake.of(Verb::Create, "PersistentVolumeClaim")[0];
        assert_eq!(pvc.name, "data-web-0");
        let pod: Pod =
            serde_json::from_value(fake.of(Verb::Create, "Pod")[0].object.clone().unwrap())
                .unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(
            (spec.hostname.as_deref(), spec.subdomain.as_deref()),
            (Some("web-0"), Some("web"))
        );
        assert_eq!(
            spec.volumes.unwrap()[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "data-web-0"
        );
        assert_eq!(fake.count(Verb::Create, "ControllerRevision"), 1);
        // web-0 exists but is not ready: nothing more.
        let mut p0 = c.new_pod(&s, 0, &revision_name(&s));
        p0.metadata.uid = Some("p0".into());
        c.pods.apply(p0);
        fake.clear();
        c.sync("default/web").await.unwrap();
        assert!(created_pods(&fake).is_empty());
        // Ready: web-1 follows.
        c.pods.apply(healthy_pod(&c, &s, 0));
        c.sync("default/web").await.unwrap();
        assert_eq!(created_pods(&fake), vec!["web-1"]);
    }

    #[tokio::test]
    async fn parallel_creates_all_and_scale_down_goes_from_the_top() {
        let (c, fake) = fixture(set(3, "Parallel"));
        c.sync("default/web").await.unwrap();
        assert_eq!(created_pods(&fake), vec!["web-0", "web-1", "web-2"]);

        let s = set(1, "OrderedReady");
        let (c, fake) = fixture(s.clone());
        for o in 0..3 {
            c.pods.apply(healthy_pod(&c, &s, o));
        }
        c.sync("default/web").await.unwrap();
        let deleted: Vec<String> = fake
            .of(Verb::Delete, "Pod")
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(deleted, vec!["web-2"]);
    }

    #[tokio::test]
    async fn rolling_update_replaces_from_the_top_down_to_the_partition() {
        let old = set(3, "OrderedReady");
        let (c, _) = fixture(old.clone());
        let pods: Vec<Pod> = (0..3).map(|o| healthy_pod(&c, &old, o)).collect();
        let mut new = old.clone();
        new.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .hostname = Some("changed".into());
        new.spec.as_mut().unwrap().update_strategy =
            Some(k8s_openapi::api::apps::v1::StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(
                    k8s_openapi::api::apps::v1::RollingUpdateStatefulSetStrategy {
                        partition: Some(2),
                        max_unavailable: None,
                    },
                ),
            });
        new.status = Some(StatefulSetStatus {
            current_revision: Some(revision_name(&old)),
            replicas: 3,
            ..Default::default()
        });
        let (c, fake) = fixture(new.clone());
        for p in pods {
            c.pods.apply(p);
        }
        c.sync("default/web").await.unwrap();
        let deleted: Vec<String> = fake
            .of(Verb::Delete, "Pod")
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(deleted, vec!["web-2"]);
        // Once web-2 runs the new revision, the partition (2) stops the rollout.
        let mut p2 = healthy_pod(&c, &new, 2);
        p2.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(REVISION_LABEL.into(), revision_name(&new));
        c.pods.apply(p2);
        fake.clear();
        c.sync("default/web").await.unwrap();
        assert_eq!(fake.count(Verb::Delete, "Pod"), 0);
        let st: StatefulSetStatus = serde_json::from_value(
            fake.of(Verb::UpdateStatus, "StatefulSet")[0]
                .object
                .clone()
                .unwrap()["status"]
                .clone(),
        )
        .unwrap();
        assert_eq!(
            (st.updated_replicas, st.current_replicas, st.replicas),
            (Some(1), Some(2), 3)
        );
        assert_eq!(st.update_revision, Some(revision_name(&new)));
    }

    fn claim(s: &StatefulSet, ordinal: i32) -> PersistentVolumeClaim {
        let mut c = PersistentVolumeClaim::default();
        c.metadata.name = Some(format!("data-{}-{ordinal}", s.name_any()));
        c.metadata.namespace = Some("default".into());
        c.metadata.uid = Some(format!("pvc{ordinal}"));
        c.metadata.resource_version = Some("1".into());
        c
    }

    fn with_retention(mut s: StatefulSet, when_deleted: &str, when_scaled: &str) -> StatefulSet {
        s.spec
            .as_mut()
            .unwrap()
            .persistent_volume_claim_retention_policy = Some(
            k8s_openapi::api::apps::v1::StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(when_deleted.into()),
                when_scaled: Some(when_scaled.into()),
            },
        );
        s
    }

    /// The owner UIDs of each updated claim, by claim name.
    fn claim_updates(fake: &RecordingControl) -> BTreeMap<String, Vec<(String, String)>> {
        fake.of(Verb::Update, "PersistentVolumeClaim")
            .into_iter()
            .map(|a| {
                let c: PersistentVolumeClaim = serde_json::from_value(a.object.unwrap()).unwrap();
                let refs = c
                    .metadata
                    .owner_references
                    .unwrap_or_default()
                    .into_iter()
                    .inspect(|r| assert_eq!(r.controller, Some(true)))
                    .map(|r| (r.kind, r.uid))
                    .collect();
                (a.name, refs)
            })
            .collect()
    }

    #[tokio::test]
    async fn retention_when_deleted_delete_owns_new_claims_by_the_set() {
        let s = with_retention(set(1, "OrderedReady"), "Delete", "Retain");
        let (c, fake) = fixture(s);
        c.sync("default/web").await.unwrap();
        let pvc: PersistentVolumeClaim = serde_json::from_value(
            fake.of(Verb::Create, "PersistentVolumeClaim")[0]
                .object
                .clone()
                .unwrap(),
        )
        .unwrap();
        let refs = pvc.metadata.owner_references.unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(
            (refs[0].kind.as_str(), refs[0].uid.as_str()),
            ("StatefulSet", "ss")
        );
        assert_eq!(refs[0].controller, Some(true));

        // Retain/Retain: no owner at all.
        let (c, fake) = fixture(set(1, "OrderedReady"));
        c.sync("default/web").await.unwrap();
        let pvc = fake.of(Verb::Create, "PersistentVolumeClaim")[0]
            .object
            .clone()
            .unwrap();
        assert!(pvc["metadata"]["ownerReferences"].is_null());
        drop(c);
    }

    #[tokio::test]
    async fn retention_when_scaled_delete_hands_claims_to_condemned_pods() {
        let s = with_retention(set(1, "OrderedReady"), "Delete", "Delete");
        let (c, fake) = fixture(s.clone());
        for o in 0..3 {
            c.pods.apply(healthy_pod(&c, &s, o));
            c.claims.apply(claim(&s, o));
        }
        c.sync("default/web").await.unwrap();
        let updates = claim_updates(&fake);
        // In range: owned by the set (whenDeleted); scaled down: by its pod only.
        assert_eq!(
            updates.get("data-web-0"),
            Some(&vec![("StatefulSet".to_string(), "ss".to_string())])
        );
        assert_eq!(
            updates.get("data-web-1"),
            Some(&vec![("Pod".to_string(), "p1".to_string())])
        );
        assert_eq!(
            updates.get("data-web-2"),
            Some(&vec![("Pod".to_string(), "p2".to_string())])
        );
        let deleted: Vec<String> = fake
            .of(Verb::Delete, "Pod")
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(deleted, vec!["web-2"]);
        // Up to date once the watch shows the writes: no further writes to the claims.
        for a in fake.of(Verb::Update, "PersistentVolumeClaim") {
            c.claims
                .apply(serde_json::from_value(a.object.unwrap()).unwrap());
        }
        fake.clear();
        c.sync("default/web").await.unwrap();
        assert_eq!(fake.count(Verb::Update, "PersistentVolumeClaim"), 0);

        // Retain on scale-down with Delete on set deletion: the set ref stays, no pod ref.
        let s = with_retention(set(1, "OrderedReady"), "Delete", "Retain");
        let (c, fake) = fixture(s.clone());
        for o in 0..2 {
            c.pods.apply(healthy_pod(&c, &s, o));
            let mut cl = claim(&s, o);
            cl.metadata.owner_references = Some(vec![controller_ref(&s)]);
            c.claims.apply(cl);
        }
        c.sync("default/web").await.unwrap();
        assert_eq!(fake.count(Verb::Update, "PersistentVolumeClaim"), 0);
        assert_eq!(fake.count(Verb::Delete, "Pod"), 1);

        // A claim controlled by something else is left alone.
        let s = with_retention(set(1, "OrderedReady"), "Retain", "Delete");
        let (c, fake) = fixture(s.clone());
        c.pods.apply(healthy_pod(&c, &s, 0));
        c.pods.apply(healthy_pod(&c, &s, 1));
        let mut cl = claim(&s, 1);
        cl.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "other".into(),
            uid: "other".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        c.claims.apply(cl);
        c.sync("default/web").await.unwrap();
        assert_eq!(fake.count(Verb::Update, "PersistentVolumeClaim"), 0);
    }

    #[tokio::test]
    async fn new_pod_waits_for_a_claim_still_owned_by_its_predecessor() {
        let s = with_retention(set(2, "OrderedReady"), "Retain", "Delete");
        let (c, fake) = fixture(s.clone());
        c.pods.apply(healthy_pod(&c, &s, 0));
        let old = healthy_pod(&c, &s, 1);
        let mut cl = claim(&s, 1);
        cl.metadata.owner_references = Some(vec![controller_ref(&old)]);
        c.claims.apply(cl.clone());
        c.sync("default/web").await.unwrap();
        assert!(
            created_pods(&fake).is_empty(),
            "web-1 waits for the old claim to go"
        );
        // The garbage collector removed it: web-1 is made with a fresh claim.
        c.claims.delete(cl);
        c.sync("default/web").await.unwrap();
        assert_eq!(created_pods(&fake), vec!["web-1"]);
        assert_eq!(fake.count(Verb::Create, "PersistentVolumeClaim"), 1);
    }

    fn old_and_new(
        replicas: i32,
        partition: i32,
        max_unavailable: i32,
    ) -> (StatefulSet, StatefulSet) {
        let old = set(replicas, "OrderedReady");
        let mut new = old.clone();
        new.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .hostname = Some("changed".into());
        new.spec.as_mut().unwrap().update_strategy =
            Some(k8s_openapi::api::apps::v1::StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(
                    k8s_openapi::api::apps::v1::RollingUpdateStatefulSetStrategy {
                        partition: Some(partition),
                        max_unavailable: Some(IntOrString::Int(max_unavailable)),
                    },
                ),
            });
        new.status = Some(StatefulSetStatus {
            current_revision: Some(revision_name(&old)),
            replicas,
            ..Default::default()
        });
        (old, new)
    }

    fn deleted_pods(fake: &RecordingControl) -> Vec<String> {
        fake.of(Verb::Delete, "Pod")
            .into_iter()
            .map(|a| a.name)
            .collect()
    }

    #[tokio::test]
    async fn max_unavailable_updates_several_pods_at_once_above_the_partition() {
        let (old, new) = old_and_new(5, 1, 2);
        let (c, fake) = fixture(new.clone());
        for o in 0..5 {
            c.pods.apply(healthy_pod(&c, &old, o));
        }
        c.sync("default/web").await.unwrap();
        assert_eq!(deleted_pods(&fake), vec!["web-4", "web-3"]);

        // web-4 is terminating and web-3 came back updated but not ready: two unavailable.
        let mut p4 = healthy_pod(&c, &old, 4);
        p4.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        c.pods.apply(p4);
        let mut p3 = healthy_pod(&c, &new, 3);
        p3.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(REVISION_LABEL.into(), revision_name(&new));
        p3.status.as_mut().unwrap().conditions = None;
        c.pods.apply(p3.clone());
        fake.clear();
        c.sync("default/web").await.unwrap();
        assert!(deleted_pods(&fake).is_empty());

        // Both updated and ready: the next two go, and web-0 stays below the partition.
        for o in [3, 4] {
            let mut p = healthy_pod(&c, &new, o);
            p.metadata
                .labels
                .as_mut()
                .unwrap()
                .insert(REVISION_LABEL.into(), revision_name(&new));
            c.pods.apply(p);
        }
        fake.clear();
        c.sync("default/web").await.unwrap();
        assert_eq!(deleted_pods(&fake), vec!["web-2", "web-1"]);
        for o in [1, 2] {
            let mut p = healthy_pod(&c, &new, o);
            p.metadata
                .labels
                .as_mut()
                .unwrap()
                .insert(REVISION_LABEL.into(), revision_name(&new));
            c.pods.apply(p);
        }
        fake.clear();
        c.sync("default/web").await.unwrap();
        assert!(
            deleted_pods(&fake).is_empty(),
            "web-0 is below the partition"
        );

        // A percentage rounds down, with at least one.
        let (_, mut pct) = old_and_new(5, 0, 1);
        pct.spec
            .as_mut()
            .unwrap()
            .update_strategy
            .as_mut()
            .unwrap()
            .rolling_update
            .as_mut()
            .unwrap()
            .max_unavailable = Some(IntOrString::String("50%".into()));
        assert_eq!(max_unavailable(&pct), 2);
        pct.spec.as_mut().unwrap().replicas = Some(1);
        assert_eq!(max_unavailable(&pct), 1);
    }

    #[tokio::test]
    async fn ordinals_start_names_pods_and_claims_from_the_start() {
        let mut s = set(2, "Parallel");
        s.spec.as_mut().unwrap().ordinals =
            Some(k8s_openapi::api::apps::v1::StatefulSetOrdinals { start: Some(5) });
        let (c, fake) = fixture(s.clone());
        c.sync("default/web").await.unwrap();
        assert_eq!(created_pods(&fake), vec!["web-5", "web-6"]);
        let claims: Vec<String> = fake
            .of(Verb::Create, "PersistentVolumeClaim")
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(claims, vec!["data-web-5", "data-web-6"]);
        let p: Pod =
            serde_json::from_value(fake.of(Verb::Create, "Pod")[0].object.clone().unwrap())
                .unwrap();
        assert_eq!(
            p.metadata
                .labels
                .unwrap()
                .get(POD_INDEX_LABEL)
                .map(String::as_str),
            Some("5")
        );
        // Pods below the start are condemned like those above the end.
        let (c, fake) = fixture(s.clone());
        for o in [0, 5, 6] {
            c.pods.apply(healthy_pod(&c, &s, o));
        }
        c.sync("default/web").await.unwrap();
        assert_eq!(deleted_pods(&fake), vec!["web-0"]);
        assert!(created_pods(&fake).is_empty());
    }

    #[tokio::test]
    async fn min_ready_seconds_gates_ordered_creation_and_availability() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut s = set(2, "OrderedReady");
        s.spec.as_mut().unwrap().min_ready_seconds = Some(10);
        let inf = SharedInformers::new(None);
        let fake = Arc::new(RecordingControl::new());
        let clock = Arc::new(crate::job::FakeClock::new(t0));
        let c = StatefulSetController::with_clock(
            inf.cache(),
            inf.cache(),
            inf.cache(),
            inf.cache(),
            fake.clone(),
            clock.clone(),
        );
        c.sets.apply(s.clone());
        let mut p0 = healthy_pod(&c, &s, 0);
        p0.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
            Some(Time(t0));
        c.pods.apply(p0);
        let r = c.sync("default/web").await.unwrap();
        assert!(created_pods(&fake).is_empty(), "web-0 is not available yet");
        assert_eq!(r, Some(Duration::from_secs(10)));
        let st: StatefulSetStatus = serde_json::from_value(
            fake.of(Verb::UpdateStatus, "StatefulSet")[0]
                .object
                .clone()
                .unwrap()["status"]
                .clone(),
        )
        .unwrap();
        assert_eq!((st.ready_replicas, st.available_replicas), (Some(1), None));

        clock.step(Duration::from_secs(11));
        fake.clear();
        let r = c.sync("default/web").await.unwrap();
        assert_eq!(created_pods(&fake), vec!["web-1"]);
        assert_eq!(r, None);
        let st: StatefulSetStatus = serde_json::from_value(
            fake.of(Verb::UpdateStatus, "StatefulSet")[0]
                .object
                .clone()
                .unwrap()["status"]
                .clone(),
        )
        .unwrap();
        assert_eq!(st.available_replicas, Some(1));
    }
}
