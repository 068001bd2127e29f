//! System metadata and per-kind storage rules (upstream's registry strategies): what the server
//! sets on create, keeps on update, and how the status subresource and generation behave.

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use skiff_api::ResourceInfo;

/// Kinds whose `metadata.generation` upstream tracks (bumped on every spec change).
const GENERATION_KINDS: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "ReplicationController",
    "Job",
    "CronJob",
    "HorizontalPodAutoscaler",
    "Ingress",
    "NetworkPolicy",
    "PodDisruptionBudget",
];

/// Kinds upstream lets `PUT` create when the object is missing.
pub const CREATE_ON_UPDATE_KINDS: &[&str] = &["Lease", "Endpoints", "Event", "EndpointSlice"];

/// Kinds for which a `DELETE` answers with the deleted object rather than a success `Status`.
pub const RETURNS_DELETED_OBJECT: &[&str] = &["Pod", "Service", "Namespace"];

/// RFC 3339 timestamp with second precision, as `metav1.Time` serializes.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// RFC 3339 timestamp with microseconds, as `metav1.MicroTime` serializes.
pub fn now_micro() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The object's `metadata`, created if absent.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Whether the object has the status subresource (status is written only through it).
pub fn has_status(r: &ResourceInfo) -> bool {
    r.has_subresource("status")
}

fn tracks_generation(r: &ResourceInfo) -> bool {
    GENERATION_KINDS.contains(&r.kind)
}

