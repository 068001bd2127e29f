use super::*;
use crate::runtime::{RecordingControl, SharedInformers, Verb};
use k8s_openapi::api::apps::v1::{
    DeploymentCondition, DeploymentSpec, DeploymentStrategy, ReplicaSetStatus,
    RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as K8sSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

fn labels() -> BTreeMap<String, String> {
    [("app".to_string(), "web".to_string())].into()
}

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn deployment(replicas: i32, image: &str, surge: i32, unavailable: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("d-uid".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: K8sSelector {
                match_labels: Some(labels()),
                ..Default::default()
            },
            template: template(image),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(surge)),
                    max_unavailable: Some(IntOrString::Int(unavailable)),
                }),
            }),
            revision_history_limit: Some(10),
            progress_deadline_seconds: Some(600),
            ..Default::default()
        }),
        status: None,
    }
}

/// A ReplicaSet of `d` for `image` as the controller would have made it.
fn rs_for(
    d: &Deployment,
    image: &str,
    revision: i64,
    replicas: i32,
    available: i32,
    age_secs: i64,
) -> ReplicaSet {
    let t = template(image);
    let hash = compute_hash(&t, None);
    let mut t2 = t.clone();
    t2.metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut sel_labels = labels();
    sel_labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let desired = util::replicas(d);
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("web-{hash}")),
            namespace: Some("default".into()),
            uid: Some(format!("rs-{hash}")),
            labels: t2.metadata.as_ref().unwrap().labels.clone(),
            owner_references: Some(vec![controller_ref(d)]),
            creation_timestamp: Some(Time(Timestamp::now() - SignedDuration::from_secs(age_secs))),
            annotations: Some(
                [
                    (REVISION.to_string(), revision.to_string()),
                    (DESIRED_REPLICAS.to_string(), desired.to_string()),
                    (
                        MAX_REPLICAS.to_string(),
                        (desired + max_surge(d)).to_string(),
                    ),
                ]
                .into(),
            ),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: K8sSelector {
                match_labels: Some(sel_labels),
                ..Default::default()
            },
            template: Some(t2),
            min_ready_seconds: None,
        }),
        status: Some(ReplicaSetStatus {
            replicas,
            ready_replicas: Some(available),
            available_replicas: Some(available),
            observed_generation: Some(1),
            ..Default::default()
        }),
    }
}

fn fixture(
    d: Deployment,
    rss: Vec<ReplicaSet>,
) -> (Arc<DeploymentController>, Arc<RecordingControl>) {
    let inf = SharedInformers::new(None);
    let fake = Arc::new(RecordingControl::new());
    let c = DeploymentController::new(inf.cache(), inf.cache(), inf.cache(), fake.clone());
    c.deployments.apply(d);
    for rs in rss {
        c.replica_sets.apply(rs);
    }
    (c, fake)
}

fn written_rs(fake: &RecordingControl, verb: Verb) -> Vec<ReplicaSet> {
    fake.of(verb, "ReplicaSet")
        .into_iter()
        .map(|a| serde_json::from_value(a.object.unwrap()).unwrap())
        .collect()
}

fn last_status(fake: &RecordingControl) -> DeploymentStatus {
    let a = fake
        .of(Verb::UpdateStatus, "Deployment")
        .pop()
        .expect("a status write");
    serde_json::from_value(a.object.unwrap()["status"].clone()).unwrap()
}

fn cond(s: &DeploymentStatus, t: &str) -> DeploymentCondition {
    get_condition(s, t)
        .cloned()
        .unwrap_or_else(|| panic!("no {t} condition in {s:?}"))
}

