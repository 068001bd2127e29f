//! The CronJob controller (upstream's pkg/controller/cronjob, the v2 controller): creates a
//! Job for each scheduled time of a standard cron schedule (optionally in `spec.timeZone`),
//! honouring concurrencyPolicy, startingDeadlineSeconds, suspend and the history limits, and
//! keeps `status.active`, `lastScheduleTime` and `lastSuccessfulTime`.

pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::core::ApiResource;
use kube::ResourceExt;

pub use crate::job::{Clock, FakeClock, SystemClock};
use crate::runtime::{
    controller_ref, get_controller_of, key_of, object_reference, run_workers, Cache, Change,
    Context, Control, WorkQueue,
};
pub use schedule::{Schedule, TimeZone};

/// The annotation with the time a Job of a CronJob was scheduled for (RFC 3339).
pub const CRONJOB_SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream stops counting missed start times beyond this many.
pub const MAX_MISSED_START_TIMES: i64 = 100;
/// Upstream's nextScheduleDelta: wake a little after the scheduled time.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

/// How many scheduled times were missed since the last one handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// None or one.
    None,
    /// Several.
    Few,
    /// More than [`MAX_MISSED_START_TIMES`].
    Many,
}

/// The latest scheduled time in `(earliest, now]`, if any, and how many were missed
/// (upstream's mostRecentScheduleTime).
pub fn most_recent_schedule_time(
    earliest: Timestamp,
    now: Timestamp,
    sched: &Schedule,
    tz: &TimeZone,
) -> Result<(Option<Timestamp>, Missed), String> {
    let Some(t1) = sched.next(earliest, tz) else {
        return Ok((None, Missed::None));
    };
    if t1 > now {
        return Ok((None, Missed::None));
    }
    let Some(t2) = sched.next(t1, tz) else {
        return Ok((Some(t1), Missed::None));
    };
    if t2 > now {
        return Ok((Some(t1), Missed::None));
    }
    let between = t2.duration_since(t1).as_secs();
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let elapsed = now.duration_since(t1).as_secs();
    let missed = elapsed / between + 1;
    let start = t1 + SignedDuration::from_secs((missed - 2) * between);
    let mut most_recent = t1;
    let mut t = sched.next(start.max(earliest), tz);
    while let Some(x) = t.filter(|x| *x <= now) {
        most_recent = x;
        t = sched.next(x, tz);
    }
    let kind = if missed > MAX_MISSED_START_TIMES {
        Missed::Many
    } else if missed > 1 {
        Missed::Few
    } else {
        Missed::None
    };
    Ok((Some(most_recent), kind))
}

/// The name of the Job for `scheduled`: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

fn job_finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

/// The CronJob controller.
pub struct CronJobController {
    /// The shared Job cache.
    pub jobs: Arc<Cache<Job>>,
    /// The shared CronJob cache.
    pub cronjobs: Arc<Cache<CronJob>>,
    /// Where writes go.
    pub control: Arc<dyn Control>,
    /// Keys to sync.
    pub queue: WorkQueue,
    /// The time source.
    pub clock: Arc<dyn Clock>,
}

impl CronJobController {
    /// A controller over the given caches, with handlers not yet registered.
    pub fn new(
        jobs: Arc<Cache<Job>>,
        cronjobs: Arc<Cache<CronJob>>,
        control: Arc<dyn Control>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(CronJobController {
            jobs,
            cronjobs,
            control,
            queue: WorkQueue::default(),
            clock,
        })
    }

    /// Registers the CronJob and Job change handlers that feed the queue.
    pub fn register_handlers(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.cronjobs.add_handler(move |c: &Change<CronJob>| {
            if let Some(me) = me.upgrade() {
                me.queue.add(key_of(c.object().as_ref()));
            }
        });
        let me = Arc::downgrade(self);
        self.jobs.add_handler(move |c: &Change<Job>| {
            let Some(me) = me.upgrade() else { return };
            let job = c.object();
            if let Some(r) = get_controller_of(&job.metadata).filter(|r| r.kind == "CronJob") {
                let ns = job.namespace().unwrap_or_default();
                me.queue.add(format!("{ns}/{}", r.name));
            }
        });
    }

    /// Reconciles the CronJob with key `key`; `Ok(Some(d))` asks for a re-sync after `d`.
    pub async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(cj) = self.cronjobs.get_by_key(key) else {
            return Ok(None);
        };
        let now = self.clock.now();
        let ns = cj.namespace().unwrap_or_default();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let jobs: Vec<Arc<Job>> = self
            .jobs
            .list(&ns)
            .into_iter()
            .filter(|j| get_controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        let old_status = cj.status.clone().unwrap_or_default();
        let mut status = old_status.clone();
        let (requeue, err) = self.sync_schedule(&cj, &jobs, &mut status, now).await;
        self.cleanup_finished(&cj, &jobs, &mut status).await;
        if status != old_status {
            let mut obj = (*cj).clone();
            obj.status = Some(status);
            self.control.update_status_obj(&obj).await?;
        }
        match err {
            Some(e) => Err(e),
            None => Ok(requeue),
        }
    }

