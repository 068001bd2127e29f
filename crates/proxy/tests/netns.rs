//! System test: a rendered ruleset loaded with the real `nft` inside network namespaces this
//! test creates (and always deletes), carrying real traffic from a "node" namespace to two
//! "pod" namespaces. The host's own ruleset and interfaces are never touched.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_proxy::{render, NodeInfo};

const NODE_IP: &str = "192.168.77.1";

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
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The namespaces and server processes of one test; dropping it removes them all.
struct Lab {
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            namespaces: Vec::new(),
            children: Vec::new(),
        }
    }

    fn netns(&mut self, name: String) -> String {
        run(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        exec(&name, &["ip", "link", "set", "lo", "up"]);
        name
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
        let _ = std::fs::remove_dir_all(tempfile_dir());
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

fn exec(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

fn services() -> Vec<Service> {
    let web = json!({
        "metadata": { "name": "web", "namespace": "default" },
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.43.0.20",
            "clusterIPs": ["10.43.0.20"],
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080 }],
        },
    });
    let empty = json!({
        "metadata": { "name": "empty", "namespace": "default" },
        "spec": {
            "clusterIP": "10.43.0.21",
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }],
        },
    });
    vec![
        serde_json::from_value(web).unwrap(),
        serde_json::from_value(empty).unwrap(),
    ]
}

fn slices() -> Vec<EndpointSlice> {
    vec![serde_json::from_value(json!({
        "metadata": {
            "name": "web-x1",
            "namespace": "default",
            "labels": { "kubernetes.io/service-name": "web" },
        },
        "addressType": "IPv4",
        "endpoints": [
            { "addresses": ["10.42.1.2"], "nodeName": "node", "conditions": { "ready": true } },
            { "addresses": ["10.42.2.2"], "nodeName": "node", "conditions": { "ready": true } },
        ],
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
    }))
    .unwrap()]
}

/// Fetches `url` from the node namespace; `Err` carries curl's complaint.
fn fetch(node: &str, url: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", node, "curl", "-sS", "--max-time", "3", url])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn ruleset_loads_and_spreads_connections_over_endpoints() {
    // System tests fail loudly when a prerequisite is missing; `.ci/run` installs them.
    if !is_root() || !have("nft") || !have("ip") || !have("busybox") || !have("curl") {
        panic!("this test needs root, nft, ip, busybox and curl");
    }
    let tag = format!(
        "{:08x}",
        std::process::id() ^ (Instant::now().elapsed().as_nanos() as u32)
    );
    let mut lab = Lab::new();
    let node = lab.netns(format!("skiff-test-{tag}-node"));
    let www = tempfile_dir();

    // Two "pods", each a namespace behind a veth pair, serving their own name over HTTP.
    for (i, pod) in ["p1", "p2"].iter().enumerate() {
        let ns = lab.netns(format!("skiff-test-{tag}-{pod}"));
        let host_if = format!("sk{tag}{i}");
        let host_if = &host_if[..host_if.len().min(15)];
        run(&[
            "ip", "link", "add", host_if, "netns", &node, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        let net = i + 1;
        exec(
            &node,
            &[
                "ip",
                "addr",
                "add",
                &format!("10.42.{net}.1/24"),
                "dev",
                host_if,
            ],
        );
        exec(&node, &["ip", "link", "set", host_if, "up"]);
        exec(
            &ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("10.42.{net}.2/24"),
                "dev",
                "eth0",
            ],
        );
        exec(&ns, &["ip", "link", "set", "eth0", "up"]);
        exec(
            &ns,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("10.42.{net}.1"),
            ],
        );
        let dir = www.join(pod);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), format!("{pod}\n")).unwrap();
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns, "busybox", "httpd", "-f", "-p", "8080", "-h",
            ])
            .arg(&dir)
            .spawn()
            .unwrap();
        lab.children.push(child);
    }
    // The node's own address, and a route that sends service addresses somewhere for the
    // output-hook DNAT to rewrite.
    exec(
        &node,
        &["ip", "addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"],
    );
    let first_if = format!("sk{tag}0");
    let first_if = &first_if[..first_if.len().min(15)];
    exec(
        &node,
        &["ip", "route", "add", "10.43.0.0/16", "dev", first_if],
    );

    let info = NodeInfo {
        name: "node".into(),
        addresses: vec![NODE_IP.parse().unwrap()],
    };
    let ruleset = render(&services(), &slices(), &info);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let nft = vec![
        "ip".to_string(),
        "netns".into(),
        "exec".into(),
        node.clone(),
        "nft".into(),
    ];
    rt.block_on(skiff_proxy::apply(&nft, &ruleset)).unwrap();
    // Loading twice replaces the table rather than failing or doubling it.
    rt.block_on(skiff_proxy::apply(&nft, &ruleset)).unwrap();

    let listed = exec(&node, &["nft", "list", "table", "ip", "skiff"]);
    assert!(
        listed.contains("chain svc_default_web_tcp_http"),
        "{listed}"
    );
    assert!(
        listed.contains("10.43.0.20 . tcp . 80 : goto svc_default_web_tcp_http"),
        "{listed}"
    );
    assert_eq!(listed.matches("chain services {").count(), 1, "{listed}");

    // Both endpoints answer through the ClusterIP and through the NodePort.
    for url in ["http://10.43.0.20:80/", &format!("http://{NODE_IP}:30080/")] {
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last_err = String::new();
        while seen.len() < 2 {
            assert!(
                Instant::now() < deadline,
                "only {seen:?} answered on {url}; last error: {last_err}"
            );
            match fetch(&node, url) {
                Ok(body) => {
                    seen.insert(body);
                }
                // The servers may still be starting.
                Err(e) => last_err = e,
            }
        }
        assert_eq!(seen, BTreeSet::from(["p1".to_string(), "p2".to_string()]));
    }

    // A service without endpoints refuses at once instead of timing out.
    let start = Instant::now();
    let err = fetch(&node, "http://10.43.0.21:80/").unwrap_err();
    assert!(err.contains("Failed to connect"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("skiff-proxy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
