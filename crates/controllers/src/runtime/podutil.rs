//! Pod and selector predicates shared by controllers (upstream's podutil and
//! controller_utils).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};

pub use skiff_api::selector::LabelSelector;

/// Converts a `metav1.LabelSelector` (`None` selects nothing, `{}` everything).
pub fn selector(
    sel: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Result<LabelSelector, String> {
    let v = serde_json::to_value(sel).map_err(|e| e.to_string())?;
    LabelSelector::from_json(&v)
}

/// A selector requiring exactly the given labels (`labels.SelectorFromSet`).
pub fn selector_from_set(set: &BTreeMap<String, String>) -> LabelSelector {
    let m: Map<String, Value> = set
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    LabelSelector::from_json(&serde_json::json!({ "matchLabels": m }))
        .unwrap_or_else(|_| LabelSelector::nothing())
}

/// Whether `labels` satisfy `sel`.
pub fn matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    if sel.matches_nothing() {
        return false;
    }
    if sel.is_empty() {
        return true;
    }
    let m: Map<String, Value> = labels
        .map(|l| {
            l.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    sel.matches(&m)
}

/// The pod's condition of `type_`.
pub fn pod_condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the pod's Ready condition is True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod_condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

/// When the pod last became ready, if it is ready.
pub fn pod_ready_time(pod: &Pod) -> Option<Timestamp> {
    let c = pod_condition(pod, "Ready")?;
    if c.status != "True" {
        return None;
    }
    c.last_transition_time.as_ref().map(|t| t.0)
}

/// Whether the pod has been ready for at least `min_ready_seconds` at `now`.
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match pod_ready_time(pod) {
        Some(t) => t + SignedDuration::from_secs(min_ready_seconds as i64) < now,
        None => false,
    }
}

/// The pod's phase (`Pending` when unset).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Upstream's IsPodActive: not terminated and not being deleted.
pub fn is_pod_active(pod: &Pod) -> bool {
    let p = phase(pod);
    p != "Succeeded" && p != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

/// The highest restart count of the pod's containers (restartable init containers too).
pub fn max_container_restarts(pod: &Pod) -> i32 {
    let Some(s) = pod.status.as_ref() else {
        return 0;
    };
    let regular = s
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count);
    let restartable: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.clone())
        .collect();
    let init = s
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| restartable.contains(&c.name))
        .map(|c| c.restart_count);
    regular.chain(init).max().unwrap_or(0)
}
