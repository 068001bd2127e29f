//! The service proxy: watches Services, EndpointSlices and Nodes, plans one nftables table
//! (`table ip skiff`) with [`ruleset`] and keeps the kernel's copy in step with `nft -f -`: the
//! whole table ([`render`]) at start, after an error and hourly, otherwise only the difference
//! ([`diff`]), as kube-proxy's nftables mode does, so a change costs in proportion to its size.
//! It also plays k3s's service load balancer: `LoadBalancer` Services get the nodes' addresses
//! as `status.loadBalancer.ingress`.
//!
//! [`run_policy`] enforces NetworkPolicies for this node's pods in a second table
//! (`table inet skiff-policy`, rendered by [`render_policy`]), as k3s's policy controller does.

mod policy;
mod render;
mod ruleset;
mod sync;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::io::AsyncWriteExt;

pub use policy::{render_policy, POLICY_TABLE};
pub use render::{render, ruleset, NodeInfo, TABLE};
pub use ruleset::{diff, AffinitySet, Chain, Ruleset, Set};

/// How long the proxy waits after a change for more changes before re-rendering; small enough
/// that rules follow a change within a second.
const SETTLE: Duration = Duration::from_millis(50);

/// How long the proxy waits before retrying a failed `nft` run or status write.
const RETRY: Duration = Duration::from_secs(1);

/// Settings of [`run`].
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// This node's name: selects local endpoints and this Node's addresses.
    pub node_name: String,
    /// Addresses NodePorts answer on; when empty, the Node's InternalIP and ExternalIP.
    pub node_addresses: Vec<IpAddr>,
    /// The `nft` program and any leading arguments (e.g. `ip netns exec NS nft` in tests).
    pub nft_command: Vec<String>,
    /// Whether to write `status.loadBalancer.ingress` of `LoadBalancer` Services.
    pub write_load_balancer_status: bool,
}

impl ProxyConfig {
    /// The defaults for `node_name`: the host's `nft`, addresses from the Node, status writing on.
    pub fn new(node_name: impl Into<String>) -> Self {
        ProxyConfig {
            node_name: node_name.into(),
            node_addresses: Vec::new(),
            nft_command: vec!["nft".into()],
            write_load_balancer_status: true,
        }
    }
}

/// Runs the proxy until `shutdown` completes. The table is left in place on shutdown so that
/// Services keep working across a restart.
pub async fn run(
    client: kube::Client,
    config: ProxyConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let (services, svc_stream) = reflect(Api::<Service>::all(client.clone()), strip_meta);
    let (slices, slice_stream) = reflect(Api::<EndpointSlice>::all(client.clone()), strip_meta);
    let (nodes, node_stream) = reflect(Api::<Node>::all(client.clone()), strip_node);
    let mut changes = futures::stream::select_all([svc_stream, slice_stream, node_stream]);
    tokio::pin!(shutdown);

    let mut applied = sync::Applied::default();
    let mut dirty = true;
    loop {
        if dirty && ready(&services) && ready(&slices) && ready(&nodes) {
            match sync(&client, &config, &services, &slices, &nodes, &mut applied).await {
                Ok(()) => dirty = false,
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "proxy sync failed"),
            }
        }
        let retry = async {
            if dirty {
                tokio::time::sleep(RETRY).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = retry => {}
            ev = changes.next() => {
                if ev.is_none() {
                    bail!("watch streams ended");
                }
                dirty = true;
                // Coalesce a burst of events into one render.
                let settle = tokio::time::sleep(SETTLE);
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        _ = &mut settle => break,
                        more = changes.next() => if more.is_none() { bail!("watch streams ended") },
                    }
                }
            }
        }
    }
}

/// Enforces NetworkPolicies for the pods on `config.node_name` until `shutdown` completes:
/// watches NetworkPolicies, Pods, Namespaces and Nodes, and reloads `table inet skiff-policy`
/// with `config.nft_command` whenever the rendered text changes. The node's own addresses
/// (`config.node_addresses`, else the Node's) may always reach its pods. The table stays in
/// place on shutdown so that policies keep holding across a restart. Pods on one bridge are
/// only filtered when bridged traffic passes the IP hooks (`br_netfilter` with
/// `net.bridge.bridge-nf-call-iptables=1`), as with kube-router.
pub async fn run_policy(
    client: kube::Client,
    config: ProxyConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let (policies, policy_stream) = reflect(Api::<NetworkPolicy>::all(client.clone()), strip_meta);
    let (pods, pod_stream) = reflect(Api::<Pod>::all(client.clone()), policy_view);
    let (namespaces, ns_stream) = reflect(Api::<Namespace>::all(client.clone()), strip_meta);
    let (nodes, node_stream) = reflect(Api::<Node>::all(client.clone()), strip_node);
    let mut changes =
        futures::stream::select_all([policy_stream, pod_stream, ns_stream, node_stream]);
    tokio::pin!(shutdown);

    let mut applied: Option<String> = None;
    let mut dirty = true;
    loop {
        if dirty && ready(&policies) && ready(&pods) && ready(&namespaces) && ready(&nodes) {
            let node_ips = if config.node_addresses.is_empty() {
                nodes
                    .state()
                    .iter()
                    .find(|n| n.metadata.name.as_deref() == Some(config.node_name.as_str()))
                    .map(|n| node_addresses(n))
                    .unwrap_or_default()
            } else {
                config.node_addresses.clone()
            };
            let policies: Vec<NetworkPolicy> =
                policies.state().iter().map(|p| (**p).clone()).collect();
            let pods: Vec<Pod> = pods.state().iter().map(|p| (**p).clone()).collect();
            let namespaces: Vec<Namespace> =
                namespaces.state().iter().map(|n| (**n).clone()).collect();
            let text = render_policy(&policies, &pods, &namespaces, &config.node_name, &node_ips);
            match policy::apply_if_changed(&config.nft_command, text, &mut applied).await {
                Ok(_) => dirty = false,
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "network policy sync failed"),
            }
        }
        let retry = async {
            if dirty {
                tokio::time::sleep(RETRY).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = retry => {}
            ev = changes.next() => {
                if ev.is_none() {
                    bail!("watch streams ended");
                }
                dirty = true;
                // Coalesce a burst of events (a rollout touches many pods) into one render.
                let settle = tokio::time::sleep(SETTLE);
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        _ = &mut settle => break,
                        more = changes.next() => if more.is_none() { bail!("watch streams ended") },
                    }
                }
            }
        }
    }
}

