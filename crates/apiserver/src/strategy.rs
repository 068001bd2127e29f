//! Per-kind behaviour that sits between the REST verbs and the pure rules in `skiff-api`:
//! default admission, graceful deletion, the scale view, and adapters to the patch and apply
//! logic.

use serde_json::{json, Value};
use skiff_api::ResourceInfo;

use crate::error::{ApiError, ApiResult};
use crate::meta::{self, meta_mut};
use crate::rest::DeleteOpts;

/// Rejects names that cannot be a path segment (upstream's `IsValidPathSegmentName`), before
/// any per-kind rule, because the name becomes part of the store key.
pub fn check_path_name(r: &ResourceInfo, name: &str) -> ApiResult<()> {
    let bad = if name == "." || name == ".." {
        Some(format!("Invalid value: \"{name}\": may not be '{name}'"))
    } else if name.contains('/') || name.contains('%') {
        let c = if name.contains('/') { "/" } else { "%" };
        Some(format!("Invalid value: \"{name}\": may not contain '{c}'"))
    } else {
        None
    };
    match bad {
        Some(message) => Err(ApiError::invalid(
            r.kind,
            r.group,
            name,
            &[skiff_api::Cause {
                reason: "FieldValueInvalid",
                field: "metadata.name".into(),
                message,
            }],
        )),
        None => Ok(()),
    }
}

/// Upstream's default pod admission: the service account name and the not-ready/unreachable
/// tolerations of `DefaultTolerationSeconds` (`toleration_seconds` = (not-ready, unreachable)).
pub fn admit_pod(pod: &mut Value, toleration_seconds: (i64, i64)) {
    let spec = &mut pod["spec"];
    if spec["serviceAccountName"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        spec["serviceAccountName"] = json!("default");
    }
    if spec["serviceAccount"].as_str().is_none_or(str::is_empty) {
        spec["serviceAccount"] = spec["serviceAccountName"].clone();
    }
    if !spec["tolerations"].is_array() {
        spec["tolerations"] = json!([]);
    }
    let tolerations = spec["tolerations"].as_array_mut().expect("array");
    for (key, seconds) in [
        ("node.kubernetes.io/not-ready", toleration_seconds.0),
        ("node.kubernetes.io/unreachable", toleration_seconds.1),
    ] {
        let tolerated = tolerations.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let effect = t["effect"].as_str().unwrap_or("");
            let op = t["operator"].as_str().unwrap_or("Equal");
            (k == key || (k.is_empty() && op == "Exists"))
                && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}

/// Sets (or adds) a pod condition.
pub fn set_pod_condition(pod: &mut Value, ty: &str, status: &str, reason: Option<&str>) {
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let conds = pod["status"]["conditions"].as_array_mut().expect("array");
    let mut c = json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": meta::now_rfc3339()});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    match conds.iter_mut().find(|c| c["type"] == ty) {
        Some(existing) => {
            if existing["status"] != status {
                *existing = c;
            }
        }
        None => conds.push(c),
    }
}

/// The `autoscaling/v1` Scale view of a scalable object.
pub fn to_scale(r: &ResourceInfo, obj: &Value) -> ApiResult<Value> {
    let selector = match r.kind {
        "ReplicationController" => obj["spec"]["selector"]
            .as_object()
            .map(|m| {
                let mut kv: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                kv.sort();
                kv.join(",")
            })
            .unwrap_or_default(),
        _ => match skiff_api::selector::LabelSelector::from_json(&obj["spec"]["selector"]) {
            Ok(s) => s.to_string(),
            Err(_) => String::new(),
        },
    };
    let m = &obj["metadata"];
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0)},
    });
    if !selector.is_empty() {
        scale["status"]["selector"] = json!(selector);
    }
    Ok(scale)
}

/// Starts graceful deletion where upstream does (pods bound to a node, namespaces with
/// finalizers): sets `deletionTimestamp` and returns true. Otherwise returns false.
pub fn graceful_deletion(r: &ResourceInfo, obj: &mut Value, opts: &DeleteOpts) -> bool {
    match r.kind {
        "Pod" => {
            let phase = obj["status"]["phase"].as_str().unwrap_or("");
            let bound = obj["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            let default = obj["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30);
            let grace = opts.grace_period.unwrap_or(default).max(0);
            // Unbound and finished pods go at once, as upstream's pod strategy decides.
            if !bound || phase == "Succeeded" || phase == "Failed" || grace == 0 {
                if obj["metadata"].get("deletionTimestamp").is_some() || has_finalizers(obj) {
                    set_deleting(obj, 0);
                }
                return false;
            }
            let current = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
            if current.is_some_and(|c| c <= grace) {
                return true;
            }
            set_deleting(obj, grace);
            true
        }
        "Namespace" => {
            let pending = obj["spec"]["finalizers"]
                .as_array()
                .is_some_and(|a| !a.is_empty());
            if pending {
                if obj["metadata"].get("deletionTimestamp").is_none() {
                    set_deleting(obj, 0);
                }
                obj["status"]["phase"] = json!("Terminating");
            }
            pending
        }
        _ => false,
    }
}

fn has_finalizers(obj: &Value) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

