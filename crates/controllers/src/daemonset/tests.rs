use super::*;
use crate::runtime::{RecordingControl, SharedInformers, Verb};
use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{NodeSpec, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

fn ds() -> DaemonSet {
    let labels: BTreeMap<String, String> = [("app".to_string(), "agent".to_string())].into();
    DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            namespace: Some("default".into()),
            uid: Some("ds".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![k8s_openapi::api::core::v1::Container {
                        name: "c".into(),
                        image: Some("agent:1".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn with_strategy(mut d: DaemonSet, type_: &str, surge: i32, unavailable: i32) -> DaemonSet {
    d.spec.as_mut().unwrap().update_strategy = Some(DaemonSetUpdateStrategy {
        type_: Some(type_.into()),
        rolling_update: (type_ == "RollingUpdate").then_some(RollingUpdateDaemonSet {
            max_surge: Some(IntOrString::Int(surge)),
            max_unavailable: Some(IntOrString::Int(unavailable)),
        }),
    });
    d
}

fn new_image(mut d: DaemonSet) -> DaemonSet {
    d.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("agent:2".into());
    d.metadata.generation = Some(2);
    d
}

fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(
                taints
                    .iter()
                    .map(|(k, e)| Taint {
                        key: k.to_string(),
                        effect: e.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

fn fixture(d: DaemonSet, nodes: Vec<Node>) -> (Arc<DaemonSetController>, Arc<RecordingControl>) {
    let inf = SharedInformers::new(None);
    let fake = Arc::new(RecordingControl::new());
    let c = DaemonSetController::new(
        inf.cache(),
        inf.cache(),
        inf.cache(),
        inf.cache(),
        fake.clone(),
    );
    c.register_handlers();
    c.sets.apply(d);
    for n in nodes {
        c.nodes.apply(n);
    }
    (c, fake)
}

/// A running, ready daemon pod of `d` bound to `node`.
fn running_pod(c: &DaemonSetController, d: &DaemonSet, node: &str, n: u32) -> Pod {
    let mut p = c.new_pod(d, node, &current_hash(d));
    p.metadata.name = Some(format!("agent-{node}-{n}"));
    p.metadata.uid = Some(format!("uid-{node}-{n}"));
    p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(1_000 + n as i64).unwrap()));
    p.spec.as_mut().unwrap().node_name = Some(node.into());
    p.status = Some(PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(Timestamp::from_second(1_000).unwrap())),
            ..Default::default()
        }]),
        ..Default::default()
    });
    p
}

fn created_nodes(fake: &RecordingControl) -> Vec<String> {
    let mut v: Vec<String> = fake
        .of(Verb::Create, "Pod")
        .iter()
        .map(|a| {
            let p: Pod = serde_json::from_value(a.object.clone().unwrap()).unwrap();
            target_node(&p).unwrap()
        })
        .collect();
    v.sort();
    v
}

fn deleted(fake: &RecordingControl) -> Vec<String> {
    let mut v: Vec<String> = fake
        .of(Verb::Delete, "Pod")
        .into_iter()
        .map(|a| a.name)
        .collect();
    v.sort();
    v
}

fn last_status(fake: &RecordingControl) -> DaemonSetStatus {
    let a = fake.of(Verb::UpdateStatus, "DaemonSet");
    serde_json::from_value(a.last().unwrap().object.clone().unwrap()["status"].clone()).unwrap()
}

#[tokio::test]
async fn one_pod_per_eligible_node_pinned_by_affinity() {
    let mut d = ds();
    d.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .node_selector = Some([("role".to_string(), "edge".to_string())].into());
    let nodes = vec![
        node("a", &[("role", "edge")], &[]),
        node("b", &[("role", "core")], &[]),
        node("c", &[("role", "edge")], &[("dedicated", "NoSchedule")]),
        // The daemon tolerations let pods onto unschedulable and not-ready nodes.
        node(
            "d",
            &[("role", "edge")],
            &[
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
                ("node.kubernetes.io/not-ready", "NoExecute"),
            ],
        ),
    ];
    let (c, fake) = fixture(d, nodes);
    c.sync("default/agent").await.unwrap();
    assert_eq!(created_nodes(&fake), vec!["a", "d"]);
    let pod: Pod =
        serde_json::from_value(fake.of(Verb::Create, "Pod")[0].object.clone().unwrap()).unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.node_name, None, "the scheduler binds daemon pods");
    let term = &spec
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms[0];
    let f = &term.match_fields.as_ref().unwrap()[0];
    assert_eq!(
        (f.key.as_str(), f.operator.as_str()),
        ("metadata.name", "In")
    );
    let tols = spec.tolerations.unwrap();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        let t = tols
            .iter()
            .find(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect))
            .unwrap_or_else(|| panic!("missing toleration {key}"));
        assert_eq!(t.toleration_seconds, None);
    }
    assert!(!tols
        .iter()
        .any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable")));
    let labels = pod.metadata.labels.unwrap();
    assert_eq!(labels[REVISION_LABEL], current_hash(&c.sets.list_all()[0]));
    assert_eq!(labels[TEMPLATE_GENERATION_LABEL], "1");
    assert_eq!(fake.count(Verb::Create, "ControllerRevision"), 1);
    let st = last_status(&fake);
    assert_eq!(
        (st.desired_number_scheduled, st.current_number_scheduled),
        (2, 0)
    );
    assert_eq!(st.number_unavailable, Some(2));
    assert_eq!(st.observed_generation, Some(1));
}

