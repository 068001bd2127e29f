//! Registration, lease renewal and node status: what a kubelet's node status and lease
//! controllers do, for every simulated node from one loop.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::{json, Value};

use crate::ipam::Cidr;
use crate::objects::{self, LEASE_NAMESPACE, STOPPED_LABEL};
use crate::{NodeSlot, Shared};

/// Renewals are spread over this many slots per interval so the API server sees a steady
/// stream rather than one burst of every node.
const SLOTS: u64 = 10;

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Creates (or takes over) every node and its lease.
pub async fn register_all(shared: &Arc<Shared>) -> Result<()> {
    futures::stream::iter(shared.nodes.iter())
        .map(|n| register_with_retry(shared, n))
        .buffer_unordered(shared.cfg.concurrency.max(1))
        .try_collect::<()>()
        .await
}

async fn register_with_retry(shared: &Shared, n: &NodeSlot) -> Result<()> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        match register(shared, n).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 => {
                tracing::debug!(node = %n.name, error = %e, "registration failed, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e).with_context(|| format!("registering node {}", n.name)),
        }
    }
}

/// As the kubelet's `registerWithAPIServer`: create the node; if it exists, keep it and post
/// this node's status onto it.
async fn register(shared: &Shared, n: &NodeSlot) -> Result<()> {
    let cfg = &shared.cfg;
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let now = Utc::now();
    let own_cidr = cfg
        .assign_pod_cidr
        .then(|| objects::default_pod_cidr(n.index));
    let body = objects::node(cfg, n.index, own_cidr, now)?;
    let typed: Node = serde_json::from_value(body.clone())?;
    let (uid, fresh) = match nodes.create(&PostParams::default(), &typed).await {
        Ok(created) => {
            if let Some(c) = own_cidr {
                n.set_cidr(c);
            }
            (created.metadata.uid, true)
        }
        Err(e) if is_status(&e, 409) => {
            let existing = nodes.get(&n.name).await?;
            let mut cidr = existing
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_deref())
                .and_then(Cidr::parse);
            if cidr.is_none() {
                if let Some(c) = own_cidr {
                    let p =
                        json!({"spec": {"podCIDR": c.to_string(), "podCIDRs": [c.to_string()]}});
                    nodes
                        .patch(&n.name, &PatchParams::default(), &Patch::Merge(&p))
                        .await?;
                    cidr = Some(c);
                }
            }
            if let Some(c) = cidr {
                n.set_cidr(c);
            }
            let old_conditions = existing
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .map(serde_json::to_value)
                .transpose()?;
            let mut status = body["status"].clone();
            status["conditions"] = objects::conditions(now, old_conditions.as_ref());
            nodes
                .patch_status(
                    &n.name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "status": status })),
                )
                .await?;
            (existing.metadata.uid, false)
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(uid) = uid {
        let _ = n.uid.set(uid.into_boxed_str());
    }
    if fresh {
        // A new node's lease is new too, unless a former node of that name left one.
        match create_lease(shared, n).await {
            Err(e) if is_status(&e, 409) => renew_lease(shared, n).await?,
            r => r?,
        }
    } else {
        renew_lease(shared, n).await?;
    }
    Ok(())
}

async fn create_lease(shared: &Shared, n: &NodeSlot) -> Result<(), kube::Error> {
    let cfg = &shared.cfg;
    let leases: Api<Lease> = Api::namespaced(shared.client.clone(), LEASE_NAMESPACE);
    let body = objects::lease(
        &n.name,
        n.uid.get().map(|u| &**u),
        cfg.lease_duration_seconds,
        Utc::now(),
    );
    let lease: Lease = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
    leases
        .create(&PostParams::default(), &lease)
        .await
        .map(|_| ())
}

/// Renews `n`'s lease with one merge patch, creating the lease when it is missing (as the
/// kubelet's lease controller's `ensureLease`).
async fn renew_lease(shared: &Shared, n: &NodeSlot) -> Result<(), kube::Error> {
    let cfg = &shared.cfg;
    let leases: Api<Lease> = Api::namespaced(shared.client.clone(), LEASE_NAMESPACE);
    let now = Utc::now();
    let patch = objects::renew_patch(&n.name, cfg.lease_duration_seconds, now);
    match leases
        .patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => match create_lease(shared, n).await {
            Err(e) if !is_status(&e, 409) => Err(e),
            _ => Ok(()),
        },
        Err(e) => Err(e),
    }
}

