//! Garbage collection of dead containers, sandboxes and unused images, with upstream kubelet's
//! policies (`pkg/kubelet/kuberuntime/kuberuntime_gc.go`, `pkg/kubelet/images/image_gc_manager.go`)
//! and default settings: containers every minute, images every five minutes.
//!
//! The decisions are pure functions over snapshots of the runtime; [`run`] applies them through
//! CRI.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::runtime::Runtime;
use crate::staticpods::StaticUids;
use crate::Context;

const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";

/// Which dead containers to keep (upstream `GCPolicy`; kubelet defaults).
#[derive(Debug, Clone, Copy)]
pub struct ContainerGcPolicy {
    /// Containers younger than this are never collected (`--minimum-container-ttl-duration`).
    pub min_age: Duration,
    /// Dead instances kept per (pod, container name); negative: no limit.
    pub max_per_pod_container: i32,
    /// Dead containers kept on the node in total; negative: no limit.
    pub max_containers: i32,
}

impl Default for ContainerGcPolicy {
    fn default() -> Self {
        ContainerGcPolicy {
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            max_containers: -1,
        }
    }
}

/// When to collect images (upstream `ImageGCPolicy`; kubelet defaults).
#[derive(Debug, Clone, Copy)]
pub struct ImageGcPolicy {
    /// Image filesystem usage (percent) at or above which images are collected.
    pub high_threshold_percent: u8,
    /// Usage (percent) collection tries to get down to.
    pub low_threshold_percent: u8,
    /// Images detected more recently than this are never collected.
    pub min_age: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

/// How often the collector runs and with which policies.
#[derive(Debug, Clone, Copy)]
pub struct GcConfig {
    pub container_period: Duration,
    pub image_period: Duration,
    pub containers: ContainerGcPolicy,
    pub images: ImageGcPolicy,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            container_period: Duration::from_secs(60),
            image_period: Duration::from_secs(300),
            containers: ContainerGcPolicy::default(),
            images: ImageGcPolicy::default(),
        }
    }
}

/// One container as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GcContainer {
    pub id: String,
    pub sandbox_id: String,
    pub pod_uid: String,
    pub name: String,
    pub running: bool,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
}

/// One pod sandbox as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GcSandbox {
    pub id: String,
    pub pod_uid: String,
    pub ready: bool,
    pub created_at: i64,
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The dead containers to remove, oldest first within each (pod, name) unit: every dead
/// container of pods that no longer exist, then all but the newest `max_per_pod_container` of each
/// unit, then (with `max_containers`) an even share per unit and the oldest overall.
pub fn containers_to_remove(
    containers: &[GcContainer],
    pod_exists: &dyn Fn(&str) -> bool,
    policy: &ContainerGcPolicy,
    now: SystemTime,
) -> Vec<String> {
    let newest_collectable = nanos(now) - policy.min_age.as_nanos() as i64;
    let mut units: HashMap<(&str, &str), Vec<&GcContainer>> = HashMap::new();
    for c in containers {
        if c.running || c.created_at > newest_collectable {
            continue;
        }
        units
            .entry((c.pod_uid.as_str(), c.name.as_str()))
            .or_default()
            .push(c);
    }
    for u in units.values_mut() {
        // Newest first; the oldest are removed from the end.
        u.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    }
    let mut remove: Vec<String> = Vec::new();
    let take_oldest = |u: &mut Vec<&GcContainer>, keep: usize, out: &mut Vec<String>| {
        while u.len() > keep {
            out.push(u.pop().expect("unit").id.clone());
        }
    };
    let mut keys: Vec<(&str, &str)> = units.keys().copied().collect();
    keys.sort();
    for k in &keys {
        if !pod_exists(k.0) {
            let mut u = units.remove(k).expect("unit");
            take_oldest(&mut u, 0, &mut remove);
        }
    }
    keys.retain(|k| units.contains_key(k));
    if policy.max_per_pod_container >= 0 {
        for k in &keys {
            let u = units.get_mut(k).expect("unit");
            take_oldest(u, policy.max_per_pod_container as usize, &mut remove);
        }
    }
    let count = |units: &HashMap<(&str, &str), Vec<&GcContainer>>| -> usize {
        units.values().map(Vec::len).sum()
    };
    if policy.max_containers >= 0 && count(&units) > policy.max_containers as usize {
        let per_unit = (policy.max_containers as usize / units.len().max(1)).max(1);
        for k in &keys {
            let u = units.get_mut(k).expect("unit");
            take_oldest(u, per_unit, &mut remove);
        }
        let left = count(&units);
        if left > policy.max_containers as usize {
            let mut all: Vec<&GcContainer> = units.values().flatten().copied().collect();
            all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
            take_oldest(&mut all, policy.max_containers as usize, &mut remove);
        }
    }
    remove
}

