//! Pods bound to this node: one worker per pod drives its sandbox and containers through CRI
//! towards the spec, reads their state from the shared relist ([`crate::pleg`]), runs probes, writes `pods/status`, and on deletion stops the pod within its grace period and
//! removes it from the API.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use futures::StreamExt;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, LifecycleHandler, ObjectReference, Pod, PodCondition,
    PodIP, PodStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::probe::{self, Kind};
use crate::status::{self, Backoff};
use crate::{env, volume, Context};

use crate::pleg::LABEL_POD_UID;
const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// How often a pod worker syncs when nothing else wakes it.
const RELIST: Duration = Duration::from_secs(1);

/// Watches the pods bound to this node and runs a worker for each.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    // Managed fields are most of a pod's size and the agent never reads them.
    let mut stream = watcher(api, cfg)
        .default_backoff()
        .modify(|p| p.metadata.managed_fields = None)
        .boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut orphans_checked = false;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("watching pods: {e}");
                continue;
            }
        };
        match ev {
            watcher::Event::Init => seen.clear(),
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                // Mirror pods stand for static pods, which `staticpods` runs from their files.
                if crate::staticpods::is_mirror_pod(&p) {
                    continue;
                }
                let Some(uid) = p.metadata.uid.clone() else {
                    continue;
                };
                seen.insert(uid.clone());
                match workers.get(&uid) {
                    Some(tx) if !tx.is_closed() => {
                        tx.send_replace(Some(p));
                    }
                    _ => {
                        let (tx, rx) = watch::channel(Some(p));
                        tokio::spawn(Worker::new(ctx.clone()).run(rx));
                        workers.insert(uid, tx);
                    }
                }
            }
            watcher::Event::Delete(p) => {
                if let Some(tx) = p.metadata.uid.as_ref().and_then(|u| workers.remove(u)) {
                    tx.send_replace(None);
                }
            }
            watcher::Event::InitDone => {
                workers.retain(|uid, tx| {
                    if seen.contains(uid) {
                        return true;
                    }
                    tx.send_replace(None);
                    false
                });
                if !orphans_checked {
                    orphans_checked = true;
                    let ctx = ctx.clone();
                    let known = seen.clone();
                    tokio::spawn(async move {
                        if let Err(e) = remove_orphans(&ctx, &known).await {
                            tracing::warn!("removing orphaned pods: {e:#}");
                        }
                    });
                }
            }
        }
    }
}

/// The sandboxes and containers of one pod, listed now.
async fn list_pod(
    rt: &mut k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    uid: &str,
) -> Result<(Vec<cri::PodSandbox>, Vec<cri::Container>)> {
    let label = HashMap::from([(LABEL_POD_UID.to_string(), uid.to_string())]);
    let sandboxes = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: label.clone(),
                ..Default::default()
            }),
        })
        .await
        .context("list pod sandboxes")?
        .into_inner()
        .items;
    let containers = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: label,
                ..Default::default()
            }),
        })
        .await
        .context("list containers")?
        .into_inner()
        .containers;
    Ok((sandboxes, containers))
}

/// Stops and removes sandboxes of pods that no longer exist (deleted while the agent was down).
async fn remove_orphans(ctx: &Arc<Context>, known: &HashSet<String>) -> Result<()> {
    let sandboxes = ctx
        .runtime
        .cri()
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    let orphans: HashMap<String, cri::PodSandbox> = sandboxes
        .into_iter()
        .filter(|s| !crate::staticpods::is_static_sandbox(&s.annotations))
        .filter_map(|s| Some((s.labels.get(LABEL_POD_UID)?.clone(), s)))
        .filter(|(u, _)| !known.contains(u))
        .collect();
    for (uid, sb) in orphans {
        tracing::info!(%uid, "removing pod that no longer exists");
        let meta = sb.metadata.unwrap_or_default();
        remove_pod(ctx, &uid, &meta.namespace, &meta.name).await;
    }
    Ok(())
}

/// Stops and removes everything a pod left on the node (containers, sandboxes, host files).
pub(crate) async fn remove_pod(ctx: &Arc<Context>, uid: &str, ns: &str, name: &str) {
    let w = Worker::new(ctx.clone());
    w.kill_all(uid, None, Duration::from_secs(2)).await;
    w.cleanup_host(uid, ns, name);
}

/// Runs a pod worker fed by `rx` (`None` stops the pod; a pod with a deletion timestamp
/// terminates it gracefully); the task ends once the pod is stopped. A pod sent without a
/// status makes the worker write its status again (its target object was re-created).
pub(crate) fn spawn_worker(
    ctx: Arc<Context>,
    rx: watch::Receiver<Option<Pod>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(Worker::new(ctx).run(rx))
}

fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn nanos_to_time(n: i64) -> Option<Time> {
    (n > 0)
        .then(|| {
            k8s_openapi::jiff::Timestamp::from_nanosecond(n as i128)
                .ok()
                .map(Time)
        })
        .flatten()
}

fn nanos_to_system(n: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(n.max(0) as u64)
}

fn object_ref(pod: &Pod, field: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path: field,
    }
}

fn field_path(c: &Container, init: bool) -> Option<String> {
    Some(if init {
        format!("spec.initContainers{{{}}}", c.name)
    } else {
        format!("spec.containers{{{}}}", c.name)
    })
}

/// The runtime's view of one container instance.
#[derive(Clone, Debug)]
struct Observed {
    id: String,
    attempt: u32,
    state: i32,
    status: Option<cri::ContainerStatus>,
}

impl Observed {
    fn running(&self) -> bool {
        self.state == cri::ContainerState::ContainerRunning as i32
    }
    fn exited(&self) -> bool {
        self.state == cri::ContainerState::ContainerExited as i32
    }
    fn exit_code(&self) -> i32 {
        self.status.as_ref().map_or(0, |s| s.exit_code)
    }
    fn finished(&self) -> SystemTime {
        self.status
            .as_ref()
            .map_or(SystemTime::now(), |s| nanos_to_system(s.finished_at))
    }
}

/// Instances of one container name, newest first.
type ByName = HashMap<String, Vec<Observed>>;

/// One pod's worker state (kept across syncs).
struct Worker {
    ctx: Arc<Context>,
    backoff: Backoff,
    results: probe::Results,
    probe_tasks: HashMap<(String, Kind), tokio::task::JoinHandle<()>>,
    wake: Arc<Notify>,
    /// Why a container is waiting (image pull, config error), by container name.
    waiting: HashMap<String, (String, String)>,
    /// CRI statuses of exited containers (final) and started-at of running ones, by ID.
    statuses: HashMap<String, cri::ContainerStatus>,
    last_status: Option<serde_json::Value>,
    volumes: BTreeMap<String, PathBuf>,
    volumes_at: Option<tokio::time::Instant>,
    pod_ip: String,
    /// Containers killed for a failed liveness/startup probe (no double kill).
    killed: HashSet<String>,
    /// When this worker last changed the runtime: its next observation must come from a
    /// relist started after that.
    wrote_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// The IP of the sandbox last asked for its status (an IP never changes for one sandbox).
    sandbox_ip: Option<(String, String)>,
}

impl Worker {
    fn new(ctx: Arc<Context>) -> Worker {
        Worker {
            ctx,
            backoff: Backoff::default(),
            results: Default::default(),
            probe_tasks: HashMap::new(),
            wake: Arc::new(Notify::new()),
            waiting: HashMap::new(),
            statuses: HashMap::new(),
            last_status: None,
            volumes: BTreeMap::new(),
            volumes_at: None,
            pod_ip: String::new(),
            killed: HashSet::new(),
            wrote_at: std::sync::Mutex::new(None),
            sandbox_ip: None,
        }
    }

    /// Records a change to the runtime (see `wrote_at`).
    fn wrote(&self) {
        *self.wrote_at.lock().expect("wrote_at") = Some(tokio::time::Instant::now());
    }

    async fn run(mut self, rx: watch::Receiver<Option<Pod>>) {
        let uid = rx
            .borrow()
            .as_ref()
            .and_then(|p| p.metadata.uid.clone())
            .unwrap_or_default();
        self.ctx.pleg.watch(&uid, self.wake.clone());
        self.run_until_stopped(rx).await;
        self.ctx.pleg.unwatch(&uid);
    }

