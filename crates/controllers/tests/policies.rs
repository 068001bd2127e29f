//! Job success and per-index failure policies, StatefulSet claim retention and DaemonSet
//! failed-pod replacement against an in-process API server (memory store). No scheduler or
//! kubelet: the test moves pods through the status subresource itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolumeClaim, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;
use skiff_controllers::job::{run_with, JobOptions, JOB_COMPLETION_INDEX, JOB_INDEX_FAILURE_COUNT};
use skiff_controllers::runtime::Context;
use skiff_controllers::{run, ControllerManagerConfig};

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

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Sets the pod's phase as a kubelet would; a pod deleted meanwhile is skipped.
async fn set_phase(pods: &Api<Pod>, name: &str, phase: &str) {
    let status = json!({"status": {"phase": phase}});
    match pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("patching {name}: {e}"),
    }
}

/// Moves every pending pod of `job` to the phase `by_index` gives its completion index.
async fn finish_indexed(
    pods: &Api<Pod>,
    job: &str,
    by_index: impl Fn(i32) -> Option<&'static str>,
) {
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .unwrap();
    for p in list.items {
        if phase(&p) != "Pending" || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ix = p.labels()[JOB_COMPLETION_INDEX].parse::<i32>().unwrap();
        if let Some(to) = by_index(ix) {
            set_phase(pods, &p.name_any(), to).await;
        }
    }
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

fn indexed_job(name: &str, extra: serde_json::Value) -> Job {
    let mut v = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": 3, "parallelism": 3, "completionMode": "Indexed",
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}
        }
    });
    for (k, val) in extra.as_object().unwrap() {
        v["spec"][k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_success_policy_and_backoff_limit_per_index() {
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

    // Success policy: index 0 alone makes the Job a success; the others are terminated.
    let policy = json!({"rules": [{"succeededIndexes": "0"}]});
    jobs.create(
        &PostParams::default(),
        &indexed_job("sp", json!({"successPolicy": policy})),
    )
    .await
    .unwrap();
    let j = wait_for("job sp to complete", 20, || {
        let (jobs, pods) = (jobs.clone(), pods.clone());
        async move {
            finish_indexed(&pods, "sp", |i| (i == 0).then_some("Succeeded")).await;
            let j = jobs.get("sp").await.unwrap();
            condition(&j, "Complete").map(|_| j)
        }
    })
    .await;
    assert_eq!(condition(&j, "Complete").as_deref(), Some("SuccessPolicy"));
    assert_eq!(
        condition(&j, "SuccessCriteriaMet").as_deref(),
        Some("SuccessPolicy")
    );
    let s = j.status.unwrap();
    assert_eq!(s.completed_indexes.as_deref(), Some("0"));
    assert_eq!(s.succeeded, Some(1));
    assert_eq!(s.active, Some(0));
    let left = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=sp"))
        .await
        .unwrap();
    assert!(
        left.items.iter().all(|p| phase(p) == "Succeeded"),
        "the running pods were terminated"
    );

    // backoffLimitPerIndex 1: index 0 fails twice and is given up; the Job fails with
    // FailedIndexes once the other indexes succeeded.
    jobs.create(
        &PostParams::default(),
        &indexed_job(
            "pi",
            json!({"backoffLimitPerIndex": 1, "podReplacementPolicy": "Failed"}),
        ),
    )
    .await
    .unwrap();
    let j = wait_for("job pi to fail", 20, || {
        let (jobs, pods) = (jobs.clone(), pods.clone());
        async move {
            finish_indexed(&pods, "pi", |i| {
                Some(if i == 0 { "Failed" } else { "Succeeded" })
            })
            .await;
            let j = jobs.get("pi").await.unwrap();
            condition(&j, "Failed").map(|_| j)
        }
    })
    .await;
    assert_eq!(condition(&j, "Failed").as_deref(), Some("FailedIndexes"));
    let s = j.status.unwrap();
    assert_eq!(s.failed_indexes.as_deref(), Some("0"));
    assert_eq!(s.completed_indexes.as_deref(), Some("1-2"));
    assert_eq!(s.failed, Some(2), "one retry of index 0");
    let index0 = pods
        .list(&ListParams::default().labels(&format!(
            "batch.kubernetes.io/job-name=pi,{JOB_COMPLETION_INDEX}=0"
        )))
        .await
        .unwrap();
    let counts: Vec<String> = index0
        .items
        .iter()
        .map(|p| p.annotations()[JOB_INDEX_FAILURE_COUNT].clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(counts, vec!["0", "1"]);
    assert_eq!(index0.items.len(), 2, "no duplicate replacement");
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_scale_down_deletes_claims_when_scaled_delete() {
    let client = start_server().await;
    let config = ControllerManagerConfig {
        controllers: vec!["statefulset".into(), "garbagecollector".into()],
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let manager = tokio::spawn(run(client.clone(), config, async {
        let _ = stopped.await;
    }));
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 2, "podManagementPolicy": "Parallel", "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete", "whenDeleted": "Retain"},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": "postgres"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}}]
        }
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    wait_for("2 pods and claims", 10, || async {
        let p = pods.list(&ListParams::default()).await.unwrap().items.len();
        let c = claims
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
        (p == 2 && c == 2).then_some(())
    })
    .await;

    let scale = json!({"spec": {"replicas": 1}});
    sets.patch("db", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    // db-1 goes, and its claim follows it through the garbage collector.
    wait_for("data-db-1 to go", 20, || async {
        let gone = match claims.get_opt("data-db-1").await.unwrap() {
            None => true,
            Some(c) => c.metadata.deletion_timestamp.is_some(),
        };
        gone.then_some(())
    })
    .await;
    assert!(pods.get_opt("db-1").await.unwrap().is_none());
    let kept = claims.get("data-db-0").await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "the claim of a kept replica stays"
    );
    assert!(kept.owner_references().is_empty(), "whenDeleted Retain");
    let _ = stop.send(());
    manager.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_failed_pod_is_killed_and_replaced() {
    let client = start_server().await;
    let config = ControllerManagerConfig {
        controllers: vec!["daemonset".into()],
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let manager = tokio::spawn(run(client.clone(), config, async {
        let _ = stopped.await;
    }));
    let nodes: Api<Node> = Api::all(client.clone());
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "agent"}]}}
        }
    }))
    .unwrap();
    sets.create(&PostParams::default(), &ds).await.unwrap();
    let first = wait_for("a daemon pod", 10, || async {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .first()
            .map(|p| p.name_any())
    })
    .await;
    set_phase(&pods, &first, "Failed").await;
    let second = wait_for("a replacement", 10, || async {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        match list.as_slice() {
            [p] if p.name_any() != first => Some(p.name_any()),
            _ => None,
        }
    })
    .await;
    assert_ne!(first, second);
    let ev = events.list(&ListParams::default()).await.unwrap().items;
    let e = ev
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedDaemonPod"))
        .expect("a FailedDaemonPod event");
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(
        e.message.as_deref(),
        Some(
            format!("Found failed daemon pod default/{first} on node n1, will try to kill it")
                .as_str()
        )
    );
    let _ = stop.send(());
    manager.await.unwrap().unwrap();
}
