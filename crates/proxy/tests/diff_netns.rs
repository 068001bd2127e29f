//! System test: partial updates ([`skiff_proxy::diff`]) applied with the real `nft` leave the
//! same table as a full replace. One network namespace follows a sequence of cluster states
//! through full table then diffs; for each state a second namespace loads the full table, and
//! the two `nft -j list table ip skiff` listings must match. The namespaces are this test's own
//! and are always deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use skiff_proxy::{diff, ruleset, NodeInfo, Ruleset};

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

fn have_nft() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Network namespaces deleted on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: String) -> String {
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        self.0.push(name.clone());
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn nft(ns: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft {args:?} failed: {}\ninput:\n{}",
        String::from_utf8_lossy(&out.stderr),
        stdin.unwrap_or("")
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn load(ns: &str, text: &str) {
    nft(ns, &["-f", "-"], Some(text));
}

/// The table as rules per chain (in order) and every other object, with kernel handles (which
/// depend on creation order) removed and set elements sorted.
fn listing(ns: &str) -> (BTreeMap<String, Vec<Value>>, BTreeSet<String>) {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                for x in m.values_mut() {
                    strip(x);
                }
                if let Some(Value::Array(elems)) = m.get_mut("elem") {
                    elems.sort_by_key(|e| e.to_string());
                }
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let text = nft(ns, &["-j", "list", "table", "ip", "skiff"], None);
    let mut all: Value = serde_json::from_str(&text).unwrap();
    strip(&mut all);
    let mut rules: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut objects = BTreeSet::new();
    for item in all["nftables"].as_array().unwrap() {
        if let Some(rule) = item.get("rule") {
            let chain = rule["chain"].as_str().unwrap().to_string();
            rules.entry(chain).or_default().push(rule["expr"].clone());
        } else if item.get("metainfo").is_none() {
            objects.insert(item.to_string());
        }
    }
    (rules, objects)
}

fn service(name: &str, ip: &str, extra: Value) -> Service {
    let mut spec = json!({
        "clusterIP": ip,
        "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080 }],
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "default" },
        "spec": spec,
    }))
    .unwrap()
}

/// A slice for `svc` with `(ip, node)` endpoints.
fn slice(svc: &str, eps: &[(&str, &str)]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, node)| {
            json!({ "addresses": [ip], "nodeName": node, "conditions": { "ready": true } })
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{svc}-abcde"),
            "namespace": "default",
            "labels": { "kubernetes.io/service-name": svc },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
    }))
    .unwrap()
}

fn node(ip: &str) -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        addresses: vec![ip.parse().unwrap()],
    }
}

fn affinity(timeout: i32) -> Value {
    json!({ "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": timeout } } })
}

/// A sequence of cluster states exercising every kind of change the proxy sees.
fn states() -> Vec<Ruleset> {
    let nodeport = json!({ "type": "NodePort", "ports": [
        { "name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080 }] });
    let local = json!({ "type": "NodePort", "externalTrafficPolicy": "Local",
        "internalTrafficPolicy": "Local", "ports": [
        { "name": "http", "port": 80, "protocol": "TCP", "nodePort": 30081 }] });
    let base = vec![
        service("web", "10.43.0.20", nodeport.clone()),
        service("sticky", "10.43.0.21", affinity(60)),
        service("local", "10.43.0.22", local),
        service("empty", "10.43.0.23", json!({})),
    ];
    let base_slices = vec![
        slice("web", &[("10.42.0.2", "node-a"), ("10.42.1.2", "node-b")]),
        slice(
            "sticky",
            &[("10.42.0.3", "node-a"), ("10.42.1.3", "node-b")],
        ),
        slice("local", &[("10.42.0.4", "node-a"), ("10.42.1.4", "node-b")]),
    ];
    let n = node("192.168.77.1");
    let mut out = vec![ruleset(&base, &base_slices, &n)];

    // Endpoints added and removed, affinity set replaced, local endpoint gone.
    let slices1 = vec![
        slice(
            "web",
            &[
                ("10.42.0.2", "node-a"),
                ("10.42.1.2", "node-b"),
                ("10.42.2.2", "node-c"),
            ],
        ),
        slice(
            "sticky",
            &[("10.42.0.3", "node-a"), ("10.42.2.3", "node-c")],
        ),
        slice("local", &[("10.42.1.4", "node-b")]),
        slice("empty", &[("10.42.0.5", "node-a")]),
    ];
    out.push(ruleset(&base, &slices1, &n));

    // A service removed, one added, an affinity timeout changed, one service left without
    // endpoints, and the node's address changed.
    let svcs2 = vec![
        service("sticky", "10.43.0.21", affinity(90)),
        service("local", "10.43.0.22", json!({})),
        service("empty", "10.43.0.23", json!({})),
        service("new", "10.43.0.24", nodeport),
    ];
    let slices2 = vec![
        slice(
            "sticky",
            &[("10.42.0.3", "node-a"), ("10.42.2.3", "node-c")],
        ),
        slice("local", &[("10.42.1.4", "node-b")]),
        slice("new", &[("10.42.0.6", "node-a")]),
    ];
    out.push(ruleset(&svcs2, &slices2, &node("192.168.77.2")));

    // Back to the start, and to an empty cluster.
    out.push(out[0].clone());
    out.push(ruleset(&[], &[], &n));
    out.push(out[0].clone());
    out
}

#[test]
fn diffs_applied_in_sequence_equal_full_tables() {
    if !is_root() || !have_nft() {
        eprintln!("skipping: needs root and nft");
        return;
    }
    let tag = std::process::id();
    let mut namespaces = Namespaces(Vec::new());
    let follow = namespaces.add(format!("skiff-diff-a-{tag}"));
    let fresh = namespaces.add(format!("skiff-diff-b-{tag}"));

    let states = states();
    load(&follow, &states[0].to_table());
    for (i, pair) in states.windows(2).enumerate() {
        let (prev, next) = (&pair[0], &pair[1]);
        let text = diff(prev, next);
        assert!(!text.is_empty(), "step {i} changes nothing");
        load(&follow, &text);
        load(&fresh, &next.to_table());
        let (got, want) = (listing(&follow), listing(&fresh));
        assert_eq!(got.0, want.0, "rules differ after step {i}:\n{text}");
        assert_eq!(got.1, want.1, "objects differ after step {i}:\n{text}");
    }
}

#[test]
fn diff_keeps_client_affinity_entries() {
    if !is_root() || !have_nft() {
        eprintln!("skipping: needs root and nft");
        return;
    }
    let mut namespaces = Namespaces(Vec::new());
    let ns = namespaces.add(format!("skiff-diff-aff-{}", std::process::id()));
    let svcs = [service("sticky", "10.43.0.21", affinity(600))];
    let prev = ruleset(
        &svcs,
        &[slice("sticky", &[("10.42.0.3", "node-a")])],
        &node("192.168.77.1"),
    );
    let next = ruleset(
        &svcs,
        &[slice(
            "sticky",
            &[("10.42.0.3", "node-a"), ("10.42.0.4", "node-a")],
        )],
        &node("192.168.77.1"),
    );
    load(&ns, &prev.to_table());
    let set = "aff_default_sticky_tcp_http_10-42-0-3_8080";
    // A client the kernel remembered, as `update @set { ip saddr }` would have added it.
    load(
        &ns,
        &format!("add element ip skiff {set} {{ 10.99.0.1 timeout 600s }}\n"),
    );
    load(&ns, &diff(&prev, &next));
    let listed = nft(&ns, &["list", "set", "ip", "skiff", set], None);
    assert!(listed.contains("10.99.0.1"), "affinity lost:\n{listed}");
}