    async fn run_until_stopped(&mut self, mut rx: watch::Receiver<Option<Pod>>) {
        let mut last: Option<Pod> = None;
        loop {
            let pod = rx.borrow_and_update().clone();
            let next = match pod {
                None => {
                    // Gone from the API without passing through graceful deletion here.
                    if let Some(p) = last.take() {
                        let uid = p.metadata.uid.clone().unwrap_or_default();
                        self.kill_all(&uid, Some(&p), Duration::from_secs(2)).await;
                        self.cleanup_host(
                            &uid,
                            p.metadata.namespace.as_deref().unwrap_or(""),
                            p.metadata.name.as_deref().unwrap_or(""),
                        );
                    }
                    self.stop_probes(None);
                    return;
                }
                Some(p) if p.metadata.deletion_timestamp.is_some() => {
                    if let Err(e) = Box::pin(self.terminate(&p)).await {
                        tracing::warn!(pod = ?p.metadata.name, "terminating pod: {e:#}");
                        last = Some(p);
                        tokio::time::sleep(RELIST).await;
                        continue;
                    }
                    self.stop_probes(None);
                    return;
                }
                Some(p) => {
                    if p.status.is_none() {
                        self.last_status = None;
                    }
                    // Boxed: the sync state machine is large and only alive while syncing,
                    // so an idle worker holds a small future.
                    let r = Box::pin(self.sync(&p)).await;
                    last = Some(p);
                    match r {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!(pod = ?last.as_ref().and_then(|p| p.metadata.name.clone()), "syncing pod: {e:#}");
                            RELIST
                        }
                    }
                }
            };
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(next) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    fn event(&self, pod: &Pod, field: Option<String>, type_: &str, reason: &str, msg: String) {
        self.ctx
            .events
            .event(object_ref(pod, field), type_, reason, msg);
    }

    fn agent_dir(&self) -> PathBuf {
        self.ctx.config.agent_dir()
    }

    fn log_dir(&self, ns: &str, name: &str, uid: &str) -> PathBuf {
        self.agent_dir()
            .join("logs")
            .join(format!("{ns}_{name}_{uid}"))
    }

    /// This pod's sandboxes and containers, from a relist recent enough and started after this
    /// worker's last change to the runtime.
    async fn observe(&mut self, uid: &str) -> Result<(Vec<cri::PodSandbox>, ByName)> {
        let now = tokio::time::Instant::now();
        // Changes are announced by the relister's wake-ups; a periodic sync may read a relist
        // up to two periods old.
        let oldest = now.checked_sub(2 * crate::pleg::PERIOD).unwrap_or(now);
        let wrote = *self.wrote_at.lock().expect("wrote_at");
        let mut rt = self.ctx.runtime.cri();
        let (sandboxes, containers) = match wrote {
            Some(w) if w >= oldest => match self.ctx.pleg.latest_since(w) {
                Some(s) => s.of_pod(uid),
                None => list_pod(&mut rt, uid).await?,
            },
            _ => self.ctx.pleg.snapshot(oldest).await?.of_pod(uid),
        };
        let mut by: ByName = HashMap::new();
        let live: HashSet<String> = containers.iter().map(|c| c.id.clone()).collect();
        self.statuses.retain(|id, _| live.contains(id));
        for c in containers {
            let name = c
                .labels
                .get(LABEL_CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            let cached = self
                .statuses
                .get(&c.id)
                .filter(|s| s.state == c.state)
                .cloned();
            let status = match cached {
                Some(s) => Some(s),
                None if c.state != cri::ContainerState::ContainerCreated as i32 => {
                    match rt
                        .container_status(cri::ContainerStatusRequest {
                            container_id: c.id.clone(),
                            verbose: false,
                        })
                        .await
                    {
                        Ok(r) => r.into_inner().status.inspect(|s| {
                            self.statuses.insert(c.id.clone(), s.clone());
                        }),
                        Err(_) => None,
                    }
                }
                None => None,
            };
            by.entry(name).or_default().push(Observed {
                id: c.id,
                attempt: c.metadata.map_or(0, |m| m.attempt),
                state: status.as_ref().map_or(c.state, |s| s.state),
                status,
            });
        }
        for v in by.values_mut() {
            v.sort_by_key(|o| std::cmp::Reverse(o.attempt));
        }
        Ok((sandboxes, by))
    }

    /// One reconciliation pass; returns when to come back at the latest.
    async fn sync(&mut self, pod: &Pod) -> Result<Duration> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let (sandboxes, by) = self.observe(&uid).await?;
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            // Terminal pods never run again: make sure nothing is left running.
            self.kill_all(&uid, Some(pod), Duration::from_secs(2)).await;
            return Ok(Duration::from_secs(30));
        }
        let mut next = RELIST;
        let ready = sandboxes
            .iter()
            .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
            .max_by_key(|s| s.created_at)
            .cloned();
        let refresh = self
            .volumes_at
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10));
        if refresh {
            // Volumes need only the downward API's values, not configMaps or service links.
            let src = self.base_sources();
            match volume::setup(
                &self.ctx.client,
                pod,
                &volume::pod_dir(&self.agent_dir(), &uid),
                &src,
            )
            .await
            {
                Ok(v) => {
                    self.volumes = v;
                    self.volumes_at = Some(tokio::time::Instant::now());
                }
                Err(msg) => {
                    self.event(pod, None, "Warning", "FailedMount", msg);
                    if ready.is_none() {
                        self.write_status(pod, &spec, None, &by, false, false)
                            .await?;
                        return Ok(Duration::from_secs(2));
                    }
                }
            }
        }
        let sandbox_cfg;
        let sandbox_id = match &ready {
            Some(sb) => {
                sandbox_cfg =
                    self.sandbox_config(pod, sb.metadata.as_ref().map_or(0, |m| m.attempt));
                sb.id.clone()
            }
            None => {
                // Terminal according to the restart policy: do not bring the sandbox back.
                if !sandboxes.is_empty() && self.all_done(&spec, &by) {
                    self.write_status(pod, &spec, None, &by, true, false)
                        .await?;
                    return Ok(Duration::from_secs(30));
                }
                let attempt = sandboxes
                    .iter()
                    .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
                    .max()
                    .unwrap_or(0);
                self.wrote();
                for sb in &sandboxes {
                    let _ = self
                        .ctx
                        .runtime
                        .cri()
                        .stop_pod_sandbox(cri::StopPodSandboxRequest {
                            pod_sandbox_id: sb.id.clone(),
                        })
                        .await;
                }
                sandbox_cfg = self.sandbox_config(pod, attempt);
                std::fs::create_dir_all(&sandbox_cfg.log_directory)?;
                let r = self
                    .ctx
                    .runtime
                    .cri()
                    .run_pod_sandbox(cri::RunPodSandboxRequest {
                        config: Some(sandbox_cfg.clone()),
                        runtime_handler: String::new(),
                    })
                    .await;
                match r {
                    Ok(r) => r.into_inner().pod_sandbox_id,
                    Err(e) => {
                        self.event(
                            pod,
                            None,
                            "Warning",
                            "FailedCreatePodSandBox",
                            format!("Failed to create pod sandbox: {}", e.message()),
                        );
                        self.write_status(pod, &spec, None, &by, false, false)
                            .await?;
                        return Ok(Duration::from_secs(2));
                    }
                }
            }
        };
        let host_network = spec.host_network == Some(true);
        self.pod_ip = if host_network {
            self.ctx.node_ip.to_string()
        } else {
            match &self.sandbox_ip {
                Some((id, ip)) if *id == sandbox_id => ip.clone(),
                _ => {
                    let ip = self
                        .ctx
                        .runtime
                        .cri()
                        .pod_sandbox_status(cri::PodSandboxStatusRequest {
                            pod_sandbox_id: sandbox_id.clone(),
                            verbose: false,
                        })
                        .await?
                        .into_inner()
                        .status
                        .and_then(|s| s.network)
                        .map(|n| n.ip)
                        .unwrap_or_default();
                    self.sandbox_ip = Some((sandbox_id.clone(), ip.clone()));
                    ip
                }
            }
        };
        self.write_hosts_file(pod)?;

        // Init containers, in order; restartable ones (sidecars) keep running.
        let mut initialized = true;
        let mut init_failed = false;
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        for c in spec.init_containers.iter().flatten() {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            let latest = by.get(&c.name).and_then(|v| v.first()).cloned();
            match latest {
                Some(o) if o.running() => {
                    if sidecar {
                        self.ensure_probes(pod, c, &o);
                        if let Some(d) = self.check_liveness(pod, c, &o, true).await {
                            next = next.min(d);
                        }
                        if c.startup_probe.is_some()
                            && self.result(&o.id, Kind::Startup) != Some(true)
                        {
                            initialized = false;
                            break;
                        }
                        continue;
                    }
                    initialized = false;
                    break;
                }
                Some(o) if o.exited() && o.exit_code() == 0 && !sidecar => continue,
                Some(o) if o.exited() && !sidecar && policy == "Never" => {
                    let _ = o;
                    init_failed = true;
                    initialized = false;
                    break;
                }
                other => {
                    let d = self
                        .start_or_backoff(pod, c, true, other.as_ref(), &sandbox_id, &sandbox_cfg)
                        .await;
                    next = next.min(d);
                    if !sidecar || c.startup_probe.is_some() {
                        initialized = false;
                        break;
                    }
                }
            }
        }
        if initialized {
            for c in &spec.containers {
                let latest = by.get(&c.name).and_then(|v| v.first()).cloned();
                match latest {
                    Some(o) if o.running() => {
                        self.ensure_probes(pod, c, &o);
                        if let Some(d) = self.check_liveness(pod, c, &o, false).await {
                            next = next.min(d);
                        }
                    }
                    Some(o) if o.exited() => {
                        let restart = match policy.as_str() {
                            "Never" => false,
                            "OnFailure" => o.exit_code() != 0,
                            _ => true,
                        };
                        if restart {
                            let d = self
                                .start_or_backoff(
                                    pod,
                                    c,
                                    false,
                                    Some(&o),
                                    &sandbox_id,
                                    &sandbox_cfg,
                                )
                                .await;
                            next = next.min(d);
                        }
                    }
                    other => {
                        let d = self
                            .start_or_backoff(
                                pod,
                                c,
                                false,
                                other.as_ref(),
                                &sandbox_id,
                                &sandbox_cfg,
                            )
                            .await;
                        next = next.min(d);
                    }
                }
            }
        }
        // Started containers change the picture: observe again before reporting.
        let (_, by) = self.observe(&uid).await?;
        let terminal = self
            .write_status(pod, &spec, Some(&sandbox_id), &by, initialized, init_failed)
            .await?;
        if terminal {
            self.kill_all(
                &uid,
                Some(pod),
                Duration::from_secs(
                    spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64
                ),
            )
            .await;
        }
        Ok(next)
    }

    /// Whether every regular container ran to an end its restart policy does not restart.
    fn all_done(&self, spec: &k8s_openapi::api::core::v1::PodSpec, by: &ByName) -> bool {
        let policy = spec.restart_policy.as_deref().unwrap_or("Always");
        policy != "Always"
            && spec.containers.iter().all(|c| {
                by.get(&c.name)
                    .and_then(|v| v.first())
                    .is_some_and(|o| o.exited() && (policy == "Never" || o.exit_code() == 0))
            })
    }

    fn result(&self, id: &str, kind: Kind) -> Option<bool> {
        self.results
            .lock()
            .expect("probe results")
            .get(&(id.to_string(), kind))
            .copied()
    }

    fn ensure_probes(&mut self, pod: &Pod, c: &Container, o: &Observed) {
        for (kind, probe) in [
            (Kind::Startup, &c.startup_probe),
            (Kind::Liveness, &c.liveness_probe),
            (Kind::Readiness, &c.readiness_probe),
        ] {
            let Some(probe) = probe.clone() else { continue };
            let key = (o.id.clone(), kind);
            if self.probe_tasks.contains_key(&key) {
                continue;
            }
            // Liveness and readiness wait for the startup probe to succeed.
            if kind != Kind::Startup
                && c.startup_probe.is_some()
                && self.result(&o.id, Kind::Startup) != Some(true)
            {
                continue;
            }
            let events = self.ctx.events.clone();
            let obj = object_ref(pod, field_path(c, false));
            let on_failure = move |out: String| {
                events.event(
                    obj.clone(),
                    "Warning",
                    "Unhealthy",
                    format!("{} probe failed: {}", kind.name(), out.trim_end()),
                );
            };
            let task = tokio::spawn(probe::run(
                self.ctx.runtime.clone(),
                kind,
                probe,
                c.clone(),
                o.id.clone(),
                self.pod_ip.clone(),
                self.results.clone(),
                self.wake.clone(),
                on_failure,
            ));
            self.probe_tasks.insert(key, task);
        }
    }

    /// Stops the probes of one container (or all).
    fn stop_probes(&mut self, id: Option<&str>) {
        self.probe_tasks.retain(|(cid, _), t| {
            if id.is_none_or(|i| i == cid) {
                t.abort();
                false
            } else {
                true
            }
        });
        if let Some(id) = id {
            self.results
                .lock()
                .expect("probe results")
                .retain(|(cid, _), _| cid != id);
        }
    }

    /// Kills a running container whose liveness or startup probe failed.
    async fn check_liveness(
        &mut self,
        pod: &Pod,
        c: &Container,
        o: &Observed,
        init: bool,
    ) -> Option<Duration> {
        let failed = self.result(&o.id, Kind::Liveness) == Some(false)
            || self.result(&o.id, Kind::Startup) == Some(false);
        if !failed || self.killed.contains(&o.id) {
            return None;
        }
        self.killed.insert(o.id.clone());
        let which = if self.result(&o.id, Kind::Startup) == Some(false) {
            "startup"
        } else {
            "liveness"
        };
        self.event(
            pod,
            field_path(c, init),
            "Normal",
            "Killing",
            format!(
                "Container {} failed {which} probe, will be restarted",
                c.name
            ),
        );
        let grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        self.stop_container(pod, c, &o.id, Duration::from_secs(grace.max(0) as u64))
            .await;
        self.stop_probes(Some(&o.id));
        Some(Duration::ZERO)
    }

    /// Starts a container (again), honouring the crash-loop backoff; returns when to look again.
    async fn start_or_backoff(
        &mut self,
        pod: &Pod,
        c: &Container,
        init: bool,
        previous: Option<&Observed>,
        sandbox_id: &str,
        sandbox_cfg: &cri::PodSandboxConfig,
    ) -> Duration {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = format!("{uid}/{}", c.name);
        if let Some(o) = previous.filter(|o| o.exited()) {
            if let Some((left, backoff)) =
                self.backoff
                    .in_backoff(&key, o.finished(), SystemTime::now())
            {
                let msg = format!(
                    "back-off {} restarting failed container={} pod={}",
                    fmt_duration(backoff),
                    c.name,
                    status::pod_full_name(pod)
                );
                let first = self
                    .waiting
                    .get(&c.name)
                    .is_none_or(|(r, _)| r != "CrashLoopBackOff");
                if first {
                    self.event(
                        pod,
                        field_path(c, init),
                        "Warning",
                        "BackOff",
                        format!(
                            "Back-off restarting failed container {} in pod {}",
                            c.name,
                            status::pod_full_name(pod)
                        ),
                    );
                }
                self.waiting
                    .insert(c.name.clone(), ("CrashLoopBackOff".into(), msg));
                return left;
            }
            self.backoff.next(&key, SystemTime::now());
            self.stop_probes(Some(&o.id));
        }
        let attempt = previous.map_or(0, |o| o.attempt + 1);
        match self
            .start_container(pod, c, init, attempt, sandbox_id, sandbox_cfg)
            .await
        {
            Ok(()) => {
                self.waiting.remove(&c.name);
                RELIST
            }
            Err((reason, msg)) => {
                self.waiting.insert(c.name.clone(), (reason, msg));
                Duration::from_secs(2)
            }
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Upstream kubelet's default masked and read-only paths for unprivileged containers.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn quantity(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    k: &str,
) -> Option<i128> {
    map.and_then(|m| m.get(k))
        .and_then(|q| skiff_api::validation::parse_quantity(&q.0).ok())
        .map(|q| q.nanos)
}

/// CPU and memory requests and limits as cgroup settings, as the kubelet maps them.
pub fn linux_resources(
    c: &Container,
    qos: &str,
    memory_capacity: i64,
) -> cri::LinuxContainerResources {
    let r = c.resources.as_ref();
    let req = r.and_then(|r| r.requests.as_ref());
    let lim = r.and_then(|r| r.limits.as_ref());
    let cpu_req_m = quantity(req, "cpu")
        .or(quantity(lim, "cpu"))
        .map(|n| (n / 1_000_000) as i64);
    let cpu_lim_m = quantity(lim, "cpu").map(|n| (n / 1_000_000) as i64);
    let mem_req = quantity(req, "memory")
        .or(quantity(lim, "memory"))
        .map(|n| (n / 1_000_000_000) as i64);
    let mem_lim = quantity(lim, "memory").map(|n| (n / 1_000_000_000) as i64);
    let shares = cpu_req_m.map_or(2, |m| (m * 1024 / 1000).max(2));
    let period = 100_000;
    let quota = cpu_lim_m.map_or(0, |m| (m * period / 1000).max(1000));
    let oom = match qos {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let adj = 1000 - (1000 * mem_req.unwrap_or(0)) / memory_capacity.max(1);
            adj.clamp(2, 999)
        }
    };
    cri::LinuxContainerResources {
        cpu_period: if quota > 0 { period } else { 0 },
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: mem_lim.unwrap_or(0),
        oom_score_adj: oom,
        ..Default::default()
    }
}

