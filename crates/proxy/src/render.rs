//! Rendering Services and EndpointSlices into one nftables ruleset (a pure function).
//!
//! The layout follows kube-proxy's nftables mode: verdict maps keyed by
//! `address . protocol . port` send new connections to one chain per service port, which picks
//! an endpoint at random (`numgen random`) or by client-IP affinity, and one chain per endpoint
//! DNATs to it. Services without usable endpoints are rejected in filter chains that run before
//! NAT, so clients fail at once instead of timing out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The nftables table the proxy owns; nothing else in the host's ruleset is touched.
pub const TABLE: &str = "skiff";

/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The node the ruleset is rendered for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The Node's name, matched against endpoints' `nodeName` for `Local` traffic policies.
    pub name: String,
    /// The node's addresses: NodePorts and LoadBalancer ports answer on each IPv4 one.
    pub addresses: Vec<IpAddr>,
}

/// One usable endpoint of a service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Endpoint {
    ip: Ipv4Addr,
    port: u16,
    local: bool,
}

/// One service port with everything needed to render its chains.
struct PortPlan {
    /// `namespace_name_protocol_port-name-or-number`, unique per service port: none of the parts
    /// may contain `_` (DNS labels and IANA service names), and nft identifiers allow neither
    /// `/` nor `:`.
    id: String,
    protocol: String,
    cluster_ips: Vec<Ipv4Addr>,
    /// Addresses whose `port` is DNATed like a NodePort (external IPs, load-balancer ingress).
    external_ips: Vec<Ipv4Addr>,
    port: u16,
    node_port: Option<u16>,
    endpoints: Vec<Endpoint>,
    affinity_timeout: Option<i32>,
    internal_local: bool,
    external_local: bool,
}

impl PortPlan {
    fn is_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
    fn svc_chain(&self) -> String {
        format!("svc_{}", self.id)
    }
    fn ext_chain(&self) -> String {
        format!("ext_{}", self.id)
    }
    fn local_chain(&self) -> String {
        format!("local_{}", self.id)
    }
    fn ep_chain(&self, ep: &Endpoint) -> String {
        format!("ep_{}_{}_{}", self.id, dashed(ep.ip), ep.port)
    }
    fn aff_set(&self, ep: &Endpoint) -> String {
        format!("aff_{}_{}_{}", self.id, dashed(ep.ip), ep.port)
    }
    fn local_endpoints(&self) -> Vec<&Endpoint> {
        self.endpoints.iter().filter(|e| e.local).collect()
    }
    /// The endpoints ClusterIP traffic may reach (`internalTrafficPolicy`).
    fn internal_endpoints(&self) -> Vec<&Endpoint> {
        if self.internal_local {
            self.local_endpoints()
        } else {
            self.endpoints.iter().collect()
        }
    }
}

