//! The scheduler against an in-process API server on the memory store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Config};
use serde_json::{json, Value};
use skiff_apiserver::{ApiServer, Config as ServerConfig};
use skiff_scheduler::SchedulerConfig;
use skiff_store::MemoryStore;
use tokio::sync::oneshot;

struct Cluster {
    client: Client,
    _stop: oneshot::Sender<()>,
}

async fn start(config: SchedulerConfig) -> Cluster {
    let server = ApiServer::new(ServerConfig {
        store: Arc::new(MemoryStore::new()),
        advertise_address: "127.0.0.1".parse().unwrap(),
        port: 6443,
        tokens: None,
        event_ttl: Duration::from_secs(3600),
        insecure_anonymous_admin: true,
        default_toleration_seconds: (300, 300),
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(skiff_apiserver::serve(
        server,
        listener,
        None,
        std::future::pending(),
    ));
    let client = Client::try_from(Config::new(format!("http://{addr}").parse().unwrap())).unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let c = client.clone();
    tokio::spawn(async move {
        skiff_scheduler::run(c, config, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Cluster {
        client,
        _stop: stop,
    }
}

async fn add_node(c: &Client, name: &str, cpu: &str, extra: Value) {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]
        }
    });
    merge(&mut v, extra);
    let node: Node = serde_json::from_value(v).unwrap();
    let api: Api<Node> = Api::all(c.clone());
    let created = api.create(&PostParams::default(), &node).await.unwrap();
    if created
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .is_none()
    {
        let mut n = created;
        n.status = node.status.clone();
        api.replace_status(name, &PostParams::default(), &n)
            .await
            .unwrap();
    }
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

async fn add_pod(c: &Client, name: &str, cpu: &str, extra: Value) {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}
    });
    merge(&mut v, extra);
    let pod: Pod = serde_json::from_value(v).unwrap();
    Api::<Pod>::namespaced(c.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn node_of(c: &Client, pod: &str) -> Option<String> {
    let p = Api::<Pod>::namespaced(c.clone(), "default")
        .get(pod)
        .await
        .ok()?;
    p.spec?.node_name
}

async fn bound(c: &Client, pods: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for p in pods {
        let pod = *p;
        out.push(wait_for(&format!("{pod} bound"), || node_of(c, pod)).await);
    }
    out
}

async fn scheduled_condition(c: &Client, pod: &str) -> Option<(String, String, String)> {
    let p = Api::<Pod>::namespaced(c.clone(), "default")
        .get(pod)
        .await
        .ok()?;
    let cond = p
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")?;
    Some((
        cond.status,
        cond.reason.unwrap_or_default(),
        cond.message.unwrap_or_default(),
    ))
}

const CP_TAINT: &str = r#"{"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}"#;

#[tokio::test]
async fn binds_within_resources_and_retries_when_a_node_joins() {
    let cl = start(SchedulerConfig::default()).await;
    let c = &cl.client;
    add_node(c, "cp", "4", serde_json::from_str(CP_TAINT).unwrap()).await;
    add_node(c, "n1", "2", json!({})).await;
    add_node(c, "n2", "2", json!({})).await;
    for i in 0..4 {
        add_pod(c, &format!("p{i}"), "1", json!({})).await;
    }
    let nodes = bound(c, &["p0", "p1", "p2", "p3"]).await;
    assert_eq!(nodes.iter().filter(|n| *n == "n1").count(), 2, "{nodes:?}");
    assert_eq!(nodes.iter().filter(|n| *n == "n2").count(), 2, "{nodes:?}");

    add_pod(c, "big", "1", json!({})).await;
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod..";
    let cond = wait_for("PodScheduled=False", || async {
        scheduled_condition(c, "big")
            .await
            .filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(cond, ("False".into(), "Unschedulable".into(), want.into()));
    assert_eq!(node_of(c, "big").await, None);
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    wait_for("FailedScheduling event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("FailedScheduling")
                    && e.involved_object.name.as_deref() == Some("big")
                    && e.message.as_deref() == Some(want)
                    && e.type_.as_deref() == Some("Warning")
            })
            .map(|_| ())
    })
    .await;
    wait_for("Scheduled event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("Scheduled")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.starts_with("Successfully assigned default/p0 to n"))
            })
            .map(|_| ())
    })
    .await;

    // A new node is a cluster event: the waiting pod is retried without polling.
    add_node(c, "n3", "2", json!({})).await;
    assert_eq!(bound(c, &["big"]).await, vec!["n3".to_string()]);

    // Deleting a pod frees room for a pod waiting on it.
    add_pod(c, "next", "2", json!({})).await;
    wait_for("next unschedulable", || async {
        scheduled_condition(c, "next")
            .await
            .filter(|c| c.0 == "False")
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let on_n1: Vec<String> = ["p0", "p1", "p2", "p3"]
        .iter()
        .zip(nodes.iter())
        .filter(|(_, n)| *n == "n1")
        .map(|(p, _)| p.to_string())
        .collect();
    for p in &on_n1 {
        pods.delete(p, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }
    assert_eq!(bound(c, &["next"]).await, vec!["n1".to_string()]);
}

#[tokio::test]
async fn anti_affinity_spreads_and_taints_need_tolerations() {
    let cl = start(SchedulerConfig::default()).await;
    let c = &cl.client;
    add_node(c, "a", "4", json!({})).await;
    add_node(c, "b", "4", json!({})).await;
    add_node(
        c,
        "gpu",
        "4",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    )
    .await;
    let replica = |tolerate: bool| {
        let mut v = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}});
        if tolerate {
            v["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
        }
        v
    };
    // Without the toleration only two nodes are open; the third replica waits, rejected first
    // by the placed replicas' own anti-affinity (upstream checks that before the pod's terms).
    add_pod(c, "w0", "100m", replica(false)).await;
    add_pod(c, "w1", "100m", replica(false)).await;
    add_pod(c, "w2", "100m", replica(false)).await;
    let mut nodes = wait_for("two bound", || async {
        let mut got = Vec::new();
        for p in ["w0", "w1", "w2"] {
            if let Some(n) = node_of(c, p).await {
                got.push(n);
            }
        }
        (got.len() == 2).then_some(got)
    })
    .await;
    nodes.sort();
    assert_eq!(nodes, vec!["a", "b"]);
    let pending = {
        let mut p = None;
        for name in ["w0", "w1", "w2"] {
            if node_of(c, name).await.is_none() {
                p = Some(name);
            }
        }
        p.unwrap()
    };
    let cond = wait_for("unschedulable", || async {
        scheduled_condition(c, pending)
            .await
            .filter(|c| c.0 == "False")
    })
    .await;
    assert!(cond.2.starts_with("0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't satisfy existing pods anti-affinity rules."), "{}", cond.2);

    // Three tolerating replicas of another app land one per node.
    let other = || {
        let mut v = replica(true);
        v["metadata"]["labels"]["app"] = json!("api");
        v["spec"]["affinity"]["podAntiAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]["matchLabels"]
            ["app"] = json!("api");
        v
    };
    for i in 0..3 {
        add_pod(c, &format!("api{i}"), "100m", other()).await;
    }
    let mut got = bound(c, &["api0", "api1", "api2"]).await;
    got.sort();
    assert_eq!(got, vec!["a", "b", "gpu"]);
}

#[tokio::test]
async fn most_allocated_profile_packs_and_foreign_pods_are_left_alone() {
    let config = SchedulerConfig::parse(
        r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: bin-packing
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - {name: cpu, weight: 1}
        - {name: memory, weight: 1}
"#,
    )
    .unwrap();
    let cl = start(config).await;
    let c = &cl.client;
    for n in ["a", "b", "c"] {
        add_node(c, n, "4", json!({})).await;
    }
    add_pod(
        c,
        "seed",
        "1",
        json!({"spec": {"schedulerName": "bin-packing"}}),
    )
    .await;
    let first = bound(c, &["seed"]).await.remove(0);
    for i in 0..3 {
        add_pod(
            c,
            &format!("p{i}"),
            "1",
            json!({"spec": {"schedulerName": "bin-packing"}}),
        )
        .await;
    }
    let nodes = bound(c, &["p0", "p1", "p2"]).await;
    assert!(nodes.iter().all(|n| *n == first), "{first} {nodes:?}");
    // The fifth pod no longer fits there and opens a second node.
    add_pod(
        c,
        "p3",
        "1",
        json!({"spec": {"schedulerName": "bin-packing"}}),
    )
    .await;
    assert_ne!(bound(c, &["p3"]).await[0], first);
    // Neither the default scheduler name nor another is ours in this configuration.
    add_pod(c, "foreign", "1", json!({})).await;
    add_pod(
        c,
        "other",
        "1",
        json!({"spec": {"schedulerName": "someone-else"}}),
    )
    .await;
    add_pod(
        c,
        "after",
        "1",
        json!({"spec": {"schedulerName": "bin-packing"}}),
    )
    .await;
    bound(c, &["after"]).await;
    assert_eq!(node_of(c, "foreign").await, None);
    assert_eq!(node_of(c, "other").await, None);
    assert_eq!(scheduled_condition(c, "foreign").await, None);
}

#[tokio::test]
async fn preemption_evicts_lower_priority_and_nominates() {
    let cl = start(SchedulerConfig::default()).await;
    let c = &cl.client;
    add_node(c, "n", "2", json!({})).await;
    add_pod(c, "low", "2", json!({"spec": {"priority": 1}})).await;
    bound(c, &["low"]).await;
    add_pod(c, "high", "2", json!({"spec": {"priority": 1000}})).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    // The victim is deleted gracefully (it is bound); finish the deletion as a kubelet would.
    wait_for("victim terminating", || async {
        let p = pods.get("low").await.ok()?;
        p.metadata.deletion_timestamp.map(|_| ())
    })
    .await;
    let nominated = wait_for("nominatedNodeName", || async {
        let p = pods.get("high").await.ok()?;
        p.status?.nominated_node_name
    })
    .await;
    assert_eq!(nominated, "n");
    pods.delete("low", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(bound(c, &["high"]).await, vec!["n".to_string()]);
}
