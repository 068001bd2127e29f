//! apps/v1 workloads.

use serde_json::Value;

use super::errors::{
    forbidden, immutable, invalid, non_negative, not_supported, required, Raw, FIELD_IMMUTABLE,
    IS_NEGATIVE,
};
use super::json::{arr, get, i, obj, present, s};
use super::{core::go_string_map, names, pod};
use crate::Cause;

/// Go's `%#v` of a `metav1.LabelSelector`, as upstream prints it in immutability errors.
pub(crate) fn go_label_selector(sel: &Value) -> String {
    let ml = if sel.get("matchLabels").is_some_and(|m| m.is_object()) {
        go_string_map(get(sel, "matchLabels"))
    } else {
        "map[string]string(nil)".into()
    };
    let exprs = arr(sel, "matchExpressions");
    let me = if exprs.is_empty() {
        "[]v1.LabelSelectorRequirement(nil)".to_string()
    } else {
        let items: Vec<String> = exprs
            .iter()
            .map(|e| {
                let vals: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
                format!(
                    "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                    super::errors::go_quote(s(e, "key")),
                    super::errors::go_quote(s(e, "operator")),
                    super::meta::go_string_slice(&vals)
                )
            })
            .collect();
        format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
    };
    format!("v1.LabelSelector{{MatchLabels:{ml}, MatchExpressions:{me}}}")
}

