//! Builders for unit tests.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

use crate::types::PodInfo;

/// A node with allocatable cpu, memory and pods, merged with `extra` (JSON merge).
pub fn node(name: &str, cpu: &str, memory: &str, extra: Value) -> Node {
    let mut v = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

/// A pod with one container requesting cpu and memory, merged with `extra`.
pub fn pod(name: &str, cpu: &str, memory: &str, extra: Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

/// A pod's scheduling facts.
pub fn info(p: Pod) -> PodInfo {
    PodInfo::new(Arc::new(p))
}

/// JSON merge patch semantics, enough for builders.
pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}
