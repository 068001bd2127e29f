use super::addr::cidr_range;
use super::select::Labels;
use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{json, Value};

const NODE: &str = "node-a";

fn pod(ns: &str, name: &str, ip: &str, labels: Value) -> Pod {
    pod_on(ns, name, ip, labels, NODE)
}

fn pod_on(ns: &str, name: &str, ip: &str, labels: Value, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "namespace": ns, "name": name, "labels": labels },
        "spec": {
            "nodeName": node,
            "containers": [{ "name": "c", "image": "i", "ports": [
                { "name": "http", "containerPort": 8080 },
                { "name": "dns", "containerPort": 5353, "protocol": "UDP" },
            ]}],
        },
        "status": { "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }] },
    }))
    .unwrap()
}

fn namespace(name: &str, labels: Value) -> Namespace {
    serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } })).unwrap()
}

fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({ "metadata": { "namespace": ns, "name": name }, "spec": spec }))
        .unwrap()
}

/// The body of chain `name` in `text`.
fn chain(text: &str, name: &str) -> String {
    let head = format!("\tchain {name} {{\n");
    let start = text
        .find(&head)
        .unwrap_or_else(|| panic!("no chain {name} in:\n{text}"))
        + head.len();
    let end = start + text[start..].find("\n\t}\n").unwrap();
    text[start..end].to_string()
}

/// The elements of set or map `name` in `text`, with whitespace squeezed.
fn elements(text: &str, name: &str) -> String {
    let head = format!(" {name} {{\n");
    let start = text
        .find(&head)
        .unwrap_or_else(|| panic!("no set {name} in:\n{text}"))
        + head.len();
    let end = start + text[start..].find("\n\t}\n").unwrap();
    let body = &text[start..end];
    match body.find("elements = { ") {
        Some(i) => body[i + 13..body.rfind(" }").unwrap()]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        None => String::new(),
    }
}

fn cluster() -> (Vec<Pod>, Vec<Namespace>) {
    let pods = vec![
        pod("default", "a", "10.42.0.2", json!({ "role": "client" })),
        pod("default", "b", "10.42.0.3", json!({ "app": "web" })),
        pod("default", "c", "10.42.0.4", json!({})),
        pod_on(
            "other",
            "d",
            "10.42.1.5",
            json!({ "role": "client" }),
            "node-b",
        ),
    ];
    let namespaces = vec![
        namespace(
            "default",
            json!({ "kubernetes.io/metadata.name": "default" }),
        ),
        namespace("other", json!({ "team": "blue" })),
    ];
    (pods, namespaces)
}

fn render_one(spec: Value) -> String {
    let (pods, namespaces) = cluster();
    render_policy(
        &[policy("default", "p", spec)],
        &pods,
        &namespaces,
        NODE,
        &["192.168.77.1".parse().unwrap()],
    )
}

#[test]
fn no_policy_isolates_nothing_and_replaces_the_table() {
    let (pods, namespaces) = cluster();
    let text = render_policy(&[], &pods, &namespaces, NODE, &[]);
    assert!(text.starts_with(
        "add table inet skiff-policy\ndelete table inet skiff-policy\ntable inet skiff-policy {\n"
    ));
    assert_eq!(elements(&text, "in-pods-v4"), "");
    assert_eq!(elements(&text, "out-pods-v4"), "");
    assert!(!text.contains("\tchain in_"), "{text}");
    let forward = chain(&text, "forward");
    assert!(forward.contains("type filter hook forward priority filter; policy accept;"));
    assert!(forward.contains("ct state established,related accept"));
}

#[test]
fn selected_pods_are_isolated_for_ingress_only_by_default() {
    let text = render_one(json!({ "podSelector": { "matchLabels": { "app": "web" } } }));
    assert_eq!(
        elements(&text, "in-pods-v4"),
        "10.42.0.3 : jump in_10-42-0-3"
    );
    assert_eq!(elements(&text, "out-pods-v4"), "");
    // No rules: everything into b is rejected.
    assert_eq!(
        chain(&text, "in_10-42-0-3").trim(),
        "# default/b\n\t\tip saddr 10.42.0.3 accept\n\t\treject"
    );
}