/// Renders the whole `table ip skiff` for `node`, as one `nft -f` transaction that replaces the
/// previous table atomically. Output is deterministic: services sort by namespace and name,
/// endpoints by address and port.
pub fn render(services: &[Service], slices: &[EndpointSlice], node: &NodeInfo) -> String {
    let plans = plan(services, slices, node);
    let node_ips: BTreeSet<Ipv4Addr> = node.addresses.iter().filter_map(v4).collect();

    let mut service_ips: Vec<String> = Vec::new();
    let mut service_nodeports: Vec<String> = Vec::new();
    let mut no_endpoint_services: Vec<String> = Vec::new();
    let mut no_endpoint_nodeports: Vec<String> = Vec::new();
    let mut chains = String::new();
    let mut sets = String::new();

    for p in &plans {
        let internal = p.internal_endpoints();
        let external_eps: Vec<&Endpoint> = if p.external_local {
            p.local_endpoints()
        } else {
            p.endpoints.iter().collect()
        };
        // Upstream: no endpoints at all rejects; endpoints that exist but none usable under a
        // Local policy drops, as kube-proxy does.
        let internal_verdict = if p.endpoints.is_empty() {
            Some("goto reject-chain")
        } else if internal.is_empty() {
            Some("drop")
        } else {
            None
        };
        for ip in &p.cluster_ips {
            let key = format!("{ip} . {} . {}", p.protocol, p.port);
            match internal_verdict {
                Some(v) => no_endpoint_services.push(format!("{key} : {v}")),
                None => service_ips.push(format!("{key} : goto {}", p.svc_chain())),
            }
        }
        if p.is_external() {
            let ext_key_verdict = if p.endpoints.is_empty() {
                Some("goto reject-chain")
            } else {
                None
            };
            for ip in &p.external_ips {
                let key = format!("{ip} . {} . {}", p.protocol, p.port);
                match ext_key_verdict {
                    Some(v) => no_endpoint_services.push(format!("{key} : {v}")),
                    None => service_ips.push(format!("{key} : goto {}", p.ext_chain())),
                }
            }
            if let Some(np) = p.node_port {
                let key = format!("{} . {np}", p.protocol);
                match ext_key_verdict {
                    Some(v) => no_endpoint_nodeports.push(format!("{key} : {v}")),
                    None => service_nodeports.push(format!("{key} : goto {}", p.ext_chain())),
                }
            }
        }
        if p.endpoints.is_empty() {
            continue;
        }

        // Affinity sets and endpoint chains for every endpoint that some chain can pick.
        for ep in &p.endpoints {
            if let Some(timeout) = p.affinity_timeout {
                let _ = write!(
                    sets,
                    "\tset {} {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout {timeout}s\n\t}}\n",
                    p.aff_set(ep)
                );
            }
            let _ = writeln!(chains, "\tchain {} {{", p.ep_chain(ep));
            // Hairpin: an endpoint reaching itself through the service must see the reply come
            // back through the node, so its source is masqueraded.
            let _ = writeln!(chains, "\t\tip saddr {} jump mark-for-masquerade", ep.ip);
            if p.affinity_timeout.is_some() {
                let _ = writeln!(chains, "\t\tupdate @{} {{ ip saddr }}", p.aff_set(ep));
            }
            let _ = writeln!(
                chains,
                "\t\tmeta l4proto {} dnat to {}:{}",
                p.protocol, ep.ip, ep.port
            );
            chains.push_str("\t}\n");
        }

        if !internal.is_empty() {
            let _ = writeln!(chains, "\tchain {} {{", p.svc_chain());
            pick(&mut chains, p, &internal);
            chains.push_str("\t}\n");
        }

        if p.is_external() {
            let _ = writeln!(chains, "\tchain {} {{", p.ext_chain());
            if p.external_local {
                // Traffic the node itself sends keeps cluster-wide behaviour (upstream's
                // short-circuit); everything else goes only to local endpoints, unmasqueraded,
                // so they see the real client address.
                chains.push_str("\t\tfib saddr type local jump mark-for-masquerade\n");
                let _ = writeln!(
                    chains,
                    "\t\tfib saddr type local goto {}",
                    p.cluster_chain()
                );
                let _ = writeln!(chains, "\t\tgoto {}", p.local_chain());
            } else {
                // Traffic from outside is masqueraded so replies return through this node.
                chains.push_str("\t\tjump mark-for-masquerade\n");
                let _ = writeln!(chains, "\t\tgoto {}", p.cluster_chain());
            }
            chains.push_str("\t}\n");
            if p.internal_local {
                let all: Vec<&Endpoint> = p.endpoints.iter().collect();
                let _ = writeln!(chains, "\tchain {} {{", p.cluster_chain());
                pick(&mut chains, p, &all);
                chains.push_str("\t}\n");
            }
            if p.external_local {
                let _ = writeln!(chains, "\tchain {} {{", p.local_chain());
                if external_eps.is_empty() {
                    // Upstream drops external traffic when no endpoint is local.
                    chains.push_str("\t\tdrop\n");
                } else {
                    pick(&mut chains, p, &external_eps);
                }
                chains.push_str("\t}\n");
            }
        }
    }

    let mut out = String::new();
    // Creating then deleting the table makes the first load work; the whole file is one
    // transaction, so the kernel swaps old rules for new atomically.
    let _ = writeln!(out, "add table ip {TABLE}");
    let _ = writeln!(out, "delete table ip {TABLE}");
    let _ = writeln!(out, "table ip {TABLE} {{");
    render_set(
        &mut out,
        "set node-ips",
        "ipv4_addr",
        &node_ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
    );
    let addr_key = "ipv4_addr . inet_proto . inet_service : verdict";
    let port_key = "inet_proto . inet_service : verdict";
    render_set(&mut out, "map service-ips", addr_key, &service_ips);
    render_set(
        &mut out,
        "map service-nodeports",
        port_key,
        &service_nodeports,
    );
    render_set(
        &mut out,
        "map no-endpoint-services",
        addr_key,
        &no_endpoint_services,
    );
    render_set(
        &mut out,
        "map no-endpoint-nodeports",
        port_key,
        &no_endpoint_nodeports,
    );
    out.push_str(&sets);
    out.push_str(BASE_CHAINS);
    out.push_str(&chains);
    out.push_str("}\n");
    out
}

