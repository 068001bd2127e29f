//! core/v1 defaults.

use serde_json::{json, Value};

use super::{field, has, items, map, set_default};

/// Defaults of a Pod object.
pub fn pod(obj: &mut Value) {
    let spec = field(obj, "spec");
    // Requests default to limits for every container (SetDefaults_Pod).
    for key in ["containers", "initContainers"] {
        for c in items(spec, key) {
            copy_limits_to_requests(c);
        }
    }
    set_default(spec, "enableServiceLinks", json!(true));
    pod_spec(spec);
}

/// Defaults of a pod template (`metadata` + `spec`) embedded in a workload.
pub fn pod_template(tmpl: &mut Value) {
    if tmpl.is_object() || tmpl.is_null() {
        pod_spec(field(tmpl, "spec"));
    }
}

fn copy_limits_to_requests(c: &mut Value) {
    let Some(limits) = c
        .pointer("/resources/limits")
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    let req = field(field(c, "resources"), "requests");
    let m = map(req);
    for (k, v) in limits {
        m.entry(k).or_insert(v);
    }
}

/// Defaults of a pod spec (SetDefaults_PodSpec and the nested container, probe and volume
/// defaults).
pub fn pod_spec(spec: &mut Value) {
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    // A negative grace period means "immediately"; upstream stores 1.
    if spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|g| g < 0)
    {
        spec["terminationGracePeriodSeconds"] = json!(1);
    }
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in items(spec, key) {
            container(c, host_network);
        }
    }
    for v in items(spec, "volumes") {
        volume(v);
    }
}

fn container(c: &mut Value, host_network: bool) {
    if !c.is_object() {
        return;
    }
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    set_default(c, "imagePullPolicy", json!(default_pull_policy(&image)));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    for p in items(c, "ports") {
        set_default(p, "protocol", json!("TCP"));
        if host_network {
            if let Some(cp) = p.get("containerPort").cloned() {
                set_default(p, "hostPort", cp);
            }
        }
    }
    for e in items(c, "env") {
        if let Some(fr) = e.pointer_mut("/valueFrom/fieldRef") {
            set_default(fr, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).filter(|p| p.is_object()) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            handler(p);
        }
    }
    if let Some(lc) = c.get_mut("lifecycle").filter(|l| l.is_object()) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lc.get_mut(hook).filter(|h| h.is_object()) {
                handler(h);
            }
        }
    }
}

fn handler(h: &mut Value) {
    if let Some(g) = h.get_mut("httpGet").filter(|g| g.is_object()) {
        set_default(g, "path", json!("/"));
        set_default(g, "scheme", json!("HTTP"));
    }
    if let Some(g) = h.get_mut("grpc").filter(|g| g.is_object()) {
        set_default(g, "service", json!(""));
    }
}

/// `Always` for `:latest` or an untagged image without digest, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.split_once(':').map(|(_, t)| t);
    match tag {
        Some("latest") => "Always",
        None if !digest => "Always",
        _ => "IfNotPresent",
    }
}

const VOLUME_SOURCES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "downwardAPI",
    "fc",
    "flexVolume",
    "configMap",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "projected",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn volume(v: &mut Value) {
    if !v.is_object() {
        return;
    }
    if !VOLUME_SOURCES.iter().any(|s| has(v, s)) {
        v["emptyDir"] = json!({});
    }
    for src in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(src).filter(|s| s.is_object()) {
            set_default(s, "defaultMode", json!(420));
        }
    }
    if let Some(h) = v.get_mut("hostPath").filter(|s| s.is_object()) {
        set_default(h, "type", json!(""));
    }
    if let Some(p) = v.get_mut("projected").filter(|s| s.is_object()) {
        for s in items(p, "sources") {
            if let Some(t) = s.get_mut("serviceAccountToken").filter(|t| t.is_object()) {
                set_default(t, "expirationSeconds", json!(3600));
            }
        }
    }
    for src in ["iscsi", "rbd"] {
        if let Some(s) = v.get_mut(src).filter(|s| s.is_object()) {
            if src == "iscsi" {
                set_default(s, "iscsiInterface", json!("default"));
            } else {
                set_default(s, "pool", json!("rbd"));
                set_default(s, "user", json!("admin"));
                set_default(s, "keyring", json!("/etc/ceph/keyring"));
            }
        }
    }
    if let Some(s) = v.get_mut("azureDisk").filter(|s| s.is_object()) {
        set_default(s, "cachingMode", json!("ReadWrite"));
        set_default(s, "fsType", json!("ext4"));
        set_default(s, "readOnly", json!(false));
        set_default(s, "kind", json!("Shared"));
    }
    if let Some(e) = v
        .pointer_mut("/ephemeral/volumeClaimTemplate/spec")
        .filter(|s| s.is_object())
    {
        set_default(e, "volumeMode", json!("Filesystem"));
    }
}