/// The pod's DNS settings for its dnsPolicy and dnsConfig, as upstream computes them.
pub fn dns_config(
    pod: &Pod,
    cluster_dns: &[std::net::IpAddr],
    domain: &str,
    host_resolv: &str,
) -> cri::DnsConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut policy = spec
        .dns_policy
        .clone()
        .unwrap_or_else(|| "ClusterFirst".into());
    if policy == "ClusterFirst" && spec.host_network == Some(true) {
        policy = "Default".into();
    }
    let (mut host_servers, mut host_search, mut host_opts) = (vec![], vec![], vec![]);
    for line in host_resolv.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => host_servers.extend(f.next().map(String::from)),
            Some("search") => host_search = f.map(String::from).collect(),
            Some("options") => host_opts = f.map(String::from).collect(),
            _ => {}
        }
    }
    let mut cfg = match policy.as_str() {
        "None" => cri::DnsConfig::default(),
        "Default" => cri::DnsConfig {
            servers: host_servers,
            searches: host_search,
            options: host_opts,
        },
        _ => {
            let mut searches = vec![
                format!("{ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ];
            searches.extend(host_search);
            cri::DnsConfig {
                servers: cluster_dns.iter().map(|i| i.to_string()).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
    };
    if let Some(dc) = &spec.dns_config {
        cfg.servers.extend(dc.nameservers.iter().flatten().cloned());
        for s in dc.searches.iter().flatten() {
            if !cfg.searches.contains(s) {
                cfg.searches.push(s.clone());
            }
        }
        for o in dc.options.iter().flatten() {
            let text = match &o.value {
                Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let name = o.name.clone().unwrap_or_default();
            cfg.options.retain(|x| x.split(':').next() != Some(&name));
            cfg.options.push(text);
        }
    }
    cfg.searches.truncate(32);
    cfg
}

/// The kubelet-managed /etc/hosts of a pod.
pub fn hosts_file(pod: &Pod, pod_ip: &str) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let hostname = spec
        .hostname
        .clone()
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    if !pod_ip.is_empty() {
        match &spec.subdomain {
            Some(sub) if !sub.is_empty() => {
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                s.push_str(&format!(
                    "{pod_ip}\t{hostname}.{sub}.{ns}.svc.cluster.local\t{hostname}\n"
                ));
            }
            _ => s.push_str(&format!("{pod_ip}\t{hostname}\n")),
        }
    }
    if let Some(aliases) = &spec.host_aliases {
        s.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            s.push_str(&format!(
                "{}\t{}\n",
                a.ip,
                a.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
    }
    s
}

impl Worker {
    /// The ConfigMaps, Secrets and node facts env resolution needs.
    /// The node's and pod's own values (addresses, allocatable).
    fn base_sources(&self) -> env::Sources {
        env::Sources {
            host_ip: self.ctx.node_ip.to_string(),
            pod_ips: if self.pod_ip.is_empty() {
                vec![]
            } else {
                vec![self.pod_ip.clone()]
            },
            allocatable: Some(self.ctx.allocatable),
            ..Default::default()
        }
    }

    async fn sources(&self, pod: &Pod, cms: &[String], secrets: &[String]) -> env::Sources {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut src = self.base_sources();
        let cm_api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &ns);
        for n in cms {
            if let Ok(Some(cm)) = cm_api.get_opt(n).await {
                src.config_maps.insert(n.clone(), cm);
            }
        }
        let s_api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
        for n in secrets {
            if let Ok(Some(s)) = s_api.get_opt(n).await {
                src.secrets.insert(n.clone(), s);
            }
        }
        if !cms.is_empty()
            || !secrets.is_empty()
            || pod
                .spec
                .as_ref()
                .is_some_and(|s| s.enable_service_links != Some(false))
        {
            src.service_env = self.service_env(&ns, pod).await;
        }
        src
    }

    /// Docker-link-style variables for the services of the namespace (`enableServiceLinks`)
    /// plus the `kubernetes` service's in every pod.
    async fn service_env(&self, ns: &str, pod: &Pod) -> Vec<(String, String)> {
        let mut services: Vec<Service> = Vec::new();
        let links = pod
            .spec
            .as_ref()
            .is_none_or(|s| s.enable_service_links != Some(false));
        if links {
            if let Ok(l) = Api::<Service>::namespaced(self.ctx.client.clone(), ns)
                .list(&ListParams::default())
                .await
            {
                services.extend(l.items);
            }
        }
        if ns != "default" || !links {
            if let Ok(Some(k)) = Api::<Service>::namespaced(self.ctx.client.clone(), "default")
                .get_opt("kubernetes")
                .await
            {
                services.retain(|s| s.metadata.name.as_deref() != Some("kubernetes"));
                services.push(k);
            }
        }
        let mut out = Vec::new();
        for s in services {
            let Some(spec) = s.spec else { continue };
            let ip = spec.cluster_ip.clone().unwrap_or_default();
            if ip.is_empty() || ip == "None" {
                continue;
            }
            let name = s
                .metadata
                .name
                .unwrap_or_default()
                .to_uppercase()
                .replace('-', "_");
            let ports = spec.ports.unwrap_or_default();
            let Some(first) = ports.first() else { continue };
            out.push((format!("{name}_SERVICE_HOST"), ip.clone()));
            out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
            for p in &ports {
                if let Some(pn) = &p.name {
                    out.push((
                        format!(
                            "{name}_SERVICE_PORT_{}",
                            pn.to_uppercase().replace('-', "_")
                        ),
                        p.port.to_string(),
                    ));
                }
            }
            let proto = first
                .protocol
                .clone()
                .unwrap_or_else(|| "TCP".into())
                .to_lowercase();
            out.push((
                format!("{name}_PORT"),
                format!("{proto}://{ip}:{}", first.port),
            ));
            for p in &ports {
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                let prefix = format!("{name}_PORT_{}_{}", p.port, proto);
                out.push((
                    prefix.clone(),
                    format!("{}://{ip}:{}", proto.to_lowercase(), p.port),
                ));
                out.push((format!("{prefix}_PROTO"), proto.to_lowercase()));
                out.push((format!("{prefix}_PORT"), p.port.to_string()));
                out.push((format!("{prefix}_ADDR"), ip.clone()));
            }
        }
        out
    }

    fn sandbox_config(&self, pod: &Pod, attempt: u32) -> cri::PodSandboxConfig {
        let spec = pod.spec.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let host_network = spec.host_network == Some(true);
        let mut labels: HashMap<String, String> = pod
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        labels.insert(LABEL_POD_UID.into(), uid.clone());
        labels.insert(LABEL_POD_NAME.into(), name.clone());
        labels.insert(LABEL_POD_NAMESPACE.into(), ns.clone());
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let mut port_mappings = Vec::new();
        if !host_network {
            for c in &spec.containers {
                for p in c.ports.iter().flatten() {
                    if let Some(hp) = p.host_port.filter(|h| *h > 0) {
                        port_mappings.push(cri::PortMapping {
                            protocol: match p.protocol.as_deref() {
                                Some("UDP") => cri::Protocol::Udp as i32,
                                Some("SCTP") => cri::Protocol::Sctp as i32,
                                _ => cri::Protocol::Tcp as i32,
                            },
                            container_port: p.container_port,
                            host_port: hp,
                            host_ip: p.host_ip.clone().unwrap_or_default(),
                        });
                    }
                }
            }
        }
        let psc = spec.security_context.clone().unwrap_or_default();
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: ns.clone(),
                attempt,
            }),
            hostname: if host_network {
                String::new()
            } else {
                spec.hostname.clone().unwrap_or(name.clone())
            },
            log_directory: self
                .log_dir(&ns, &name, &uid)
                .to_string_lossy()
                .into_owned(),
            dns_config: Some(dns_config(
                pod,
                &self.ctx.config.cluster_dns,
                &self.ctx.config.cluster_domain,
                &host_resolv,
            )),
            port_mappings,
            labels,
            annotations: pod
                .metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent(&uid),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespace_options(&spec)),
                    run_as_user: psc.run_as_user.map(|v| cri::Int64Value { value: v }),
                    run_as_group: psc.run_as_group.map(|v| cri::Int64Value { value: v }),
                    supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                    ..Default::default()
                }),
                sysctls: psc
                    .sysctls
                    .iter()
                    .flatten()
                    .map(|s| (s.name.clone(), s.value.clone()))
                    .collect(),
                ..Default::default()
            }),
            windows: None,
        }
    }

    fn write_hosts_file(&self, pod: &Pod) -> Result<()> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = volume::pod_dir(&self.agent_dir(), &uid);
        std::fs::create_dir_all(&dir)?;
        let content = if pod
            .spec
            .as_ref()
            .is_some_and(|s| s.host_network == Some(true))
        {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            hosts_file(pod, &self.pod_ip)
        };
        let path = dir.join("etc-hosts");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
            std::fs::write(path, content)?;
        }
        Ok(())
    }

    /// Pulls the container's image as its imagePullPolicy asks. Errors are (reason, message).
    async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
        init: bool,
        sandbox_cfg: &cri::PodSandboxConfig,
    ) -> Result<String, (String, String)> {
        let image = c.image.clone().unwrap_or_default();
        let spec = cri::ImageSpec {
            image: image.clone(),
            ..Default::default()
        };
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            if image.contains('@')
                || (image.rsplit('/').next().is_some_and(|l| l.contains(':'))
                    && !image.ends_with(":latest"))
            {
                "IfNotPresent".into()
            } else {
                "Always".into()
            }
        });
        let mut images = self.ctx.runtime.images();
        let present = images
            .image_status(cri::ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().image)
            .map(|i| i.id);
        let fp = field_path(c, init);
        match (policy.as_str(), present) {
            ("Never", Some(id)) | ("IfNotPresent", Some(id)) => {
                self.event(
                    pod,
                    fp,
                    "Normal",
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                );
                return Ok(id);
            }
            ("Never", None) => {
                let msg =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.event(pod, fp, "Warning", "ErrImageNeverPull", msg.clone());
                return Err(("ErrImageNeverPull".into(), msg));
            }
            _ => {}
        }
        self.event(
            pod,
            fp.clone(),
            "Normal",
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        let start = std::time::Instant::now();
        let auths = self.pull_auth(pod, &image).await;
        let attempts: Vec<Option<cri::AuthConfig>> = if auths.is_empty() {
            vec![None]
        } else {
            auths.into_iter().map(Some).collect()
        };
        // Each matching credential in turn until one pulls, as upstream does.
        let mut pulled = Err(tonic::Status::unknown("no pull attempted"));
        for auth in attempts {
            pulled = images
                .pull_image(cri::PullImageRequest {
                    image: Some(spec.clone()),
                    auth,
                    sandbox_config: Some(sandbox_cfg.clone()),
                })
                .await;
            if pulled.is_ok() {
                break;
            }
        }
        match pulled {
            Ok(r) => {
                self.event(
                    pod,
                    fp,
                    "Normal",
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        start.elapsed().as_secs_f64()
                    ),
                );
                Ok(r.into_inner().image_ref)
            }
            Err(e) => {
                let msg = format!(
                    "failed to pull and unpack image \"{image}\": {}",
                    e.message()
                );
                self.event(
                    pod,
                    fp.clone(),
                    "Warning",
                    "Failed",
                    format!("Failed to pull image \"{image}\": {}", e.message()),
                );
                self.event(pod, fp, "Warning", "Failed", "Error: ErrImagePull".into());
                let pulled_before = self
                    .waiting
                    .get(&c.name)
                    .is_some_and(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff");
                Err((
                    if pulled_before {
                        "ImagePullBackOff"
                    } else {
                        "ErrImagePull"
                    }
                    .into(),
                    msg,
                ))
            }
        }
    }

    /// Registry credentials from the pod's imagePullSecrets (`kubernetes.io/dockerconfigjson`
    /// or `.dockercfg`) that apply to the image, in the order to try them (upstream's keyring).
    async fn pull_auth(&self, pod: &Pod, image: &str) -> Vec<cri::AuthConfig> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
        let mut entries = Vec::new();
        let refs = pod.spec.as_ref().and_then(|s| s.image_pull_secrets.clone());
        for r in refs.iter().flatten() {
            if let Ok(Some(s)) = api.get_opt(&r.name).await {
                entries.extend(crate::image::pull_secret_entries(
                    &s.data.unwrap_or_default(),
                ));
            }
        }
        // Like upstream, no server address: CRI then uses the credentials for the image's host.
        crate::image::credentials_for(image, &entries)
            .into_iter()
            .map(|c| cri::AuthConfig {
                username: c.username,
                password: c.password,
                ..Default::default()
            })
            .collect()
    }
}

