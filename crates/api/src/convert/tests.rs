use serde_json::{json, Value};

use super::*;

fn core_event() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "web.17a", "namespace": "default", "resourceVersion": "7"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web", "uid": "u1", "apiVersion": "v1", "fieldPath": "spec.containers{app}"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container",
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": "2024-05-01T11:00:00Z",
        "lastTimestamp": "2024-05-01T11:59:30Z",
        "count": 12,
        "type": "Warning",
        "eventTime": null,
        "series": {"count": 2, "lastObservedTime": "2024-05-01T11:59:30.000000Z"},
        "action": "Restarting",
        "related": {"kind": "Node", "name": "n1"},
        "reportingComponent": "kubelet",
        "reportingInstance": "n1",
    })
}

#[test]
fn core_event_reads_as_events_k8s_io() {
    let ev = from_storage("events.k8s.io", "v1", "Event", core_event()).unwrap();
    assert_eq!(ev["apiVersion"], "events.k8s.io/v1");
    assert_eq!(ev["kind"], "Event");
    assert_eq!(ev["regarding"]["name"], "web");
    assert_eq!(ev["note"], "Back-off restarting failed container");
    assert_eq!(
        ev["deprecatedSource"],
        json!({"component": "kubelet", "host": "n1"})
    );
    assert_eq!(ev["deprecatedFirstTimestamp"], "2024-05-01T11:00:00Z");
    assert_eq!(ev["deprecatedLastTimestamp"], "2024-05-01T11:59:30Z");
    assert_eq!(ev["deprecatedCount"], 12);
    assert_eq!(ev["reportingController"], "kubelet");
    assert_eq!(ev["reportingInstance"], "n1");
    assert_eq!(ev["series"]["count"], 2);
    assert_eq!(ev["action"], "Restarting");
    assert_eq!(ev["related"]["kind"], "Node");
    assert_eq!(
        (ev["type"].clone(), ev["reason"].clone()),
        (json!("Warning"), json!("BackOff"))
    );
    for core_only in [
        "involvedObject",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "reportingComponent",
    ] {
        assert!(ev.get(core_only).is_none(), "{core_only} leaked");
    }
    assert_eq!(
        to_storage("events.k8s.io", "v1", "Event", ev).unwrap(),
        core_event()
    );
}

#[test]
fn events_k8s_io_event_stores_as_core() {
    let new = json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "x.1", "namespace": "default"},
        "eventTime": "2024-05-01T11:59:00.123456Z",
        "reportingController": "example.com/ctl",
        "reportingInstance": "ctl-1",
        "action": "Scaled",
        "reason": "ScalingUp",
        "regarding": {"kind": "Deployment", "name": "web"},
        "note": "scaled up",
        "type": "Normal",
        // A core field has no place in this shape and is dropped, as a typed decode would.
        "message": "stray",
    });
    let core = to_storage("events.k8s.io", "v1", "Event", new.clone()).unwrap();
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "scaled up");
    assert_eq!(core["involvedObject"]["kind"], "Deployment");
    assert_eq!(core["reportingComponent"], "example.com/ctl");
    assert_eq!(core["eventTime"], "2024-05-01T11:59:00.123456Z");
    let mut back = from_storage("events.k8s.io", "v1", "Event", core).unwrap();
    back["message"] = json!("stray");
    let mut want = new;
    want.as_object_mut().unwrap().remove("message");
    want["message"] = json!("stray");
    assert_eq!(back, want);
}

#[test]
fn identity_for_other_kinds_sets_type_meta() {
    let cm = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
    let stored = to_storage("", "v1", "ConfigMap", cm.clone()).unwrap();
    assert_eq!(
        stored,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}})
    );
    let served = from_storage(
        "apps",
        "v1",
        "Deployment",
        json!({"apiVersion": "x", "kind": "y", "spec": {}}),
    )
    .unwrap();
    assert_eq!(
        served,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {}})
    );
    let hpa2 = from_storage(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        json!({"spec": {}}),
    )
    .unwrap();
    assert_eq!(hpa2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        to_storage("", "v1", "Pod", json!([1])).unwrap_err(),
        "object is not a JSON object"
    );
}