#[test]
fn host_network_pods_tolerate_network_unavailable() {
    let mut spec = PodSpec {
        host_network: Some(true),
        ..Default::default()
    };
    add_daemon_tolerations(&mut spec);
    assert!(spec.tolerations.unwrap().iter().any(|t| t.key.as_deref()
        == Some("node.kubernetes.io/network-unavailable")
        && t.effect.as_deref() == Some("NoSchedule")));
}

#[test]
fn required_node_affinity_selects_nodes() {
    let mut d = ds();
    d.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: "zone".into(),
                        operator: "NotIn".into(),
                        values: Some(vec!["z2".into()]),
                    }]),
                    match_fields: None,
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let t = template(&d);
    assert_eq!(
        node_should_run(&t, &node("a", &[("zone", "z1")], &[])),
        (true, true)
    );
    assert_eq!(
        node_should_run(&t, &node("b", &[("zone", "z2")], &[])),
        (false, false)
    );
    // Untolerated NoSchedule: no new pod, but a running one stays; NoExecute evicts.
    let t = template(&ds());
    assert_eq!(
        node_should_run(&t, &node("c", &[], &[("x", "NoSchedule")])),
        (false, true)
    );
    assert_eq!(
        node_should_run(&t, &node("d", &[], &[("x", "NoExecute")])),
        (false, false)
    );
    assert_eq!(
        node_should_run(&t, &node("e", &[], &[("x", "PreferNoSchedule")])),
        (true, true)
    );
}

#[tokio::test]
async fn expectations_prevent_duplicate_creates_until_observed() {
    let (c, fake) = fixture(ds(), vec![node("a", &[], &[]), node("b", &[], &[])]);
    c.sync("default/agent").await.unwrap();
    assert_eq!(fake.count(Verb::Create, "Pod"), 2);
    // The cache has not seen the new pods yet: a second sync must not create again.
    c.sync("default/agent").await.unwrap();
    assert_eq!(fake.count(Verb::Create, "Pod"), 2);
    // Once the pods are observed, nothing more is needed.
    let d = c.sets.list_all()[0].clone();
    c.pods.apply(running_pod(&c, &d, "a", 0));
    c.pods.apply(running_pod(&c, &d, "b", 0));
    fake.clear();
    c.sync("default/agent").await.unwrap();
    assert_eq!(fake.count(Verb::Create, "Pod"), 0);
    let st = last_status(&fake);
    assert_eq!(
        (
            st.desired_number_scheduled,
            st.current_number_scheduled,
            st.number_ready,
            st.number_available,
            st.updated_number_scheduled,
            st.number_unavailable,
        ),
        (2, 2, 2, Some(2), Some(2), None)
    );
}