fn namespace_options(spec: &k8s_openapi::api::core::v1::PodSpec) -> cri::NamespaceOption {
    let mode = |node: bool| {
        if node {
            cri::NamespaceMode::Node as i32
        } else {
            cri::NamespaceMode::Pod as i32
        }
    };
    cri::NamespaceOption {
        network: mode(spec.host_network == Some(true)),
        pid: if spec.host_pid == Some(true) {
            cri::NamespaceMode::Node as i32
        } else if spec.share_process_namespace == Some(true) {
            cri::NamespaceMode::Pod as i32
        } else {
            cri::NamespaceMode::Container as i32
        },
        ipc: mode(spec.host_ipc == Some(true)),
        ..Default::default()
    }
}

/// The pod's cgroup (cgroupfs path, created by runc in every hierarchy).
pub fn cgroup_parent(uid: &str) -> String {
    format!("/skiff/pod{uid}")
}

/// Removes the pod's cgroup directories in every mounted hierarchy (runc leaves them).
pub fn remove_pod_cgroups(uid: &str) {
    let parent = cgroup_parent(uid);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        let (pre, post) = line.split_once(" - ").unwrap_or((line, ""));
        let fstype = post.split(' ').next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let Some(mp) = pre.split(' ').nth(4) else {
            continue;
        };
        remove_dir_tree(&PathBuf::from(format!("{mp}{parent}")));
    }
}