/// The sandboxes to remove: a sandbox is in use while it is ready or still has containers (after
/// `removed` containers are gone). Of pods that no longer exist every other sandbox goes; of
/// existing pods all but the newest.
pub fn sandboxes_to_remove(
    sandboxes: &[GcSandbox],
    containers: &[GcContainer],
    removed: &HashSet<String>,
    pod_exists: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let with_containers: HashSet<&str> = containers
        .iter()
        .filter(|c| !removed.contains(&c.id))
        .map(|c| c.sandbox_id.as_str())
        .collect();
    let mut by_pod: HashMap<&str, Vec<&GcSandbox>> = HashMap::new();
    for s in sandboxes {
        by_pod.entry(s.pod_uid.as_str()).or_default().push(s);
    }
    let mut pods: Vec<&str> = by_pod.keys().copied().collect();
    pods.sort();
    let mut out = Vec::new();
    for uid in pods {
        let mut list = by_pod.remove(uid).expect("pod");
        list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        let keep = usize::from(pod_exists(uid));
        for s in list.iter().skip(keep).rev() {
            if !s.ready && !with_containers.contains(s.id.as_str()) {
                out.push(s.id.clone());
            }
        }
    }
    out
}

/// What the image collector knows of one image (upstream `imageRecord`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    pub first_detected: SystemTime,
    /// When a container last used it (`None`: not since the agent started).
    pub last_used: Option<SystemTime>,
    pub size: u64,
    /// Never collected: the sandbox image or pinned by the runtime.
    pub pinned: bool,
}

/// The images seen so far, updated at each detection.
#[derive(Debug, Default, Clone)]
pub struct ImageTracker {
    pub records: HashMap<String, ImageRecord>,
}

/// One image listed by the runtime.
#[derive(Debug, Clone)]
pub struct GcImage {
    pub id: String,
    pub size: u64,
    pub pinned: bool,
}

impl ImageTracker {
    /// Records the runtime's current images at `now`: new ones are detected now, ones used by a
    /// container (any state) were last used now, and vanished ones are forgotten.
    pub fn detect(&mut self, images: &[GcImage], in_use: &HashSet<String>, now: SystemTime) {
        let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        self.records.retain(|id, _| present.contains(id.as_str()));
        for i in images {
            let r = self
                .records
                .entry(i.id.clone())
                .or_insert_with(|| ImageRecord {
                    first_detected: now,
                    last_used: None,
                    size: i.size,
                    pinned: i.pinned,
                });
            r.size = i.size;
            r.pinned = i.pinned;
            if in_use.contains(&i.id) {
                r.last_used = Some(now);
            }
        }
    }
}

/// How many bytes to free for the filesystem to get from at/above the high threshold down to the
/// low threshold (`None`: below the high threshold).
pub fn bytes_to_free(capacity: u64, available: u64, policy: &ImageGcPolicy) -> Option<u64> {
    if capacity == 0 {
        return None;
    }
    let usage_percent = 100 - (available.min(capacity) as u128 * 100 / capacity as u128) as u64;
    if usage_percent < u64::from(policy.high_threshold_percent) {
        return None;
    }
    let target_available =
        capacity as u128 * (100 - u128::from(policy.low_threshold_percent)) / 100;
    let amount = target_available.saturating_sub(available as u128) as u64;
    (amount > 0).then_some(amount)
}

/// The images to delete to free `bytes`, least recently used first (then earliest detected),
/// skipping images in use at `now` (the last detection), pinned ones and ones detected less than
/// `min_age` ago. It may free less than asked when not enough images qualify.
pub fn images_to_free(
    tracker: &ImageTracker,
    bytes: u64,
    policy: &ImageGcPolicy,
    now: SystemTime,
) -> Vec<String> {
    let mut candidates: Vec<(&String, &ImageRecord)> = tracker.records.iter().collect();
    candidates.sort_by(|a, b| {
        a.1.last_used
            .cmp(&b.1.last_used)
            .then(a.1.first_detected.cmp(&b.1.first_detected))
            .then(a.0.cmp(b.0))
    });
    let mut freed = 0u64;
    let mut out = Vec::new();
    for (id, r) in candidates {
        if freed >= bytes {
            break;
        }
        if r.last_used.is_some_and(|t| t >= now) || r.pinned {
            continue;
        }
        if now.duration_since(r.first_detected).unwrap_or_default() < policy.min_age {
            continue;
        }
        out.push(id.clone());
        freed += r.size;
    }
    out
}

