//! The StatefulSet controller (upstream's pkg/controller/statefulset): pods with stable
//! names `<set>-<ordinal>` and PersistentVolumeClaims from volumeClaimTemplates, created in
//! order (OrderedReady) or all at once (Parallel), removed from the highest ordinal down;
//! revisions as ControllerRevisions and a RollingUpdate with a partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::ResourceExt;
use serde_json::json;

use crate::deployment::util::{compute_hash, nz};
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

fn healthy(pod: &Pod) -> bool {
    podutil::phase(pod) == "Running"
        && podutil::is_pod_ready(pod)
        && pod.metadata.deletion_timestamp.is_none()
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
        Arc::new(StatefulSetController {
            sets,
            pods,
            claims,
            revisions,
            control,
            queue: WorkQueue::default(),
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
        self.write_status(&set, &pods, &current_revision, &update_revision)
            .await?;
        Ok(None)
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
            let claim = format!("{tname}-{}-{ordinal}", set.name_any());
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
            let name = format!(
                "{}-{}-{ordinal}",
                t.metadata.name.clone().unwrap_or_default(),
                set.name_any()
            );
            if self.claims.get(&ns, &name).is_some() {
                continue;
            }
            let mut pvc = t.clone();
            pvc.metadata.name = Some(name);
            pvc.metadata.namespace = Some(ns.clone());
            let labels = pvc.metadata.labels.get_or_insert_with(Default::default);
            labels.extend(sel_labels.clone());
            pvc.status = None;
            match self.control.create_obj(&pvc).await {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
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
                    delete_pod(self.control.as_ref(), set, p)
                        .await
                        .or_else(ignore_not_found)?;
                    if ordered {
                        return Ok(());
                    }
                }
                Some(p) if ordered && !healthy(p) => return Ok(()),
                Some(_) => {}
            }
        }
        // Condemned pods, highest ordinal first; ordered sets wait for every pod to be healthy.
        let condemned: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|(o, _)| **o < start || **o >= end)
            .map(|(_, p)| p)
            .rev()
            .collect();
        for p in &condemned {
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
            delete_pod(self.control.as_ref(), set, p)
                .await
                .or_else(ignore_not_found)?;
            let msg = format!(
                "delete Pod {} in StatefulSet {} successful",
                p.name_any(),
                set.name_any()
            );
            self.control
                .event_for(set, "Normal", "SuccessfulDelete", msg)
                .await;
            if ordered {
                return Ok(());
            }
        }
        if !condemned.is_empty() || !rolling {
            return Ok(());
        }
        // Rolling update: one pod at a time from the top, down to the partition.
        if (start..end).any(|o| !pods.get(&o).is_some_and(|p| healthy(p))) {
            return Ok(());
        }
        for ordinal in (start + partition..end).rev() {
            let p = &pods[&ordinal];
            if revision_of(p) != Some(update_rev) {
                delete_pod(self.control.as_ref(), set, p)
                    .await
                    .or_else(ignore_not_found)?;
                return Ok(());
            }
        }
        Ok(())
    }

    async fn write_status(
        &self,
        set: &StatefulSet,
        pods: &[Arc<Pod>],
        current_rev: &str,
        update_rev: &str,
    ) -> Result<(), ApiError> {
        let mut st = set.status.clone().unwrap_or_default();
        let live: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
        let mrs = set
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        let now = k8s_openapi::jiff::Timestamp::now();
        let updated = count(&|p| revision_of(p) == Some(update_rev));
        let replicas_n = live.len() as i32;
        let mut current_rev = current_rev.to_string();
        let mut current = count(&|p| revision_of(p) == Some(current_rev.as_str()));
        if updated == replicas(set)
            && replicas_n == replicas(set)
            && live.iter().all(|p| healthy(p))
        {
            current_rev = update_rev.to_string();
            current = updated;
        }
        let new = StatefulSetStatus {
            observed_generation: set.metadata.generation,
            replicas: replicas_n,
            ready_replicas: nz(count(&|p| podutil::is_pod_ready(p))),
            available_replicas: nz(count(&|p| podutil::is_pod_available(p, mrs, now))),
            current_replicas: nz(current),
            updated_replicas: nz(updated),
            current_revision: Some(current_rev),
            update_revision: Some(update_rev.to_string()),
            collision_count: st.collision_count,
            conditions: st.conditions.take(),
        };
        if set.status.as_ref() == Some(&new) {
            return Ok(());
        }
        let mut obj = set.clone();
        obj.status = Some(new);
        self.control.update_status_obj(&obj).await.map(|_| ())
    }
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

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
}