fn set_deleting(obj: &mut Value, grace: i64) {
    let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
    let m = meta_mut(obj);
    if grace > 0 || !m.contains_key("deletionTimestamp") {
        m.insert(
            "deletionTimestamp".into(),
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
    }
    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
}

/// Adds the propagation finalizer asked for and, when finalizers remain, marks the object as
/// being deleted. Returns whether the object must stay until its finalizers are removed.
pub fn pending_finalizers(r: &ResourceInfo, obj: &mut Value, opts: &DeleteOpts) -> bool {
    let _ = r;
    let wanted = match opts.propagation.as_deref() {
        Some("Foreground") => Some("foregroundDeletion"),
        Some("Orphan") => Some("orphan"),
        _ => None,
    };
    if let Some(f) = wanted {
        let m = meta_mut(obj);
        let list = m.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(a) = list.as_array_mut() {
            if !a.iter().any(|x| x == f) {
                a.push(json!(f));
            }
        }
    }
    if !has_finalizers(obj) {
        return false;
    }
    if obj["metadata"].get("deletionTimestamp").is_none() {
        set_deleting(obj, 0);
    }
    true
}

/// Whether two objects are the same write (ignoring bookkeeping that a no-op must not bump).
pub fn same_object(a: &Value, b: &Value) -> bool {
    // Compared in place: every update passes here, and copying two pods costs more than
    // comparing them.
    const IGNORED: [&str; 2] = ["resourceVersion", "managedFields"];
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let meta_equal = |x: Option<&Value>, y: Option<&Value>| match (x, y) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let kept = |m: &'_ serde_json::Map<String, Value>| {
                m.keys().filter(|k| !IGNORED.contains(&k.as_str())).count()
            };
            kept(x) == kept(y)
                && x.iter()
                    .filter(|(k, _)| !IGNORED.contains(&k.as_str()))
                    .all(|(k, v)| y.get(k) == Some(v))
        }
        (x, y) => x == y,
    };
    a.len() == b.len()
        && meta_equal(a.get("metadata"), b.get("metadata"))
        && a.iter()
            .filter(|(k, _)| k.as_str() != "metadata")
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Records field ownership of a non-apply write.
pub fn track_managed_fields(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
) {
    skiff_api::apply::update_managed_fields(
        old,
        new,
        manager,
        old.is_some(),
        api_version,
        subresource,
        skiff_openapi::schema(),
        &meta::now_rfc3339(),
    );
}

/// Maps a patch failure to upstream's status.
pub fn patch_error(e: skiff_api::patch::PatchError) -> ApiError {
    match e.code() {
        422 => ApiError::new(422, "Invalid", e.status_message()),
        400 => ApiError::bad_request(e.status_message()),
        _ => ApiError::internal(e.status_message()),
    }
}

/// Maps a server-side apply failure to upstream's status.
pub fn apply_error(r: &ResourceInfo, name: &str, e: skiff_api::apply::ApplyError) -> ApiError {
    match e.code() {
        409 => {
            let causes: Vec<Value> = e
                .causes()
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            let mut err = ApiError::new(409, "Conflict", e.to_string());
            let mut d = json!({
                "name": name,
                "kind": r.plural,
                "causes": causes,
            });
            if !r.group.is_empty() {
                d["group"] = json!(r.group);
            }
            err.details = Some(d);
            err
        }
        400 => ApiError::bad_request(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

/// Keeps the ClusterIP and NodePorts a Service was given when an update leaves them out, as
/// upstream's service storage does (clients rarely send allocated values back).
pub fn carry_service_allocations(new: &mut Value, old: &Value) {
    let new_type = new["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    let old_type = old["spec"]["type"].as_str().unwrap_or("ClusterIP");
    if new_type != "ExternalName" && old_type != "ExternalName" {
        for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            let missing = match &new["spec"][f] {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            if missing && !old["spec"][f].is_null() {
                new["spec"][f] = old["spec"][f].clone();
            }
        }
    }
    if matches!(new_type.as_str(), "NodePort" | "LoadBalancer") {
        let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
        if let Some(ports) = new["spec"]["ports"].as_array_mut() {
            for p in ports.iter_mut() {
                if p.get("nodePort").is_some_and(|n| !n.is_null()) {
                    continue;
                }
                let proto = p["protocol"].as_str().unwrap_or("TCP").to_string();
                let found = old_ports.iter().find(|o| {
                    o["port"] == p["port"] && o["protocol"].as_str().unwrap_or("TCP") == proto
                });
                if let Some(n) = found
                    .and_then(|o| o.get("nodePort"))
                    .filter(|n| !n.is_null())
                {
                    p["nodePort"] = n.clone();
                }
            }
        }
        if new["spec"]
            .get("healthCheckNodePort")
            .is_none_or(Value::is_null)
            && !old["spec"]["healthCheckNodePort"].is_null()
        {
            new["spec"]["healthCheckNodePort"] = old["spec"]["healthCheckNodePort"].clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_object;
    use serde_json::json;

    #[test]
    fn same_object_ignores_only_resource_version_and_managed_fields() {
        let a = json!({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "1",
            "managedFields": [{"manager": "a"}], "labels": {"x": "1"}}, "spec": {"n": 1}});
        let b = json!({"kind": "Pod", "metadata": {"labels": {"x": "1"}, "name": "p",
            "resourceVersion": "2"}, "spec": {"n": 1}});
        assert!(same_object(&a, &b));
        assert!(same_object(&b, &a));
        let mut c = b.clone();
        c["metadata"]["labels"]["x"] = json!("2");
        assert!(!same_object(&a, &c));
        let mut d = b.clone();
        d["spec"]["n"] = json!(2);
        assert!(!same_object(&a, &d));
        let mut e = b.clone();
        e["status"] = json!({});
        assert!(!same_object(&a, &e) && !same_object(&e, &a));
        let mut f = b.clone();
        f["metadata"]["uid"] = json!("u");
        assert!(!same_object(&a, &f) && !same_object(&f, &a));
        let no_meta = json!({"kind": "Pod", "spec": {"n": 1}});
        let empty_meta =
            json!({"kind": "Pod", "metadata": {"resourceVersion": "3"}, "spec": {"n": 1}});
        assert!(!same_object(&no_meta, &empty_meta) && !same_object(&empty_meta, &no_meta));
    }
}
