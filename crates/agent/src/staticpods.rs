//! Static pods: pods defined by files in `<data-dir>/agent/pod-manifests/` that the agent runs
//! itself, whether or not the API server is reachable, as upstream's kubelet does with its
//! `staticPodPath`. Each one is published in the API as a *mirror pod* (a read-only stand-in
//! owned by the Node) whose status reflects the real pod.
//!
//! Upstream semantics kept: the pod's name is `<name>-<nodeName>`, its namespace defaults to
//! `default`, its UID is a hash of the manifest, the node and the file (so any change to the
//! file replaces the pod), it tolerates every `NoExecute` taint, and it carries the
//! `kubernetes.io/config.{source,hash,seen}` annotations; the mirror adds
//! `kubernetes.io/config.mirror` (the hash). A mirror that is deleted or stale is removed (grace
//! 0) and created again without touching the running pod; removing the file stops the pod and
//! then deletes its mirror.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::Context;

/// The directory under the agent's directory holding static pod manifests.
pub const MANIFEST_DIR: &str = "pod-manifests";
/// Where a pod's config came from (`file` for static pods, `api` otherwise).
pub const ANNOTATION_SOURCE: &str = "kubernetes.io/config.source";
/// The static pod's config hash (also its UID).
pub const ANNOTATION_HASH: &str = "kubernetes.io/config.hash";
/// Set on mirror pods to the hash of the static pod they stand for.
pub const ANNOTATION_MIRROR: &str = "kubernetes.io/config.mirror";
/// When the agent first saw this version of the pod.
pub const ANNOTATION_SEEN: &str = "kubernetes.io/config.seen";

/// How often the manifest directory is rescanned.
const SCAN: Duration = Duration::from_secs(2);

/// The UIDs of the static pods this agent currently runs or is stopping (shared with the garbage
/// collector, which must not take them for deleted pods).
#[derive(Clone, Default)]
pub struct StaticUids(Arc<Mutex<HashSet<String>>>);

impl StaticUids {
    /// Whether `uid` is a static pod's.
    pub fn contains(&self, uid: &str) -> bool {
        self.0.lock().expect("static uids").contains(uid)
    }
    /// A copy of the current set.
    pub fn snapshot(&self) -> HashSet<String> {
        self.0.lock().expect("static uids").clone()
    }
    fn insert(&self, uid: &str) {
        self.0.lock().expect("static uids").insert(uid.to_string());
    }
    fn remove(&self, uid: &str) {
        self.0.lock().expect("static uids").remove(uid);
    }
}

/// `<agent_dir>/pod-manifests`.
pub fn manifest_dir(agent_dir: &Path) -> PathBuf {
    agent_dir.join(MANIFEST_DIR)
}

/// Whether a pod in the API is a mirror pod.
pub fn is_mirror_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_MIRROR))
}

/// Whether a CRI sandbox (by its annotations, copied from the pod's) belongs to a static pod.
pub fn is_static_sandbox(annotations: &HashMap<String, String>) -> bool {
    annotations.get(ANNOTATION_SOURCE).map(String::as_str) == Some("file")
}

/// Whether `mirror` is the current mirror of `static_pod` (same hash, not being deleted).
pub fn is_mirror_of(mirror: &Pod, static_pod: &Pod) -> bool {
    let hash = |p: &Pod, k: &str| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(k).cloned())
    };
    mirror.metadata.deletion_timestamp.is_none()
        && hash(mirror, ANNOTATION_MIRROR).is_some()
        && hash(mirror, ANNOTATION_MIRROR) == hash(static_pod, ANNOTATION_HASH)
}

/// Parses one manifest file: a single Pod in YAML or JSON.
pub fn parse_manifest(data: &[u8]) -> Result<Pod> {
    let v: serde_json::Value = if data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        serde_json::from_slice(data).context("parse json")?
    } else {
        serde_yaml::from_slice(data).context("parse yaml")?
    };
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    if kind != "Pod" {
        bail!("manifest kind is {kind:?}, not \"Pod\"");
    }
    let pod: Pod = serde_json::from_value(v).context("decode pod")?;
    if pod.metadata.name.as_deref().unwrap_or("").is_empty() {
        bail!("metadata.name: Required value: name or generateName is required");
    }
    if pod.spec.as_ref().is_none_or(|s| s.containers.is_empty()) {
        bail!("spec.containers: Required value");
    }
    Ok(pod)
}

