//! The cluster-housekeeping controllers against an in-process API server (memory store).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Config};
use serde_json::json;
use skiff_apiserver::{ApiServer, Config as ServerConfig};
use skiff_controllers::runtime::Context;
use skiff_controllers::{
    endpoints, endpointslice, gc, namespace, nodelifecycle, serviceaccount, ControllerManagerConfig,
};
use skiff_store::MemoryStore;

async fn start() -> (Client, Vec<tokio::task::JoinHandle<()>>) {
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
    let config = ControllerManagerConfig {
        node_monitor_grace_period: Duration::from_millis(800),
        ..Default::default()
    };
    let ctx = Arc::new(Context::new(client.clone(), config));
    let mut tasks = Vec::new();
    macro_rules! spawn {
        ($f:expr) => {
            let c = ctx.clone();
            tasks.push(tokio::spawn(async move {
                $f(c).await.unwrap();
            }));
        };
    }
    spawn!(namespace::run);
    spawn!(|c| serviceaccount::run_with_ca(c, Some("PEM".to_string())));
    spawn!(endpoints::run);
    spawn!(endpointslice::run);
    spawn!(gc::run);
    spawn!(nodelifecycle::run);
    (client, tasks)
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_lifecycle_and_service_accounts() {
    let (client, tasks) = start().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "team"}})),
    )
    .await
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    wait_for("default service account", || async {
        sas.get_opt("default").await.unwrap().is_some()
    })
    .await;
    wait_for("root CA configmap", || async {
        cms.get_opt("kube-root-ca.crt")
            .await
            .unwrap()
            .and_then(|c| c.data)
            .is_some_and(|d| d["ca.crt"] == "PEM")
    })
    .await;
    // Recreated when deleted.
    sas.delete("default", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("default service account again", || async {
        sas.get_opt("default")
            .await
            .unwrap()
            .is_some_and(|s| s.metadata.deletion_timestamp.is_none())
    })
    .await;
    for i in 0..3 {
        cms.create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": format!("c{i}")}})),
        )
        .await
        .unwrap();
    }
    nss.delete("team", &DeleteParams::default()).await.unwrap();
    wait_for("namespace emptied with its conditions", || async {
        let empty = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty();
        let Some(ns) = nss.get_opt("team").await.unwrap() else {
            return empty;
        };
        let st = ns.status.unwrap_or_default();
        let removed = st.conditions.unwrap_or_default().iter().any(|c| {
            c.type_ == "NamespaceContentRemaining"
                && c.status == "False"
                && c.reason.as_deref() == Some("ContentRemoved")
        });
        empty && removed && st.phase.as_deref() == Some("Terminating")
    })
    .await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_namespace_is_removed() {
    let (client, tasks) = start().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "gone"}})),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "gone");
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "c"}})),
    )
    .await
    .unwrap();
    nss.delete("gone", &DeleteParams::default()).await.unwrap();
    wait_for("namespace gone", || async {
        nss.get_opt("gone").await.unwrap().is_none()
    })
    .await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_endpoints_follow_pod_readiness() {
    let (client, tasks) = start().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    svcs.create(
        &PostParams::default(),
        &obj(
            json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        ),
    )
    .await
    .unwrap();
    for (name, ip, ready) in [("a", "10.42.0.5", "True"), ("b", "10.42.0.6", "False")] {
        pods.create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": name, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx",
                    "ports": [{"name": "http", "containerPort": 8080}]}]}})),
        )
        .await
        .unwrap();
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": ready}]}}),
            ),
        )
        .await
        .unwrap();
    }
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    wait_for("endpoints", || async {
        let Some(e) = eps.get_opt("web").await.unwrap() else {
            return false;
        };
        let s = e.subsets.unwrap_or_default();
        s.len() == 1
            && s[0]
                .addresses
                .as_ref()
                .is_some_and(|a| a.len() == 1 && a[0].ip == "10.42.0.5")
            && s[0]
                .not_ready_addresses
                .as_ref()
                .is_some_and(|a| a.len() == 1 && a[0].ip == "10.42.0.6")
            && s[0].ports.as_ref().is_some_and(|p| p[0].port == 8080)
    })
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    wait_for("endpoint slice", || async {
        let l = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .unwrap();
        l.items.len() == 1 && {
            let s = &l.items[0];
            let ready = |ip: &str| {
                s.endpoints
                    .iter()
                    .find(|e| e.addresses[0] == ip)
                    .and_then(|e| e.conditions.clone()?.ready)
            };
            s.endpoints.len() == 2
                && ready("10.42.0.5") == Some(true)
                && ready("10.42.0.6") == Some(false)
                && s.ports.as_ref().is_some_and(|p| p[0].port == Some(8080))
                && s.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| o[0].kind == "Service")
        }
    })
    .await;
    // The API server's own endpoints stay untouched.
    let k = eps.get("kubernetes").await.unwrap();
    assert!(k.subsets.is_some());
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_background_and_orphan() {
    let (client, tasks) = start().await;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rs_body = |name: &str| {
        obj::<ReplicaSet>(json!({"metadata": {"name": name}, "spec": {"replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
    };
    for name in ["bg", "keep"] {
        let rs = rss
            .create(&PostParams::default(), &rs_body(name))
            .await
            .unwrap();
        for i in 0..2 {
            pods.create(
                &PostParams::default(),
                &obj(json!({"metadata": {"name": format!("{name}-{i}"), "labels": {"app": name},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name,
                        "uid": rs.metadata.uid, "controller": true, "blockOwnerDeletion": true}]},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}})),
            )
            .await
            .unwrap();
        }
    }
    rss.delete("bg", &DeleteParams::background()).await.unwrap();
    rss.delete("keep", &DeleteParams::orphan()).await.unwrap();
    wait_for("background dependents deleted", || async {
        pods.get_opt("bg-0").await.unwrap().is_none()
            && pods.get_opt("bg-1").await.unwrap().is_none()
    })
    .await;
    wait_for("orphaned owner gone", || async {
        rss.get_opt("keep").await.unwrap().is_none()
    })
    .await;
    for i in 0..2 {
        let p = pods.get(&format!("keep-{i}")).await.unwrap();
        assert!(p.metadata.owner_references.unwrap_or_default().is_empty());
    }
    // Foreground: the owner waits for its blocking dependents.
    let rs = rss
        .create(&PostParams::default(), &rs_body("fg"))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "fg-0", "ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "ReplicaSet", "name": "fg", "uid": rs.metadata.uid, "blockOwnerDeletion": true}]},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}})),
    )
    .await
    .unwrap();
    rss.delete("fg", &DeleteParams::foreground()).await.unwrap();
    wait_for("foreground owner and dependent gone", || async {
        rss.get_opt("fg").await.unwrap().is_none() && pods.get_opt("fg-0").await.unwrap().is_none()
    })
    .await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_goes_unknown_and_gets_tainted() {
    let (client, tasks) = start().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    nodes
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "n1"}})),
        )
        .await
        .unwrap();
    nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "reason": "KubeletReady", "lastHeartbeatTime": "2025-01-01T00:00:00Z"}]}}),
            ),
        )
        .await
        .unwrap();
    leases
        .create(
            &PostParams::default(),
            &obj(
                json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1",
                "renewTime": "2025-01-01T00:00:00.000000Z"}}),
            ),
        )
        .await
        .unwrap();
    wait_for("pod CIDR", || async {
        nodes
            .get("n1")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.pod_cidr)
            .is_some_and(|c| c.starts_with("10.42."))
    })
    .await;
    // No renewals from here on: Unknown and tainted within the (0.8 s) grace.
    wait_for("Ready=Unknown with the unreachable taint", || async {
        let n = nodes.get("n1").await.unwrap();
        let ready = n
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready");
        let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
        ready.is_some_and(|c| {
            c.status == "Unknown" && c.reason.as_deref() == Some("NodeStatusUnknown")
        }) && taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
    })
    .await;
    // Recovery: the kubelet posts Ready again; the taint goes.
    nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "reason": "KubeletReady", "lastHeartbeatTime": "2025-01-01T00:01:00Z"}]}}),
            ),
        )
        .await
        .unwrap();
    wait_for("taint removed", || async {
        let n = nodes.get("n1").await.unwrap();
        !n.spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .any(|t| t.key.starts_with("node.kubernetes.io/"))
    })
    .await;
    for t in tasks {
        t.abort();
    }
}
