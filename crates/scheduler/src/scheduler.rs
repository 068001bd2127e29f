//! The scheduler loop: watches keep the snapshot current, one task runs scheduling cycles in
//! queue order, assumes each placement at once, and binds concurrently through
//! `pods/binding`; failures set `PodScheduled=False` and emit `FailedScheduling`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::{Event as KEvent, EventRecorder, EventType, Reporter};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ReplicationController, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, Semaphore};

use crate::algorithm::{Algorithm, Outcome};
use crate::config::SchedulerConfig;
use crate::framework::Framework;
use crate::queue::SchedulingQueue;
use crate::selectors::Selector;
use crate::types::{OwnerSelector, PodInfo, Snapshot};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Node,
    Pod,
    Namespace,
    Owner,
}

enum Obj {
    Node(Box<Node>),
    Pod(Box<Pod>),
    Namespace(Box<Namespace>),
    Owner(String, OwnerSelector),
}

enum Msg {
    Upsert(Obj),
    Delete(Kind, String),
    Synced(Kind),
    BindFailed(Arc<PodInfo>, String, bool),
}

fn ns_key<K: Resource>(o: &K) -> String {
    match o.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", o.meta().name.as_deref().unwrap_or("")),
        None => o.meta().name.clone().unwrap_or_default(),
    }
}

/// Forwards a watch into the loop's channel, turning relists into deletes of vanished objects.
fn spawn_watch<K>(
    api: Api<K>,
    cfg: watcher::Config,
    kind: Kind,
    key_of: fn(&K) -> String,
    to_obj: fn(K) -> Option<Obj>,
    tx: mpsc::UnboundedSender<Msg>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let mut known: HashSet<String> = HashSet::new();
        let mut fresh: HashSet<String> = HashSet::new();
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, ?kind, "scheduler watch failed; retrying");
                    continue;
                }
            };
            let msgs: Vec<Msg> = match ev {
                Event::Init => {
                    fresh.clear();
                    Vec::new()
                }
                Event::InitApply(o) => {
                    fresh.insert(key_of(&o));
                    let k = key_of(&o);
                    vec![match to_obj(o) {
                        Some(obj) => Msg::Upsert(obj),
                        None => Msg::Delete(kind, k),
                    }]
                }
                Event::InitDone => {
                    let mut out: Vec<Msg> = known
                        .difference(&fresh)
                        .map(|k| Msg::Delete(kind, k.clone()))
                        .collect();
                    known = std::mem::take(&mut fresh);
                    out.push(Msg::Synced(kind));
                    out
                }
                Event::Apply(o) => {
                    let k = key_of(&o);
                    known.insert(k.clone());
                    vec![match to_obj(o) {
                        Some(obj) => Msg::Upsert(obj),
                        None => Msg::Delete(kind, k),
                    }]
                }
                Event::Delete(o) => {
                    let k = key_of(&o);
                    known.remove(&k);
                    vec![Msg::Delete(kind, k)]
                }
            };
            for m in msgs {
                if tx.send(m).is_err() {
                    return;
                }
            }
        }
    })
}

fn owner(
    kind: &str,
    ns: Option<&String>,
    name: Option<&String>,
    sel: Selector,
    map: Option<crate::selectors::Labels>,
) -> Option<Obj> {
    let ns = ns?.clone();
    let key = format!("{kind}/{ns}/{}", name.map(|s| s.as_str()).unwrap_or(""));
    Some(Obj::Owner(
        key,
        OwnerSelector {
            namespace: ns,
            selector: sel,
            as_map: map,
        },
    ))
}

/// What the loop tracks besides the snapshot and queue.
struct Loop {
    client: Client,
    frameworks: HashMap<String, (Framework, Algorithm)>,
    snapshot: Snapshot,
    queue: SchedulingQueue,
    /// Pods placed by us whose binding the watch has not confirmed.
    assumed: HashSet<String>,
    /// Pending pod key to the node it is nominated to.
    nominations: HashMap<String, String>,
    synced: HashSet<Kind>,
    binds: Arc<Semaphore>,
    recorder: EventRecorder,
    tx: mpsc::UnboundedSender<Msg>,
}