#[test]
fn egress_rules_make_egress_isolation_by_default() {
    let text = render_one(json!({
        "podSelector": {},
        "egress": [{ "to": [{ "ipBlock": { "cidr": "10.0.0.0/8" } }] }],
    }));
    for ip in ["10.42.0.2", "10.42.0.3", "10.42.0.4"] {
        let dashed = ip.replace('.', "-");
        assert!(
            elements(&text, "out-pods-v4").contains(&format!("{ip} : jump out_{dashed}")),
            "{text}"
        );
        assert!(elements(&text, "in-pods-v4").contains(ip), "{text}");
    }
    // Pods of other nodes are not dispatched here.
    assert!(!text.contains("10.42.1.5 : jump"), "{text}");
    let out = chain(&text, "out_10-42-0-2");
    assert!(
        out.contains("ip daddr @p0_out0_v4 return comment \"default/p\""),
        "{out}"
    );
    assert!(out.ends_with("reject"), "{out}");
    assert_eq!(elements(&text, "p0_out0_v4"), "10.0.0.0/8");
}

#[test]
fn explicit_policy_types_win() {
    // Egress only, no rules: all egress denied, ingress untouched.
    let text = render_one(json!({ "podSelector": {}, "policyTypes": ["Egress"] }));
    assert_eq!(elements(&text, "in-pods-v4"), "");
    assert!(elements(&text, "out-pods-v4").contains("10.42.0.2 : jump out_10-42-0-2"));
    assert!(chain(&text, "out_10-42-0-2")
        .ends_with("# default/a\n\t\tip daddr 10.42.0.2 return\n\t\treject"));
    // An empty egress list without policyTypes does not isolate egress.
    let text = render_one(json!({ "podSelector": {}, "egress": [] }));
    assert_eq!(elements(&text, "out-pods-v4"), "");
}

#[test]
fn empty_rule_allows_everything_and_empty_list_denies_everything() {
    let text = render_one(json!({ "podSelector": {}, "ingress": [{}] }));
    assert_eq!(
        chain(&text, "in_10-42-0-3").trim(),
        "# default/b\n\t\tip saddr 10.42.0.3 accept\n\t\taccept comment \"default/p\"\n\t\treject"
    );
    let text = render_one(json!({ "podSelector": {}, "ingress": [] }));
    assert_eq!(
        chain(&text, "in_10-42-0-3").trim(),
        "# default/b\n\t\tip saddr 10.42.0.3 accept\n\t\treject"
    );
}

#[test]
fn pod_selector_peers_stay_in_the_policy_namespace() {
    let text = render_one(json!({
        "podSelector": { "matchLabels": { "app": "web" } },
        "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "role": "client" } } }] }],
    }));
    // d in "other" is labelled role=client too but not in the policy's namespace.
    assert_eq!(elements(&text, "p0_in0_v4"), "10.42.0.2");
    assert!(
        chain(&text, "in_10-42-0-3").contains("ip saddr @p0_in0_v4 accept comment \"default/p\"")
    );
}

#[test]
fn namespace_selector_peers_and_combined_selectors() {
    let text = render_one(json!({
        "podSelector": { "matchLabels": { "app": "web" } },
        "ingress": [
            { "from": [{ "namespaceSelector": { "matchLabels": { "team": "blue" } } }] },
            { "from": [{ "namespaceSelector": {} , "podSelector": { "matchLabels": { "role": "client" } } }] },
            { "from": [{
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "default" } },
                "podSelector": { "matchExpressions": [{ "key": "role", "operator": "DoesNotExist" }] },
            }] },
        ],
    }));
    assert_eq!(elements(&text, "p0_in0_v4"), "10.42.1.5");
    assert_eq!(elements(&text, "p0_in1_v4"), "10.42.0.2, 10.42.1.5");
    assert_eq!(elements(&text, "p0_in2_v4"), "10.42.0.3-10.42.0.4");
}

#[test]
fn namespaces_without_objects_still_match_by_name() {
    let (pods, _) = cluster();
    let text = render_policy(
        &[policy(
            "default",
            "p",
            json!({
                "podSelector": {},
                "ingress": [{ "from": [{ "namespaceSelector": {
                    "matchLabels": { "kubernetes.io/metadata.name": "other" } } }] }],
            }),
        )],
        &pods,
        &[],
        NODE,
        &[],
    );
    assert_eq!(elements(&text, "p0_in0_v4"), "10.42.1.5");
}