#[tokio::test]
async fn new_deployment_gets_a_hashed_replica_set() {
    let d = deployment(3, "nginx:1", 1, 0);
    let (c, fake) = fixture(d.clone(), vec![]);
    c.sync("default/web").await.unwrap();
    let created = written_rs(&fake, Verb::Create);
    assert_eq!(created.len(), 1);
    let rs = &created[0];
    let hash = compute_hash(&d.spec.as_ref().unwrap().template, None);
    assert_eq!(
        rs.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    assert_eq!(rs_replicas(rs), 3);
    let spec = rs.spec.as_ref().unwrap();
    assert_eq!(
        spec.selector.match_labels.as_ref().unwrap()[POD_TEMPLATE_HASH],
        hash
    );
    assert_eq!(
        spec.template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap()[POD_TEMPLATE_HASH],
        hash
    );
    let a = rs.metadata.annotations.as_ref().unwrap();
    assert_eq!(
        (
            a[REVISION].as_str(),
            a[DESIRED_REPLICAS].as_str(),
            a[MAX_REPLICAS].as_str()
        ),
        ("1", "3", "4")
    );
    assert_eq!(
        rs.metadata.owner_references.as_ref().unwrap()[0].uid,
        "d-uid"
    );
    // The Deployment's revision is written as metadata, the condition as status.
    let patch = &fake.of(Verb::Patch, "Deployment")[0];
    assert_eq!(
        patch.object.as_ref().unwrap()["metadata"]["annotations"][REVISION],
        "1"
    );
    let st = last_status(&fake);
    assert_eq!(
        cond(&st, "Progressing").reason.as_deref(),
        Some(reason::NEW_RS_CREATED)
    );
    assert!(fake
        .events()
        .iter()
        .any(|e| e.2 == format!("Scaled up replica set web-{hash} from 0 to 3")));
}

#[tokio::test]
async fn rolling_update_respects_max_surge_then_max_unavailable() {
    let old_d = deployment(3, "nginx:1", 1, 0);
    let old = rs_for(&old_d, "nginx:1", 1, 3, 3, 100);
    let mut d = deployment(3, "nginx:2", 1, 0);
    d.metadata.generation = Some(2);
    let (c, fake) = fixture(d.clone(), vec![old.clone()]);
    c.sync("default/web").await.unwrap();
    let created = written_rs(&fake, Verb::Create);
    // maxSurge 1: 3 old + 1 new; maxUnavailable 0: the old one is not touched yet.
    assert_eq!(rs_replicas(&created[0]), 1);
    assert_eq!(
        created[0].metadata.annotations.as_ref().unwrap()[REVISION],
        "2"
    );
    assert_eq!(fake.count(Verb::Update, "ReplicaSet"), 0);

    // The new pod became available: one old replica may go.
    let mut new_rs = rs_for(&d, "nginx:2", 2, 1, 1, 1);
    new_rs.metadata.name = created[0].metadata.name.clone();
    let (c, fake) = fixture(d.clone(), vec![old.clone(), new_rs.clone()]);
    c.sync("default/web").await.unwrap();
    let updated = written_rs(&fake, Verb::Update);
    assert_eq!(updated.len(), 1);
    assert_eq!(
        (updated[0].metadata.name.clone(), rs_replicas(&updated[0])),
        (old.metadata.name.clone(), 2)
    );
    let st = last_status(&fake);
    assert_eq!(cond(&st, "Available").status, "True");

    // Without availability of the new pod nothing more happens (maxUnavailable 0).
    let mut unready_new = new_rs.clone();
    unready_new.status.as_mut().unwrap().available_replicas = Some(0);
    let (c, fake) = fixture(d, vec![old, unready_new]);
    c.sync("default/web").await.unwrap();
    assert_eq!(fake.count(Verb::Update, "ReplicaSet"), 0);
}

#[tokio::test]
async fn paused_deployment_does_not_roll_out() {
    let old_d = deployment(3, "nginx:1", 1, 0);
    let old = rs_for(&old_d, "nginx:1", 1, 3, 3, 100);
    let mut d = deployment(3, "nginx:2", 1, 0);
    d.spec.as_mut().unwrap().paused = Some(true);
    let (c, fake) = fixture(d, vec![old]);
    c.sync("default/web").await.unwrap();
    assert_eq!(fake.count(Verb::Create, "ReplicaSet"), 0);
    let first: DeploymentStatus = serde_json::from_value(
        fake.of(Verb::UpdateStatus, "Deployment")[0]
            .object
            .clone()
            .unwrap()["status"]
            .clone(),
    )
    .unwrap();
    assert_eq!(
        cond(&first, "Progressing").reason.as_deref(),
        Some(reason::PAUSED)
    );
}

#[tokio::test]
async fn rollback_reuses_the_old_replica_set_with_a_new_revision() {
    let d1 = deployment(3, "nginx:1", 1, 0);
    let rev1 = rs_for(&d1, "nginx:1", 1, 0, 0, 200);
    let rev2 = rs_for(&d1, "nginx:2", 2, 3, 3, 100);
    // kubectl rollout undo copied revision 1's template (without the hash label) back.
    let d = deployment(3, "nginx:1", 1, 0);
    let (c, fake) = fixture(d, vec![rev1.clone(), rev2]);
    c.sync("default/web").await.unwrap();
    assert_eq!(fake.count(Verb::Create, "ReplicaSet"), 0);
    let updated = written_rs(&fake, Verb::Update);
    let back = updated
        .iter()
        .find(|rs| rs.metadata.name == rev1.metadata.name)
        .expect("revision 1 updated");
    let a = back.metadata.annotations.as_ref().unwrap();
    assert_eq!(
        (a[REVISION].as_str(), a[REVISION_HISTORY].as_str()),
        ("3", "1")
    );
}

#[tokio::test]
async fn scaling_mid_rollout_is_proportional() {
    let d10 = deployment(10, "nginx:1", 3, 2);
    let mut old = rs_for(&d10, "nginx:1", 1, 8, 8, 100);
    let mut new = rs_for(&d10, "nginx:2", 2, 5, 0, 10);
    for rs in [&mut old, &mut new] {
        rs.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(MAX_REPLICAS.into(), "13".into());
    }
    let mut d = deployment(15, "nginx:2", 3, 2);
    d.status = Some(DeploymentStatus {
        replicas: Some(13),
        ..Default::default()
    });
    let (c, fake) = fixture(d, vec![old.clone(), new.clone()]);
    c.sync("default/web").await.unwrap();
    let updated = written_rs(&fake, Verb::Update);
    let size = |name: &Option<String>| {
        rs_replicas(updated.iter().find(|rs| &rs.metadata.name == name).unwrap())
    };
    // allowed 15 + 3 = 18, 13 running: old gets round(8*18/13)-8 = 3, new round(5*18/13)-5 = 2.
    assert_eq!(
        (size(&old.metadata.name), size(&new.metadata.name)),
        (11, 7)
    );
    assert!(updated
        .iter()
        .all(|rs| rs.metadata.annotations.as_ref().unwrap()[DESIRED_REPLICAS] == "15"));
}

#[tokio::test]
async fn complete_rollout_cleans_history_and_reports_conditions() {
    let mut d = deployment(2, "nginx:9", 1, 0);
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    let mut rss: Vec<ReplicaSet> = (1..=3)
        .map(|i| rs_for(&d, &format!("nginx:{i}"), i, 0, 0, 100 - i))
        .collect();
    rss.push(rs_for(&d, "nginx:9", 4, 2, 2, 1));
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(2),
        updated_replicas: Some(2),
        available_replicas: Some(2),
        ready_replicas: Some(2),
        ..Default::default()
    });
    let (c, fake) = fixture(d, rss.clone());
    c.sync("default/web").await.unwrap();
    let mut deleted: Vec<String> = fake
        .of(Verb::Delete, "ReplicaSet")
        .into_iter()
        .map(|a| a.name)
        .collect();
    deleted.sort();
    let mut want = vec![
        rss[0].metadata.name.clone().unwrap(),
        rss[1].metadata.name.clone().unwrap(),
    ];
    want.sort();
    assert_eq!(deleted, want);
    let st = last_status(&fake);
    assert_eq!(
        cond(&st, "Progressing").reason.as_deref(),
        Some(reason::NEW_RS_AVAILABLE)
    );
    assert_eq!(
        cond(&st, "Available").reason.as_deref(),
        Some(reason::MIN_AVAILABLE)
    );
    assert_eq!(
        (st.replicas, st.updated_replicas, st.available_replicas),
        (Some(2), Some(2), Some(2))
    );
}