#[tokio::test]
async fn pods_follow_nodes_added_and_removed() {
    let d = ds();
    let (c, fake) = fixture(d.clone(), vec![node("a", &[], &[]), node("b", &[], &[])]);
    c.pods.apply(running_pod(&c, &d, "a", 0));
    c.pods.apply(running_pod(&c, &d, "b", 0));
    // Node b goes away, node c comes.
    c.nodes.delete(node("b", &[], &[]));
    c.nodes.apply(node("c", &[], &[]));
    c.sync("default/agent").await.unwrap();
    assert_eq!(created_nodes(&fake), vec!["c"]);
    assert_eq!(deleted(&fake), vec!["agent-b-0"]);
}

#[tokio::test]
async fn misscheduled_duplicate_and_failed_pods_are_removed() {
    let d = ds();
    let nodes = vec![
        node("a", &[], &[]),
        node("b", &[], &[("x", "NoExecute")]),
        node("c", &[], &[("x", "NoSchedule")]),
    ];
    let (c, fake) = fixture(d.clone(), nodes);
    c.pods.apply(running_pod(&c, &d, "a", 0));
    c.pods.apply(running_pod(&c, &d, "a", 1));
    c.pods.apply(running_pod(&c, &d, "b", 0));
    c.pods.apply(running_pod(&c, &d, "c", 0));
    c.sync("default/agent").await.unwrap();
    // The newer duplicate on a and the pod on the NoExecute node go; c's pod stays.
    assert_eq!(deleted(&fake), vec!["agent-a-1", "agent-b-0"]);
    let st = last_status(&fake);
    assert_eq!(
        (st.desired_number_scheduled, st.number_misscheduled),
        (1, 2)
    );

    let (c, fake) = fixture(d.clone(), vec![node("a", &[], &[])]);
    let mut failed = running_pod(&c, &d, "a", 0);
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    c.pods.apply(failed);
    c.sync("default/agent").await.unwrap();
    assert_eq!(deleted(&fake), vec!["agent-a-0"]);
    assert!(fake.events().iter().any(|e| e.1 == "FailedDaemonPod"));
}

#[tokio::test]
async fn rolling_update_respects_max_unavailable() {
    let old = with_strategy(ds(), "RollingUpdate", 0, 2);
    let new = new_image(old.clone());
    let nodes: Vec<Node> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| node(n, &[], &[]))
        .collect();
    let (c, fake) = fixture(new.clone(), nodes);
    for n in ["a", "b", "c", "d", "e"] {
        c.pods.apply(running_pod(&c, &old, n, 0));
    }
    c.sync("default/agent").await.unwrap();
    assert_eq!(fake.count(Verb::Delete, "Pod"), 2);
    assert_eq!(fake.count(Verb::Create, "Pod"), 0);
    let st = last_status(&fake);
    assert_eq!(st.updated_number_scheduled, None);

    // One node already runs a new pod that is not ready yet: only one more old pod may go.
    let (c, fake) = fixture(
        new.clone(),
        ["a", "b", "c"].iter().map(|n| node(n, &[], &[])).collect(),
    );
    let mut fresh = running_pod(&c, &new, "a", 0);
    fresh.status.as_mut().unwrap().conditions = None;
    c.pods.apply(fresh);
    c.pods.apply(running_pod(&c, &old, "b", 0));
    c.pods.apply(running_pod(&c, &old, "c", 0));
    c.sync("default/agent").await.unwrap();
    assert_eq!(fake.count(Verb::Delete, "Pod"), 1);
    let st = last_status(&fake);
    assert_eq!((st.updated_number_scheduled, st.number_ready), (Some(1), 2));
}

