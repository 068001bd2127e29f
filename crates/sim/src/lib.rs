//! Simulated nodes, as kwok gives upstream: one process registers thousands of Node objects,
//! keeps their Leases and status fresh as kubelets do, and "runs" the pods bound to them by
//! writing the status a kubelet would (Running, Ready, a pod IP from the node's CIDR). No
//! container ever starts; nothing ever connects to a simulated node's addresses.
//!
//! # Layout
//! - [`objects`]: the Node, Lease and pod status a kubelet writes, as pure functions.
//! - [`ipam`]: pod IPs from a node's pod CIDR (a 32-byte bitmap per node).
//! - `heartbeat`: registration, and one loop that renews every node's Lease (every
//!   [`SimConfig::lease_renew_interval`], spread over ten slots) and posts node status (every
//!   [`SimConfig::node_status_interval`]) with bounded concurrency.
//! - `pods`: one watch of every bound pod (`spec.nodeName!=`, filtered locally by node name),
//!   driving pods on our nodes to Running and deleting them when they are deleted.
//!
//! # Stopping a node
//! A stopped node behaves like a dead kubelet: its Lease and status are no longer renewed, its
//! pods are neither started nor finally deleted (they stay Terminating). Stop one with
//! [`Sim::stop_node`] in-process, or, from outside the process (for `skiff sim`), label the
//! Node `skiff.dev/sim-stopped=true`; removing the label (or [`Sim::resume_node`]) brings it
//! back, and the node then posts its status at once and catches up with its pods.
//!
//! # Deleting pods
//! A real kubelet kills a deleted pod's containers within its grace period and then deletes
//! the pod with grace period 0 and the pod's uid as precondition. Simulated containers stop at
//! once, so the simulator waits `min(deletionGracePeriodSeconds, `
//! [`SimConfig::max_delete_delay`]`)` (one second by default: long enough to observe a
//! Terminating pod, short enough for benchmarks) and then deletes the same way.
//!
//! # Memory
//! Per node the simulator keeps its name, flags, its CIDR, an IP bitmap and a map of the pods
//! it runs; there is no task, watch or cached object per node. All nodes share one client.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Taint;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

mod heartbeat;
pub mod ipam;
pub mod objects;
mod pods;

use ipam::Cidr;
pub use objects::{KUBELET_VERSION, RUNTIME_VERSION, STOPPED_LABEL};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How many nodes.
    pub nodes: usize,
    /// Node `i` is named `<name_prefix><i>`.
    pub name_prefix: String,
    /// CPU capacity (a quantity, e.g. `4` or `3500m`).
    pub cpu: String,
    /// Memory capacity (a quantity, e.g. `16Gi`).
    pub memory: String,
    /// Pod capacity.
    pub pods: u32,
    /// Ephemeral storage capacity (a quantity).
    pub ephemeral_storage: String,
    /// Extra node labels.
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    pub taints: Vec<Taint>,
    /// The Lease's `leaseDurationSeconds` (the kubelet's default: 40).
    pub lease_duration_seconds: i32,
    /// How often each Lease is renewed (the kubelet's default: 10 s).
    pub lease_renew_interval: Duration,
    /// How often each node posts its status (heartbeat times in its conditions).
    pub node_status_interval: Duration,
    /// The longest wait between a pod's graceful deletion and its final deletion.
    pub max_delete_delay: Duration,
    /// Requests in flight at most, per kind of work (registration, renewals, pod updates).
    pub concurrency: usize,
    /// Give each new node a pod CIDR ([`objects::default_pod_cidr`]) when it has none. When
    /// false, nodes wait for one to be assigned (by a controller) and read it back with their
    /// next status post; their pods start then.
    pub assign_pod_cidr: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1,
            name_prefix: "sim-".into(),
            cpu: "4".into(),
            memory: "16Gi".into(),
            pods: 110,
            ephemeral_storage: "100Gi".into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            lease_duration_seconds: 40,
            lease_renew_interval: Duration::from_secs(10),
            node_status_interval: Duration::from_secs(60),
            max_delete_delay: Duration::from_secs(1),
            concurrency: 64,
            assign_pod_cidr: true,
        }
    }
}

/// Parses `k=v,k2=v2` (empty: no labels).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("invalid label {part:?}: want key=value");
        };
        if k.is_empty() {
            bail!("invalid label {part:?}: empty key");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Parses taints as kubectl writes them: `key=value:Effect` or `key:Effect`, comma-separated.
pub fn parse_taints(s: &str) -> Result<Vec<Taint>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((kv, effect)) = part.rsplit_once(':') else {
            bail!("invalid taint {part:?}: want key=value:Effect");
        };
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            bail!(
                "invalid taint effect {effect:?}: want NoSchedule, PreferNoSchedule or NoExecute"
            );
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv, None),
        };
        if key.is_empty() {
            bail!("invalid taint {part:?}: empty key");
        }
        out.push(Taint {
            key: key.to_string(),
            value,
            effect: effect.to_string(),
            time_added: None,
        });
    }
    Ok(out)
}

/// One simulated node's state: a few dozen bytes.
pub(crate) struct NodeSlot {
    pub name: Box<str>,
    pub index: usize,
    /// Stopped through [`Sim::stop_node`].
    pub stopped: AtomicBool,
    /// Stopped through the [`STOPPED_LABEL`] label.
    pub label_stopped: AtomicBool,
    /// The pod CIDR: `1 << 40 | base << 8 | prefix`, 0 while unknown.
    cidr: AtomicU64,
    pub uid: OnceLock<Box<str>>,
}