fn remove_dir_tree(p: &std::path::Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dir_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}

impl Worker {
    /// Pulls, creates and starts one container instance, then runs its postStart hook.
    async fn start_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        init: bool,
        attempt: u32,
        sandbox_id: &str,
        sandbox_cfg: &cri::PodSandboxConfig,
    ) -> Result<(), (String, String)> {
        let spec = pod.spec.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let fp = field_path(c, init);
        self.ensure_image(pod, c, init, sandbox_cfg).await?;
        let (cms, secrets) = env::referenced_objects(c);
        let src = self.sources(pod, &cms, &secrets).await;
        let envs = match env::resolve(pod, c, &src) {
            Ok(e) => e,
            Err(msg) => {
                self.event(pod, fp, "Warning", "Failed", format!("Error: {msg}"));
                return Err(("CreateContainerConfigError".into(), msg));
            }
        };
        let pod_dir = volume::pod_dir(&self.agent_dir(), &uid);
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let Some(base) = self.volumes.get(&m.name) else {
                let msg = format!(
                    "cannot find volume \"{}\" to mount into container \"{}\"",
                    m.name, c.name
                );
                return Err(("CreateContainerConfigError".into(), msg));
            };
            let mut host = base.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                host = host.join(sub);
                if !host.exists() {
                    let _ = std::fs::create_dir_all(&host);
                }
            }
            mounts.push(cri::Mount {
                container_path: m.mount_path.clone(),
                host_path: host.to_string_lossy().into_owned(),
                readonly: m.read_only == Some(true),
                propagation: match m.mount_propagation.as_deref() {
                    Some("HostToContainer") => {
                        cri::MountPropagation::PropagationHostToContainer as i32
                    }
                    Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional as i32,
                    _ => cri::MountPropagation::PropagationPrivate as i32,
                },
                ..Default::default()
            });
        }
        if !c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/etc/hosts")
        {
            mounts.push(cri::Mount {
                container_path: "/etc/hosts".into(),
                host_path: pod_dir.join("etc-hosts").to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
        let term_path = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        let term_dir = pod_dir.join("containers").join(&c.name);
        let _ = std::fs::create_dir_all(&term_dir);
        let term_file = term_dir.join(attempt.to_string());
        let _ = std::fs::write(&term_file, b"");
        mounts.push(cri::Mount {
            container_path: term_path.clone(),
            host_path: term_file.to_string_lossy().into_owned(),
            ..Default::default()
        });
        let qos = status::qos_class(&spec);
        let sc = c.security_context.clone().unwrap_or_default();
        let psc = spec.security_context.clone().unwrap_or_default();
        let privileged = sc.privileged == Some(true);
        let caps = sc.capabilities.clone().unwrap_or_default();
        let labels = HashMap::from([
            (LABEL_CONTAINER_NAME.to_string(), c.name.clone()),
            (LABEL_POD_UID.to_string(), uid.clone()),
            (
                LABEL_POD_NAME.to_string(),
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            (
                LABEL_POD_NAMESPACE.to_string(),
                pod.metadata.namespace.clone().unwrap_or_default(),
            ),
        ]);
        let annotations = HashMap::from([
            (
                "io.kubernetes.container.restartCount".to_string(),
                attempt.to_string(),
            ),
            (
                "io.kubernetes.container.terminationMessagePath".to_string(),
                term_path,
            ),
            (
                "io.kubernetes.container.terminationMessagePolicy".to_string(),
                c.termination_message_policy
                    .clone()
                    .unwrap_or_else(|| "File".into()),
            ),
            (
                "io.kubernetes.pod.terminationGracePeriod".to_string(),
                spec.termination_grace_period_seconds
                    .unwrap_or(30)
                    .to_string(),
            ),
        ]);
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: c.name.clone(),
                attempt,
            }),
            image: Some(cri::ImageSpec {
                image: c.image.clone().unwrap_or_default(),
                ..Default::default()
            }),
            command: env::expand_all(c.command.as_deref().unwrap_or(&[]), &envs),
            args: env::expand_all(c.args.as_deref().unwrap_or(&[]), &envs),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs: envs
                .into_iter()
                .map(|(key, value)| cri::KeyValue { key, value })
                .collect(),
            mounts,
            labels,
            annotations,
            log_path: format!("{}/{attempt}.log", c.name),
            stdin: c.stdin == Some(true),
            stdin_once: c.stdin_once == Some(true),
            tty: c.tty == Some(true),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(linux_resources(
                    c,
                    qos,
                    self.ctx.allocatable.memory_bytes + (100 << 20),
                )),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    capabilities: Some(cri::Capability {
                        add_capabilities: caps.add.clone().unwrap_or_default(),
                        drop_capabilities: caps.drop.clone().unwrap_or_default(),
                        ..Default::default()
                    }),
                    privileged,
                    namespace_options: Some(namespace_options(&spec)),
                    run_as_user: sc
                        .run_as_user
                        .or(psc.run_as_user)
                        .map(|value| cri::Int64Value { value }),
                    run_as_group: sc
                        .run_as_group
                        .or(psc.run_as_group)
                        .map(|value| cri::Int64Value { value }),
                    readonly_rootfs: sc.read_only_root_filesystem == Some(true),
                    supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                    no_new_privs: sc.allow_privilege_escalation == Some(false),
                    masked_paths: if privileged {
                        vec![]
                    } else {
                        MASKED_PATHS.iter().map(|s| s.to_string()).collect()
                    },
                    readonly_paths: if privileged {
                        vec![]
                    } else {
                        READONLY_PATHS.iter().map(|s| s.to_string()).collect()
                    },
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        self.wrote();
        let mut rt = self.ctx.runtime.cri();
        let id = match rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_cfg.clone()),
            })
            .await
        {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                let msg = e.message().to_string();
                self.event(pod, fp, "Warning", "Failed", format!("Error: {msg}"));
                return Err(("CreateContainerError".into(), msg));
            }
        };
        self.event(
            pod,
            fp.clone(),
            "Normal",
            "Created",
            format!("Created container {}", c.name),
        );
        if let Err(e) = rt
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            let msg = e.message().to_string();
            self.event(pod, fp, "Warning", "Failed", format!("Error: {msg}"));
            return Err(("RunContainerError".into(), msg));
        }
        self.event(
            pod,
            fp.clone(),
            "Normal",
            "Started",
            format!("Started container {}", c.name),
        );
        // Keep only the instance before this one (it is the container's lastState).
        self.remove_old_instances(&uid, &c.name, attempt).await;
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            if let Err(out) = self.run_hook(&h, c, &id, Duration::from_secs(30)).await {
                self.event(
                    pod,
                    fp.clone(),
                    "Warning",
                    "FailedPostStartHook",
                    format!("PostStartHook failed: {out}"),
                );
                let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64;
                self.stop_container(pod, c, &id, Duration::from_secs(grace))
                    .await;
            }
        }
        Ok(())
    }

    async fn remove_old_instances(&mut self, uid: &str, name: &str, attempt: u32) {
        let label = HashMap::from([
            (LABEL_POD_UID.to_string(), uid.to_string()),
            (LABEL_CONTAINER_NAME.to_string(), name.to_string()),
        ]);
        self.wrote();
        let mut rt = self.ctx.runtime.cri();
        let Ok(list) = rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    label_selector: label,
                    ..Default::default()
                }),
            })
            .await
        else {
            return;
        };
        for old in list.into_inner().containers {
            let a = old.metadata.as_ref().map_or(0, |m| m.attempt);
            if a + 1 < attempt && old.state == cri::ContainerState::ContainerExited as i32 {
                let _ = rt
                    .remove_container(cri::RemoveContainerRequest {
                        container_id: old.id.clone(),
                    })
                    .await;
                self.statuses.remove(&old.id);
            }
        }
    }

    /// Runs a lifecycle hook (exec in the container, or an HTTP GET).
    async fn run_hook(
        &self,
        h: &LifecycleHandler,
        c: &Container,
        id: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        if let Some(e) = &h.exec {
            let r = self
                .ctx
                .runtime
                .cri()
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id.into(),
                    cmd: e.command.clone().unwrap_or_default(),
                    timeout: timeout.as_secs() as i64,
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            if r.exit_code != 0 {
                return Err(format!(
                    "command '{}' exited with {}: {}",
                    e.command.clone().unwrap_or_default().join(" "),
                    r.exit_code,
                    String::from_utf8_lossy(&r.stderr)
                ));
            }
            return Ok(());
        }
        if let Some(g) = &h.http_get {
            let host = g
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| self.pod_ip.clone());
            let port = match &g.port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => *i as u16,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(n) => c
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(n))
                    .map_or(80, |p| p.container_port as u16),
            };
            let headers = g
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            return tokio::time::timeout(
                timeout,
                probe::http_get(
                    &host,
                    port,
                    g.path.as_deref().unwrap_or("/"),
                    headers,
                    g.scheme.as_deref() == Some("HTTPS"),
                ),
            )
            .await
            .unwrap_or_else(|_| Err("hook timed out".into()));
        }
        if let Some(s) = &h.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        }
        Ok(())
    }

    /// preStop hook, then SIGTERM with the remaining grace as StopContainer's timeout (the runtime
    /// sends SIGKILL after it).
    async fn stop_container(&self, pod: &Pod, c: &Container, id: &str, grace: Duration) {
        let start = std::time::Instant::now();
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) {
            if let Err(out) = self.run_hook(&h, c, id, grace).await {
                self.event(
                    pod,
                    field_path(c, false),
                    "Warning",
                    "FailedPreStopHook",
                    format!("PreStopHook failed: {out}"),
                );
            }
        }
        let left = grace
            .saturating_sub(start.elapsed())
            .max(Duration::from_secs(2).min(grace));
        self.wrote();
        let _ = self
            .ctx
            .runtime
            .cri()
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout: left.as_secs() as i64,
            })
            .await;
    }

    /// Stops every running container of the pod (regular ones first, then sidecars in reverse
    /// order) within `grace`, then its sandboxes.
    async fn kill_all(&self, uid: &str, pod: Option<&Pod>, grace: Duration) {
        self.wrote();
        let label = HashMap::from([(LABEL_POD_UID.to_string(), uid.to_string())]);
        let mut rt = self.ctx.runtime.cri();
        let containers = rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    label_selector: label.clone(),
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.into_inner().containers)
            .unwrap_or_default();
        let running: Vec<_> = containers
            .into_iter()
            .filter(|c| {
                c.state == cri::ContainerState::ContainerRunning as i32
                    || c.state == cri::ContainerState::ContainerCreated as i32
            })
            .collect();
        let spec = pod.and_then(|p| p.spec.clone()).unwrap_or_default();
        let is_init = |name: &str| {
            spec.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == name)
        };
        let deadline = std::time::Instant::now() + grace;
        for phase_init in [false, true] {
            let mut tasks = Vec::new();
            for k in running.iter().filter(|k| {
                is_init(k.labels.get(LABEL_CONTAINER_NAME).map_or("", |s| s)) == phase_init
            }) {
                let name = k
                    .labels
                    .get(LABEL_CONTAINER_NAME)
                    .cloned()
                    .unwrap_or_default();
                let c = spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                    .find(|c| c.name == name)
                    .cloned()
                    .unwrap_or(Container {
                        name: name.clone(),
                        ..Default::default()
                    });
                if let Some(p) = pod {
                    self.event(
                        p,
                        field_path(&c, phase_init),
                        "Normal",
                        "Killing",
                        format!("Stopping container {name}"),
                    );
                }
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let id = k.id.clone();
                tasks.push(async move {
                    match pod {
                        Some(p) => self.stop_container(p, &c, &id, left).await,
                        None => {
                            let _ = self
                                .ctx
                                .runtime
                                .cri()
                                .stop_container(cri::StopContainerRequest {
                                    container_id: id,
                                    timeout: left.as_secs() as i64,
                                })
                                .await;
                        }
                    }
                });
            }
            futures::future::join_all(tasks).await;
        }
        let sandboxes = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: label,
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.into_inner().items)
            .unwrap_or_default();
        for sb in sandboxes
            .iter()
            .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
        {
            let _ = rt
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: sb.id.clone(),
                })
                .await;
        }
    }

    /// Removes the pod's sandboxes (and with them its containers), cgroups, volumes and logs.
    fn cleanup_host(&self, uid: &str, ns: &str, name: &str) {
        let ctx = self.ctx.clone();
        let uid = uid.to_string();
        let pod_dir = volume::pod_dir(&self.agent_dir(), &uid);
        let log_dir = self.log_dir(ns, name, &uid);
        tokio::spawn(async move {
            remove_sandboxes(&ctx, &uid).await;
            remove_pod_cgroups(&uid);
            volume::teardown(&pod_dir);
            let _ = std::fs::remove_dir_all(log_dir);
        });
    }

    /// Graceful deletion: stop within the grace period, clean up, write the final status and
    /// delete the pod with grace 0 (uid precondition), as the kubelet's status manager does.
    async fn terminate(&mut self, pod: &Pod) -> Result<()> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or(spec.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64;
        self.stop_probes(None);
        self.kill_all(&uid, Some(pod), Duration::from_secs(grace))
            .await;
        let (_, by) = self.observe(&uid).await?;
        let initialized = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Initialized" && c.status == "True")
            });
        self.write_status(pod, &spec, None, &by, initialized, false)
            .await
            .ok();
        remove_sandboxes(&self.ctx, &uid).await;
        remove_pod_cgroups(&uid);
        volume::teardown(&volume::pod_dir(&self.agent_dir(), &uid));
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let _ = std::fs::remove_dir_all(self.log_dir(&ns, &name, &uid));
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

