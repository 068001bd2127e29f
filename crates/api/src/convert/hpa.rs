//! `autoscaling/v1` ⇄ `autoscaling/v2` `HorizontalPodAutoscaler`.
//!
//! v1 only knows a CPU utilization target. Everything else v2 holds travels through v1 in
//! annotations, as upstream does: other metrics and the current metric statuses as v1-shaped
//! JSON, conditions as JSON, and the scaling behavior as upstream's internal Go type marshals it
//! (field names capitalised). Converting back to v2 restores them and drops the annotations.

use serde_json::{json, Map, Value};

use super::with_type;

/// Metrics other than the CPU utilization target, as v1 `MetricSpec` JSON.
pub const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// Every current metric status, as v1 `MetricStatus` JSON.
pub const METRIC_STATUSES_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// The status conditions.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// The scaling behavior.
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

const ROUND_TRIP: [&str; 4] = [
    METRICS_ANNOTATION,
    METRIC_STATUSES_ANNOTATION,
    CONDITIONS_ANNOTATION,
    BEHAVIOR_ANNOTATION,
];

/// Copies `keys` of `from` that are present, in order, into a new map.
fn pick(from: &Value, keys: &[&str]) -> Map<String, Value> {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = from.get(*k) {
            m.insert((*k).to_string(), v.clone());
        }
    }
    m
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<&Value>) {
    if let Some(v) = v.filter(|v| !v.is_null()) {
        m.insert(key.to_string(), v.clone());
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(v, |cur, k| cur.get(*k))
        .filter(|v| !v.is_null())
}

/// The metadata without the round-trip annotations (and without `annotations` once empty).
fn strip_round_trip(meta: Option<&Value>) -> Value {
    let mut meta = meta.cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        let empty = match m.get_mut("annotations").and_then(Value::as_object_mut) {
            Some(a) => {
                for k in ROUND_TRIP {
                    a.remove(k);
                }
                a.is_empty()
            }
            None => false,
        };
        if empty {
            m.remove("annotations");
        }
    }
    meta
}

fn is_cpu_utilization(metric: &Value) -> bool {
    s(metric, "type") == "Resource"
        && field(metric, &["resource"]).is_some()
        && s(&metric["resource"], "name") == "cpu"
        && field(metric, &["resource", "target", "averageUtilization"]).is_some()
}

// ---- metric shapes: v2 → v1 ----

fn metric_spec_to_v1(m: &Value) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), json!(s(m, "type")));
    if let Some(o) = field(m, &["object"]) {
        let mut v1 = Map::new();
        put(&mut v1, "target", field(o, &["describedObject"]));
        v1.insert("metricName".into(), json!(s(&o["metric"], "name")));
        put(&mut v1, "targetValue", field(o, &["target", "value"]));
        put(&mut v1, "selector", field(o, &["metric", "selector"]));
        put(
            &mut v1,
            "averageValue",
            field(o, &["target", "averageValue"]),
        );
        out.insert("object".into(), Value::Object(v1));
    }
    if let Some(p) = field(m, &["pods"]) {
        let mut v1 = Map::new();
        v1.insert("metricName".into(), json!(s(&p["metric"], "name")));
        put(
            &mut v1,
            "targetAverageValue",
            field(p, &["target", "averageValue"]),
        );
        put(&mut v1, "selector", field(p, &["metric", "selector"]));
        out.insert("pods".into(), Value::Object(v1));
    }
    for key in ["resource", "containerResource"] {
        if let Some(r) = field(m, &[key]) {
            let mut v1 = Map::new();
            v1.insert("name".into(), json!(s(r, "name")));
            put(
                &mut v1,
                "targetAverageUtilization",
                field(r, &["target", "averageUtilization"]),
            );
            put(
                &mut v1,
                "targetAverageValue",
                field(r, &["target", "averageValue"]),
            );
            if key == "containerResource" {
                v1.insert("container".into(), json!(s(r, "container")));
            }
            out.insert(key.into(), Value::Object(v1));
        }
    }
    if let Some(e) = field(m, &["external"]) {
        let mut v1 = Map::new();
        v1.insert("metricName".into(), json!(s(&e["metric"], "name")));
        put(&mut v1, "metricSelector", field(e, &["metric", "selector"]));
        put(&mut v1, "targetValue", field(e, &["target", "value"]));
        put(
            &mut v1,
            "targetAverageValue",
            field(e, &["target", "averageValue"]),
        );
        out.insert("external".into(), Value::Object(v1));
    }
    Value::Object(out)
}

