//! System test: `run_policy` against an in-process API server, loading its table with the real
//! `nft` into a "node" network namespace this test creates, whose bridge joins three "pod"
//! namespaces and whose routed link reaches a fourth, a pod of another node. Real TCP
//! connections between the pods show NetworkPolicies taking and losing effect. Every namespace and process the test makes is removed when it ends; the host's own
//! ruleset and interfaces are never touched.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

const NODE_NAME: &str = "node-a";
const GATEWAY: &str = "10.42.0.1";
const PORT: u16 = 8080;
const OTHER_PORT: u16 = 9090;
const NODE_PORT: u16 = 10250;

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
    root && have("nft") && have("ip") && have("busybox") && have("curl")
}

/// The namespaces, files and server processes of one test; dropping it removes them all.
struct Lab {
    tag: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Lab {
    fn new(test: &str) -> Lab {
        let tag = format!("{test}-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("skiff-policy-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        Lab {
            tag,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
        }
    }

    fn netns(&mut self, role: &str) -> String {
        let name = format!("skiff-pol-{}-{role}", self.tag);
        run(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// A "pod" namespace on the node's bridge, at `ip`.
    fn pod(&mut self, node: &str, role: &str, ip: &str) -> String {
        let ns = self.netns(role);
        let host_if = format!("veth-{role}");
        run(&[
            "ip", "-n", node, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        run(&["ip", "-n", node, "link", "set", &host_if, "master", "br0"]);
        run(&["ip", "-n", node, "link", "set", &host_if, "up"]);
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &ns, "route", "add", "default", "via", GATEWAY]);
        ns
    }

    /// Serves HTTP on `port` inside `ns`, answering with the namespace's role.
    fn serve(&mut self, ns: &str, port: u16) {
        let dir = self.dir.join(format!("{ns}-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "ok\n").unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "busybox", "httpd", "-f"])
            .args(["-p", &port.to_string(), "-h"])
            .arg(&dir)
            .spawn()
            .unwrap();
        self.children.push(child);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether an HTTP request from namespace `from` to `ip:port` gets an answer.
fn connects(from: &str, ip: &str, port: u16) -> bool {
    Command::new("ip")
        .args(["netns", "exec", from, "curl", "-s", "-o", "/dev/null"])
        .args(["--connect-timeout", "1", "--max-time", "2"])
        .arg(format!("http://{ip}:{port}/"))
        .status()
        .unwrap()
        .success()
}

/// Waits until every `(from, ip, port, reachable)` holds at once.
async fn wait_reach(what: &str, cases: &[(&str, &str, u16, bool)]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let wrong: Vec<String> = cases
            .iter()
            .filter(|(from, ip, port, want)| connects(from, ip, *port) != *want)
            .map(|(from, ip, port, want)| {
                format!(
                    "{from} -> {ip}:{port} should{} connect",
                    if *want { "" } else { " not" }
                )
            })
            .collect();
        if wrong.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {wrong:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn api_server() -> kube::Client {
    let addr = skiff_apiserver::serve_for_tests().await;
    kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap()
}

async fn create_pod(pods: &Api<Pod>, node: &str, name: &str, ip: &str, labels: Value) {
    let pod = json!({
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "nodeName": node,
            "containers": [{ "name": "c", "image": "busybox",
                             "ports": [{ "name": "http", "containerPort": PORT }] }],
        },
    });
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": {
            "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }],
        }})),
    )
    .await
    .unwrap();
}

fn policy(name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({ "metadata": { "name": name }, "spec": spec })).unwrap()
}

#[tokio::test]
async fn policies_govern_real_connections_between_pods() {
    if !runnable() {
        // System tests fail loudly when a prerequisite is missing; `.ci/run` installs them.
        panic!("this test needs root, nft, ip, busybox and curl");
    }
    let mut lab = Lab::new("conn");
    let node = lab.netns("node");
    run(&["ip", "-n", &node, "link", "add", "br0", "type", "bridge"]);
    run(&[
        "ip",
        "-n",
        &node,
        "addr",
        "add",
        &format!("{GATEWAY}/24"),
        "dev",
        "br0",
    ]);
    run(&["ip", "-n", &node, "link", "set", "br0", "up"]);
    // Bridged pod-to-pod traffic must pass the IP hooks, as on a k3s node.
    run(&[
        "ip",
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        "net.bridge.bridge-nf-call-iptables=1",
    ]);
    let (a_ip, b_ip, c_ip) = ("10.42.0.2", "10.42.0.3", "10.42.0.4");
    let a = lab.pod(&node, "a", a_ip);
    let b = lab.pod(&node, "b", b_ip);
    let c = lab.pod(&node, "c", c_ip);
    // A pod of another node, reached over a routed link as across a real cluster network.
    let r_ip = "10.42.1.2";
    let r = lab.netns("r");
    run(&[
        "ip", "-n", &node, "link", "add", "veth-r", "type", "veth", "peer", "name", "eth0",
        "netns", &r,
    ]);
    run(&[
        "ip",
        "-n",
        &node,
        "addr",
        "add",
        "10.42.1.1/24",
        "dev",
        "veth-r",
    ]);
    run(&["ip", "-n", &node, "link", "set", "veth-r", "up"]);
    run(&[
        "ip",
        "-n",
        &r,
        "addr",
        "add",
        &format!("{r_ip}/24"),
        "dev",
        "eth0",
    ]);
    run(&["ip", "-n", &r, "link", "set", "eth0", "up"]);
    run(&[
        "ip",
        "-n",
        &r,
        "route",
        "add",
        "default",
        "via",
        "10.42.1.1",
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    for ns in [&a, &b, &c] {
        lab.serve(ns, PORT);
    }
    lab.serve(&b, OTHER_PORT);
    lab.serve(&r, PORT);
    lab.serve(&node, NODE_PORT);

    let client = api_server().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_pod(&pods, NODE_NAME, "a", a_ip, json!({ "role": "client" })).await;
    create_pod(&pods, NODE_NAME, "b", b_ip, json!({ "app": "web" })).await;
    create_pod(&pods, NODE_NAME, "c", c_ip, json!({})).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "other" } })).unwrap(),
        )
        .await
        .unwrap();
    let other_pods: Api<Pod> = Api::namespaced(client.clone(), "other");
    create_pod(&other_pods, "node-b", "r", r_ip, json!({})).await;

