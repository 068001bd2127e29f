//! System test of the agent's pod networking against the real `ip` and `nft`, inside a network
//! namespace this test creates (and always deletes): routes to other nodes' pod CIDRs follow the
//! wanted set, routes of other protocols are never touched, and the masquerade table loads.
//! Skipped when not root or without iproute2 and nftables.

use std::process::{Command, Stdio};

use skiff_agent::net::{self, Cidr, Route};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        Netns(name.to_string())
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn command(&self, program: &str) -> Vec<String> {
        ["ip", "netns", "exec", &self.0, program]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn route(dst: &str, gw: &str) -> Route {
    Route {
        destination: Cidr::parse(dst).unwrap(),
        gateway: gw.parse().unwrap(),
    }
}

#[tokio::test]
async fn routes_follow_nodes_and_masquerade_loads() {
    if !is_root() || !have("ip") || !have("nft") {
        eprintln!("skipping: needs root, ip and nft");
        return;
    }
    let ns = Netns::new(&format!("sknet-{}", std::process::id()));
    // A veth pair with both ends inside: a link with carrier, whatever modules the host has.
    ns.run(&[
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]);
    ns.run(&["ip", "addr", "add", "192.0.2.1/24", "dev", "d0"]);
    ns.run(&["ip", "link", "set", "d0", "up"]);
    ns.run(&["ip", "link", "set", "d1", "up"]);
    // A route of another owner that must survive.
    ns.run(&[
        "ip",
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "192.0.2.254",
    ]);
    let ip = ns.command("ip");

    let want = vec![
        route("10.42.1.0/24", "192.0.2.2"),
        route("10.42.2.0/24", "192.0.2.3"),
    ];
    net::sync_routes(&ip, &want).await.unwrap();
    let ours = ns.run(&["ip", "route", "show", "proto", "115"]);
    assert_eq!(net::parse_routes(&ours), want);

    // Node 2 leaves, node 3 moves, node 4 joins.
    let want = vec![
        route("10.42.2.0/24", "192.0.2.33"),
        route("10.42.4.0/24", "192.0.2.4"),
    ];
    net::sync_routes(&ip, &want).await.unwrap();
    let ours = ns.run(&["ip", "route", "show", "proto", "115"]);
    assert_eq!(net::parse_routes(&ours), want);
    let all = ns.run(&["ip", "route", "show"]);
    assert!(all.contains("198.51.100.0/24 via 192.0.2.254"), "{all}");
    assert!(!all.contains("10.42.1.0/24"), "{all}");

    // A gateway that is not on-link fails alone; the other routes are still made.
    let unreachable = route("10.42.5.0/24", "203.0.113.9");
    let good = route("10.42.6.0/24", "192.0.2.6");
    assert!(net::sync_routes(&ip, &[unreachable, good]).await.is_err());
    let ours = ns.run(&["ip", "route", "show", "proto", "115"]);
    assert_eq!(net::parse_routes(&ours), vec![good]);

    net::sync_routes(&ip, &[]).await.unwrap();
    assert_eq!(ns.run(&["ip", "route", "show", "proto", "115"]).trim(), "");
    assert!(ns
        .run(&["ip", "route", "show"])
        .contains("198.51.100.0/24 via 192.0.2.254"));

    // The masquerade table loads, twice (the second load replaces the first atomically).
    let nft = ns.command("nft");
    let rules = net::render_masquerade("10.42.0.0/16").unwrap();
    for _ in 0..2 {
        skiff_proxy_apply(&nft, &rules).await;
    }
    let listed = ns.run(&["nft", "list", "table", "ip", "skiff-nat"]);
    assert!(
        listed.contains("ip saddr 10.42.0.0/16 ip daddr != 10.42.0.0/16"),
        "{listed}"
    );
    assert!(listed.contains("masquerade"), "{listed}");
}

/// Loads a ruleset with `nft -f -` as the agent does.
async fn skiff_proxy_apply(nft: &[String], rules: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(&nft[0])
        .args(&nft[1..])
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(rules.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn api_server() -> kube::Client {
    let server = skiff_apiserver::ApiServer::new(skiff_apiserver::Config {
        store: std::sync::Arc::new(skiff_store::MemoryStore::new()),
        advertise_address: "127.0.0.1".parse().unwrap(),
        port: 6443,
        tokens: None,
        event_ttl: std::time::Duration::from_secs(3600),
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
    kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap()
}

async fn create_node(client: &kube::Client, name: &str, cidr: &str, ip: &str) {
    use k8s_openapi::api::core::v1::Node;
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
    }))
    .unwrap();
    nodes.create(&Default::default(), &node).await.unwrap();
    let status = serde_json::json!({"status": {"addresses": [
        {"type": "InternalIP", "address": ip},
        {"type": "Hostname", "address": name},
    ]}});
    nodes
        .patch_status(name, &Default::default(), &kube::api::Patch::Merge(&status))
        .await
        .unwrap();
}

/// Polls the namespace's skiff routes until they are `want`.
async fn wait_routes(ns: &Netns, want: &[Route]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let have = net::parse_routes(&ns.run(&["ip", "route", "show", "proto", "115"]));
        if have == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "routes {have:?}, want {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn run_follows_nodes_coming_and_going() {
    if !is_root() || !have("ip") || !have("nft") {
        eprintln!("skipping: needs root, ip and nft");
        return;
    }
    let ns = Netns::new(&format!("sknetw-{}", std::process::id()));
    ns.run(&[
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]);
    ns.run(&["ip", "addr", "add", "192.0.2.1/24", "dev", "d0"]);
    ns.run(&["ip", "link", "set", "d0", "up"]);
    ns.run(&["ip", "link", "set", "d1", "up"]);
    let client = api_server().await;
    create_node(&client, "self", "10.42.0.0/24", "192.0.2.1").await;
    create_node(&client, "n2", "10.42.2.0/24", "192.0.2.2").await;

    let config = net::NetConfig {
        node_name: "self".into(),
        node_ip: "192.0.2.1".parse().unwrap(),
        cluster_cidr: "10.42.0.0/16".into(),
        ip_command: ns.command("ip"),
        nft_command: ns.command("nft"),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(net::run(client.clone(), config, async {
        let _ = stop_rx.await;
    }));
    wait_routes(&ns, &[route("10.42.2.0/24", "192.0.2.2")]).await;
    let table = ns.run(&["nft", "list", "table", "ip", "skiff-nat"]);
    assert!(table.contains("ip saddr 10.42.0.0/16"), "{table}");

    // A node joins; then the first one leaves.
    create_node(&client, "n3", "10.42.3.0/24", "192.0.2.3").await;
    wait_routes(
        &ns,
        &[
            route("10.42.2.0/24", "192.0.2.2"),
            route("10.42.3.0/24", "192.0.2.3"),
        ],
    )
    .await;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    nodes.delete("n2", &Default::default()).await.unwrap();
    wait_routes(&ns, &[route("10.42.3.0/24", "192.0.2.3")]).await;

    stop_tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("run stops on shutdown")
        .unwrap()
        .unwrap();
}