async fn remove_sandboxes(ctx: &Context, uid: &str) {
    let label = HashMap::from([(LABEL_POD_UID.to_string(), uid.to_string())]);
    let mut rt = ctx.runtime.cri();
    let sandboxes = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: label,
                ..Default::default()
            }),
        })
        .await
        .map(|r| r.into_inner().items)
        .unwrap_or_default();
    for sb in sandboxes {
        let _ = rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: sb.id.clone(),
            })
            .await;
        let _ = rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: sb.id,
            })
            .await;
    }
}

fn terminated_state(o: &Observed, message: Option<String>) -> ContainerStateTerminated {
    let s = o.status.clone().unwrap_or_default();
    let reason = if s.reason.is_empty() {
        if s.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string()
    } else {
        s.reason.clone()
    };
    let mut started = nanos_to_time(s.started_at);
    let finished = nanos_to_time(s.finished_at);
    // Very short containers can report finishing before starting.
    if let (Some(a), Some(b)) = (&started, &finished) {
        if b.0 < a.0 {
            started = Some(b.clone());
        }
    }
    ContainerStateTerminated {
        exit_code: s.exit_code,
        reason: Some(reason),
        message: message
            .filter(|m| !m.is_empty())
            .or(Some(s.message).filter(|m| !m.is_empty())),
        started_at: started,
        finished_at: finished,
        container_id: Some(format!("containerd://{}", o.id)),
        signal: None,
    }
}

