//! Field selectors (k8s.io/apimachinery/pkg/fields), the fields each kind exposes to them
//! (upstream's `GetAttrs`/`ToSelectableFields`) and the field names each API version accepts
//! (upstream's `AddFieldLabelConversionFunc` registrations).

use std::fmt;

use serde_json::Value;

/// `=`/`==` or `!=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldOperator {
    /// The field equals the value (`=` or `==`).
    Equals,
    /// The field differs from the value (`!=`).
    NotEquals,
}

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field name, e.g. `status.phase`.
    pub field: String,
    /// The comparison.
    pub operator: FieldOperator,
    /// The value, unescaped.
    pub value: String,
}

/// A field selector: terms that must all hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses upstream's syntax: comma-joined `field=value`, `field==value`, `field!=value`
    /// terms; in values, `\,` `\=` and `\\` escape the special characters. Terms come out
    /// sorted as upstream sorts them.
    pub fn parse(selector: &str) -> Result<FieldSelector, String> {
        let mut parts = split_terms(selector);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, rhs)) = split_term(part) else {
                return Err(format!(
                    "invalid selector: '{selector}'; can't understand '{part}'"
                ));
            };
            terms.push(FieldRequirement {
                field: field.to_string(),
                operator: op,
                value: unescape_value(rhs)?,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// The terms, for the API server to check field names with [`check_field_label`].
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.terms
    }

    /// True when the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether an object's selectable fields satisfy every term; a missing field reads as
    /// the empty string, as upstream's `fields.Set` does.
    pub fn matches(&self, fields: &[(String, String)]) -> bool {
        self.terms.iter().all(|t| {
            let actual = fields
                .iter()
                .find(|(k, _)| *k == t.field)
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            match t.operator {
                FieldOperator::Equals => actual == t.value,
                FieldOperator::NotEquals => actual != t.value,
            }
        })
    }

    /// The value a field must equal, if a term pins it (upstream's `RequiresExactMatch`).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.operator == FieldOperator::Equals)
            .map(|t| t.value.as_str())
    }

    /// Checks every field name against what the API version of a kind accepts and renames
    /// fields to the names [`selectable_fields`] uses (e.g. events.k8s.io `regarding.name` to
    /// `involvedObject.name`, the legacy pod `spec.host` to `spec.nodeName`). The error is
    /// upstream's text; the API server answers it with 400 BadRequest.
    pub fn convert(&self, group: &str, version: &str, kind: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::with_capacity(self.terms.len());
        for t in &self.terms {
            terms.push(FieldRequirement {
                field: convert_field_label(group, version, kind, &t.field)?,
                operator: t.operator,
                value: t.value.clone(),
            });
        }
        Ok(FieldSelector { terms })
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match t.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", t.field, escape_value(&t.value))?;
        }
        Ok(())
    }
}

/// Splits on commas not escaped by a backslash; escapes stay in the terms.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator; the field part has no escaping.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, kind) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], kind, rhs));
            }
        }
    }
    None
}

