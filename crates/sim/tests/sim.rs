//! The simulator against an in-process API server on the memory store.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Config};
use skiff_apiserver::{ApiServer, Config as ServerConfig};
use skiff_sim::ipam::Cidr;
use skiff_sim::{Sim, SimConfig};
use skiff_store::MemoryStore;

async fn start_server() -> Client {
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
    Client::try_from(Config::new(format!("http://{addr}").parse().unwrap())).unwrap()
}

fn fast(nodes: usize) -> SimConfig {
    SimConfig {
        nodes,
        lease_renew_interval: Duration::from_millis(100),
        node_status_interval: Duration::from_millis(300),
        max_delete_delay: Duration::from_millis(50),
        ..SimConfig::default()
    }
}

/// Polls `f` until it yields `Some`, failing after 10 s.
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "web", "image": "nginx:1.27"}],
        },
    }))
    .unwrap()
}

fn condition<'a>(n: &'a Node, ty: &str) -> &'a k8s_openapi::api::core::v1::NodeCondition {
    n.status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == ty)
        .unwrap()
}

#[tokio::test]
async fn registers_ready_nodes_with_capacity_and_leases() {
    let client = start_server().await;
    let mut cfg = fast(3);
    cfg.labels = skiff_sim::parse_labels("zone=z1").unwrap();
    cfg.taints = skiff_sim::parse_taints("dedicated=sim:NoSchedule").unwrap();
    let sim = Sim::start(client.clone(), cfg).await.unwrap();
    assert_eq!(
        sim.node_names().collect::<Vec<_>>(),
        ["sim-0", "sim-1", "sim-2"]
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 3);
    for (i, n) in list.items.iter().enumerate() {
        let name = n.metadata.name.as_deref().unwrap();
        assert_eq!(name, format!("sim-{i}"));
        let labels = n.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], name);
        assert_eq!(labels["type"], "sim");
        assert_eq!(labels["zone"], "z1");
        let spec = n.spec.as_ref().unwrap();
        assert_eq!(spec.pod_cidr.as_deref(), Some(&*format!("10.42.{i}.0/24")));
        assert_eq!(spec.taints.as_ref().unwrap()[0].key, "dedicated");
        let status = n.status.as_ref().unwrap();
        assert_eq!(status.capacity.as_ref().unwrap()["cpu"].0, "4");
        assert_eq!(status.allocatable.as_ref().unwrap()["memory"].0, "16Gi");
        assert_eq!(status.allocatable.as_ref().unwrap()["pods"].0, "110");
        let info = status.node_info.as_ref().unwrap();
        assert_eq!(info.kubelet_version, skiff_sim::KUBELET_VERSION);
        assert_eq!(info.container_runtime_version, "sim://1.0");
        assert_eq!(condition(n, "Ready").status, "True");
        assert_eq!(condition(n, "MemoryPressure").status, "False");
        let addr = &status.addresses.as_ref().unwrap()[0];
        assert_eq!(addr.type_, "InternalIP");
        assert!(addr.address.starts_with("10.200."));
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let l = leases.get("sim-1").await.unwrap();
    let spec = l.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("sim-1"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let owner = &l.metadata.owner_references.unwrap()[0];
    assert_eq!(owner.kind, "Node");
    assert_eq!(owner.name, "sim-1");

    // Node status heartbeats advance while the transition time stays.
    let before = nodes.get("sim-0").await.unwrap();
    let hb0 = condition(&before, "Ready")
        .last_heartbeat_time
        .clone()
        .unwrap();
    let tr0 = condition(&before, "Ready")
        .last_transition_time
        .clone()
        .unwrap();
    let after = wait_for("a node status heartbeat", || async {
        let n = nodes.get("sim-0").await.unwrap();
        (condition(&n, "Ready").last_heartbeat_time.clone().unwrap() != hb0).then_some(n)
    })
    .await;
    assert_eq!(
        condition(&after, "Ready")
            .last_transition_time
            .clone()
            .unwrap(),
        tr0
    );
    sim.shutdown().await;
}

