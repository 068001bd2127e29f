//! `run` against an in-process API server, applying rules with the real `nft` inside a network
//! namespace the test creates and deletes: rules follow Service and EndpointSlice changes, and
//! LoadBalancer Services get the nodes' addresses as ingress.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn runnable() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        .unwrap_or(false);
    let have = |p: &str| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    root && have("nft") && have("ip")
}

async fn api_server() -> kube::Client {
    let addr = skiff_apiserver::serve_for_tests().await;
    kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap()
}

fn table(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "ip", "skiff"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the loaded table contains `needle`; returns how long that took.
async fn wait_for_rule(ns: &str, needle: &str) -> Duration {
    let start = Instant::now();
    loop {
        let t = table(ns);
        if t.contains(needle) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {needle:?} in:\n{t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rules_follow_changes_and_load_balancers_get_node_addresses() {
    if !runnable() {
        // System tests fail loudly when a prerequisite is missing; `.ci/run` installs them.
        panic!("this test needs root, nft and ip");
    }
    let ns = Netns(format!("skiff-test-run-{}", std::process::id()));
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());

    let client = api_server().await;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "node-a" } })).unwrap(),
        )
        .await
        .unwrap();
    nodes
        .patch_status(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "addresses": [
                { "type": "InternalIP", "address": "192.168.77.1" },
                { "type": "Hostname", "address": "node-a" },
            ]}})),
        )
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": "web" },
                "spec": {
                    "type": "LoadBalancer",
                    "clusterIP": "10.43.0.50",
                    "selector": { "app": "web" },
                    "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }],
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let mut config = skiff_proxy::ProxyConfig::new("node-a");
    config.nft_command = ["ip", "netns", "exec", &ns.0, "nft"]
        .map(String::from)
        .to_vec();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(skiff_proxy::run(client.clone(), config, async {
        let _ = stop_rx.await;
    }));

    // No endpoints yet: the ClusterIP and the node address reject.
    wait_for_rule(&ns.0, "10.43.0.50 . tcp . 80 : goto reject-chain").await;
    wait_for_rule(&ns.0, "192.168.77.1 . tcp . 80 : goto reject-chain").await;

    // The node's address becomes the load balancer's ingress.
    let start = Instant::now();
    loop {
        let svc = services.get_status("web").await.unwrap();
        let ips: Vec<String> = svc
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip)
            .collect();
        if ips == ["192.168.77.1"] {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "ingress {ips:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // An endpoint appears: the rules follow promptly.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {
                    "name": "web-abcde",
                    "labels": { "kubernetes.io/service-name": "web" },
                },
                "addressType": "IPv4",
                "endpoints": [{ "addresses": ["10.42.0.7"], "nodeName": "node-a",
                                "conditions": { "ready": true } }],
                "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let took = wait_for_rule(
        &ns.0,
        "10.43.0.50 . tcp . 80 : goto svc_default_web_tcp_http",
    )
    .await;
    // The proxy coalesces for 50 ms; the rest of the budget absorbs a loaded CI machine.
    assert!(
        took < Duration::from_secs(3),
        "rules applied after {took:?}"
    );
    wait_for_rule(&ns.0, "dnat to 10.42.0.7:8080").await;
    wait_for_rule(
        &ns.0,
        "192.168.77.1 . tcp . 80 : goto ext_default_web_tcp_http",
    )
    .await;

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), proxy)
        .await
        .expect("proxy stops on shutdown")
        .unwrap()
        .unwrap();
}