/// Escapes a value for a field selector string.
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Undoes [`escape_value`], rejecting unknown escapes and bare `,` or `=` as upstream does.
pub fn unescape_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                ));
            }
            out.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            // Upstream prints the rune with %v, which gives its code point.
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ))
            }
            c => out.push(c),
        }
    }
    if escaped {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

/// Checks that the API version of a kind accepts a field in field selectors.
pub fn check_field_label(
    group: &str,
    version: &str,
    kind: &str,
    field: &str,
) -> Result<(), String> {
    convert_field_label(group, version, kind, field).map(|_| ())
}

/// The field name [`selectable_fields`] uses for a field selector's field, or upstream's
/// error (`field label not supported: foo`, or for kinds registering no conversion
/// `"foo" is not a known field selector: only "metadata.name", "metadata.namespace"`),
/// which the API server returns as 400 BadRequest.
pub fn convert_field_label(
    group: &str,
    version: &str,
    kind: &str,
    field: &str,
) -> Result<String, String> {
    let not_supported = || Err(format!("field label not supported: {field}"));
    let accept = |allowed: &[&str]| {
        if allowed.contains(&field) {
            Ok(field.to_string())
        } else {
            not_supported()
        }
    };
    match (group, version, kind) {
        ("", "v1", "Pod") => match field {
            "spec.host" => Ok("spec.nodeName".to_string()),
            _ => accept(&[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
            ]),
        },
        ("", "v1", "Node") => accept(&["metadata.name", "spec.unschedulable"]),
        ("", "v1", "ReplicationController") => {
            accept(&["metadata.name", "metadata.namespace", "status.replicas"])
        }
        ("", "v1", "Event") => accept(&[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "metadata.namespace",
            "metadata.name",
        ]),
        ("", "v1", "Namespace") => accept(&["status.phase", "metadata.name"]),
        ("", "v1", "Secret") => accept(&["type", "metadata.namespace", "metadata.name"]),
        ("", "v1", "Service") => accept(&[
            "metadata.namespace",
            "metadata.name",
            "spec.clusterIP",
            "spec.type",
        ]),
        ("events.k8s.io", "v1", "Event") => {
            let mapped = match field {
                "regarding.kind" => "involvedObject.kind",
                "regarding.namespace" => "involvedObject.namespace",
                "regarding.name" => "involvedObject.name",
                "regarding.uid" => "involvedObject.uid",
                "regarding.apiVersion" => "involvedObject.apiVersion",
                "regarding.resourceVersion" => "involvedObject.resourceVersion",
                "regarding.fieldPath" => "involvedObject.fieldPath",
                "reportingController" => "reportingComponent",
                "reason" | "source" | "type" | "metadata.namespace" | "metadata.name" => field,
                _ => return not_supported(),
            };
            Ok(mapped.to_string())
        }
        ("batch", "v1", "Job") => match field {
            "metadata.name" | "metadata.namespace" | "status.successful" => Ok(field.to_string()),
            _ => Err(format!("field label \"{field}\" not supported for batchv1.Job")),
        },
        // Every other kind registers no conversion and gets upstream's default.
        _ => match field {
            "metadata.name" | "metadata.namespace" => Ok(field.to_string()),
            _ => Err(format!(
                "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
            )),
        },
    }
}

fn str_at<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(obj, |v, k| v.get(*k))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn int_at(obj: &Value, path: &[&str]) -> String {
    path.iter()
        .try_fold(obj, |v, k| v.get(*k))
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .to_string()
}

fn bool_at(obj: &Value, path: &[&str]) -> String {
    path.iter()
        .try_fold(obj, |v, k| v.get(*k))
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

/// The fields an object exposes to field selectors, named as upstream's strategies name them
/// (events.k8s.io events use the core names, see [`FieldSelector::convert`]). Every kind has
/// `metadata.name` and `metadata.namespace` (empty for cluster-scoped objects, which matches
/// upstream, where the field is absent and reads as empty).
pub fn selectable_fields(group: &str, kind: &str, obj: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        (
            "metadata.name".into(),
            str_at(obj, &["metadata", "name"]).into(),
        ),
        (
            "metadata.namespace".into(),
            str_at(obj, &["metadata", "namespace"]).into(),
        ),
    ];
    let mut add = |k: &str, v: String| out.push((k.to_string(), v));
    match (group, kind) {
        ("", "Pod") => {
            add("spec.nodeName", str_at(obj, &["spec", "nodeName"]).into());
            add(
                "spec.restartPolicy",
                str_at(obj, &["spec", "restartPolicy"]).into(),
            );
            add(
                "spec.schedulerName",
                str_at(obj, &["spec", "schedulerName"]).into(),
            );
            add(
                "spec.serviceAccountName",
                str_at(obj, &["spec", "serviceAccountName"]).into(),
            );
            add("spec.hostNetwork", bool_at(obj, &["spec", "hostNetwork"]));
            add("status.phase", str_at(obj, &["status", "phase"]).into());
            // Upstream takes the first of podIPs; v1 objects may carry only podIP.
            let first_ip = obj
                .get("status")
                .and_then(|s| s.get("podIPs"))
                .and_then(Value::as_array)
                .and_then(|ips| ips.first())
                .and_then(|ip| ip.get("ip"))
                .and_then(Value::as_str)
                .unwrap_or_else(|| str_at(obj, &["status", "podIP"]));
            add("status.podIP", first_ip.into());
            add(
                "status.nominatedNodeName",
                str_at(obj, &["status", "nominatedNodeName"]).into(),
            );
        }
        ("", "Node") => add(
            "spec.unschedulable",
            bool_at(obj, &["spec", "unschedulable"]),
        ),
        ("", "Namespace") => add("status.phase", str_at(obj, &["status", "phase"]).into()),
        ("", "Secret") => add("type", str_at(obj, &["type"]).into()),
        ("", "Service") => {
            add("spec.clusterIP", str_at(obj, &["spec", "clusterIP"]).into());
            add("spec.type", str_at(obj, &["spec", "type"]).into());
        }
        ("", "ReplicationController") | ("apps", "ReplicaSet") => {
            add("status.replicas", int_at(obj, &["status", "replicas"]));
        }
        ("batch", "Job") => add("status.successful", int_at(obj, &["status", "succeeded"])),
        ("", "Event") | ("events.k8s.io", "Event") => event_fields(obj, &mut add),
        _ => {}
    }
    out
}

/// Event fields, from either the core/v1 or the events.k8s.io/v1 shape of the object.
fn event_fields(obj: &Value, add: &mut impl FnMut(&str, String)) {
    let new_shape = obj.get("regarding").is_some()
        || obj.get("apiVersion").and_then(Value::as_str) == Some("events.k8s.io/v1");
    let (target, reporting, source) = if new_shape {
        (
            "regarding",
            "reportingController",
            str_at(obj, &["deprecatedSource", "component"]),
        )
    } else {
        (
            "involvedObject",
            "reportingComponent",
            str_at(obj, &["source", "component"]),
        )
    };
    for f in [
        "kind",
        "namespace",
        "name",
        "uid",
        "apiVersion",
        "resourceVersion",
        "fieldPath",
    ] {
        add(
            &format!("involvedObject.{f}"),
            str_at(obj, &[target, f]).into(),
        );
    }
    add("reason", str_at(obj, &["reason"]).into());
    let reporting = str_at(obj, &[reporting]);
    add("reportingComponent", reporting.into());
    add(
        "source",
        if source.is_empty() { reporting } else { source }.into(),
    );
    add("type", str_at(obj, &["type"]).into());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parse_and_print() {
        let s = FieldSelector::parse("status.phase!=Running,spec.nodeName==n1").unwrap();
        assert_eq!(s.to_string(), "spec.nodeName=n1,status.phase!=Running");
        assert_eq!(s.requirements().len(), 2);
        assert_eq!(s.requires_exact_match("spec.nodeName"), Some("n1"));
        assert_eq!(s.requires_exact_match("status.phase"), None);
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(FieldSelector::parse(",,").unwrap().is_empty());
        assert_eq!(
            FieldSelector::parse("a=").unwrap().requirements()[0].value,
            ""
        );
    }

    #[test]
    fn escaping() {
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d,x=y").unwrap();
        assert_eq!(s.requirements()[0].value, r"a,b=c\d");
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d,x=y");
        assert_eq!(
            FieldSelector::parse(r"a=b\c").unwrap_err(),
            r"invalid field selector: invalid escape sequence: \c"
        );
        assert_eq!(
            FieldSelector::parse(r"a=b\").unwrap_err(),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(
            FieldSelector::parse("a=b=c").unwrap_err(),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            FieldSelector::parse("a=b,c").unwrap_err(),
            "invalid selector: 'a=b,c'; can't understand 'c'"
        );
    }

    #[test]
    fn matching() {
        let f = fields(&[("status.phase", "Running"), ("spec.nodeName", "n1")]);
        assert!(FieldSelector::parse("status.phase=Running")
            .unwrap()
            .matches(&f));
        assert!(!FieldSelector::parse("status.phase=Pending")
            .unwrap()
            .matches(&f));
        assert!(
            FieldSelector::parse("status.phase!=Pending,spec.nodeName=n1")
                .unwrap()
                .matches(&f)
        );
        assert!(FieldSelector::parse("missing=").unwrap().matches(&f));
        assert!(!FieldSelector::parse("missing!=").unwrap().matches(&f));
        assert!(FieldSelector::parse("").unwrap().matches(&f));
    }

    #[test]
    fn field_labels_per_kind() {
        assert!(check_field_label("", "v1", "Pod", "spec.nodeName").is_ok());
        assert_eq!(
            check_field_label("", "v1", "Pod", "foo").unwrap_err(),
            "field label not supported: foo"
        );
        assert_eq!(
            convert_field_label("", "v1", "Pod", "spec.host").unwrap(),
            "spec.nodeName"
        );
        assert!(check_field_label("", "v1", "Node", "metadata.namespace").is_err());
        assert_eq!(
            check_field_label("networking.k8s.io", "v1", "Ingress", "foo.bar").unwrap_err(),
            "\"foo.bar\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        assert!(check_field_label("apps", "v1", "Deployment", "metadata.namespace").is_ok());
        assert_eq!(
            check_field_label("batch", "v1", "Job", "status.succeeded").unwrap_err(),
            "field label \"status.succeeded\" not supported for batchv1.Job"
        );
        let s = FieldSelector::parse("regarding.name=p1,reportingController=kubelet")
            .unwrap()
            .convert("events.k8s.io", "v1", "Event")
            .unwrap();
        assert_eq!(
            s.to_string(),
            "involvedObject.name=p1,reportingComponent=kubelet"
        );
        assert!(FieldSelector::parse("involvedObject.name=p1")
            .unwrap()
            .convert("events.k8s.io", "v1", "Event")
            .is_err());
    }

    #[test]
    fn pod_fields() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "hostNetwork": true},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.42.0.5"}]}
        });
        let f = selectable_fields("", "Pod", &pod);
        let sel = |s: &str| FieldSelector::parse(s).unwrap().matches(&f);
        assert!(sel("metadata.name=p,metadata.namespace=ns"));
        assert!(sel("spec.nodeName=n1,spec.hostNetwork=true"));
        assert!(sel("status.podIP=10.42.0.5,status.phase=Running"));
        assert!(sel("spec.schedulerName="));
        let bare = selectable_fields("", "Pod", &json!({"metadata": {"name": "q"}}));
        assert!(FieldSelector::parse("spec.hostNetwork=false")
            .unwrap()
            .matches(&bare));
    }

    #[test]
    fn other_kind_fields() {
        let f = selectable_fields(
            "",
            "Node",
            &json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}}),
        );
        assert!(FieldSelector::parse("spec.unschedulable=true")
            .unwrap()
            .matches(&f));
        let f = selectable_fields("apps", "ReplicaSet", &json!({"status": {"replicas": 3}}));
        assert!(FieldSelector::parse("status.replicas=3")
            .unwrap()
            .matches(&f));
        let f = selectable_fields("batch", "Job", &json!({"status": {"succeeded": 1}}));
        assert!(FieldSelector::parse("status.successful=1")
            .unwrap()
            .matches(&f));
        let f = selectable_fields("", "Secret", &json!({"type": "Opaque"}));
        assert!(FieldSelector::parse("type=Opaque").unwrap().matches(&f));
        let core = json!({
            "involvedObject": {"kind": "Pod", "name": "p1"},
            "reason": "Started", "reportingComponent": "kubelet", "type": "Normal"
        });
        let f = selectable_fields("", "Event", &core);
        assert!(
            FieldSelector::parse("involvedObject.name=p1,source=kubelet,type=Normal")
                .unwrap()
                .matches(&f)
        );
        let new = json!({
            "apiVersion": "events.k8s.io/v1",
            "regarding": {"kind": "Pod", "name": "p1"},
            "reportingController": "kubelet", "deprecatedSource": {"component": "kl"}
        });
        let f = selectable_fields("events.k8s.io", "Event", &new);
        assert!(FieldSelector::parse(
            "involvedObject.kind=Pod,reportingComponent=kubelet,source=kl"
        )
        .unwrap()
        .matches(&f));
    }
}