/// What one container collection removed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Collected {
    pub containers: Vec<String>,
    pub sandboxes: Vec<String>,
}

/// One container/sandbox collection. The runtime is listed before `live_pods` is asked (so that
/// a pod created meanwhile cannot look deleted); `live_pods` yields the UIDs of the pods that
/// exist, or `None` when that is not known (then only the per-container limit applies).
pub async fn collect_containers<F>(
    rt: &Runtime,
    policy: &ContainerGcPolicy,
    live_pods: F,
) -> Result<Collected>
where
    F: Future<Output = Option<HashSet<String>>>,
{
    let mut cri_rt = rt.cri();
    let containers: Vec<GcContainer> = cri_rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .context("list containers")?
        .into_inner()
        .containers
        .into_iter()
        .map(|c| GcContainer {
            pod_uid: c.labels.get(LABEL_POD_UID).cloned().unwrap_or_default(),
            name: c.metadata.map(|m| m.name).unwrap_or_default(),
            running: c.state == cri::ContainerState::ContainerRunning as i32,
            created_at: c.created_at,
            sandbox_id: c.pod_sandbox_id,
            id: c.id,
        })
        .collect();
    let sandboxes: Vec<GcSandbox> = cri_rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .context("list pod sandboxes")?
        .into_inner()
        .items
        .into_iter()
        .map(|s| GcSandbox {
            pod_uid: s.metadata.map(|m| m.uid).unwrap_or_default(),
            ready: s.state == cri::PodSandboxState::SandboxReady as i32,
            created_at: s.created_at,
            id: s.id,
        })
        .collect();
    let live = live_pods.await;
    let exists = |uid: &str| live.as_ref().is_none_or(|l| l.contains(uid));
    let mut out = Collected::default();
    for id in containers_to_remove(&containers, &exists, policy, SystemTime::now()) {
        let log = cri_rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().status)
            .map(|s| s.log_path)
            .unwrap_or_default();
        match cri_rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            Ok(_) => {
                // containerd leaves the log file behind; upstream's collector removes it too.
                if !log.is_empty() {
                    let _ = std::fs::remove_file(&log);
                }
                out.containers.push(id);
            }
            Err(e) => tracing::warn!(container = %id, "removing dead container: {}", e.message()),
        }
    }
    let removed: HashSet<String> = out.containers.iter().cloned().collect();
    for id in sandboxes_to_remove(&sandboxes, &containers, &removed, &exists) {
        match cri_rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
        {
            Ok(_) => out.sandboxes.push(id),
            Err(e) => tracing::warn!(sandbox = %id, "removing dead sandbox: {}", e.message()),
        }
    }
    Ok(out)
}

/// The pod log directories (`<namespace>_<name>_<uid>`) to remove: those of pods that no
/// longer exist and have no sandbox left (upstream `evictPodLogsDirectories`).
pub fn log_dirs_to_remove(
    dirs: &[String],
    pod_exists: &dyn Fn(&str) -> bool,
    sandbox_uids: &HashSet<String>,
) -> Vec<String> {
    dirs.iter()
        .filter(|d| {
            d.rsplit_once('_').is_some_and(|(_, uid)| {
                !uid.is_empty() && !pod_exists(uid) && !sandbox_uids.contains(uid)
            })
        })
        .cloned()
        .collect()
}

