//! The node lifecycle controller with node IPAM:
//! - gives each node a pod CIDR out of the cluster CIDR ([`ipam`]);
//! - watches node Leases in `kube-node-lease`: a node not heard from for the grace period
//!   gets every condition `Unknown`; its pods are marked not Ready;
//! - keeps the condition taints (`not-ready`/`unreachable` NoExecute, NoSchedule ones);
//! - evicts pods that do not tolerate a node's NoExecute taints, at once or after their
//!   `tolerationSeconds`, adding the `DisruptionTarget` condition first ([`logic`]).

pub mod ipam;
pub mod logic;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use self::ipam::CidrAllocator;
use self::logic::{
    desired_taints, disruption_condition, eviction, not_ready_conditions, ready_status,
    unknown_conditions, Eviction, HealthTracker,
};
use crate::runtime::{key_of, run_workers, ApiError, Cache, Change, Context, Control, WorkQueue};

/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Gives `node` a pod CIDR when it has none. Returns whether it wrote.
pub async fn sync_cidr(
    control: &dyn Control,
    alloc: &Mutex<CidrAllocator>,
    node: &Node,
) -> Result<bool, ApiError> {
    let spec = node.spec.clone().unwrap_or_default();
    if spec.pod_cidr.as_deref().is_some_and(|c| !c.is_empty())
        || spec.pod_cidrs.as_ref().is_some_and(|c| !c.is_empty())
    {
        // A range the node claimed itself (or got from an earlier allocator) is taken: as
        // upstream's range allocator, never hand it to another node.
        let mut a = alloc.lock().unwrap();
        for c in spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.iter()) {
            let _ = a.occupy(c);
        }
        return Ok(false);
    }
    let cidr = alloc
        .lock()
        .unwrap()
        .allocate()
        .map_err(|e| ApiError::Other(e.to_string()))?;
    let name = node.metadata.name.clone().unwrap_or_default();
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    match control.patch_obj::<Node>("", &name, patch).await {
        Ok(_) => Ok(true),
        Err(e) => {
            // Hand the block back so a retry can take it.
            let _ = alloc.lock().unwrap().release(&cidr);
            Err(e)
        }
    }
}

/// Settings of one monitor pass.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Silence after which a node is Unknown.
    pub grace: Duration,
}

/// One pass over every node (upstream's `monitorNodeHealth` plus the tainting and the taint
/// manager): marks silent nodes Unknown, fixes taints, marks pods of unready nodes not
/// Ready, and deletes pods whose eviction time has come. `now` is the monotonic clock (for
/// heartbeat ages) and the wall clock (for written times). Returns the earliest future
/// eviction, if any.
pub async fn monitor(
    control: &dyn Control,
    nodes: &[Arc<Node>],
    leases: &Cache<Lease>,
    pods: &[Arc<Pod>],
    tracker: &mut HealthTracker,
    cfg: &MonitorConfig,
    (now, now_ts): (Instant, Timestamp),
) -> Result<Option<Timestamp>, ApiError> {
    let mut by_node: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for p in pods {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let mut next: Option<Timestamp> = None;
    let mut first_err: Option<ApiError> = None;
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let lease = leases.get(LEASE_NAMESPACE, &name);
        tracker.observe(node, lease.as_deref(), now);
        let mut node = (**node).clone();
        if tracker.stale(&name, cfg.grace, now) {
            if let Some(conds) = unknown_conditions(&node, now_ts) {
                node.status.get_or_insert_with(Default::default).conditions = Some(conds);
                match control.update_status_obj(&node).await {
                    Ok(n) => node = n,
                    Err(e) => {
                        first_err.get_or_insert(e);
                        continue;
                    }
                }
            }
        }
        if let Some(taints) = desired_taints(&node, now_ts) {
            let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
                               "spec": {"taints": taints}});
            match control.patch_obj::<Node>("", &name, patch).await {
                Ok(n) => node = n,
                Err(e) => {
                    first_err.get_or_insert(e);
                    continue;
                }
            }
        }
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let ready = ready_status(&node) == "True";
        for pod in by_node.get(name.as_str()).into_iter().flatten() {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let r = match eviction(pod, &taints, now_ts) {
                Eviction::Now => evict(control, pod, now_ts).await,
                Eviction::At(t) => {
                    next = Some(next.map_or(t, |n| n.min(t)));
                    Ok(())
                }
                Eviction::Never => Ok(()),
            };
            let r = match r {
                Ok(()) if !ready => mark_not_ready(control, pod, now_ts).await,
                r => r,
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(next),
    }
}

