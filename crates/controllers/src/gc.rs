//! The garbage collector: a graph of ownerReferences over the watched kinds, and upstream's
//! three propagation policies.
//!
//! - Background: an object whose owners are all gone (verified by a live GET by UID, never
//!   the cache) is deleted; one with some owners left loses the references to the gone ones.
//! - Foreground: an owner being deleted with the `foregroundDeletion` finalizer has its
//!   dependents deleted; once no dependent with `blockOwnerDeletion` remains, the
//!   finalizer is removed.
//! - Orphan: an owner being deleted with the `orphan` finalizer has its reference removed
//!   from every dependent, then the finalizer.

pub mod live;

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Node as KNode, PersistentVolumeClaim, Pod, ReplicationController, Secret,
    Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::ApiResource;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use self::live::{KubeLive, Live};
use crate::namespace::api_resource;
use crate::runtime::{run_workers, ApiError, Change, Context, Control, WorkQueue};

/// The finalizer of foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of orphan deletion.
pub const ORPHAN: &str = "orphan";

/// Who an object is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjId {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Namespace (`""` when cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

/// What the graph needs to know of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjInfo {
    /// Identity.
    pub id: ObjId,
    /// Its ownerReferences.
    pub owners: Vec<OwnerReference>,
    /// Whether it has a deletionTimestamp.
    pub deleting: bool,
    /// Its finalizers.
    pub finalizers: Vec<String>,
}

impl ObjInfo {
    /// The graph's view of a typed object.
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> ObjInfo {
        let m = obj.meta();
        ObjInfo {
            id: ObjId {
                api_version: K::api_version(&()).into_owned(),
                kind: K::kind(&()).into_owned(),
                namespace: m.namespace.clone().unwrap_or_default(),
                name: m.name.clone().unwrap_or_default(),
                uid: m.uid.clone().unwrap_or_default(),
            },
            owners: m.owner_references.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
        }
    }

    fn has(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

#[derive(Debug, Clone)]
struct GNode {
    info: ObjInfo,
    dependents: HashSet<String>,
    /// Known only as someone's owner; existence not yet verified.
    virtual_: bool,
}

/// A unit of garbage-collection work, by UID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    /// Check whether the object must be deleted (or, if virtual, whether it exists).
    Delete(String),
    /// Orphan the object's dependents.
    Orphan(String),
}

impl Work {
    /// The work queue key.
    pub fn key(&self) -> String {
        match self {
            Work::Delete(u) => format!("delete/{u}"),
            Work::Orphan(u) => format!("orphan/{u}"),
        }
    }

    /// Parses a key from [`Work::key`].
    pub fn from_key(key: &str) -> Option<Work> {
        match key.split_once('/')? {
            ("delete", u) => Some(Work::Delete(u.into())),
            ("orphan", u) => Some(Work::Orphan(u.into())),
            _ => None,
        }
    }
}

/// The ownership graph (upstream's `uidToNode` with the graph builder's rules).
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, GNode>,
}