/// Turns a parsed manifest into the static pod the agent runs (upstream `applyDefaults` for
/// file sources): UID from the hash of the manifest, node and file unless the manifest sets one,
/// name `<name>-<node>`, default namespace, bound to this node, the config annotations, and a
/// toleration of every `NoExecute` taint. `seen` is the `config.seen` timestamp.
pub fn static_pod(manifest: &Pod, file: &Path, node_name: &str, seen: &str) -> Pod {
    let mut pod = manifest.clone();
    let uid = match pod.metadata.uid.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => u.to_string(),
        None => {
            let mut h = Sha256::new();
            h.update(serde_json::to_vec(manifest).expect("pod json"));
            h.update(format!("host:{node_name}"));
            h.update(format!("file:{}", file.display()));
            let digest = h.finalize();
            digest[..16].iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    pod.metadata.uid = Some(uid.clone());
    pod.metadata.name = Some(format!(
        "{}-{}",
        pod.metadata.name.as_deref().unwrap_or(""),
        node_name.to_lowercase()
    ));
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = Some("default".into());
    }
    let ann = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(ANNOTATION_HASH.into(), uid);
    ann.insert(ANNOTATION_SOURCE.into(), "file".into());
    ann.insert(ANNOTATION_SEEN.into(), seen.into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_string());
    let tol = Toleration {
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        ..Default::default()
    };
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    if !tolerations.contains(&tol) {
        tolerations.push(tol);
    }
    pod.status = None;
    pod
}

/// The mirror pod for `static_pod`: the same pod, marked with `config.mirror` and controlled by
/// the Node, for the API server to assign its own UID.
pub fn mirror_pod(static_pod: &Pod, node_name: &str, node_uid: &str) -> Pod {
    let mut m = static_pod.clone();
    let hash = m
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_HASH).cloned())
        .unwrap_or_default();
    m.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_MIRROR.into(), hash);
    m.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.into(),
        uid: node_uid.into(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    m.metadata.uid = None;
    m.metadata.resource_version = None;
    m.metadata.creation_timestamp = None;
    m.status = None;
    m
}

/// Reads every manifest in `dir` (sorted by file name; hidden files skipped, as upstream does).
/// Files that do not parse are logged and left out; of two pods with the same name the first
/// file wins.
pub fn read_manifests(dir: &Path) -> Vec<(PathBuf, Pod)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for f in files {
        let pod = std::fs::read(&f)
            .context("read")
            .and_then(|d| parse_manifest(&d));
        match pod {
            Ok(p) => {
                let key = (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                );
                if names.insert(key) {
                    out.push((f, p));
                } else {
                    tracing::warn!(file = %f.display(), "static pod with a duplicate name ignored");
                }
            }
            Err(e) => {
                tracing::warn!(file = %f.display(), "cannot use static pod manifest: {e:#}")
            }
        }
    }
    out
}