fn v1_hpa() -> Value {
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"team": "a"}},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
            "minReplicas": 1,
            "maxReplicas": 5,
            "targetCPUUtilizationPercentage": 60,
        },
        "status": {
            "observedGeneration": 3,
            "lastScaleTime": "2024-05-01T10:00:00Z",
            "currentReplicas": 2,
            "desiredReplicas": 3,
            "currentCPUUtilizationPercentage": 75,
        },
    })
}

#[test]
fn v1_autoscaler_maps_cpu_target_onto_v2_metrics() {
    let v2 = to_storage("autoscaling", "v1", "HorizontalPodAutoscaler", v1_hpa()).unwrap();
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}])
    );
    assert_eq!(
        v2["status"]["currentMetrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 75}}}])
    );
    assert_eq!(v2["status"]["currentReplicas"], 2);
    assert!(v2["spec"].get("targetCPUUtilizationPercentage").is_none());
    let back = from_storage("autoscaling", "v1", "HorizontalPodAutoscaler", v2).unwrap();
    // Upstream records every current metric, the CPU one included, whenever there is any.
    let mut want = v1_hpa();
    want["metadata"]["annotations"][METRIC_STATUSES_ANNOTATION] =
        json!(r#"[{"type":"Resource","resource":{"name":"cpu","currentAverageUtilization":75}}]"#);
    assert_eq!(back, want);
    let again = to_storage("autoscaling", "v1", "HorizontalPodAutoscaler", back).unwrap();
    assert_eq!(
        again,
        to_storage("autoscaling", "v1", "HorizontalPodAutoscaler", v1_hpa()).unwrap()
    );
}

fn v2_hpa() -> Value {
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps", "selector": {"matchLabels": {"a": "b"}}}, "target": {"type": "AverageValue", "averageValue": "10"}}},
                {"type": "Object", "object": {"describedObject": {"kind": "Ingress", "name": "main", "apiVersion": "networking.k8s.io/v1"}, "target": {"type": "Value", "value": "2k"}, "metric": {"name": "requests"}}},
                {"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "AverageValue", "averageValue": "30"}}},
                {"type": "ContainerResource", "containerResource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}, "container": "app"}},
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
            ],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]},
                "scaleDown": {"stabilizationWindowSeconds": 300, "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]},
            },
        },
        "status": {
            "observedGeneration": 4,
            "currentReplicas": 3,
            "desiredReplicas": 4,
            "currentMetrics": [
                {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "400Mi"}}},
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageValue": "250m", "averageUtilization": 90}}},
            ],
            "conditions": [
                {"type": "AbleToScale", "status": "True", "lastTransitionTime": "2024-05-01T10:00:00Z", "reason": "ReadyForNewScale", "message": "recommended size matches current size"},
            ],
        },
    })
}

