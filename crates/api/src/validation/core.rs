//! core/v1 kinds other than pods.

use serde_json::Value;

use super::errors::{
    duplicate, forbidden, immutable, invalid, non_negative, not_supported, required, too_long, Raw,
    FIELD_IMMUTABLE,
};
use super::json::{arr, b, get, i, obj, opt_s, present, s};
use super::{names, pod};
use crate::Cause;

const MAX_SECRET_SIZE: usize = 1024 * 1024;
const IMMUTABLE_WHEN_SET: &str = "field is immutable when `immutable` is set";
const IP_ERR: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// Go's `%#v` of a `map[string]string` (keys sorted, as fmt prints maps).
pub(crate) fn go_string_map(v: &Value) -> String {
    let mut pairs: Vec<(String, String)> = v
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}:{}",
                super::errors::go_quote(k),
                super::errors::go_quote(v)
            )
        })
        .collect();
    format!("map[string]string{{{}}}", items.join(", "))
}

fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// ReplicationController spec.
pub fn validate_rc(obj_: &Value) -> Vec<Cause> {
    let spec = get(obj_, "spec");
    let mut errs = Vec::new();
    let sel = get(spec, "selector");
    if sel.as_object().is_none_or(|m| m.is_empty()) {
        errs.push(required("spec.selector", ""));
    } else {
        super::meta::validate_labels(sel, "spec.selector", &mut errs);
    }
    non_negative("spec.replicas", i(spec, "replicas"), &mut errs);
    non_negative(
        "spec.minReadySeconds",
        i(spec, "minReadySeconds"),
        &mut errs,
    );
    let tmpl = get(spec, "template");
    if !tmpl.is_object() {
        errs.push(required("spec.template", ""));
        return errs;
    }
    let labels = tmpl
        .pointer("/metadata/labels")
        .unwrap_or(&super::json::NULL);
    if let Some(sel) = sel.as_object().filter(|m| !m.is_empty()) {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            errs.push(invalid(
                "spec.template.metadata.labels",
                Raw(go_string_map(labels)),
                "`selector` does not match template `labels`",
            ));
        }
    }
    errs.extend(pod::validate_pod_template_spec(tmpl, "spec.template"));
    let rp = s(get(tmpl, "spec"), "restartPolicy");
    if rp != "Always" {
        errs.push(not_supported(
            "spec.template.spec.restartPolicy",
            rp,
            &["Always"],
        ));
    }
    if present(get(tmpl, "spec"), "activeDeadlineSeconds") {
        errs.push(forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicationController is not Supported",
        ));
    }
    errs
}

fn headless(spec: &Value) -> bool {
    s(spec, "clusterIP") == "None"
        || arr(spec, "clusterIPs").first().and_then(Value::as_str) == Some("None")
}

fn cluster_ips(spec: &Value) -> Vec<String> {
    let ips: Vec<String> = arr(spec, "clusterIPs")
        .iter()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    if ips.is_empty() && !s(spec, "clusterIP").is_empty() {
        return vec![s(spec, "clusterIP").to_string()];
    }
    ips
}

/// Go's `%#v` of the `core.ServicePort` key upstream reports duplicates with.
fn service_port_key(proto: &str, port: i64) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:\"{proto}\", AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}"
    )
}

