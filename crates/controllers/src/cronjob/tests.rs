use super::*;
use crate::runtime::{RecordingControl, SharedInformers, Verb};
use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use serde_json::{json, Value};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn next(spec: &str, after: &str) -> String {
    Schedule::parse(spec)
        .unwrap()
        .next(ts(after), &TimeZone::get(None).unwrap())
        .unwrap()
        .to_string()
}

#[test]
fn parses_standard_schedules() {
    assert_eq!(
        next("*/15 * * * *", "2026-01-01T00:07:00Z"),
        "2026-01-01T00:15:00Z"
    );
    assert_eq!(
        next("0 9 * * mon-fri", "2026-01-02T10:00:00Z"),
        "2026-01-05T09:00:00Z"
    );
    assert_eq!(
        next("@hourly", "2026-01-01T00:00:00Z"),
        "2026-01-01T01:00:00Z"
    );
    assert_eq!(
        next("@monthly", "2026-01-15T00:00:00Z"),
        "2026-02-01T00:00:00Z"
    );
    assert_eq!(
        next("30 6-16/4 * * *", "2026-01-01T07:00:00Z"),
        "2026-01-01T10:30:00Z"
    );
    assert_eq!(
        next("0 0 1 jan,jul *", "2026-02-01T00:00:00Z"),
        "2026-07-01T00:00:00Z"
    );
    assert_eq!(
        next("5/20 * * * *", "2026-01-01T00:06:00Z"),
        "2026-01-01T00:25:00Z"
    );
    // Day of month and day of week both restricted: either matches.
    assert_eq!(
        next("0 0 13 * fri", "2026-01-01T00:00:00Z"),
        "2026-01-02T00:00:00Z"
    );
    // Strictly after.
    assert_eq!(
        next("0 * * * *", "2026-01-01T01:00:00Z"),
        "2026-01-01T02:00:00Z"
    );
    assert!(Schedule::parse("0 0 30 2 *")
        .unwrap()
        .next(ts("2026-01-01T00:00:00Z"), &TimeZone::get(None).unwrap())
        .is_none());
    for bad in [
        "",
        "* * * *",
        "60 * * * *",
        "* * * * 7",
        "*/0 * * * *",
        "@every 5m",
        "5-1 * * * *",
        "x * * * *",
    ] {
        assert!(Schedule::parse(bad).is_err(), "{bad:?} parsed");
    }
    assert!(TimeZone::get(Some("Not/AZone")).is_err());
}

#[test]
fn counts_missed_schedules() {
    let s = Schedule::parse("* * * * *").unwrap();
    let utc = TimeZone::get(None).unwrap();
    let (t, m) = most_recent_schedule_time(
        ts("2026-01-01T00:00:00Z"),
        ts("2026-01-01T00:00:30Z"),
        &s,
        &utc,
    )
    .unwrap();
    assert_eq!((t, m), (None, Missed::None));
    let (t, m) = most_recent_schedule_time(
        ts("2026-01-01T00:00:00Z"),
        ts("2026-01-01T00:01:30Z"),
        &s,
        &utc,
    )
    .unwrap();
    assert_eq!((t, m), (Some(ts("2026-01-01T00:01:00Z")), Missed::None));
    let (t, m) = most_recent_schedule_time(
        ts("2026-01-01T00:00:00Z"),
        ts("2026-01-01T00:05:10Z"),
        &s,
        &utc,
    )
    .unwrap();
    assert_eq!((t, m), (Some(ts("2026-01-01T00:05:00Z")), Missed::Few));
    let (t, m) = most_recent_schedule_time(
        ts("2026-01-01T00:00:00Z"),
        ts("2026-01-01T03:00:10Z"),
        &s,
        &utc,
    )
    .unwrap();
    assert_eq!((t, m), (Some(ts("2026-01-01T03:00:00Z")), Missed::Many));
    let irregular = Schedule::parse("30 6-16/4 * * 1-5").unwrap();
    let (t, _) = most_recent_schedule_time(
        ts("2026-01-05T00:00:00Z"),
        ts("2026-01-05T15:00:00Z"),
        &irregular,
        &utc,
    )
    .unwrap();
    assert_eq!(t, Some(ts("2026-01-05T14:30:00Z")));
}

