//! Upstream v1.32 validation per kind, returning field causes in upstream's order and wording.
//!
//! Layout: `errors` (cause constructors matching apimachinery's `field` package), `names`
//! (DNS names, qualified names, label values, port names), `meta` (ObjectMeta), `quantity`
//! (resource quantities), `pod` (pod specs and templates), `core` (other core/v1 kinds),
//! `apps`, `batch` and `other` (the remaining groups).

mod apps;
mod batch;
mod core;
pub mod errors;
mod meta;
pub mod names;
mod other;
pub mod pod;
mod quantity;

use serde_json::Value;

use crate::Cause;

pub use errors::FIELD_IMMUTABLE;
pub use meta::{validate_object_meta, validate_object_meta_update, NameKind};
pub use quantity::{parse_quantity, Quantity, QuantityError};

/// Validates an object about to be created (after defaulting).
pub fn validate_create(group: &str, version: &str, kind: &str, obj: &Value) -> Vec<Cause> {
    let mut errs = meta::validate_object_meta(
        obj,
        namespaced(group, version, kind),
        name_kind(group, kind),
    );
    errs.extend(match (group, kind) {
        ("", "Pod") => pod::validate_pod_create(obj),
        ("", "PodTemplate") => pod::validate_pod_template_object(obj),
        ("", "ReplicationController") => core::validate_rc(obj),
        ("", "Service") => core::validate_service(obj, None),
        ("", "ConfigMap") => core::validate_configmap(obj),
        ("", "Secret") => core::validate_secret(obj),
        ("", "Namespace") => core::validate_namespace(obj),
        ("", "Node") => core::validate_node(obj),
        ("", "Endpoints") => core::validate_endpoints(obj),
        ("", "ServiceAccount") => core::validate_service_account(obj),
        ("", "LimitRange") => core::validate_limit_range(obj),
        ("", "ResourceQuota") => core::validate_resource_quota(obj),
        ("", "PersistentVolume") => core::validate_pv(obj),
        ("", "PersistentVolumeClaim") => core::validate_pvc(obj),
        ("", "Event") | ("events.k8s.io", "Event") => core::validate_event(obj),
        ("apps", "Deployment") => apps::validate_deployment(obj),
        ("apps", "ReplicaSet") => apps::validate_replica_set(obj),
        ("apps", "StatefulSet") => apps::validate_stateful_set(obj),
        ("apps", "DaemonSet") => apps::validate_daemon_set(obj),
        ("apps", "ControllerRevision") => apps::validate_controller_revision(obj),
        ("batch", "Job") => batch::validate_job(obj),
        ("batch", "CronJob") => batch::validate_cron_job(obj),
        _ => other::validate(group, kind, obj),
    });
    errs
}

/// Validates an update of `old` to `new` (after defaulting `new`).
pub fn validate_update(
    group: &str,
    version: &str,
    kind: &str,
    new: &Value,
    old: &Value,
) -> Vec<Cause> {
    let mut errs = meta::validate_object_meta_update(new, old);
    let mut spec_errs = match (group, kind) {
        ("", "Pod") => pod::validate_pod_update(new, old),
        ("", "Service") => core::validate_service(new, Some(old)),
        ("", "ConfigMap") => core::validate_configmap_update(new, old),
        ("", "Secret") => core::validate_secret_update(new, old),
        ("", "Namespace") => core::validate_namespace(new),
        ("", "PersistentVolumeClaim") => core::validate_pvc_update(new, old),
        ("", "PersistentVolume") => core::validate_pv_update(new, old),
        ("apps", "Deployment") => apps::validate_deployment_update(new, old),
        ("apps", "ReplicaSet") => apps::validate_replica_set_update(new, old),
        ("apps", "StatefulSet") => apps::validate_stateful_set_update(new, old),
        ("apps", "DaemonSet") => apps::validate_daemon_set_update(new, old),
        ("apps", "ControllerRevision") => apps::validate_controller_revision_update(new, old),
        ("batch", "Job") => batch::validate_job_update(new, old),
        ("batch", "CronJob") => batch::validate_cron_job(new),
        _ => {
            // Kinds without special update rules re-run their create rules minus metadata.
            let mut e = validate_create(group, version, kind, new);
            e.retain(|c| !c.field.starts_with("metadata."));
            e.extend(other::validate_update(group, kind, new, old));
            e
        }
    };
    errs.append(&mut spec_errs);
    errs
}

