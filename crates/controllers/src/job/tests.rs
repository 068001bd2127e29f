use super::*;
use crate::runtime::{RecordingControl, SharedInformers, Verb};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
};
use serde_json::Value;

const UID: &str = "job-uid";

fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn job(spec: Value) -> Job {
    let mut v = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi", "namespace": "ns", "uid": UID, "resourceVersion": "1"},
        "spec": {
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": UID}},
            "backoffLimit": 6,
            "template": {
                "metadata": {"labels": {"batch.kubernetes.io/controller-uid": UID}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    });
    for (k, val) in spec.as_object().unwrap() {
        v["spec"][k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

struct Fixture {
    ctl: Arc<JobController>,
    rc: Arc<RecordingControl>,
    clock: Arc<FakeClock>,
}

fn fixture(j: &Job) -> Fixture {
    let inf = SharedInformers::new(None);
    let rc = Arc::new(RecordingControl::new());
    let clock = Arc::new(FakeClock::new(t0()));
    let ctl = JobController::new(
        inf.cache::<Pod>(),
        inf.cache::<Job>(),
        rc.clone(),
        clock.clone(),
        JobOptions::default(),
    );
    ctl.register_handlers();
    ctl.jobs.apply(j.clone());
    Fixture { ctl, rc, clock }
}

fn pod(j: &Job, name: &str, phase: &str, tracked: bool) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("ns".into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.resource_version = Some("1".into());
    p.metadata.labels = Some(
        [(
            "batch.kubernetes.io/controller-uid".to_string(),
            UID.to_string(),
        )]
        .into(),
    );
    p.metadata.owner_references = Some(vec![controller_ref(j)]);
    if tracked {
        p.metadata.finalizers = Some(vec![JOB_TRACKING_FINALIZER.into()]);
    }
    p.status = Some(PodStatus {
        phase: Some(phase.into()),
        ..Default::default()
    });
    p
}

fn with_exit(mut p: Pod, code: i32) -> Pod {
    let s = p.status.as_mut().unwrap();
    s.container_statuses = Some(vec![ContainerStatus {
        name: "c".into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                finished_at: Some(Time(t0())),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    p
}

/// The last status written, fed back into the Job cache as the watch would.
fn last_status(f: &Fixture) -> JobStatus {
    let a = f.rc.of(Verb::UpdateStatus, "Job");
    let obj = a.last().expect("a status update").object.clone().unwrap();
    let j: Job = serde_json::from_value(obj).unwrap();
    f.ctl.jobs.apply(j.clone());
    j.status.unwrap()
}

fn cond<'a>(s: &'a JobStatus, t: &str) -> Option<&'a JobCondition> {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == t && c.status == "True")
}

#[tokio::test]
async fn creates_up_to_parallelism_with_tracking_finalizer() {
    let j = job(json!({"completions": 5, "parallelism": 2}));
    let f = fixture(&j);
    f.ctl.sync("ns/pi").await.unwrap();
    let creates = f.rc.of(Verb::Create, "Pod");
    assert_eq!(creates.len(), 2);
    let p: Pod = serde_json::from_value(creates[0].object.clone().unwrap()).unwrap();
    assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
    assert!(has_finalizer(&p));
    let s = last_status(&f);
    assert_eq!(s.active, Some(2));
    assert_eq!(s.start_time, Some(Time(t0())));
    assert_eq!(
        f.rc.events()
            .iter()
            .filter(|e| e.1 == "SuccessfulCreate")
            .count(),
        2
    );
    // Expectations block a second round until the cache shows the pods.
    f.rc.clear();
    f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(f.rc.count(Verb::Create, "Pod"), 0);
}

#[tokio::test]
async fn counts_completions_then_completes() {
    let j = job(json!({"completions": 2, "parallelism": 2}));
    let f = fixture(&j);
    f.ctl.pods.apply(pod(&j, "a", "Succeeded", true));
    f.ctl.pods.apply(pod(&j, "b", "Succeeded", true));
    f.ctl.sync("ns/pi").await.unwrap();
    // First write: the UIDs as uncounted, before any finalizer is removed.
    let first: Job = serde_json::from_value(
        f.rc.of(Verb::UpdateStatus, "Job")[0]
            .object
            .clone()
            .unwrap(),
    )
    .unwrap();
    let unc = first.status.unwrap().uncounted_terminated_pods.unwrap();
    assert_eq!(unc.succeeded.unwrap().len(), 2);
    assert_eq!(f.rc.count(Verb::Patch, "Pod"), 2);
    let s = last_status(&f);
    assert_eq!(s.succeeded, Some(2));
    assert!(cond(&s, "SuccessCriteriaMet").is_some());
    let c = cond(&s, "Complete").expect("Complete");
    assert_eq!(c.reason.as_deref(), Some("CompletionsReached"));
    assert_eq!(s.completion_time, Some(Time(t0())));
    assert!(f.rc.events().iter().any(|e| e.1 == "Completed"));
    assert_eq!(f.rc.count(Verb::Create, "Pod"), 0);
}

#[tokio::test]
async fn lagging_pod_cache_does_not_double_count() {
    let j = job(json!({"completions": 3}));
    let f = fixture(&j);
    f.ctl.pods.apply(pod(&j, "a", "Succeeded", true));
    f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(last_status(&f).succeeded, Some(1));
    // The pod cache still shows the finalizer: the pod must not be counted again.
    f.ctl.expectations.delete("ns/pi");
    f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(last_status(&f).succeeded, Some(1));
}

#[tokio::test]
async fn failed_pod_is_recreated_after_exponential_backoff() {
    let j = job(json!({"completions": 1, "backoffLimit": 3}));
    let f = fixture(&j);
    f.ctl.pods.apply(with_exit(pod(&j, "a", "Failed", true), 1));
    let requeue = f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(f.rc.count(Verb::Create, "Pod"), 0);
    assert_eq!(requeue, Some(Duration::from_secs(10)));
    assert_eq!(last_status(&f).failed, Some(1));
    f.ctl
        .pods
        .apply(with_exit(pod(&j, "a", "Failed", false), 1));
    f.clock.step(Duration::from_secs(10));
    f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(f.rc.count(Verb::Create, "Pod"), 1);
    // A second failure doubles the delay.
    f.ctl.expectations.delete("ns/pi");
    let mut b = with_exit(pod(&j, "b", "Failed", true), 1);
    b.status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .state
        .as_mut()
        .unwrap()
        .terminated
        .as_mut()
        .unwrap()
        .finished_at = Some(Time(f.clock.now()));
    f.ctl.pods.apply(b);
    f.rc.clear();
    let requeue = f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(requeue, Some(Duration::from_secs(20)));
    assert_eq!(f.rc.count(Verb::Create, "Pod"), 0);
}

#[tokio::test]
async fn backoff_limit_exceeded_fails_the_job() {
    let j = job(json!({"completions": 1, "backoffLimit": 0}));
    let f = fixture(&j);
    f.ctl.pods.apply(with_exit(pod(&j, "a", "Failed", true), 1));
    f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    assert_eq!(s.failed, Some(1));
    assert!(cond(&s, "FailureTarget").is_some());
    let c = cond(&s, "Failed").expect("Failed");
    assert_eq!(c.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert!(f.rc.events().iter().any(|e| e.1 == "BackoffLimitExceeded"));
    assert_eq!(f.rc.count(Verb::Create, "Pod"), 0);
}

#[tokio::test]
async fn active_deadline_deletes_pods_then_fails() {
    let mut j = job(json!({"completions": 1, "activeDeadlineSeconds": 10}));
    j.status = Some(JobStatus {
        start_time: Some(Time(t0() - SignedDuration::from_secs(20))),
        ..Default::default()
    });
    let f = fixture(&j);
    f.ctl.pods.apply(pod(&j, "a", "Running", true));
    f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(f.rc.count(Verb::Delete, "Pod"), 1);
    let s = last_status(&f);
    assert_eq!(
        cond(&s, "FailureTarget").unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
    assert!(
        cond(&s, "Failed").is_none(),
        "Failed waits for the pod to terminate"
    );
    // The pod is terminating: counted as failed and released, still not Failed.
    let mut dying = pod(&j, "a", "Running", true);
    dying.metadata.deletion_timestamp = Some(Time(t0()));
    f.ctl.pods.apply(dying.clone());
    f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    assert_eq!(s.failed, Some(1), "a deleted running pod counts as failed");
    assert_eq!(s.terminating, Some(1));
    assert!(cond(&s, "Failed").is_none());
    // The pod is gone: the terminal condition follows.
    f.ctl.pods.delete(dying);
    f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    assert_eq!(
        cond(&s, "Failed").unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
    assert_eq!(s.failed, Some(1));
}

#[tokio::test]
async fn deadline_not_reached_requeues() {
    let j = job(json!({"completions": 1, "activeDeadlineSeconds": 30}));
    let f = fixture(&j);
    let r = f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(r, Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn pod_failure_policy_fail_job_and_ignore() {
    let policy = json!({"rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]});
    let j = job(json!({"completions": 1, "podFailurePolicy": policy}));
    let f = fixture(&j);
    let mut p = with_exit(pod(&j, "a", "Failed", true), 137);
    p.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        ..Default::default()
    }]);
    f.ctl.pods.apply(p);
    f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    assert_eq!(s.failed.unwrap_or(0), 0, "ignored failures do not count");
    assert_eq!(
        f.rc.count(Verb::Patch, "Pod"),
        1,
        "the ignored pod is released"
    );
    assert_eq!(
        f.rc.count(Verb::Create, "Pod"),
        1,
        "no backoff after an ignored failure"
    );

    let j2 = job(json!({"completions": 1, "podFailurePolicy": policy}));
    let f = fixture(&j2);
    f.ctl
        .pods
        .apply(with_exit(pod(&j2, "b", "Failed", true), 42));
    f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    let c = cond(&s, "Failed").expect("Failed");
    assert_eq!(c.reason.as_deref(), Some("PodFailurePolicy"));
    assert_eq!(
        c.message.as_deref(),
        Some("Container c for pod ns/b failed with exit code 42 matching FailJob rule at index 0")
    );
}

#[tokio::test]
async fn indexed_job_creates_missing_indexes() {
    let j = job(json!({"completions": 3, "parallelism": 2, "completionMode": "Indexed"}));
    let f = fixture(&j);
    let mut done = pod(&j, "pi-0-x", "Succeeded", true);
    done.metadata.annotations = Some([(JOB_COMPLETION_INDEX.to_string(), "0".to_string())].into());
    f.ctl.pods.apply(done);
    let mut running = pod(&j, "pi-1-x", "Running", true);
    running.metadata.annotations =
        Some([(JOB_COMPLETION_INDEX.to_string(), "1".to_string())].into());
    f.ctl.pods.apply(running);
    f.ctl.sync("ns/pi").await.unwrap();
    let creates = f.rc.of(Verb::Create, "Pod");
    assert_eq!(creates.len(), 1);
    let p: Pod = serde_json::from_value(creates[0].object.clone().unwrap()).unwrap();
    assert_eq!(completion_index(&p), Some(2));
    assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
    assert_eq!(
        p.metadata
            .labels
            .as_ref()
            .unwrap()
            .get(JOB_COMPLETION_INDEX)
            .map(String::as_str),
        Some("2")
    );
    let spec = p.spec.unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
    let env = &spec.containers[0].env.as_ref().unwrap()[0];
    assert_eq!(env.name, JOB_COMPLETION_INDEX_ENV);
    assert_eq!(
        env.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    let s = last_status(&f);
    assert_eq!(s.completed_indexes.as_deref(), Some("0"));
    assert_eq!(s.succeeded, Some(1));
    assert_eq!(s.active, Some(2));
}

#[test]
fn index_sets_round_trip() {
    let s = parse_indexes("1,3-5,9");
    assert_eq!(s.iter().copied().collect::<Vec<_>>(), vec![1, 3, 4, 5, 9]);
    assert_eq!(format_indexes(&s), "1,3-5,9");
    assert_eq!(format_indexes(&BTreeSet::new()), "");
}

#[tokio::test]
async fn ttl_after_finished_deletes_the_job() {
    let mut j = job(json!({"ttlSecondsAfterFinished": 50}));
    j.status = Some(JobStatus {
        completion_time: Some(Time(t0() - SignedDuration::from_secs(100))),
        conditions: Some(vec![new_condition(
            "Complete",
            "CompletionsReached",
            "",
            t0(),
        )]),
        ..Default::default()
    });
    let f = fixture(&j);
    f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(f.rc.count(Verb::Delete, "Job"), 1);

    j.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(200);
    let f = fixture(&j);
    let r = f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(r, Some(Duration::from_secs(100)));
    assert_eq!(f.rc.count(Verb::Delete, "Job"), 0);
}

#[tokio::test]
async fn suspend_deletes_active_pods() {
    let j = job(json!({"completions": 1, "suspend": true}));
    let f = fixture(&j);
    f.ctl.pods.apply(pod(&j, "a", "Running", true));
    f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(f.rc.count(Verb::Delete, "Pod"), 1);
    let s = last_status(&f);
    assert_eq!(
        cond(&s, "Suspended").unwrap().reason.as_deref(),
        Some("JobSuspended")
    );
    assert_eq!(s.active, Some(0));
    assert!(s.start_time.is_none());
}

/// A pod of index `ix`, carrying `failures` earlier failures of its index.
fn ipod(j: &Job, name: &str, ix: i32, phase: &str, failures: Option<i32>) -> Pod {
    let mut p = pod(j, name, phase, true);
    let mut ann: std::collections::BTreeMap<String, String> =
        [(JOB_COMPLETION_INDEX.to_string(), ix.to_string())].into();
    if let Some(n) = failures {
        ann.insert(JOB_INDEX_FAILURE_COUNT.into(), n.to_string());
    }
    p.metadata.annotations = Some(ann);
    if phase == "Failed" {
        p = with_exit(p, 1);
    }
    p
}

fn created_indexes(f: &Fixture) -> Vec<(i32, Option<String>)> {
    f.rc.of(Verb::Create, "Pod")
        .into_iter()
        .map(|a| {
            let p: Pod = serde_json::from_value(a.object.unwrap()).unwrap();
            let count = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(JOB_INDEX_FAILURE_COUNT))
                .cloned();
            (completion_index(&p).unwrap(), count)
        })
        .collect()
}

#[tokio::test]
async fn backoff_limit_per_index_retries_then_fails_the_index() {
    let j = job(
        json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
        "backoffLimitPerIndex": 1, "podReplacementPolicy": "Failed"}),
    );
    let f = fixture(&j);
    f.ctl.pods.apply(ipod(&j, "pi-0-a", 0, "Failed", Some(0)));
    let requeue = f.ctl.sync("ns/pi").await.unwrap();
    // Index 0 backs off on its own; the others start at once with a zero count.
    assert_eq!(
        created_indexes(&f),
        vec![(1, Some("0".into())), (2, Some("0".into()))]
    );
    assert_eq!(requeue, Some(Duration::from_secs(10)));
    // The failed pod keeps its finalizer until its replacement exists.
    assert_eq!(f.rc.count(Verb::Patch, "Pod"), 0);
    let s = last_status(&f);
    assert_eq!(s.failed_indexes.as_deref(), Some(""));
    assert_eq!(s.failed.unwrap_or(0), 0);

    f.ctl.pods.apply(ipod(&j, "pi-1-a", 1, "Running", Some(0)));
    f.ctl.pods.apply(ipod(&j, "pi-2-a", 2, "Running", Some(0)));
    f.clock.step(Duration::from_secs(10));
    f.rc.clear();
    f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(
        created_indexes(&f),
        vec![(0, Some("1".into()))],
        "the replacement carries the failure count"
    );

    // The replacement fails too: the index has used up its one retry.
    f.ctl.pods.apply(ipod(&j, "pi-0-b", 0, "Failed", Some(1)));
    f.ctl.expectations.delete("ns/pi");
    f.rc.clear();
    f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    assert_eq!(s.failed_indexes.as_deref(), Some("0"));
    assert_eq!(s.failed, Some(2), "both pods of index 0 are counted");
    assert_eq!(
        f.rc.count(Verb::Create, "Pod"),
        0,
        "a failed index is not retried"
    );
    assert!(cond(&s, "FailureTarget").is_none());

    // The other indexes succeed: the Job fails with FailedIndexes.
    f.ctl
        .pods
        .apply(ipod(&j, "pi-1-a", 1, "Succeeded", Some(0)));
    f.ctl
        .pods
        .apply(ipod(&j, "pi-2-a", 2, "Succeeded", Some(0)));
    for n in ["pi-0-a", "pi-0-b"] {
        let mut p = ipod(&j, n, 0, "Failed", None);
        p.metadata.finalizers = None;
        f.ctl.pods.apply(p);
    }
    f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    assert_eq!(s.completed_indexes.as_deref(), Some("1-2"));
    let c = cond(&s, "Failed").expect("Failed");
    assert_eq!(c.reason.as_deref(), Some("FailedIndexes"));
    assert_eq!(c.message.as_deref(), Some("Job has failed indexes"));
}

#[tokio::test]
async fn max_failed_indexes_exceeded_terminates_the_job() {
    let j = job(
        json!({"completions": 4, "parallelism": 2, "completionMode": "Indexed",
        "backoffLimitPerIndex": 0, "maxFailedIndexes": 0}),
    );
    let f = fixture(&j);
    f.ctl.pods.apply(ipod(&j, "pi-0-a", 0, "Running", Some(0)));
    f.ctl.pods.apply(ipod(&j, "pi-1-a", 1, "Failed", Some(0)));
    f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    assert_eq!(s.failed_indexes.as_deref(), Some("1"));
    let t = cond(&s, "FailureTarget").expect("FailureTarget");
    assert_eq!(t.reason.as_deref(), Some("MaxFailedIndexesExceeded"));
    assert_eq!(
        t.message.as_deref(),
        Some("Job has exceeded the specified maximal number of failed indexes")
    );
    let deleted: Vec<String> =
        f.rc.of(Verb::Delete, "Pod")
            .into_iter()
            .map(|a| a.name)
            .collect();
    assert_eq!(deleted, vec!["pi-0-a"]);
    assert!(cond(&s, "Failed").is_none(), "a pod is still running");
    assert_eq!(f.rc.count(Verb::Create, "Pod"), 0);
}

#[tokio::test]
async fn fail_index_action_fails_only_that_index() {
    let policy = json!({"rules": [
        {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [42]}}
    ]});
    let j = job(
        json!({"completions": 2, "parallelism": 2, "completionMode": "Indexed",
        "backoffLimitPerIndex": 5, "podFailurePolicy": policy}),
    );
    let f = fixture(&j);
    f.ctl
        .pods
        .apply(with_exit(ipod(&j, "pi-0-a", 0, "Failed", Some(0)), 42));
    f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    assert_eq!(s.failed_indexes.as_deref(), Some("0"));
    assert_eq!(s.failed, Some(1));
    assert_eq!(created_indexes(&f), vec![(1, Some("0".into()))]);
    assert!(cond(&s, "FailureTarget").is_none());
}

#[tokio::test]
async fn success_policy_completes_and_terminates_the_rest() {
    let j = job(
        json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
        "successPolicy": {"rules": [{"succeededIndexes": "2"}, {"succeededIndexes": "0-1", "succeededCount": 1}]}}),
    );
    let f = fixture(&j);
    f.ctl.pods.apply(ipod(&j, "pi-0-a", 0, "Succeeded", None));
    f.ctl.pods.apply(ipod(&j, "pi-1-a", 1, "Running", None));
    f.ctl.pods.apply(ipod(&j, "pi-2-a", 2, "Running", None));
    f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    let c = cond(&s, "SuccessCriteriaMet").expect("SuccessCriteriaMet");
    assert_eq!(c.reason.as_deref(), Some("SuccessPolicy"));
    assert_eq!(c.message.as_deref(), Some("Matched rules at index 1"));
    assert!(cond(&s, "Complete").is_none(), "pods are still running");
    let mut deleted: Vec<String> =
        f.rc.of(Verb::Delete, "Pod")
            .into_iter()
            .map(|a| a.name)
            .collect();
    deleted.sort();
    assert_eq!(deleted, vec!["pi-1-a", "pi-2-a"]);
    // The pods are gone: Complete follows with the same reason.
    for n in ["pi-1-a", "pi-2-a"] {
        f.ctl.pods.delete(ipod(&j, n, 1, "Running", None));
    }
    let mut p0 = ipod(&j, "pi-0-a", 0, "Succeeded", None);
    p0.metadata.finalizers = None;
    f.ctl.pods.apply(p0);
    f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    let c = cond(&s, "Complete").expect("Complete");
    assert_eq!(c.reason.as_deref(), Some("SuccessPolicy"));
    assert_eq!(s.succeeded, Some(1));
}

#[test]
fn success_policy_rules() {
    let j = job(json!({"completions": 5, "completionMode": "Indexed",
        "successPolicy": {"rules": [{"succeededIndexes": "0,2-3", "succeededCount": 2}, {"succeededCount": 4}]}}));
    let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
    assert_eq!(match_success_policy(&j, &set(&[])), None);
    assert_eq!(match_success_policy(&j, &set(&[0, 1])), None);
    assert_eq!(
        match_success_policy(&j, &set(&[0, 3])).as_deref(),
        Some("Matched rules at index 0")
    );
    assert_eq!(
        match_success_policy(&j, &set(&[0, 1, 4, 9])).as_deref(),
        Some("Matched rules at index 1")
    );
    let all = job(json!({"completions": 5, "completionMode": "Indexed",
        "successPolicy": {"rules": [{"succeededIndexes": "1-2"}]}}));
    assert_eq!(match_success_policy(&all, &set(&[1])), None);
    assert!(match_success_policy(&all, &set(&[1, 2])).is_some());
}

#[tokio::test]
async fn pod_replacement_policy_failed_waits_for_terminating_pods() {
    let mut dying_at = Time(t0());
    dying_at.0 = t0();
    let j = job(json!({"completions": 1, "parallelism": 1, "podReplacementPolicy": "Failed"}));
    let f = fixture(&j);
    let mut p = pod(&j, "a", "Running", true);
    p.metadata.deletion_timestamp = Some(dying_at.clone());
    f.ctl.pods.apply(p.clone());
    f.ctl.sync("ns/pi").await.unwrap();
    assert_eq!(
        f.rc.count(Verb::Create, "Pod"),
        0,
        "no replacement while terminating"
    );
    let s = last_status(&f);
    assert_eq!(s.terminating, Some(1));
    assert_eq!(s.failed.unwrap_or(0), 0);
    assert_eq!(s.active, Some(0));
    // Once Failed it is counted and replaced.
    let mut failed = with_exit(p, 1);
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    f.ctl.pods.apply(failed);
    f.clock.step(Duration::from_secs(60));
    f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    assert_eq!(s.failed, Some(1));
    assert_eq!(s.terminating, Some(0));

    // TerminatingOrFailed (the default): the terminating pod counts as failed at once.
    let j = job(json!({"completions": 1, "parallelism": 1}));
    let f = fixture(&j);
    let mut p = pod(&j, "a", "Running", true);
    p.metadata.deletion_timestamp = Some(dying_at);
    f.ctl.pods.apply(p);
    let requeue = f.ctl.sync("ns/pi").await.unwrap();
    let s = last_status(&f);
    assert_eq!(s.failed, Some(1));
    assert_eq!(s.terminating, Some(1));
    assert_eq!(
        requeue,
        Some(Duration::from_secs(10)),
        "replaced after the backoff"
    );
}

#[tokio::test]
async fn completed_indexes_are_written_before_finalizers_go() {
    let j = job(json!({"completions": 2, "parallelism": 2, "completionMode": "Indexed"}));
    let f = fixture(&j);
    f.ctl.pods.apply(ipod(&j, "pi-1-a", 1, "Succeeded", None));
    f.ctl.pods.apply(ipod(&j, "pi-0-a", 0, "Running", None));
    f.ctl.sync("ns/pi").await.unwrap();
    let actions = f.rc.actions();
    let first_status = actions
        .iter()
        .position(|a| a.verb == Verb::UpdateStatus)
        .unwrap();
    let first_patch = actions.iter().position(|a| a.verb == Verb::Patch).unwrap();
    assert!(first_status < first_patch);
    let s: JobStatus =
        serde_json::from_value(actions[first_status].object.clone().unwrap()["status"].clone())
            .unwrap();
    assert_eq!(s.completed_indexes.as_deref(), Some("1"));
}

#[tokio::test]
async fn surplus_pods_are_released_before_deletion() {
    let j = job(json!({"completions": 2, "parallelism": 2, "completionMode": "Indexed"}));
    let f = fixture(&j);
    f.ctl.pods.apply(ipod(&j, "pi-0-a", 0, "Running", None));
    f.ctl.pods.apply(ipod(&j, "pi-0-b", 0, "Pending", None));
    f.ctl.sync("ns/pi").await.unwrap();
    let deleted: Vec<String> =
        f.rc.of(Verb::Delete, "Pod")
            .into_iter()
            .map(|a| a.name)
            .collect();
    assert_eq!(deleted.len(), 1, "one pod of the duplicated index goes");
    let patched: Vec<String> =
        f.rc.of(Verb::Patch, "Pod")
            .into_iter()
            .map(|a| a.name)
            .collect();
    assert_eq!(patched, deleted, "its tracking finalizer is removed first");
    let s = last_status(&f);
    assert_eq!((s.active, s.terminating), (Some(1), Some(1)));
    assert_eq!(
        s.failed.unwrap_or(0),
        0,
        "a released surplus pod is not a failure"
    );
}