/// Posts `n`'s status: fresh heartbeat times, and the pod CIDR read back when one was
/// assigned to the node.
async fn post_status(shared: &Shared, n: &NodeSlot) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let node = match nodes.get(&n.name).await {
        Ok(node) => node,
        // A kubelet does not re-register a node deleted under it; neither do we.
        Err(e) if is_status(&e, 404) => return Ok(()),
        Err(e) => return Err(e),
    };
    if let Some(c) = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .and_then(Cidr::parse)
    {
        // A CIDR assigned since registration lets the pods waiting for one start.
        let first = n.cidr().is_none();
        n.set_cidr(c);
        if first {
            let _ = shared.resync.send(n.index);
        }
    }
    if let Some(uid) = node.metadata.uid {
        let _ = n.uid.set(uid.into_boxed_str());
    }
    let old: Option<Value> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| serde_json::to_value(c).ok());
    let patch = json!({"status": {"conditions": objects::conditions(Utc::now(), old.as_ref())}});
    nodes
        .patch_status(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The heartbeat loop: each tick handles one slot of nodes (those with `index % SLOTS ==
/// tick % SLOTS`), renewing their leases, and every `node_status_interval` their status too.
pub async fn run(shared: Arc<Shared>) {
    let cfg = &shared.cfg;
    let tick = (cfg.lease_renew_interval / SLOTS as u32).max(Duration::from_millis(1));
    let status_every =
        (cfg.node_status_interval.as_nanos() / cfg.lease_renew_interval.as_nanos()).max(1) as u64;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Registration just renewed every lease and posted every status.
    interval.tick().await;
    let mut t: u64 = 0;
    loop {
        interval.tick().await;
        t += 1;
        let slot = t % SLOTS;
        let round = t / SLOTS;
        let with_status = round > 0 && round.is_multiple_of(status_every);
        futures::stream::iter(
            shared
                .nodes
                .iter()
                .skip(slot as usize)
                .step_by(SLOTS as usize),
        )
        .filter(|n| futures::future::ready(!n.is_stopped()))
        .for_each_concurrent(cfg.concurrency.max(1), |n| {
            let shared = &shared;
            async move {
                if let Err(e) = renew_lease(shared, n).await {
                    tracing::warn!(node = %n.name, error = %e, "renewing lease");
                }
                if with_status {
                    if let Err(e) = post_status(shared, n).await {
                        tracing::warn!(node = %n.name, error = %e, "posting node status");
                    }
                }
            }
        })
        .await;
    }
}

/// A node came back: post its status and lease at once and let the pod loop catch up.
pub fn resumed(shared: &Arc<Shared>, index: usize) {
    let s = shared.clone();
    tokio::spawn(async move {
        let n = &s.nodes[index];
        if let Err(e) = post_status(&s, n).await {
            tracing::warn!(node = %n.name, error = %e, "posting node status");
        }
        if let Err(e) = renew_lease(&s, n).await {
            tracing::warn!(node = %n.name, error = %e, "renewing lease");
        }
    });
    let _ = shared.resync.send(index);
}

/// Follows the [`STOPPED_LABEL`] label with one watch of the labelled nodes only; a node that
/// leaves the selection (label removed or changed, node deleted) is resumed.
pub async fn watch_stop_labels(shared: Arc<Shared>, ready: tokio::sync::oneshot::Sender<()>) {
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().labels(&format!("{STOPPED_LABEL}=true"));
    let mut stream = std::pin::pin!(watcher(nodes, cfg).default_backoff());
    let mut ready = Some(ready);
    let mut listed: HashSet<usize> = HashSet::new();
    let set = |i: usize, on: bool| {
        let was = shared.nodes[i].label_stopped.swap(on, Ordering::Relaxed);
        if was && !on && !shared.nodes[i].stopped.load(Ordering::Relaxed) {
            resumed(&shared, i);
        }
    };
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(error = %e, "watching node stop labels");
                continue;
            }
        };
        let index = |n: &Node| {
            n.metadata
                .name
                .as_deref()
                .and_then(|name| shared.by_name.get(name).copied())
        };
        match ev {
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitApply(n) => {
                if let Some(i) = index(&n) {
                    listed.insert(i);
                    set(i, true);
                }
            }
            watcher::Event::InitDone => {
                for i in 0..shared.nodes.len() {
                    if !listed.contains(&i) {
                        set(i, false);
                    }
                }
                listed.clear();
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            watcher::Event::Apply(n) => {
                if let Some(i) = index(&n) {
                    set(i, true);
                }
            }
            watcher::Event::Delete(n) => {
                if let Some(i) = index(&n) {
                    set(i, false);
                }
            }
        }
    }
}
