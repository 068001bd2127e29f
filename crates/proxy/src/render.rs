//! Rendering Services and EndpointSlices into one nftables ruleset (a pure function).
//!
//! The layout follows kube-proxy's nftables mode: verdict maps keyed by
//! `address . protocol . port` send new connections to one chain per service port, which picks
//! an endpoint at random (`numgen random`) or by client-IP affinity, and one chain per endpoint
//! DNATs to it. Services without usable endpoints are rejected in filter chains that run before
//! NAT, so clients fail at once instead of timing out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::ruleset::{AffinitySet, Chain, Ruleset, Set};

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
    ruleset(services, slices, node).to_table()
}

/// Plans the `table ip skiff` for `node` in structured form: what [`render`] prints, and what
/// [`diff`](crate::diff) compares to update the kernel's table incrementally.
pub fn ruleset(services: &[Service], slices: &[EndpointSlice], node: &NodeInfo) -> Ruleset {
    let plans = plan(services, slices, node);
    let node_ips: BTreeSet<Ipv4Addr> = node.addresses.iter().filter_map(v4).collect();

    let mut service_ips: Vec<String> = Vec::new();
    let mut service_nodeports: Vec<String> = Vec::new();
    let mut no_endpoint_services: Vec<String> = Vec::new();
    let mut no_endpoint_nodeports: Vec<String> = Vec::new();
    let mut chains: Vec<Chain> = Vec::new();
    let mut affinity: Vec<AffinitySet> = Vec::new();
    let mut chain = |name: String, rules: Vec<String>| chains.push(Chain { name, rules });

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
                affinity.push(AffinitySet {
                    name: p.aff_set(ep),
                    timeout,
                });
            }
            // Hairpin: an endpoint reaching itself through the service must see the reply come
            // back through the node, so its source is masqueraded.
            let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", ep.ip)];
            if p.affinity_timeout.is_some() {
                rules.push(format!("update @{} {{ ip saddr }}", p.aff_set(ep)));
            }
            rules.push(format!(
                "meta l4proto {} dnat to {}:{}",
                p.protocol, ep.ip, ep.port
            ));
            chain(p.ep_chain(ep), rules);
        }

        if !internal.is_empty() {
            chain(p.svc_chain(), pick(p, &internal));
        }

        if p.is_external() {
            let rules = if p.external_local {
                // Traffic the node itself sends keeps cluster-wide behaviour (upstream's
                // short-circuit); everything else goes only to local endpoints, unmasqueraded,
                // so they see the real client address.
                vec![
                    "fib saddr type local jump mark-for-masquerade".to_string(),
                    format!("fib saddr type local goto {}", p.cluster_chain()),
                    format!("goto {}", p.local_chain()),
                ]
            } else {
                // Traffic from outside is masqueraded so replies return through this node.
                vec![
                    "jump mark-for-masquerade".to_string(),
                    format!("goto {}", p.cluster_chain()),
                ]
            };
            chain(p.ext_chain(), rules);
            if p.internal_local {
                let all: Vec<&Endpoint> = p.endpoints.iter().collect();
                chain(p.cluster_chain(), pick(p, &all));
            }
            if p.external_local {
                let rules = if external_eps.is_empty() {
                    // Upstream drops external traffic when no endpoint is local.
                    vec!["drop".to_string()]
                } else {
                    pick(p, &external_eps)
                };
                chain(p.local_chain(), rules);
            }
        }
    }

    let addr_key = "ipv4_addr . inet_proto . inet_service : verdict";
    let port_key = "inet_proto . inet_service : verdict";
    let set = |kind: &'static str, name: &'static str, ty: &'static str, elements| Set {
        kind,
        name,
        ty,
        elements,
    };
    Ruleset {
        sets: vec![
            set(
                "set",
                "node-ips",
                "ipv4_addr",
                node_ips.iter().map(|ip| ip.to_string()).collect(),
            ),
            set("map", "service-ips", addr_key, service_ips),
            set("map", "service-nodeports", port_key, service_nodeports),
            set(
                "map",
                "no-endpoint-services",
                addr_key,
                no_endpoint_services,
            ),
            set(
                "map",
                "no-endpoint-nodeports",
                port_key,
                no_endpoint_nodeports,
            ),
        ],
        affinity,
        chains,
    }
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

/// The rules that choose one of `eps`: an existing affinity first, then at random.
fn pick(p: &PortPlan, eps: &[&Endpoint]) -> Vec<String> {
    let mut rules = Vec::new();
    if p.affinity_timeout.is_some() {
        for ep in eps {
            rules.push(format!(
                "ip saddr @{} goto {}",
                p.aff_set(ep),
                p.ep_chain(ep)
            ));
        }
    }
    if eps.len() == 1 {
        rules.push(format!("goto {}", p.ep_chain(eps[0])));
        return rules;
    }
    let arms: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(i, ep)| format!("{i} : goto {}", p.ep_chain(ep)))
        .collect();
    rules.push(format!(
        "numgen random mod {} vmap {{ {} }}",
        eps.len(),
        arms.join(", ")
    ));
    rules
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
