//! Pod garbage collection (upstream's PodGC), every [`GC_PERIOD`]:
//! - terminated pods (Succeeded/Failed) beyond the threshold, oldest first;
//! - pods bound to nodes that no longer exist, once the node has been missing for a
//!   quarantine and a live GET confirms it (marked Failed with `DisruptionTarget` first);
//! - terminating pods never bound to a node.
//!
//! All are force-deleted (grace period 0): no kubelet will ever confirm their end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::endpoints::pod_terminal;
use crate::gc::live::{KubeLive, Live};
use crate::namespace::api_resource;
use crate::runtime::{ApiError, Cache, Context, Control};

/// How often upstream's PodGC runs.
pub const GC_PERIOD: Duration = Duration::from_secs(20);
/// How long a node must be missing from the cache before its pods are collected.
pub const QUARANTINE: Duration = Duration::from_secs(40);

/// PodGC's memory between passes: when each missing node was first noticed.
#[derive(Debug, Default)]
pub struct PodGc {
    missing_since: HashMap<String, Instant>,
}

/// The settings of a pass.
#[derive(Debug, Clone)]
pub struct PodGcConfig {
    /// Terminated pods kept (0 disables that part, as upstream).
    pub threshold: usize,
    /// See [`QUARANTINE`].
    pub quarantine: Duration,
}

fn pod_res() -> kube::core::ApiResource {
    api_resource(skiff_api::registry::find_kind("v1", "Pod").expect("pods are served"))
}

fn node_res() -> kube::core::ApiResource {
    api_resource(skiff_api::registry::find_kind("v1", "Node").expect("nodes are served"))
}

async fn force_delete(live: &dyn Live, pod: &Pod) -> Result<(), ApiError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    match live
        .force_delete(&pod_res(), &ns, &name, pod.metadata.uid.as_deref())
        .await
    {
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        r => r,
    }
}

impl PodGc {
    /// A collector with no node in quarantine.
    pub fn new() -> PodGc {
        PodGc::default()
    }

    /// One pass over the cached pods and nodes.
    pub async fn gc(
        &mut self,
        control: &dyn Control,
        live: &dyn Live,
        pods: &[Arc<Pod>],
        nodes: &Cache<Node>,
        cfg: &PodGcConfig,
        now: Instant,
    ) -> Result<(), ApiError> {
        let mut result = Ok(());
        // Terminated pods past the threshold, oldest first.
        let mut terminated: Vec<&Pod> = pods
            .iter()
            .map(Arc::as_ref)
            .filter(|p| pod_terminal(p))
            .collect();
        if cfg.threshold > 0 && terminated.len() > cfg.threshold {
            terminated.sort_by(|a, b| {
                let ct = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                ct(a)
                    .cmp(&ct(b))
                    .then_with(|| a.metadata.name.cmp(&b.metadata.name))
            });
            let n = terminated.len() - cfg.threshold;
            for p in &terminated[..n] {
                if let Err(e) = force_delete(live, p).await {
                    result = Err(e);
                }
            }
        }
        // Pods of nodes that are gone.
        let mut on_missing: HashMap<String, Vec<&Pod>> = HashMap::new();
        for p in pods {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("");
            if !node.is_empty() && nodes.get("", node).is_none() {
                on_missing.entry(node.to_string()).or_default().push(p);
            }
        }
        self.missing_since.retain(|n, _| on_missing.contains_key(n));
        for (node, pods) in on_missing {
            let since = *self.missing_since.entry(node.clone()).or_insert(now);
            if now.saturating_duration_since(since) < cfg.quarantine {
                continue;
            }
            match live.get(&node_res(), "", &node).await {
                Ok(None) => {}
                Ok(Some(_)) => continue,
                Err(e) => {
                    result = Err(e);
                    continue;
                }
            }
            for p in pods {
                if let Err(e) = self.delete_orphaned(control, live, p).await {
                    result = Err(e);
                }
            }
        }
        // Terminating pods that never reached a node.
        for p in pods {
            let unbound = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_none_or(str::is_empty);
            if unbound && p.metadata.deletion_timestamp.is_some() {
                if let Err(e) = force_delete(live, p).await {
                    result = Err(e);
                }
            }
        }
        result
    }