async fn mark_not_ready(control: &dyn Control, pod: &Pod, now: Timestamp) -> Result<(), ApiError> {
    let Some(conds) = not_ready_conditions(pod, now) else {
        return Ok(());
    };
    let mut p = pod.clone();
    p.status.get_or_insert_with(Default::default).conditions = Some(conds);
    match control.update_status_obj(&p).await {
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        r => r.map(drop),
    }
}

/// Adds the `DisruptionTarget` condition, then deletes the pod (upstream's taint manager).
async fn evict(control: &dyn Control, pod: &Pod, now: Timestamp) -> Result<(), ApiError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut p = pod.clone();
    let st = p.status.get_or_insert_with(Default::default);
    let conds = st.conditions.get_or_insert_with(Vec::new);
    if !conds
        .iter()
        .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
    {
        conds.retain(|c| c.type_ != "DisruptionTarget");
        conds.push(disruption_condition(now));
        match control.update_status_obj(&p).await {
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if !e.is_conflict() => return Err(e),
            _ => {}
        }
    }
    control
        .event_for(
            pod,
            "Normal",
            "TaintManagerEviction",
            format!("Marking for deletion Pod {ns}/{name}"),
        )
        .await;
    match control
        .delete_obj::<Pod>(&ns, &name, pod.metadata.uid.as_deref())
        .await
    {
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        r => r,
    }
}

