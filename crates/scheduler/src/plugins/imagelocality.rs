//! ImageLocality: favours nodes that already hold the pod's images, weighted by how widely
//! each image is spread (so one node is not favoured for an image every node has).

use std::collections::HashMap;

use crate::framework::{CycleState, Plugin, PreScorePlugin, ScorePlugin, Status, MAX_NODE_SCORE};
use crate::types::{NodeInfo, PodInfo, Snapshot};

/// The plugin's name.
pub const NAME: &str = "ImageLocality";
const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// The ImageLocality plugin.
pub struct ImageLocality;

#[derive(Clone)]
struct ImageState {
    total_nodes: usize,
    /// Normalised image name to the number of nodes with it.
    spread: HashMap<String, usize>,
    containers: usize,
}

/// Appends `:latest` to an image reference without a tag or digest.
pub fn normalized_image_name(name: &str) -> String {
    let colon = name.rfind(':').map(|i| i as isize).unwrap_or(-1);
    let slash = name.rfind('/').map(|i| i as isize).unwrap_or(-1);
    if colon <= slash {
        format!("{name}:latest")
    } else {
        name.to_string()
    }
}

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[usize],
        snapshot: &Snapshot,
    ) -> Status {
        let mut spread = HashMap::new();
        for img in &pod.images {
            let n = normalized_image_name(img);
            if let Some(c) = snapshot.image_nodes.get(&n) {
                spread.insert(n, *c);
            }
        }
        if spread.is_empty() {
            return Status::skip();
        }
        state.write(
            NAME,
            ImageState {
                total_nodes: snapshot.len(),
                spread,
                containers: pod.images.len(),
            },
        );
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = state.read::<ImageState>(NAME) else {
            return 0;
        };
        let mut sum: i64 = 0;
        for (img, count) in &s.spread {
            if let Some(size) = node.images.get(img) {
                sum += (*size as f64 * (*count as f64 / s.total_nodes as f64)) as i64;
            }
        }
        let max = MAX_CONTAINER_THRESHOLD * s.containers as i64;
        let sum = sum.clamp(MIN_THRESHOLD, max.max(MIN_THRESHOLD));
        if max <= MIN_THRESHOLD {
            return 0;
        }
        MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{info, node, pod};
    use serde_json::json;

    #[test]
    fn nodes_with_the_image_score_higher() {
        let with = node(
            "a",
            "1",
            "1Gi",
            json!({"status": {"images": [
            {"names": ["busybox:latest", "docker.io/library/busybox:latest"], "sizeBytes": 500 * MB}]}}),
        );
        let without = node("b", "1", "1Gi", json!({}));
        let s = Snapshot::new(vec![with, without], vec![]);
        let p = info(pod("p", "0", "0", json!({})));
        let mut st = CycleState::default();
        assert!(ImageLocality.pre_score(&mut st, &p, &[], &s).is_success());
        // 500MB spread over half the nodes = 250MB; (250-23)/(1000-23) of 100.
        assert_eq!(ImageLocality.score(&st, &p, s.get("a").unwrap()), 23);
        assert_eq!(ImageLocality.score(&st, &p, s.get("b").unwrap()), 0);
        assert_eq!(normalized_image_name("reg:5000/x"), "reg:5000/x:latest");
        assert_eq!(normalized_image_name("x:1"), "x:1");
    }
}
