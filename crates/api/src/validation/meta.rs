//! ObjectMeta validation (apimachinery `api/validation/objectmeta.go`).

use serde_json::Value;

use super::errors::{forbidden, immutable, invalid, required, too_long, Raw, IS_NEGATIVE};
use super::json::{arr, i, obj, s};
use super::names;
use crate::Cause;

/// Upstream's `TotalAnnotationSizeLimitB`.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// The name format a kind's `ValidateXName` enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// `NameIsDNSSubdomain` (most kinds).
    Dns1123Subdomain,
    /// `NameIsDNSLabel` (namespaces).
    Dns1123Label,
    /// `NameIsDNS1035Label` (services).
    Dns1035Label,
    /// `IsValidPathSegmentName` (generic fallback).
    PathSegment,
}

impl NameKind {
    /// Messages for `name`; with `prefix`, a trailing `-` is allowed as in `generateName`.
    pub fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix && name.ends_with('-') && self != NameKind::PathSegment {
            masked = format!("{}a", &name[..name.len() - 1]);
            masked.as_str()
        } else {
            name
        };
        match self {
            NameKind::Dns1123Subdomain => names::dns1123_subdomain(name),
            NameKind::Dns1123Label => names::dns1123_label(name),
            NameKind::Dns1035Label => names::dns1035_label(name),
            NameKind::PathSegment => names::path_segment(name),
        }
    }
}