fn cronjob(spec: Value) -> CronJob {
    let mut v = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "hello", "namespace": "ns", "uid": "cj-uid", "resourceVersion": "1",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"metadata": {"labels": {"app": "x"}}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "OnFailure"}}}}}
    });
    for (k, val) in spec.as_object().unwrap() {
        v["spec"][k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

struct Fixture {
    ctl: Arc<CronJobController>,
    rc: Arc<RecordingControl>,
}

fn fixture(cj: &CronJob, now: &str) -> Fixture {
    let inf = SharedInformers::new(None);
    let rc = Arc::new(RecordingControl::new());
    let ctl = CronJobController::new(
        inf.cache::<Job>(),
        inf.cache::<CronJob>(),
        rc.clone(),
        Arc::new(FakeClock::new(ts(now))),
    );
    ctl.cronjobs.apply(cj.clone());
    Fixture { ctl, rc }
}

fn owned_job(cj: &CronJob, name: &str, finished: Option<&str>, start: &str) -> Job {
    let mut j = Job::default();
    j.metadata.name = Some(name.into());
    j.metadata.namespace = Some("ns".into());
    j.metadata.uid = Some(format!("uid-{name}"));
    j.metadata.owner_references = Some(vec![controller_ref(cj)]);
    j.status = Some(JobStatus {
        start_time: Some(Time(ts(start))),
        completion_time: (finished == Some("Complete")).then(|| Time(ts(start))),
        conditions: finished.map(|c| {
            vec![JobCondition {
                type_: c.into(),
                status: "True".into(),
                ..Default::default()
            }]
        }),
        ..Default::default()
    });
    j
}

fn status(f: &Fixture) -> CronJobStatus {
    let a = f.rc.of(Verb::UpdateStatus, "CronJob");
    let cj: CronJob = serde_json::from_value(a.last().unwrap().object.clone().unwrap()).unwrap();
    cj.status.unwrap()
}

#[tokio::test]
async fn creates_the_job_due_and_requeues_for_the_next() {
    let cj = cronjob(json!({}));
    let f = fixture(&cj, "2026-01-01T00:05:30Z");
    let r = f.ctl.sync("ns/hello").await.unwrap();
    let creates = f.rc.of(Verb::Create, "Job");
    assert_eq!(creates.len(), 1);
    let job: Job = serde_json::from_value(creates[0].object.clone().unwrap()).unwrap();
    let minutes = ts("2026-01-01T00:05:00Z").as_second() / 60;
    assert_eq!(job.metadata.name, Some(format!("hello-{minutes}")));
    assert_eq!(
        job.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get(CRONJOB_SCHEDULED_TIMESTAMP)
            .map(String::as_str),
        Some("2026-01-01T00:05:00Z")
    );
    assert_eq!(
        job.metadata
            .labels
            .as_ref()
            .unwrap()
            .get("app")
            .map(String::as_str),
        Some("x")
    );
    assert_eq!(get_controller_of(&job.metadata).unwrap().uid, "cj-uid");
    let s = status(&f);
    assert_eq!(s.last_schedule_time, Some(Time(ts("2026-01-01T00:05:00Z"))));
    assert_eq!(s.active.unwrap().len(), 1);
    assert_eq!(r, Some(Duration::from_millis(270_100)));
    assert!(f.rc.events().iter().any(|e| e.1 == "SuccessfulCreate"));
}

#[tokio::test]
async fn concurrency_policies() {
    let active_ref = |cj: &CronJob| {
        let j = owned_job(cj, "hello-1", None, "2026-01-01T00:00:00Z");
        (j.clone(), object_reference(&j))
    };
    // Forbid: nothing new while one runs.
    let mut cj = cronjob(json!({"concurrencyPolicy": "Forbid"}));
    let (j, r) = active_ref(&cj);
    cj.status = Some(CronJobStatus {
        active: Some(vec![r.clone()]),
        ..Default::default()
    });
    let f = fixture(&cj, "2026-01-01T00:05:30Z");
    f.ctl.jobs.apply(j.clone());
    f.ctl.sync("ns/hello").await.unwrap();
    assert_eq!(f.rc.count(Verb::Create, "Job"), 0);
    assert!(f.rc.events().iter().any(|e| e.1 == "JobAlreadyActive"));
    // Replace: the running one is deleted first.
    cj.spec.as_mut().unwrap().concurrency_policy = Some("Replace".into());
    let f = fixture(&cj, "2026-01-01T00:05:30Z");
    f.ctl.jobs.apply(j.clone());
    f.ctl.sync("ns/hello").await.unwrap();
    let acts = f.rc.actions();
    assert_eq!(acts[0].verb, Verb::Delete);
    assert_eq!(acts[0].name, "hello-1");
    assert_eq!(f.rc.count(Verb::Create, "Job"), 1);
    assert_eq!(status(&f).active.unwrap().len(), 1);
    // Allow: both run.
    cj.spec.as_mut().unwrap().concurrency_policy = None;
    let f = fixture(&cj, "2026-01-01T00:05:30Z");
    f.ctl.jobs.apply(j);
    f.ctl.sync("ns/hello").await.unwrap();
    assert_eq!(f.rc.count(Verb::Create, "Job"), 1);
    assert_eq!(status(&f).active.unwrap().len(), 2);
}

#[tokio::test]
async fn starting_deadline_and_suspend() {
    let cj = cronjob(json!({"startingDeadlineSeconds": 10}));
    let f = fixture(&cj, "2026-01-01T00:05:30Z");
    // 00:05 is more than 10 s ago: skipped, wait for 00:10.
    let r = f.ctl.sync("ns/hello").await.unwrap();
    assert_eq!(f.rc.count(Verb::Create, "Job"), 0);
    assert_eq!(r, Some(Duration::from_millis(270_100)));
    let f = fixture(&cj, "2026-01-01T00:05:05Z");
    f.ctl.sync("ns/hello").await.unwrap();
    assert_eq!(f.rc.count(Verb::Create, "Job"), 1, "within the deadline");

    let cj = cronjob(json!({"suspend": true}));
    let f = fixture(&cj, "2026-01-01T00:05:30Z");
    assert_eq!(f.ctl.sync("ns/hello").await.unwrap(), None);
    assert_eq!(f.rc.count(Verb::Create, "Job"), 0);

    let cj = cronjob(json!({}));
    let f = fixture(&cj, "2026-01-03T00:00:30Z");
    f.ctl.sync("ns/hello").await.unwrap();
    assert!(f.rc.events().iter().any(|e| e.1 == "TooManyMissedTimes"));
    assert_eq!(
        f.rc.count(Verb::Create, "Job"),
        1,
        "still starts the most recent"
    );
}

#[tokio::test]
async fn finished_jobs_leave_active_and_history_is_trimmed() {
    let mut cj = cronjob(json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0}));
    let running = owned_job(&cj, "hello-3", Some("Complete"), "2026-01-01T00:03:00Z");
    cj.status = Some(CronJobStatus {
        active: Some(vec![object_reference(&running)]),
        last_schedule_time: Some(Time(ts("2026-01-01T00:05:00Z"))),
        ..Default::default()
    });
    let f = fixture(&cj, "2026-01-01T00:06:00Z");
    f.ctl.jobs.apply(owned_job(
        &cj,
        "hello-1",
        Some("Complete"),
        "2026-01-01T00:01:00Z",
    ));
    f.ctl.jobs.apply(owned_job(
        &cj,
        "hello-2",
        Some("Failed"),
        "2026-01-01T00:02:00Z",
    ));
    f.ctl.jobs.apply(running);
    f.ctl.sync("ns/hello").await.unwrap();
    let mut deleted: Vec<String> =
        f.rc.of(Verb::Delete, "Job")
            .into_iter()
            .map(|a| a.name)
            .collect();
    deleted.sort();
    assert_eq!(deleted, vec!["hello-1", "hello-2"]);
    let s = status(&f);
    assert!(s.active.is_none());
    assert_eq!(
        s.last_successful_time,
        Some(Time(ts("2026-01-01T00:03:00Z")))
    );
    assert!(f.rc.events().iter().any(|e| e.1 == "SawCompletedJob"));
}

#[test]
fn time_zones_shift_schedules() {
    // The tz database comes from the system; without it only UTC is available.
    let Ok(ny) = TimeZone::get(Some("America/New_York")) else {
        return;
    };
    let s = Schedule::parse("0 9 * * *").unwrap();
    let t = s.next(ts("2026-01-01T00:00:00Z"), &ny).unwrap();
    assert_eq!(t, ts("2026-01-01T14:00:00Z"));
    assert_eq!(ny.format_rfc3339(t), "2026-01-01T09:00:00-05:00");
    // Summer time: 09:00 EDT is 13:00 UTC.
    let t = s.next(ts("2026-07-01T00:00:00Z"), &ny).unwrap();
    assert_eq!(t, ts("2026-07-01T13:00:00Z"));
}