/// Null out the state members a merge patch must remove (`waiting` → `running` and so on).
fn state_json(s: &ContainerState) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_else(|_| json!({}));
    for k in ["waiting", "running", "terminated"] {
        if v.get(k).is_none() {
            v[k] = serde_json::Value::Null;
        }
    }
    v
}

impl Worker {
    fn termination_message(&self, pod: &Pod, c: &Container, o: &Observed) -> Option<String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let f = volume::pod_dir(&self.agent_dir(), &uid)
            .join("containers")
            .join(&c.name)
            .join(o.attempt.to_string());
        let mut msg = std::fs::read(&f)
            .ok()
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned());
        if msg.as_deref().is_none_or(str::is_empty)
            && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
            && o.exit_code() != 0
        {
            if let Some(log) = o.status.as_ref().map(|s| s.log_path.clone()) {
                if let Ok(text) = std::fs::read_to_string(log) {
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(80)..]
                        .iter()
                        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join("\n");
                    msg = Some(tail[tail.len().saturating_sub(2048)..].to_string());
                }
            }
        }
        msg
    }

    fn container_status(
        &self,
        pod: &Pod,
        c: &Container,
        by: &ByName,
        default_wait: &str,
        init: bool,
    ) -> ContainerStatus {
        let instances = by.get(&c.name).cloned().unwrap_or_default();
        let latest = instances.first();
        let mut st = ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            ready: false,
            restart_count: latest.map_or(0, |o| o.attempt as i32),
            started: Some(false),
            ..Default::default()
        };
        let waiting = |reason: &str, message: Option<String>| ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message,
            }),
            ..Default::default()
        };
        let override_wait = self.waiting.get(&c.name).cloned();
        let mut last = instances
            .get(1)
            .filter(|o| o.exited())
            .map(|o| ContainerState {
                terminated: Some(terminated_state(o, self.termination_message(pod, c, o))),
                ..Default::default()
            });
        let state = match latest {
            None => match override_wait {
                Some((r, m)) => waiting(&r, Some(m)),
                None => waiting(default_wait, None),
            },
            Some(o) => {
                st.container_id = Some(format!("containerd://{}", o.id));
                st.image_id = o
                    .status
                    .as_ref()
                    .map(|s| s.image_ref.clone())
                    .unwrap_or_default();
                if o.running() {
                    let started = c.startup_probe.is_none()
                        || self.result(&o.id, Kind::Startup) == Some(true);
                    st.started = Some(started);
                    let restartable = c.restart_policy.as_deref() == Some("Always");
                    st.ready = if init && !restartable {
                        false
                    } else if c.readiness_probe.is_some() {
                        started && self.result(&o.id, Kind::Readiness) == Some(true)
                    } else {
                        started
                    };
                    ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: o.status.as_ref().and_then(|s| nanos_to_time(s.started_at)),
                        }),
                        ..Default::default()
                    }
                } else if o.exited() {
                    let term = ContainerState {
                        terminated: Some(terminated_state(o, self.termination_message(pod, c, o))),
                        ..Default::default()
                    };
                    match override_wait {
                        Some((r, m)) => {
                            last = Some(term);
                            waiting(&r, Some(m))
                        }
                        None => {
                            if init && o.exit_code() == 0 {
                                st.ready = true;
                            }
                            term
                        }
                    }
                } else {
                    waiting("ContainerCreating", None)
                }
            }
        };
        st.state = Some(state);
        st.last_state = Some(last.unwrap_or_default());
        st
    }

    /// Computes and writes the pod's status when it changed; returns whether the pod is terminal.
    async fn write_status(
        &mut self,
        pod: &Pod,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        sandbox: Option<&str>,
        by: &ByName,
        initialized: bool,
        init_failed: bool,
    ) -> Result<bool> {
        let old = pod.status.clone().unwrap_or_default();
        let old_conds = old.conditions.clone().unwrap_or_default();
        let init_statuses: Vec<ContainerStatus> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| self.container_status(pod, c, by, "PodInitializing", true))
            .collect();
        let statuses: Vec<ContainerStatus> = spec
            .containers
            .iter()
            .map(|c| {
                self.container_status(
                    pod,
                    c,
                    by,
                    if initialized {
                        "ContainerCreating"
                    } else {
                        "PodInitializing"
                    },
                    false,
                )
            })
            .collect();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut phase = status::pod_phase(spec, &statuses, initialized, init_failed).to_string();
        if deleting && (phase == "Running" || phase == "Pending") {
            // A pod stopped for deletion does not run again: its phase becomes terminal.
            let all_ok = statuses.iter().all(|s| {
                s.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code == 0)
            });
            phase = if all_ok && !statuses.is_empty() {
                "Succeeded"
            } else {
                "Failed"
            }
            .into();
        }
        let terminal = phase == "Succeeded" || phase == "Failed";
        let not_ready: Vec<String> = statuses
            .iter()
            .filter(|s| !s.ready)
            .map(|s| s.name.clone())
            .collect();
        let not_init: Vec<String> = spec
            .init_containers
            .iter()
            .flatten()
            .zip(&init_statuses)
            .filter(|(c, s)| {
                let sidecar = c.restart_policy.as_deref() == Some("Always");
                if sidecar {
                    s.started != Some(true)
                } else {
                    !s.ready
                }
            })
            .map(|(c, _)| c.name.clone())
            .collect();
        let gates_ok = spec.readiness_gates.iter().flatten().all(|g| {
            old_conds
                .iter()
                .any(|c| c.type_ == g.condition_type && c.status == "True")
        });
        let containers_ready = not_ready.is_empty() && !terminal;
        let (ready_reason, ready_msg) = if terminal {
            ("PodCompleted", None)
        } else if !not_ready.is_empty() {
            (
                "ContainersNotReady",
                Some(format!(
                    "containers with unready status: [{}]",
                    not_ready.join(" ")
                )),
            )
        } else {
            (
                "ReadinessGatesNotReady",
                Some("the status of pod readiness gate is not \"True\"".into()),
            )
        };
        let mut conditions: Vec<PodCondition> = vec![
            status::condition(
                &old_conds,
                "PodReadyToStartContainers",
                sandbox.is_some(),
                None,
                None,
            ),
            status::condition(
                &old_conds,
                "Initialized",
                initialized || terminal && init_statuses.iter().all(|s| s.ready),
                Some(if terminal {
                    "PodCompleted"
                } else {
                    "ContainersNotInitialized"
                }),
                (!terminal).then(|| {
                    format!(
                        "containers with incomplete status: [{}]",
                        not_init.join(" ")
                    )
                }),
            ),
            status::condition(
                &old_conds,
                "Ready",
                containers_ready && gates_ok,
                Some(ready_reason),
                ready_msg.clone(),
            ),
            status::condition(
                &old_conds,
                "ContainersReady",
                containers_ready,
                Some(ready_reason),
                ready_msg,
            ),
        ];
        let scheduled = old_conds
            .iter()
            .find(|c| c.type_ == "PodScheduled")
            .cloned()
            .unwrap_or_else(|| PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                last_transition_time: Some(now_time()),
                ..Default::default()
            });
        conditions.push(scheduled);
        for c in &old_conds {
            if !conditions.iter().any(|n| n.type_ == c.type_) {
                conditions.push(c.clone());
            }
        }
        let pod_ips = (!self.pod_ip.is_empty()).then(|| {
            vec![PodIP {
                ip: self.pod_ip.clone(),
            }]
        });
        let new = PodStatus {
            phase: Some(phase),
            conditions: Some(conditions),
            host_ip: Some(self.ctx.node_ip.to_string()),
            host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP {
                ip: self.ctx.node_ip.to_string(),
            }]),
            pod_ip: pod_ips
                .as_ref()
                .map(|_| self.pod_ip.clone())
                .or(old.pod_ip.clone()),
            pod_ips: pod_ips.or(old.pod_ips.clone()),
            start_time: old.start_time.clone().or_else(|| Some(now_time())),
            qos_class: Some(status::qos_class(spec).into()),
            container_statuses: Some(statuses),
            init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
            ..Default::default()
        };
        let mut v = serde_json::to_value(&new)?;
        for key in ["containerStatuses", "initContainerStatuses"] {
            if let Some(list) = v.get_mut(key).and_then(|l| l.as_array_mut()) {
                for (i, cs) in list.iter_mut().enumerate() {
                    let src = if key == "containerStatuses" {
                        &new.container_statuses
                    } else {
                        &new.init_container_statuses
                    };
                    let s = &src.as_ref().expect("statuses")[i];
                    cs["state"] = state_json(s.state.as_ref().expect("state"));
                    cs["lastState"] = state_json(s.last_state.as_ref().expect("last state"));
                }
            }
        }
        // Compare without timestamps of unchanged conditions (kept above) to skip no-op writes.
        if self.last_status.as_ref() == Some(&v) {
            return Ok(terminal);
        }
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        api.patch_status(
            pod.metadata.name.as_deref().unwrap_or(""),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": v })),
        )
        .await
        .context("write pod status")?;
        self.last_status = Some(v);
        Ok(terminal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn cluster_first_dns() {
        let p =
            pod(json!({"metadata": {"name": "p", "namespace": "web"}, "spec": {"containers": []}}));
        let d = dns_config(
            &p,
            &["10.43.0.10".parse().unwrap()],
            "cluster.local",
            "nameserver 1.1.1.1\n",
        );
        assert_eq!(d.servers, vec!["10.43.0.10"]);
        assert_eq!(
            d.searches,
            vec![
                "web.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(d.options, vec!["ndots:5"]);
        // hostNetwork with ClusterFirst falls back to the host's resolver.
        let h = pod(
            json!({"metadata": {"name": "p", "namespace": "web"}, "spec": {"hostNetwork": true, "containers": []}}),
        );
        let d = dns_config(
            &h,
            &["10.43.0.10".parse().unwrap()],
            "cluster.local",
            "nameserver 1.1.1.1\nsearch lan\n",
        );
        assert_eq!(d.servers, vec!["1.1.1.1"]);
        assert_eq!(d.searches, vec!["lan"]);
        let n = pod(
            json!({"metadata": {"name": "p", "namespace": "web"}, "spec": {"dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["9.9.9.9"], "options": [{"name": "ndots", "value": "2"}]}, "containers": []}}),
        );
        let d = dns_config(&n, &[], "cluster.local", "");
        assert_eq!(d.servers, vec!["9.9.9.9"]);
        assert_eq!(d.options, vec!["ndots:2"]);
    }

    #[test]
    fn resources_map_to_cgroup_settings() {
        let c: Container = serde_json::from_value(json!({"name": "c", "resources": {
            "requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}})).unwrap();
        let r = linux_resources(&c, "Burstable", 1 << 30);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 128 << 20);
        assert_eq!(r.oom_score_adj, 1000 - 1000 * (64 << 20) / (1 << 30));
        let be: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        let r = linux_resources(&be, "BestEffort", 1 << 30);
        assert_eq!(
            (
                r.cpu_shares,
                r.cpu_quota,
                r.memory_limit_in_bytes,
                r.oom_score_adj
            ),
            (2, 0, 0, 1000)
        );
    }

    #[test]
    fn hosts_file_names_the_pod() {
        let p = pod(
            json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": {"containers": [],
            "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a", "b"]}]}}),
        );
        let h = hosts_file(&p, "10.42.0.7");
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(h.contains("10.42.0.7\tweb\n"));
        assert!(h.contains("# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"));
    }

    #[test]
    fn backoff_message_format() {
        assert_eq!(fmt_duration(Duration::from_secs(10)), "10s");
        assert_eq!(fmt_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(fmt_duration(Duration::from_secs(160)), "2m40s");
    }
}
