use super::*;
use crate::runtime::{RecordingControl, SharedInformers, Verb};
use k8s_openapi::api::apps::v1::ReplicaSetSpec;
use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as K8sSelector, OwnerReference,
};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn rs(name: &str, replicas: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("rs-uid-{name}")),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: K8sSelector {
                match_labels: Some(labels(&[("app", name)])),
                ..Default::default()
            },
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[("app", name)])),
                    ..Default::default()
                }),
                spec: Some(PodSpec::default()),
            }),
            min_ready_seconds: None,
        }),
        status: None,
    }
}

fn pod_of(owner: Option<&ReplicaSet>, name: &str, app: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("pod-uid-{name}")),
            resource_version: Some("1".into()),
            labels: Some(labels(&[("app", app)])),
            owner_references: owner.map(|o| vec![controller_ref(o)]),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        status: None,
    }
}

fn ready(mut p: Pod, node: &str, since_secs: i64) -> Pod {
    p.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
    p.status = Some(PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(
                Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(since_secs),
            )),
            ..Default::default()
        }]),
        ..Default::default()
    });
    p
}

struct Fixture {
    c: Arc<ReplicaSetController<ReplicaSet>>,
    fake: Arc<RecordingControl>,
}

fn fixture(rss: Vec<ReplicaSet>, pods: Vec<Pod>) -> Fixture {
    let inf = SharedInformers::new(None);
    let fake = Arc::new(RecordingControl::new());
    let c = ReplicaSetController::new(
        inf.cache::<Pod>(),
        inf.cache::<ReplicaSet>(),
        Some(inf.cache::<ReplicaSet>()),
        fake.clone(),
    );
    c.register_handlers();
    for r in rss {
        c.owners.apply(r);
    }
    for p in pods {
        c.pods.apply(p);
    }
    Fixture { c, fake }
}

fn last_status(fake: &RecordingControl) -> ReplicaSetStatus {
    let a = fake
        .of(Verb::UpdateStatus, "ReplicaSet")
        .pop()
        .expect("a status write");
    serde_json::from_value(a.object.unwrap()["status"].clone()).unwrap()
}

#[tokio::test]
async fn creates_missing_pods_with_controller_ref() {
    let f = fixture(vec![rs("web", 3)], vec![]);
    f.c.sync("default/web").await.unwrap();
    let creates = f.fake.of(Verb::Create, "Pod");
    assert_eq!(creates.len(), 3);
    let pod: Pod = serde_json::from_value(creates[0].object.clone().unwrap()).unwrap();
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-"));
    let r = &pod.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (
            r.kind.as_str(),
            r.uid.as_str(),
            r.controller,
            r.block_owner_deletion
        ),
        ("ReplicaSet", "rs-uid-web", Some(true), Some(true))
    );
    assert_eq!(pod.metadata.labels.unwrap()["app"], "web");
    assert_eq!(
        f.fake
            .events()
            .iter()
            .filter(|e| e.1 == "SuccessfulCreate")
            .count(),
        3
    );
    let st = last_status(&f.fake);
    assert_eq!((st.replicas, st.observed_generation), (0, Some(1)));
}

#[tokio::test]
async fn expectations_prevent_duplicate_creates_while_cache_lags() {
    let f = fixture(vec![rs("web", 3)], vec![]);
    f.c.sync("default/web").await.unwrap();
    // The cache has not seen the 3 new pods yet: a second sync must not create again.
    f.c.sync("default/web").await.unwrap();
    assert_eq!(f.fake.count(Verb::Create, "Pod"), 3);
    // The cache catches up with two of them: still waiting for the third.
    let created: Vec<Pod> = f
        .fake
        .of(Verb::Create, "Pod")
        .into_iter()
        .map(|a| serde_json::from_value(a.object.unwrap()).unwrap())
        .collect();
    f.c.pods.apply(created[0].clone());
    f.c.pods.apply(created[1].clone());
    f.c.sync("default/web").await.unwrap();
    assert_eq!(f.fake.count(Verb::Create, "Pod"), 3);
    // Once all are observed, a lost pod is replaced.
    f.c.pods.apply(created[2].clone());
    f.c.pods.delete(created[2].clone());
    f.c.sync("default/web").await.unwrap();
    assert_eq!(f.fake.count(Verb::Create, "Pod"), 4);
}