    let mut config = skiff_proxy::ProxyConfig::new(NODE_NAME);
    config.node_addresses = vec![GATEWAY.parse().unwrap()];
    config.nft_command = ["ip", "netns", "exec", &node, "nft"]
        .map(String::from)
        .to_vec();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let enforcer = tokio::spawn(skiff_proxy::run_policy(client.clone(), config, async {
        let _ = stop_rx.await;
    }));

    // The table is loaded, and without policies every pod reaches every other.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Command::new("ip")
        .args(["netns", "exec", &node, "nft", "list", "table", "inet"])
        .arg(skiff_proxy::POLICY_TABLE)
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "policy table never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_reach(
        "no policy",
        &[
            (&a, b_ip, PORT, true),
            (&b, a_ip, PORT, true),
            (&c, b_ip, PORT, true),
            (&a, b_ip, OTHER_PORT, true),
            (&node, b_ip, PORT, true),
            (&a, GATEWAY, NODE_PORT, true),
            (&r, b_ip, PORT, true),
            (&a, r_ip, PORT, true),
        ],
    )
    .await;

    // Deny all ingress to b: nothing gets in, b still gets out, and the node (kubelet probes)
    // still reaches it.
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "default");
    policies
        .create(
            &PostParams::default(),
            &policy(
                "deny-b",
                json!({ "podSelector": { "matchLabels": { "app": "web" } },
                        "policyTypes": ["Ingress"] }),
            ),
        )
        .await
        .unwrap();
    wait_reach(
        "deny all ingress to b",
        &[
            (&a, b_ip, PORT, false),
            (&c, b_ip, PORT, false),
            (&r, b_ip, PORT, false),
            (&b, a_ip, PORT, true),
            (&b, r_ip, PORT, true),
            (&b, c_ip, PORT, true),
            (&a, c_ip, PORT, true),
            (&node, b_ip, PORT, true),
        ],
    )
    .await;

    // Allow role=client pods of b's namespace and pods of team=blue namespaces, on the named
    // port only: a gets in on PORT, c does not, nor a on another port, nor r (its namespace
    // has no team yet).
    policies
        .delete("deny-b", &DeleteParams::default())
        .await
        .unwrap();
    policies
        .create(
            &PostParams::default(),
            &policy(
                "allow-clients",
                json!({
                    "podSelector": { "matchLabels": { "app": "web" } },
                    "ingress": [{
                        "from": [
                            { "podSelector": { "matchLabels": { "role": "client" } } },
                            { "namespaceSelector": { "matchLabels": { "team": "blue" } } },
                        ],
                        "ports": [{ "protocol": "TCP", "port": "http" }],
                    }],
                }),
            ),
        )
        .await
        .unwrap();
    wait_reach(
        "allow role=client on the http port",
        &[
            (&a, b_ip, PORT, true),
            (&c, b_ip, PORT, false),
            (&a, b_ip, OTHER_PORT, false),
            (&r, b_ip, PORT, false),
            (&b, c_ip, PORT, true),
        ],
    )
    .await;

    // Labelling c a client lets it in too: pod changes re-render the peers.
    pods.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": { "role": "client" } } })),
    )
    .await
    .unwrap();
    wait_reach("c labelled client", &[(&c, b_ip, PORT, true)]).await;

    // Labelling r's namespace lets r in over the routed path: namespace changes re-render.
    namespaces
        .patch(
            "other",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "team": "blue" } } })),
        )
        .await
        .unwrap();
    wait_reach(
        "r's namespace labelled team=blue",
        &[(&r, b_ip, PORT, true), (&r, b_ip, OTHER_PORT, false)],
    )
    .await;

    // Deleting the policy restores access.
    policies
        .delete("allow-clients", &DeleteParams::default())
        .await
        .unwrap();
    wait_reach(
        "policy deleted",
        &[(&a, b_ip, OTHER_PORT, true), (&c, b_ip, PORT, true)],
    )
    .await;

    // Egress: clients may only reach web pods; what they reach still answers, others still
    // reach the clients.
    policies
        .create(
            &PostParams::default(),
            &policy(
                "clients-to-web",
                json!({
                    "podSelector": { "matchLabels": { "role": "client" } },
                    "policyTypes": ["Egress"],
                    "egress": [{ "to": [{ "podSelector": { "matchLabels": { "app": "web" } } }] }],
                }),
            ),
        )
        .await
        .unwrap();
    wait_reach(
        "clients egress only to web",
        &[
            (&a, b_ip, PORT, true),
            (&a, c_ip, PORT, false),
            (&c, a_ip, PORT, false),
            (&a, r_ip, PORT, false),
            (&r, a_ip, PORT, true),
            (&b, a_ip, PORT, true),
            (&node, a_ip, PORT, true),
        ],
    )
    .await;
    // Traffic between a pod and its own node is always allowed.
    wait_reach(
        "clients egress to the node",
        &[(&a, GATEWAY, NODE_PORT, true)],
    )
    .await;

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), enforcer)
        .await
        .expect("the enforcer stops on shutdown")
        .unwrap()
        .unwrap();
}

