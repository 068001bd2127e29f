//! The Job controller (upstream's pkg/controller/job, v1.32 semantics): runs pods until
//! `completions` succeed (NonIndexed or Indexed), keeps at most `parallelism` active,
//! recreates failed pods with exponential backoff up to `backoffLimit`, enforces
//! `activeDeadlineSeconds` and `podFailurePolicy` (FailJob, FailIndex, Ignore, Count),
//! Indexed Jobs' `backoffLimitPerIndex` / `maxFailedIndexes` (`status.failedIndexes`, the
//! per-index failure-count annotations and per-index backoff) and `successPolicy`,
//! `podReplacementPolicy` (terminating pods hold their place under `Failed`) with
//! `status.terminating`, honours `suspend`, tracks terminated pods
//! with the `batch.kubernetes.io/job-tracking` finalizer and `uncountedTerminatedPods`, and
//! deletes finished Jobs after `ttlSecondsAfterFinished` (upstream's TTL-after-finished
//! controller, folded in here).
//!
//! Terminal conditions are delayed as in v1.32: `SuccessCriteriaMet` / `FailureTarget`
//! first, `Complete` / `Failed` once no pod of the Job is running or terminating.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use serde_json::json;

use crate::replicaset::{compare_for_deletion, slow_start_batch};
use crate::runtime::podutil::{self, LabelSelector};
use crate::runtime::{
    claim, controller_ref, delete_pod, get_controller_of, key_of, run_workers, ApiError, Cache,
    Change, Context, Control, Expectations, WorkQueue,
};

/// The finalizer the controller puts on its pods until it has counted them.
pub const JOB_TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation and label holding an Indexed Job pod's completion index.
pub const JOB_COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable exposing the completion index to containers.
pub const JOB_COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The annotation counting the failures of an index before this pod (backoffLimitPerIndex).
pub const JOB_INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// The annotation counting the ignored failures of an index before this pod.
pub const JOB_INDEX_IGNORED_FAILURE_COUNT: &str =
    "batch.kubernetes.io/job-index-ignored-failure-count";
/// Upstream's DefaultJobPodFailureBackOff.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream's MaxJobPodFailureBackOff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(360);
/// Upstream's MaxPodCreateDeletePerSync.
pub const MAX_POD_CREATE_DELETE_PER_SYNC: usize = 500;

/// The time source, so tests control it.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told (tests).
pub struct FakeClock(Mutex<Timestamp>);

impl FakeClock {
    /// A clock stopped at `t`.
    pub fn new(t: Timestamp) -> FakeClock {
        FakeClock(Mutex::new(t))
    }
    /// Sets the time.
    pub fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap() = t;
    }
    /// Moves the time forward by `d`.
    pub fn step(&self, d: Duration) {
        let mut t = self.0.lock().unwrap();
        *t += SignedDuration::try_from(d).unwrap_or(SignedDuration::ZERO);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

/// Knobs of the Job controller (tests shorten the backoff).
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// The delay after the first pod failure; doubles with each further failure.
    pub backoff_base: Duration,
    /// The longest delay between pod recreations.
    pub backoff_max: Duration,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            backoff_base: DEFAULT_BACKOFF,
            backoff_max: MAX_BACKOFF,
        }
    }
}

/// Consecutive failures since the last success (upstream's backoffRecord).
#[derive(Debug, Clone, Copy, Default)]
struct BackoffRecord {
    failures_after_last_success: u32,
    last_failure: Option<Timestamp>,
}

/// The Job controller.
pub struct JobController {
    /// The shared pod cache.
    pub pods: Arc<Cache<Pod>>,
    /// The shared Job cache.
    pub jobs: Arc<Cache<Job>>,
    /// Expected pod creations and deletions per Job key.
    pub expectations: Expectations,
    /// Pod UIDs whose finalizer removal is not yet seen, per Job key.
    finalizer_expectations: Mutex<HashMap<String, HashSet<String>>>,
    backoff: Mutex<HashMap<String, BackoffRecord>>,
    /// Where writes go.
    pub control: Arc<dyn Control>,
    /// Keys to sync: Job keys, and `pod:<ns>/<name>` for orphaned tracked pods.
    pub queue: WorkQueue,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// Backoff settings.
    pub options: JobOptions,
}

fn is_finished(job: &Job) -> Option<&JobCondition> {
    conditions(job)
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn conditions(job: &Job) -> &[JobCondition] {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

fn has_condition(status: &JobStatus, type_: &str) -> Option<JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
        .cloned()
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == JOB_TRACKING_FINALIZER)
}

fn is_indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

/// The completion index of a pod (annotation first, then label), if valid.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    let get = |m: &Option<std::collections::BTreeMap<String, String>>| {
        m.as_ref()
            .and_then(|m| m.get(JOB_COMPLETION_INDEX))
            .cloned()
    };
    let v = get(&pod.metadata.annotations).or_else(|| get(&pod.metadata.labels))?;
    v.parse::<i32>().ok().filter(|i| *i >= 0)
}

/// Parses `completedIndexes` (`"1,3-5"`), ignoring malformed parts.
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Formats indexes as upstream does: ascending, consecutive runs as `a-b`.
pub fn format_indexes(idx: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut it = idx.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// Upstream's isPodFailed: Failed, or (unless only Failed pods are replaced) deleted
/// before it succeeded.
fn is_pod_failed(pod: &Pod, job: &Job) -> bool {
    if podutil::phase(pod) == "Failed" {
        return true;
    }
    !only_replace_failed(job)
        && pod.metadata.deletion_timestamp.is_some()
        && podutil::phase(pod) != "Succeeded"
}

/// Upstream's onlyReplaceFailedPods: podReplacementPolicy Failed (implied by a
/// podFailurePolicy) makes terminating pods block their replacement.
fn only_replace_failed(job: &Job) -> bool {
    let spec = job.spec.as_ref();
    spec.and_then(|s| s.pod_failure_policy.as_ref()).is_some()
        || spec.and_then(|s| s.pod_replacement_policy.as_deref()) == Some("Failed")
}

fn has_backoff_limit_per_index(job: &Job) -> bool {
    is_indexed(job)
        && job
            .spec
            .as_ref()
            .and_then(|s| s.backoff_limit_per_index)
            .is_some()
}

fn annotation_count(pod: &Pod, key: &str) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|v| *v >= 0)
        .unwrap_or(0)
}