/// `ValidateObjectMeta` for a create.
pub fn validate_object_meta(obj_: &Value, namespaced: bool, name_kind: NameKind) -> Vec<Cause> {
    let meta = super::json::get(obj_, "metadata");
    let mut errs = Vec::new();
    let gen_name = s(meta, "generateName");
    if !gen_name.is_empty() {
        for m in name_kind.check(gen_name, true) {
            errs.push(invalid("metadata.generateName", gen_name, &m));
        }
    }
    let name = s(meta, "name");
    if name.is_empty() {
        errs.push(required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for m in name_kind.check(name, false) {
            errs.push(invalid("metadata.name", name, &m));
        }
    }
    let ns = s(meta, "namespace");
    if namespaced {
        if ns.is_empty() {
            errs.push(required("metadata.namespace", ""));
        } else {
            for m in names::dns1123_label(ns) {
                errs.push(invalid("metadata.namespace", ns, &m));
            }
        }
    } else if !ns.is_empty() {
        errs.push(forbidden("metadata.namespace", "not allowed on this type"));
    }
    if let Some(g) = i(meta, "generation") {
        if g < 0 {
            errs.push(invalid("metadata.generation", g, IS_NEGATIVE));
        }
    }
    validate_labels(
        super::json::get(meta, "labels"),
        "metadata.labels",
        &mut errs,
    );
    validate_annotations(meta, &mut errs);
    validate_owner_references(meta, &mut errs);
    validate_finalizers(meta, &mut errs);
    errs
}

/// `ValidateLabels`: keys are qualified names, values label values.
pub fn validate_labels(labels: &Value, path: &str, errs: &mut Vec<Cause>) {
    let Some(map) = labels.as_object() else {
        return;
    };
    for (k, v) in map {
        for m in names::qualified_name(k) {
            errs.push(invalid(path, k.as_str(), &m));
        }
        let v = v.as_str().unwrap_or("");
        for m in names::label_value(v) {
            errs.push(invalid(path, v, &m));
        }
    }
}

fn validate_annotations(meta: &Value, errs: &mut Vec<Cause>) {
    let Some(map) = obj(meta, "annotations") else {
        return;
    };
    let mut total = 0;
    for (k, v) in map {
        // Annotation keys are qualified names, case-insensitively.
        for m in names::qualified_name(&k.to_lowercase()) {
            errs.push(invalid("metadata.annotations", k.as_str(), &m));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(too_long(
            "metadata.annotations",
            TOTAL_ANNOTATION_SIZE_LIMIT,
        ));
    }
}

fn validate_owner_references(meta: &Value, errs: &mut Vec<Cause>) {
    let path = "metadata.ownerReferences";
    let mut first_controller: Option<String> = None;
    for r in arr(meta, "ownerReferences") {
        let api_version = s(r, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        let (group, kind) = (
            api_version.rsplit_once('/').map_or("", |(g, _)| g),
            s(r, "kind"),
        );
        if version.is_empty() {
            errs.push(invalid(
                format!("{path}.apiVersion"),
                api_version,
                "version must not be empty",
            ));
        }
        if kind.is_empty() {
            errs.push(invalid(
                format!("{path}.kind"),
                kind,
                "kind must not be empty",
            ));
        }
        if s(r, "name").is_empty() {
            errs.push(invalid(
                format!("{path}.name"),
                "",
                "name must not be empty",
            ));
        }
        if s(r, "uid").is_empty() {
            errs.push(invalid(format!("{path}.uid"), "", "uid must not be empty"));
        }
        if group.is_empty() && version == "v1" && kind == "Event" {
            errs.push(invalid(
                path,
                Raw(r.to_string()),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            let cur = format!("{}/{}", kind, s(r, "name"));
            match &first_controller {
                Some(first) => errs.push(invalid(
                    path,
                    Raw(super::json::get(meta, "ownerReferences").to_string()),
                    &format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {cur}"),
                )),
                None => first_controller = Some(cur),
            }
        }
    }
}

fn validate_finalizers(meta: &Value, errs: &mut Vec<Cause>) {
    let fins: Vec<&str> = arr(meta, "finalizers")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for f in &fins {
        for m in names::qualified_name(f) {
            errs.push(invalid("metadata.finalizers", *f, &m));
        }
    }
    for (idx, f) in fins.iter().enumerate() {
        super::core::validate_kube_finalizer(f, &format!("metadata.finalizers[{idx}]"), errs);
    }
    if fins.contains(&"orphan") && fins.contains(&"foregroundDeletion") {
        errs.push(invalid(
            "metadata.finalizers",
            Raw(go_string_slice(&fins)),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// Go's `%#v` of a `[]string`.
pub(crate) fn go_string_slice(items: &[&str]) -> String {
    let q: Vec<String> = items.iter().map(|s| super::errors::go_quote(s)).collect();
    format!("[]string{{{}}}", q.join(", "))
}

/// `ValidateObjectMetaUpdate`.
pub fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<Cause> {
    let nm = super::json::get(new, "metadata");
    let om = super::json::get(old, "metadata");
    let mut errs = Vec::new();
    if om.get("deletionTimestamp").is_some_and(|v| !v.is_null()) {
        let old_f: Vec<&str> = arr(om, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut extra: Vec<&str> = arr(nm, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| !old_f.contains(f))
            .collect();
        extra.sort_unstable();
        extra.dedup();
        if !extra.is_empty() {
            errs.push(forbidden(
                "metadata.finalizers",
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers {}",
                    go_string_slice(&extra)
                ),
            ));
        }
    }
    let rv = s(nm, "resourceVersion");
    if rv.is_empty() {
        errs.push(invalid(
            "metadata.resourceVersion",
            rv,
            "must be specified for an update",
        ));
    }
    let (ng, og) = (
        i(nm, "generation").unwrap_or(0),
        i(om, "generation").unwrap_or(0),
    );
    if ng < og {
        errs.push(invalid(
            "metadata.generation",
            ng,
            "must not be decremented",
        ));
    }
    for f in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        immutable(&format!("metadata.{f}"), nm.get(f), om.get(f), &mut errs);
    }
    validate_labels(super::json::get(nm, "labels"), "metadata.labels", &mut errs);
    validate_annotations(nm, &mut errs);
    validate_owner_references(nm, &mut errs);
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(o: Value) -> Vec<Cause> {
        validate_object_meta(&o, true, NameKind::Dns1123Subdomain)
    }

    #[test]
    fn valid_meta_passes() {
        let o = json!({"metadata": {"name": "a.b", "namespace": "default", "labels": {"app": "x", "example.com/k": ""},
            "annotations": {"Example.com/Note": "x"}, "finalizers": ["example.com/f"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "u", "controller": true}]}});
        assert_eq!(create(o), vec![]);
    }

    #[test]
    fn name_required_and_format() {
        let e = create(json!({"metadata": {"namespace": "default"}}));
        assert_eq!(
            e,
            vec![required(
                "metadata.name",
                "name or generateName is required"
            )]
        );
        let e = create(json!({"metadata": {"name": "Foo_bar", "namespace": "default"}}));
        assert_eq!(e[0].field, "metadata.name");
        assert!(e[0]
            .message
            .starts_with("Invalid value: \"Foo_bar\": a lowercase RFC 1123 subdomain"));
    }

    #[test]
    fn generate_name_prefix_may_end_with_dash() {
        assert_eq!(
            create(
                json!({"metadata": {"generateName": "web-", "name": "web-abcde", "namespace": "d"}})
            ),
            vec![]
        );
        let e = create(
            json!({"metadata": {"generateName": "Web-", "name": "web-abcde", "namespace": "d"}}),
        );
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "metadata.generateName");
    }

    #[test]
    fn namespace_scope() {
        let e = validate_object_meta(
            &json!({"metadata": {"name": "n", "namespace": "x"}}),
            false,
            NameKind::Dns1123Label,
        );
        assert_eq!(
            e,
            vec![forbidden("metadata.namespace", "not allowed on this type")]
        );
        let e = create(json!({"metadata": {"name": "n"}}));
        assert_eq!(e, vec![required("metadata.namespace", "")]);
        let e = validate_object_meta(
            &json!({"metadata": {"name": "a.b"}}),
            false,
            NameKind::Dns1123Label,
        );
        assert_eq!(
            e[0].message,
            "Invalid value: \"a.b\": must not contain dots"
        );
    }

    #[test]
    fn labels_annotations_finalizers() {
        let e = create(
            json!({"metadata": {"name": "n", "namespace": "d", "labels": {"a b": "x", "k": "-v"}}}),
        );
        assert_eq!(e.len(), 2);
        assert!(e.iter().all(|c| c.field == "metadata.labels"));
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let e =
            create(json!({"metadata": {"name": "n", "namespace": "d", "annotations": {"k": big}}}));
        assert_eq!(
            e,
            vec![too_long(
                "metadata.annotations",
                TOTAL_ANNOTATION_SIZE_LIMIT
            )]
        );
        let e = create(
            json!({"metadata": {"name": "n", "namespace": "d", "finalizers": ["orphan", "foregroundDeletion"]}}),
        );
        assert_eq!(e[0].message, "Invalid value: []string{\"orphan\", \"foregroundDeletion\"}: finalizer orphan and foregroundDeletion cannot be both set");
        let e = create(json!({"metadata": {"name": "n", "namespace": "d", "finalizers": ["foo"]}}));
        assert_eq!(
            e,
            vec![invalid(
                "metadata.finalizers[0]",
                "foo",
                "name is neither a standard finalizer name nor is it fully qualified"
            )]
        );
    }

    #[test]
    fn owner_references() {
        let e = create(
            json!({"metadata": {"name": "n", "namespace": "d", "ownerReferences": [
            {"apiVersion": "", "kind": "", "name": "", "uid": ""},
            {"apiVersion": "v1", "kind": "A", "name": "a", "uid": "1", "controller": true},
            {"apiVersion": "v1", "kind": "B", "name": "b", "uid": "2", "controller": true}]}}),
        );
        let fields: Vec<&str> = e.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.ownerReferences.apiVersion",
                "metadata.ownerReferences.kind",
                "metadata.ownerReferences.name",
                "metadata.ownerReferences.uid",
                "metadata.ownerReferences"
            ]
        );
        assert_eq!(e[3].message, "Invalid value: \"\": uid must not be empty");
        assert!(e[4].message.ends_with("Only one reference can have Controller set to true. Found \"true\" in references for A/a and B/b"));
    }

    #[test]
    fn update_immutables() {
        let old = json!({"metadata": {"name": "a", "namespace": "d", "uid": "1", "resourceVersion": "5", "creationTimestamp": "t"}});
        let new = json!({"metadata": {"name": "a", "namespace": "d", "uid": "2", "resourceVersion": "5", "creationTimestamp": "t"}});
        assert_eq!(
            validate_object_meta_update(&new, &old),
            vec![invalid("metadata.uid", "2", "field is immutable")]
        );
        assert_eq!(validate_object_meta_update(&old, &old), vec![]);
        let new = json!({"metadata": {"name": "a", "namespace": "d", "uid": "1", "creationTimestamp": "t"}});
        assert_eq!(
            validate_object_meta_update(&new, &old),
            vec![invalid(
                "metadata.resourceVersion",
                "",
                "must be specified for an update"
            )]
        );
    }
}