impl PortPlan {
    /// The chain that picks among all endpoints, for external traffic under the Cluster policy:
    /// the service chain itself, unless internalTrafficPolicy Local narrowed that one.
    fn cluster_chain(&self) -> String {
        if self.internal_local {
            format!("all_{}", self.id)
        } else {
            self.svc_chain()
        }
    }
}

/// Chains that never change: hooks, reject and masquerade plumbing. Mark bit 0x4000 (the one
/// kube-proxy uses) asks `masquerading` to masquerade a connection.
const BASE_CHAINS: &str = "\tchain filter-input {
\t\ttype filter hook input priority -110; policy accept;
\t\tct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services
\t\tct state new ip daddr @node-ips meta l4proto . th dport vmap @no-endpoint-nodeports
\t}
\tchain filter-forward {
\t\ttype filter hook forward priority -110; policy accept;
\t\tct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services
\t}
\tchain filter-output {
\t\ttype filter hook output priority -110; policy accept;
\t\tct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services
\t\tct state new ip daddr @node-ips meta l4proto . th dport vmap @no-endpoint-nodeports
\t}
\tchain reject-chain {
\t\tmeta l4proto tcp reject with tcp reset
\t\treject
\t}
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tjump services
\t}
\tchain nat-output {
\t\ttype nat hook output priority -100; policy accept;
\t\tjump services
\t}
\tchain nat-postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tjump masquerading
\t}
\tchain masquerading {
\t\tmeta mark & 0x00004000 == 0 return
\t\tmeta mark set meta mark ^ 0x00004000
\t\tmasquerade fully-random
\t}
\tchain mark-for-masquerade {
\t\tmeta mark set meta mark | 0x00004000
\t}
\tchain services {
\t\tip daddr . meta l4proto . th dport vmap @service-ips
\t\tip daddr @node-ips meta l4proto . th dport vmap @service-nodeports
\t}
";

/// Writes the rules that choose one of `eps`: an existing affinity first, then at random.
fn pick(out: &mut String, p: &PortPlan, eps: &[&Endpoint]) {
    if p.affinity_timeout.is_some() {
        for ep in eps {
            let _ = writeln!(
                out,
                "\t\tip saddr @{} goto {}",
                p.aff_set(ep),
                p.ep_chain(ep)
            );
        }
    }
    if eps.len() == 1 {
        let _ = writeln!(out, "\t\tgoto {}", p.ep_chain(eps[0]));
        return;
    }
    let arms: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(i, ep)| format!("{i} : goto {}", p.ep_chain(ep)))
        .collect();
    let _ = writeln!(
        out,
        "\t\tnumgen random mod {} vmap {{ {} }}",
        eps.len(),
        arms.join(", ")
    );
}

fn render_set(out: &mut String, head: &str, ty: &str, elements: &[String]) {
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

/// An address as an nft identifier fragment.
fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn v4(ip: &IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v) => Some(*v),
        IpAddr::V6(_) => None,
    }
}

fn parse_v4(s: &str) -> Option<Ipv4Addr> {
    s.parse::<Ipv4Addr>().ok()
}