fn full_name(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

/// A static pod with a worker.
struct Running {
    pod: Pod,
    tx: watch::Sender<Option<Pod>>,
    task: tokio::task::JoinHandle<()>,
    /// The UID of the mirror the worker last reported to.
    mirror_uid: Option<String>,
}

/// A static pod being stopped (removed or replaced by a new version of its file).
struct Stopping {
    uid: String,
    task: tokio::task::JoinHandle<()>,
    _tx: watch::Sender<Option<Pod>>,
}

/// Runs the static pods of `<agent_dir>/pod-manifests/` and keeps their mirror pods; `uids` is
/// kept up to date with the static pods running or stopping.
pub async fn run(ctx: Arc<Context>, uids: StaticUids) {
    let dir = manifest_dir(&ctx.config.agent_dir());
    let _ = std::fs::create_dir_all(&dir);
    let node = ctx.config.node_name.clone();
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut mirrors_stream = watcher(api, cfg)
        .default_backoff()
        .modify(|p| p.metadata.managed_fields = None)
        .boxed();
    let mut mirrors: HashMap<String, Pod> = HashMap::new();
    let mut mirrors_init: HashMap<String, Pod> = HashMap::new();
    let mut mirrors_known = false;
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut stopping: HashMap<String, Stopping> = HashMap::new();
    removed_stale_static_pods(&ctx, &dir, &node).await;
    let mut tick = tokio::time::interval(SCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Only the tick and events about mirror pods call for a pass.
        let relevant = tokio::select! {
            _ = tick.tick() => true,
            ev = mirrors_stream.next() => match ev {
                Some(Ok(watcher::Event::Init)) => {
                    mirrors_init.clear();
                    false
                }
                Some(Ok(watcher::Event::InitApply(p))) => {
                    if is_mirror_pod(&p) {
                        mirrors_init.insert(full_name(&p), p);
                    }
                    false
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    mirrors = std::mem::take(&mut mirrors_init);
                    mirrors_known = true;
                    true
                }
                Some(Ok(watcher::Event::Apply(p))) if is_mirror_pod(&p) => {
                    let name = full_name(&p);
                    // A late event about a mirror already replaced must not hide the new one.
                    let stale = p.metadata.deletion_timestamp.is_some()
                        && mirrors.get(&name).is_some_and(|m| uid(m) != uid(&p));
                    if !stale {
                        mirrors.insert(name, p);
                    }
                    !stale
                }
                Some(Ok(watcher::Event::Delete(p))) if is_mirror_pod(&p) => {
                    let name = full_name(&p);
                    if mirrors.get(&name).is_some_and(|m| uid(m) == uid(&p)) {
                        mirrors.remove(&name);
                    }
                    true
                }
                Some(Ok(_)) => false,
                Some(Err(e)) => {
                    tracing::debug!("watching mirror pods: {e}");
                    false
                }
                None => return,
            },
        };
        if !relevant {
            continue;
        }

        // Desired static pods from the files.
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut desired: HashMap<String, Pod> = HashMap::new();
        for (file, manifest) in read_manifests(&dir) {
            let probe = static_pod(&manifest, &file, &node, "");
            let first_seen = seen.entry(uid(&probe)).or_insert_with(|| now.clone());
            let pod = static_pod(&manifest, &file, &node, first_seen);
            desired.insert(full_name(&pod), pod);
        }
        let desired_uids: HashSet<String> = desired.values().map(uid).collect();
        seen.retain(|u, _| desired_uids.contains(u) || running.values().any(|r| uid(&r.pod) == *u));

        // Stop pods whose file is gone or changed (a change means a new UID).
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, r)| desired.get(*name).is_none_or(|d| uid(d) != uid(&r.pod)))
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            let r = running.remove(&name).expect("running");
            tracing::info!(pod = %name, "stopping static pod");
            let mut p = r.pod.clone();
            p.status = mirrors
                .get(&name)
                .filter(|m| is_mirror_of(m, &r.pod))
                .and_then(|m| m.status.clone());
            let grace = p
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30);
            p.metadata.deletion_grace_period_seconds = Some(grace);
            p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            r.tx.send_replace(Some(p));
            stopping.insert(
                name,
                Stopping {
                    uid: uid(&r.pod),
                    task: r.task,
                    _tx: r.tx,
                },
            );
        }
        // Finished stops: forget the UID; the mirror goes once no version of the pod is left.
        let done: Vec<String> = stopping
            .iter()
            .filter(|(_, s)| s.task.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in done {
            let s = stopping.remove(&name).expect("stopping");
            uids.remove(&s.uid);
            if !desired.contains_key(&name) {
                if let Some(m) = mirrors.get(&name) {
                    if delete_mirror(&ctx, m).await {
                        mirrors.remove(&name);
                    }
                }
            }
        }
        // Start new pods (a replaced pod's new version waits for the old one to stop, as
        // upstream's pod workers do for pods with the same full name).
        for (name, pod) in &desired {
            if running.contains_key(name) || stopping.contains_key(name) {
                continue;
            }
            tracing::info!(pod = %name, uid = %uid(pod), "starting static pod");
            uids.insert(&uid(pod));
            let mut p = pod.clone();
            p.status = mirrors
                .get(name)
                .filter(|m| is_mirror_of(m, pod))
                .and_then(|m| m.status.clone());
            let (tx, rx) = watch::channel(Some(p));
            let task = crate::pods::spawn_worker(ctx.clone(), rx);
            running.insert(
                name.clone(),
                Running {
                    pod: pod.clone(),
                    tx,
                    task,
                    mirror_uid: None,
                },
            );
        }
        // Keep each running pod's mirror and feed the worker the mirror's status.
        if !mirrors_known {
            continue;
        }
        // Mirrors of static pods that no longer exist here (e.g. removed while the agent was
        // down) go, as upstream's orphaned mirror pod cleanup does.
        let orphans: Vec<Pod> = mirrors
            .iter()
            .filter(|(n, _)| !running.contains_key(*n) && !stopping.contains_key(*n))
            .map(|(_, m)| m.clone())
            .collect();
        for m in orphans {
            tracing::info!(pod = %full_name(&m), "deleting orphaned mirror pod");
            if delete_mirror(&ctx, &m).await {
                mirrors.remove(&full_name(&m));
            }
        }
        for (name, r) in running.iter_mut() {
            let current = mirrors.get(name).cloned();
            let mirror = match current {
                Some(m) if is_mirror_of(&m, &r.pod) => Some(m),
                Some(m) => {
                    // Deleted by someone, or left from an older version of the file.
                    if delete_mirror(&ctx, &m).await {
                        mirrors.remove(name);
                    }
                    None
                }
                None => None,
            };
            let mirror = match mirror {
                Some(m) => m,
                None if mirrors.contains_key(name) => continue,
                None => {
                    // The Node is read each time: a re-registered Node has a new UID.
                    let nodes: Api<Node> = Api::all(ctx.client.clone());
                    let node_uid = nodes
                        .get_opt(&node)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|n| n.metadata.uid);
                    let Some(nu) = node_uid else { continue };
                    let m = mirror_pod(&r.pod, &node, &nu);
                    let api: Api<Pod> = Api::namespaced(
                        ctx.client.clone(),
                        r.pod.metadata.namespace.as_deref().unwrap_or("default"),
                    );
                    match api.create(&PostParams::default(), &m).await {
                        Ok(created) => {
                            tracing::info!(pod = %name, "created mirror pod");
                            mirrors.insert(name.clone(), created.clone());
                            created
                        }
                        Err(kube::Error::Api(e)) if e.code == 409 => continue,
                        Err(e) => {
                            tracing::warn!(pod = %name, "creating mirror pod: {e}");
                            continue;
                        }
                    }
                }
            };
            let fresh = r.mirror_uid.as_deref() != mirror.metadata.uid.as_deref();
            r.mirror_uid = mirror.metadata.uid.clone();
            let mut p = r.pod.clone();
            // A new mirror has none of the pod's status yet: make the worker write it in full.
            p.status = if fresh { None } else { mirror.status.clone() };
            r.tx.send_if_modified(|cur| {
                if cur.as_ref() == Some(&p) && !fresh {
                    false
                } else {
                    *cur = Some(p);
                    true
                }
            });
        }
    }
}