fn responsible(frameworks: &HashMap<String, (Framework, Algorithm)>, pod: &Pod) -> bool {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or(crate::config::DEFAULT_SCHEDULER_NAME);
    frameworks.contains_key(name)
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn node_changed(old: &crate::types::NodeInfo, new: &Node) -> bool {
    let fresh = crate::types::NodeInfo::new(Arc::new(new.clone()));
    old.allocatable != fresh.allocatable
        || old.labels != fresh.labels
        || old.taints != fresh.taints
        || old.unschedulable != fresh.unschedulable
        || old.images.len() != fresh.images.len()
}

impl Loop {
    fn set_nomination(&mut self, info: &Arc<PodInfo>, node: Option<String>) {
        if let Some(old) = self.nominations.remove(&info.key) {
            if let Some(list) = self.snapshot.nominated.get_mut(&old) {
                list.retain(|p| p.key != info.key);
                if list.is_empty() {
                    self.snapshot.nominated.remove(&old);
                }
            }
        }
        if let Some(n) = node.filter(|n| !n.is_empty()) {
            self.snapshot
                .nominated
                .entry(n.clone())
                .or_default()
                .push(info.clone());
            self.nominations.insert(info.key.clone(), n);
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Synced(k) => {
                self.synced.insert(k);
            }
            Msg::Upsert(Obj::Node(n)) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                let relevant = match self.snapshot.get(&name) {
                    Some(old) => node_changed(old, &n),
                    None => true,
                };
                self.snapshot.upsert_node(Arc::new(*n));
                if relevant {
                    self.queue.move_all();
                }
            }
            Msg::Delete(Kind::Node, name) => self.snapshot.remove_node(&name),
            Msg::Upsert(Obj::Namespace(ns)) => {
                let name = ns.metadata.name.clone().unwrap_or_default();
                self.snapshot
                    .namespace_labels
                    .insert(name, ns.metadata.labels.unwrap_or_default());
            }
            Msg::Delete(Kind::Namespace, name) => {
                self.snapshot.namespace_labels.remove(&name);
            }
            Msg::Upsert(Obj::Owner(key, o)) => {
                self.snapshot.owner_selectors.insert(key, o);
            }
            Msg::Delete(Kind::Owner, key) => {
                self.snapshot.owner_selectors.remove(&key);
            }
            Msg::Upsert(Obj::Pod(p)) => self.pod_upsert(*p),
            Msg::Delete(Kind::Pod, key) => {
                self.queue.delete(&key);
                self.assumed.remove(&key);
                if let Some(old) = self.snapshot.remove_pod(&key) {
                    self.set_nomination(&old, None);
                    self.queue.move_all();
                } else if let Some(n) = self.nominations.remove(&key) {
                    if let Some(list) = self.snapshot.nominated.get_mut(&n) {
                        list.retain(|p| p.key != key);
                    }
                }
            }
            Msg::BindFailed(info, err, gone) => {
                self.assumed.remove(&info.key);
                self.snapshot.remove_pod(&info.key);
                self.queue.move_all();
                if !gone {
                    tracing::warn!(pod = %info.key, error = %err, "binding failed");
                    self.queue.error(info);
                }
            }
        }
    }

    fn pod_upsert(&mut self, pod: Pod) {
        let info = Arc::new(PodInfo::new(Arc::new(pod)));
        let key = info.key.clone();
        if let Some(node) = info.node_name.clone() {
            self.queue.delete(&key);
            self.set_nomination(&info, None);
            let ours = self.assumed.remove(&key);
            if terminal(&info.pod) {
                if self.snapshot.remove_pod(&key).is_some() {
                    self.queue.move_all();
                }
                return;
            }
            let known = self.snapshot.node_of(&key).is_some();
            let labels_changed = known
                && self
                    .snapshot
                    .get(&node)
                    .and_then(|n| n.pods.iter().find(|p| p.key == key))
                    .is_some_and(|p| p.labels != info.labels);
            self.snapshot.add_pod(&node, info);
            if (!known && !ours) || labels_changed {
                self.queue.move_all();
            }
            return;
        }
        if self.assumed.contains(&key) {
            // The watch has not caught up with our binding yet.
            return;
        }
        if !responsible(&self.frameworks, &info.pod) || terminal(&info.pod) || info.terminating {
            self.queue.delete(&key);
            return;
        }
        let nominated = info
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone());
        self.set_nomination(&info, nominated);
        self.queue.add_or_update(info);
    }

    fn ready(&self) -> bool {
        self.synced.contains(&Kind::Node) && self.synced.contains(&Kind::Pod)
    }

    fn schedule_one(&mut self) -> bool {
        let Some(popped) = self.queue.pop() else {
            return false;
        };
        let info = popped.info;
        let name = info
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_else(|| crate::config::DEFAULT_SCHEDULER_NAME.into());
        let Some((fw, alg)) = self.frameworks.get_mut(&name) else {
            self.queue.done(&info.key);
            return true;
        };
        match alg.schedule(fw, &info, &self.snapshot) {
            Outcome::Scheduled { node } => {
                let mut state = crate::framework::CycleState::default();
                let s = fw.run_reserve(&mut state, &info, &node);
                if !s.is_success() {
                    self.queue.error(info);
                    return true;
                }
                self.queue.done(&info.key);
                self.set_nomination(&info, None);
                self.snapshot.add_pod(&node, info.clone());
                self.assumed.insert(info.key.clone());
                self.spawn_bind(info, node);
            }
            Outcome::Unschedulable { error, preemption } => {
                let mut nominated: Option<String> = None;
                if let Some(r) = preemption {
                    if let Some(n) = r.nominated_node.clone() {
                        // Lower-priority pods nominated to the node lose their nomination.
                        let displaced: Vec<Arc<PodInfo>> = self
                            .snapshot
                            .nominated
                            .get(&n)
                            .into_iter()
                            .flatten()
                            .filter(|p| p.priority < info.priority && p.key != info.key)
                            .cloned()
                            .collect();
                        for p in displaced {
                            self.set_nomination(&p, None);
                            self.spawn_clear_nomination(p);
                        }
                        nominated = Some(n.clone());
                        self.set_nomination(&info, Some(n));
                    }
                    for v in r.victims {
                        self.spawn_preempt(
                            v,
                            info.clone(),
                            r.nominated_node.clone().unwrap_or_default(),
                        );
                    }
                }
                self.queue.unschedulable(&info.key);
                self.spawn_failure(info, "Unschedulable", error.message(), nominated);
            }
            Outcome::Error(e) => {
                self.queue.error(info.clone());
                self.spawn_failure(info, "SchedulerError", e, None);
            }
        }
        true
    }

    fn spawn_bind(&self, info: Arc<PodInfo>, node: String) {
        let client = self.client.clone();
        let sem = self.binds.clone();
        let tx = self.tx.clone();
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let api: Api<Pod> = Api::namespaced(client, &info.namespace);
            let binding = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": info.name, "namespace": info.namespace, "uid": info.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            });
            let res: Result<serde_json::Value, kube::Error> = api
                .create_subresource("binding", &info.name, &PostParams::default(), &binding)
                .await;
            drop(_permit);
            match res {
                Ok(_) => {
                    let ev = KEvent {
                        type_: EventType::Normal,
                        reason: "Scheduled".into(),
                        note: Some(format!(
                            "Successfully assigned {}/{} to {}",
                            info.namespace, info.name, node
                        )),
                        action: "Binding".into(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&ev, &info.pod.object_ref(&())).await {
                        tracing::debug!(error = %e, "publishing Scheduled event");
                    }
                }
                Err(e) => {
                    let gone = matches!(&e, kube::Error::Api(s) if s.code == 404);
                    let _ = tx.send(Msg::BindFailed(info, e.to_string(), gone));
                }
            }
        });
    }

    fn spawn_failure(
        &self,
        info: Arc<PodInfo>,
        reason: &'static str,
        message: String,
        nominated: Option<String>,
    ) {
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            let ev = KEvent {
                type_: EventType::Warning,
                reason: "FailedScheduling".into(),
                note: Some(message.clone()),
                action: "Scheduling".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&ev, &info.pod.object_ref(&())).await {
                tracing::debug!(error = %e, "publishing FailedScheduling event");
            }
            let status = info.pod.status.as_ref();
            let current = status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
            let same_condition = current.is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some(reason)
                    && c.message.as_deref() == Some(message.as_str())
            });
            let old_nnn = status.and_then(|s| s.nominated_node_name.clone());
            let nnn_changed = match &nominated {
                None => false,
                Some(n) => old_nnn.as_deref().unwrap_or("") != n,
            };
            if same_condition && !nnn_changed {
                return;
            }
            let transition = match current {
                Some(c) if c.status == "False" => c
                    .last_transition_time
                    .as_ref()
                    .map(|t| serde_json::to_value(t).unwrap_or_default()),
                _ => None,
            }
            .unwrap_or_else(|| {
                serde_json::Value::String(
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                )
            });
            let mut st = serde_json::json!({
                "conditions": [{
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": null,
                    "lastTransitionTime": transition,
                }]
            });
            if let Some(n) = nominated {
                st["nominatedNodeName"] = if n.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::Value::String(n)
                };
            }
            let api: Api<Pod> = Api::namespaced(client, &info.namespace);
            if let Err(e) = api
                .patch_status(
                    &info.name,
                    &PatchParams::default(),
                    &Patch::Strategic(serde_json::json!({"status": st})),
                )
                .await
            {
                tracing::debug!(pod = %info.key, error = %e, "updating PodScheduled condition");
            }
        });
    }

    fn spawn_clear_nomination(&self, pod: Arc<PodInfo>) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        tokio::spawn(async move {
            let patch = serde_json::json!({"status": {"nominatedNodeName": null}});
            if let Err(e) = api
                .patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                tracing::debug!(pod = %pod.key, error = %e, "clearing nominatedNodeName");
            }
        });
    }

    fn spawn_preempt(&self, victim: Arc<PodInfo>, preemptor: Arc<PodInfo>, node: String) {
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        let scheduler = preemptor
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_else(|| crate::config::DEFAULT_SCHEDULER_NAME.into());
        tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, &victim.namespace);
            let cond = serde_json::json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": format!("{scheduler}: preempting to accommodate a higher priority pod"),
                "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }]}});
            let _ = api
                .patch_status(
                    &victim.name,
                    &PatchParams::default(),
                    &Patch::Strategic(cond),
                )
                .await;
            if let Err(e) = api.delete(&victim.name, &DeleteParams::default()).await {
                tracing::debug!(pod = %victim.key, error = %e, "deleting preemption victim");
                return;
            }
            let ev = KEvent {
                type_: EventType::Normal,
                reason: "Preempted".into(),
                note: Some(format!(
                    "Preempted by pod {} on node {}",
                    preemptor.uid, node
                )),
                action: "Preempting".into(),
                secondary: Some(preemptor.pod.object_ref(&())),
            };
            let _ = recorder.publish(&ev, &victim.pod.object_ref(&())).await;
        });
    }
}

