//! Defaults of the remaining groups (autoscaling, networking, discovery, storage, scheduling).

use serde_json::{json, Value};

use super::{field, has, items, set_default};

/// Dispatches on group and kind; kinds without defaults are left alone.
pub fn apply(group: &str, version: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(version, obj),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(obj),
        ("discovery.k8s.io", "EndpointSlice") => {
            for p in items(obj, "ports") {
                set_default(p, "name", json!(""));
                set_default(p, "protocol", json!("TCP"));
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            set_default(obj, "reclaimPolicy", json!("Delete"));
            set_default(obj, "volumeBindingMode", json!("Immediate"));
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            set_default(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        _ => {}
    }
}

fn hpa(version: &str, obj: &mut Value) {
    let spec = field(obj, "spec");
    set_default(spec, "minReplicas", json!(1));
    if version != "v2" {
        return;
    }
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty())
    {
        spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    }
    // Behavior defaults only apply once the user asks for a behavior.
    if !has(spec, "behavior") {
        return;
    }
    let behavior = field(spec, "behavior");
    let up = field(behavior, "scaleUp");
    set_default(up, "stabilizationWindowSeconds", json!(0));
    set_default(up, "selectPolicy", json!("Max"));
    set_default(
        up,
        "policies",
        json!([{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]),
    );
    let down = field(behavior, "scaleDown");
    set_default(down, "selectPolicy", json!("Max"));
    set_default(
        down,
        "policies",
        json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
    );
}

fn network_policy(obj: &mut Value) {
    let spec = field(obj, "spec");
    for dir in ["ingress", "egress"] {
        for rule in items(spec, dir) {
            for p in items(rule, "ports") {
                set_default(p, "protocol", json!("TCP"));
            }
        }
    }
    if spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(|p| p.is_empty())
    {
        let egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty());
        spec["policyTypes"] = if egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misc_defaults() {
        let mut np = json!({"spec": {"egress": [{"ports": [{"port": 53}]}]}});
        apply("networking.k8s.io", "v1", "NetworkPolicy", &mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        let mut sc = json!({"provisioner": "x"});
        apply("storage.k8s.io", "v1", "StorageClass", &mut sc);
        assert_eq!(
            (sc["reclaimPolicy"].clone(), sc["volumeBindingMode"].clone()),
            (json!("Delete"), json!("Immediate"))
        );
        let mut h = json!({"spec": {"maxReplicas": 3}});
        apply("autoscaling", "v2", "HorizontalPodAutoscaler", &mut h);
        assert_eq!(h["spec"]["minReplicas"], 1);
        assert_eq!(
            h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        let mut pc = json!({"value": 5});
        apply("scheduling.k8s.io", "v1", "PriorityClass", &mut pc);
        assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
    }
}