/// `ValidateService`, plus `ValidateServiceUpdate`'s cluster IP rule when `old` is given.
pub fn validate_service(svc: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = get(svc, "spec");
    let mut errs = Vec::new();
    let ty = s(spec, "type");
    let ports = arr(spec, "ports");
    let ips = cluster_ips(spec);
    if ports.is_empty() && !headless(spec) && ty != "ExternalName" {
        errs.push(required("spec.ports", ""));
    }
    match ty {
        "LoadBalancer" | "NodePort" => {
            if ty == "LoadBalancer" {
                for (idx, p) in ports.iter().enumerate() {
                    if i(p, "port") == Some(10250) {
                        errs.push(invalid(
                            format!("spec.ports[{idx}]"),
                            10250i64,
                            "may not expose port 10250 externally since it is used by kubelet",
                        ));
                    }
                }
            }
            if headless(spec) {
                errs.push(invalid(
                    "spec.clusterIPs[0]",
                    "None",
                    &format!("may not be set to 'None' for {ty} services"),
                ));
            }
        }
        "ExternalName" => {
            if !arr(spec, "clusterIPs").is_empty() || !s(spec, "clusterIP").is_empty() {
                errs.push(forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            if !arr(spec, "ipFamilies").is_empty() {
                errs.push(forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                ));
            }
            if present(spec, "ipFamilyPolicy") {
                errs.push(forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                ));
            }
            let cname = s(spec, "externalName").trim_end_matches('.');
            if cname.is_empty() {
                errs.push(required("spec.externalName", ""));
            } else {
                for m in names::dns1123_subdomain(cname) {
                    errs.push(invalid("spec.externalName", cname, &m));
                }
            }
        }
        _ => {}
    }
    let mut seen_names = std::collections::HashSet::new();
    for (idx, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{idx}]");
        let name = s(p, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(required(format!("{pp}.name"), ""));
        } else if !name.is_empty() {
            for m in names::dns1123_label(name) {
                errs.push(invalid(format!("{pp}.name"), name, &m));
            }
            if !seen_names.insert(name) {
                errs.push(duplicate(format!("{pp}.name"), name));
            }
        }
        let port = i(p, "port").unwrap_or(0);
        for m in names::port_num(port) {
            errs.push(invalid(format!("{pp}.port"), port, &m));
        }
        pod::validate_protocol(p, &pp, &mut errs);
        if let Some(tp) = p.get("targetPort") {
            pod::validate_port_num_or_name(tp, &format!("{pp}.targetPort"), &mut errs);
        }
        if let Some(np) = i(p, "nodePort").filter(|n| *n != 0) {
            if !(30000..=32767).contains(&np) {
                errs.push(invalid(format!("{pp}.nodePort"), np, "provided port is not in the valid range. The range of valid ports is 30000-32767"));
            }
        }
    }
    if spec.get("selector").is_some_and(Value::is_object) {
        super::meta::validate_labels(get(spec, "selector"), "spec.selector", &mut errs);
    }
    match s(spec, "sessionAffinity") {
        "" => errs.push(required("spec.sessionAffinity", "")),
        "ClientIP" | "None" => {}
        other => errs.push(not_supported(
            "spec.sessionAffinity",
            other,
            &["ClientIP", "None"],
        )),
    }
    for (idx, ip) in ips.iter().enumerate() {
        if ip != "None" && !ip.is_empty() && !is_ip(ip) {
            errs.push(invalid(
                format!("spec.clusterIPs[{idx}]"),
                ip.as_str(),
                IP_ERR,
            ));
        }
    }
    for (idx, ip) in arr(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        if !is_ip(ip) {
            errs.push(invalid(format!("spec.externalIPs[{idx}]"), ip, IP_ERR));
        }
    }
    match ty {
        "" => errs.push(required("spec.type", "")),
        "ClusterIP" | "ExternalName" | "LoadBalancer" | "NodePort" => {}
        other => errs.push(not_supported(
            "spec.type",
            other,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        )),
    }
    if ty == "ClusterIP" {
        for (idx, p) in ports.iter().enumerate() {
            if i(p, "nodePort").unwrap_or(0) != 0 {
                errs.push(forbidden(
                    format!("spec.ports[{idx}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = std::collections::HashSet::new();
    for (idx, p) in ports.iter().enumerate() {
        let np = i(p, "nodePort").unwrap_or(0);
        if np != 0 && !node_ports.insert((s(p, "protocol"), np)) {
            errs.push(duplicate(format!("spec.ports[{idx}].nodePort"), np));
        }
    }
    let mut keys = std::collections::HashSet::new();
    for (idx, p) in ports.iter().enumerate() {
        let (proto, port) = (s(p, "protocol"), i(p, "port").unwrap_or(0));
        if !keys.insert((proto, port)) {
            errs.push(duplicate(
                format!("spec.ports[{idx}]"),
                Raw(service_port_key(proto, port)),
            ));
        }
    }
    for (field, valid) in [
        ("externalTrafficPolicy", &["Cluster", "Local"][..]),
        ("internalTrafficPolicy", &["Cluster", "Local"][..]),
    ] {
        if let Some(v) = opt_s(spec, field) {
            if !valid.contains(&v) {
                errs.push(not_supported(format!("spec.{field}"), v, valid));
            }
        }
    }
    if present(spec, "externalTrafficPolicy") && ty != "NodePort" && ty != "LoadBalancer" {
        errs.push(invalid(
            "spec.externalTrafficPolicy",
            s(spec, "externalTrafficPolicy"),
            "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
        ));
    }
    if let Some(p) = opt_s(spec, "ipFamilyPolicy") {
        const P: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
        if !P.contains(&p) {
            errs.push(not_supported("spec.ipFamilyPolicy", p, P));
        }
    }
    for (idx, f) in arr(spec, "ipFamilies").iter().enumerate() {
        let f = f.as_str().unwrap_or("");
        if f != "IPv4" && f != "IPv6" {
            errs.push(not_supported(
                format!("spec.ipFamilies[{idx}]"),
                f,
                &["IPv4", "IPv6"],
            ));
        }
    }
    if let Some(old) = old {
        let ospec = get(old, "spec");
        let oty = s(ospec, "type");
        let new_ips = cluster_ips(spec);
        let old_ips = cluster_ips(ospec);
        // The registry keeps allocated IPs when a client omits them; only explicit changes fail.
        if ty != "ExternalName"
            && oty != "ExternalName"
            && !(headless(spec) && headless(ospec))
            && !new_ips.is_empty()
        {
            for (idx, oip) in old_ips.iter().enumerate() {
                if new_ips.get(idx).is_some_and(|n| n != oip) {
                    let list: Vec<&str> = new_ips.iter().map(String::as_str).collect();
                    errs.push(invalid(
                        format!("spec.clusterIPs[{idx}]"),
                        Raw(super::meta::go_string_slice(&list)),
                        "may not change once set",
                    ));
                }
            }
        }
    }
    errs
}

fn data_size(v: &Value, key: &str, decode: bool) -> usize {
    obj(v, key)
        .map(|m| {
            m.values()
                .map(|x| {
                    let s = x.as_str().unwrap_or("");
                    if decode {
                        s.len() * 3 / 4
                    } else {
                        s.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// `ValidateConfigMap` minus ObjectMeta.
pub fn validate_configmap(cm: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let data = obj(cm, "data");
    let bin = obj(cm, "binaryData");
    for (field, this, other, other_name) in [
        ("data", data, bin, "binaryData"),
        ("binaryData", bin, data, "data"),
    ] {
        for key in this.into_iter().flat_map(|m| m.keys()) {
            for m in names::config_map_key(key) {
                errs.push(invalid(format!("{field}[{key}]"), key.as_str(), &m));
            }
            if other.is_some_and(|o| o.contains_key(key)) {
                errs.push(invalid(
                    format!("{field}[{key}]"),
                    key.as_str(),
                    &format!("duplicate of key present in {other_name}"),
                ));
            }
        }
    }
    if data_size(cm, "data", false) + data_size(cm, "binaryData", true) > MAX_SECRET_SIZE {
        errs.push(too_long("", MAX_SECRET_SIZE));
    }
    errs
}

fn immutable_data(new: &Value, old: &Value, fields: &[&str], errs: &mut Vec<Cause>) {
    if b(old, "immutable") != Some(true) {
        return;
    }
    if b(new, "immutable") != Some(true) {
        errs.push(forbidden("immutable", IMMUTABLE_WHEN_SET));
    }
    for f in fields {
        let norm = |v: &Value| v.get(*f).filter(|x| !x.is_null()).cloned();
        if norm(new) != norm(old) {
            errs.push(forbidden(*f, IMMUTABLE_WHEN_SET));
        }
    }
}

/// `ValidateConfigMapUpdate` minus ObjectMeta.
pub fn validate_configmap_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    immutable_data(new, old, &["data", "binaryData"], &mut errs);
    errs.extend(validate_configmap(new));
    errs
}

/// `ValidateSecret` minus ObjectMeta.
pub fn validate_secret(secret: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let data = obj(secret, "data");
    for key in data.into_iter().flat_map(|m| m.keys()) {
        for m in names::config_map_key(key) {
            errs.push(invalid(format!("data[{key}]"), key.as_str(), &m));
        }
    }
    if data_size(secret, "data", true) > MAX_SECRET_SIZE {
        errs.push(too_long("data", MAX_SECRET_SIZE));
    }
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let decoded = |k: &str| -> Option<Vec<u8>> {
        use base64::Engine;
        data.and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
    };
    match s(secret, "type") {
        "kubernetes.io/service-account-token" => {
            let ann = secret
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if ann.is_empty() {
                errs.push(required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        t @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let key = if t == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            if !has(key) {
                errs.push(required(format!("data[{key}]"), ""));
            } else if let Some(bytes) = decoded(key) {
                if let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes) {
                    errs.push(invalid(
                        format!("data[{key}]"),
                        "<secret contents redacted>",
                        &e.to_string(),
                    ));
                }
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(required("data[username]", ""));
            errs.push(required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if decoded("ssh-privatekey").is_none_or(|d| d.is_empty()) => {
            errs.push(required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(required(format!("data[{k}]"), ""));
                }
            }
        }
        _ => {}
    }
    errs
}

/// `ValidateSecretUpdate` minus ObjectMeta: type is immutable, and so is data when `immutable`.
pub fn validate_secret_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    immutable("type", new.get("type"), old.get("type"), &mut errs);
    immutable_data(new, old, &["data"], &mut errs);
    errs.extend(validate_secret(new));
    errs
}

/// A Kubernetes finalizer name: qualified, and domain-prefixed unless standard.
pub(crate) fn validate_kube_finalizer(f: &str, path: &str, errs: &mut Vec<Cause>) {
    if !f.contains('/') && !matches!(f, "kubernetes" | "orphan" | "foregroundDeletion") {
        errs.push(invalid(
            path,
            f,
            "name is neither a standard finalizer name nor is it fully qualified",
        ));
    }
}

/// `ValidateNamespace` minus ObjectMeta.
pub fn validate_namespace(ns: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    for f in arr(get(ns, "spec"), "finalizers") {
        let f = f.as_str().unwrap_or("");
        for m in names::qualified_name(f) {
            errs.push(invalid("spec.finalizers", f, &m));
        }
        validate_kube_finalizer(f, "spec.finalizers", &mut errs);
    }
    errs
}

/// `ValidateNamespaceStatusUpdate` minus ObjectMeta.
pub fn validate_namespace_status_update(new: &Value, _old: &Value) -> Vec<Cause> {
    let phase = s(get(new, "status"), "phase");
    let deleting = new
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    match (deleting, phase) {
        (false, p) if p != "Active" => vec![invalid(
            "status.Phase",
            p,
            "may only be 'Active' if `deletionTimestamp` is empty",
        )],
        (true, p) if p != "Terminating" => vec![invalid(
            "status.Phase",
            p,
            "may only be 'Terminating' if `deletionTimestamp` is not empty",
        )],
        _ => Vec::new(),
    }
}

/// Node spec: pod CIDRs and taints.
pub fn validate_node(node: &Value) -> Vec<Cause> {
    let spec = get(node, "spec");
    let mut errs = Vec::new();
    for (idx, c) in arr(spec, "podCIDRs").iter().enumerate() {
        let c = c.as_str().unwrap_or("");
        let ok = c.split_once('/').is_some_and(|(ip, bits)| {
            is_ip(ip)
                && bits
                    .parse::<u8>()
                    .is_ok_and(|b| b <= if ip.contains(':') { 128 } else { 32 })
        });
        if !ok {
            errs.push(invalid(
                format!("spec.podCIDRs[{idx}]"),
                c,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    for (idx, t) in arr(spec, "taints").iter().enumerate() {
        let tp = format!("spec.taints[{idx}]");
        let key = s(t, "key");
        for m in names::qualified_name(key) {
            errs.push(invalid(format!("{tp}.key"), key, &m));
        }
        let v = s(t, "value");
        for m in names::label_value(v) {
            errs.push(invalid(format!("{tp}.value"), v, &m));
        }
        match s(t, "effect") {
            "" => errs.push(required(format!("{tp}.effect"), "")),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            e => errs.push(not_supported(
                format!("{tp}.effect"),
                e,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            )),
        }
    }
    errs
}

/// Endpoints subsets: addresses are IPs, ports are valid and named when several.
pub fn validate_endpoints(ep: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (si, subset) in arr(ep, "subsets").iter().enumerate() {
        let sp = format!("subsets[{si}]");
        for list in ["addresses", "notReadyAddresses"] {
            for (ai, a) in arr(subset, list).iter().enumerate() {
                let ip = s(a, "ip");
                if !is_ip(ip) {
                    errs.push(invalid(format!("{sp}.{list}[{ai}].ip"), ip, IP_ERR));
                }
            }
        }
        let ports = arr(subset, "ports");
        for (pi, p) in ports.iter().enumerate() {
            let pp = format!("{sp}.ports[{pi}]");
            let name = s(p, "name");
            if ports.len() > 1 && name.is_empty() {
                errs.push(required(format!("{pp}.name"), ""));
            } else if !name.is_empty() {
                for m in names::dns1123_label(name) {
                    errs.push(invalid(format!("{pp}.name"), name, &m));
                }
            }
            let port = i(p, "port").unwrap_or(0);
            for m in names::port_num(port) {
                errs.push(invalid(format!("{pp}.port"), port, &m));
            }
            pod::validate_protocol(p, &pp, &mut errs);
        }
    }
    errs
}

/// ServiceAccount: referenced secret names must be valid.
pub fn validate_service_account(sa: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (idx, ps) in arr(sa, "imagePullSecrets").iter().enumerate() {
        if s(ps, "name").is_empty() {
            errs.push(required(format!("imagePullSecrets[{idx}].name"), ""));
        }
    }
    errs
}

/// LimitRange: supported types, valid quantities, min ≤ max.
pub fn validate_limit_range(lr: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (idx, item) in arr(get(lr, "spec"), "limits").iter().enumerate() {
        let ip = format!("spec.limits[{idx}]");
        let ty = s(item, "type");
        if !["Container", "Pod", "PersistentVolumeClaim"].contains(&ty) {
            errs.push(not_supported(
                format!("{ip}.type"),
                ty,
                &["Container", "PersistentVolumeClaim", "Pod"],
            ));
        }
        for f in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            for (k, q) in obj(item, f).into_iter().flatten() {
                pod::validate_quantity_value("cpu", q, &format!("{ip}.{f}[{k}]"), &mut errs);
            }
        }
        for (k, minq) in obj(item, "min").into_iter().flatten() {
            let Some(maxq) = item.get("max").and_then(|m| m.get(k)) else {
                continue;
            };
            let (a, b) = (pod::quantity_str(minq), pod::quantity_str(maxq));
            if let (Ok(x), Ok(y)) = (super::parse_quantity(&a), super::parse_quantity(&b)) {
                if x > y {
                    errs.push(invalid(
                        format!("{ip}.min[{k}]"),
                        a.as_str(),
                        &format!("min value {a} is greater than max value {b}"),
                    ));
                }
            }
        }
    }
    errs
}

/// ResourceQuota: hard limits are valid non-negative quantities; scopes are known.
pub fn validate_resource_quota(rq: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let spec = get(rq, "spec");
    for (k, q) in obj(spec, "hard").into_iter().flatten() {
        let p = format!("spec.hard[{k}]");
        for m in names::qualified_name(k) {
            errs.push(invalid(&p, k.as_str(), &m));
        }
        pod::validate_quantity_value(k, q, &p, &mut errs);
    }
    const SCOPES: &[&str] = &[
        "BestEffort",
        "CrossNamespacePodAffinity",
        "NotBestEffort",
        "NotTerminating",
        "PriorityClass",
        "Terminating",
        "VolumeAttributesClass",
    ];
    for sc in arr(spec, "scopes") {
        let sc = sc.as_str().unwrap_or("");
        if !SCOPES.contains(&sc) {
            errs.push(not_supported("spec.scopes", sc, SCOPES));
        }
    }
    errs
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn validate_access_modes(spec: &Value, errs: &mut Vec<Cause>, pvc: bool) {
    let modes = arr(spec, "accessModes");
    if modes.is_empty() {
        errs.push(required(
            "spec.accessModes",
            if pvc {
                "at least 1 access mode is required"
            } else {
                ""
            },
        ));
    }
    for m in modes {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            errs.push(not_supported("spec.accessModes", m, ACCESS_MODES));
        }
    }
}

const PV_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "glusterfs",
    "nfs",
    "rbd",
    "iscsi",
    "cinder",
    "cephfs",
    "fc",
    "flocker",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

/// PersistentVolume spec.
pub fn validate_pv(pv: &Value) -> Vec<Cause> {
    let spec = get(pv, "spec");
    let mut errs = Vec::new();
    validate_access_modes(spec, &mut errs, false);
    match obj(spec, "capacity") {
        Some(c) if c.contains_key("storage") => {
            for (k, q) in c {
                pod::validate_quantity_value(k, q, &format!("spec.capacity[{k}]"), &mut errs);
            }
        }
        _ => errs.push(required("spec.capacity", "")),
    }
    let n = PV_SOURCES.iter().filter(|k| present(spec, k)).count();
    if n == 0 {
        errs.push(required("spec", "must specify a volume type"));
    }
    for k in PV_SOURCES.iter().filter(|k| present(spec, k)).skip(1) {
        errs.push(forbidden(
            format!("spec.{k}"),
            "may not specify more than 1 volume type",
        ));
    }
    if let Some(p) = opt_s(spec, "persistentVolumeReclaimPolicy") {
        if !["Delete", "Recycle", "Retain"].contains(&p) {
            errs.push(not_supported(
                "spec.persistentVolumeReclaimPolicy",
                p,
                &["Delete", "Recycle", "Retain"],
            ));
        }
    }
    if let Some(h) = spec.get("hostPath") {
        if s(h, "path").is_empty() {
            errs.push(required("spec.hostPath.path", ""));
        }
    }
    errs
}

/// `ValidatePersistentVolumeUpdate`: the volume source is immutable.
pub fn validate_pv_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = validate_pv(new);
    let (ns, os) = (get(new, "spec"), get(old, "spec"));
    if PV_SOURCES.iter().any(|k| ns.get(*k) != os.get(*k)) {
        errs.push(forbidden(
            "spec.persistentvolumesource",
            "spec.persistentvolumesource is immutable after creation",
        ));
    }
    immutable(
        "spec.volumeMode",
        ns.get("volumeMode"),
        os.get("volumeMode"),
        &mut errs,
    );
    errs
}

/// PersistentVolumeClaim spec.
pub fn validate_pvc(pvc: &Value) -> Vec<Cause> {
    let spec = get(pvc, "spec");
    let mut errs = Vec::new();
    validate_access_modes(spec, &mut errs, true);
    match spec.pointer("/resources/requests/storage") {
        None => errs.push(required("spec.resources[storage]", "")),
        Some(q) => {
            let mut e = Vec::new();
            if let Some(v) = pod::validate_quantity_value(
                "storage",
                q,
                "spec.resources.requests[storage]",
                &mut e,
            ) {
                if v.nanos == 0 {
                    e.push(invalid(
                        "spec.resources.requests[storage]",
                        pod::quantity_str(q),
                        "must be greater than zero",
                    ));
                }
            }
            errs.append(&mut e);
        }
    }
    if let Some(m) = opt_s(spec, "volumeMode") {
        if m != "Block" && m != "Filesystem" {
            errs.push(not_supported(
                "spec.volumeMode",
                m,
                &["Block", "Filesystem"],
            ));
        }
    }
    errs
}

/// `ValidatePersistentVolumeClaimUpdate`: only requests (and the attributes class) may change.
pub fn validate_pvc_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = validate_pvc(new);
    let mut n = get(new, "spec").clone();
    let o = get(old, "spec");
    if let Some(m) = n.as_object_mut() {
        // Resizes and the bound volume name set by the binder are allowed.
        if let Some(r) = o.get("resources") {
            m.insert("resources".into(), r.clone());
        }
        for k in ["volumeAttributesClassName", "volumeName"] {
            if s(o, k).is_empty() || !present(&Value::Object(m.clone()), k) {
                match o.get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
        }
        if o.get("volumeName").is_none() {
            m.remove("volumeName");
        }
    }
    if &n != o {
        errs.push(forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
    }
    errs
}

/// Event: the involved object's namespace must match the event's.
pub fn validate_event(ev: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let ns = ev
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    for (key, path) in [
        ("involvedObject", "involvedObject.namespace"),
        ("regarding", "regarding.namespace"),
    ] {
        let ons = ev.get(key).map(|o| s(o, "namespace")).unwrap_or("");
        if !ons.is_empty() && ons != ns {
            errs.push(invalid(path, ons, "does not match event.namespace"));
        }
    }
    if let Some(t) = opt_s(ev, "type") {
        if !t.is_empty() && t != "Normal" && t != "Warning" {
            errs.push(invalid("type", "", &format!("has invalid value: {t}")));
        }
    }
    let _ = FIELD_IMMUTABLE;
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: Value) -> Value {
        let mut s = json!({"metadata": {"name": "s", "namespace": "d"}, "spec": spec});
        crate::defaults::apply("", "v1", "Service", &mut s);
        s
    }

    #[test]
    fn service_rules() {
        assert_eq!(
            validate_service(
                &svc(json!({"ports": [{"port": 80}], "selector": {"a": "b"}})),
                None
            ),
            vec![]
        );
        assert_eq!(
            validate_service(&svc(json!({})), None),
            vec![required("spec.ports", "")]
        );
        assert_eq!(
            validate_service(&svc(json!({"clusterIP": "None"})), None),
            vec![]
        );
        let e = validate_service(
            &svc(json!({"ports": [{"port": 80}, {"port": 0, "name": "b"}]})),
            None,
        );
        // The defaulted targetPort copies the bad port, so upstream reports it twice.
        assert_eq!(
            e,
            vec![
                required("spec.ports[0].name", ""),
                invalid(
                    "spec.ports[1].port",
                    0i64,
                    "must be between 1 and 65535, inclusive"
                ),
                invalid(
                    "spec.ports[1].targetPort",
                    0i64,
                    "must be between 1 and 65535, inclusive"
                ),
            ]
        );
        let e = validate_service(&svc(json!({"type": "ExternalName"})), None);
        assert_eq!(e, vec![required("spec.externalName", "")]);
        let e = validate_service(
            &svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]})),
            None,
        );
        assert_eq!(
            e,
            vec![invalid(
                "spec.ports[0].nodePort",
                80i64,
                "provided port is not in the valid range. The range of valid ports is 30000-32767"
            )]
        );
        let e = validate_service(&svc(json!({"type": "Foo", "ports": [{"port": 80}]})), None);
        assert_eq!(
            e,
            vec![not_supported(
                "spec.type",
                "Foo",
                &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
            )]
        );
        let e = validate_service(
            &svc(json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]})),
            None,
        );
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "spec.ports[1]");
    }

    #[test]
    fn service_cluster_ip_immutable() {
        let old = svc(
            json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]}),
        );
        let new = svc(
            json!({"clusterIP": "10.0.0.2", "clusterIPs": ["10.0.0.2"], "ports": [{"port": 80}]}),
        );
        assert_eq!(
            validate_service(&new, Some(&old)),
            vec![invalid(
                "spec.clusterIPs[0]",
                Raw("[]string{\"10.0.0.2\"}".into()),
                "may not change once set"
            )]
        );
        let mut ext = svc(json!({"type": "ExternalName", "externalName": "a.com"}));
        ext["spec"].as_object_mut().unwrap().remove("clusterIP");
        assert_eq!(validate_service(&ext, Some(&old)), vec![]);
    }

    #[test]
    fn configmap_rules() {
        assert_eq!(validate_configmap(&json!({"data": {"a.b": "x"}})), vec![]);
        let e =
            validate_configmap(&json!({"data": {"a": "x", "b/c": "y"}, "binaryData": {"a": ""}}));
        assert_eq!(
            e[0],
            invalid("data[a]", "a", "duplicate of key present in binaryData")
        );
        assert_eq!(e[1].field, "data[b/c]");
        assert_eq!(
            e[2],
            invalid("binaryData[a]", "a", "duplicate of key present in data")
        );
        let big = "x".repeat(MAX_SECRET_SIZE + 1);
        assert_eq!(
            validate_configmap(&json!({"data": {"a": big}})),
            vec![too_long("", MAX_SECRET_SIZE)]
        );
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let new = json!({"immutable": true, "data": {"a": "2"}});
        assert_eq!(
            validate_configmap_update(&new, &old),
            vec![forbidden(
                "data",
                "field is immutable when `immutable` is set"
            )]
        );
    }

    #[test]
    fn secret_rules() {
        assert_eq!(
            validate_secret(&json!({"type": "Opaque", "data": {"a": "eA=="}})),
            vec![]
        );
        let e = validate_secret(&json!({"type": "kubernetes.io/tls", "data": {"tls.crt": ""}}));
        assert_eq!(e, vec![required("data[tls.key]", "")]);
        let e = validate_secret(&json!({"type": "kubernetes.io/dockerconfigjson", "data": {}}));
        assert_eq!(e, vec![required("data[.dockerconfigjson]", "")]);
        let e = validate_secret(
            &json!({"type": "kubernetes.io/service-account-token", "metadata": {}}),
        );
        assert_eq!(
            e,
            vec![required(
                "metadata.annotations[kubernetes.io/service-account.name]",
                ""
            )]
        );
        let e = validate_secret_update(
            &json!({"type": "Opaque"}),
            &json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
        );
        assert_eq!(e, vec![invalid("type", "Opaque", "field is immutable")]);
    }

    #[test]
    fn namespace_and_pvc() {
        let e = validate_namespace(&json!({"spec": {"finalizers": ["kubernetes", "foo"]}}));
        assert_eq!(
            e,
            vec![invalid(
                "spec.finalizers",
                "foo",
                "name is neither a standard finalizer name nor is it fully qualified"
            )]
        );
        let e = validate_pvc(&json!({"spec": {}}));
        assert_eq!(
            e,
            vec![
                required("spec.accessModes", "at least 1 access mode is required"),
                required("spec.resources[storage]", "")
            ]
        );
        let ok = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        assert_eq!(validate_pvc(&ok), vec![]);
        let mut grown = ok.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert_eq!(validate_pvc_update(&grown, &ok), vec![]);
        grown["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert_eq!(
            validate_pvc_update(&grown, &ok)[0].reason,
            "FieldValueForbidden"
        );
    }

    #[test]
    fn rc_rules() {
        let rc = json!({"spec": {"selector": {"a": "b"}, "template": {"metadata": {"labels": {"a": "c"}},
            "spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "containers": [{"name": "c", "image": "x", "imagePullPolicy": "Always", "terminationMessagePolicy": "File"}]}}}});
        assert_eq!(
            validate_rc(&rc),
            vec![invalid(
                "spec.template.metadata.labels",
                Raw("map[string]string{\"a\":\"c\"}".into()),
                "`selector` does not match template `labels`"
            )]
        );
    }
}