#[tokio::test]
async fn stalled_rollout_times_out() {
    let old_d = deployment(3, "nginx:1", 1, 0);
    let old = rs_for(&old_d, "nginx:1", 1, 3, 3, 1000);
    let mut d = deployment(3, "nginx:2", 1, 0);
    let new = rs_for(&d, "nginx:2", 2, 1, 0, 900);
    let long_ago = Time(Timestamp::now() - SignedDuration::from_secs(700));
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(4),
        updated_replicas: Some(1),
        available_replicas: Some(3),
        ready_replicas: Some(3),
        unavailable_replicas: Some(1),
        conditions: Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "True".into(),
            reason: Some(reason::RS_UPDATED.into()),
            last_update_time: Some(long_ago.clone()),
            last_transition_time: Some(long_ago),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let (c, fake) = fixture(d, vec![old, new]);
    c.sync("default/web").await.unwrap();
    let st = last_status(&fake);
    let p = cond(&st, "Progressing");
    assert_eq!(
        (p.status.as_str(), p.reason.as_deref()),
        ("False", Some(reason::TIMED_OUT))
    );
}

#[tokio::test]
async fn recreate_scales_old_down_before_creating_new() {
    let mut old_d = deployment(3, "nginx:1", 1, 0);
    old_d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
        type_: Some("Recreate".into()),
        rolling_update: None,
    });
    let old = rs_for(&old_d, "nginx:1", 1, 3, 3, 100);
    let mut d = old_d.clone();
    d.spec.as_mut().unwrap().template = template("nginx:2");
    let (c, fake) = fixture(d.clone(), vec![old.clone()]);
    c.sync("default/web").await.unwrap();
    assert_eq!(fake.count(Verb::Create, "ReplicaSet"), 0);
    assert_eq!(rs_replicas(&written_rs(&fake, Verb::Update)[0]), 0);

    // Old ReplicaSet empty and its pods gone: the new one starts at full size.
    let mut empty = old.clone();
    empty.spec.as_mut().unwrap().replicas = Some(0);
    empty.status = Some(ReplicaSetStatus {
        replicas: 0,
        ..Default::default()
    });
    let (c, fake) = fixture(d, vec![empty]);
    c.sync("default/web").await.unwrap();
    assert_eq!(rs_replicas(&written_rs(&fake, Verb::Create)[0]), 3);
}