    async fn delete_orphaned(
        &self,
        control: &dyn Control,
        live: &dyn Live,
        pod: &Pod,
    ) -> Result<(), ApiError> {
        if !pod_terminal(pod) {
            let mut p = pod.clone();
            let st = p.status.get_or_insert_with(Default::default);
            st.phase = Some("Failed".into());
            let conds = st.conditions.get_or_insert_with(Vec::new);
            conds.retain(|c| c.type_ != "DisruptionTarget");
            conds.push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("DeletionByPodGC".into()),
                message: Some("PodGC: node no longer exists".into()),
                last_transition_time: Some(Time(Timestamp::now())),
                last_probe_time: None,
            });
            match control.update_status_obj(&p).await {
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) if !e.is_conflict() => return Err(e),
                _ => {}
            }
        }
        force_delete(live, pod).await
    }
}

/// Runs pod GC every [`GC_PERIOD`] until dropped.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let pods = ctx.informers.cache::<Pod>();
    let nodes = ctx.informers.cache::<Node>();
    ctx.informers.wait_for_sync().await;
    let live = KubeLive::new(ctx.client.clone());
    let cfg = PodGcConfig {
        threshold: ctx.config.terminated_pod_gc_threshold,
        quarantine: QUARANTINE,
    };
    let mut state = PodGc::new();
    loop {
        let all = pods.list_all();
        if let Err(e) = state
            .gc(
                ctx.control.as_ref(),
                &live,
                &all,
                &nodes,
                &cfg,
                Instant::now(),
            )
            .await
        {
            tracing::info!(error = %e, "pod gc pass failed");
        }
        tokio::time::sleep(GC_PERIOD).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::live::FakeLive;
    use crate::runtime::{RecordingControl, SharedInformers, Verb};
    use serde_json::json;

    fn pod(name: &str, node: &str, phase: &str, created: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d",
                "creationTimestamp": created}, "spec": {"nodeName": node, "containers": []},
                "status": {"phase": phase}}))
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn terminated_over_threshold_and_pods_of_gone_nodes() {
        let inf = SharedInformers::new(None);
        let nodes = inf.cache::<Node>();
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        nodes.apply(n);
        let pods = vec![
            pod("new", "n1", "Succeeded", "2025-01-03T00:00:00Z"),
            pod("old", "n1", "Failed", "2025-01-01T00:00:00Z"),
            pod("mid", "n1", "Succeeded", "2025-01-02T00:00:00Z"),
            pod("lost", "gone", "Running", "2025-01-01T00:00:00Z"),
        ];
        let (rc, live) = (RecordingControl::new(), FakeLive::new());
        let cfg = PodGcConfig {
            threshold: 2,
            quarantine: Duration::from_secs(40),
        };
        let mut gc = PodGc::new();
        let t0 = Instant::now();
        gc.gc(&rc, &live, &pods, &nodes, &cfg, t0).await.unwrap();
        let names = |live: &FakeLive| -> Vec<String> {
            live.calls_of("forcedelete")
                .into_iter()
                .map(|c| c.3)
                .collect()
        };
        // The oldest terminated pod only; the lost pod is still in quarantine.
        assert_eq!(names(&live), vec!["old".to_string()]);
        gc.gc(
            &rc,
            &live,
            &pods,
            &nodes,
            &cfg,
            t0 + Duration::from_secs(41),
        )
        .await
        .unwrap();
        assert!(names(&live).contains(&"lost".to_string()));
        let st = &rc.of(Verb::UpdateStatus, "Pod")[0];
        let status = &st.object.as_ref().unwrap()["status"];
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["conditions"][0]["reason"], "DeletionByPodGC");
    }
}