/// Counted and ignored failures of the pod's index before this pod.
fn index_failure_counts(pod: &Pod) -> (i32, i32) {
    (
        annotation_count(pod, JOB_INDEX_FAILURE_COUNT),
        annotation_count(pod, JOB_INDEX_IGNORED_FAILURE_COUNT),
    )
}

/// Whether a failed pod's failure counts (podFailurePolicy Ignore does not).
fn failure_counts(job: &Job, pod: &Pod) -> bool {
    podutil::phase(pod) != "Failed" || match_pod_failure_policy(job, pod) != PolicyAction::Ignore
}

/// Upstream's isIndexFailed: the pod failed with FailIndex, or its counted failure
/// exhausts backoffLimitPerIndex.
fn is_index_failed(job: &Job, pod: &Pod) -> bool {
    if !is_pod_failed(pod, job) {
        return false;
    }
    if podutil::phase(pod) == "Failed"
        && match_pod_failure_policy(job, pod) == PolicyAction::FailIndex
    {
        return true;
    }
    let limit = job
        .spec
        .as_ref()
        .and_then(|s| s.backoff_limit_per_index)
        .unwrap_or(i32::MAX);
    failure_counts(job, pod) && index_failure_counts(pod).0 >= limit
}

/// The failure counts a replacement of `replaced` carries (upstream's
/// getNewIndexFailureCounts).
fn new_index_failure_counts(job: &Job, replaced: Option<&Pod>) -> (i32, i32) {
    let Some(p) = replaced else {
        return (0, 0);
    };
    let (counted, ignored) = index_failure_counts(p);
    if failure_counts(job, p) {
        (counted + 1, ignored)
    } else {
        (counted, ignored + 1)
    }
}

/// Evaluates `spec.successPolicy` against the succeeded indexes (upstream's
/// matchSuccessPolicy); the message names the first rule met.
pub fn match_success_policy(job: &Job, succeeded: &BTreeSet<i32>) -> Option<String> {
    let spec = job.spec.as_ref()?;
    let policy = spec.success_policy.as_ref()?;
    if succeeded.is_empty() {
        return None;
    }
    let completions = spec.completions.unwrap_or(0);
    for (i, rule) in policy.rules.iter().enumerate() {
        let met = if let Some(idx) = &rule.succeeded_indexes {
            let required: BTreeSet<i32> = parse_indexes(idx)
                .into_iter()
                .filter(|i| *i < completions)
                .collect();
            if required.is_empty() {
                continue;
            }
            let done = required.intersection(succeeded).count() as i32;
            match rule.succeeded_count {
                Some(n) => done >= n,
                None => done == required.len() as i32,
            }
        } else if let Some(n) = rule.succeeded_count {
            succeeded.len() as i32 >= n
        } else {
            false
        };
        if met {
            return Some(format!("Matched rules at index {i}"));
        }
    }
    None
}

/// Upstream's getRemainingTimeForFailuresCount: `base * 2^(failures-1)` (capped at `max`)
/// after the last failure.
fn remaining_for_failures(
    failures: i32,
    last: Timestamp,
    now: Timestamp,
    base: Duration,
    max: Duration,
) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let delay = base.mul_f64(2f64.powi((failures - 1).min(30))).min(max);
    let until = last + SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO);
    if until <= now {
        Duration::ZERO
    } else {
        Duration::try_from(until.duration_since(now)).unwrap_or_default()
    }
}

/// What one manage pass did.
#[derive(Default)]
struct Managed {
    /// Pods created.
    created: Vec<Arc<Pod>>,
    /// Surplus pods deleted.
    deleted: Vec<Arc<Pod>>,
    /// When to look again (a backoff is running).
    requeue: Option<Duration>,
}

/// Per-index state manage needs beyond the counters.
struct IndexState<'a> {
    /// Indexes that succeeded.
    completed: &'a BTreeSet<i32>,
    /// Indexes failed for good (backoffLimitPerIndex).
    failed: &'a BTreeSet<i32>,
    /// Per index, the last failed pod kept (with its finalizer) until it is replaced.
    delayed: &'a HashMap<i32, Arc<Pod>>,
    /// Pods being deleted that have not terminated.
    terminating: &'a [Arc<Pod>],
}

/// When the pod finished (upstream's getFinishedTime): its containers' latest finish,
/// else when it stopped being Ready, else its deletion, else its creation (else `now`).
fn finish_time(pod: &Pod, now: Timestamp) -> Timestamp {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
        .or_else(|| {
            podutil::pod_condition(pod, "Ready")
                .filter(|c| c.status == "False")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0)
        })
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now)
}

/// What a podFailurePolicy decides for a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyAction {
    /// Fail the Job, with the message for its condition.
    FailJob(String),
    /// Do not count the failure.
    Ignore,
    /// Fail the pod's index (Jobs with backoffLimitPerIndex); counts the failure.
    FailIndex,
    /// Count the failure (also when no rule matches).
    Count,
}