/// Validates a write to the status subresource: metadata rules plus the kind's status rules.
pub fn validate_status_update(
    group: &str,
    _version: &str,
    kind: &str,
    new: &Value,
    old: &Value,
) -> Vec<Cause> {
    let mut errs = meta::validate_object_meta_update(new, old);
    errs.extend(match (group, kind) {
        ("", "Pod") => pod::validate_pod_status_update(new, old),
        ("", "Namespace") => core::validate_namespace_status_update(new, old),
        ("apps", "Deployment") | ("apps", "ReplicaSet") | ("apps", "StatefulSet") => {
            apps::validate_replicas_status(new)
        }
        _ => Vec::new(),
    });
    errs
}

/// Whether the kind is namespaced, per the registry; unknown kinds count as namespaced.
fn namespaced(group: &str, version: &str, kind: &str) -> bool {
    crate::registry::RESOURCES
        .iter()
        .find(|r| {
            r.group == group && r.kind == kind && (r.version == version || version.is_empty())
        })
        .or_else(|| {
            crate::registry::RESOURCES
                .iter()
                .find(|r| r.group == group && r.kind == kind)
        })
        .map(|r| r.namespaced)
        .unwrap_or(true)
}

/// The name format upstream's `ValidateXName` applies to a kind.
fn name_kind(group: &str, kind: &str) -> NameKind {
    match (group, kind) {
        ("", "Namespace") => NameKind::Dns1123Label,
        ("", "Service") => NameKind::Dns1035Label,
        (_, k)
            if crate::registry::RESOURCES
                .iter()
                .any(|r| r.group == group && r.kind == k) =>
        {
            NameKind::Dns1123Subdomain
        }
        _ => NameKind::PathSegment,
    }
}

/// Small accessors over JSON objects: absent or mistyped fields read as empty.
pub(crate) mod json {
    use serde_json::{Map, Value};

    pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v.get(key).and_then(Value::as_str).unwrap_or("")
    }
    pub fn opt_s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
        v.get(key).and_then(Value::as_str)
    }
    pub fn i(v: &Value, key: &str) -> Option<i64> {
        v.get(key).and_then(Value::as_i64)
    }
    pub fn b(v: &Value, key: &str) -> Option<bool> {
        v.get(key).and_then(Value::as_bool)
    }
    pub fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
        v.get(key)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
    pub fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
        v.get(key).and_then(Value::as_object)
    }
    pub fn present(v: &Value, key: &str) -> bool {
        v.get(key).is_some_and(|x| !x.is_null())
    }
    pub static NULL: Value = Value::Null;
    pub fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
        v.get(key).unwrap_or(&NULL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dispatch_create_and_update() {
        let mut ns =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Bad.Name"}});
        crate::defaults::apply("", "v1", "Namespace", &mut ns);
        let e = validate_create("", "v1", "Namespace", &ns);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "metadata.name");
        let mut svc = json!({"metadata": {"name": "1svc", "namespace": "d"}, "spec": {"ports": [{"port": 80}]}});
        crate::defaults::apply("", "v1", "Service", &mut svc);
        let e = validate_create("", "v1", "Service", &svc);
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("a DNS-1035 label"));
        let old = json!({"metadata": {"name": "c", "namespace": "d", "resourceVersion": "1", "uid": "u"}, "data": {"a": "b"}});
        let mut new = old.clone();
        new["metadata"]["name"] = json!("e");
        let e = validate_update("", "v1", "ConfigMap", &new, &old);
        assert_eq!(
            e,
            vec![errors::invalid("metadata.name", "e", FIELD_IMMUTABLE)]
        );
    }

    #[test]
    fn generic_fallback_checks_metadata_only() {
        let e = validate_create(
            "example.com",
            "v1",
            "Widget",
            &json!({"metadata": {"name": "a/b", "namespace": "d"}}),
        );
        assert_eq!(
            e,
            vec![errors::invalid(
                "metadata.name",
                "a/b",
                "may not contain '/'"
            )]
        );
        let l = validate_create(
            "coordination.k8s.io",
            "v1",
            "Lease",
            &json!({"metadata": {"name": "l", "namespace": "d"}, "spec": {}}),
        );
        assert_eq!(l, vec![]);
    }

    #[test]
    fn status_update_checks_namespace_phase() {
        let old = json!({"metadata": {"name": "n", "resourceVersion": "1"}, "status": {"phase": "Active"}});
        let mut new = old.clone();
        new["status"]["phase"] = json!("Terminating");
        let e = validate_status_update("", "v1", "Namespace", &new, &old);
        assert_eq!(
            e,
            vec![errors::invalid(
                "status.Phase",
                "Terminating",
                "may only be 'Active' if `deletionTimestamp` is empty"
            )]
        );
    }
}
