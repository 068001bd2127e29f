//! Pod networking between nodes, as flannel's `host-gw` backend does it: every node routes each
//! other node's pod CIDR via that node's InternalIP, and pods' traffic leaving the cluster CIDR
//! is masqueraded by one nftables table of our own (`table ip skiff-nat`), so pod-to-pod traffic
//! across nodes keeps its real source address.
//!
//! Routes the agent installs carry the protocol [`ROUTE_PROTOCOL`]: listing the routes of that
//! protocol tells exactly which ones are ours, so routes of nodes that left are removed and no
//! other route of the host is ever touched.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

/// The routing protocol number (`ip route ... proto N`) marking the routes skiff owns; 115 is
/// unassigned in iproute2's `rt_protos`.
pub const ROUTE_PROTOCOL: u8 = 115;

/// The nftables table holding the pods' egress masquerade.
pub const NAT_TABLE: &str = "skiff-nat";

/// How often routes and the masquerade table are re-applied even without a Node change, so
/// that a route or table removed behind the agent's back comes back.
const RESYNC: Duration = Duration::from_secs(30);

/// How long to wait after a Node change for more changes before reconciling.
const SETTLE: Duration = Duration::from_millis(100);

/// How long to wait before retrying a failed reconcile.
const RETRY: Duration = Duration::from_secs(5);

/// An IP network in canonical form (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x::y/n` (a bare address is a host route), clearing host bits.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = s.trim().parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let addr = match addr {
            IpAddr::V4(a) => {
                if prefix > 32 {
                    return None;
                }
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                if prefix > 128 {
                    return None;
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Some(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One route to another node's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The other node's pod CIDR.
    pub destination: Cidr,
    /// The other node's InternalIP.
    pub gateway: IpAddr,
}

/// The routes this node needs: each other node's pod CIDRs via its InternalIP of the same
/// family. Nodes without a pod CIDR or InternalIP are skipped, and so is every node reached at
/// this node's own address (several agents sharing one machine route locally already).
pub fn node_routes(nodes: &[Node], self_name: &str, self_ip: IpAddr) -> Vec<Route> {
    let mut out = BTreeSet::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(self_name) {
            continue;
        }
        let internal: Vec<IpAddr> = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        let spec = node.spec.as_ref();
        let mut cidrs: Vec<&String> = spec
            .and_then(|s| s.pod_cidrs.as_ref())
            .map(|c| c.iter().collect())
            .unwrap_or_default();
        if cidrs.is_empty() {
            cidrs.extend(spec.and_then(|s| s.pod_cidr.as_ref()));
        }
        for cidr in cidrs.into_iter().filter_map(|c| Cidr::parse(c)) {
            let Some(gateway) = internal
                .iter()
                .find(|ip| ip.is_ipv4() == cidr.addr.is_ipv4())
            else {
                continue;
            };
            if *gateway == self_ip {
                continue;
            }
            out.insert(Route {
                destination: cidr,
                gateway: *gateway,
            });
        }
    }
    out.into_iter().collect()
}

/// Parses `ip route show` output into routes; lines without a gateway (`via`) are skipped.
pub fn parse_routes(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            // Route types (`unicast`, `blackhole`, ...) may precede the destination.
            let dst = if first.parse::<IpAddr>().is_ok() || first.contains('/') {
                first
            } else {
                words.next()?
            };
            let destination = Cidr::parse(dst)?;
            let rest: Vec<&str> = line.split_whitespace().collect();
            let via = rest.iter().position(|w| *w == "via")?;
            let mut gw = *rest.get(via + 1)?;
            // `via inet6 fe80::1` names the family first.
            if gw == "inet" || gw == "inet6" {
                gw = rest.get(via + 2)?;
            }
            Some(Route {
                destination,
                gateway: gw.parse().ok()?,
            })
        })
        .collect()
}