/// Evaluates `job.spec.podFailurePolicy` for a failed pod (upstream's matchPodFailurePolicy).
pub fn match_pod_failure_policy(job: &Job, pod: &Pod) -> PolicyAction {
    let Some(policy) = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
    else {
        return PolicyAction::Count;
    };
    let status = pod.status.clone().unwrap_or_default();
    let pod_name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    for (i, rule) in policy.rules.iter().enumerate() {
        let mut matched: Option<String> = None;
        if let Some(req) = &rule.on_exit_codes {
            let lists = [
                status.container_statuses.clone().unwrap_or_default(),
                status.init_container_statuses.clone().unwrap_or_default(),
            ];
            'outer: for list in lists {
                for cs in list {
                    let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                        continue;
                    };
                    if req.container_name.as_ref().is_some_and(|n| *n != cs.name) {
                        continue;
                    }
                    if t.exit_code == 0 {
                        continue;
                    }
                    let in_values = req.values.contains(&t.exit_code);
                    let hit = match req.operator.as_str() {
                        "In" => in_values,
                        "NotIn" => !in_values,
                        _ => false,
                    };
                    if hit {
                        matched = Some(format!(
                            "Container {} for pod {pod_name} failed with exit code {} matching {} rule at index {i}",
                            cs.name, t.exit_code, rule.action
                        ));
                        break 'outer;
                    }
                }
            }
        }
        if let Some(patterns) = &rule.on_pod_conditions {
            for p in patterns {
                let want = if p.status.is_empty() {
                    "True"
                } else {
                    &p.status
                };
                if podutil::pod_condition(pod, &p.type_).is_some_and(|c| c.status == want) {
                    matched = Some(format!(
                        "Pod {pod_name} has condition {} matching {} rule at index {i}",
                        p.type_, rule.action
                    ));
                    break;
                }
            }
        }
        if let Some(msg) = matched {
            return match rule.action.as_str() {
                "FailJob" => PolicyAction::FailJob(msg),
                "Ignore" => PolicyAction::Ignore,
                "FailIndex" => PolicyAction::FailIndex,
                _ => PolicyAction::Count,
            };
        }
    }
    PolicyAction::Count
}

fn new_condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets the condition `c` (replacing one of the same type when its status changes).
fn set_condition(status: &mut JobStatus, c: JobCondition) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    match conds.iter_mut().find(|x| x.type_ == c.type_) {
        Some(x) if x.status == c.status => {}
        Some(x) => *x = c,
        None => conds.push(c),
    }
}

/// The pod template for index `index` of an Indexed Job (upstream's
/// addCompletionIndexAnnotation/Label, env var and hostname).
fn indexed_template(job: &Job, template: &PodTemplateSpec, index: i32) -> PodTemplateSpec {
    let mut t = template.clone();
    let meta = t.metadata.get_or_insert_with(ObjectMeta::default);
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(JOB_COMPLETION_INDEX.into(), index.to_string());
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(JOB_COMPLETION_INDEX.into(), index.to_string());
    if let Some(spec) = t.spec.as_mut() {
        let env = EnvVar {
            name: JOB_COMPLETION_INDEX_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{JOB_COMPLETION_INDEX}']"),
                }),
                ..Default::default()
            }),
        };
        let containers = spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten());
        for c in containers {
            let envs = c.env.get_or_insert_with(Vec::new);
            if !envs.iter().any(|e| e.name == JOB_COMPLETION_INDEX_ENV) {
                envs.push(env.clone());
            }
        }
        spec.hostname = Some(format!("{}-{index}", job.name_any()));
    }
    t
}

impl JobController {
    /// A controller over the given caches, with handlers not yet registered.
    pub fn new(
        pods: Arc<Cache<Pod>>,
        jobs: Arc<Cache<Job>>,
        control: Arc<dyn Control>,
        clock: Arc<dyn Clock>,
        options: JobOptions,
    ) -> Arc<Self> {
        Arc::new(JobController {
            pods,
            jobs,
            expectations: Expectations::default(),
            finalizer_expectations: Mutex::default(),
            backoff: Mutex::default(),
            control,
            queue: WorkQueue::default(),
            clock,
            options,
        })
    }