#[test]
fn match_expressions_follow_upstream_operators() {
    let labels: Labels = [("a", "1"), ("b", "2")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let sel = |v: Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
    assert!(selects(&sel(json!({})), &labels));
    assert!(selects(
        &sel(
            json!({ "matchExpressions": [{ "key": "a", "operator": "In", "values": ["1", "3"] }] })
        ),
        &labels
    ));
    assert!(!selects(
        &sel(json!({ "matchExpressions": [{ "key": "a", "operator": "NotIn", "values": ["1"] }] })),
        &labels
    ));
    // NotIn matches when the key is absent.
    assert!(selects(
        &sel(json!({ "matchExpressions": [{ "key": "z", "operator": "NotIn", "values": ["1"] }] })),
        &labels
    ));
    assert!(selects(
        &sel(json!({ "matchExpressions": [{ "key": "b", "operator": "Exists" }] })),
        &labels
    ));
    assert!(!selects(
        &sel(json!({ "matchLabels": { "a": "1", "b": "3" } })),
        &labels
    ));
    assert!(!selects(
        &sel(json!({ "matchExpressions": [{ "key": "a", "operator": "Bogus" }] })),
        &labels
    ));
}

#[test]
fn ip_blocks_subtract_their_exceptions() {
    let text = render_one(json!({
        "podSelector": { "matchLabels": { "app": "web" } },
        "ingress": [{ "from": [
            { "ipBlock": { "cidr": "172.16.0.0/12", "except": ["172.17.0.0/16", "172.20.1.0/24"] } },
            { "ipBlock": { "cidr": "fd00::/8", "except": ["fd00:1::/32"] } },
            { "ipBlock": { "cidr": "192.168.5.7/24" } },
        ] }],
    }));
    assert_eq!(
        elements(&text, "p0_in0_v4"),
        "172.16.0.0/16, 172.18.0.0-172.20.0.255, 172.20.2.0-172.31.255.255, 192.168.5.0/24"
    );
    assert_eq!(
        elements(&text, "p0_in0_v6"),
        "fd00::/32, fd00:2::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    );
    let c = chain(&text, "in_10-42-0-3");
    assert!(c.contains("ip saddr @p0_in0_v4 accept"), "{c}");
    assert!(c.contains("ip6 saddr @p0_in0_v6 accept"), "{c}");
}

#[test]
fn ports_by_number_protocol_range_and_name() {
    let text = render_one(json!({
        "podSelector": { "matchLabels": { "app": "web" } },
        "ingress": [{ "ports": [
            { "port": 80 },
            { "port": 8000, "endPort": 8100, "protocol": "TCP" },
            { "port": 8050 },
            { "port": "http" },
            { "port": "dns", "protocol": "UDP" },
            { "port": "missing" },
            { "protocol": "SCTP" },
            { "port": 53, "protocol": "UDP" },
        ] }],
    }));
    let c = chain(&text, "in_10-42-0-3");
    assert!(
        c.contains("meta l4proto sctp accept comment \"default/p\""),
        "{c}"
    );
    assert!(
        c.contains("meta l4proto tcp th dport { 80, 8000-8100 } accept"),
        "{c}"
    );
    assert!(
        c.contains("meta l4proto udp th dport { 53, 5353 } accept"),
        "{c}"
    );
    // A rule whose only port names nothing on the pod matches nothing.
    let text = render_one(json!({
        "podSelector": { "matchLabels": { "app": "web" } },
        "ingress": [{ "ports": [{ "port": "missing" }] }],
    }));
    assert_eq!(
        chain(&text, "in_10-42-0-3").trim(),
        "# default/b\n\t\tip saddr 10.42.0.3 accept\n\t\treject"
    );
}

#[test]
fn egress_named_ports_resolve_on_each_destination() {
    let (mut pods, namespaces) = cluster();
    let mut other: Pod = pod("default", "e", "10.42.0.9", json!({ "app": "db" }));
    other.spec.as_mut().unwrap().containers[0].ports = Some(vec![serde_json::from_value(
        json!({ "name": "http", "containerPort": 9090 }),
    )
    .unwrap()]);
    pods.push(other);
    let text = render_policy(
        &[policy(
            "default",
            "p",
            json!({
                "podSelector": { "matchLabels": { "role": "client" } },
                "policyTypes": ["Egress"],
                "egress": [{ "ports": [{ "port": "http" }, { "port": 443 }] }],
            }),
        )],
        &pods,
        &namespaces,
        NODE,
        &[],
    );
    let c = chain(&text, "out_10-42-0-2");
    assert!(
        c.contains("meta l4proto tcp th dport { 443 } return"),
        "{c}"
    );
    assert!(
        c.contains(
            "ip daddr { 10.42.0.2-10.42.0.4, 10.42.1.5 } meta l4proto tcp th dport { 8080 } return"
        ),
        "{c}"
    );
    assert!(
        c.contains("ip daddr { 10.42.0.9 } meta l4proto tcp th dport { 9090 } return"),
        "{c}"
    );
}

#[test]
fn allowed_traffic_is_the_union_of_selecting_policies() {
    let (pods, namespaces) = cluster();
    let policies = [
        policy(
            "default",
            "z-web",
            json!({
                "podSelector": { "matchLabels": { "app": "web" } },
                "ingress": [{ "ports": [{ "port": 80 }] }],
            }),
        ),
        policy(
            "default",
            "a-all",
            json!({ "podSelector": {}, "ingress": [{ "from": [{ "ipBlock": { "cidr": "10.9.0.0/16" } }] }] }),
        ),
        // Another namespace's policy never selects pods here.
        policy("other", "deny", json!({ "podSelector": {} })),
    ];
    let text = render_policy(&policies, &pods, &namespaces, NODE, &[]);
    let c = chain(&text, "in_10-42-0-3");
    let a = c.find("ip saddr @p0_in0_v4 accept comment \"default/a-all\"");
    let z = c.find("meta l4proto tcp th dport { 80 } accept comment \"default/z-web\"");
    assert!(a.is_some() && z.is_some() && a < z, "{c}");
    // c is selected only by a-all.
    assert!(!chain(&text, "in_10-42-0-4").contains("z-web"));

    // Input order does not change the output.
    let mut reversed = policies.to_vec();
    reversed.reverse();
    let mut pods_rev = pods.clone();
    pods_rev.reverse();
    assert_eq!(
        render_policy(&reversed, &pods_rev, &namespaces, NODE, &[]),
        text
    );
}

#[test]
fn host_network_finished_and_unaddressed_pods_take_no_part() {
    let (mut pods, namespaces) = cluster();
    let mut host = pod(
        "default",
        "host",
        "192.168.77.1",
        json!({ "role": "client" }),
    );
    host.spec.as_mut().unwrap().host_network = Some(true);
    let mut done = pod("default", "done", "10.42.0.7", json!({ "role": "client" }));
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let mut pending = pod("default", "pending", "", json!({ "role": "client" }));
    pending.status = None;
    pods.extend([host, done, pending]);
    let text = render_policy(
        &[policy(
            "default",
            "p",
            json!({
                "podSelector": {},
                "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "role": "client" } } }] }],
            }),
        )],
        &pods,
        &namespaces,
        NODE,
        &[],
    );
    assert_eq!(elements(&text, "p0_in0_v4"), "10.42.0.2");
    assert!(!text.contains("10.42.0.7 : jump"), "{text}");
    assert!(!text.contains("192.168.77.1 : jump"), "{text}");
}

#[test]
fn node_addresses_always_reach_local_pods() {
    let (pods, namespaces) = cluster();
    let text = render_policy(
        &[policy("default", "p", json!({ "podSelector": {} }))],
        &pods,
        &namespaces,
        NODE,
        &[
            "192.168.77.1".parse().unwrap(),
            "fd77::1".parse().unwrap(),
            "192.168.77.1".parse().unwrap(),
        ],
    );
    assert_eq!(elements(&text, "node-ips-v4"), "192.168.77.1");
    assert_eq!(elements(&text, "node-ips-v6"), "fd77::1");
    let out = chain(&text, "output");
    let node = out.find("ip saddr @node-ips-v4 accept").unwrap();
    let local = out.find("fib saddr type local accept").unwrap();
    let dispatch = out.find("ip daddr vmap @in-pods-v4").unwrap();
    assert!(node < dispatch && local < dispatch, "{out}");
    let fwd = chain(&text, "forward");
    assert!(
        fwd.find("ip saddr vmap @out-pods-v4").unwrap()
            < fwd.find("ip daddr vmap @in-pods-v4").unwrap(),
        "{fwd}"
    );
    // Traffic from pods to their node is always allowed: the input hook is not filtered.
    assert!(!text.contains("hook input"), "{text}");
}

#[test]
fn a_pod_never_blocks_itself() {
    let text = render_one(json!({ "podSelector": {}, "policyTypes": ["Ingress", "Egress"] }));
    let first = |c: String| c.lines().nth(1).unwrap().trim().to_string();
    assert_eq!(
        first(chain(&text, "in_10-42-0-4")),
        "ip saddr 10.42.0.4 accept"
    );
    assert_eq!(
        first(chain(&text, "out_10-42-0-4")),
        "ip daddr 10.42.0.4 return"
    );
}

#[test]
fn dual_stack_pods_dispatch_both_addresses_to_one_chain() {
    let (_, namespaces) = cluster();
    let mut p = pod("default", "v6", "10.42.0.8", json!({}));
    p.status.as_mut().unwrap().pod_ips = Some(vec![
        serde_json::from_value(json!({ "ip": "10.42.0.8" })).unwrap(),
        serde_json::from_value(json!({ "ip": "fd42::8" })).unwrap(),
    ]);
    let text = render_policy(
        &[policy("default", "p", json!({ "podSelector": {} }))],
        &[p],
        &namespaces,
        NODE,
        &[],
    );
    assert_eq!(
        elements(&text, "in-pods-v4"),
        "10.42.0.8 : jump in_10-42-0-8"
    );
    assert_eq!(elements(&text, "in-pods-v6"), "fd42::8 : jump in_10-42-0-8");
}

#[test]
fn ranges_merge_and_subtract() {
    let mut r = Ranges::default();
    r.add(10, 20);
    r.add(21, 25);
    r.add(5, 7);
    assert_eq!(r.0, vec![(5, 7), (10, 25)]);
    r.subtract(12, 12);
    assert_eq!(r.0, vec![(5, 7), (10, 11), (13, 25)]);
    r.subtract(0, 10);
    assert_eq!(r.0, vec![(11, 11), (13, 25)]);
    assert!(r.contains(20) && !r.contains(12));
    assert_eq!(
        cidr_range("10.1.2.3/16"),
        Some((Family::V4, 0x0a01_0000, 0x0a01_ffff))
    );
    assert_eq!(
        cidr_range("0.0.0.0/0"),
        Some((Family::V4, 0, u32::MAX as u128))
    );
    assert_eq!(cidr_range("10.0.0.0/33"), None);
}

#[tokio::test]
async fn unchanged_text_skips_nft_and_failures_retry() {
    // Stand-ins for nft that read the ruleset, then fail or succeed.
    let nft = |script: &str| vec!["sh".to_string(), "-c".into(), script.into()];
    let fails = nft("cat >/dev/null; exit 1");
    let succeeds = nft("cat >/dev/null");
    let mut applied = None;
    // A failing load keeps nothing, so the same text is tried again.
    assert!(apply_if_changed(&fails, "t1".into(), &mut applied)
        .await
        .is_err());
    assert_eq!(applied, None);
    assert!(apply_if_changed(&succeeds, "t1".into(), &mut applied)
        .await
        .unwrap());
    assert_eq!(applied.as_deref(), Some("t1"));
    // The same text again never runs nft (a failing command would show it did).
    assert!(!apply_if_changed(&fails, "t1".into(), &mut applied)
        .await
        .unwrap());
    assert!(apply_if_changed(&fails, "t2".into(), &mut applied)
        .await
        .is_err());
    assert_eq!(applied.as_deref(), Some("t1"));
}