/// ReplicationController: replicas 1; selector and labels from the template's labels.
pub fn replication_controller(obj: &mut Value) {
    let tmpl_labels = obj
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()));
    let spec = field(obj, "spec");
    set_default(spec, "replicas", json!(1));
    if let Some(labels) = &tmpl_labels {
        if spec
            .get("selector")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
        {
            spec["selector"] = labels.clone();
        }
    }
    if has(spec, "template") {
        let t = field(spec, "template");
        pod_template(t);
    }
    if let Some(labels) = tmpl_labels {
        let meta = field(obj, "metadata");
        if meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
        {
            meta["labels"] = labels;
        }
    }
}

/// Service defaults, including the IP family fields the registry fills upstream.
pub fn service(obj: &mut Value) {
    let spec = field(obj, "spec");
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let ty = spec["type"].as_str().unwrap_or("").to_string();
    if spec["sessionAffinity"] == "ClientIP" {
        let cfg = field(field(spec, "sessionAffinityConfig"), "clientIP");
        set_default(cfg, "timeoutSeconds", json!(10800));
    }
    for p in items(spec, "ports") {
        set_default(p, "protocol", json!("TCP"));
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if unset {
            if let Some(port) = p.get("port").cloned() {
                p["targetPort"] = port;
            }
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        let v6 = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .is_some_and(|ip| ip.contains(':'));
        set_default(
            spec,
            "ipFamilies",
            json!([if v6 { "IPv6" } else { "IPv4" }]),
        );
    }
}

/// Namespace: the `kubernetes` finalizer and phase Active.
pub fn namespace(obj: &mut Value) {
    // The `kubernetes` finalizer is not a default: the API server adds it on create only (the
    // namespace controller removes it through `finalize`), as upstream's strategy does.
    set_default(field(obj, "status"), "phase", json!("Active"));
}

/// Node: allocatable defaults to capacity.
pub fn node(obj: &mut Value) {
    if let Some(cap) = obj.pointer("/status/capacity").cloned() {
        set_default(field(obj, "status"), "allocatable", cap);
    }
}

/// Endpoints: port protocol TCP.
pub fn endpoints(obj: &mut Value) {
    for subset in items(obj, "subsets") {
        for p in items(subset, "ports") {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// Secret: type Opaque; `stringData` is merged into `data` (base64) as upstream's v1
/// conversion does, overriding keys of `data`.
pub fn secret(obj: &mut Value) {
    use base64::Engine;
    if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        if let Some(sd) = sd.as_object().filter(|m| !m.is_empty()) {
            let data = map(field(obj, "data"));
            for (k, v) in sd {
                let enc = base64::engine::general_purpose::STANDARD
                    .encode(v.as_str().unwrap_or("").as_bytes());
                data.insert(k.clone(), json!(enc));
            }
        }
    }
    set_default(obj, "type", json!("Opaque"));
    if obj.get("type").and_then(Value::as_str) == Some("") {
        obj["type"] = json!("Opaque");
    }
}

/// PersistentVolume: reclaim policy Retain, volume mode Filesystem, phase Pending.
pub fn persistent_volume(obj: &mut Value) {
    let spec = field(obj, "spec");
    set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
    set_default(spec, "volumeMode", json!("Filesystem"));
    if let Some(h) = spec.get_mut("hostPath").filter(|s| s.is_object()) {
        set_default(h, "type", json!(""));
    }
    set_default(field(obj, "status"), "phase", json!("Pending"));
}

/// PersistentVolumeClaim: volume mode Filesystem, phase Pending.
pub fn persistent_volume_claim(obj: &mut Value) {
    set_default(field(obj, "spec"), "volumeMode", json!("Filesystem"));
    set_default(field(obj, "status"), "phase", json!("Pending"));
}

/// LimitRange: for Container items, `default` falls back to `max` and `defaultRequest` to
/// `default` (then `max`), resource by resource.
pub fn limit_range(obj: &mut Value) {
    let spec = field(obj, "spec");
    for item in items(spec, "limits") {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let max = item
            .get("max")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if !max.is_empty() {
            let d = map(field(item, "default"));
            for (k, v) in &max {
                d.entry(k.clone()).or_insert(v.clone());
            }
        }
        let def = item
            .get("default")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if !def.is_empty() || !max.is_empty() {
            let dr = map(field(item, "defaultRequest"));
            for (k, v) in def.iter().chain(max.iter()) {
                dr.entry(k.clone()).or_insert(v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults() {
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "nginx:1.2",
            "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "1"}},
            "readinessProbe": {"httpGet": {"port": 80}}}],
            "volumes": [{"name": "a"}, {"name": "s", "secret": {"secretName": "x"}}]}});
        pod(&mut p);
        let s = &p["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["securityContext"], json!({}));
        assert_eq!(s["enableServiceLinks"], true);
        let c = &s["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["resources"]["requests"]["cpu"], "1");
        assert_eq!(
            c["readinessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
            "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(s["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(s["volumes"][1]["secret"]["defaultMode"], 420);
    }

    #[test]
    fn pull_policy() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(
            default_pull_policy("localhost:5000/nginx:1"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn service_defaults() {
        let mut s = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81, "targetPort": "http"}]}});
        service(&mut s);
        let sp = &s["spec"];
        assert_eq!(sp["sessionAffinity"], "None");
        assert_eq!(sp["ports"][0]["targetPort"], 80);
        assert_eq!(sp["ports"][0]["protocol"], "TCP");
        assert_eq!(sp["ports"][1]["targetPort"], "http");
        assert_eq!(sp["externalTrafficPolicy"], "Cluster");
        assert_eq!(sp["internalTrafficPolicy"], "Cluster");
        assert_eq!(sp["ipFamilyPolicy"], "SingleStack");
        assert_eq!(sp["ipFamilies"], json!(["IPv4"]));
        let mut s = json!({"spec": {}});
        service(&mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert!(s["spec"].get("externalTrafficPolicy").is_none());
    }

    #[test]
    fn namespace_and_secret() {
        let mut n = json!({"metadata": {"name": "x"}});
        namespace(&mut n);
        assert!(
            n["spec"].get("finalizers").is_none(),
            "finalizer is the server's, on create"
        );
        assert_eq!(n["status"]["phase"], "Active");
        let mut s = json!({"stringData": {"a": "hi"}, "data": {"a": "eA==", "b": "eQ=="}});
        secret(&mut s);
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"], json!({"a": "aGk=", "b": "eQ=="}));
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn rc_and_limit_range() {
        let mut rc = json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}}});
        replication_controller(&mut rc);
        assert_eq!(rc["spec"]["replicas"], 1);
        assert_eq!(rc["spec"]["selector"], json!({"a": "b"}));
        assert_eq!(rc["metadata"]["labels"], json!({"a": "b"}));
        let mut lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "default": {"memory": "1Gi"}}]}});
        limit_range(&mut lr);
        assert_eq!(
            lr["spec"]["limits"][0]["default"],
            json!({"memory": "1Gi", "cpu": "2"})
        );
        assert_eq!(
            lr["spec"]["limits"][0]["defaultRequest"],
            json!({"memory": "1Gi", "cpu": "2"})
        );
    }
}