impl NodeSlot {
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed) || self.label_stopped.load(Ordering::Relaxed)
    }

    pub fn cidr(&self) -> Option<Cidr> {
        let v = self.cidr.load(Ordering::Relaxed);
        (v >> 40 == 1).then(|| Cidr {
            base: Ipv4Addr::from((v >> 8) as u32),
            prefix: v as u8,
        })
    }

    pub fn set_cidr(&self, c: Cidr) {
        let v = (1u64 << 40) | (u64::from(u32::from(c.base)) << 8) | u64::from(c.prefix);
        self.cidr.store(v, Ordering::Relaxed);
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        objects::internal_ip(self.index)
    }
}

/// What every loop shares.
pub(crate) struct Shared {
    pub client: kube::Client,
    pub cfg: SimConfig,
    pub nodes: Vec<NodeSlot>,
    pub by_name: HashMap<Box<str>, usize>,
    /// Nodes that came back from being stopped: the pod loop catches up with their pods.
    pub resync: mpsc::UnboundedSender<usize>,
}

impl Shared {
    pub fn node(&self, name: &str) -> Option<&NodeSlot> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }
}

/// A running simulation. Dropping it stops every loop (the nodes stay registered and go
/// NotReady once their leases expire, as with kubelets that died).
pub struct Sim {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl Sim {
    /// Registers the nodes (creating them, or taking over existing ones of the same names),
    /// creates their leases, and starts the heartbeat and pod loops.
    pub async fn start(client: kube::Client, config: SimConfig) -> Result<Sim> {
        if config.lease_renew_interval.is_zero() || config.node_status_interval.is_zero() {
            bail!("lease renew and node status intervals must be positive");
        }
        let (resync_tx, resync_rx) = mpsc::unbounded_channel();
        let nodes: Vec<NodeSlot> = (0..config.nodes)
            .map(|i| NodeSlot {
                name: objects::node_name(&config.name_prefix, i).into_boxed_str(),
                index: i,
                stopped: AtomicBool::new(false),
                label_stopped: AtomicBool::new(false),
                cidr: AtomicU64::new(0),
                uid: OnceLock::new(),
            })
            .collect();
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let shared = Arc::new(Shared {
            client,
            cfg: config,
            nodes,
            by_name,
            resync: resync_tx,
        });
        let mut tasks = JoinSet::new();
        // The stop labels are known before the first renewal, so a node stopped before a
        // restart of the simulator never renews again.
        let (labels_ready_tx, labels_ready_rx) = tokio::sync::oneshot::channel();
        tasks.spawn(heartbeat::watch_stop_labels(
            shared.clone(),
            labels_ready_tx,
        ));
        heartbeat::register_all(&shared)
            .await
            .context("registering nodes")?;
        let _ = labels_ready_rx.await;
        tasks.spawn(heartbeat::run(shared.clone()));
        let (pods_ready_tx, pods_ready_rx) = tokio::sync::oneshot::channel();
        tasks.spawn(pods::run(shared.clone(), resync_rx, pods_ready_tx));
        let _ = pods_ready_rx.await;
        Ok(Sim { shared, tasks })
    }

    /// The names of the simulated nodes.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.shared.nodes.iter().map(|n| &*n.name)
    }

    /// Makes `name` behave like a node whose kubelet died: no more lease renewals, status
    /// updates or pod updates. False if `name` is not a simulated node.
    pub fn stop_node(&self, name: &str) -> bool {
        match self.shared.node(name) {
            Some(n) => {
                n.stopped.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Undoes [`Sim::stop_node`]: the node posts its status and renews its lease at once, and
    /// catches up with its pods. False if `name` is not a simulated node.
    pub fn resume_node(&self, name: &str) -> bool {
        match self.shared.by_name.get(name) {
            Some(&i) => {
                if self.shared.nodes[i].stopped.swap(false, Ordering::Relaxed) {
                    heartbeat::resumed(&self.shared, i);
                }
                true
            }
            None => false,
        }
    }

    /// Stops every loop.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Runs `config`'s nodes until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    config: SimConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let n = config.nodes;
    let started = std::time::Instant::now();
    let sim = Sim::start(client, config).await?;
    tracing::info!(nodes = n, elapsed = ?started.elapsed(), "simulated nodes registered");
    shutdown.await;
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_taints_parse() {
        let l = parse_labels("zone=a, disk=ssd,").unwrap();
        assert_eq!(l.get("zone").map(String::as_str), Some("a"));
        assert_eq!(l.len(), 2);
        assert!(parse_labels("nokey").is_err());
        assert!(parse_labels("").unwrap().is_empty());
        let t = parse_taints("dedicated=gpu:NoSchedule,spot:PreferNoSchedule").unwrap();
        assert_eq!(t[0].key, "dedicated");
        assert_eq!(t[0].value.as_deref(), Some("gpu"));
        assert_eq!(t[1].key, "spot");
        assert_eq!(t[1].value, None);
        assert_eq!(t[1].effect, "PreferNoSchedule");
        assert!(parse_taints("a=b:Sometimes").is_err());
        assert!(parse_taints("a=b").is_err());
    }

    #[test]
    fn slot_cidr_roundtrip() {
        let n = NodeSlot {
            name: "x".into(),
            index: 0,
            stopped: AtomicBool::new(false),
            label_stopped: AtomicBool::new(false),
            cidr: AtomicU64::new(0),
            uid: OnceLock::new(),
        };
        assert_eq!(n.cidr(), None);
        let c = Cidr::parse("10.44.7.0/24").unwrap();
        n.set_cidr(c);
        assert_eq!(n.cidr(), Some(c));
        let z = Cidr::parse("0.0.0.0/0").unwrap();
        n.set_cidr(z);
        assert_eq!(n.cidr(), Some(z));
    }
}