    /// Registers the Job and pod change handlers that feed the queue.
    pub fn register_handlers(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.jobs.add_handler(move |c: &Change<Job>| {
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

    fn job_of(&self, pod: &Pod) -> Option<Arc<Job>> {
        let r = get_controller_of(&pod.metadata)?;
        if r.kind != "Job" {
            return None;
        }
        let job = self
            .jobs
            .get(&pod.namespace().unwrap_or_default(), &r.name)?;
        (job.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(job)
    }

    fn on_pod_change(&self, change: &Change<Pod>) {
        let pod = change.object();
        let job = self.job_of(pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(job) = &job {
            let key = key_of(job.as_ref());
            match change {
                Change::Added(p) if p.metadata.deletion_timestamp.is_none() => {
                    self.expectations.creation_observed(&key)
                }
                Change::Added(_) | Change::Updated { .. }
                    if pod.metadata.deletion_timestamp.is_some() =>
                {
                    self.expectations
                        .deletion_observed(&key, &key_of(pod.as_ref()))
                }
                Change::Deleted(_) => self
                    .expectations
                    .deletion_observed(&key, &key_of(pod.as_ref())),
                _ => {}
            }
            if matches!(change, Change::Deleted(_)) || !has_finalizer(pod) {
                if let Some(s) = self.finalizer_expectations.lock().unwrap().get_mut(&key) {
                    s.remove(&uid);
                }
            }
            self.queue.add(key);
        } else if has_finalizer(pod) && !matches!(change, Change::Deleted(_)) {
            // No live Job counts this pod: release it.
            self.queue.add(format!("pod:{}", key_of(pod.as_ref())));
        }
    }

    fn finalizer_pending(&self, key: &str, uid: &str) -> bool {
        self.finalizer_expectations
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|s| s.contains(uid))
    }

    /// Removes the tracking finalizer from `pod`.
    async fn remove_finalizer(&self, pod: &Pod) -> Result<(), ApiError> {
        let rest: Vec<String> = pod
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != JOB_TRACKING_FINALIZER)
            .cloned()
            .collect();
        let fin = if rest.is_empty() {
            serde_json::Value::Null
        } else {
            json!(rest)
        };
        let patch = json!({"metadata": {"finalizers": fin, "uid": pod.metadata.uid}});
        match self
            .control
            .patch_obj::<Pod>(&pod.namespace().unwrap_or_default(), &pod.name_any(), patch)
            .await
        {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    /// Releases a tracked pod whose Job is gone or finished.
    async fn sync_orphan_pod(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(pod) = self.pods.get_by_key(key) else {
            return Ok(None);
        };
        if !has_finalizer(&pod) {
            return Ok(None);
        }
        if let Some(job) = self.job_of(&pod) {
            if is_finished(&job).is_none() {
                return Ok(None);
            }
        }
        self.remove_finalizer(&pod).await?;
        Ok(None)
    }

    /// Reconciles the Job with key `key` (or an orphan pod with key `pod:<key>`);
    /// `Ok(Some(d))` asks for a re-sync after `d`.
    pub async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        if let Some(pod_key) = key.strip_prefix("pod:") {
            return self.sync_orphan_pod(pod_key).await;
        }
        let Some(job) = self.jobs.get_by_key(key) else {
            self.expectations.delete(key);
            self.finalizer_expectations.lock().unwrap().remove(key);
            self.backoff.lock().unwrap().remove(key);
            return Ok(None);
        };
        let now = self.clock.now();
        if let Some(done) = is_finished(&job) {
            self.backoff.lock().unwrap().remove(key);
            return self.sync_finished(&job, done.clone(), now).await;
        }
        let ns = job.namespace().unwrap_or_default();
        let selector = match podutil::selector(job.spec.as_ref().and_then(|s| s.selector.as_ref()))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%key, error = %e, "invalid selector");
                return Ok(None);
            }
        };
        // Read before the pods: a creation observed after the listing must not count as
        // seen by it (upstream checks expectations first for the same reason).
        let satisfied = self.expectations.satisfied(key);
        let pods = self.claimed_pods(&job, &selector, &ns).await?;
        self.sync_active(key, &job, pods, now, satisfied).await
    }

    async fn claimed_pods(
        &self,
        job: &Job,
        selector: &LabelSelector,
        ns: &str,
    ) -> Result<Vec<Arc<Pod>>, ApiError> {
        let all = self.pods.list(ns);
        claim(self.control.as_ref(), job, selector, all, |p: &Pod| {
            podutil::is_pod_active(p)
        })
        .await
    }

    /// A finished Job: release pods still tracked, then apply ttlSecondsAfterFinished.
    async fn sync_finished(
        &self,
        job: &Job,
        done: JobCondition,
        now: Timestamp,
    ) -> anyhow::Result<Option<Duration>> {
        let ns = job.namespace().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        for p in self.pods.list(&ns) {
            if has_finalizer(&p) && get_controller_of(&p.metadata).is_some_and(|r| r.uid == uid) {
                self.remove_finalizer(&p).await?;
            }
        }
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Ok(None);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let finished_at = job
            .status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref())
            .or(done.last_transition_time.as_ref())
            .map(|t| t.0)
            .unwrap_or(now);
        let expire = finished_at + SignedDuration::from_secs(ttl as i64);
        if expire > now {
            let left = expire.duration_since(now);
            return Ok(Some(Duration::try_from(left).unwrap_or_default()));
        }
        match self
            .control
            .delete(
                &kube::core::ApiResource::erase::<Job>(&()),
                &ns,
                &job.name_any(),
                job.metadata.uid.as_deref(),
                Some("Background"),
            )
            .await
        {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(None),
        }
    }

