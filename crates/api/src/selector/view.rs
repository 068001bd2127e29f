//! The part of a stored object that selectors read, decoded without the rest.
//!
//! A watch with a selector tests every event of its resource, before and after the change;
//! decoding whole pods (containers, managedFields, conditions) for that allocated more than
//! anything else the watch did. This decoder keeps what [`super::selectable_fields`] and label
//! selectors read and skips the rest without building it.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The object's top-level scalars, `metadata.name`, `metadata.namespace` and
/// `metadata.labels`, and the scalar fields of its top-level objects (`spec.nodeName`,
/// `status.phase`, `involvedObject.kind`, ...) plus `status.podIPs`: every field any kind
/// exposes to field selectors, and the labels.
pub fn selector_view(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Keep::Top.deserialize(&mut de)?;
    de.end()?;
    Ok(v.unwrap_or(Value::Null))
}

/// What to keep of a value, by where it sits.
#[derive(Clone, Copy, PartialEq)]
enum Keep {
    /// The object itself.
    Top,
    /// `metadata`: name, namespace, labels.
    Meta,
    /// A top-level object: its scalar fields and `podIPs`.
    Fields,
    /// Everything.
    Whole,
    /// A scalar; anything else is skipped.
    Scalar,
}

impl<'de> DeserializeSeed<'de> for Keep {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        if self == Keep::Whole {
            return serde::Deserialize::deserialize(d).map(Some);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Keep {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Some(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if self == Keep::Scalar {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(None);
        }
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let child = match (self, key.as_str()) {
                (Keep::Top, "metadata") => Keep::Meta,
                (Keep::Top, _) => Keep::Fields,
                (Keep::Meta, "name" | "namespace") => Keep::Scalar,
                (Keep::Meta, "labels") => Keep::Whole,
                (Keep::Fields, "podIPs") => Keep::Whole,
                (Keep::Fields, _) => Keep::Scalar,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if let Some(v) = map.next_value_seed(child)? {
                out.insert(key, v);
            }
        }
        Ok(Some(Value::Object(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::selectable_fields;
    use serde_json::json;

    #[test]
    fn the_view_selects_as_the_whole_object_does() {
        let cases = [
            (
                "",
                "Pod",
                json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "d", "labels": {"app": "web", "tier": "x"},
                    "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}],
                    "ownerReferences": [{"kind": "ReplicaSet", "name": "rs"}]},
                "spec": {"nodeName": "n1", "schedulerName": "default-scheduler",
                    "restartPolicy": "Always", "serviceAccountName": "sa", "hostNetwork": true,
                    "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}],
                    "affinity": {"nodeAffinity": {}}},
                "status": {"phase": "Running", "podIP": "10.0.0.1",
                    "podIPs": [{"ip": "10.0.0.2"}], "nominatedNodeName": "n2",
                    "conditions": [{"type": "Ready", "status": "True"}]}}),
            ),
            (
                "",
                "Pod",
                json!({"metadata": {"name": "q"}, "spec": {}, "status": {"podIP": "10.0.0.9"}}),
            ),
            (
                "",
                "Event",
                json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "d", "uid": "u",
                    "apiVersion": "v1", "resourceVersion": "3", "fieldPath": "spec"},
                "reason": "Scheduled", "reportingComponent": "", "source": {"component": "sched"},
                "type": "Normal", "count": 2}),
            ),
            (
                "events.k8s.io",
                "Event",
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "e"}, "regarding": {"kind": "Pod", "name": "p"},
                "reportingController": "kubelet", "deprecatedSource": {"component": "k"},
                "type": "Warning", "reason": "Failed"}),
            ),
            (
                "",
                "Node",
                json!({"metadata": {"name": "n", "labels": {"zone": "a"}},
                "spec": {"unschedulable": true, "taints": [{"key": "k"}]}}),
            ),
            (
                "",
                "Secret",
                json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "b"}}),
            ),
            (
                "",
                "Service",
                json!({"metadata": {"name": "s"},
                "spec": {"clusterIP": "10.43.0.1", "type": "NodePort", "ports": [{"port": 80}]}}),
            ),
            (
                "apps",
                "ReplicaSet",
                json!({"metadata": {"name": "r"}, "status": {"replicas": 3}}),
            ),
            (
                "batch",
                "Job",
                json!({"metadata": {"name": "j"}, "status": {"succeeded": 1}}),
            ),
            (
                "",
                "Namespace",
                json!({"metadata": {"name": "n"}, "status": {"phase": "Active"}}),
            ),
        ];
        for (group, kind, obj) in cases {
            let bytes = serde_json::to_vec(&obj).unwrap();
            let view = selector_view(&bytes).unwrap();
            assert_eq!(
                selectable_fields(group, kind, &view),
                selectable_fields(group, kind, &obj),
                "{kind}: {view}"
            );
            assert_eq!(view["metadata"]["labels"], obj["metadata"]["labels"]);
            assert!(view["metadata"].get("managedFields").is_none());
            assert!(view["spec"].get("containers").is_none(), "{view}");
        }
    }

    #[test]
    fn malformed_bytes_are_an_error() {
        assert!(selector_view(b"{\"metadata\": {").is_err());
        assert!(selector_view(b"{} trailing").is_err());
    }
}
