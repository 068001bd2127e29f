//! The workload controllers against an in-process API server (memory store). No scheduler
//! or kubelet: the test marks pods Ready through the status subresource itself.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;
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

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Stands in for a kubelet: every live pod becomes Running and Ready.
async fn make_ready(pods: &Api<Pod>) {
    for p in pods.list(&ListParams::default()).await.unwrap() {
        if is_ready(&p) || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now}
        ]}});
        let _ = pods
            .patch_status(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await;
    }
}

async fn live_pods(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn deployment(image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image}]}
            }
        }
    }))
    .unwrap()
}

fn complete(d: &Deployment) -> bool {
    let s = d.status.clone().unwrap_or_default();
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(3)
        && s.replicas == Some(3)
        && s.available_replicas == Some(3)
        && s.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolls_out_and_heals() {
    let client = start_server().await;
    let config = ControllerManagerConfig {
        controllers: vec!["replicaset".into(), "deployment".into()],
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let manager = tokio::spawn(run(client.clone(), config, async {
        let _ = stopped.await;
    }));

    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    deploys
        .create(&PostParams::default(), &deployment("nginx:1"))
        .await
        .unwrap();

    // A ReplicaSet and 3 pods appear without any kubelet.
    wait_for("3 pods", 10, || async {
        (live_pods(&pods).await.len() == 3).then_some(())
    })
    .await;
    let rs_list = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rs_list.len(), 1);
    let first_rs = rs_list[0].name_any();
    assert!(first_rs.starts_with("web-"));
    make_ready(&pods).await;
    wait_for("rollout complete", 10, || async {
        complete(&deploys.get("web").await.unwrap()).then_some(())
    })
    .await;

    // A new image: a second ReplicaSet; never fewer than 3 ready pods (maxUnavailable 0)
    // and never more than 4 pods wanted (maxSurge 1).
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    wait_for("rolled over", 20, || async {
        let ready = live_pods(&pods)
            .await
            .iter()
            .filter(|p| is_ready(p))
            .count();
        assert!(ready >= 3, "only {ready} ready pods during the rollout");
        let wanted: i32 = rss
            .list(&ListParams::default())
            .await
            .unwrap()
            .iter()
            .map(|rs| rs.spec.as_ref().unwrap().replicas.unwrap_or(0))
            .sum();
        assert!(wanted <= 4, "{wanted} replicas wanted during the rollout");
        make_ready(&pods).await;
        let d = deploys.get("web").await.unwrap();
        (complete(&d) && live_pods(&pods).await.len() == 3).then_some(())
    })
    .await;
    let rs_list = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rs_list.len(), 2);
    let old = rs_list.iter().find(|rs| rs.name_any() == first_rs).unwrap();
    let new = rs_list.iter().find(|rs| rs.name_any() != first_rs).unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    assert_eq!(new.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(new.annotations()["deployment.kubernetes.io/revision"], "2");
    let d = deploys.get("web").await.unwrap();
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "2");

    // A deleted pod is replaced.
    let victim = live_pods(&pods).await[0].name_any();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("healed", 10, || async {
        let live = live_pods(&pods).await;
        (live.len() == 3 && live.iter().all(|p| p.name_any() != victim)).then_some(())
    })
    .await;

    // `kubectl rollout undo` copies revision 1's template (minus the hash label) back: the
    // first ReplicaSet returns as revision 3 and remembers revision 1.
    let mut template = old.spec.clone().unwrap().template.unwrap();
    template
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .remove("pod-template-hash");
    // The controllers write the Deployment too: retry the read-modify-write on conflict,
    // as kubectl does.
    wait_for("rollback written", 10, || async {
        let mut d = deploys.get("web").await.unwrap();
        d.spec.as_mut().unwrap().template = template.clone();
        match deploys.replace("web", &PostParams::default(), &d).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(s)) if s.code == 409 => None,
            Err(e) => panic!("replace: {e}"),
        }
    })
    .await;
    wait_for("rolled back", 20, || async {
        make_ready(&pods).await;
        let d = deploys.get("web").await.unwrap();
        let back = rss.get(&first_rs).await.unwrap();
        (complete(&d)
            && back.spec.as_ref().unwrap().replicas == Some(3)
            && live_pods(&pods).await.len() == 3)
            .then_some(back)
    })
    .await;
    let back = rss.get(&first_rs).await.unwrap();
    assert_eq!(back.annotations()["deployment.kubernetes.io/revision"], "3");
    assert_eq!(
        back.annotations()["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(
        rss.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );

    // Settled controllers stop writing (no status ping-pong).
    let versions = || async {
        let mut v = vec![deploys.get("web").await.unwrap().resource_version()];
        v.extend(
            rss.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .map(|rs| rs.resource_version()),
        );
        v
    };
    let before = versions().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        before,
        versions().await,
        "objects kept changing after the rollout settled"
    );

    let _ = stop.send(());
    manager.await.unwrap().unwrap();
}