    async fn sync_active(
        &self,
        key: &str,
        job: &Arc<Job>,
        pods: Vec<Arc<Pod>>,
        now: Timestamp,
        satisfied: bool,
    ) -> anyhow::Result<Option<Duration>> {
        let spec = job.spec.clone().unwrap_or_default();
        let indexed = is_indexed(job);
        let completions = spec.completions;
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let backoff_limit = spec.backoff_limit.unwrap_or(
            // As upstream defaults it: with per-index limits only those apply.
            if spec.backoff_limit_per_index.is_some() {
                i32::MAX
            } else {
                6
            },
        );
        let suspended = spec.suspend.unwrap_or(false);
        let old_status = job.status.clone().unwrap_or_default();
        let mut status = old_status.clone();
        let mut requeue: Option<Duration> = None;
        let want = |d: Duration, r: &mut Option<Duration>| {
            *r = Some(r.map_or(d, |x| x.min(d)));
        };

        // 1. Count newly terminated pods into uncountedTerminatedPods.
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut unc_succ: Vec<String> = uncounted.succeeded.clone().unwrap_or_default();
        let mut unc_fail: Vec<String> = uncounted.failed.clone().unwrap_or_default();
        let mut completed: BTreeSet<i32> =
            parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
        let mut failure_target: Option<JobCondition> = has_condition(&status, "FailureTarget");
        let mut new_failed_times = Vec::new();
        let mut new_succeeded_times = Vec::new();
        let mut ignored: Vec<Arc<Pod>> = Vec::new();

        // backoffLimitPerIndex: failed indexes, and per index the last failed pod, whose
        // finalizer stays until its replacement carries the failure count.
        let per_index = has_backoff_limit_per_index(job);
        let c_total = completions.unwrap_or(0);
        let mut failed_idx: BTreeSet<i32> = BTreeSet::new();
        let mut delayed: HashMap<i32, Arc<Pod>> = HashMap::new();
        let counting = |p: &Arc<Pod>| {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            has_finalizer(p)
                && !self.finalizer_pending(key, &uid)
                && !unc_succ.contains(&uid)
                && !unc_fail.contains(&uid)
        };
        let valid_index = |p: &Pod| completion_index(p).filter(|i| *i < c_total);
        let mut finishing_known = failure_target.is_some()
            || has_condition(&status, "SuccessCriteriaMet").is_some()
            || job.metadata.deletion_timestamp.is_some();
        if per_index {
            failed_idx = parse_indexes(status.failed_indexes.as_deref().unwrap_or(""))
                .into_iter()
                .filter(|i| *i < c_total)
                .collect();
            failed_idx.extend(
                pods.iter()
                    .filter(|p| is_index_failed(job, p))
                    .filter_map(|p| valid_index(p)),
            );
            let mut succeeded_now = completed.clone();
            succeeded_now.extend(
                pods.iter()
                    .filter(|p| has_finalizer(p) && podutil::phase(p) == "Succeeded")
                    .filter_map(|p| valid_index(p)),
            );
            let active_idx: HashSet<i32> = pods
                .iter()
                .filter(|p| podutil::is_pod_active(p))
                .filter_map(|p| completion_index(p))
                .collect();
            for p in pods.iter().filter(|p| counting(p) && is_pod_failed(p, job)) {
                let Some(ix) = valid_index(p) else { continue };
                if succeeded_now.contains(&ix)
                    || failed_idx.contains(&ix)
                    || active_idx.contains(&ix)
                {
                    continue;
                }
                let abs = |q: &Pod| {
                    let (a, b) = index_failure_counts(q);
                    a + b
                };
                let replace = delayed.get(&ix).is_none_or(|last| {
                    abs(last) <= abs(p) && finish_time(p, now) >= finish_time(last, now)
                });
                if replace {
                    delayed.insert(ix, p.clone());
                }
            }
            let max_failed = spec.max_failed_indexes;
            finishing_known = finishing_known
                || max_failed.is_some_and(|m| failed_idx.len() as i32 > m)
                || (!failed_idx.is_empty()
                    && (failed_idx.len() + succeeded_now.len()) as i32 >= c_total)
                || match_success_policy(job, &succeeded_now).is_some();
        }
        // Once the Job failed, every pod that did not succeed counts as failed.
        let failing_known = failure_target.is_some();
        let mut held = 0;
        for p in &pods {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            if !has_finalizer(p)
                || self.finalizer_pending(key, &uid)
                || unc_succ.contains(&uid)
                || unc_fail.contains(&uid)
            {
                continue;
            }
            if !finishing_known
                && valid_index(p).is_some_and(|ix| {
                    delayed
                        .get(&ix)
                        .is_some_and(|d| d.metadata.uid == p.metadata.uid)
                })
            {
                held += 1;
                continue;
            }
            if podutil::phase(p) == "Succeeded" {
                if indexed {
                    match completion_index(p) {
                        Some(i) if completions.is_some_and(|c| i < c) => {
                            completed.insert(i);
                        }
                        // Not a valid index: only release it.
                        _ => {
                            ignored.push(p.clone());
                            continue;
                        }
                    }
                }
                unc_succ.push(uid);
                new_succeeded_times.push(finish_time(p, now));
            } else if is_pod_failed(p, job) || failing_known {
                let action = if podutil::phase(p) == "Failed" {
                    match_pod_failure_policy(job, p)
                } else {
                    PolicyAction::Count
                };
                match action {
                    PolicyAction::Ignore => {
                        ignored.push(p.clone());
                        continue;
                    }
                    PolicyAction::FailJob(msg) if failure_target.is_none() => {
                        failure_target = Some(new_condition(
                            "FailureTarget",
                            "PodFailurePolicy",
                            &msg,
                            now,
                        ));
                    }
                    _ => {}
                }
                unc_fail.push(uid);
                new_failed_times.push(finish_time(p, now));
            }
        }
        let job_has_new_failure = !new_failed_times.is_empty();
        self.update_backoff(key, &new_succeeded_times, &new_failed_times);

        // Flush the uncounted UIDs before releasing any pod, so a crash never loses one.
        let mut current: Arc<Job> = job.clone();
        if unc_succ.len() != uncounted.succeeded.as_ref().map_or(0, Vec::len)
            || unc_fail.len() != uncounted.failed.as_ref().map_or(0, Vec::len)
        {
            uncounted.succeeded = Some(unc_succ.clone());
            uncounted.failed = Some(unc_fail.clone());
            status.uncounted_terminated_pods = Some(uncounted.clone());
            // Indexes are recorded before the finalizers go: once released, a pod no
            // longer tells a lagging sync that its index is done.
            if indexed {
                status.completed_indexes = Some(format_indexes(&completed));
            }
            if per_index {
                status.failed_indexes = Some(format_indexes(&failed_idx));
            }
            let mut obj = (**job).clone();
            obj.status = Some(status.clone());
            current = Arc::new(self.control.update_status_obj(&obj).await?);
        }

        // 2. Release counted pods (and ignored ones).
        let to_release: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| has_finalizer(p))
            .filter(|p| {
                let uid = p.metadata.uid.as_deref().unwrap_or_default();
                unc_succ.iter().any(|u| u == uid) || unc_fail.iter().any(|u| u == uid)
            })
            .chain(ignored.iter())
            .collect();
        let mut released: HashSet<String> = HashSet::new();
        let mut release_err = None;
        for p in to_release {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            self.finalizer_expectations
                .lock()
                .unwrap()
                .entry(key.to_string())
                .or_default()
                .insert(uid.clone());
            match self.remove_finalizer(p).await {
                Ok(()) => {
                    released.insert(uid);
                }
                Err(e) => {
                    if let Some(s) = self.finalizer_expectations.lock().unwrap().get_mut(key) {
                        s.remove(&uid);
                    }
                    release_err.get_or_insert(e);
                }
            }
        }
        // UIDs whose pods are released or gone move to the counters.
        let live: HashMap<String, &Arc<Pod>> = pods
            .iter()
            .map(|p| (p.metadata.uid.clone().unwrap_or_default(), p))
            .collect();
        let is_free = |uid: &String| {
            released.contains(uid) || live.get(uid).is_none_or(|p| !has_finalizer(p))
        };
        let (done_s, keep_s): (Vec<String>, Vec<String>) =
            unc_succ.into_iter().partition(|u| is_free(u));
        let (done_f, keep_f): (Vec<String>, Vec<String>) =
            unc_fail.into_iter().partition(|u| is_free(u));
        status.succeeded = Some(status.succeeded.unwrap_or(0) + done_s.len() as i32);
        status.failed = Some(status.failed.unwrap_or(0) + done_f.len() as i32);
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: Some(keep_s.clone()),
            failed: Some(keep_f.clone()),
        });
        if indexed {
            status.completed_indexes = Some(format_indexes(&completed));
        }
        if per_index {
            status.failed_indexes = Some(format_indexes(&failed_idx));
        }
        let succeeded = status.succeeded.unwrap_or(0) + keep_s.len() as i32;
        let failed = status.failed.unwrap_or(0) + keep_f.len() as i32;

        let mut active: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| podutil::is_pod_active(p))
            .cloned()
            .collect();
        let terminating_pods: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_some()
                    && !matches!(podutil::phase(p), "Succeeded" | "Failed")
            })
            .cloned()
            .collect();
        let terminating = terminating_pods.len() as i32;
        // Pods this sync deletes are terminating from now on (upstream adds them).
        let mut deleted_now = 0;

        // 3. Decide whether the Job met its success or failure criteria.
        let mut success_met = has_condition(&status, "SuccessCriteriaMet");
        if failure_target.is_none() && success_met.is_none() {
            let backoff_exceeded = (job_has_new_failure && failed > backoff_limit)
                || past_backoff_limit_on_failure(job, &active, backoff_limit);
            if backoff_exceeded {
                failure_target = Some(new_condition(
                    "FailureTarget",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    now,
                ));
            } else if let Some(ads) = spec.active_deadline_seconds.filter(|_| !suspended) {
                if let Some(start) = status.start_time.as_ref().map(|t| t.0) {
                    let deadline = start + SignedDuration::from_secs(ads);
                    if deadline <= now {
                        failure_target = Some(new_condition(
                            "FailureTarget",
                            "DeadlineExceeded",
                            "Job was active longer than specified deadline",
                            now,
                        ));
                    } else {
                        let left = deadline.duration_since(now);
                        want(Duration::try_from(left).unwrap_or_default(), &mut requeue);
                    }
                }
            }
        }
        if failure_target.is_none() && success_met.is_none() && per_index {
            if spec
                .max_failed_indexes
                .is_some_and(|m| failed_idx.len() as i32 > m)
            {
                failure_target = Some(new_condition(
                    "FailureTarget",
                    "MaxFailedIndexesExceeded",
                    "Job has exceeded the specified maximal number of failed indexes",
                    now,
                ));
            } else if !failed_idx.is_empty()
                && (failed_idx.len() + completed.len()) as i32 >= c_total
            {
                failure_target = Some(new_condition(
                    "FailureTarget",
                    "FailedIndexes",
                    "Job has failed indexes",
                    now,
                ));
            }
        }
        if failure_target.is_none() && success_met.is_none() && indexed {
            if let Some(msg) = match_success_policy(job, &completed) {
                success_met = Some(new_condition(
                    "SuccessCriteriaMet",
                    "SuccessPolicy",
                    &msg,
                    now,
                ));
            }
        }
        if failure_target.is_none() && success_met.is_none() {
            let complete = match completions {
                None => succeeded > 0 && active.is_empty(),
                Some(c) if indexed => completed.len() as i32 >= c,
                Some(c) => succeeded >= c,
            };
            if complete {
                success_met = Some(new_condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                ));
            }
        }

        let mut manage_err: Option<ApiError> = release_err;
        if let Some(target) = failure_target.clone().or(success_met.clone()) {
            set_condition(&mut status, target.clone());
            // Finishing: no pod may keep running.
            match self.delete_pods(key, job, &active, false).await {
                Ok(()) => deleted_now = active.len() as i32,
                Err(e) => {
                    manage_err.get_or_insert(e);
                }
            }
            let no_pods_left = terminating == 0
                && held == 0
                && active.is_empty()
                && keep_s.is_empty()
                && keep_f.is_empty();
            active.clear();
            if no_pods_left {
                let (type_, event_type) = if target.type_ == "FailureTarget" {
                    ("Failed", "Warning")
                } else {
                    ("Complete", "Normal")
                };
                let reason = target.reason.clone().unwrap_or_default();
                let message = target.message.clone().unwrap_or_default();
                set_condition(&mut status, new_condition(type_, &reason, &message, now));
                if type_ == "Complete" {
                    status.completion_time = Some(Time(now));
                    self.control
                        .event_for(job.as_ref(), "Normal", "Completed", "Job completed".into())
                        .await;
                } else {
                    self.control
                        .event_for(job.as_ref(), event_type, &reason, message)
                        .await;
                }
            }
        } else if suspended {
            match self.delete_pods(key, job, &active, true).await {
                Ok(()) => deleted_now = active.len() as i32,
                Err(e) => {
                    manage_err.get_or_insert(e);
                }
            }
            active.clear();
            if has_condition(&status, "Suspended").is_none() {
                set_condition(
                    &mut status,
                    new_condition("Suspended", "JobSuspended", "Job suspended", now),
                );
                self.control
                    .event_for(job.as_ref(), "Normal", "Suspended", "Job suspended".into())
                    .await;
            }
            status.start_time = None;
        } else {
            if has_condition(&status, "Suspended").is_some() {
                let mut c = new_condition("Suspended", "JobResumed", "Job resumed", now);
                c.status = "False".into();
                set_condition(&mut status, c);
                self.control
                    .event_for(job.as_ref(), "Normal", "Resumed", "Job resumed".into())
                    .await;
                status.start_time = Some(Time(now));
            }
            if status.start_time.is_none() {
                status.start_time = Some(Time(now));
                if let Some(ads) = spec.active_deadline_seconds {
                    want(Duration::from_secs(ads.max(0) as u64), &mut requeue);
                }
            }
            if satisfied && job.metadata.deletion_timestamp.is_none() {
                let state = IndexState {
                    completed: &completed,
                    failed: &failed_idx,
                    delayed: &delayed,
                    terminating: &terminating_pods,
                };
                match self
                    .manage(key, job, &active, succeeded, parallelism, &state)
                    .await
                {
                    Ok(m) => {
                        if let Some(d) = m.requeue {
                            want(d, &mut requeue);
                        }
                        active.retain(|p| !m.deleted.iter().any(|d| Arc::ptr_eq(d, p)));
                        deleted_now += m.deleted.len() as i32;
                        active.extend(m.created);
                    }
                    Err(e) => {
                        manage_err.get_or_insert(e);
                    }
                }
            }
        }

        status.active = Some(active.len() as i32);
        status.ready = Some(active.iter().filter(|p| podutil::is_pod_ready(p)).count() as i32);
        status.terminating = Some(terminating + deleted_now);
        let base = current.status.clone().unwrap_or_default();
        if base != status {
            let mut obj = (*current).clone();
            obj.status = Some(status);
            self.control.update_status_obj(&obj).await?;
        }
        if let Some(e) = manage_err {
            return Err(e.into());
        }
        Ok(requeue)
    }

    fn update_backoff(&self, key: &str, succeeded: &[Timestamp], failed: &[Timestamp]) {
        if succeeded.is_empty() && failed.is_empty() {
            return;
        }
        let mut map = self.backoff.lock().unwrap();
        let rec = map.entry(key.to_string()).or_default();
        if let Some(last_success) = succeeded.iter().max() {
            let after: Vec<&Timestamp> = failed.iter().filter(|t| *t > last_success).collect();
            rec.failures_after_last_success = after.len() as u32;
            rec.last_failure = after.into_iter().max().copied();
        } else {
            rec.failures_after_last_success += failed.len() as u32;
            rec.last_failure = failed.iter().max().copied().max(rec.last_failure);
        }
    }

    /// How long until a new pod may be created (upstream's getRemainingTime).
    fn remaining_backoff(&self, key: &str, now: Timestamp) -> Duration {
        let map = self.backoff.lock().unwrap();
        let Some(rec) = map.get(key) else {
            return Duration::ZERO;
        };
        let (n, Some(last)) = (rec.failures_after_last_success, rec.last_failure) else {
            return Duration::ZERO;
        };
        if n == 0 {
            return Duration::ZERO;
        }
        let factor = 2f64.powi((n - 1).min(30) as i32);
        let delay = self
            .options
            .backoff_base
            .mul_f64(factor)
            .min(self.options.backoff_max);
        let until = last + SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO);
        if until <= now {
            Duration::ZERO
        } else {
            Duration::try_from(until.duration_since(now)).unwrap_or_default()
        }
    }

    /// Deletes `pods`; with `release`, their tracking finalizer goes first so they are
    /// never counted (upstream's deleteJobPods, for surplus pods and suspension), else
    /// it stays so they count as failed (upstream's deleteActivePods, when finishing).
    async fn delete_pods(
        &self,
        key: &str,
        job: &Job,
        pods: &[Arc<Pod>],
        release: bool,
    ) -> Result<(), ApiError> {
        if pods.is_empty() {
            return Ok(());
        }
        self.expectations
            .expect_deletions(key, pods.iter().map(|p| key_of(p.as_ref())).collect());
        let mut first = None;
        for p in pods {
            let released = if release && has_finalizer(p) {
                self.remove_finalizer(p).await
            } else {
                Ok(())
            };
            let r = match released {
                Ok(()) => delete_pod(self.control.as_ref(), job, p).await,
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                self.expectations
                    .deletion_observed(key, &key_of(p.as_ref()));
                if !e.is_not_found() {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Creates or deletes pods toward the wanted number of active ones (upstream's
    /// manageJob); returns the pods created and a re-sync delay while backing off.
    async fn manage(
        &self,
        key: &str,
        job: &Job,
        active: &[Arc<Pod>],
        succeeded: i32,
        parallelism: i32,
        state: &IndexState<'_>,
    ) -> Result<Managed, ApiError> {
        let spec = job.spec.clone().unwrap_or_default();
        let indexed = is_indexed(job);
        let now = self.clock.now();
        let completed = state.completed;
        let mut excess: Vec<Arc<Pod>> = Vec::new();
        let mut kept: Vec<Arc<Pod>> = active.to_vec();
        if indexed {
            // Pods with an invalid, out-of-range, completed or duplicate index go first.
            let mut seen = HashSet::new();
            let c = spec.completions.unwrap_or(0);
            let (bad, good): (Vec<_>, Vec<_>) =
                active
                    .iter()
                    .cloned()
                    .partition(|p| match completion_index(p) {
                        Some(i) if i < c && !completed.contains(&i) => !seen.insert(i),
                        _ => true,
                    });
            excess = bad;
            kept = good;
        }
        let want_active = match spec.completions {
            // Without completions, the first success stops new pods but lets others finish.
            None if succeeded > 0 => kept.len() as i32,
            None => parallelism,
            Some(c) => {
                let done = if indexed {
                    completed.len() as i32
                } else {
                    succeeded
                };
                (c - done).clamp(0, parallelism)
            }
        } as usize;
        if kept.len() > want_active {
            kept.sort_by(|a, b| compare_for_deletion(a, 0, b, 0, now));
            let n = kept.len() - want_active;
            excess.extend(kept.drain(..n));
        }
        if !excess.is_empty() {
            excess.truncate(MAX_POD_CREATE_DELETE_PER_SYNC);
            self.delete_pods(key, job, &excess, true).await?;
            return Ok(Managed {
                deleted: excess,
                ..Default::default()
            });
        }
        // With podReplacementPolicy Failed, a terminating pod still holds its place.
        let only_failed = only_replace_failed(job);
        let terminating = if only_failed {
            state.terminating.len()
        } else {
            0
        };
        if kept.len() + terminating >= want_active {
            return Ok(Managed::default());
        }
        let per_index = has_backoff_limit_per_index(job);
        if !per_index {
            let remaining = self.remaining_backoff(key, now);
            if !remaining.is_zero() {
                return Ok(Managed {
                    requeue: Some(remaining),
                    ..Default::default()
                });
            }
        }
        let template = spec.template.clone();
        let n = (want_active - kept.len() - terminating).min(MAX_POD_CREATE_DELETE_PER_SYNC);
        let mut indexes: Vec<Option<i32>> = if indexed {
            let mut busy: HashSet<i32> = kept.iter().filter_map(|p| completion_index(p)).collect();
            if only_failed {
                busy.extend(state.terminating.iter().filter_map(|p| completion_index(p)));
            }
            (0..spec.completions.unwrap_or(0))
                .filter(|i| !completed.contains(i) && !busy.contains(i))
                .filter(|i| !state.failed.contains(i))
                .take(n)
                .map(Some)
                .collect()
        } else {
            vec![None; n]
        };
        // Each index backs off on its own failures (upstream's
        // getPodCreationInfoForIndependentIndexes); a re-sync is due when the first
        // waiting index may start, even if others start now.
        let mut soonest: Option<Duration> = None;
        if per_index {
            indexes.retain(|i| {
                let Some(last) = i.and_then(|i| state.delayed.get(&i)) else {
                    return true;
                };
                let (a, b) = index_failure_counts(last);
                let left = remaining_for_failures(
                    a + b + 1,
                    finish_time(last, now),
                    now,
                    self.options.backoff_base,
                    self.options.backoff_max,
                );
                if left.is_zero() {
                    return true;
                }
                soonest = Some(soonest.map_or(left, |s| s.min(left)));
                false
            });
            if indexes.is_empty() {
                return Ok(Managed {
                    requeue: soonest,
                    ..Default::default()
                });
            }
        }
        let n = indexes.len();
        self.expectations.expect_creations(key, n);
        let next = Mutex::new(indexes.into_iter());
        let created = Mutex::new(Vec::new());
        let (ok, err) = slow_start_batch(n, 1, || {
            let idx = next.lock().unwrap().next().flatten();
            let template = &template;
            let created = &created;
            let replaced = idx.and_then(|i| state.delayed.get(&i)).cloned();
            async move {
                let p = self
                    .create_pod(job, template, idx, replaced.as_deref())
                    .await?;
                created.lock().unwrap().push(Arc::new(p));
                Ok(())
            }
        })
        .await;
        for _ in ok..n {
            self.expectations.creation_observed(key);
        }
        if let Some(e) = err {
            return Err(e);
        }
        Ok(Managed {
            created: created.into_inner().unwrap(),
            deleted: Vec::new(),
            requeue: soonest,
        })
    }

    /// Creates one pod of `job` (with the tracking finalizer; Indexed: for `index`).
    async fn create_pod(
        &self,
        job: &Job,
        template: &PodTemplateSpec,
        index: Option<i32>,
        replaced: Option<&Pod>,
    ) -> Result<Pod, ApiError> {
        let mut t = match index {
            Some(i) => indexed_template(job, template, i),
            None => template.clone(),
        };
        if index.is_some() && has_backoff_limit_per_index(job) {
            let (counted, ignored) = new_index_failure_counts(job, replaced);
            let a = t
                .metadata
                .get_or_insert_with(ObjectMeta::default)
                .annotations
                .get_or_insert_with(Default::default);
            a.insert(JOB_INDEX_FAILURE_COUNT.into(), counted.to_string());
            if ignored > 0 {
                a.insert(JOB_INDEX_IGNORED_FAILURE_COUNT.into(), ignored.to_string());
            }
        }
        let tm = t.metadata.clone().unwrap_or_default();
        let mut finalizers = tm.finalizers.unwrap_or_default();
        finalizers.push(JOB_TRACKING_FINALIZER.into());
        let prefix = match index {
            Some(i) => format!("{}-{i}-", job.name_any()),
            None => format!("{}-", job.name_any()),
        };
        let pod = Pod {
            metadata: ObjectMeta {
                namespace: job.metadata.namespace.clone(),
                generate_name: Some(prefix),
                labels: tm.labels,
                annotations: tm.annotations,
                finalizers: Some(finalizers),
                owner_references: Some(vec![controller_ref(job)]),
                ..Default::default()
            },
            spec: t.spec,
            status: None,
        };
        match self.control.create_obj(&pod).await {
            Ok(p) => {
                let msg = format!("Created pod: {}", p.name_any());
                self.control
                    .event_for(job, "Normal", "SuccessfulCreate", msg)
                    .await;
                Ok(p)
            }
            Err(e) => {
                let msg = format!("Error creating: {e}");
                self.control
                    .event_for(job, "Warning", "FailedCreate", msg)
                    .await;
                Err(e)
            }
        }
    }
}

/// Upstream's pastBackoffLimitOnFailure: with restartPolicy OnFailure, container restarts
/// of active pods count toward backoffLimit.
fn past_backoff_limit_on_failure(job: &Job, active: &[Arc<Pod>], limit: i32) -> bool {
    let on_failure = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let mut restarts = 0;
    for p in active {
        let s = p.status.clone().unwrap_or_default();
        for c in s
            .init_container_statuses
            .iter()
            .flatten()
            .chain(s.container_statuses.iter().flatten())
        {
            restarts += c.restart_count;
        }
    }
    if limit == 0 {
        return restarts > 0;
    }
    restarts >= limit
}

/// Runs the Job controller with `options` until dropped.
pub async fn run_with(ctx: Arc<Context>, options: JobOptions) -> anyhow::Result<()> {
    let c = JobController::new(
        ctx.informers.cache::<Pod>(),
        ctx.informers.cache::<Job>(),
        ctx.control.clone(),
        Arc::new(SystemClock),
        options,
    );
    c.register_handlers();
    ctx.informers.wait_for_sync().await;
    for j in c.jobs.list_all() {
        c.queue.add(key_of(j.as_ref()));
    }
    let queue = c.queue.clone();
    run_workers("job", queue, ctx.config.workers, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

/// Runs the Job controller until dropped.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    run_with(ctx, JobOptions::default()).await
}

#[cfg(test)]
mod tests;