/// Removes the log directories under `logs_dir` of pods that are gone. The directory is read
/// before the runtime and the runtime before `live_pods` is asked, so that the directory of a pod
/// being created is never taken for a leftover.
pub async fn collect_log_dirs<F>(rt: &Runtime, logs_dir: &Path, live_pods: F) -> Result<Vec<String>>
where
    F: Future<Output = Option<HashSet<String>>>,
{
    let dirs: Vec<String> = match std::fs::read_dir(logs_dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => return Ok(Vec::new()),
    };
    let sandbox_uids: HashSet<String> = rt
        .cri()
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .context("list pod sandboxes")?
        .into_inner()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.map(|m| m.uid))
        .collect();
    let Some(live) = live_pods.await else {
        return Ok(Vec::new());
    };
    let exists = |uid: &str| live.contains(uid);
    let mut removed = Vec::new();
    for d in log_dirs_to_remove(&dirs, &exists, &sandbox_uids) {
        if std::fs::remove_dir_all(logs_dir.join(&d)).is_ok() {
            removed.push(d);
        }
    }
    Ok(removed)
}

/// Total and available bytes of the filesystem holding `path`.
pub fn fs_usage(path: &Path) -> Result<(u64, u64)> {
    let s = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok((s.f_blocks * s.f_frsize, s.f_bavail * s.f_frsize))
}

/// One image collection: records the runtime's images, and when the image filesystem is at or
/// above the high threshold removes unused images down to the low threshold. `never` holds
/// references never to remove (the sandbox image). Returns the removed image IDs.
pub async fn collect_images(
    rt: &Runtime,
    tracker: &mut ImageTracker,
    policy: &ImageGcPolicy,
    never: &[&str],
    fs_fallback: &Path,
) -> Result<Vec<String>> {
    let mut images_rt = rt.images();
    let listed = images_rt
        .list_images(cri::ListImagesRequest::default())
        .await
        .context("list images")?
        .into_inner()
        .images;
    let never: Vec<String> = never
        .iter()
        .map(|r| crate::image::normalize_reference(r))
        .collect();
    let images: Vec<GcImage> = listed
        .iter()
        .map(|i| GcImage {
            id: i.id.clone(),
            size: i.size,
            pinned: i.pinned
                || i.repo_tags
                    .iter()
                    .any(|t| never.contains(&crate::image::normalize_reference(t))),
        })
        .collect();
    let in_use: HashSet<String> = rt
        .cri()
        .list_containers(cri::ListContainersRequest::default())
        .await
        .context("list containers")?
        .into_inner()
        .containers
        .into_iter()
        .flat_map(|c| [Some(c.image_ref), c.image.map(|i| i.image)])
        .flatten()
        .collect();
    // Containers may name their image by reference: map those to the IDs.
    let in_use: HashSet<String> = listed
        .iter()
        .filter(|i| {
            in_use.contains(&i.id)
                || i.repo_tags.iter().any(|t| in_use.contains(t))
                || i.repo_digests.iter().any(|d| in_use.contains(d))
        })
        .map(|i| i.id.clone())
        .collect();
    let now = SystemTime::now();
    tracker.detect(&images, &in_use, now);
    let mountpoint = images_rt
        .image_fs_info(cri::ImageFsInfoRequest::default())
        .await
        .ok()
        .and_then(|r| {
            r.into_inner()
                .image_filesystems
                .into_iter()
                .find_map(|f| f.fs_id.map(|i| i.mountpoint))
        })
        .filter(|m| !m.is_empty() && Path::new(m).exists());
    let (capacity, available) = match &mountpoint {
        Some(m) => fs_usage(Path::new(m))?,
        None => fs_usage(fs_fallback)?,
    };
    let Some(bytes) = bytes_to_free(capacity, available, policy) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    let mut freed = 0u64;
    for id in images_to_free(tracker, bytes, policy, now) {
        let size = tracker.records.get(&id).map_or(0, |r| r.size);
        match images_rt
            .remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: id.clone(),
                    ..Default::default()
                }),
            })
            .await
        {
            Ok(_) => {
                tracker.records.remove(&id);
                removed.push(id);
                freed += size;
            }
            Err(e) => tracing::warn!(image = %id, "removing unused image: {}", e.message()),
        }
    }
    if !removed.is_empty() {
        tracing::info!(images = ?removed, freed, "image garbage collection freed space");
    }
    if freed < bytes {
        // Upstream's wording (kubelet ImageGCFailed).
        tracing::warn!(
            "Failed to garbage collect required amount of images. Attempted to free {bytes} bytes, but only found {freed} bytes eligible to free."
        );
    }
    Ok(removed)
}

