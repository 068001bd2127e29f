//! Which pods a policy's selectors and peers pick, and the addresses its peers cover.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::addr::{cidr_range, ip_range, AddrSet, Ranges};

/// The label the API server puts on every Namespace, holding its name; assumed when a
/// Namespace object is not (yet) known so `namespaceSelector`s on it still work.
pub(super) const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub(super) type Labels = BTreeMap<String, String>;

/// Which addresses a rule admits: everything (no peers listed) or a set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Peers {
    Any,
    Only(AddrSet),
}

/// The nft keyword for a NetworkPolicyPort protocol (TCP when unset).
pub(super) fn protocol(p: Option<&String>) -> Option<&'static str> {
    match p.map(String::as_str).unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

/// A pod as the renderer sees it.
pub(super) struct PodView<'a> {
    pub(super) namespace: &'a str,
    pub(super) name: &'a str,
    pub(super) labels: &'a Labels,
    pub(super) ips: Vec<IpAddr>,
    pub(super) pod: &'a Pod,
}

impl PodView<'_> {
    /// The number of container port `name` with `proto` (an nft keyword) on this pod.
    pub(super) fn named_port(&self, name: &str, proto: &str) -> Option<u16> {
        let spec = self.pod.spec.as_ref()?;
        spec.containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name) && protocol(p.protocol.as_ref()) == Some(proto)
            })
            .and_then(|p| u16::try_from(p.container_port).ok())
    }
}

/// Pods that take part in policy: with an address, not on the host network (their address is
/// the node's) and not finished (their address may already belong to another pod).
pub(super) fn pod_views(pods: &[Pod]) -> Vec<PodView<'_>> {
    static EMPTY: Labels = BTreeMap::new();
    let mut views: Vec<PodView> = pods
        .iter()
        .filter_map(|pod| {
            let spec = pod.spec.as_ref()?;
            if spec.host_network == Some(true) {
                return None;
            }
            let status = pod.status.as_ref()?;
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                return None;
            }
            let mut ips: Vec<IpAddr> = status
                .pod_ips
                .iter()
                .flatten()
                .filter_map(|p| p.ip.parse().ok())
                .collect();
            if ips.is_empty() {
                ips.extend(
                    status
                        .pod_ip
                        .as_deref()
                        .and_then(|ip| ip.parse::<IpAddr>().ok()),
                );
            }
            if ips.is_empty() {
                return None;
            }
            Some(PodView {
                namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
                name: pod.metadata.name.as_deref().unwrap_or(""),
                labels: pod.metadata.labels.as_ref().unwrap_or(&EMPTY),
                ips,
                pod,
            })
        })
        .collect();
    views.sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));
    views
}

/// Whether `selector` matches `labels`; an empty selector matches everything and an unknown
/// operator nothing, as upstream's `LabelSelectorAsSelector` does.
pub(super) fn selects(selector: &LabelSelector, labels: &Labels) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let have = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => have.is_none_or(|v| !values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// Everything about the cluster one render needs.
pub(super) struct Cluster<'a> {
    pub(super) pods: Vec<PodView<'a>>,
    /// Labels of every namespace known or holding a pod.
    namespace_labels: BTreeMap<&'a str, Labels>,
}

impl<'a> Cluster<'a> {
    pub(super) fn new(pods: &'a [Pod], namespaces: &'a [Namespace]) -> Cluster<'a> {
        let pods = pod_views(pods);
        let mut namespace_labels: BTreeMap<&str, Labels> = namespaces
            .iter()
            .filter_map(|ns| {
                Some((
                    ns.metadata.name.as_deref()?,
                    ns.metadata.labels.clone().unwrap_or_default(),
                ))
            })
            .collect();
        for p in &pods {
            namespace_labels.entry(p.namespace).or_default();
        }
        for (name, labels) in namespace_labels.iter_mut() {
            labels
                .entry(NAMESPACE_NAME_LABEL.to_string())
                .or_insert_with(|| name.to_string());
        }
        Cluster {
            pods,
            namespace_labels,
        }
    }

    /// The pods one peer selects, for a policy in namespace `policy_ns`.
    pub(super) fn peer_pods(&self, peer: &NetworkPolicyPeer, policy_ns: &str) -> Vec<&PodView<'_>> {
        match (&peer.namespace_selector, &peer.pod_selector) {
            (None, None) => Vec::new(),
            (None, Some(ps)) => self
                .pods
                .iter()
                .filter(|p| p.namespace == policy_ns && selects(ps, p.labels))
                .collect(),
            (Some(ns_sel), ps) => self
                .pods
                .iter()
                .filter(|p| {
                    self.namespace_labels
                        .get(p.namespace)
                        .is_some_and(|labels| selects(ns_sel, labels))
                })
                .filter(|p| ps.as_ref().is_none_or(|ps| selects(ps, p.labels)))
                .collect(),
        }
    }

    /// The addresses a rule's peer list admits; no list (or an empty one) admits everything.
    pub(super) fn peers(&self, peers: Option<&Vec<NetworkPolicyPeer>>, policy_ns: &str) -> Peers {
        let Some(peers) = peers.filter(|p| !p.is_empty()) else {
            return Peers::Any;
        };
        let mut ranges = Vec::new();
        for peer in peers {
            if let Some(block) = &peer.ip_block {
                let Some((family, lo, hi)) = cidr_range(&block.cidr) else {
                    continue;
                };
                let mut block_ranges = Ranges::default();
                block_ranges.add(lo, hi);
                for except in block.except.iter().flatten() {
                    if let Some((f, lo, hi)) = cidr_range(except) {
                        if f == family {
                            block_ranges.subtract(lo, hi);
                        }
                    }
                }
                ranges.extend(block_ranges.0.into_iter().map(|(lo, hi)| (family, lo, hi)));
                continue;
            }
            for pod in self.peer_pods(peer, policy_ns) {
                ranges.extend(pod.ips.iter().map(ip_range));
            }
        }
        Peers::Only(AddrSet::from_ranges(ranges))
    }
}