fn protocol(p: Option<&String>) -> Option<String> {
    match p.map(String::as_str).unwrap_or("TCP") {
        "TCP" => Some("tcp".into()),
        "UDP" => Some("udp".into()),
        "SCTP" => Some("sctp".into()),
        _ => None,
    }
}

/// Collects every service port the proxy handles, with its usable endpoints.
fn plan(services: &[Service], slices: &[EndpointSlice], node: &NodeInfo) -> Vec<PortPlan> {
    // (namespace, service) -> slices
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        by_service.entry((ns, svc.clone())).or_default().push(s);
    }

    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let node_ips: Vec<Ipv4Addr> = {
        let set: BTreeSet<Ipv4Addr> = node.addresses.iter().filter_map(v4).collect();
        set.into_iter().collect()
    };

    let mut plans = Vec::new();
    for svc in sorted {
        let (Some(spec), Some(name)) = (&svc.spec, &svc.metadata.name) else {
            continue;
        };
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            continue;
        }
        let mut cluster_ips: Vec<Ipv4Addr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|s| parse_v4(s))
            .collect();
        cluster_ips.sort();
        cluster_ips.dedup();
        if cluster_ips.is_empty() {
            // Headless services (clusterIP None) have nothing to proxy.
            continue;
        }
        let mut external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|s| parse_v4(s))
            .collect();
        if ty == "LoadBalancer" {
            // As k3s's service load balancer: the service port answers on every node address,
            // and on whatever ingress addresses the status advertises.
            external_ips.extend(node_ips.iter().copied());
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            external_ips.extend(
                ingress
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i.ip.as_deref().and_then(parse_v4)),
            );
        }
        external_ips.sort();
        external_ips.dedup();
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let svc_slices = by_service
            .get(&(ns.clone(), name.clone()))
            .cloned()
            .unwrap_or_default();
        for sp in spec.ports.iter().flatten() {
            let Some(proto) = protocol(sp.protocol.as_ref()) else {
                continue;
            };
            let node_port = if ty == "NodePort" || ty == "LoadBalancer" {
                sp.node_port.and_then(|p| u16::try_from(p).ok())
            } else {
                None
            };
            let port_name = sp.name.clone().unwrap_or_default();
            let label = if port_name.is_empty() {
                sp.port.to_string()
            } else {
                port_name
            };
            plans.push(PortPlan {
                id: format!("{ns}_{name}_{proto}_{label}"),
                endpoints: endpoints_for(sp, &svc_slices, &node.name),
                protocol: proto,
                cluster_ips: cluster_ips.clone(),
                external_ips: external_ips.clone(),
                port: u16::try_from(sp.port).unwrap_or(0),
                node_port,
                affinity_timeout,
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            });
        }
    }
    plans
}

/// The endpoints of one service port: ready ones, or, when none is ready, the serving and
/// terminating ones (upstream's fallback so connections drain gracefully).
fn endpoints_for(sp: &ServicePort, slices: &[&EndpointSlice], node: &str) -> Vec<Endpoint> {
    let want_name = sp.name.clone().unwrap_or_default();
    let want_proto = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.clone().unwrap_or_default() == want_name
                && p.protocol.clone().unwrap_or_else(|| "TCP".into()) == want_proto
        }) else {
            continue;
        };
        let Some(port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for ep in &slice.endpoints {
            let cond = ep.conditions.clone().unwrap_or_default();
            // A nil condition means "unknown", which consumers treat as true.
            let is_ready = cond.ready.unwrap_or(true);
            let serving = cond.serving.unwrap_or(is_ready);
            let is_terminating = cond.terminating.unwrap_or(false);
            let local = ep.node_name.as_deref() == Some(node);
            for addr in ep.addresses.iter().filter_map(|a| parse_v4(a)) {
                let e = Endpoint {
                    ip: addr,
                    port,
                    local,
                };
                if is_ready {
                    ready.insert(e);
                } else if serving && is_terminating {
                    terminating.insert(e);
                }
            }
        }
    }
    if ready.is_empty() {
        terminating.into_iter().collect()
    } else {
        ready.into_iter().collect()
    }
}

#[cfg(test)]
mod tests;
