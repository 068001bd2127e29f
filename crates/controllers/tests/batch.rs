//! The Job controller against an in-process API server (memory store). No kubelet: the
//! test itself moves pods to Succeeded or Failed through the status subresource.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;
use skiff_controllers::job::{run_with, JobOptions, JOB_TRACKING_FINALIZER};
use skiff_controllers::runtime::Context;
use skiff_controllers::ControllerManagerConfig;

async fn start_server() -> Client {
    let addr = skiff_apiserver::serve_for_tests().await;
    Client::try_from(Config::new(format!("http://{addr}").parse().unwrap())).unwrap()
}

/// Polls `f` until it returns `Some`, failing after `secs`.
async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn job(name: &str, completions: i32, backoff_limit: i32) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": completions, "parallelism": 2, "backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}
        }
    }))
    .unwrap()
}

fn condition(j: &Job, type_: &str) -> Option<String> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default())
}

/// Marks every pending pod of `job` with `phase`, as a kubelet would; returns how many.
async fn finish_pods(pods: &Api<Pod>, job: &str, phase: &str) -> usize {
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .unwrap();
    let mut n = 0;
    for p in list.items {
        if p.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending")
            != "Pending"
        {
            continue;
        }
        let status = json!({"status": {"phase": phase}});
        pods.patch_status(
            &p.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
        n += 1;
    }
    n
}

#[tokio::test]
async fn jobs_complete_and_fail_after_backoff_limit() {
    let client = start_server().await;
    let ctx = Arc::new(Context::new(
        client.clone(),
        ControllerManagerConfig::default(),
    ));
    let options = JobOptions {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
    };
    let controller = tokio::spawn(run_with(ctx, options));
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Completes: 3 completions, 2 at a time.
    jobs.create(&PostParams::default(), &job("ok", 3, 6))
        .await
        .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let j = wait_for("job ok to complete", 20, || {
        let (jobs, pods) = (jobs.clone(), pods.clone());
        let done = done.clone();
        async move {
            let n = finish_pods(&pods, "ok", "Succeeded").await;
            done.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            let j = jobs.get("ok").await.unwrap();
            condition(&j, "Complete").map(|_| j)
        }
    })
    .await;
    let s = j.status.clone().unwrap();
    assert_eq!(s.succeeded, Some(3));
    assert_eq!(s.active, Some(0));
    assert!(s.completion_time.is_some());
    assert_eq!(
        condition(&j, "SuccessCriteriaMet").as_deref(),
        Some("CompletionsReached")
    );
    assert_eq!(
        done.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "no extra pods were created"
    );
    let left = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=ok"))
        .await
        .unwrap();
    assert!(left
        .items
        .iter()
        .all(|p| !p.finalizers().iter().any(|f| f == JOB_TRACKING_FINALIZER)));

    // Fails: every pod fails; backoffLimit 1 tolerates one, the second fails the Job.
    jobs.create(&PostParams::default(), &job("bad", 1, 1))
        .await
        .unwrap();
    let j = wait_for("job bad to fail", 20, || {
        let (jobs, pods) = (jobs.clone(), pods.clone());
        async move {
            finish_pods(&pods, "bad", "Failed").await;
            let j = jobs.get("bad").await.unwrap();
            condition(&j, "Failed").map(|_| j)
        }
    })
    .await;
    assert_eq!(
        condition(&j, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(j.status.unwrap().failed, Some(2));
    controller.abort();
}