#[tokio::test]
async fn slow_start_stops_after_a_failing_batch() {
    let f = fixture(vec![rs("web", 10)], vec![]);
    f.fake.fail_next_creates(100);
    let err = f.c.sync("default/web").await.unwrap_err();
    assert!(err.to_string().contains("exceeded quota"));
    // Batch of 1 failed: nothing more attempted; expectations lowered for all 10.
    assert_eq!(f.fake.count(Verb::Create, "Pod"), 1);
    assert!(f.c.expectations.satisfied("default/web"));
    let st = last_status(&f.fake);
    let cond = &st.conditions.unwrap()[0];
    assert_eq!(
        (cond.type_.as_str(), cond.reason.as_deref()),
        ("ReplicaFailure", Some("FailedCreate"))
    );

    // Batches 1, 2, 4 succeed, then the batch of 3 (remaining) is attempted.
    let f = fixture(vec![rs("web", 10)], vec![]);
    let (ok, err) = slow_start_batch(10, 1, || async { Ok(()) }).await;
    assert_eq!((ok, err.is_none()), (10, true));
    f.fake.fail_next_creates(0);
}

#[tokio::test]
async fn burst_limit_caps_creates_per_sync() {
    let f = fixture(vec![rs("big", 600)], vec![]);
    f.c.sync("default/big").await.unwrap();
    assert_eq!(f.fake.count(Verb::Create, "Pod"), BURST_REPLICAS);
}

#[tokio::test]
async fn deletes_the_least_valuable_pods_first() {
    let owner = rs("web", 2);
    let pods = vec![
        ready(pod_of(Some(&owner), "old-ready", "web"), "n1", 3600),
        pod_of(Some(&owner), "unassigned", "web"),
        ready(pod_of(Some(&owner), "new-ready", "web"), "n2", 1),
        {
            let mut p = pod_of(Some(&owner), "pending-on-node", "web");
            p.spec.as_mut().unwrap().node_name = Some("n3".into());
            p
        },
    ];
    let f = fixture(vec![owner], pods);
    f.c.sync("default/web").await.unwrap();
    let mut deleted: Vec<String> = f
        .fake
        .of(Verb::Delete, "Pod")
        .into_iter()
        .map(|a| a.name)
        .collect();
    deleted.sort();
    assert_eq!(deleted, vec!["pending-on-node", "unassigned"]);
    // The deletions are expected: no further deletes until observed.
    f.c.sync("default/web").await.unwrap();
    assert_eq!(f.fake.count(Verb::Delete, "Pod"), 2);
    let unassigned = f.c.pods.get("default", "unassigned").unwrap();
    f.c.pods.delete((*unassigned).clone());
    assert!(!f.c.expectations.satisfied("default/web"));
    let p = f.c.pods.get("default", "pending-on-node").unwrap();
    f.c.pods.delete((*p).clone());
    assert!(f.c.expectations.satisfied("default/web"));
}

#[test]
fn ranking_follows_upstream_order() {
    let now = Timestamp::now();
    let base = pod_of(None, "a", "x");
    let mut restarted = ready(base.clone(), "n1", 100);
    restarted.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
        name: "c".into(),
        restart_count: 5,
        ..Default::default()
    }]);
    let mut calm = restarted.clone();
    calm.status.as_mut().unwrap().container_statuses = None;
    // Same ready time: more restarts go first.
    assert_eq!(
        compare_for_deletion(&restarted, 0, &calm, 0, now),
        Ordering::Less
    );
    // Doubled-up pods go first.
    assert_eq!(
        compare_for_deletion(&calm, 3, &calm, 1, now),
        Ordering::Less
    );
    // Deletion cost beats rank.
    let mut cheap = calm.clone();
    cheap.metadata.annotations = Some(labels(&[(POD_DELETION_COST, "-10")]));
    assert_eq!(
        compare_for_deletion(&cheap, 0, &calm, 5, now),
        Ordering::Less
    );
    // Not ready before ready; Pending before Running.
    let mut running = base.clone();
    running.status = Some(PodStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    running.spec.as_mut().unwrap().node_name = Some("n1".into());
    let mut pending = base.clone();
    pending.spec.as_mut().unwrap().node_name = Some("n1".into());
    assert_eq!(
        compare_for_deletion(&pending, 0, &running, 0, now),
        Ordering::Less
    );
    assert_eq!(
        compare_for_deletion(&running, 0, &calm, 0, now),
        Ordering::Less
    );
}