    /// Reconciles the active list, then starts the Job due now, if any.
    async fn sync_schedule(
        &self,
        cj: &CronJob,
        jobs: &[Arc<Job>],
        status: &mut CronJobStatus,
        now: Timestamp,
    ) -> (Option<Duration>, Option<anyhow::Error>) {
        let mut active = status.active.clone().unwrap_or_default();
        for j in jobs {
            let j_uid = j.metadata.uid.clone();
            let found = active.iter().any(|r| r.uid == j_uid);
            let finished = job_finished(j);
            match finished {
                None if !found => {
                    let msg = format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        j.name_any()
                    );
                    self.control
                        .event_for(cj, "Warning", "UnexpectedJob", msg)
                        .await;
                }
                Some(cond) if found => {
                    active.retain(|r| r.uid != j_uid);
                    let msg = format!("Saw completed job: {}, condition: {cond}", j.name_any());
                    self.control
                        .event_for(cj, "Normal", "SawCompletedJob", msg)
                        .await;
                }
                _ => {}
            }
            if finished == Some("Complete") {
                if let Some(t) = j.status.as_ref().and_then(|s| s.completion_time.clone()) {
                    if status
                        .last_successful_time
                        .as_ref()
                        .is_none_or(|l| l.0 < t.0)
                    {
                        status.last_successful_time = Some(t);
                    }
                }
            }
        }
        // Active Jobs gone from the cache went missing.
        let known: Vec<Option<String>> = jobs.iter().map(|j| j.metadata.uid.clone()).collect();
        let mut kept = Vec::new();
        for r in active {
            if known.contains(&r.uid) {
                kept.push(r);
            } else {
                let msg = format!(
                    "Active job went missing: {}",
                    r.name.clone().unwrap_or_default()
                );
                self.control
                    .event_for(cj, "Normal", "MissingJob", msg)
                    .await;
            }
        }
        status.active = (!kept.is_empty()).then_some(kept);