#[tokio::test]
async fn rolling_update_with_surge_starts_new_before_deleting_old() {
    let old = with_strategy(ds(), "RollingUpdate", 1, 0);
    let new = new_image(old.clone());
    let (c, fake) = fixture(new.clone(), vec![node("a", &[], &[]), node("b", &[], &[])]);
    c.pods.apply(running_pod(&c, &old, "a", 0));
    c.pods.apply(running_pod(&c, &old, "b", 0));
    c.sync("default/agent").await.unwrap();
    assert_eq!(created_nodes(&fake), vec!["a"]);
    assert_eq!(fake.count(Verb::Delete, "Pod"), 0);
    // The surged pod is not available yet: both stay, nothing else surges.
    let mut surged = running_pod(&c, &new, "a", 1);
    surged.status.as_mut().unwrap().conditions = None;
    c.pods.apply(surged.clone());
    fake.clear();
    c.sync("default/agent").await.unwrap();
    assert_eq!(
        fake.count(Verb::Delete, "Pod") + fake.count(Verb::Create, "Pod"),
        0
    );
    // Once available, the old pod on a goes and b gets its surge pod.
    c.pods.apply(running_pod(&c, &new, "a", 1));
    fake.clear();
    c.sync("default/agent").await.unwrap();
    assert_eq!(deleted(&fake), vec!["agent-a-0"]);
}

#[tokio::test]
async fn on_delete_leaves_old_pods_alone() {
    let old = with_strategy(ds(), "OnDelete", 0, 0);
    let new = new_image(old.clone());
    let (c, fake) = fixture(new.clone(), vec![node("a", &[], &[]), node("b", &[], &[])]);
    c.pods.apply(running_pod(&c, &old, "a", 0));
    c.sync("default/agent").await.unwrap();
    assert_eq!(fake.count(Verb::Delete, "Pod"), 0);
    // A node without a pod gets one of the new template.
    let created: Pod =
        serde_json::from_value(fake.of(Verb::Create, "Pod")[0].object.clone().unwrap()).unwrap();
    assert_eq!(target_node(&created).as_deref(), Some("b"));
    assert_eq!(hash_of(&created), Some(current_hash(&new).as_str()));
}

#[test]
fn surge_and_unavailable_resolve_percentages() {
    let mut d = ds();
    d.spec.as_mut().unwrap().update_strategy = Some(DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDaemonSet {
            max_surge: Some(IntOrString::String("25%".into())),
            max_unavailable: Some(IntOrString::String("25%".into())),
        }),
    });
    assert_eq!(surge_and_unavailable(&d, 10), (3, 2));
    assert_eq!(surge_and_unavailable(&d, 0), (0, 1));
    assert_eq!(surge_and_unavailable(&ds(), 10), (0, 1));
}

