use super::*;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
use serde_json::json;

fn service(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "default" },
        "spec": spec,
    }))
    .unwrap()
}

/// A slice for `svc` with port `http`/8080 and `(ip, node, ready)` endpoints.
fn slice(svc: &str, eps: &[(&str, &str, bool)]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, node, ready)| {
            json!({ "addresses": [ip], "nodeName": node, "conditions": { "ready": ready } })
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

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        addresses: vec!["192.168.1.10".parse().unwrap(), "::1".parse().unwrap()],
    }
}

fn web(extra: serde_json::Value) -> Service {
    let mut spec = json!({
        "clusterIP": "10.43.0.20",
        "clusterIPs": ["10.43.0.20"],
        "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080 }],
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    service("web", spec)
}

/// The lines of `text` between `chain NAME {` and its closing brace, trimmed.
fn chain(text: &str, name: &str) -> Vec<String> {
    let head = format!("\tchain {name} {{");
    let mut lines = text.lines().skip_while(|l| *l != head);
    assert!(lines.next().is_some(), "no chain {name} in:\n{text}");
    lines
        .take_while(|l| *l != "\t}")
        .map(|l| l.trim().to_string())
        .collect()
}

/// The elements of set or map `NAME`, one per entry.
fn elements(text: &str, head: &str) -> Vec<String> {
    let start = format!("\t{head} {{");
    let body: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != start)
        .skip(1)
        .take_while(|l| *l != "\t}")
        .collect();
    let joined = body.join("\n");
    let Some(i) = joined.find("elements = {") else {
        return Vec::new();
    };
    let inner = &joined[i + "elements = {".len()..joined.rfind('}').unwrap()];
    inner
        .split(",\n")
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

#[test]
fn empty_cluster_renders_only_the_plumbing() {
    let text = render(&[], &[], &node());
    assert!(text.starts_with("add table ip skiff\ndelete table ip skiff\ntable ip skiff {\n"));
    assert_eq!(elements(&text, "set node-ips"), vec!["192.168.1.10"]);
    assert!(elements(&text, "map service-ips").is_empty());
    assert_eq!(
        chain(&text, "services"),
        vec![
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "ip daddr @node-ips meta l4proto . th dport vmap @service-nodeports",
        ]
    );
    assert_eq!(
        chain(&text, "nat-output")[0],
        "type nat hook output priority -100; policy accept;"
    );
}

#[test]
fn cluster_ip_picks_ready_endpoints_at_random() {
    let slices = [slice(
        "web",
        &[
            ("10.42.1.5", "node-b", true),
            ("10.42.0.7", "node-a", true),
            ("10.42.0.9", "node-a", false),
        ],
    )];
    let text = render(&[web(json!({}))], &slices, &node());
    assert_eq!(
        elements(&text, "map service-ips"),
        vec!["10.43.0.20 . tcp . 80 : goto svc_default_web_tcp_http"]
    );
    assert_eq!(
        chain(&text, "svc_default_web_tcp_http"),
        vec![
            "numgen random mod 2 vmap { 0 : goto ep_default_web_tcp_http_10-42-0-7_8080, \
             1 : goto ep_default_web_tcp_http_10-42-1-5_8080 }"
        ]
    );
    // Hairpin: the endpoint reaching itself is masqueraded before the DNAT.
    assert_eq!(
        chain(&text, "ep_default_web_tcp_http_10-42-0-7_8080"),
        vec![
            "ip saddr 10.42.0.7 jump mark-for-masquerade",
            "meta l4proto tcp dnat to 10.42.0.7:8080",
        ]
    );
    assert!(!text.contains("10.42.0.9"), "unready endpoint rendered");
    assert!(elements(&text, "map no-endpoint-services").is_empty());
}

#[test]
fn one_endpoint_is_a_plain_goto() {
    let slices = [slice("web", &[("10.42.0.7", "node-a", true)])];
    let text = render(&[web(json!({}))], &slices, &node());
    assert_eq!(
        chain(&text, "svc_default_web_tcp_http"),
        vec!["goto ep_default_web_tcp_http_10-42-0-7_8080"]
    );
}

#[test]
fn terminating_serving_endpoints_are_used_when_none_is_ready() {
    let mut s = slice("web", &[("10.42.0.7", "node-a", false)]);
    s.endpoints[0].conditions.as_mut().unwrap().serving = Some(true);
    s.endpoints[0].conditions.as_mut().unwrap().terminating = Some(true);
    let text = render(&[web(json!({}))], &[s], &node());
    assert_eq!(
        chain(&text, "svc_default_web_tcp_http"),
        vec!["goto ep_default_web_tcp_http_10-42-0-7_8080"]
    );
}

#[test]
fn no_ready_endpoints_rejects_at_once() {
    let slices = [slice("web", &[("10.42.0.9", "node-a", false)])];
    let svc = web(json!({ "type": "NodePort", "ports": [
        { "name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080 }
    ]}));
    let text = render(&[svc], &slices, &node());
    assert!(elements(&text, "map service-ips").is_empty());
    assert_eq!(
        elements(&text, "map no-endpoint-services"),
        vec!["10.43.0.20 . tcp . 80 : goto reject-chain"]
    );
    assert_eq!(
        elements(&text, "map no-endpoint-nodeports"),
        vec!["tcp . 30080 : goto reject-chain"]
    );
    assert_eq!(
        chain(&text, "reject-chain"),
        vec!["meta l4proto tcp reject with tcp reset", "reject"]
    );
    assert_eq!(
        chain(&text, "filter-output"),
        vec![
            "type filter hook output priority -110; policy accept;",
            "ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
            "ct state new ip daddr @node-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
        ]
    );
    assert!(!text.contains("chain svc_default_web"));
}

#[test]
fn node_port_is_masqueraded_and_answers_on_node_addresses() {
    let slices = [slice("web", &[("10.42.0.7", "node-a", true)])];
    let svc = web(json!({ "type": "NodePort", "ports": [
        { "name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080 }
    ]}));
    let text = render(&[svc], &slices, &node());
    assert_eq!(
        elements(&text, "map service-nodeports"),
        vec!["tcp . 30080 : goto ext_default_web_tcp_http"]
    );
    assert_eq!(
        chain(&text, "ext_default_web_tcp_http"),
        vec!["jump mark-for-masquerade", "goto svc_default_web_tcp_http"]
    );
    assert_eq!(
        chain(&text, "masquerading"),
        vec![
            "meta mark & 0x00004000 == 0 return",
            "meta mark set meta mark ^ 0x00004000",
            "masquerade fully-random",
        ]
    );
    // A ClusterIP service has no external chain.
    let text = render(&[web(json!({}))], &slices, &node());
    assert!(!text.contains("ext_default_web"));
}

#[test]
fn session_affinity_remembers_clients_with_its_timeout() {
    let slices = [slice(
        "web",
        &[("10.42.0.7", "node-a", true), ("10.42.1.5", "node-b", true)],
    )];
    let svc = web(json!({
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 600 } },
    }));
    let text = render(&[svc], &slices, &node());
    assert!(text.contains(
        "\tset aff_default_web_tcp_http_10-42-0-7_8080 {\n\t\ttype ipv4_addr\n\t\t\
         flags dynamic,timeout\n\t\ttimeout 600s\n\t}\n"
    ));
    assert_eq!(
        chain(&text, "svc_default_web_tcp_http"),
        vec![
            "ip saddr @aff_default_web_tcp_http_10-42-0-7_8080 goto ep_default_web_tcp_http_10-42-0-7_8080",
            "ip saddr @aff_default_web_tcp_http_10-42-1-5_8080 goto ep_default_web_tcp_http_10-42-1-5_8080",
            "numgen random mod 2 vmap { 0 : goto ep_default_web_tcp_http_10-42-0-7_8080, \
             1 : goto ep_default_web_tcp_http_10-42-1-5_8080 }",
        ]
    );
    assert_eq!(
        chain(&text, "ep_default_web_tcp_http_10-42-1-5_8080"),
        vec![
            "ip saddr 10.42.1.5 jump mark-for-masquerade",
            "update @aff_default_web_tcp_http_10-42-1-5_8080 { ip saddr }",
            "meta l4proto tcp dnat to 10.42.1.5:8080",
        ]
    );
    // Without a config, upstream's default of three hours.
    let text = render(
        &[web(json!({ "sessionAffinity": "ClientIP" }))],
        &slices,
        &node(),
    );
    assert!(text.contains("timeout 10800s"));
}

#[test]
fn internal_traffic_policy_local_uses_only_local_endpoints() {
    let both = [slice(
        "web",
        &[("10.42.0.7", "node-a", true), ("10.42.1.5", "node-b", true)],
    )];
    let svc = web(json!({ "internalTrafficPolicy": "Local" }));
    let text = render(std::slice::from_ref(&svc), &both, &node());
    assert_eq!(
        chain(&text, "svc_default_web_tcp_http"),
        vec!["goto ep_default_web_tcp_http_10-42-0-7_8080"]
    );
    // Endpoints exist but none here: dropped, as upstream does (not rejected).
    let remote = [slice("web", &[("10.42.1.5", "node-b", true)])];
    let text = render(&[svc], &remote, &node());
    assert_eq!(
        elements(&text, "map no-endpoint-services"),
        vec!["10.43.0.20 . tcp . 80 : drop"]
    );
}

#[test]
fn external_traffic_policy_local_keeps_client_address() {
    let both = [slice(
        "web",
        &[("10.42.0.7", "node-a", true), ("10.42.1.5", "node-b", true)],
    )];
    let svc = web(
        json!({ "type": "NodePort", "externalTrafficPolicy": "Local", "ports": [
            { "name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080 }
        ]}),
    );
    let text = render(std::slice::from_ref(&svc), &both, &node());
    assert_eq!(
        chain(&text, "ext_default_web_tcp_http"),
        vec![
            "fib saddr type local jump mark-for-masquerade",
            "fib saddr type local goto svc_default_web_tcp_http",
            "goto local_default_web_tcp_http",
        ]
    );
    assert_eq!(
        chain(&text, "local_default_web_tcp_http"),
        vec!["goto ep_default_web_tcp_http_10-42-0-7_8080"]
    );
    let remote = [slice("web", &[("10.42.1.5", "node-b", true)])];
    let text = render(&[svc], &remote, &node());
    assert_eq!(chain(&text, "local_default_web_tcp_http"), vec!["drop"]);
}

#[test]
fn load_balancer_ports_answer_on_node_and_ingress_addresses() {
    let slices = [slice("web", &[("10.42.0.7", "node-a", true)])];
    let mut svc = web(json!({ "type": "LoadBalancer", "ports": [
        { "name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080 }
    ]}));
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("192.168.1.11".into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    });
    let text = render(&[svc], &slices, &node());
    assert_eq!(
        elements(&text, "map service-ips"),
        vec![
            "10.43.0.20 . tcp . 80 : goto svc_default_web_tcp_http",
            "192.168.1.10 . tcp . 80 : goto ext_default_web_tcp_http",
            "192.168.1.11 . tcp . 80 : goto ext_default_web_tcp_http",
        ]
    );
    assert_eq!(
        elements(&text, "map service-nodeports"),
        vec!["tcp . 30080 : goto ext_default_web_tcp_http"]
    );
}

#[test]
fn headless_external_name_and_foreign_slices_are_ignored() {
    let headless = service(
        "db",
        json!({ "clusterIP": "None", "ports": [{ "name": "http", "port": 80 }] }),
    );
    let ext = service(
        "ext",
        json!({ "type": "ExternalName", "externalName": "example.com" }),
    );
    let mut v6 = slice("web", &[("fd00::1", "node-a", true)]);
    v6.address_type = "IPv6".into();
    let text = render(&[headless, ext, web(json!({}))], &[v6], &node());
    assert!(!text.contains("db"));
    assert!(!text.contains("ext_default"));
    assert_eq!(
        elements(&text, "map no-endpoint-services"),
        vec!["10.43.0.20 . tcp . 80 : goto reject-chain"]
    );
}

#[test]
fn rendering_is_stable_and_sorted() {
    let a = service(
        "a",
        json!({ "clusterIP": "10.43.0.30", "ports": [
            { "name": "dns", "port": 53, "protocol": "UDP" },
            { "port": 9000 },
        ]}),
    );
    let mut sl = slice("a", &[("10.42.0.3", "node-a", true)]);
    sl.ports = Some(
        serde_json::from_value(json!([{ "name": "dns", "port": 5353, "protocol": "UDP" }]))
            .unwrap(),
    );
    let services = [web(json!({})), a];
    let slices = [slice("web", &[("10.42.0.7", "node-a", true)]), sl];
    let one = render(&services, &slices, &node());
    let rev: Vec<_> = services.iter().rev().cloned().collect();
    let slices_rev: Vec<_> = slices.iter().rev().cloned().collect();
    assert_eq!(one, render(&rev, &slices_rev, &node()));
    assert_eq!(
        elements(&one, "map service-ips"),
        vec![
            "10.43.0.30 . udp . 53 : goto svc_default_a_udp_dns",
            "10.43.0.20 . tcp . 80 : goto svc_default_web_tcp_http",
        ]
    );
    assert_eq!(
        elements(&one, "map no-endpoint-services"),
        vec!["10.43.0.30 . tcp . 9000 : goto reject-chain"]
    );
    assert_eq!(
        chain(&one, "ep_default_a_udp_dns_10-42-0-3_5353"),
        vec![
            "ip saddr 10.42.0.3 jump mark-for-masquerade",
            "meta l4proto udp dnat to 10.42.0.3:5353",
        ]
    );
}