/// The `table ip skiff-nat` ruleset: traffic from the cluster CIDR to anything outside it
/// (multicast aside) is masqueraded, as flannel's `ipMasq` rules do; traffic between pods keeps
/// its source. One `nft -f` transaction replaces the previous table.
pub fn render_masquerade(cluster_cidr: &str) -> Result<String> {
    let cidr = Cidr::parse(cluster_cidr)
        .with_context(|| format!("invalid cluster CIDR {cluster_cidr:?}"))?;
    if !cidr.addr.is_ipv4() {
        bail!("cluster CIDR {cluster_cidr} is not IPv4");
    }
    let mut out = String::new();
    let _ = writeln!(out, "add table ip {NAT_TABLE}");
    let _ = writeln!(out, "delete table ip {NAT_TABLE}");
    let _ = writeln!(out, "table ip {NAT_TABLE} {{");
    out.push_str("\tchain postrouting {\n");
    out.push_str("\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
    let _ = writeln!(
        out,
        "\t\tip saddr {cidr} ip daddr != {cidr} ip daddr != 224.0.0.0/4 masquerade fully-random"
    );
    out.push_str("\t}\n}\n");
    Ok(out)
}

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// This node's name.
    pub node_name: String,
    /// This node's InternalIP.
    pub node_ip: IpAddr,
    /// The cluster's pod network, e.g. `10.42.0.0/16`.
    pub cluster_cidr: String,
    /// The `ip` program and any leading arguments (e.g. `ip netns exec NS ip` in tests).
    pub ip_command: Vec<String>,
    /// The `nft` program and any leading arguments.
    pub nft_command: Vec<String>,
}

/// Keeps the host's routes to other nodes' pods and the egress masquerade table in line with
/// the cluster's Nodes until `shutdown` completes. Both are left in place on shutdown, so pods
/// keep their network across an agent restart.
pub async fn run(
    client: kube::Client,
    config: NetConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let masquerade = render_masquerade(&config.cluster_cidr)?;
    let (store, writer) = reflector::store();
    let mut changes = reflector::reflector(
        writer,
        watcher(Api::<Node>::all(client), watcher::Config::default())
            .default_backoff()
            .map_ok(|ev| ev.modify(skiff_proxy::strip_node)),
    )
    .map(|ev| {
        if let Err(e) = ev {
            tracing::warn!(error = %e, "node watch error");
        }
    })
    .boxed();
    tokio::pin!(shutdown);
    let mut dirty = true;
    let mut next_resync = tokio::time::Instant::now() + RESYNC;
    loop {
        if dirty && is_ready(&store) {
            match sync(&config, &store, &masquerade).await {
                Ok(()) => {
                    dirty = false;
                    next_resync = tokio::time::Instant::now() + RESYNC;
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "pod network sync failed"),
            }
        }
        let wake = if dirty {
            tokio::time::Instant::now() + RETRY
        } else {
            next_resync
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep_until(wake) => dirty = true,
            ev = changes.next() => {
                if ev.is_none() {
                    bail!("node watch ended");
                }
                dirty = true;
                let settle = tokio::time::sleep(SETTLE);
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        _ = &mut settle => break,
                        more = changes.next() => if more.is_none() { bail!("node watch ended") },
                    }
                }
            }
        }
    }
}