async fn renew_time(leases: &Api<Lease>, name: &str) -> String {
    let l = leases.get(name).await.unwrap();
    serde_json::to_value(l.spec.unwrap().renew_time.unwrap())
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until `node`'s lease has been renewed `n` times: the simulator's clock, to show that
/// something did not happen over several renew intervals.
async fn renewals(leases: &Api<Lease>, node: &str, n: usize) {
    for _ in 0..n {
        let t = renew_time(leases, node).await;
        wait_for("a renewal", || async {
            (renew_time(leases, node).await > t).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn leases_are_renewed_and_stopped_nodes_stop_renewing() {
    let client = start_server().await;
    let sim = Sim::start(client.clone(), fast(2)).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    // MicroTime: microsecond precision on the wire.
    let t0 = renew_time(&leases, "sim-0").await;
    assert_eq!(t0.split('.').nth(1).map(str::len), Some(7), "{t0}");
    wait_for("lease renewal", || async {
        (renew_time(&leases, "sim-0").await > t0).then_some(())
    })
    .await;

    assert!(sim.stop_node("sim-0"));
    assert!(!sim.stop_node("nope"));
    // Once a renewal already in flight has landed, the stopped lease stays put while the
    // other node's lease keeps advancing over several renew intervals.
    renewals(&leases, "sim-1", 2).await;
    let frozen = renew_time(&leases, "sim-0").await;
    renewals(&leases, "sim-1", 3).await;
    assert_eq!(renew_time(&leases, "sim-0").await, frozen);

    assert!(sim.resume_node("sim-0"));
    wait_for("renewal after resume", || async {
        (renew_time(&leases, "sim-0").await > frozen).then_some(())
    })
    .await;

    // A lease deleted under a node is created again, as the kubelet's ensureLease does.
    leases
        .delete("sim-1", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the lease to come back", || async {
        leases.get_opt("sim-1").await.unwrap()
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn pods_wait_for_an_assigned_pod_cidr() {
    let client = start_server().await;
    let cfg = SimConfig {
        assign_pod_cidr: false,
        ..fast(1)
    };
    let sim = Sim::start(client.clone(), cfg).await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    assert_eq!(
        nodes.get("sim-0").await.unwrap().spec.unwrap().pod_cidr,
        None
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("a", "sim-0"))
        .await
        .unwrap();
    // What the node IPAM controller does.
    let p = serde_json::json!({"spec": {"podCIDR": "10.99.7.0/24", "podCIDRs": ["10.99.7.0/24"]}});
    nodes
        .patch("sim-0", &Default::default(), &kube::api::Patch::Merge(&p))
        .await
        .unwrap();
    let ip = wait_for("the pod to get an address", || async {
        pod_ip(&pods.get("a").await.unwrap())
    })
    .await;
    assert_eq!(ip.to_string(), "10.99.7.2");
    sim.shutdown().await;
}

#[tokio::test]
async fn stop_label_stops_heartbeats() {
    let client = start_server().await;
    let sim = Sim::start(client.clone(), fast(2)).await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let label =
        |v: &str| serde_json::json!({"metadata": {"labels": {skiff_sim::STOPPED_LABEL: v}}});
    nodes
        .patch(
            "sim-1",
            &Default::default(),
            &kube::api::Patch::Merge(&label("true")),
        )
        .await
        .unwrap();
    renewals(&leases, "sim-0", 2).await;
    let frozen = renew_time(&leases, "sim-1").await;
    renewals(&leases, "sim-0", 3).await;
    assert_eq!(renew_time(&leases, "sim-1").await, frozen);
    nodes
        .patch(
            "sim-1",
            &Default::default(),
            &kube::api::Patch::Merge(&label("false")),
        )
        .await
        .unwrap();
    wait_for("renewal after the label is removed", || async {
        (renew_time(&leases, "sim-1").await > frozen).then_some(())
    })
    .await;
    sim.shutdown().await;
}

fn pod_ip(p: &Pod) -> Option<Ipv4Addr> {
    p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

#[tokio::test]
async fn bound_pods_run_and_deleted_pods_go() {
    let client = start_server().await;
    let sim = Sim::start(client.clone(), fast(3)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("a", "sim-1"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("b", "sim-1"))
        .await
        .unwrap();
    // A pod bound elsewhere is not ours.
    pods.create(&PostParams::default(), &pod("elsewhere", "real-node"))
        .await
        .unwrap();
    let running = |name: &'static str| {
        let pods = pods.clone();
        async move {
            wait_for("a running pod", || async {
                let p = pods.get(name).await.unwrap();
                (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
            })
            .await
        }
    };
    let a = running("a").await;
    let b = running("b").await;
    let cidr = Cidr::parse("10.42.1.0/24").unwrap();
    let in_cidr = |ip: Ipv4Addr| u32::from(ip) & 0xffff_ff00 == u32::from(cidr.base);
    let (ip_a, ip_b) = (pod_ip(&a).unwrap(), pod_ip(&b).unwrap());
    assert!(in_cidr(ip_a) && in_cidr(ip_b), "{ip_a} {ip_b}");
    assert_ne!(ip_a, ip_b);
    let st = a.status.as_ref().unwrap();
    assert_eq!(st.host_ip.as_deref(), Some("10.200.0.2"));
    assert_eq!(st.pod_ips.as_ref().unwrap()[0].ip, ip_a.to_string());
    assert!(st.start_time.is_some());
    for ty in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        let c = st
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == ty)
            .unwrap_or_else(|| panic!("no {ty}"));
        assert_eq!(c.status, "True", "{ty}");
    }
    let cs = &st.container_statuses.as_ref().unwrap()[0];
    assert!(cs.ready);
    assert_eq!(cs.started, Some(true));
    assert_eq!(cs.restart_count, 0);
    assert_eq!(cs.image, "nginx:1.27");
    assert!(cs.container_id.as_deref().unwrap().starts_with("sim://"));
    assert!(cs.state.as_ref().unwrap().running.is_some());
    let other = pods.get("elsewhere").await.unwrap();
    assert_eq!(other.status.unwrap().phase.as_deref(), Some("Pending"));

    // Graceful deletion: Terminating first, then gone; its address is handed out again.
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    wait_for("the deleted pod to disappear", || async {
        match pods.get("a").await {
            Err(kube::Error::Api(s)) if s.code == 404 => Some(()),
            _ => None,
        }
    })
    .await;
    pods.create(&PostParams::default(), &pod("c", "sim-1"))
        .await
        .unwrap();
    let c = running("c").await;
    assert_eq!(pod_ip(&c), Some(ip_a));

    // A stopped node leaves a deleted pod Terminating, like a dead kubelet.
    sim.stop_node("sim-1");
    pods.delete("b", &DeleteParams::default()).await.unwrap();
    // Several renew intervals of another node, each longer than the deletion delay.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    renewals(&leases, "sim-0", 4).await;
    let b = pods.get("b").await.unwrap();
    assert!(b.metadata.deletion_timestamp.is_some());
    // Back again, it finishes the deletion.
    sim.resume_node("sim-1");
    wait_for("the resumed node to finish the deletion", || async {
        match pods.get("b").await {
            Err(kube::Error::Api(s)) if s.code == 404 => Some(()),
            _ => None,
        }
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn restart_takes_over_nodes_and_pods() {
    let client = start_server().await;
    let sim = Sim::start(client.clone(), fast(1)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("a", "sim-0"))
        .await
        .unwrap();
    let first = wait_for("a running pod", || async {
        pod_ip(&pods.get("a").await.unwrap())
    })
    .await;
    sim.shutdown().await;
    // A new process finds the node and the running pod and keeps the pod's address taken.
    let sim = Sim::start(client.clone(), fast(1)).await.unwrap();
    pods.create(&PostParams::default(), &pod("b", "sim-0"))
        .await
        .unwrap();
    let second = wait_for("a running pod", || async {
        pod_ip(&pods.get("b").await.unwrap())
    })
    .await;
    assert_ne!(first, second);
    let nodes: Api<Node> = Api::all(client.clone());
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    sim.shutdown().await;
}
