//! Rendering NetworkPolicies into one nftables table for one node (a pure function), as k3s's
//! embedded policy controller (kube-router) enforces them.
//!
//! Every pod on this node that some policy isolates gets its own chain per direction: one
//! `in_…` chain that accepts what the ingress rules of the selecting policies allow, and one
//! `out_…` chain that lets through what their egress rules allow; anything else is rejected.
//! Verdict maps keyed by pod address dispatch to those chains from the forward hook (pod to pod
//! on the bridge and across nodes) and the output hook (the node reaching its pods). As
//! upstream specifies, traffic between a pod and its own node is always allowed (kubelet
//! probes, node-local services; the input hook is left alone), and a pod cannot block itself.
//! Replies to allowed connections pass through conntrack.
//! Peer addresses of each rule live in named interval sets shared by every pod the rule
//! protects.
//!
//! Layout: `addr` does the address and port range arithmetic, `select` decides which pods
//! selectors pick and which addresses peers cover, and this file turns policies into chains.

mod addr;
mod select;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPort, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use addr::{ip_range, AddrSet, Family, Ranges, Span, FAMILIES};
use select::{protocol, selects, Cluster, Peers, PodView};

/// The nftables table (family `inet`) the policy enforcer owns.
pub const POLICY_TABLE: &str = "skiff-policy";

/// Which ports a rule admits, by nft protocol keyword: `None` means every port.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ports {
    Any,
    Only(BTreeMap<&'static str, Option<Ranges>>),
}

impl Ports {
    fn is_nothing(&self) -> bool {
        matches!(self, Ports::Only(m) if m.is_empty())
    }
}