fn metric_status_to_v1(m: &Value) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), json!(s(m, "type")));
    if let Some(o) = field(m, &["object"]) {
        let mut v1 = Map::new();
        put(&mut v1, "target", field(o, &["describedObject"]));
        v1.insert("metricName".into(), json!(s(&o["metric"], "name")));
        put(&mut v1, "currentValue", field(o, &["current", "value"]));
        put(&mut v1, "selector", field(o, &["metric", "selector"]));
        put(
            &mut v1,
            "averageValue",
            field(o, &["current", "averageValue"]),
        );
        out.insert("object".into(), Value::Object(v1));
    }
    if let Some(p) = field(m, &["pods"]) {
        let mut v1 = Map::new();
        v1.insert("metricName".into(), json!(s(&p["metric"], "name")));
        put(
            &mut v1,
            "currentAverageValue",
            field(p, &["current", "averageValue"]),
        );
        put(&mut v1, "selector", field(p, &["metric", "selector"]));
        out.insert("pods".into(), Value::Object(v1));
    }
    for key in ["resource", "containerResource"] {
        if let Some(r) = field(m, &[key]) {
            let mut v1 = Map::new();
            v1.insert("name".into(), json!(s(r, "name")));
            put(
                &mut v1,
                "currentAverageUtilization",
                field(r, &["current", "averageUtilization"]),
            );
            put(
                &mut v1,
                "currentAverageValue",
                field(r, &["current", "averageValue"]),
            );
            if key == "containerResource" {
                v1.insert("container".into(), json!(s(r, "container")));
            }
            out.insert(key.into(), Value::Object(v1));
        }
    }
    if let Some(e) = field(m, &["external"]) {
        let mut v1 = Map::new();
        v1.insert("metricName".into(), json!(s(&e["metric"], "name")));
        put(&mut v1, "metricSelector", field(e, &["metric", "selector"]));
        put(&mut v1, "currentValue", field(e, &["current", "value"]));
        put(
            &mut v1,
            "currentAverageValue",
            field(e, &["current", "averageValue"]),
        );
        out.insert("external".into(), Value::Object(v1));
    }
    Value::Object(out)
}

// ---- metric shapes: v1 → v2 ----

fn identifier(name: &Value, selector: Option<&Value>) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), name.clone());
    put(&mut m, "selector", selector);
    Value::Object(m)
}

fn target(ty: &str, value: Option<&Value>, avg: Option<&Value>, util: Option<&Value>) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(ty));
    put(&mut m, "value", value);
    put(&mut m, "averageValue", avg);
    put(&mut m, "averageUtilization", util);
    Value::Object(m)
}

fn current(value: Option<&Value>, avg: Option<&Value>, util: Option<&Value>) -> Value {
    let mut m = Map::new();
    put(&mut m, "value", value);
    put(&mut m, "averageValue", avg);
    put(&mut m, "averageUtilization", util);
    Value::Object(m)
}

fn name_of(v: &Value, key: &str) -> Value {
    json!(s(v, key))
}