#[tokio::test]
async fn failed_pods_are_killed_with_exponential_backoff() {
    let d = ds();
    let inf = SharedInformers::new(None);
    let fake = Arc::new(RecordingControl::new());
    let clock = Arc::new(crate::job::FakeClock::new(
        Timestamp::from_second(5_000).unwrap(),
    ));
    let c = DaemonSetController::with_clock(
        inf.cache(),
        inf.cache(),
        inf.cache(),
        inf.cache(),
        fake.clone(),
        clock.clone(),
    );
    c.register_handlers();
    c.sets.apply(d.clone());
    c.nodes.apply(node("a", &[], &[]));
    let failed = |n: u32| {
        let mut p = running_pod(&c, &d, "a", n);
        p.status.as_mut().unwrap().phase = Some("Failed".into());
        p
    };
    let kill_and_replace = |n: u32| {
        // The kill is observed (pod gone), then the replacement appears and fails.
        let c = &c;
        let failed = &failed;
        async move {
            c.pods.delete(failed(n));
            c.sync("default/agent").await.unwrap();
            c.pods.apply(failed(n + 1));
        }
    };

    c.pods.apply(failed(0));
    c.sync("default/agent").await.unwrap();
    assert_eq!(deleted(&fake), vec!["agent-a-0"]);
    let ev = fake.events();
    let e = ev.iter().find(|e| e.1 == "FailedDaemonPod").expect("event");
    assert_eq!(
        e.2,
        "Found failed daemon pod default/agent-a-0 on node a, will try to kill it"
    );
    fake.clear();
    kill_and_replace(0).await;
    assert_eq!(
        created_nodes(&fake),
        vec!["a"],
        "replaced once the kill is seen"
    );

    // The replacement failed at once: it stays for 1 s, then 2 s, 4 s...
    for (n, delay) in [(1u32, 1u64), (2, 2), (3, 4)] {
        fake.clear();
        let r = c.sync("default/agent").await.unwrap();
        assert!(
            deleted(&fake).is_empty(),
            "pod {n} killed inside its backoff"
        );
        assert!(
            created_nodes(&fake).is_empty(),
            "no pod beside a failed one"
        );
        assert_eq!(r, Some(Duration::from_secs(delay)));
        clock.step(Duration::from_secs(delay));
        c.sync("default/agent").await.unwrap();
        assert_eq!(deleted(&fake), vec![format!("agent-a-{n}")]);
        kill_and_replace(n).await;
    }

    // A quiet spell of twice the maximum resets the delay.
    clock.step(FAILED_POD_BACKOFF_MAX * 2 + Duration::from_secs(1));
    fake.clear();
    c.sync("default/agent").await.unwrap();
    assert_eq!(deleted(&fake), vec!["agent-a-4"]);
    assert_eq!(
        c.failed_pods_backoff.get(&failed_pods_backoff_key(&d, "a")),
        FAILED_POD_BACKOFF_INITIAL
    );
}

#[test]
fn backoff_caps_at_fifteen_minutes() {
    let b = FailedPodsBackoff::default();
    let mut now = Timestamp::from_second(0).unwrap();
    for _ in 0..20 {
        b.next("k", now);
        now += k8s_openapi::jiff::SignedDuration::from_secs(1);
    }
    assert_eq!(b.get("k"), FAILED_POD_BACKOFF_MAX);
    assert!(b.in_backoff("k", now));
}

#[tokio::test]
async fn status_counts_match_upstream() {
    let d = with_strategy(ds(), "RollingUpdate", 0, 1);
    let mut d2 = new_image(d.clone());
    d2.spec.as_mut().unwrap().min_ready_seconds = Some(10);
    let nodes = vec![
        node("a", &[], &[]),
        node("b", &[], &[]),
        node("c", &[], &[]),
        node("d", &[], &[("x", "NoSchedule")]),
    ];
    let (c, fake) = fixture(d2.clone(), nodes);
    // a: updated and available; b: old revision, ready but not yet available is not
    // possible for old pods here (ready long ago); c: updated, not ready; d: misscheduled.
    c.pods.apply(running_pod(&c, &d2, "a", 0));
    c.pods.apply(running_pod(&c, &d, "b", 0));
    let mut not_ready = running_pod(&c, &d2, "c", 0);
    not_ready.status.as_mut().unwrap().conditions = None;
    c.pods.apply(not_ready);
    c.pods.apply(running_pod(&c, &d2, "d", 0));
    // A failed pod being deleted on a counts for nothing.
    let mut gone = running_pod(&c, &d, "a", 9);
    gone.status.as_mut().unwrap().phase = Some("Failed".into());
    gone.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
    c.pods.apply(gone);
    c.sync("default/agent").await.unwrap();
    let st = last_status(&fake);
    assert_eq!(st.desired_number_scheduled, 3);
    assert_eq!(st.current_number_scheduled, 3);
    assert_eq!(st.number_misscheduled, 1);
    assert_eq!(st.number_ready, 2);
    assert_eq!(st.number_available, Some(2));
    assert_eq!(st.number_unavailable, Some(1));
    assert_eq!(st.updated_number_scheduled, Some(2));
    assert_eq!(st.observed_generation, Some(2));
}
