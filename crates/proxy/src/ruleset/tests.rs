use super::*;
use crate::render::{render, ruleset, NodeInfo};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

fn service(name: &str, ip: &str, extra: serde_json::Value) -> Service {
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

fn slice(svc: &str, ips: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({ "addresses": [ip], "nodeName": "node-a", "conditions": { "ready": true } }))
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
        addresses: vec!["192.168.1.10".parse().unwrap()],
    }
}

fn services() -> Vec<Service> {
    vec![
        service("web", "10.43.0.20", json!({})),
        service("api", "10.43.0.30", json!({})),
    ]
}

/// `web` with `web_ips` and `api` with two fixed endpoints.
fn state(svcs: &[Service], web_ips: &[&str]) -> Ruleset {
    let slices = [
        slice("web", web_ips),
        slice("api", &["10.42.1.1", "10.42.1.2"]),
    ];
    ruleset(svcs, &slices, &node())
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// The line index of the first line of `text` equal to `line`.
fn at(text: &str, line: &str) -> usize {
    text.lines()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no line {line:?} in:\n{text}"))
}

#[test]
fn render_is_the_ruleset_as_a_table() {
    let svcs = services();
    let slices = [slice("web", &["10.42.0.7"])];
    assert_eq!(
        render(&svcs, &slices, &node()),
        ruleset(&svcs, &slices, &node()).to_table()
    );
}

#[test]
fn identical_rulesets_have_an_empty_diff() {
    let a = state(&services(), &["10.42.0.7", "10.42.0.8"]);
    assert_eq!(diff(&a, &a.clone()), "");
    assert_eq!(diff(&Ruleset::default(), &Ruleset::default()), "");
}

#[test]
fn added_endpoint_touches_only_its_service() {
    let prev = state(&services(), &["10.42.0.7"]);
    let next = state(&services(), &["10.42.0.7", "10.42.0.8"]);
    let d = diff(&prev, &next);
    assert_eq!(
        lines(&d),
        vec![
            "add chain ip skiff ep_default_web_tcp_http_10-42-0-8_8080",
            "add chain ip skiff svc_default_web_tcp_http",
            "flush chain ip skiff svc_default_web_tcp_http",
            "add rule ip skiff ep_default_web_tcp_http_10-42-0-8_8080 ip saddr 10.42.0.8 jump mark-for-masquerade",
            "add rule ip skiff ep_default_web_tcp_http_10-42-0-8_8080 meta l4proto tcp dnat to 10.42.0.8:8080",
            "add rule ip skiff svc_default_web_tcp_http numgen random mod 2 vmap { 0 : goto ep_default_web_tcp_http_10-42-0-7_8080, 1 : goto ep_default_web_tcp_http_10-42-0-8_8080 }",
        ]
    );
    assert!(!d.contains("api"), "other service touched:\n{d}");
}

#[test]
fn removed_endpoint_deletes_its_chain_after_unlinking_it() {
    let prev = state(&services(), &["10.42.0.7", "10.42.0.8"]);
    let next = state(&services(), &["10.42.0.7"]);
    let d = diff(&prev, &next);
    assert!(!d.contains("api"), "other service touched:\n{d}");
    assert!(!d.contains("element"), "map elements touched:\n{d}");
    let ep = "ep_default_web_tcp_http_10-42-0-8_8080";
    assert!(
        at(&d, "flush chain ip skiff svc_default_web_tcp_http")
            < at(&d, "add rule ip skiff svc_default_web_tcp_http goto ep_default_web_tcp_http_10-42-0-7_8080")
    );
    assert!(
        at(&d, &format!("flush chain ip skiff {ep}"))
            < at(&d, &format!("delete chain ip skiff {ep}"))
    );
    assert_eq!(
        lines(&d).last(),
        Some(&format!("delete chain ip skiff {ep}").as_str())
    );
}

#[test]
fn removed_service_deletes_its_elements_before_its_chains() {
    let prev = state(&services(), &["10.42.0.7"]);
    let next = state(&services()[1..], &["10.42.0.7"]);
    let d = diff(&prev, &next);
    assert_eq!(
        lines(&d),
        vec![
            "flush chain ip skiff ep_default_web_tcp_http_10-42-0-7_8080",
            "flush chain ip skiff svc_default_web_tcp_http",
            "delete element ip skiff service-ips { 10.43.0.20 . tcp . 80 }",
            "delete chain ip skiff ep_default_web_tcp_http_10-42-0-7_8080",
            "delete chain ip skiff svc_default_web_tcp_http",
        ]
    );
}

#[test]
fn service_losing_its_endpoints_moves_to_reject() {
    let prev = state(&services(), &["10.42.0.7"]);
    let next = state(&services(), &[]);
    let d = diff(&prev, &next);
    let del = at(
        &d,
        "delete element ip skiff service-ips { 10.43.0.20 . tcp . 80 }",
    );
    let add = at(
        &d,
        "add element ip skiff no-endpoint-services { 10.43.0.20 . tcp . 80 : goto reject-chain }",
    );
    let gone = at(&d, "delete chain ip skiff svc_default_web_tcp_http");
    assert!(del < gone && add < gone);
    // And back: the chains exist before the element that points at them.
    let d = diff(&next, &prev);
    assert!(
        at(&d, "add chain ip skiff svc_default_web_tcp_http")
            < at(&d, "add element ip skiff service-ips { 10.43.0.20 . tcp . 80 : goto svc_default_web_tcp_http }")
    );
    assert!(d.contains("delete element ip skiff no-endpoint-services { 10.43.0.20 . tcp . 80 }"));
}

#[test]
fn changed_verdict_is_deleted_then_added() {
    let mut prev = state(&services(), &["10.42.0.7"]);
    let mut next = prev.clone();
    prev.sets[1].elements = vec!["10.0.0.1 . tcp . 80 : goto a".into()];
    next.sets[1].elements = vec!["10.0.0.1 . tcp . 80 : goto b".into()];
    assert_eq!(
        lines(&diff(&prev, &next)),
        vec![
            "delete element ip skiff service-ips { 10.0.0.1 . tcp . 80 }",
            "add element ip skiff service-ips { 10.0.0.1 . tcp . 80 : goto b }",
        ]
    );
}

#[test]
fn node_address_change_updates_node_ips() {
    let svcs = services();
    let prev = ruleset(&svcs, &[], &node());
    let mut other = node();
    other.addresses = vec!["192.168.1.11".parse().unwrap()];
    let next = ruleset(&svcs, &[], &other);
    assert_eq!(
        lines(&diff(&prev, &next)),
        vec![
            "delete element ip skiff node-ips { 192.168.1.10 }",
            "add element ip skiff node-ips { 192.168.1.11 }",
        ]
    );
}

#[test]
fn affinity_sets_that_stay_are_kept() {
    let aff = json!({ "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 60 } } });
    let svcs = vec![service("web", "10.43.0.20", aff)];
    let prev = state(&svcs, &["10.42.0.7", "10.42.0.8"]);
    let next = state(&svcs, &["10.42.0.7", "10.42.0.9"]);
    let d = diff(&prev, &next);
    let kept = "aff_default_web_tcp_http_10-42-0-7_8080";
    assert!(
        !d.contains(&format!("set ip skiff {kept}")),
        "kept set touched:\n{d}"
    );
    let new = "add set ip skiff aff_default_web_tcp_http_10-42-0-9_8080 \
               { type ipv4_addr; flags dynamic,timeout; timeout 60s; }";
    assert!(at(&d, new) < at(&d, "add rule ip skiff ep_default_web_tcp_http_10-42-0-9_8080 update @aff_default_web_tcp_http_10-42-0-9_8080 { ip saddr }"));
    assert_eq!(
        lines(&d).last(),
        Some(&"delete set ip skiff aff_default_web_tcp_http_10-42-0-8_8080")
    );
}

#[test]
fn affinity_timeout_change_recreates_sets_after_flushing_their_users() {
    let aff = |t: i32| {
        json!({ "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": t } } })
    };
    let prev = state(&[service("web", "10.43.0.20", aff(60))], &["10.42.0.7"]);
    let next = state(&[service("web", "10.43.0.20", aff(90))], &["10.42.0.7"]);
    let d = diff(&prev, &next);
    let set = "aff_default_web_tcp_http_10-42-0-7_8080";
    let ep = "ep_default_web_tcp_http_10-42-0-7_8080";
    let del = at(&d, &format!("delete set ip skiff {set}"));
    assert!(at(&d, &format!("flush chain ip skiff {ep}")) < del);
    assert!(at(&d, "flush chain ip skiff svc_default_web_tcp_http") < del);
    let add = at(
        &d,
        &format!(
            "add set ip skiff {set} {{ type ipv4_addr; flags dynamic,timeout; timeout 90s; }}"
        ),
    );
    assert!(del < add);
    assert!(
        add < at(
            &d,
            &format!("add rule ip skiff {ep} update @{set} {{ ip saddr }}")
        )
    );
}