/// `ValidateLabelSelector`.
pub(crate) fn validate_label_selector(sel: &Value, path: &str, errs: &mut Vec<Cause>) {
    for (idx, e) in arr(sel, "matchExpressions").iter().enumerate() {
        let ep = format!("{path}.matchExpressions[{idx}]");
        let vals = arr(e, "values");
        match s(e, "operator") {
            "In" | "NotIn" => {
                if vals.is_empty() {
                    errs.push(required(
                        format!("{ep}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !vals.is_empty() {
                    errs.push(forbidden(
                        format!("{ep}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(invalid(
                format!("{ep}.operator"),
                op,
                "not a valid selector operator",
            )),
        }
        let key = s(e, "key");
        for m in names::qualified_name(key) {
            errs.push(invalid(format!("{ep}.key"), key, &m));
        }
    }
    super::meta::validate_labels(
        get(sel, "matchLabels"),
        &format!("{path}.matchLabels"),
        errs,
    );
}

/// Whether a label selector matches a label set.
pub(crate) fn selector_matches(sel: &Value, labels: &Value) -> bool {
    let get_l = |k: &str| labels.get(k).and_then(Value::as_str);
    let ml_ok = obj(sel, "matchLabels")
        .into_iter()
        .flatten()
        .all(|(k, v)| get_l(k) == v.as_str());
    let me_ok = arr(sel, "matchExpressions").iter().all(|e| {
        let vals: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        let cur = get_l(s(e, "key"));
        match s(e, "operator") {
            "In" => cur.is_some_and(|c| vals.contains(&c)),
            "NotIn" => cur.is_none_or(|c| !vals.contains(&c)),
            "Exists" => cur.is_some(),
            "DoesNotExist" => cur.is_none(),
            _ => false,
        }
    });
    ml_ok && me_ok
}

fn selector_empty(sel: &Value) -> bool {
    obj(sel, "matchLabels").is_none_or(|m| m.is_empty()) && arr(sel, "matchExpressions").is_empty()
}

/// Selector presence, syntax, non-emptiness, template match and pod template rules shared by
/// the replicated workloads; `what` names the kind in upstream's messages.
fn validate_selector_and_template(
    spec: &Value,
    what: &str,
    empty_name: &str,
    errs: &mut Vec<Cause>,
) {
    let sel = get(spec, "selector");
    if !sel.is_object() {
        errs.push(required("spec.selector", ""));
    } else {
        validate_label_selector(sel, "spec.selector", errs);
        if selector_empty(sel) {
            errs.push(invalid(
                "spec.selector",
                Raw(go_label_selector(sel)),
                &format!("empty selector is invalid for {empty_name}"),
            ));
        }
    }
    let tmpl = get(spec, "template");
    if !tmpl.is_object() {
        errs.push(required("spec.template", ""));
        return;
    }
    let labels = tmpl
        .pointer("/metadata/labels")
        .unwrap_or(&super::json::NULL);
    if sel.is_object() && !selector_empty(sel) && !selector_matches(sel, labels) {
        errs.push(invalid(
            "spec.template.metadata.labels",
            Raw(go_string_map(labels)),
            "`selector` does not match template `labels`",
        ));
    }
    errs.extend(pod::validate_pod_template_spec(tmpl, "spec.template"));
    let tspec = get(tmpl, "spec");
    let rp = s(tspec, "restartPolicy");
    if rp != "Always" {
        errs.push(not_supported(
            "spec.template.spec.restartPolicy",
            rp,
            &["Always"],
        ));
    }
    if present(tspec, "activeDeadlineSeconds") {
        errs.push(forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            &format!("activeDeadlineSeconds in {what} is not Supported"),
        ));
    }
}

fn int_or_percent(v: &Value) -> Option<(i64, bool)> {
    match v {
        Value::Number(n) => n.as_i64().map(|n| (n, false)),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|d| d.parse().ok())
            .map(|n| (n, true)),
        _ => None,
    }
}

fn render_int_or_string(v: &Value) -> Raw {
    Raw(match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn validate_positive_int_or_percent(v: &Value, path: &str, errs: &mut Vec<Cause>) {
    match v {
        Value::String(st) => {
            for m in names::percent(st) {
                errs.push(invalid(path, render_int_or_string(v), &m));
            }
        }
        Value::Number(n) => non_negative(path, n.as_i64(), errs),
        _ => {}
    }
    if let Some((n, true)) = int_or_percent(v) {
        if n > 100 {
            errs.push(invalid(
                path,
                render_int_or_string(v),
                "must not be greater than 100%",
            ));
        }
    }
}

fn validate_rolling(ru: &Value, path: &str, zero_msg: &str, errs: &mut Vec<Cause>) {
    let mu = get(ru, "maxUnavailable");
    let ms = get(ru, "maxSurge");
    validate_positive_int_or_percent(mu, &format!("{path}.maxUnavailable"), errs);
    validate_positive_int_or_percent(ms, &format!("{path}.maxSurge"), errs);
    let zero = |v: &Value| v.is_null() || int_or_percent(v).is_some_and(|(n, _)| n == 0);
    if zero(mu) && zero(ms) {
        errs.push(invalid(
            format!("{path}.maxUnavailable"),
            render_int_or_string(mu),
            zero_msg,
        ));
    }
}

fn common_counts(spec: &Value, errs: &mut Vec<Cause>) {
    non_negative("spec.replicas", i(spec, "replicas"), errs);
    non_negative("spec.minReadySeconds", i(spec, "minReadySeconds"), errs);
    non_negative(
        "spec.revisionHistoryLimit",
        i(spec, "revisionHistoryLimit"),
        errs,
    );
}

/// `ValidateDeployment` minus ObjectMeta.
pub fn validate_deployment(d: &Value) -> Vec<Cause> {
    let spec = get(d, "spec");
    let mut errs = Vec::new();
    non_negative("spec.replicas", i(spec, "replicas"), &mut errs);
    validate_selector_and_template(spec, "ReplicaSet", "deployment", &mut errs);
    let st = get(spec, "strategy");
    match s(st, "type") {
        "Recreate" => {
            if present(st, "rollingUpdate") {
                errs.push(forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            if !present(st, "rollingUpdate") {
                errs.push(required(
                    "spec.strategy.rollingUpdate",
                    "this should be defaulted and never be nil",
                ));
            } else {
                validate_rolling(
                    get(st, "rollingUpdate"),
                    "spec.strategy.rollingUpdate",
                    "may not be 0 when `maxSurge` is 0",
                    &mut errs,
                );
            }
        }
        _ => errs.push(not_supported(
            "spec.strategy",
            Raw(st.to_string()),
            &["Recreate", "RollingUpdate"],
        )),
    }
    non_negative(
        "spec.minReadySeconds",
        i(spec, "minReadySeconds"),
        &mut errs,
    );
    non_negative(
        "spec.revisionHistoryLimit",
        i(spec, "revisionHistoryLimit"),
        &mut errs,
    );
    if let Some(p) = i(spec, "progressDeadlineSeconds") {
        non_negative("spec.progressDeadlineSeconds", Some(p), &mut errs);
        if p <= i(spec, "minReadySeconds").unwrap_or(0) {
            errs.push(invalid(
                "spec.progressDeadlineSeconds",
                p,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

fn selector_immutable(new: &Value, old: &Value, errs: &mut Vec<Cause>) {
    let (n, o) = (new.pointer("/spec/selector"), old.pointer("/spec/selector"));
    if n.filter(|v| !v.is_null()) != o.filter(|v| !v.is_null()) {
        errs.push(invalid(
            "spec.selector",
            Raw(go_label_selector(n.unwrap_or(&super::json::NULL))),
            FIELD_IMMUTABLE,
        ));
    }
}

/// `ValidateDeploymentUpdate` minus ObjectMeta (apps/v1: the selector is immutable).
pub fn validate_deployment_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = validate_deployment(new);
    selector_immutable(new, old, &mut errs);
    errs
}

/// `ValidateReplicaSet` minus ObjectMeta.
pub fn validate_replica_set(rs: &Value) -> Vec<Cause> {
    let spec = get(rs, "spec");
    let mut errs = Vec::new();
    non_negative("spec.replicas", i(spec, "replicas"), &mut errs);
    non_negative(
        "spec.minReadySeconds",
        i(spec, "minReadySeconds"),
        &mut errs,
    );
    validate_selector_and_template(spec, "ReplicaSet", "deployment", &mut errs);
    errs
}

/// `ValidateReplicaSetUpdate` minus ObjectMeta.
pub fn validate_replica_set_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = validate_replica_set(new);
    selector_immutable(new, old, &mut errs);
    errs
}

/// `ValidateStatefulSet` minus ObjectMeta.
pub fn validate_stateful_set(sts: &Value) -> Vec<Cause> {
    let spec = get(sts, "spec");
    let mut errs = Vec::new();
    match s(spec, "podManagementPolicy") {
        "" => errs.push(required("spec.podManagementPolicy", "")),
        "OrderedReady" | "Parallel" => {}
        p => errs.push(invalid(
            "spec.podManagementPolicy",
            p,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let us = get(spec, "updateStrategy");
    match s(us, "type") {
        "" => errs.push(required("spec.updateStrategy", "")),
        "OnDelete" => {
            if present(us, "rollingUpdate") {
                errs.push(invalid(
                    "spec.updateStrategy.rollingUpdate",
                    Raw(get(us, "rollingUpdate").to_string()),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            let ru = get(us, "rollingUpdate");
            non_negative(
                "spec.updateStrategy.rollingUpdate.partition",
                i(ru, "partition"),
                &mut errs,
            );
            if let Some(mu) = ru.get("maxUnavailable") {
                validate_positive_int_or_percent(
                    mu,
                    "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    &mut errs,
                );
                if int_or_percent(mu).is_some_and(|(n, _)| n == 0) {
                    errs.push(invalid(
                        "spec.updateStrategy.rollingUpdate.maxUnavailable",
                        render_int_or_string(mu),
                        "must be greater than 0",
                    ));
                }
            }
        }
        _ => errs.push(invalid(
            "spec.updateStrategy",
            Raw(us.to_string()),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    let ret = get(spec, "persistentVolumeClaimRetentionPolicy");
    for f in ["whenDeleted", "whenScaled"] {
        let v = s(ret, f);
        if ret.is_object() && v != "Retain" && v != "Delete" {
            errs.push(not_supported(
                format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                v,
                &["Retain", "Delete"],
            ));
        }
    }
    if let Some(st) = i(spec.get("ordinals").unwrap_or(&super::json::NULL), "start") {
        non_negative("spec.ordinals.start", Some(st), &mut errs);
    }
    let svc = s(spec, "serviceName");
    if !svc.is_empty() {
        for m in names::dns1123_label(svc) {
            errs.push(invalid("spec.serviceName", svc, &m));
        }
    }
    common_counts(spec, &mut errs);
    validate_selector_and_template(spec, "StatefulSet", "statefulset", &mut errs);
    errs
}

/// `ValidateStatefulSetUpdate` minus ObjectMeta.
pub fn validate_stateful_set_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = validate_stateful_set(new);
    let mut n = get(new, "spec").clone();
    let o = get(old, "spec");
    if let Some(m) = n.as_object_mut() {
        for k in [
            "replicas",
            "template",
            "updateStrategy",
            "minReadySeconds",
            "ordinals",
            "revisionHistoryLimit",
            "persistentVolumeClaimRetentionPolicy",
        ] {
            match o.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
    }
    if &n != o {
        errs.push(forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
    errs
}

/// `ValidateDaemonSet` minus ObjectMeta.
pub fn validate_daemon_set(ds: &Value) -> Vec<Cause> {
    let spec = get(ds, "spec");
    let mut errs = Vec::new();
    validate_selector_and_template(spec, "DaemonSet", "daemonset", &mut errs);
    non_negative(
        "spec.minReadySeconds",
        i(spec, "minReadySeconds"),
        &mut errs,
    );
    non_negative(
        "spec.templateGeneration",
        i(spec, "templateGeneration"),
        &mut errs,
    );
    non_negative(
        "spec.revisionHistoryLimit",
        i(spec, "revisionHistoryLimit"),
        &mut errs,
    );
    let us = get(spec, "updateStrategy");
    match s(us, "type") {
        "OnDelete" => {}
        "RollingUpdate" => {
            if !present(us, "rollingUpdate") {
                errs.push(required("spec.updateStrategy.rollingUpdate", ""));
            } else {
                validate_rolling(
                    get(us, "rollingUpdate"),
                    "spec.updateStrategy.rollingUpdate",
                    "cannot be 0 when maxSurge is 0",
                    &mut errs,
                );
            }
        }
        _ => errs.push(not_supported(
            "spec.updateStrategy",
            Raw(us.to_string()),
            &["OnDelete", "RollingUpdate"],
        )),
    }
    errs
}

/// `ValidateDaemonSetUpdate` minus ObjectMeta.
pub fn validate_daemon_set_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = validate_daemon_set(new);
    selector_immutable(new, old, &mut errs);
    errs
}

/// ControllerRevision: revision is non-negative.
pub fn validate_controller_revision(cr: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    non_negative("revision", i(cr, "revision"), &mut errs);
    errs
}

/// ControllerRevision update: data is immutable.
pub fn validate_controller_revision_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = validate_controller_revision(new);
    immutable("data", new.get("data"), old.get("data"), &mut errs);
    errs
}

/// Status counters of the replicated workloads are non-negative.
pub fn validate_replicas_status(obj_: &Value) -> Vec<Cause> {
    let st = get(obj_, "status");
    let mut errs = Vec::new();
    for f in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
        "fullyLabeledReplicas",
        "currentReplicas",
        "observedGeneration",
    ] {
        if let Some(v) = i(st, f).filter(|v| *v < 0) {
            errs.push(invalid(format!("status.{f}"), v, IS_NEGATIVE));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(sel: Value, labels: Value) -> Value {
        let mut d = json!({"metadata": {"name": "d", "namespace": "n"}, "spec": {"selector": sel,
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        crate::defaults::apply("apps", "v1", "Deployment", &mut d);
        d
    }

    #[test]
    fn deployment_rules() {
        assert_eq!(
            validate_deployment(&deploy(
                json!({"matchLabels": {"app": "a"}}),
                json!({"app": "a"})
            )),
            vec![]
        );
        let e = validate_deployment(&deploy(
            json!({"matchLabels": {"app": "a"}}),
            json!({"app": "b"}),
        ));
        assert_eq!(
            e,
            vec![invalid(
                "spec.template.metadata.labels",
                Raw("map[string]string{\"app\":\"b\"}".into()),
                "`selector` does not match template `labels`"
            )]
        );
        let e = validate_deployment(&deploy(json!({}), json!({"app": "b"})));
        assert_eq!(e[0].message, "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment");
        let mut d = deploy(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        d["spec"]["replicas"] = json!(-1);
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        d["spec"]["strategy"]["rollingUpdate"] = json!({"maxUnavailable": 0, "maxSurge": "200%"});
        let e = validate_deployment(&d);
        assert_eq!(
            e,
            vec![
                invalid("spec.replicas", -1i64, IS_NEGATIVE),
                not_supported("spec.template.spec.restartPolicy", "Never", &["Always"]),
                invalid(
                    "spec.strategy.rollingUpdate.maxSurge",
                    Raw("200%".into()),
                    "must not be greater than 100%"
                ),
            ]
        );
    }

    #[test]
    fn selector_immutable_on_update() {
        let old = deploy(
            json!({"matchLabels": {"app": "a"}}),
            json!({"app": "a", "x": "y"}),
        );
        let new = deploy(
            json!({"matchLabels": {"app": "a", "x": "y"}}),
            json!({"app": "a", "x": "y"}),
        );
        let e = validate_deployment_update(&new, &old);
        assert_eq!(e, vec![invalid("spec.selector", Raw("v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"a\", \"x\":\"y\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}".into()), FIELD_IMMUTABLE)]);
    }

    #[test]
    fn match_expressions() {
        let sel = json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}, {"key": "b", "operator": "DoesNotExist"}]});
        assert!(selector_matches(&sel, &json!({"a": "x"})));
        assert!(!selector_matches(&sel, &json!({"a": "x", "b": "1"})));
        let mut errs = Vec::new();
        validate_label_selector(
            &json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            "spec.selector",
            &mut errs,
        );
        assert_eq!(
            errs,
            vec![required(
                "spec.selector.matchExpressions[0].values",
                "must be specified when `operator` is 'In' or 'NotIn'"
            )]
        );
    }

    #[test]
    fn statefulset_and_daemonset() {
        let mut s = json!({"metadata": {"name": "s", "namespace": "n"}, "spec": {"serviceName": "s", "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        crate::defaults::apply("apps", "v1", "StatefulSet", &mut s);
        assert_eq!(validate_stateful_set(&s), vec![]);
        let mut n = s.clone();
        n["spec"]["replicas"] = json!(3);
        assert_eq!(validate_stateful_set_update(&n, &s), vec![]);
        n["spec"]["serviceName"] = json!("t");
        assert_eq!(
            validate_stateful_set_update(&n, &s)[0].reason,
            "FieldValueForbidden"
        );
        let mut d = json!({"metadata": {"name": "s", "namespace": "n"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        crate::defaults::apply("apps", "v1", "DaemonSet", &mut d);
        assert_eq!(validate_daemon_set(&d), vec![]);
        d["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = json!(0);
        assert_eq!(
            validate_daemon_set(&d),
            vec![invalid(
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                Raw("0".into()),
                "cannot be 0 when maxSurge is 0"
            )]
        );
    }
}
