//! apps/v1 defaults.

use serde_json::{json, Value};

use super::core::{persistent_volume_claim, pod_template};
use super::{field, has, items, set_default};

fn template(spec: &mut Value) {
    if has(spec, "template") {
        pod_template(field(spec, "template"));
    }
}

/// Deployment: replicas 1, RollingUpdate 25%/25%, history 10, progress deadline 600.
pub fn deployment(obj: &mut Value) {
    let spec = field(obj, "spec");
    set_default(spec, "replicas", json!(1));
    let strategy = field(spec, "strategy");
    set_default(strategy, "type", json!("RollingUpdate"));
    if strategy["type"] == "RollingUpdate" {
        let ru = field(strategy, "rollingUpdate");
        set_default(ru, "maxUnavailable", json!("25%"));
        set_default(ru, "maxSurge", json!("25%"));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    template(spec);
}

/// ReplicaSet: replicas 1.
pub fn replica_set(obj: &mut Value) {
    let spec = field(obj, "spec");
    set_default(spec, "replicas", json!(1));
    template(spec);
}

/// StatefulSet: OrderedReady, RollingUpdate partition 0, replicas 1, history 10, PVC
/// retention Retain/Retain; claim templates get PVC defaults.
pub fn stateful_set(obj: &mut Value) {
    let spec = field(obj, "spec");
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    let us = field(spec, "updateStrategy");
    set_default(us, "type", json!("RollingUpdate"));
    if us["type"] == "RollingUpdate" {
        set_default(field(us, "rollingUpdate"), "partition", json!(0));
    }
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    let ret = field(spec, "persistentVolumeClaimRetentionPolicy");
    set_default(ret, "whenDeleted", json!("Retain"));
    set_default(ret, "whenScaled", json!("Retain"));
    for pvc in items(spec, "volumeClaimTemplates") {
        persistent_volume_claim(pvc);
    }
    template(spec);
}

/// DaemonSet: RollingUpdate with maxUnavailable 1 and maxSurge 0, history 10.
pub fn daemon_set(obj: &mut Value) {
    let spec = field(obj, "spec");
    let us = field(spec, "updateStrategy");
    set_default(us, "type", json!("RollingUpdate"));
    if us["type"] == "RollingUpdate" {
        let ru = field(us, "rollingUpdate");
        set_default(ru, "maxUnavailable", json!(1));
        set_default(ru, "maxSurge", json!(0));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    template(spec);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults() {
        let mut d =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        deployment(&mut d);
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        assert_eq!(s["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            s["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        let mut d = json!({"spec": {"strategy": {"type": "Recreate"}}});
        deployment(&mut d);
        assert!(d["spec"]["strategy"].get("rollingUpdate").is_none());
    }

    #[test]
    fn sts_and_ds_defaults() {
        let mut s = json!({"spec": {"volumeClaimTemplates": [{"spec": {}}]}});
        stateful_set(&mut s);
        let sp = &s["spec"];
        assert_eq!(sp["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            sp["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            sp["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            sp["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        let mut d = json!({});
        daemon_set(&mut d);
        assert_eq!(
            d["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
    }
}