/// Whether a reflector has finished its initial list, so a render sees the whole cluster.
fn ready<K: kube::Resource<DynamicType = ()> + Clone + 'static>(store: &Store<K>) -> bool {
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

type Changes = std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>;

/// Drops what no consumer here reads and every object carries (managed fields, the last
/// applied configuration), so that the caches hold a fraction of each object.
pub fn strip_meta<K: kube::Resource>(o: &mut K) {
    let m = o.meta_mut();
    m.managed_fields = None;
    if let Some(a) = m.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A Node without managed fields and its image list.
pub fn strip_node(n: &mut Node) {
    strip_meta(n);
    if let Some(s) = n.status.as_mut() {
        s.images = None;
    }
}

/// Only what NetworkPolicy selection reads of a Pod: identity and labels, node, host network,
/// container ports (named ports) and addresses.
pub fn policy_view(p: &mut Pod) {
    let meta = std::mem::take(&mut p.metadata);
    p.metadata = kube::api::ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        labels: meta.labels,
        ..Default::default()
    };
    if let Some(spec) = p.spec.take() {
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: spec.node_name,
            host_network: spec.host_network,
            containers: spec
                .containers
                .into_iter()
                .map(|c| k8s_openapi::api::core::v1::Container {
                    name: c.name,
                    ports: c.ports,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
    }
    if let Some(status) = p.status.take() {
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips,
            ..Default::default()
        });
    }
}

fn reflect<K>(api: Api<K>, strip: fn(&mut K)) -> (Store<K>, Changes)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .map_ok(move |ev| ev.modify(strip));
    let stream = reflector::reflector(writer, events)
        .map(|ev| {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "proxy watch error");
            }
        })
        .boxed();
    (reader, stream)
}

async fn sync(
    client: &kube::Client,
    config: &ProxyConfig,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    nodes: &Store<Node>,
    applied: &mut sync::Applied,
) -> Result<()> {
    let nodes: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
    let services: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
    let slices: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();

    let addresses = if config.node_addresses.is_empty() {
        nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(config.node_name.as_str()))
            .map(node_addresses)
            .unwrap_or_default()
    } else {
        config.node_addresses.clone()
    };
    let node = NodeInfo {
        name: config.node_name.clone(),
        addresses,
    };
    let next = ruleset(&services, &slices, &node);
    applied.sync(&config.nft_command, next).await?;
    if config.write_load_balancer_status {
        write_lb_status(client, &services, &nodes).await?;
    }
    Ok(())
}

/// The addresses a Node advertises for NodePorts: its InternalIP and ExternalIP entries.
fn node_addresses(node: &Node) -> Vec<IpAddr> {
    node.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// The ingress addresses of every LoadBalancer Service, as k3s's service load balancer sets them:
/// each node's ExternalIP, or its InternalIP when it has none; sorted for a stable status.
pub fn load_balancer_ingress(nodes: &[Node]) -> Vec<String> {
    let mut ips: Vec<String> = Vec::new();
    for n in nodes {
        let addrs: Vec<_> = n
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .collect();
        let external: Vec<_> = addrs.iter().filter(|a| a.type_ == "ExternalIP").collect();
        let chosen = if external.is_empty() {
            addrs
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .collect::<Vec<_>>()
        } else {
            external
        };
        ips.extend(chosen.iter().map(|a| a.address.clone()));
    }
    ips.sort_by_key(|ip| ip.parse::<IpAddr>().ok());
    ips.dedup();
    ips
}

async fn write_lb_status(
    client: &kube::Client,
    services: &[Service],
    nodes: &[Node],
) -> Result<()> {
    let want = load_balancer_ingress(nodes);
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        // Services with a loadBalancerClass belong to another implementation.
        if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
            continue;
        }
        let have: Vec<String> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|i| i.iter().filter_map(|i| i.ip.clone()).collect())
            .unwrap_or_default();
        if have == want {
            continue;
        }
        let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
            continue;
        };
        let ingress: Vec<serde_json::Value> = want
            .iter()
            .map(|ip| serde_json::json!({ "ip": ip, "ipMode": "VIP" }))
            .collect();
        let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": ingress } } });
        Api::<Service>::namespaced(client.clone(), ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("writing load balancer status of {ns}/{name}"))?;
    }
    Ok(())
}

/// Loads `ruleset` with `<nft_command> -f -`; the file is one transaction, so a failure leaves
/// the previous rules in place.
pub async fn apply(nft_command: &[String], ruleset: &str) -> Result<()> {
    let (program, args) = nft_command.split_first().context("empty nft command")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {program}"))?;
    let mut stdin = child.stdin.take().context("nft stdin")?;
    stdin.write_all(ruleset.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