#[test]
fn v2_only_fields_survive_a_trip_through_v1() {
    let v1 = from_storage("autoscaling", "v1", "HorizontalPodAutoscaler", v2_hpa()).unwrap();
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 80);
    assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 90);
    assert!(v1["spec"].get("metrics").is_none());
    let ann = &v1["metadata"]["annotations"];
    let others: Value = serde_json::from_str(ann[METRICS_ANNOTATION].as_str().unwrap()).unwrap();
    assert_eq!(others.as_array().unwrap().len(), 5);
    assert_eq!(
        others[0],
        json!({"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "500Mi"}})
    );
    assert_eq!(
        others[2],
        json!({"type": "Object", "object": {"target": {"kind": "Ingress", "name": "main", "apiVersion": "networking.k8s.io/v1"}, "metricName": "requests", "targetValue": "2k"}})
    );
    assert_eq!(
        others[4],
        json!({"type": "ContainerResource", "containerResource": {"name": "cpu", "targetAverageUtilization": 70, "container": "app"}})
    );
    let statuses: Value =
        serde_json::from_str(ann[METRIC_STATUSES_ANNOTATION].as_str().unwrap()).unwrap();
    assert_eq!(
        statuses[1],
        json!({"type": "Resource", "resource": {"name": "cpu", "currentAverageUtilization": 90, "currentAverageValue": "250m"}})
    );
    // Upstream marshals its internal behavior type, which has no JSON tags.
    assert_eq!(
        ann[BEHAVIOR_ANNOTATION],
        r#"{"ScaleUp":{"StabilizationWindowSeconds":0,"SelectPolicy":"Max","Policies":[{"Type":"Pods","Value":4,"PeriodSeconds":15},{"Type":"Percent","Value":100,"PeriodSeconds":15}]},"ScaleDown":{"StabilizationWindowSeconds":300,"SelectPolicy":null,"Policies":[{"Type":"Percent","Value":100,"PeriodSeconds":15}]}}"#
    );
    assert!(ann[CONDITIONS_ANNOTATION]
        .as_str()
        .unwrap()
        .contains("ReadyForNewScale"));

    let back = to_storage("autoscaling", "v1", "HorizontalPodAutoscaler", v1).unwrap();
    assert_eq!(back, v2_hpa());
}

#[test]
fn writes_through_v1_keep_v2_metrics_and_drop_stale_annotations() {
    let mut v1 = from_storage("autoscaling", "v1", "HorizontalPodAutoscaler", v2_hpa()).unwrap();
    v1["spec"]["targetCPUUtilizationPercentage"] = json!(50);
    v1["metadata"]["annotations"]["team"] = json!("b");
    let v2 = to_storage("autoscaling", "v1", "HorizontalPodAutoscaler", v1).unwrap();
    let metrics = v2["spec"]["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 6);
    assert_eq!(metrics[5]["resource"]["target"]["averageUtilization"], 50);
    assert_eq!(metrics[0]["resource"]["name"], "memory");
    assert_eq!(v2["metadata"]["annotations"], json!({"team": "b"}));

    // Stale round-trip annotations on a stored object are replaced, not merged.
    let mut stored = v2_hpa();
    stored["metadata"]["annotations"] =
        json!({(METRICS_ANNOTATION): "[]", (BEHAVIOR_ANNOTATION): "{}"});
    stored["spec"].as_object_mut().unwrap().remove("behavior");
    let v1 = from_storage("autoscaling", "v1", "HorizontalPodAutoscaler", stored).unwrap();
    assert!(v1["metadata"]["annotations"]
        .get(BEHAVIOR_ANNOTATION)
        .is_none());
    assert_ne!(v1["metadata"]["annotations"][METRICS_ANNOTATION], "[]");

    // Malformed annotations are ignored, as upstream ignores unmarshal errors.
    let mut bad = v1_hpa();
    bad["metadata"]["annotations"] =
        json!({(METRICS_ANNOTATION): "not json", (BEHAVIOR_ANNOTATION): "{}"});
    let v2 = to_storage("autoscaling", "v1", "HorizontalPodAutoscaler", bad).unwrap();
    assert_eq!(v2["spec"]["metrics"].as_array().unwrap().len(), 1);
    assert!(v2["spec"].get("behavior").is_none());
    assert!(v2["metadata"].get("annotations").is_none());
}

#[test]
fn v1_decodes_behavior_field_names_case_insensitively() {
    let mut v1 = v1_hpa();
    v1["metadata"]["annotations"][BEHAVIOR_ANNOTATION] = json!(
        r#"{"scaleDown":{"stabilizationWindowSeconds":60,"policies":[{"type":"Pods","value":1,"periodSeconds":60}]}}"#
    );
    let v2 = to_storage("autoscaling", "v1", "HorizontalPodAutoscaler", v1).unwrap();
    assert_eq!(
        v2["spec"]["behavior"],
        json!({"scaleDown": {"stabilizationWindowSeconds": 60, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}})
    );
}

#[test]
fn v2_without_status_reads_as_v1_with_zero_replicas() {
    let v2 = json!({"metadata": {"name": "h"}, "spec": {"maxReplicas": 3}});
    let v1 = from_storage("autoscaling", "v1", "HorizontalPodAutoscaler", v2).unwrap();
    assert_eq!(
        v1["status"],
        json!({"currentReplicas": 0, "desiredReplicas": 0})
    );
    assert!(v1["metadata"].get("annotations").is_none());
    assert!(v1["spec"].get("targetCPUUtilizationPercentage").is_none());
}