/// The UIDs of the pods bound to this node in the API plus the static pods (`None` when the API
/// cannot be read).
async fn live_pods(ctx: &Context, statics: &StaticUids) -> Option<HashSet<String>> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    let list = api.list(&lp).await.ok()?;
    let mut uids: HashSet<String> = list
        .items
        .into_iter()
        .filter(|p| !crate::staticpods::is_mirror_pod(p))
        .filter_map(|p| p.metadata.uid)
        .collect();
    uids.extend(statics.snapshot());
    Some(uids)
}

/// The periodic collector: containers and sandboxes every `container_period`, images every
/// `image_period` (each first after one period, as upstream).
pub async fn run(ctx: Arc<Context>, statics: StaticUids, config: GcConfig) {
    let start = tokio::time::Instant::now();
    let mut containers =
        tokio::time::interval_at(start + config.container_period, config.container_period);
    let mut images = tokio::time::interval_at(start + config.image_period, config.image_period);
    for t in [&mut containers, &mut images] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut tracker = ImageTracker::default();
    // Start tracking at once so that images get their first-detected time early.
    let fs_fallback = ctx.config.agent_dir().join("containerd");
    let logs_dir = ctx.config.agent_dir().join("logs");
    let never = [crate::image::PAUSE_IMAGE];
    let detect_only = ImageGcPolicy {
        high_threshold_percent: 101,
        ..config.images
    };
    let _ = collect_images(
        &ctx.runtime,
        &mut tracker,
        &detect_only,
        &never,
        &fs_fallback,
    )
    .await;
    loop {
        tokio::select! {
            _ = containers.tick() => {
                match collect_containers(&ctx.runtime, &config.containers, live_pods(&ctx, &statics)).await {
                    Ok(c) if c != Collected::default() => tracing::info!(containers = c.containers.len(), sandboxes = c.sandboxes.len(), "garbage collected dead containers"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("container garbage collection: {e:#}"),
                }
                if let Err(e) = collect_log_dirs(&ctx.runtime, &logs_dir, live_pods(&ctx, &statics)).await {
                    tracing::warn!("pod log garbage collection: {e:#}");
                }
            }
            _ = images.tick() => {
                if let Err(e) = collect_images(&ctx.runtime, &mut tracker, &config.images, &never, &fs_fallback).await {
                    tracing::warn!("image garbage collection: {e:#}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn c(id: &str, pod: &str, name: &str, running: bool, created: i64) -> GcContainer {
        GcContainer {
            id: id.into(),
            sandbox_id: format!("sb-{pod}"),
            pod_uid: pod.into(),
            name: name.into(),
            running,
            created_at: created * S,
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1000)
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn keeps_newest_dead_container_per_name_and_never_running_ones() {
        let cs = vec![
            c("a0", "p", "app", false, 10),
            c("a1", "p", "app", false, 20),
            c("a2", "p", "app", false, 30),
            c("a3", "p", "app", true, 40),
            c("s0", "p", "side", false, 15),
            c("r0", "q", "app", true, 5),
        ];
        let got = containers_to_remove(&cs, &|_| true, &ContainerGcPolicy::default(), now());
        assert_eq!(sorted(got), vec!["a0", "a1"]);
    }

    #[test]
    fn removes_every_dead_container_of_deleted_pods() {
        let cs = vec![
            c("a0", "gone", "app", false, 10),
            c("a1", "gone", "app", false, 20),
            c("b0", "gone", "b", true, 20),
            c("k0", "here", "app", false, 20),
        ];
        let got = containers_to_remove(&cs, &|u| u == "here", &ContainerGcPolicy::default(), now());
        assert_eq!(sorted(got), vec!["a0", "a1"]);
    }

    #[test]
    fn young_containers_and_unlimited_policy_are_kept() {
        let cs = vec![
            c("a0", "p", "app", false, 10),
            c("a1", "p", "app", false, 999),
            c("a2", "p", "app", false, 998),
        ];
        let policy = ContainerGcPolicy {
            min_age: Duration::from_secs(60),
            ..Default::default()
        };
        // a1/a2 are too young to be considered; a0 is the only (hence newest) collectable one.
        assert!(containers_to_remove(&cs, &|_| true, &policy, now()).is_empty());
        let unlimited = ContainerGcPolicy {
            max_per_pod_container: -1,
            ..Default::default()
        };
        assert!(containers_to_remove(&cs, &|_| true, &unlimited, now()).is_empty());
    }

    #[test]
    fn max_containers_evicts_evenly_then_oldest() {
        let cs = vec![
            c("a0", "p", "a", false, 10),
            c("a1", "p", "a", false, 11),
            c("b0", "p", "b", false, 12),
            c("b1", "p", "b", false, 13),
            c("x0", "q", "x", false, 1),
        ];
        let policy = ContainerGcPolicy {
            min_age: Duration::ZERO,
            max_per_pod_container: -1,
            max_containers: 2,
        };
        // 3 units, 2 allowed: one per unit (a1, b1, x0), then the oldest of those (x0) goes.
        let got = containers_to_remove(&cs, &|_| true, &policy, now());
        assert_eq!(sorted(got), vec!["a0", "b0", "x0"]);
    }

    fn sb(id: &str, pod: &str, ready: bool, created: i64) -> GcSandbox {
        GcSandbox {
            id: id.into(),
            pod_uid: pod.into(),
            ready,
            created_at: created * S,
        }
    }

    #[test]
    fn sandboxes_of_deleted_pods_go_and_existing_pods_keep_their_newest() {
        let sbs = vec![
            sb("p-old", "p", false, 1),
            sb("p-older", "p", false, 0),
            sb("p-new", "p", false, 5),
            sb("g-1", "gone", false, 1),
            sb("g-ready", "gone", true, 2),
            sb("g-busy", "gone", false, 3),
            sb("q-1", "q", true, 1),
        ];
        let mut busy = c("c", "gone", "x", false, 1);
        busy.sandbox_id = "g-busy".into();
        let mut dropped = c("d", "gone", "x", false, 1);
        dropped.sandbox_id = "g-1".into();
        let removed = HashSet::from(["d".to_string()]);
        let got = sandboxes_to_remove(&sbs, &[busy, dropped], &removed, &|u| u != "gone");
        assert_eq!(sorted(got), vec!["g-1", "p-old", "p-older"]);
    }

    #[test]
    fn log_dirs_of_gone_pods_without_sandboxes_go() {
        let dirs: Vec<String> = ["default_web_u1", "kube-system_dns_u2", "ns_x_u3", "junk"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let sandboxes = HashSet::from(["u3".to_string()]);
        let got = log_dirs_to_remove(&dirs, &|u| u == "u1", &sandboxes);
        assert_eq!(got, vec!["kube-system_dns_u2"]);
    }

    #[test]
    fn image_thresholds_follow_upstream_arithmetic() {
        let p = ImageGcPolicy::default();
        assert_eq!(bytes_to_free(1000, 200, &p), None); // 80 %
        assert_eq!(bytes_to_free(1000, 160, &p), None); // 84 %
        assert_eq!(bytes_to_free(1000, 151, &p), Some(49)); // 100 - 151*100/1000 = 85 (integer)
        assert_eq!(bytes_to_free(1000, 150, &p), Some(50)); // 85 %: down to 80 %
        assert_eq!(bytes_to_free(1000, 0, &p), Some(200));
        assert_eq!(bytes_to_free(0, 0, &p), None);
    }

    fn img(id: &str, size: u64, pinned: bool) -> GcImage {
        GcImage {
            id: id.into(),
            size,
            pinned,
        }
    }

    #[test]
    fn frees_least_recently_used_unused_old_enough_images() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut tr = ImageTracker::default();
        let all = vec![
            img("old", 10, false),
            img("used-before", 10, false),
            img("in-use", 10, false),
            img("pause", 10, true),
        ];
        tr.detect(&all, &HashSet::new(), t0);
        tr.detect(
            &all,
            &HashSet::from(["used-before".to_string()]),
            t0 + Duration::from_secs(10),
        );
        let mut with_new = all.clone();
        with_new.push(img("new", 10, false));
        let now = t0 + Duration::from_secs(300);
        tr.detect(&with_new, &HashSet::from(["in-use".to_string()]), now);
        let p = ImageGcPolicy::default();
        // Never used (old) before used long ago (used-before); in-use, pinned and new never go.
        assert_eq!(images_to_free(&tr, 15, &p, now), vec!["old", "used-before"]);
        assert_eq!(images_to_free(&tr, 5, &p, now), vec!["old"]);
        assert_eq!(
            images_to_free(&tr, 1000, &p, now),
            vec!["old", "used-before"]
        );
        // Vanished images are forgotten.
        tr.detect(&[img("in-use", 10, false)], &HashSet::new(), now);
        assert_eq!(tr.records.len(), 1);
    }
}