/// Deletes a mirror pod at once (grace 0, only that object). Returns whether it is gone.
async fn delete_mirror(ctx: &Context, m: &Pod) -> bool {
    let api: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        m.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: m.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api
        .delete(m.metadata.name.as_deref().unwrap_or(""), &dp)
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
        Err(e) => {
            tracing::warn!(pod = ?m.metadata.name, "deleting mirror pod: {e}");
            false
        }
    }
}

/// At start: stops the sandboxes of static pods whose file was removed while the agent was down
/// (the API-driven orphan check leaves static pods to us).
async fn removed_stale_static_pods(ctx: &Arc<Context>, dir: &Path, node: &str) {
    let wanted: HashSet<String> = read_manifests(dir)
        .iter()
        .map(|(f, m)| uid(&static_pod(m, f, node, "")))
        .collect();
    let Ok(r) = ctx
        .runtime
        .cri()
        .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest::default())
        .await
    else {
        return;
    };
    let mut gone = HashMap::new();
    for sb in r.into_inner().items {
        if !is_static_sandbox(&sb.annotations) {
            continue;
        }
        let meta = sb.metadata.unwrap_or_default();
        if !wanted.contains(&meta.uid) {
            gone.insert(meta.uid.clone(), (meta.namespace, meta.name));
        }
    }
    for (u, (ns, name)) in gone {
        tracing::info!(uid = %u, pod = %name, "removing static pod whose manifest is gone");
        crate::pods::remove_pod(ctx, &u, &ns, &name).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: bb:1\n";

    #[test]
    fn parses_yaml_and_json_manifests() {
        let y = parse_manifest(YAML.as_bytes()).unwrap();
        assert_eq!(y.metadata.name.as_deref(), Some("web"));
        let j = parse_manifest(
            br#" {"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"c","image":"bb:1"}]}}"#,
        )
        .unwrap();
        assert_eq!(j.spec.unwrap().containers[0].name, "c");
        assert!(parse_manifest(b"kind: Service\nmetadata: {name: x}\n").is_err());
        assert!(
            parse_manifest(b"kind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n").is_err()
        );
        assert!(parse_manifest(b"kind: Pod\nspec: {containers: [{name: c}]}\n").is_err());
    }

    #[test]
    fn static_pod_gets_upstream_defaults() {
        let m = parse_manifest(YAML.as_bytes()).unwrap();
        let f = Path::new("/m/web.yaml");
        let p = static_pod(&m, f, "Node-1", "2026-01-01T00:00:00.000000000Z");
        assert_eq!(p.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        let u = uid(&p);
        assert_eq!(u.len(), 32);
        let a = p.metadata.annotations.clone().unwrap();
        assert_eq!(a[ANNOTATION_HASH], u);
        assert_eq!(a[ANNOTATION_SOURCE], "file");
        assert_eq!(a[ANNOTATION_SEEN], "2026-01-01T00:00:00.000000000Z");
        let spec = p.spec.clone().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("Node-1"));
        assert!(spec.tolerations.unwrap().iter().any(|t| {
            t.operator.as_deref() == Some("Exists")
                && t.effect.as_deref() == Some("NoExecute")
                && t.key.is_none()
        }));
        // Same manifest, node and file: same UID; any of them changed: another UID.
        assert_eq!(uid(&static_pod(&m, f, "Node-1", "x")), u);
        assert_ne!(
            uid(&static_pod(&m, Path::new("/m/b.yaml"), "Node-1", "")),
            u
        );
        assert_ne!(uid(&static_pod(&m, f, "node-2", "")), u);
        let mut changed = m.clone();
        changed.spec.as_mut().unwrap().containers[0].image = Some("bb:2".into());
        assert_ne!(uid(&static_pod(&changed, f, "Node-1", "")), u);
        // A UID given in the manifest is kept.
        let mut with_uid = m.clone();
        with_uid.metadata.uid = Some("fixed".into());
        assert_eq!(uid(&static_pod(&with_uid, f, "Node-1", "")), "fixed");
    }

    #[test]
    fn mirror_pod_is_owned_by_the_node_and_marked() {
        let m = parse_manifest(YAML.as_bytes()).unwrap();
        let p = static_pod(&m, Path::new("/m/web.yaml"), "n1", "t");
        let mirror = mirror_pod(&p, "n1", "node-uid");
        assert!(is_mirror_pod(&mirror));
        assert!(!is_mirror_pod(&p));
        assert_eq!(
            mirror.metadata.annotations.as_ref().unwrap()[ANNOTATION_MIRROR],
            uid(&p)
        );
        assert_eq!(mirror.metadata.uid, None);
        let o = &mirror.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                o.api_version.as_str(),
                o.kind.as_str(),
                o.name.as_str(),
                o.uid.as_str()
            ),
            ("v1", "Node", "n1", "node-uid")
        );
        assert_eq!(o.controller, Some(true));
        assert!(is_mirror_of(&mirror, &p));
        let other = static_pod(&m, Path::new("/m/other.yaml"), "n1", "t");
        assert!(!is_mirror_of(&mirror, &other));
        let mut deleting = mirror.clone();
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(!is_mirror_of(&deleting, &p));
    }

    #[test]
    fn reads_manifest_dir_skipping_bad_hidden_and_duplicate_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.yaml"), YAML).unwrap();
        std::fs::write(d.path().join("b.yaml"), YAML).unwrap();
        std::fs::write(d.path().join(".hidden.yaml"), YAML.replace("web", "h")).unwrap();
        std::fs::write(d.path().join("c.json"), b"{not json").unwrap();
        std::fs::write(
            d.path().join("d.yml"),
            YAML.replace("name: web", "name: api"),
        )
        .unwrap();
        let got: Vec<String> = read_manifests(d.path())
            .into_iter()
            .map(|(f, p)| {
                format!(
                    "{}:{}",
                    f.file_name().unwrap().to_string_lossy(),
                    p.metadata.name.unwrap()
                )
            })
            .collect();
        assert_eq!(got, vec!["a.yaml:web", "d.yml:api"]);
        assert!(read_manifests(&d.path().join("missing")).is_empty());
    }

    #[test]
    fn static_sandboxes_are_recognised_by_annotation() {
        let mut a = HashMap::new();
        assert!(!is_static_sandbox(&a));
        a.insert(ANNOTATION_SOURCE.to_string(), "file".to_string());
        assert!(is_static_sandbox(&a));
    }
}