/// Every construct the renderer emits (interval sets from ipBlocks with exceptions, port
/// ranges, SCTP, IPv6, named ports on both sides, egress) is accepted by the real `nft`, and
/// loading twice replaces the table rather than doubling it.
#[tokio::test]
async fn rendered_ruleset_loads_with_every_construct() {
    if !runnable() {
        panic!("this test needs root, nft, ip, busybox and curl");
    }
    let mut lab = Lab::new("load");
    let node = lab.netns("node");
    let pod = |name: &str, ips: &[&str], labels: Value| -> Pod {
        let pod_ips: Vec<Value> = ips.iter().map(|ip| json!({ "ip": ip })).collect();
        serde_json::from_value(json!({
            "metadata": { "namespace": "default", "name": name, "labels": labels },
            "spec": { "nodeName": NODE_NAME, "containers": [{ "name": "c", "ports": [
                { "name": "http", "containerPort": 8080 },
                { "name": "dns", "containerPort": 53, "protocol": "UDP" },
            ]}]},
            "status": { "phase": "Running", "podIP": ips[0], "podIPs": pod_ips },
        }))
        .unwrap()
    };
    let pods = vec![
        pod("a", &["10.42.0.2", "fd42::2"], json!({ "role": "client" })),
        pod("b", &["10.42.0.3", "fd42::3"], json!({ "app": "web" })),
    ];
    let policies: Vec<NetworkPolicy> = vec![serde_json::from_value(json!({
        "metadata": { "namespace": "default", "name": "everything" },
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                { "from": [
                    { "podSelector": { "matchLabels": { "role": "client" } } },
                    { "ipBlock": { "cidr": "172.16.0.0/12", "except": ["172.17.0.0/16"] } },
                    { "ipBlock": { "cidr": "fd00::/8", "except": ["fd00:1::/32"] } },
                ],
                  "ports": [
                    { "port": 80 }, { "port": 8000, "endPort": 8100 }, { "port": "http" },
                    { "port": "dns", "protocol": "UDP" }, { "protocol": "SCTP" },
                ] },
                {},
            ],
            "egress": [
                { "to": [{ "namespaceSelector": {} }], "ports": [{ "port": "http" }, { "port": 443 }] },
                { "ports": [{ "port": 53, "protocol": "UDP" }] },
                { "to": [
                    { "ipBlock": { "cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"] } },
                    { "ipBlock": { "cidr": "::/0" } },
                ] },
            ],
        },
    }))
    .unwrap()];
    let text = skiff_proxy::render_policy(
        &policies,
        &pods,
        &[],
        NODE_NAME,
        &["192.168.77.1".parse().unwrap(), "fd77::1".parse().unwrap()],
    );
    let nft: Vec<String> = ["ip", "netns", "exec", &node, "nft"]
        .map(String::from)
        .to_vec();
    skiff_proxy::apply(&nft, &text)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    skiff_proxy::apply(&nft, &text).await.unwrap();
    let listed = run(&[
        "ip",
        "netns",
        "exec",
        &node,
        "nft",
        "list",
        "table",
        "inet",
        skiff_proxy::POLICY_TABLE,
    ]);
    assert_eq!(listed.matches("chain forward {").count(), 1, "{listed}");
    assert!(listed.contains("chain in_10-42-0-3 {"), "{listed}");
    assert!(listed.contains("chain out_10-42-0-2 {"), "{listed}");
    assert!(listed.contains("172.18.0.0-172.31.255.255"), "{listed}");
    assert!(listed.contains("fd42::3 : jump in_10-42-0-3"), "{listed}");
    assert!(listed.contains("::/0"), "{listed}");
}