        if cj.metadata.deletion_timestamp.is_some() {
            return (None, None);
        }
        let spec = cj.spec.clone().unwrap_or_default();
        let tz = match TimeZone::get(spec.time_zone.as_deref()) {
            Ok(tz) => tz,
            Err(e) => {
                let msg = format!(
                    "invalid timeZone: {:?}: {e}",
                    spec.time_zone.clone().unwrap_or_default()
                );
                self.control
                    .event_for(cj, "Warning", "UnknownTimeZone", msg)
                    .await;
                return (None, None);
            }
        };
        if spec.suspend.unwrap_or(false) {
            return (None, None);
        }
        let sched = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("unparseable schedule: {:?} : {e}", spec.schedule);
                self.control
                    .event_for(cj, "Warning", "UnparseableSchedule", msg)
                    .await;
                return (None, None);
            }
        };
        let mut earliest = status
            .last_schedule_time
            .as_ref()
            .or(cj.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
            .unwrap_or(now);
        if let Some(sds) = spec.starting_deadline_seconds {
            let deadline = now - SignedDuration::from_secs(sds);
            if deadline > earliest {
                earliest = deadline;
            }
        }
        let next_after = |from: Timestamp| -> Option<Duration> {
            let t = sched.next(from, &tz)?;
            let d = if t > now {
                Duration::try_from(t.duration_since(now)).unwrap_or_default()
            } else {
                Duration::ZERO
            };
            Some(d + NEXT_SCHEDULE_DELTA)
        };
        let (scheduled, missed) = match most_recent_schedule_time(earliest, now, &sched, &tz) {
            Ok(x) => x,
            Err(e) => {
                let msg = format!("invalid schedule: {} : {e}", spec.schedule);
                self.control
                    .event_for(cj, "Warning", "InvalidSchedule", msg)
                    .await;
                return (None, None);
            }
        };
        if missed == Missed::Many {
            self.control
                .event_for(
                    cj,
                    "Warning",
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
                )
                .await;
        }
        let Some(scheduled) = scheduled else {
            return (next_after(now), None);
        };
        let requeue = next_after(now);
        if let Some(sds) = spec.starting_deadline_seconds {
            if scheduled + SignedDuration::from_secs(sds) < now {
                let msg = format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled.strftime("%a, %d %b %Y %H:%M:%S %z")
                );
                self.control
                    .event_for(cj, "Normal", "MissSchedule", msg)
                    .await;
                return (requeue, None);
            }
        }
        let name = job_name(&cj.name_any(), scheduled);
        let already = status
            .active
            .iter()
            .flatten()
            .any(|r| r.name.as_deref() == Some(name.as_str()))
            || status.last_schedule_time.as_ref().map(|t| t.0) == Some(scheduled);
        if already {
            return (requeue, None);
        }
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        let active_count = status.active.as_ref().map_or(0, Vec::len);
        if policy == "Forbid" && active_count > 0 {
            self.control
                .event_for(
                    cj,
                    "Normal",
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                )
                .await;
            return (requeue, None);
        }
        if policy == "Replace" {
            for r in status.active.take().unwrap_or_default() {
                let jname = r.name.clone().unwrap_or_default();
                match self
                    .control
                    .delete(
                        &ApiResource::erase::<Job>(&()),
                        &cj.namespace().unwrap_or_default(),
                        &jname,
                        r.uid.as_deref(),
                        Some("Background"),
                    )
                    .await
                {
                    Ok(()) => {
                        self.control
                            .event_for(
                                cj,
                                "Normal",
                                "SuccessfulDelete",
                                format!("Deleted job {jname}"),
                            )
                            .await;
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        let msg = format!("Error deleting job: {e}");
                        self.control
                            .event_for(cj, "Warning", "FailedDelete", msg)
                            .await;
                        status.active.get_or_insert_with(Vec::new).push(r);
                        return (None, Some(e.into()));
                    }
                }
            }
        }
        let job = job_from_template(cj, &name, scheduled, &tz);
        match self.control.create_obj(&job).await {
            Ok(created) => {
                self.control
                    .event_for(
                        cj,
                        "Normal",
                        "SuccessfulCreate",
                        format!("Created job {name}"),
                    )
                    .await;
                status
                    .active
                    .get_or_insert_with(Vec::new)
                    .push(object_reference::<Job>(&created));
                status.last_schedule_time = Some(Time(scheduled));
                (requeue, None)
            }
            Err(e) if e.is_already_exists() => (None, Some(e.into())),
            Err(e) => {
                let msg = format!("Error creating job: {e}");
                self.control
                    .event_for(cj, "Warning", "FailedCreate", msg)
                    .await;
                (None, Some(e.into()))
            }
        }
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    async fn cleanup_finished(&self, cj: &CronJob, jobs: &[Arc<Job>], status: &mut CronJobStatus) {
        let spec = cj.spec.clone().unwrap_or_default();
        for (cond, limit) in [
            ("Complete", spec.successful_jobs_history_limit),
            ("Failed", spec.failed_jobs_history_limit),
        ] {
            let Some(limit) = limit else { continue };
            let mut done: Vec<&Arc<Job>> = jobs
                .iter()
                .filter(|j| job_finished(j) == Some(cond))
                .collect();
            let limit = limit.max(0) as usize;
            if done.len() <= limit {
                continue;
            }
            done.sort_by_key(|j| {
                (
                    j.status
                        .as_ref()
                        .and_then(|s| s.start_time.as_ref())
                        .map(|t| t.0),
                    j.name_any(),
                )
            });
            let n = done.len() - limit;
            for j in done.into_iter().take(n) {
                let r = self
                    .control
                    .delete(
                        &ApiResource::erase::<Job>(&()),
                        &j.namespace().unwrap_or_default(),
                        &j.name_any(),
                        j.metadata.uid.as_deref(),
                        Some("Background"),
                    )
                    .await;
                match r {
                    Ok(()) => {
                        if let Some(a) = status.active.as_mut() {
                            a.retain(|r| r.uid != j.metadata.uid);
                        }
                        self.control
                            .event_for(
                                cj,
                                "Normal",
                                "SuccessfulDelete",
                                format!("Deleted job {}", j.name_any()),
                            )
                            .await;
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => tracing::warn!(job = %j.name_any(), error = %e, "delete failed"),
                }
            }
        }
        if status.active.as_ref().is_some_and(Vec::is_empty) {
            status.active = None;
        }
    }
}

/// The Job for `scheduled` (upstream's getJobFromTemplate2).
pub fn job_from_template(cj: &CronJob, name: &str, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let spec = cj.spec.clone().unwrap_or_default();
    let tm = spec.job_template.metadata.clone().unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(
        CRONJOB_SCHEDULED_TIMESTAMP.into(),
        tz.format_rfc3339(scheduled),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: cj.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: Some(spec.job_template.spec.unwrap_or_default()),
        status: None,
    }
}

/// A reference to `job` as `status.active` holds it.
pub fn job_reference(job: &Job) -> ObjectReference {
    object_reference(job)
}

/// Runs the CronJob controller until dropped.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let c = CronJobController::new(
        ctx.informers.cache::<Job>(),
        ctx.informers.cache::<CronJob>(),
        ctx.control.clone(),
        Arc::new(SystemClock),
    );
    c.register_handlers();
    ctx.informers.wait_for_sync().await;
    for j in c.cronjobs.list_all() {
        c.queue.add(key_of(j.as_ref()));
    }
    let queue = c.queue.clone();
    run_workers("cronjob", queue, ctx.config.workers, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests;