/// Runs the node lifecycle controller (IPAM, health, taints, eviction) until dropped.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let nodes = ctx.informers.cache::<Node>();
    let leases = ctx.informers.cache::<Lease>();
    let pods = ctx.informers.cache::<Pod>();
    let alloc = Arc::new(Mutex::new(CidrAllocator::new(
        &ctx.config.cluster_cidr,
        ctx.config.node_cidr_mask_size,
    )?));
    let queue = WorkQueue::default();
    let (q, a) = (queue.clone(), alloc.clone());
    nodes.add_handler(move |c| match c {
        Change::Deleted(n) => {
            for cidr in n.spec.iter().flat_map(|s| s.pod_cidrs.iter().flatten()) {
                let _ = a.lock().unwrap().release(cidr);
            }
        }
        _ => q.add(key_of(c.object().as_ref())),
    });
    ctx.informers.wait_for_sync().await;
    // Rebuild the allocator from the nodes before handing out anything.
    for n in nodes.list_all() {
        let spec = n.spec.clone().unwrap_or_default();
        let cidrs = spec.pod_cidrs.unwrap_or_default();
        for c in cidrs.iter().chain(spec.pod_cidr.iter()) {
            if let Err(e) = alloc.lock().unwrap().occupy(c) {
                tracing::warn!(node = %key_of(n.as_ref()), error = %e, "ignoring pod CIDR");
            }
        }
    }
    for n in nodes.list_all() {
        queue.add(key_of(n.as_ref()));
    }
    let control = ctx.control.clone();
    let (nc, ac) = (nodes.clone(), alloc.clone());
    let ipam = run_workers("nodeipam", queue, 1, move |key| {
        let (control, nodes, alloc) = (control.clone(), nc.clone(), ac.clone());
        async move {
            if let Some(n) = nodes.get("", &key) {
                sync_cidr(control.as_ref(), &alloc, &n).await?;
            }
            Ok(None)
        }
    });
    let cfg = MonitorConfig {
        grace: ctx.config.node_monitor_grace_period,
    };
    // Upstream checks every 5 s against a 40 s grace; keep that ratio for short graces.
    let period = (cfg.grace / 8).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let control = ctx.control.clone();
    let health = async move {
        let mut tracker = HealthTracker::default();
        loop {
            let node_list = nodes.list_all();
            tracker.retain(|name| {
                node_list
                    .iter()
                    .any(|n| n.metadata.name.as_deref() == Some(name))
            });
            if let Err(e) = monitor(
                control.as_ref(),
                &node_list,
                &leases,
                &pods.list_all(),
                &mut tracker,
                &cfg,
                (Instant::now(), Timestamp::now()),
            )
            .await
            {
                tracing::info!(error = %e, "node monitor pass failed");
            }
            tokio::time::sleep(period).await;
        }
    };
    tokio::join!(ipam, health);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{RecordingControl, SharedInformers, Verb};
    use k8s_openapi::jiff::SignedDuration;
    use serde_json::json;

    fn node() -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1", "resourceVersion": "1"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2025-01-01T00:00:00Z"}]}}))
        .unwrap()
    }

    fn pod(name: &str, tolerations: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": "d", "uid": name,
            "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [], "tolerations": tolerations},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            )
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn silent_node_goes_unknown_tainted_and_pods_are_evicted_by_toleration() {
        let inf = SharedInformers::new(None);
        let leases = inf.cache::<Lease>();
        let rc = RecordingControl::new();
        let mut tracker = HealthTracker::default();
        let cfg = MonitorConfig {
            grace: Duration::from_secs(40),
        };
        let t0 = Instant::now();
        let now = Timestamp::now();
        let nodes = vec![Arc::new(node())];
        let pods = vec![
            pod("plain", json!([])),
            pod(
                "patient",
                json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                   "effect": "NoExecute", "tolerationSeconds": 300}]),
            ),
        ];
        // Within the grace: nothing.
        monitor(&rc, &nodes, &leases, &pods, &mut tracker, &cfg, (t0, now))
            .await
            .unwrap();
        assert!(rc.actions().is_empty());
        // Past it: Unknown, then the taints (the fake echoes the patch, so taints come back).
        let later = t0 + Duration::from_secs(41);
        monitor(
            &rc,
            &nodes,
            &leases,
            &pods,
            &mut tracker,
            &cfg,
            (later, now),
        )
        .await
        .unwrap();
        let st = &rc.of(Verb::UpdateStatus, "Node")[0];
        let conds = st.object.as_ref().unwrap()["status"]["conditions"]
            .as_array()
            .unwrap()
            .clone();
        assert!(conds.iter().all(|c| c["status"] == "Unknown"));
        assert_eq!(conds[0]["reason"], "NodeStatusUnknown");
        assert_eq!(conds[0]["message"], "Kubelet stopped posting node status.");
        let patches = rc.of(Verb::Patch, "Node");
        let taints = &patches[0].object.as_ref().unwrap()["spec"]["taints"];
        assert!(taints
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"));
        // The untolerating pod is evicted at once (DisruptionTarget first); the other waits.
        let deleted: Vec<String> = rc
            .of(Verb::Delete, "Pod")
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(deleted, vec!["plain".to_string()]);
        assert!(rc
            .of(Verb::UpdateStatus, "Pod")
            .iter()
            .any(|a| a.name == "plain"
                && a.object.as_ref().unwrap()["status"]["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["type"] == "DisruptionTarget")));
    }

    #[test]
    fn eviction_counts_toleration_seconds_from_the_taint() {
        let now = Timestamp::now();
        let taint = Taint {
            key: logic::TAINT_UNREACHABLE.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                now - SignedDuration::from_secs(10),
            )),
        };
        let p = pod(
            "p",
            json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                 "effect": "NoExecute", "tolerationSeconds": 30}]),
        );
        assert_eq!(
            eviction(&p, std::slice::from_ref(&taint), now),
            Eviction::At(now + SignedDuration::from_secs(20))
        );
        let forever = pod("f", json!([{"operator": "Exists"}]));
        assert_eq!(
            eviction(&forever, std::slice::from_ref(&taint), now),
            Eviction::Never
        );
        assert_eq!(eviction(&pod("x", json!([])), &[taint], now), Eviction::Now);
    }

    #[tokio::test]
    async fn cidr_is_assigned_once() {
        let rc = RecordingControl::new();
        let alloc = Mutex::new(CidrAllocator::new("10.42.0.0/16", 24).unwrap());
        alloc.lock().unwrap().occupy("10.42.0.0/24").unwrap();
        assert!(sync_cidr(&rc, &alloc, &node()).await.unwrap());
        let patch = &rc.of(Verb::Patch, "Node")[0];
        assert_eq!(
            patch.object.as_ref().unwrap()["spec"]["podCIDRs"],
            json!(["10.42.1.0/24"])
        );
        let mut with = node();
        with.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            pod_cidr: Some("10.42.1.0/24".into()),
            ..Default::default()
        });
        assert!(!sync_cidr(&rc, &alloc, &with).await.unwrap());
        // The range a node claimed itself is never handed out again.
        let used = alloc.lock().unwrap().used();
        let mut claimed = node();
        claimed.spec.get_or_insert_with(Default::default).pod_cidr = Some("10.42.7.0/24".into());
        assert!(!sync_cidr(&rc, &alloc, &claimed).await.unwrap());
        assert_eq!(alloc.lock().unwrap().used(), used + 1);
        assert!(!alloc.lock().unwrap().occupy("10.42.7.0/24").unwrap());
    }

    use k8s_openapi::api::core::v1::Taint;
}