fn is_ready(store: &Store<Node>) -> bool {
    use futures::FutureExt;
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

async fn sync(config: &NetConfig, store: &Store<Node>, masquerade: &str) -> Result<()> {
    let nodes: Vec<Node> = store.state().iter().map(|n| (**n).clone()).collect();
    let want = node_routes(&nodes, &config.node_name, config.node_ip);
    // The masquerade table does not depend on the routes: apply it even when a route fails.
    let routes = sync_routes(&config.ip_command, &want).await;
    skiff_proxy::apply(&config.nft_command, masquerade)
        .await
        .context("applying the masquerade table")?;
    routes
}

/// Makes the routes of [`ROUTE_PROTOCOL`] exactly `want`: missing or changed ones are
/// replaced, ones no longer wanted are deleted. One failing route (say, a gateway that is not
/// on-link) does not hold up the others; the first error is returned after all were tried.
pub async fn sync_routes(ip_command: &[String], want: &[Route]) -> Result<()> {
    let proto = ROUTE_PROTOCOL.to_string();
    let mut have = parse_routes(&ip(ip_command, &["-4", "route", "show", "proto", &proto]).await?);
    // Hosts without IPv6 fail this listing; they have no IPv6 routes of ours either.
    if let Ok(v6) = ip(ip_command, &["-6", "route", "show", "proto", &proto]).await {
        have.extend(parse_routes(&v6));
    }
    let mut first_error = None;
    for r in want {
        if have.contains(r) {
            continue;
        }
        let (dst, gw) = (r.destination.to_string(), r.gateway.to_string());
        let args = ["route", "replace", &dst, "via", &gw, "proto", &proto];
        match ip(ip_command, &args).await {
            Ok(_) => tracing::info!(destination = %dst, gateway = %gw, "pod route added"),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for r in &have {
        if want.iter().any(|w| w.destination == r.destination) {
            continue;
        }
        let dst = r.destination.to_string();
        match ip(ip_command, &["route", "del", &dst, "proto", &proto]).await {
            Ok(_) => tracing::info!(destination = %dst, "pod route removed"),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Starts the agent's network tasks for `ctx`: routes and masquerade ([`run`]) and, when
/// `kube_proxy` is set, the service proxy for this node's name and InternalIP. The caller aborts
/// them at shutdown; what they installed stays in place.
pub fn start(ctx: &crate::Context) -> Vec<tokio::task::JoinHandle<()>> {
    let config = &ctx.config;
    let net = NetConfig {
        node_name: config.node_name.clone(),
        node_ip: ctx.node_ip,
        cluster_cidr: config.cluster_cidr.clone(),
        ip_command: config.ip_command.clone(),
        nft_command: config.nft_command.clone(),
    };
    let client = ctx.client.clone();
    let mut tasks = vec![tokio::spawn(async move {
        if let Err(e) = run(client, net, std::future::pending()).await {
            tracing::error!(error = %format!("{e:#}"), "pod network failed");
        }
    })];
    if config.kube_proxy || config.network_policy {
        // Same-bridge traffic must pass the IP hooks for DNAT replies and policies to apply
        // (k3s sets the same), and routed pod traffic needs forwarding.
        enable_kernel_forwarding();
    }
    if config.network_policy {
        let mut policy = skiff_proxy::ProxyConfig::new(config.node_name.clone());
        policy.node_addresses = vec![ctx.node_ip];
        policy.nft_command = config.nft_command.clone();
        let client = ctx.client.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = skiff_proxy::run_policy(client, policy, std::future::pending()).await {
                tracing::error!(error = %format!("{e:#}"), "network policy controller failed");
            }
        }));
    }
    if let Some((http, https)) = config.ingress {
        let mut ingress = skiff_ingress::IngressConfig::new(config.node_name.clone());
        ingress.http_listen = http;
        ingress.https_listen = Some(https);
        ingress.node_ip = Some(ctx.node_ip);
        let client = ctx.client.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = skiff_ingress::run(client, ingress, std::future::pending()).await {
                tracing::error!(error = %format!("{e:#}"), "ingress controller failed");
            }
        }));
    }
    if config.kube_proxy {
        let mut proxy = skiff_proxy::ProxyConfig::new(config.node_name.clone());
        proxy.node_addresses = vec![ctx.node_ip];
        proxy.nft_command = config.nft_command.clone();
        let client = ctx.client.clone();
        tasks.push(tokio::spawn(async move {
            tracing::info!(node = %proxy.node_name, "service proxy starting");
            if let Err(e) = skiff_proxy::run(client, proxy, std::future::pending()).await {
                tracing::error!(error = %format!("{e:#}"), "service proxy failed");
            }
        }));
    }
    tasks
}

/// Turns on IPv4 forwarding and `br_netfilter` with `bridge-nf-call-iptables`; failures are
/// logged, since a node may have them set up already or forbid changing them.
fn enable_kernel_forwarding() {
    let modprobe = std::process::Command::new("modprobe")
        .arg("br_netfilter")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !matches!(modprobe, Ok(s) if s.success()) {
        tracing::debug!("modprobe br_netfilter failed; relying on the module being loaded");
    }
    for (path, value) in [
        ("/proc/sys/net/ipv4/ip_forward", "1"),
        ("/proc/sys/net/bridge/bridge-nf-call-iptables", "1"),
        ("/proc/sys/net/bridge/bridge-nf-call-ip6tables", "1"),
    ] {
        let current = std::fs::read_to_string(path).unwrap_or_default();
        if current.trim() == value {
            continue;
        }
        if let Err(e) = std::fs::write(path, value) {
            tracing::warn!(path, error = %e, "cannot set kernel parameter");
        }
    }
}