/// Runs the scheduler until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let frameworks: HashMap<String, (Framework, Algorithm)> = config
        .frameworks()?
        .into_iter()
        .map(|f| (f.scheduler_name.clone(), (f, Algorithm::default())))
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watch_pods =
        watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let handles = vec![
        spawn_watch(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            Kind::Node,
            ns_key,
            |n| Some(Obj::Node(Box::new(n))),
            tx.clone(),
        ),
        spawn_watch(
            Api::<Pod>::all(client.clone()),
            watch_pods,
            Kind::Pod,
            ns_key,
            |p| Some(Obj::Pod(Box::new(p))),
            tx.clone(),
        ),
        spawn_watch(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            Kind::Namespace,
            ns_key,
            |n| Some(Obj::Namespace(Box::new(n))),
            tx.clone(),
        ),
        spawn_watch(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            Kind::Owner,
            |o| format!("Service/{}", ns_key(o)),
            |o| {
                let m = o.spec.and_then(|s| s.selector)?;
                owner(
                    "Service",
                    o.metadata.namespace.as_ref(),
                    o.metadata.name.as_ref(),
                    Selector::from_map(&m),
                    Some(m),
                )
            },
            tx.clone(),
        ),
        spawn_watch(
            Api::<ReplicationController>::all(client.clone()),
            watcher::Config::default(),
            Kind::Owner,
            |o| format!("ReplicationController/{}", ns_key(o)),
            |o| {
                let m = o.spec.and_then(|s| s.selector)?;
                owner(
                    "ReplicationController",
                    o.metadata.namespace.as_ref(),
                    o.metadata.name.as_ref(),
                    Selector::from_map(&m),
                    Some(m),
                )
            },
            tx.clone(),
        ),
        spawn_watch(
            Api::<ReplicaSet>::all(client.clone()),
            watcher::Config::default(),
            Kind::Owner,
            |o| format!("ReplicaSet/{}", ns_key(o)),
            |o| {
                let s = Selector::from_label_selector(o.spec.as_ref().map(|s| &s.selector));
                owner(
                    "ReplicaSet",
                    o.metadata.namespace.as_ref(),
                    o.metadata.name.as_ref(),
                    s,
                    None,
                )
            },
            tx.clone(),
        ),
        spawn_watch(
            Api::<StatefulSet>::all(client.clone()),
            watcher::Config::default(),
            Kind::Owner,
            |o| format!("StatefulSet/{}", ns_key(o)),
            |o| {
                let s = Selector::from_label_selector(o.spec.as_ref().map(|s| &s.selector));
                owner(
                    "StatefulSet",
                    o.metadata.namespace.as_ref(),
                    o.metadata.name.as_ref(),
                    s,
                    None,
                )
            },
            tx.clone(),
        ),
    ];
    let recorder = EventRecorder::new(
        client.clone(),
        Reporter {
            controller: crate::config::DEFAULT_SCHEDULER_NAME.into(),
            instance: None,
        },
    );
    let mut lp = Loop {
        client,
        frameworks,
        snapshot: Snapshot::default(),
        queue: SchedulingQueue::new(config.initial_backoff(), config.max_backoff()),
        assumed: HashSet::new(),
        nominations: HashMap::new(),
        synced: HashSet::new(),
        binds: Arc::new(Semaphore::new(config.parallelism.unwrap_or(16).max(1) * 8)),
        recorder,
        tx,
    };
    tokio::pin!(shutdown);
    let mut last_flush = Instant::now();
    loop {
        while let Ok(m) = rx.try_recv() {
            lp.handle(m);
        }
        if last_flush.elapsed() >= Duration::from_secs(1) {
            lp.queue.flush(Instant::now());
            last_flush = Instant::now();
        }
        if lp.ready() {
            // Schedule a batch, then let watch events and binds in.
            let mut did = 0;
            while did < 64 && lp.schedule_one() {
                did += 1;
            }
            if did > 0 {
                tokio::task::yield_now().await;
                continue;
            }
        }
        let wake = lp
            .queue
            .next_backoff()
            .map(|t| t.min(Instant::now() + Duration::from_secs(1)))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => lp.handle(m),
                None => break,
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                lp.queue.flush(Instant::now());
                last_flush = Instant::now();
            }
            _ = &mut shutdown => break,
        }
    }
    for h in handles {
        h.abort();
    }
    Ok(())
}