fn metric_spec_to_v2(m: &Value) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), json!(s(m, "type")));
    if let Some(o) = field(m, &["object"]) {
        let avg = field(o, &["averageValue"]);
        let ty = if avg.is_none() {
            "Value"
        } else {
            "AverageValue"
        };
        let mut v2 = Map::new();
        put(&mut v2, "describedObject", field(o, &["target"]));
        v2.insert(
            "target".into(),
            target(ty, field(o, &["targetValue"]), avg, None),
        );
        v2.insert(
            "metric".into(),
            identifier(&name_of(o, "metricName"), field(o, &["selector"])),
        );
        out.insert("object".into(), Value::Object(v2));
    }
    if let Some(p) = field(m, &["pods"]) {
        let mut v2 = Map::new();
        v2.insert(
            "metric".into(),
            identifier(&name_of(p, "metricName"), field(p, &["selector"])),
        );
        v2.insert(
            "target".into(),
            target(
                "AverageValue",
                None,
                field(p, &["targetAverageValue"]),
                None,
            ),
        );
        out.insert("pods".into(), Value::Object(v2));
    }
    for key in ["resource", "containerResource"] {
        if let Some(r) = field(m, &[key]) {
            let util = field(r, &["targetAverageUtilization"]);
            let ty = if util.is_none() {
                "AverageValue"
            } else {
                "Utilization"
            };
            let mut v2 = Map::new();
            v2.insert("name".into(), name_of(r, "name"));
            v2.insert(
                "target".into(),
                target(ty, None, field(r, &["targetAverageValue"]), util),
            );
            if key == "containerResource" {
                v2.insert("container".into(), name_of(r, "container"));
            }
            out.insert(key.into(), Value::Object(v2));
        }
    }
    if let Some(e) = field(m, &["external"]) {
        let value = field(e, &["targetValue"]);
        let ty = if value.is_none() {
            "AverageValue"
        } else {
            "Value"
        };
        let mut v2 = Map::new();
        v2.insert(
            "metric".into(),
            identifier(&name_of(e, "metricName"), field(e, &["metricSelector"])),
        );
        v2.insert(
            "target".into(),
            target(ty, value, field(e, &["targetAverageValue"]), None),
        );
        out.insert("external".into(), Value::Object(v2));
    }
    Value::Object(out)
}

fn metric_status_to_v2(m: &Value) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), json!(s(m, "type")));
    if let Some(o) = field(m, &["object"]) {
        let mut v2 = Map::new();
        v2.insert(
            "metric".into(),
            identifier(&name_of(o, "metricName"), field(o, &["selector"])),
        );
        v2.insert(
            "current".into(),
            current(
                field(o, &["currentValue"]),
                field(o, &["averageValue"]),
                None,
            ),
        );
        put(&mut v2, "describedObject", field(o, &["target"]));
        out.insert("object".into(), Value::Object(v2));
    }
    if let Some(p) = field(m, &["pods"]) {
        let mut v2 = Map::new();
        v2.insert(
            "metric".into(),
            identifier(&name_of(p, "metricName"), field(p, &["selector"])),
        );
        v2.insert(
            "current".into(),
            current(None, field(p, &["currentAverageValue"]), None),
        );
        out.insert("pods".into(), Value::Object(v2));
    }
    for key in ["resource", "containerResource"] {
        if let Some(r) = field(m, &[key]) {
            let mut v2 = Map::new();
            v2.insert("name".into(), name_of(r, "name"));
            v2.insert(
                "current".into(),
                current(
                    None,
                    field(r, &["currentAverageValue"]),
                    field(r, &["currentAverageUtilization"]),
                ),
            );
            if key == "containerResource" {
                v2.insert("container".into(), name_of(r, "container"));
            }
            out.insert(key.into(), Value::Object(v2));
        }
    }
    if let Some(e) = field(m, &["external"]) {
        let mut v2 = Map::new();
        v2.insert(
            "metric".into(),
            identifier(&name_of(e, "metricName"), field(e, &["metricSelector"])),
        );
        v2.insert(
            "current".into(),
            current(
                field(e, &["currentValue"]),
                field(e, &["currentAverageValue"]),
                None,
            ),
        );
        out.insert("external".into(), Value::Object(v2));
    }
    Value::Object(out)
}

// ---- behavior: upstream marshals its internal type, whose fields carry no JSON tags ----

const RULE_FIELDS: [(&str, &str); 4] = [
    ("stabilizationWindowSeconds", "StabilizationWindowSeconds"),
    ("selectPolicy", "SelectPolicy"),
    ("policies", "Policies"),
    ("tolerance", "Tolerance"),
];
const POLICY_FIELDS: [(&str, &str); 3] = [
    ("type", "Type"),
    ("value", "Value"),
    ("periodSeconds", "PeriodSeconds"),
];

