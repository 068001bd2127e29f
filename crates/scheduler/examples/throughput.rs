//! Measures the scheduling core alone: `schedule_many` over 5,000 nodes and 10,000 pods with
//! the default profile. Run with `cargo run --release -p skiff-scheduler --example throughput`.

use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use skiff_scheduler::{schedule_many, Snapshot};

fn main() {
    let nodes: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let pods: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10000);
    let node_objs: Vec<Node> = (0..nodes)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"name": format!("node-{i}"), "labels": {
                    "kubernetes.io/hostname": format!("node-{i}"),
                    "topology.kubernetes.io/zone": format!("zone-{}", i % 10)}},
                "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap()
        })
        .collect();
    let pod_objs: Vec<Pod> = (0..pods)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"name": format!("pod-{i}"), "namespace": "default",
                    "uid": format!("uid-{i}"), "labels": {"app": format!("app-{}", i % 50)}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
            }))
            .unwrap()
        })
        .collect();
    let mut snapshot = Snapshot::new(node_objs, Vec::new());
    let start = Instant::now();
    let placed = schedule_many(&mut snapshot, pod_objs);
    let secs = start.elapsed().as_secs_f64();
    let bound = placed.iter().filter(|p| p.is_some()).count();
    println!(
        "{nodes} nodes, {pods} pods: {bound} placed in {secs:.3}s = {:.0} pods/s (default plugins, LeastAllocated)",
        bound as f64 / secs
    );
}