#[tokio::test]
async fn adopts_matching_orphans_and_releases_non_matching() {
    let owner = rs("web", 2);
    let orphan = pod_of(None, "orphan", "web");
    let mut stray = pod_of(Some(&owner), "stray", "other");
    stray.metadata.labels = Some(labels(&[("app", "other")]));
    let foreign_owner = OwnerReference {
        controller: Some(true),
        uid: "someone-else".into(),
        kind: "ReplicaSet".into(),
        name: "x".into(),
        ..Default::default()
    };
    let mut foreign = pod_of(None, "foreign", "web");
    foreign.metadata.owner_references = Some(vec![foreign_owner]);
    let f = fixture(vec![owner], vec![orphan, stray, foreign]);
    f.c.sync("default/web").await.unwrap();
    let patches = f.fake.of(Verb::Patch, "Pod");
    let adopt = patches
        .iter()
        .find(|a| a.name == "orphan")
        .expect("adoption patch");
    assert_eq!(
        adopt.object.as_ref().unwrap()["metadata"]["ownerReferences"][0]["uid"],
        "rs-uid-web"
    );
    let release = patches
        .iter()
        .find(|a| a.name == "stray")
        .expect("release patch");
    assert!(release.object.as_ref().unwrap()["metadata"]["ownerReferences"].is_null());
    assert!(patches.iter().all(|a| a.name != "foreign"));
    // One adopted pod counts: one more is created.
    assert_eq!(f.fake.count(Verb::Create, "Pod"), 1);
}

#[tokio::test]
async fn status_counts_ready_available_and_fully_labeled() {
    let mut owner = rs("web", 3);
    owner.spec.as_mut().unwrap().min_ready_seconds = Some(30);
    let mut partial = ready(pod_of(Some(&owner), "c", "web"), "n1", 60);
    partial.metadata.labels = Some(labels(&[("app", "web")]));
    let mut template_labels = labels(&[("app", "web"), ("tier", "fe")]);
    owner
        .spec
        .as_mut()
        .unwrap()
        .template
        .as_mut()
        .unwrap()
        .metadata
        .as_mut()
        .unwrap()
        .labels = Some(template_labels.clone());
    let mut full = ready(pod_of(Some(&owner), "a", "web"), "n1", 60);
    full.metadata.labels = Some(template_labels.clone());
    template_labels.clear();
    let young = ready(pod_of(Some(&owner), "b", "web"), "n1", 1);
    let f = fixture(vec![owner], vec![full, young, partial]);
    let requeue = f.c.sync("default/web").await.unwrap();
    let st = last_status(&f.fake);
    assert_eq!(st.replicas, 3);
    assert_eq!(st.fully_labeled_replicas, Some(1));
    assert_eq!(st.ready_replicas, Some(3));
    assert_eq!(st.available_replicas, Some(2));
    // All ready but not all available: come back after minReadySeconds.
    assert_eq!(requeue, Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn pod_events_enqueue_the_owner_and_lower_expectations() {
    let owner = rs("web", 1);
    let f = fixture(vec![owner.clone()], vec![]);
    while !f.c.queue.is_empty() {
        let k = f.c.queue.get().await.unwrap();
        f.c.queue.done(&k);
    }
    f.c.expectations.expect_creations("default/web", 1);
    f.c.pods.apply(pod_of(Some(&owner), "p", "web"));
    assert!(f.c.expectations.satisfied("default/web"));
    assert_eq!(f.c.queue.get().await.as_deref(), Some("default/web"));
}

#[tokio::test]
async fn replication_controller_uses_the_same_sync() {
    use k8s_openapi::api::core::v1::ReplicationControllerSpec;
    let inf = SharedInformers::new(None);
    let fake = Arc::new(RecordingControl::new());
    let c = ReplicaSetController::<ReplicationController>::new(
        inf.cache(),
        inf.cache(),
        None,
        fake.clone(),
    );
    c.owners.apply(ReplicationController {
        metadata: ObjectMeta {
            name: Some("rc".into()),
            namespace: Some("default".into()),
            uid: Some("u".into()),
            ..Default::default()
        },
        spec: Some(ReplicationControllerSpec {
            replicas: Some(2),
            selector: Some(labels(&[("app", "rc")])),
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[("app", "rc")])),
                    ..Default::default()
                }),
                spec: Some(PodSpec::default()),
            }),
            ..Default::default()
        }),
        status: None,
    });
    c.sync("default/rc").await.unwrap();
    assert_eq!(fake.count(Verb::Create, "Pod"), 2);
    let pod: Pod =
        serde_json::from_value(fake.of(Verb::Create, "Pod")[0].object.clone().unwrap()).unwrap();
    assert_eq!(
        pod.metadata.owner_references.unwrap()[0].kind,
        "ReplicationController"
    );
    assert_eq!(fake.count(Verb::UpdateStatus, "ReplicationController"), 1);
}
