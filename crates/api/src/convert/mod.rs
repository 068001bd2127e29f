//! Conversion between served versions that share storage.
//!
//! Two served versions are stored as another: `events.k8s.io/v1` `Event` is stored as core `v1`
//! `Event`, and `autoscaling/v1` `HorizontalPodAutoscaler` as `autoscaling/v2`. The field mapping
//! follows upstream's `pkg/apis/events/v1/conversion.go` and
//! `pkg/apis/autoscaling/v1/conversion.go`, including the annotations that carry v2-only
//! autoscaler fields through v1 so that a read-modify-write through v1 keeps them. Every other
//! kind converts as the identity, with `apiVersion` and `kind` set.

mod events;
mod hpa;

use serde_json::{json, Value};

pub(crate) use events::events_to_core;
pub(crate) use hpa::hpa_v1_to_v2;

pub use hpa::{
    BEHAVIOR_ANNOTATION, CONDITIONS_ANNOTATION, METRICS_ANNOTATION, METRIC_STATUSES_ANNOTATION,
};

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn check_object(obj: &Value) -> Result<(), String> {
    if obj.is_object() {
        Ok(())
    } else {
        Err("object is not a JSON object".to_string())
    }
}

/// Sets `apiVersion` and `kind` first, as Go's `TypeMeta` serializes them.
pub(crate) fn with_type(obj: Value, api_version: &str, kind: &str) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!(kind));
    if let Value::Object(m) = obj {
        for (k, v) in m {
            if k != "apiVersion" && k != "kind" {
                out.insert(k, v);
            }
        }
    }
    Value::Object(out)
}

/// Converts an object received in the served `group`/`version` into its storage version.
pub fn to_storage(group: &str, version: &str, kind: &str, obj: Value) -> Result<Value, String> {
    check_object(&obj)?;
    Ok(match (group, version, kind) {
        ("events.k8s.io", "v1", "Event") => events::events_to_core(obj),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa::hpa_v1_to_v2(obj),
        _ => with_type(obj, &api_version(group, version), kind),
    })
}

/// Converts a stored object into the served `group`/`version` a client asked for.
pub fn from_storage(group: &str, version: &str, kind: &str, obj: Value) -> Result<Value, String> {
    check_object(&obj)?;
    Ok(match (group, version, kind) {
        ("events.k8s.io", "v1", "Event") => events::core_to_events(obj),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa::hpa_v2_to_v1(obj)?,
        _ => with_type(obj, &api_version(group, version), kind),
    })
}

#[cfg(test)]
mod tests;