fn owner_id(r: &OwnerReference, dependent_ns: &str) -> ObjId {
    let namespaced = skiff_api::registry::find_kind(&r.api_version, &r.kind)
        .map(|ri| ri.namespaced)
        .unwrap_or(true);
    ObjId {
        api_version: r.api_version.clone(),
        kind: r.kind.clone(),
        namespace: if namespaced {
            dependent_ns.into()
        } else {
            String::new()
        },
        name: r.name.clone(),
        uid: r.uid.clone(),
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Whether the graph knows `uid` (virtual nodes included).
    pub fn contains(&self, uid: &str) -> bool {
        self.nodes.contains_key(uid)
    }

    /// The UIDs of the objects that list `uid` as an owner.
    pub fn dependents(&self, uid: &str) -> Vec<String> {
        let mut d: Vec<String> = self
            .nodes
            .get(uid)
            .map(|n| n.dependents.iter().cloned().collect())
            .unwrap_or_default();
        d.sort();
        d
    }

    fn link(&mut self, dep: &ObjInfo, out: &mut Vec<Work>) {
        for r in &dep.owners {
            match self.nodes.get_mut(&r.uid) {
                Some(n) => {
                    n.dependents.insert(dep.id.uid.clone());
                }
                None => {
                    // An owner never seen: verify it exists (upstream's virtual node).
                    let id = owner_id(r, &dep.id.namespace);
                    self.nodes.insert(
                        r.uid.clone(),
                        GNode {
                            info: ObjInfo {
                                id,
                                owners: Vec::new(),
                                deleting: false,
                                finalizers: Vec::new(),
                            },
                            dependents: HashSet::from([dep.id.uid.clone()]),
                            virtual_: true,
                        },
                    );
                    out.push(Work::Delete(r.uid.clone()));
                }
            }
        }
    }

    fn unlink(&mut self, dep_uid: &str, owners: &[OwnerReference], out: &mut Vec<Work>) {
        for r in owners {
            if let Some(n) = self.nodes.get_mut(&r.uid) {
                n.dependents.remove(dep_uid);
                // An owner waiting on its dependents may be free to go now.
                if n.info.deleting && n.info.has(FOREGROUND) {
                    out.push(Work::Delete(r.uid.clone()));
                }
            }
        }
    }

    /// Records an added or updated object; returns the work it calls for.
    pub fn upsert(&mut self, info: ObjInfo) -> Vec<Work> {
        let mut out = Vec::new();
        let uid = info.id.uid.clone();
        if uid.is_empty() {
            return out;
        }
        let old = self.nodes.get(&uid).cloned();
        let old_owners = old
            .as_ref()
            .filter(|n| !n.virtual_)
            .map(|n| n.info.owners.clone())
            .unwrap_or_default();
        let removed: Vec<OwnerReference> = old_owners
            .iter()
            .filter(|r| !info.owners.iter().any(|n| n.uid == r.uid))
            .cloned()
            .collect();
        self.unlink(&uid, &removed, &mut out);
        let was_deleting_dependents = old
            .as_ref()
            .is_some_and(|n| n.info.deleting && n.info.has(FOREGROUND));
        let was_orphaning = old
            .as_ref()
            .is_some_and(|n| n.info.deleting && n.info.has(ORPHAN));
        let dependents = old.map(|n| n.dependents).unwrap_or_default();
        self.nodes.insert(
            uid.clone(),
            GNode {
                info: info.clone(),
                dependents: dependents.clone(),
                virtual_: false,
            },
        );
        self.link(&info, &mut out);
        if info.deleting && info.has(ORPHAN) && !was_orphaning {
            out.push(Work::Orphan(uid.clone()));
        }
        if info.deleting && info.has(FOREGROUND) && !was_deleting_dependents {
            let mut deps: Vec<&String> = dependents.iter().collect();
            deps.sort();
            out.extend(deps.into_iter().map(|d| Work::Delete(d.clone())));
            out.push(Work::Delete(uid.clone()));
        }
        // A dependent whose owner is being deleted in the foreground is itself deleted.
        for r in &info.owners {
            if self
                .nodes
                .get(&r.uid)
                .is_some_and(|n| n.info.deleting && n.info.has(FOREGROUND))
            {
                out.push(Work::Delete(uid.clone()));
            }
        }
        out
    }

    /// Records a deleted object; its dependents must be checked.
    pub fn remove(&mut self, uid: &str) -> Vec<Work> {
        let mut out = Vec::new();
        let Some(node) = self.nodes.remove(uid) else {
            return out;
        };
        let mut deps: Vec<&String> = node.dependents.iter().collect();
        deps.sort();
        out.extend(deps.into_iter().map(|d| Work::Delete(d.clone())));
        self.unlink(uid, &node.info.owners, &mut out);
        out
    }
}

/// The ApiResource for an apiVersion and kind the registry serves.
pub fn resource_of(api_version: &str, kind: &str) -> Option<ApiResource> {
    skiff_api::registry::find_kind(api_version, kind).map(api_resource)
}

/// The garbage collector's state: the graph and its collaborators.
pub struct GarbageCollector {
    graph: Mutex<Graph>,
    control: Arc<dyn Control>,
    live: Arc<dyn Live>,
    /// The kinds whose objects feed the graph, as (apiVersion, kind).
    followed: Mutex<Vec<(String, String)>>,
}

/// How an owner reference of an object stands.
#[derive(Debug, PartialEq)]
enum OwnerState {
    Solid,
    Dangling,
    Waiting,
}

impl GarbageCollector {
    /// A collector writing through `control` and reading live state through `live`.
    pub fn new(control: Arc<dyn Control>, live: Arc<dyn Live>) -> GarbageCollector {
        GarbageCollector {
            graph: Mutex::new(Graph::new()),
            control,
            live,
            followed: Mutex::default(),
        }
    }

    /// Notes that objects of this kind feed the graph (orphaning looks for dependents among
    /// them).
    pub fn follow(&self, api_version: &str, kind: &str) {
        self.followed
            .lock()
            .unwrap()
            .push((api_version.to_string(), kind.to_string()));
    }

    /// Records an added or updated object.
    pub fn observe(&self, info: ObjInfo) -> Vec<Work> {
        self.graph.lock().unwrap().upsert(info)
    }

    /// Records a deleted object.
    pub fn observe_deleted(&self, uid: &str) -> Vec<Work> {
        self.graph.lock().unwrap().remove(uid)
    }

    /// The dependents the graph knows for `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<String> {
        self.graph.lock().unwrap().dependents(uid)
    }

    fn node(&self, uid: &str) -> Option<GNode> {
        self.graph.lock().unwrap().nodes.get(uid).cloned()
    }

    async fn live_get(&self, id: &ObjId) -> Result<Option<Value>, ApiError> {
        let Some(res) = resource_of(&id.api_version, &id.kind) else {
            return Err(ApiError::Other(format!(
                "unable to get REST mapping for {}/{}",
                id.api_version, id.kind
            )));
        };
        self.live.get(&res, &id.namespace, &id.name).await
    }

    async fn owner_state(&self, r: &OwnerReference, ns: &str) -> Result<OwnerState, ApiError> {
        let id = owner_id(r, ns);
        let owner = self.live_get(&id).await?;
        let Some(owner) = owner.filter(|o| o["metadata"]["uid"].as_str() == Some(&r.uid)) else {
            return Ok(OwnerState::Dangling);
        };
        let deleting = owner["metadata"]
            .get("deletionTimestamp")
            .is_some_and(|v| !v.is_null());
        let foreground = owner["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|a| a.iter().any(|f| f == FOREGROUND));
        Ok(if deleting && foreground {
            OwnerState::Waiting
        } else {
            OwnerState::Solid
        })
    }

    /// Merge-patches `metadata` fields of an object, guarded by its resourceVersion.
    async fn patch_meta(&self, id: &ObjId, obj: &Value, meta: Value) -> Result<(), ApiError> {
        let res = resource_of(&id.api_version, &id.kind)
            .ok_or_else(|| ApiError::Other(format!("unknown kind {}", id.kind)))?;
        let mut meta = meta;
        meta["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
        meta["uid"] = json!(id.uid);
        match self
            .control
            .patch(&res, &id.namespace, &id.name, json!({ "metadata": meta }))
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            r => r.map(drop),
        }
    }

    async fn remove_finalizer(&self, id: &ObjId, finalizer: &str) -> Result<(), ApiError> {
        let Some(obj) = self.live_get(id).await? else {
            return Ok(());
        };
        if obj["metadata"]["uid"].as_str() != Some(&id.uid) {
            return Ok(());
        }
        let list: Vec<Value> = obj["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !list.iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let rest: Vec<Value> = list.into_iter().filter(|f| f != finalizer).collect();
        self.patch_meta(id, &obj, json!({ "finalizers": rest }))
            .await
    }

    /// Processes one work item (upstream's `attemptToDeleteItem` and `attemptToOrphan`).
    pub async fn process(&self, work: &Work) -> Result<Vec<Work>, ApiError> {
        match work {
            Work::Delete(uid) => self.attempt_to_delete(uid).await,
            Work::Orphan(uid) => self.attempt_to_orphan(uid).await.map(|_| Vec::new()),
        }
    }

    async fn attempt_to_delete(&self, uid: &str) -> Result<Vec<Work>, ApiError> {
        let Some(node) = self.node(uid) else {
            return Ok(Vec::new());
        };
        if node.virtual_ {
            let found = self.live_get(&node.info.id).await?;
            let exists = found.is_some_and(|o| o["metadata"]["uid"].as_str() == Some(uid));
            if exists {
                // The informer will deliver it; nothing to collect.
                return Ok(Vec::new());
            }
            let mut g = self.graph.lock().unwrap();
            let deps = g.dependents(uid);
            g.nodes.remove(uid);
            return Ok(deps.into_iter().map(Work::Delete).collect());
        }
        let info = &node.info;
        if info.deleting && info.has(FOREGROUND) {
            return self.process_deleting_dependents(&node).await;
        }
        if info.deleting {
            return Ok(Vec::new());
        }
        let Some(obj) = self.live_get(&info.id).await? else {
            // Gone already: treat as the delete event the informer will bring.
            return Ok(self.observe_deleted(uid));
        };
        if obj["metadata"]["uid"].as_str() != Some(uid) {
            return Ok(self.observe_deleted(uid));
        }
        let owners: Vec<OwnerReference> =
            serde_json::from_value(obj["metadata"]["ownerReferences"].clone()).unwrap_or_default();
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let mut solid = Vec::new();
        let mut gone = Vec::new();
        let mut waiting = Vec::new();
        for r in &owners {
            match self.owner_state(r, &info.id.namespace).await? {
                OwnerState::Solid => solid.push(r.clone()),
                OwnerState::Dangling => gone.push(r.clone()),
                OwnerState::Waiting => waiting.push(r.clone()),
            }
        }
        if !solid.is_empty() {
            if gone.is_empty() && waiting.is_empty() {
                return Ok(Vec::new());
            }
            // Some owners remain: only drop the references to the ones going away.
            self.patch_meta(&info.id, &obj, json!({ "ownerReferences": solid }))
                .await?;
            return Ok(Vec::new());
        }
        let policy = if !waiting.is_empty() && !node.dependents.is_empty() {
            "Foreground"
        } else if info.has(ORPHAN) {
            "Orphan"
        } else if info.has(FOREGROUND) {
            "Foreground"
        } else {
            "Background"
        };
        let res = resource_of(&info.id.api_version, &info.id.kind)
            .ok_or_else(|| ApiError::Other(format!("unknown kind {}", info.id.kind)))?;
        match self
            .control
            .delete(
                &res,
                &info.id.namespace,
                &info.id.name,
                Some(uid),
                Some(policy),
            )
            .await
        {
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(Vec::new()),
            r => r.map(|_| Vec::new()),
        }
    }

    async fn process_deleting_dependents(&self, node: &GNode) -> Result<Vec<Work>, ApiError> {
        let uid = &node.info.id.uid;
        let mut blocking = Vec::new();
        for d in &node.dependents {
            let Some(dn) = self.node(d) else { continue };
            let blocks = dn
                .info
                .owners
                .iter()
                .any(|r| r.uid == *uid && r.block_owner_deletion == Some(true));
            if blocks && !dn.virtual_ {
                blocking.push(dn);
            }
        }
        if blocking.is_empty() {
            self.remove_finalizer(&node.info.id, FOREGROUND).await?;
            return Ok(Vec::new());
        }
        // Dependents still there: make sure each is being deleted; their deletion events
        // bring the owner back here.
        Ok(blocking
            .into_iter()
            .filter(|d| !d.info.deleting || d.info.has(FOREGROUND))
            .map(|d| Work::Delete(d.info.id.uid))
            .collect())
    }

    async fn attempt_to_orphan(&self, uid: &str) -> Result<(), ApiError> {
        let Some(node) = self.node(uid) else {
            return Ok(());
        };
        let mut done = HashSet::new();
        for d in &node.dependents {
            let Some(dn) = self.node(d) else { continue };
            if dn.virtual_ {
                continue;
            }
            done.insert(d.clone());
            if let Some(obj) = self.live_get(&dn.info.id).await? {
                self.drop_reference(&dn.info.id, &obj, uid).await?;
            }
        }
        // A dependent created just before its owner's deletion may not be in the graph yet:
        // every kind has its own watch, so the owner's update can arrive first. Released now,
        // the owner would leave it a reference to a gone owner, and it would be collected
        // instead of orphaned; a live list of the kinds the collector follows finds it.
        let owner = &node.info.id;
        let followed = self.followed.lock().unwrap().clone();
        for (api_version, kind) in &followed {
            let Some(info) = skiff_api::registry::find_kind(api_version, kind) else {
                continue;
            };
            if !info.namespaced && !owner.namespace.is_empty() {
                continue; // a namespaced owner has only dependents in its namespace
            }
            let res = api_resource(info);
            for obj in self.live.list(&res, &owner.namespace).await? {
                let meta = &obj["metadata"];
                let dep_uid = meta["uid"].as_str().unwrap_or_default();
                if done.contains(dep_uid) {
                    continue;
                }
                let id = ObjId {
                    api_version: api_version.clone(),
                    kind: kind.clone(),
                    namespace: meta["namespace"].as_str().unwrap_or_default().into(),
                    name: meta["name"].as_str().unwrap_or_default().into(),
                    uid: dep_uid.into(),
                };
                self.drop_reference(&id, &obj, uid).await?;
            }
        }
        self.remove_finalizer(owner, ORPHAN).await
    }

    /// Removes the reference to `owner_uid` from `obj` (the live copy of `id`), if it has one.
    async fn drop_reference(
        &self,
        id: &ObjId,
        obj: &Value,
        owner_uid: &str,
    ) -> Result<(), ApiError> {
        let owners: Vec<OwnerReference> =
            serde_json::from_value(obj["metadata"]["ownerReferences"].clone()).unwrap_or_default();
        if !owners.iter().any(|r| r.uid == owner_uid) {
            return Ok(());
        }
        let rest: Vec<OwnerReference> = owners.into_iter().filter(|r| r.uid != owner_uid).collect();
        self.patch_meta(id, obj, json!({ "ownerReferences": rest }))
            .await
    }
}

fn watch<K>(ctx: &Context, gc: &Arc<GarbageCollector>, queue: &WorkQueue)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    gc.follow(&K::api_version(&()), &K::kind(&()));
    let cache = ctx.informers.cache::<K>();
    let (gc2, q) = (gc.clone(), queue.clone());
    cache.add_handler(move |c| {
        let work = match c {
            Change::Deleted(o) => gc2.observe_deleted(o.meta().uid.as_deref().unwrap_or("")),
            _ => gc2.observe(ObjInfo::of(c.object().as_ref())),
        };
        for w in work {
            q.add(w.key());
        }
    });
    // Objects the shared cache already held never reach the handler.
    for o in cache.list_all() {
        for w in gc.observe(ObjInfo::of(o.as_ref())) {
            queue.add(w.key());
        }
    }
}

/// Runs the garbage collector until dropped.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let live: Arc<dyn Live> = Arc::new(KubeLive::new(ctx.client.clone()));
    let gc = Arc::new(GarbageCollector::new(ctx.control.clone(), live));
    let queue = WorkQueue::default();
    watch::<Pod>(&ctx, &gc, &queue);
    watch::<ReplicaSet>(&ctx, &gc, &queue);
    watch::<Deployment>(&ctx, &gc, &queue);
    watch::<StatefulSet>(&ctx, &gc, &queue);
    watch::<DaemonSet>(&ctx, &gc, &queue);
    watch::<ControllerRevision>(&ctx, &gc, &queue);
    watch::<Job>(&ctx, &gc, &queue);
    watch::<CronJob>(&ctx, &gc, &queue);
    watch::<ReplicationController>(&ctx, &gc, &queue);
    watch::<EndpointSlice>(&ctx, &gc, &queue);
    watch::<Endpoints>(&ctx, &gc, &queue);
    watch::<Service>(&ctx, &gc, &queue);
    watch::<ConfigMap>(&ctx, &gc, &queue);
    watch::<Secret>(&ctx, &gc, &queue);
    watch::<ServiceAccount>(&ctx, &gc, &queue);
    watch::<PersistentVolumeClaim>(&ctx, &gc, &queue);
    watch::<KNode>(&ctx, &gc, &queue);
    watch::<Lease>(&ctx, &gc, &queue);
    ctx.informers.wait_for_sync().await;
    // Caches that synced after registration delivered their objects through the handlers.
    // Upstream's --concurrent-gc-syncs defaults to 20.
    run_workers("garbagecollector", queue.clone(), 20, move |key| {
        let (gc, queue) = (gc.clone(), queue.clone());
        async move {
            if let Some(w) = Work::from_key(&key) {
                for next in gc.process(&w).await? {
                    queue.add(next.key());
                }
            }
            Ok(None)
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::live::FakeLive;
    use super::*;
    use crate::runtime::{RecordingControl, Verb};

    fn info(kind: &str, name: &str, uid: &str, owners: &[(&str, &str, &str, bool)]) -> ObjInfo {
        ObjInfo {
            id: ObjId {
                api_version: if kind == "Pod" { "v1" } else { "apps/v1" }.into(),
                kind: kind.into(),
                namespace: "d".into(),
                name: name.into(),
                uid: uid.into(),
            },
            owners: owners
                .iter()
                .map(|(k, n, u, block)| OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: k.to_string(),
                    name: n.to_string(),
                    uid: u.to_string(),
                    controller: Some(true),
                    block_owner_deletion: Some(*block),
                })
                .collect(),
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    fn live_obj(i: &ObjInfo) -> Value {
        json!({"apiVersion": i.id.api_version, "kind": i.id.kind, "metadata": {
            "name": i.id.name, "namespace": i.id.namespace, "uid": i.id.uid, "resourceVersion": "7",
            "ownerReferences": i.owners, "finalizers": i.finalizers,
            "deletionTimestamp": if i.deleting { json!("2025-01-01T00:00:00Z") } else { Value::Null }}})
    }

    fn setup() -> (Arc<RecordingControl>, Arc<FakeLive>, GarbageCollector) {
        let rc = Arc::new(RecordingControl::new());
        let live = Arc::new(FakeLive::new());
        let gc = GarbageCollector::new(rc.clone(), live.clone());
        (rc, live, gc)
    }

    async fn drain(gc: &GarbageCollector, mut work: Vec<Work>) {
        let mut n = 0;
        while let Some(w) = work.pop() {
            work.extend(gc.process(&w).await.unwrap());
            n += 1;
            assert!(n < 100, "work does not converge");
        }
    }

    #[tokio::test]
    async fn background_deletes_dependents_of_a_gone_owner() {
        let (rc, live, gc) = setup();
        let rs = info("ReplicaSet", "rs", "rs-uid", &[]);
        let pod = info("Pod", "p", "p-uid", &[("ReplicaSet", "rs", "rs-uid", true)]);
        live.insert("replicasets", live_obj(&rs));
        live.insert("pods", live_obj(&pod));
        assert!(gc.observe(rs.clone()).is_empty());
        assert!(gc.observe(pod.clone()).is_empty());
        assert_eq!(gc.dependents("rs-uid"), vec!["p-uid".to_string()]);
        live.remove("replicasets", "d", "rs");
        let work = gc.observe_deleted("rs-uid");
        assert_eq!(work, vec![Work::Delete("p-uid".into())]);
        drain(&gc, work).await;
        let del = rc.of(Verb::Delete, "Pod");
        assert_eq!(del.len(), 1);
        assert_eq!(del[0].name, "p");
    }

    #[tokio::test]
    async fn a_live_owner_is_never_collected_and_a_virtual_one_is_verified() {
        let (rc, live, gc) = setup();
        let rs = info("ReplicaSet", "rs", "rs-uid", &[]);
        let pod = info("Pod", "p", "p-uid", &[("ReplicaSet", "rs", "rs-uid", true)]);
        live.insert("replicasets", live_obj(&rs));
        live.insert("pods", live_obj(&pod));
        // The pod arrives before its owner: the owner is verified live and found.
        let work = gc.observe(pod.clone());
        assert_eq!(work, vec![Work::Delete("rs-uid".into())]);
        drain(&gc, work).await;
        // A stale delete event: the live GET still finds the owner.
        drain(&gc, vec![Work::Delete("p-uid".into())]).await;
        assert!(rc.actions().is_empty());
        // An owner that never existed: the dependent goes.
        let orphan = info(
            "Pod",
            "q",
            "q-uid",
            &[("ReplicaSet", "ghost", "ghost-uid", true)],
        );
        live.insert("pods", live_obj(&orphan));
        drain(&gc, gc.observe(orphan)).await;
        assert_eq!(rc.of(Verb::Delete, "Pod")[0].name, "q");
    }

    #[tokio::test]
    async fn some_owners_left_only_drops_the_gone_references() {
        let (rc, live, gc) = setup();
        let a = info("ReplicaSet", "a", "a-uid", &[]);
        let pod = info(
            "Pod",
            "p",
            "p-uid",
            &[
                ("ReplicaSet", "a", "a-uid", false),
                ("ReplicaSet", "b", "b-uid", false),
            ],
        );
        live.insert("replicasets", live_obj(&a));
        live.insert("pods", live_obj(&pod));
        gc.observe(a);
        drain(&gc, gc.observe(pod)).await;
        assert_eq!(rc.count(Verb::Delete, "Pod"), 0);
        let patches = rc.of(Verb::Patch, "Pod");
        let patch = &patches[0];
        let refs = &patch.object.as_ref().unwrap()["metadata"]["ownerReferences"];
        assert_eq!(refs.as_array().unwrap().len(), 1);
        assert_eq!(refs[0]["uid"], "a-uid");
    }

    #[tokio::test]
    async fn orphan_removes_references_then_the_finalizer() {
        let (rc, live, gc) = setup();
        let mut rs = info("ReplicaSet", "rs", "rs-uid", &[]);
        let pod = info("Pod", "p", "p-uid", &[("ReplicaSet", "rs", "rs-uid", true)]);
        live.insert("pods", live_obj(&pod));
        gc.observe(rs.clone());
        gc.observe(pod);
        rs.deleting = true;
        rs.finalizers = vec![ORPHAN.into()];
        live.insert("replicasets", live_obj(&rs));
        let work = gc.observe(rs);
        assert_eq!(work, vec![Work::Orphan("rs-uid".into())]);
        drain(&gc, work).await;
        assert_orphaned(&rc, "p");
        assert_eq!(rc.count(Verb::Delete, "Pod"), 0);
    }

    /// The pod lost its reference, then the ReplicaSet its finalizer, and nothing else was written.
    fn assert_orphaned(rc: &RecordingControl, pod: &str) {
        let acts = rc.actions();
        assert_eq!(acts.len(), 2, "{acts:?}");
        assert_eq!((acts[0].kind.as_str(), acts[0].name.as_str()), ("Pod", pod));
        assert_eq!(
            acts[0].object.as_ref().unwrap()["metadata"]["ownerReferences"],
            json!([])
        );
        assert_eq!(acts[1].kind, "ReplicaSet");
        assert_eq!(
            acts[1].object.as_ref().unwrap()["metadata"]["finalizers"],
            json!([])
        );
    }

    #[tokio::test]
    async fn orphan_finds_dependents_the_graph_has_not_seen() {
        let (rc, live, gc) = setup();
        gc.follow("v1", "Pod");
        let mut rs = info("ReplicaSet", "rs", "rs-uid", &[]);
        gc.observe(rs.clone());
        // Created just before the owner's deletion; its watch event has not arrived.
        let pod = info(
            "Pod",
            "late",
            "late-uid",
            &[("ReplicaSet", "rs", "rs-uid", true)],
        );
        live.insert("pods", live_obj(&pod));
        // Someone else's pod in the namespace is left alone.
        let other = info(
            "Pod",
            "other",
            "o-uid",
            &[("ReplicaSet", "x", "x-uid", true)],
        );
        live.insert("pods", live_obj(&other));
        rs.deleting = true;
        rs.finalizers = vec![ORPHAN.into()];
        live.insert("replicasets", live_obj(&rs));
        drain(&gc, gc.observe(rs)).await;
        assert_orphaned(&rc, "late");
    }

    #[tokio::test]
    async fn foreground_deletes_dependents_then_releases_the_owner() {
        let (rc, live, gc) = setup();
        let mut rs = info("ReplicaSet", "rs", "rs-uid", &[]);
        let pod = info("Pod", "p", "p-uid", &[("ReplicaSet", "rs", "rs-uid", true)]);
        live.insert("pods", live_obj(&pod));
        gc.observe(rs.clone());
        gc.observe(pod);
        rs.deleting = true;
        rs.finalizers = vec![FOREGROUND.into()];
        live.insert("replicasets", live_obj(&rs));
        drain(&gc, gc.observe(rs)).await;
        // The blocking pod is deleted; the owner keeps its finalizer meanwhile.
        // (Queued both by the owner's transition and by its own check; the queue dedups.)
        let dels = rc.of(Verb::Delete, "Pod");
        assert!(!dels.is_empty() && dels.iter().all(|a| a.name == "p"));
        assert_eq!(rc.count(Verb::Patch, "ReplicaSet"), 0);
        live.remove("pods", "d", "p");
        drain(&gc, gc.observe_deleted("p-uid")).await;
        let patches = rc.of(Verb::Patch, "ReplicaSet");
        let patch = &patches[0];
        assert_eq!(
            patch.object.as_ref().unwrap()["metadata"]["finalizers"],
            json!([])
        );
    }
}