fn behavior_to_internal(b: &Value) -> Value {
    let rules = |r: Option<&Value>| -> Value {
        let Some(r) = r else {
            return Value::Null;
        };
        let mut m = Map::new();
        for (json_name, go_name) in RULE_FIELDS {
            // Tolerance is newer than v1.32's internal type: only written when set.
            if json_name == "tolerance" && field(r, &[json_name]).is_none() {
                continue;
            }
            let v = match (json_name, field(r, &[json_name])) {
                ("policies", Some(Value::Array(ps))) => Value::Array(
                    ps.iter()
                        .map(|p| {
                            let mut pm = Map::new();
                            for (j, g) in POLICY_FIELDS {
                                let default = if j == "type" { json!("") } else { json!(0) };
                                pm.insert(g.into(), p.get(j).cloned().unwrap_or(default));
                            }
                            Value::Object(pm)
                        })
                        .collect(),
                ),
                (_, v) => v.cloned().unwrap_or(Value::Null),
            };
            m.insert(go_name.into(), v);
        }
        Value::Object(m)
    };
    json!({
        "ScaleUp": rules(field(b, &["scaleUp"])),
        "ScaleDown": rules(field(b, &["scaleDown"])),
    })
}

/// Go's decoder matches field names case-insensitively.
fn get_ci<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn behavior_from_internal(b: &Value) -> Option<Value> {
    let rules = |r: &Value| -> Value {
        let mut m = Map::new();
        for (json_name, go_name) in RULE_FIELDS {
            let Some(v) = get_ci(r, go_name) else {
                continue;
            };
            let v = match (json_name, v) {
                ("policies", Value::Array(ps)) => Value::Array(
                    ps.iter()
                        .map(|p| {
                            let mut pm = Map::new();
                            for (j, g) in POLICY_FIELDS {
                                put(&mut pm, j, get_ci(p, g));
                            }
                            Value::Object(pm)
                        })
                        .collect(),
                ),
                (_, v) => v.clone(),
            };
            m.insert(json_name.into(), v);
        }
        Value::Object(m)
    };
    let mut out = Map::new();
    if let Some(up) = get_ci(b, "ScaleUp") {
        out.insert("scaleUp".into(), rules(up));
    }
    if let Some(down) = get_ci(b, "ScaleDown") {
        out.insert("scaleDown".into(), rules(down));
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

// ---- whole objects ----

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    field(obj, &["metadata", "annotations", key]).and_then(Value::as_str)
}

fn parse_array(text: Option<&str>) -> Option<Vec<Value>> {
    serde_json::from_str::<Value>(text?)
        .ok()?
        .as_array()
        .cloned()
}

/// A stored `autoscaling/v2` autoscaler as `autoscaling/v1` serves it.
pub(crate) fn hpa_v2_to_v1(obj: Value) -> Result<Value, String> {
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = obj.get("status").cloned().unwrap_or_else(|| json!({}));
    let metrics = spec
        .get("metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    let mut meta = strip_round_trip(obj.get("metadata"));
    let mut annotations: Vec<(&str, String)> = Vec::new();
    let encode = |v: &Value| serde_json::to_string(v).map_err(|e| e.to_string());

    let others: Vec<Value> = metrics
        .iter()
        .filter(|m| !is_cpu_utilization(m))
        .map(metric_spec_to_v1)
        .collect();
    if !others.is_empty() {
        annotations.push((METRICS_ANNOTATION, encode(&Value::Array(others))?));
    }
    let current_metrics = status
        .get("currentMetrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !current_metrics.is_empty() {
        let v1: Vec<Value> = current_metrics.iter().map(metric_status_to_v1).collect();
        annotations.push((METRIC_STATUSES_ANNOTATION, encode(&Value::Array(v1))?));
    }
    if let Some(b) = field(&spec, &["behavior"]) {
        annotations.push((BEHAVIOR_ANNOTATION, encode(&behavior_to_internal(b))?));
    }
    if let Some(conditions) = status
        .get("conditions")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    {
        let v1: Vec<Value> = conditions
            .iter()
            .map(|c| {
                Value::Object(pick(
                    c,
                    &["type", "status", "lastTransitionTime", "reason", "message"],
                ))
            })
            .collect();
        annotations.push((CONDITIONS_ANNOTATION, encode(&Value::Array(v1))?));
    }
    if !annotations.is_empty() {
        let m = meta.as_object_mut().ok_or("metadata is not an object")?;
        let a = m
            .entry("annotations")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or("metadata.annotations is not an object")?;
        for (k, v) in annotations {
            a.insert(k.to_string(), json!(v));
        }
    }

    let mut v1_spec = pick(&spec, &["scaleTargetRef", "minReplicas", "maxReplicas"]);
    if let Some(cpu) = metrics.iter().find(|m| is_cpu_utilization(m)) {
        v1_spec.insert(
            "targetCPUUtilizationPercentage".into(),
            cpu["resource"]["target"]["averageUtilization"].clone(),
        );
    }

    let mut v1_status = pick(&status, &["observedGeneration", "lastScaleTime"]);
    v1_status.insert(
        "currentReplicas".into(),
        status.get("currentReplicas").cloned().unwrap_or(json!(0)),
    );
    v1_status.insert(
        "desiredReplicas".into(),
        status.get("desiredReplicas").cloned().unwrap_or(json!(0)),
    );
    // Upstream keeps the last CPU utilization it meets.
    let cpu_status = current_metrics
        .iter()
        .rev()
        .filter(|m| s(m, "type") == "Resource" && field(m, &["resource"]).is_some())
        .filter(|m| s(&m["resource"], "name") == "cpu")
        .find_map(|m| field(m, &["resource", "current", "averageUtilization"]));
    put(
        &mut v1_status,
        "currentCPUUtilizationPercentage",
        cpu_status,
    );

    let mut out = Map::new();
    out.insert("metadata".into(), meta);
    out.insert("spec".into(), Value::Object(v1_spec));
    out.insert("status".into(), Value::Object(v1_status));
    Ok(with_type(
        Value::Object(out),
        "autoscaling/v1",
        "HorizontalPodAutoscaler",
    ))
}

/// An `autoscaling/v1` autoscaler in the stored `autoscaling/v2` shape.
pub(crate) fn hpa_v1_to_v2(obj: Value) -> Value {
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = obj.get("status").cloned().unwrap_or_else(|| json!({}));

    let mut v2_spec = pick(&spec, &["scaleTargetRef", "minReplicas", "maxReplicas"]);
    let mut metrics: Vec<Value> = Vec::new();
    if let Some(others) = parse_array(annotation(&obj, METRICS_ANNOTATION)) {
        metrics.extend(others.iter().map(metric_spec_to_v2));
    }
    // Upstream appends the CPU target after the annotation's metrics.
    if let Some(cpu) = field(&spec, &["targetCPUUtilizationPercentage"]) {
        metrics.push(json!({
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": cpu},
            },
        }));
    }
    if !metrics.is_empty() {
        v2_spec.insert("metrics".into(), Value::Array(metrics));
    }
    if let Some(b) = annotation(&obj, BEHAVIOR_ANNOTATION)
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|b| behavior_from_internal(&b))
    {
        v2_spec.insert("behavior".into(), b);
    }

    let mut v2_status = pick(&status, &["observedGeneration", "lastScaleTime"]);
    if let Some(n) = status
        .get("currentReplicas")
        .filter(|v| v.as_i64() != Some(0) && !v.is_null())
    {
        v2_status.insert("currentReplicas".into(), n.clone());
    }
    v2_status.insert(
        "desiredReplicas".into(),
        status.get("desiredReplicas").cloned().unwrap_or(json!(0)),
    );
    let current_metrics = match parse_array(annotation(&obj, METRIC_STATUSES_ANNOTATION)) {
        // The annotation holds every status, the CPU one included.
        Some(all) => all.iter().map(metric_status_to_v2).collect(),
        None => field(&status, &["currentCPUUtilizationPercentage"])
            .map(|cpu| {
                vec![json!({
                    "type": "Resource",
                    "resource": {"name": "cpu", "current": {"averageUtilization": cpu}},
                })]
            })
            .unwrap_or_default(),
    };
    if !current_metrics.is_empty() {
        v2_status.insert("currentMetrics".into(), Value::Array(current_metrics));
    }
    if let Some(conditions) = parse_array(annotation(&obj, CONDITIONS_ANNOTATION)) {
        v2_status.insert("conditions".into(), Value::Array(conditions));
    }

    let mut out = Map::new();
    out.insert("metadata".into(), strip_round_trip(obj.get("metadata")));
    out.insert("spec".into(), Value::Object(v2_spec));
    out.insert("status".into(), Value::Object(v2_status));
    with_type(
        Value::Object(out),
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
    )
}