/// Runs `<ip_command> args` and returns its standard output.
async fn ip(ip_command: &[String], args: &[&str]) -> Result<String> {
    let (program, pre) = ip_command.split_first().context("empty ip command")?;
    let out = tokio::process::Command::new(program)
        .args(pre)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidrs: &[&str], ips: &[&str]) -> Node {
        let addresses: Vec<_> = ips
            .iter()
            .map(|ip| json!({"type": "InternalIP", "address": ip}))
            .chain([json!({"type": "Hostname", "address": name})])
            .collect();
        let mut spec = json!({});
        if let Some(first) = cidrs.first() {
            spec = json!({"podCIDR": first, "podCIDRs": cidrs});
        }
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": spec,
            "status": {"addresses": addresses},
        }))
        .unwrap()
    }

    fn route(dst: &str, gw: &str) -> Route {
        Route {
            destination: Cidr::parse(dst).unwrap(),
            gateway: gw.parse().unwrap(),
        }
    }

    #[test]
    fn routes_to_every_other_node_with_cidr_and_address() {
        let nodes = vec![
            node("a", &["10.42.0.0/24"], &["192.0.2.1"]),
            node(
                "b",
                &["10.42.1.0/24", "fd00:42:1::/64"],
                &["192.0.2.2", "2001:db8::2"],
            ),
            node("c", &[], &["192.0.2.3"]),
            node("d", &["10.42.3.0/24"], &[]),
            // Same machine as "a": already reachable through its own bridge.
            node("e", &["10.42.4.0/24"], &["192.0.2.1"]),
            // Host bits in the CIDR are cleared.
            node("f", &["10.42.5.7/24"], &["192.0.2.6"]),
        ];
        assert_eq!(
            node_routes(&nodes, "a", "192.0.2.1".parse().unwrap()),
            vec![
                route("10.42.1.0/24", "192.0.2.2"),
                route("10.42.5.0/24", "192.0.2.6"),
                route("fd00:42:1::/64", "2001:db8::2"),
            ]
        );
        // Seen from b: a, e and f; not itself.
        let from_b = node_routes(&nodes, "b", "192.0.2.2".parse().unwrap());
        assert_eq!(
            from_b,
            vec![
                route("10.42.0.0/24", "192.0.2.1"),
                route("10.42.4.0/24", "192.0.2.1"),
                route("10.42.5.0/24", "192.0.2.6"),
            ]
        );
    }

    #[test]
    fn single_pod_cidr_field_is_used_without_pod_cidrs() {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "x"},
            "spec": {"podCIDR": "10.42.9.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.9"}]},
        }))
        .unwrap();
        assert_eq!(
            node_routes(&[n], "self", "192.0.2.1".parse().unwrap()),
            vec![route("10.42.9.0/24", "192.0.2.9")]
        );
    }

    #[test]
    fn parses_ip_route_output() {
        let text = "10.42.1.0/24 via 192.0.2.2 dev eth0 proto 115 \n\
                    10.42.7.5 via 192.0.2.7 dev eth0 proto 115 onlink \n\
                    unicast 10.42.2.0/24 via 192.0.2.3 dev eth0 proto 115\n\
                    10.42.3.0/24 dev skiff0 proto 115 scope link\n\
                    fd00:42:1::/64 via inet6 2001:db8::2 dev eth0 proto 115 metric 1024 pref medium\n";
        assert_eq!(
            parse_routes(text),
            vec![
                route("10.42.1.0/24", "192.0.2.2"),
                route("10.42.7.5/32", "192.0.2.7"),
                route("10.42.2.0/24", "192.0.2.3"),
                route("fd00:42:1::/64", "2001:db8::2"),
            ]
        );
    }

    #[test]
    fn masquerades_only_traffic_leaving_the_cluster_cidr() {
        let text = render_masquerade("10.42.0.0/16").unwrap();
        assert!(text.starts_with("add table ip skiff-nat\ndelete table ip skiff-nat\n"));
        assert!(text.contains("type nat hook postrouting priority srcnat; policy accept;"));
        assert!(text.contains(
            "ip saddr 10.42.0.0/16 ip daddr != 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade"
        ));
        // Host bits are cleared; nft would reject them otherwise.
        assert!(render_masquerade("10.42.3.4/16")
            .unwrap()
            .contains("ip saddr 10.42.0.0/16 "));
        assert!(render_masquerade("fd00::/48").is_err());
        assert!(render_masquerade("nonsense").is_err());
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            Cidr::parse("10.42.1.9/24").unwrap().to_string(),
            "10.42.1.0/24"
        );
        assert_eq!(Cidr::parse("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(Cidr::parse("fd00::1/64").unwrap().to_string(), "fd00::/64");
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("x/8").is_none());
    }
}