/// Upstream's pod QoS class.
pub fn qos_class(pod: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    let containers = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            pod["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten(),
        );
    for c in containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for res in ["cpu", "memory"] {
            let r = req.get(res).filter(|v| !v.is_null());
            let l = lim.get(res).filter(|v| !v.is_null());
            if r.is_some() || l.is_some() {
                any = true;
            }
            match (r, l) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if r != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Sets what the server owns on create: uid, creationTimestamp, generation, and the initial
/// status where upstream resets it.
pub fn prepare_create(r: &ResourceInfo, obj: &mut Value) {
    let kind = r.kind;
    {
        let m = meta_mut(obj);
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("selfLink");
        if tracks_generation(r) {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    match kind {
        "Pod" => {
            let qos = qos_class(obj);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        "Namespace" => {
            obj["status"] = json!({"phase": "Active"});
            if !obj["spec"].is_object() {
                obj["spec"] = json!({});
            }
            let fins = obj["spec"]
                .as_object_mut()
                .expect("object")
                .entry("finalizers")
                .or_insert_with(|| json!([]));
            if !fins.is_array() {
                *fins = json!([]);
            }
            let list = fins.as_array_mut().expect("array");
            if !list.iter().any(|f| f == "kubernetes") {
                list.push(json!("kubernetes"));
            }
        }
        "PersistentVolumeClaim" => obj["status"] = json!({"phase": "Pending"}),
        "PersistentVolume" => obj["status"] = json!({"phase": "Pending"}),
        "Node" if obj.get("status").is_none() => obj["status"] = json!({}),
        "Service"
            if obj
                .get("status")
                .is_none_or(|s| s.as_object().is_some_and(|m| m.is_empty())) =>
        {
            obj["status"] = json!({"loadBalancer": {}});
        }
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicationController"
        | "Job"
        | "CronJob"
        | "HorizontalPodAutoscaler"
        | "PodDisruptionBudget"
        | "Ingress" => {
            obj["status"] = match kind {
                "Ingress" => json!({"loadBalancer": {}}),
                "StatefulSet" => json!({"replicas": 0, "availableReplicas": 0}),
                "ReplicationController" | "ReplicaSet" => json!({"replicas": 0}),
                "HorizontalPodAutoscaler" => json!({"currentReplicas": 0, "desiredReplicas": 0}),
                "PodDisruptionBudget" => {
                    json!({"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0})
                }
                "DaemonSet" => {
                    json!({"currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0, "numberReady": 0})
                }
                _ => json!({}),
            }
        }
        _ => {}
    }
}

fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// Carries over what a client may not change with an update: system metadata always; status
/// for a main-resource update of a kind with a status subresource; everything but status for a
/// status update. Bumps generation when the spec changed.
pub fn prepare_update(r: &ResourceInfo, new: &mut Value, old: &Value, subresource: Option<&str>) {
    if subresource == Some("status") {
        let status = new.get("status").cloned();
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        return;
    }
    let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
    {
        let m = meta_mut(new);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(f) {
                Some(v) => {
                    m.insert(f.into(), v.clone());
                }
                None => {
                    m.remove(f);
                }
            }
        }
        // Unconditional updates are checked against the version they replace.
        match old_meta.get("resourceVersion") {
            Some(v) => {
                m.insert("resourceVersion".into(), v.clone());
            }
            None => {
                m.remove("resourceVersion");
            }
        }
        m.remove("selfLink");
    }
    // Namespace finalizers change only through the `finalize` subresource.
    if r.kind == "Namespace" && subresource != Some("finalize") {
        match old["spec"].get("finalizers") {
            Some(f) => new["spec"]["finalizers"] = f.clone(),
            None => {
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("finalizers");
                }
            }
        }
    }
    if has_status(r) {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if tracks_generation(r) && spec_part(new) != spec_part(old) {
        let g = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(new).insert("generation".into(), json!(g + 1));
    }
}

/// Removes `null` members recursively, as decoding into upstream's typed objects does for
/// pointer and omitempty fields (clients that send `"terminated": null` never store it).
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            for x in m.values_mut() {
                strip_nulls(x);
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                strip_nulls(x);
            }
        }
        _ => {}
    }
}

/// The object without `resourceVersion`, as it is stored.
pub fn for_storage(obj: &Value) -> Vec<u8> {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&v).expect("JSON values serialize")
}

/// Characters upstream uses for `generateName` suffixes.
const NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `generateName` plus five random characters, as upstream's `SimpleNameGenerator`.
pub fn generate_name(prefix: &str) -> String {
    let prefix = if prefix.len() > 58 {
        &prefix[..58]
    } else {
        prefix
    };
    let bytes = uuid::Uuid::new_v4();
    let suffix: String = bytes.as_bytes()[..5]
        .iter()
        .map(|b| NAME_CHARS[*b as usize % NAME_CHARS.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::registry;

    #[test]
    fn generation_bumps_on_spec_change_only() {
        let r = registry::find("apps", "v1", "deployments").unwrap();
        let mut old = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}});
        prepare_create(r, &mut old);
        assert_eq!(old["metadata"]["generation"], 1);
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"a": "b"});
        prepare_update(r, &mut new, &old, None);
        assert_eq!(new["metadata"]["generation"], 1);
        let mut new2 = new.clone();
        new2["spec"]["replicas"] = json!(3);
        new2["status"] = json!({"replicas": 99});
        prepare_update(r, &mut new2, &new, None);
        assert_eq!(new2["metadata"]["generation"], 2);
        assert_eq!(
            new2["status"], old["status"],
            "status is kept on a main update"
        );
    }

    #[test]
    fn status_update_changes_only_status() {
        let r = registry::find("", "v1", "pods").unwrap();
        let old = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "a"}, "status": {"phase": "Pending"}});
        let mut new = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "b"}, "status": {"phase": "Running"}});
        prepare_update(r, &mut new, &old, Some("status"));
        assert_eq!(new["spec"]["nodeName"], "a");
        assert_eq!(new["status"]["phase"], "Running");
    }

    #[test]
    fn nulls_are_dropped_at_every_depth() {
        let mut v = json!({"a": null, "b": {"c": null, "d": 1}, "e": [{"f": null}]});
        strip_nulls(&mut v);
        assert_eq!(v, json!({"b": {"d": 1}, "e": [{}]}));
    }

    #[test]
    fn qos() {
        assert_eq!(
            qos_class(&json!({"spec": {"containers": [{"name": "a"}]}})),
            "BestEffort"
        );
        let g = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn generated_names_have_five_char_suffix() {
        let n = generate_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n.starts_with("web-"));
    }
}