/// One port entry of a rule, before named ports are resolved.
enum PortEntry {
    All(&'static str),
    Range(&'static str, u16, u16),
    Named(&'static str, String),
}

fn port_entries(ports: Option<&Vec<NetworkPolicyPort>>) -> Option<Vec<PortEntry>> {
    let ports = ports.filter(|p| !p.is_empty())?;
    Some(
        ports
            .iter()
            .filter_map(|p| {
                let proto = protocol(p.protocol.as_ref())?;
                Some(match &p.port {
                    None => PortEntry::All(proto),
                    Some(IntOrString::Int(n)) => {
                        let lo = u16::try_from(*n).ok()?;
                        let hi = p
                            .end_port
                            .and_then(|e| u16::try_from(e).ok())
                            .unwrap_or(lo)
                            .max(lo);
                        PortEntry::Range(proto, lo, hi)
                    }
                    Some(IntOrString::String(name)) => PortEntry::Named(proto, name.clone()),
                })
            })
            .collect(),
    )
}

fn add_port(map: &mut BTreeMap<&'static str, Option<Ranges>>, proto: &'static str, r: (u16, u16)) {
    // `None` (every port of the protocol) already covers the range.
    if let Some(ranges) = map.entry(proto).or_insert_with(|| Some(Ranges::default())) {
        ranges.add(r.0 as u128, r.1 as u128);
    }
}

/// The ports `entries` admit on `target`, whose container ports resolve named ones.
fn resolve_ports(entries: Option<&[PortEntry]>, target: Option<&PodView>) -> Ports {
    let Some(entries) = entries else {
        return Ports::Any;
    };
    let mut map: BTreeMap<&'static str, Option<Ranges>> = BTreeMap::new();
    for e in entries {
        match e {
            PortEntry::All(proto) => {
                map.insert(proto, None);
            }
            PortEntry::Range(proto, lo, hi) => add_port(&mut map, proto, (*lo, *hi)),
            PortEntry::Named(proto, name) => {
                if let Some(n) = target.and_then(|t| t.named_port(name, proto)) {
                    add_port(&mut map, proto, (n, n));
                }
            }
        }
    }
    Ports::Only(map)
}

/// Writes the rules that take `verdict` for packets whose address matches `addr` (an nft
/// expression, empty for any) and whose port is in `ports`.
fn write_rules(out: &mut String, addr: &str, ports: &Ports, verdict: &str, comment: &str) {
    let addr = if addr.is_empty() {
        String::new()
    } else {
        format!("{addr} ")
    };
    match ports {
        Ports::Any => {
            let _ = writeln!(out, "\t\t{addr}{verdict} comment \"{comment}\"");
        }
        Ports::Only(map) => {
            for (proto, ranges) in map {
                match ranges {
                    None => {
                        let _ = writeln!(
                            out,
                            "\t\t{addr}meta l4proto {proto} {verdict} comment \"{comment}\""
                        );
                    }
                    Some(r) => {
                        let elems: Vec<String> =
                            r.0.iter()
                                .map(|&(lo, hi)| {
                                    if lo == hi {
                                        lo.to_string()
                                    } else {
                                        format!("{lo}-{hi}")
                                    }
                                })
                                .collect();
                        let _ = writeln!(
                            out,
                            "\t\t{addr}meta l4proto {proto} th dport {{ {} }} {verdict} comment \"{comment}\"",
                            elems.join(", ")
                        );
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn short(self) -> &'static str {
        match self {
            Direction::Ingress => "in",
            Direction::Egress => "out",
        }
    }
    /// The address of the other end of the connection.
    fn peer_field(self) -> &'static str {
        match self {
            Direction::Ingress => "saddr",
            Direction::Egress => "daddr",
        }
    }
    /// What an allowed packet gets: ingress is the last check; an allowed egress packet still
    /// meets the destination pod's ingress check on the way.
    fn allow(self) -> &'static str {
        match self {
            Direction::Ingress => "accept",
            Direction::Egress => "return",
        }
    }
}

/// Which directions a policy governs: its `policyTypes`, or upstream's default (Ingress
/// always, Egress when it has egress rules).
fn policy_types(spec: &NetworkPolicySpec) -> (bool, bool) {
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// One rule of one policy, with the peer addresses computed once for every pod it protects.
struct Rule<'a> {
    /// `ns/name` of the policy, for rule comments.
    policy: String,
    /// The base of the named sets holding the peer addresses.
    set_base: String,
    peers: Peers,
    ports: Option<Vec<PortEntry>>,
    /// For named ports of egress rules: the pods the rule reaches, whose ports resolve them.
    candidates: Vec<&'a PodView<'a>>,
}

/// Renders `table inet skiff-policy` for the pods on `node_name`, as one `nft -f` transaction
/// that replaces the previous table atomically. `node_ips` are the node's own addresses, whose
/// traffic always reaches local pods. Output is deterministic: policies and pods sort by
/// namespace and name.
pub fn render_policy(
    policies: &[NetworkPolicy],
    pods: &[Pod],
    namespaces: &[Namespace],
    node_name: &str,
    node_ips: &[IpAddr],
) -> String {
    let cluster = Cluster::new(pods, namespaces);
    let mut sorted: Vec<(&NetworkPolicy, &NetworkPolicySpec)> = policies
        .iter()
        .filter_map(|p| Some((p, p.spec.as_ref()?)))
        .collect();
    sorted.sort_by(|(a, _), (b, _)| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });

    // Local pods, each address once (the first pod by namespace and name wins a clash).
    let mut seen_ips = BTreeSet::new();
    let local: Vec<&PodView> = cluster
        .pods
        .iter()
        .filter(|p| {
            p.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name)
                && p.ips.iter().all(|ip| seen_ips.insert(*ip))
        })
        .collect();

    // Rules of each policy that selects some local pod, computed once.
    let mut ingress_rules: BTreeMap<usize, Vec<Rule>> = BTreeMap::new();
    let mut egress_rules: BTreeMap<usize, Vec<Rule>> = BTreeMap::new();
    let mut selected: Vec<(Vec<usize>, Vec<usize>)> = vec![(Vec::new(), Vec::new()); local.len()];
    for (k, (policy, spec)) in sorted.iter().enumerate() {
        let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
        let name = policy.metadata.name.as_deref().unwrap_or("");
        let (ingress, egress) = policy_types(spec);
        let selector = spec.pod_selector.clone().unwrap_or_default();
        let mut any = false;
        for (i, pod) in local.iter().enumerate() {
            if pod.namespace == ns && selects(&selector, pod.labels) {
                any = true;
                if ingress {
                    selected[i].0.push(k);
                }
                if egress {
                    selected[i].1.push(k);
                }
            }
        }
        if !any {
            continue;
        }
        let policy_id = format!("{ns}/{name}");
        if ingress {
            let rules = spec
                .ingress
                .iter()
                .flatten()
                .enumerate()
                .map(|(r, rule)| Rule {
                    policy: policy_id.clone(),
                    set_base: format!("p{k}_in{r}"),
                    peers: cluster.peers(rule.from.as_ref(), ns),
                    ports: port_entries(rule.ports.as_ref()),
                    candidates: Vec::new(),
                })
                .collect();
            ingress_rules.insert(k, rules);
        }
        if egress {
            let rules = spec
                .egress
                .iter()
                .flatten()
                .enumerate()
                .map(|(r, rule)| {
                    let peers = cluster.peers(rule.to.as_ref(), ns);
                    let ports = port_entries(rule.ports.as_ref());
                    let named = ports
                        .iter()
                        .flatten()
                        .any(|p| matches!(p, PortEntry::Named(..)));
                    let candidates = if named {
                        cluster
                            .pods
                            .iter()
                            .filter(|p| match &peers {
                                Peers::Any => true,
                                Peers::Only(set) => p.ips.iter().any(|ip| set.contains(ip)),
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    Rule {
                        policy: policy_id.clone(),
                        set_base: format!("p{k}_out{r}"),
                        peers,
                        ports,
                        candidates,
                    }
                })
                .collect();
            egress_rules.insert(k, rules);
        }
    }

    let mut sets = String::new();
    for (direction, rules) in [
        (Direction::Ingress, &ingress_rules),
        (Direction::Egress, &egress_rules),
    ] {
        for rule in rules.values().flatten() {
            let Peers::Only(addrs) = &rule.peers else {
                continue;
            };
            for f in FAMILIES {
                let r = addrs.family(f);
                if r.is_empty() {
                    continue;
                }
                let _ = writeln!(
                    sets,
                    "\t# {} {}\n\tset {}_{} {{\n\t\ttype {}\n\t\tflags interval\n\t\telements = {{ {} }}\n\t}}",
                    rule.policy,
                    direction.short(),
                    rule.set_base,
                    f.suffix(),
                    f.addr_type(),
                    r.elements(f).join(", "),
                );
            }
        }
    }

    let mut chains = String::new();
    let mut dispatch: BTreeMap<(Direction, Family), Vec<String>> = BTreeMap::new();
    for (i, pod) in local.iter().enumerate() {
        for (direction, ks, rules) in [
            (Direction::Ingress, &selected[i].0, &ingress_rules),
            (Direction::Egress, &selected[i].1, &egress_rules),
        ] {
            if ks.is_empty() {
                continue;
            }
            let chain = format!("{}_{}", direction.short(), chain_id(&pod.ips[0]));
            let _ = writeln!(chains, "\tchain {chain} {{");
            let _ = writeln!(chains, "\t\t# {}/{}", pod.namespace, pod.name);
            // A pod cannot block itself (upstream), e.g. reaching itself through a Service.
            for ip in &pod.ips {
                let _ = writeln!(
                    chains,
                    "\t\t{} {} {ip} {}",
                    Family::of(ip).kw(),
                    direction.peer_field(),
                    direction.allow()
                );
            }
            for k in ks {
                for rule in &rules[k] {
                    write_rule(&mut chains, direction, rule, pod);
                }
            }
            chains.push_str("\t\treject\n\t}\n");
            for ip in &pod.ips {
                dispatch
                    .entry((direction, Family::of(ip)))
                    .or_default()
                    .push(format!("{ip} : jump {chain}"));
            }
        }
    }

    let mut out = String::new();
    // Creating then deleting the table makes the first load work; the file is one transaction.
    let _ = writeln!(out, "add table inet {POLICY_TABLE}");
    let _ = writeln!(out, "delete table inet {POLICY_TABLE}");
    let _ = writeln!(out, "table inet {POLICY_TABLE} {{");
    for f in FAMILIES {
        let ips: BTreeSet<IpAddr> = node_ips
            .iter()
            .filter(|ip| Family::of(ip) == f)
            .copied()
            .collect();
        let elements: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        write_set(
            &mut out,
            &format!("set node-ips-{}", f.suffix()),
            f.addr_type(),
            &elements,
        );
    }
    for direction in [Direction::Ingress, Direction::Egress] {
        for f in FAMILIES {
            let elements = dispatch.remove(&(direction, f)).unwrap_or_default();
            write_set(
                &mut out,
                &format!("map {}-pods-{}", direction.short(), f.suffix()),
                &format!("{} : verdict", f.addr_type()),
                &elements,
            );
        }
    }
    out.push_str(&sets);
    out.push_str(BASE_CHAINS);
    out.push_str(&chains);
    out.push_str("}\n");
    out
}

/// Writes the nft rules of one policy rule into the chain of `pod`.
fn write_rule(out: &mut String, direction: Direction, rule: &Rule, pod: &PodView) {
    let verdict = direction.allow();
    let field = direction.peer_field();
    // Which peer families the rule can match at all.
    let addr_matches: Vec<String> = match &rule.peers {
        Peers::Any => vec![String::new()],
        Peers::Only(addrs) => FAMILIES
            .iter()
            .filter(|f| !addrs.family(**f).is_empty())
            .map(|f| format!("{} {field} @{}_{}", f.kw(), rule.set_base, f.suffix()))
            .collect(),
    };
    match direction {
        Direction::Ingress => {
            // Named ports name the protected pod's own container ports.
            let ports = resolve_ports(rule.ports.as_deref(), Some(pod));
            if ports.is_nothing() {
                return;
            }
            for addr in &addr_matches {
                write_rules(out, addr, &ports, verdict, &rule.policy);
            }
        }
        Direction::Egress => {
            // Numbered ports apply to every peer address; a named port to each destination pod
            // whose container port carries that name, at that pod's number.
            let ports = resolve_ports(rule.ports.as_deref(), None);
            if !ports.is_nothing() {
                for addr in &addr_matches {
                    write_rules(out, addr, &ports, verdict, &rule.policy);
                }
            }
            let named: Vec<(&'static str, &str)> = rule
                .ports
                .iter()
                .flatten()
                .filter_map(|e| match e {
                    PortEntry::Named(proto, name) => Some((*proto, name.as_str())),
                    _ => None,
                })
                .collect();
            // (protocol, port) -> destination addresses
            let mut by_port: BTreeMap<(&'static str, u16), Vec<Span>> = BTreeMap::new();
            for (proto, name) in named {
                for dest in &rule.candidates {
                    let Some(n) = dest.named_port(name, proto) else {
                        continue;
                    };
                    for ip in &dest.ips {
                        if let Peers::Only(addrs) = &rule.peers {
                            if !addrs.contains(ip) {
                                continue;
                            }
                        }
                        by_port.entry((proto, n)).or_default().push(ip_range(ip));
                    }
                }
            }
            for ((proto, n), ranges) in by_port {
                let addrs = AddrSet::from_ranges(ranges);
                for f in FAMILIES {
                    let r = addrs.family(f);
                    if r.is_empty() {
                        continue;
                    }
                    let addr = format!("{} {field} {{ {} }}", f.kw(), r.elements(f).join(", "));
                    let ports = Ports::Only(BTreeMap::from([(
                        proto,
                        Some(Ranges(vec![(n as u128, n as u128)])),
                    )]));
                    write_rules(out, &addr, &ports, verdict, &rule.policy);
                }
            }
        }
    }
}

/// Loads `text` unless it is what `applied` holds, the last text loaded; returns whether `nft`
/// ran. A failed load leaves `applied` alone so the next attempt retries.
pub(crate) async fn apply_if_changed(
    nft_command: &[String],
    text: String,
    applied: &mut Option<String>,
) -> anyhow::Result<bool> {
    if applied.as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    crate::apply(nft_command, &text).await?;
    *applied = Some(text);
    Ok(true)
}

/// A pod address as an nft identifier fragment.
fn chain_id(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn write_set(out: &mut String, head: &str, ty: &str, elements: &[String]) {
    let _ = writeln!(out, "\t{head} {{");
    let _ = writeln!(out, "\t\ttype {ty}");
    if !elements.is_empty() {
        let _ = writeln!(
            out,
            "\t\telements = {{ {} }}",
            elements.join(",\n\t\t\t     ")
        );
    }
    out.push_str("\t}\n");
}

/// Hooks that never change. Filtering runs at the filter priority, after the service proxy's
/// DNAT, so policies see the real pod addresses behind a Service. Neighbour discovery passes:
/// it carries no connection and pods need it to reach anything over IPv6.
const BASE_CHAINS: &str = "\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state established,related accept
\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept
\t\tip saddr vmap @out-pods-v4
\t\tip6 saddr vmap @out-pods-v6
\t\tip saddr @node-ips-v4 accept
\t\tip6 saddr @node-ips-v6 accept
\t\tip daddr vmap @in-pods-v4
\t\tip6 daddr vmap @in-pods-v6
\t}
\tchain output {
\t\ttype filter hook output priority filter; policy accept;
\t\tct state established,related accept
\t\tip saddr @node-ips-v4 accept
\t\tip6 saddr @node-ips-v6 accept
\t\tfib saddr type local accept
\t\tip daddr vmap @in-pods-v4
\t\tip6 daddr vmap @in-pods-v6
\t}
";

#[cfg(test)]
mod tests;
