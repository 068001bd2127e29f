//! Upstream v1.32 defaulting (`pkg/apis/<group>/v1/defaults.go` plus the generated
//! `SetObjectDefaults_*` walks), applied in place to JSON objects.
//!
//! Fields are only ever filled when absent (or null), as upstream's pointer checks do.

mod apps;
mod batch;
pub mod core;
mod other;

use serde_json::{json, Map, Value};

pub use batch::job_selector;

/// Applies the defaults of a kind to `obj` (for a create, update or patch result).
pub fn apply(group: &str, version: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") => core::pod(obj),
        ("", "PodTemplate") => core::pod_template(field(obj, "template")),
        ("", "ReplicationController") => core::replication_controller(obj),
        ("", "Service") => core::service(obj),
        ("", "Namespace") => core::namespace(obj),
        ("", "Node") => core::node(obj),
        ("", "Endpoints") => core::endpoints(obj),
        ("", "Secret") => core::secret(obj),
        ("", "PersistentVolume") => core::persistent_volume(obj),
        ("", "PersistentVolumeClaim") => core::persistent_volume_claim(obj),
        ("", "LimitRange") => core::limit_range(obj),
        ("apps", "Deployment") => apps::deployment(obj),
        ("apps", "ReplicaSet") => apps::replica_set(obj),
        ("apps", "StatefulSet") => apps::stateful_set(obj),
        ("apps", "DaemonSet") => apps::daemon_set(obj),
        ("batch", "Job") => batch::job(obj),
        ("batch", "CronJob") => batch::cron_job(obj),
        _ => other::apply(group, version, kind, obj),
    }
}

/// The object map at `v`, turning null/absent into `{}`.
pub(crate) fn map(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("just made an object")
}

/// The child `key` of `v`, created as `{}` when absent.
pub(crate) fn field<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    let m = map(v);
    let slot = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    slot
}

/// Sets `key` to `val` when absent or null. Does nothing when `v` is not an object.
pub(crate) fn set_default(v: &mut Value, key: &str, val: Value) {
    if let Some(m) = v.as_object_mut() {
        let slot = m.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = val;
        }
    }
}

/// Mutable elements of the array at `key`, if any.
pub(crate) fn items<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
}

/// Whether `key` holds a non-null value.
pub(crate) fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}
