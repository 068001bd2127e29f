//! Main rules of the remaining groups: coordination, discovery, networking, policy,
//! autoscaling, scheduling and storage.

use serde_json::Value;

use super::apps::validate_label_selector;
use super::errors::{
    forbidden, immutable, invalid, non_negative, not_supported, required, too_many, Raw,
};
use super::json::{arr, get, i, opt_s, present, s};
use super::{names, pod};
use crate::Cause;

/// Create-time rules per kind; unknown kinds have none beyond metadata.
pub fn validate(group: &str, kind: &str, o: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    match (group, kind) {
        ("coordination.k8s.io", "Lease") => {
            let spec = get(o, "spec");
            if let Some(d) = i(spec, "leaseDurationSeconds").filter(|d| *d <= 0) {
                errs.push(invalid(
                    "spec.leaseDurationSeconds",
                    d,
                    "must be greater than 0",
                ));
            }
            non_negative(
                "spec.leaseTransitions",
                i(spec, "leaseTransitions"),
                &mut errs,
            );
        }
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(o, &mut errs),
        ("networking.k8s.io", "Ingress") => ingress(o, &mut errs),
        ("networking.k8s.io", "IngressClass") => {
            let c = s(get(o, "spec"), "controller");
            if c.is_empty() {
                errs.push(required("spec.controller", ""));
            } else if c.len() > 250 {
                errs.push(super::errors::too_long("spec.controller", 250));
            } else {
                domain_prefixed_path(c, "spec.controller", &mut errs);
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => network_policy(o, &mut errs),
        ("policy", "PodDisruptionBudget") => pdb(o, &mut errs),
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(o, &mut errs),
        ("scheduling.k8s.io", "PriorityClass") => {
            let name = o
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let value = i(o, "value").unwrap_or(0);
            if name.starts_with("system-")
                && !matches!(name, "system-node-critical" | "system-cluster-critical")
            {
                errs.push(forbidden(
                    "metadata.name",
                    "priority class names with 'system-' prefix are reserved for system use only",
                ));
            } else if value > 1_000_000_000 && !name.starts_with("system-") {
                errs.push(forbidden(
                    "value",
                    "maximum allowed value of a user defined priority is 1000000000",
                ));
            }
            if let Some(p) = opt_s(o, "preemptionPolicy") {
                if p != "PreemptLowerPriority" && p != "Never" {
                    errs.push(not_supported(
                        "preemptionPolicy",
                        p,
                        &["Never", "PreemptLowerPriority"],
                    ));
                }
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            let p = s(o, "provisioner");
            if p.is_empty() {
                errs.push(required("provisioner", ""));
            } else {
                for m in names::qualified_name(&p.to_lowercase()) {
                    errs.push(invalid("provisioner", p, &m));
                }
            }
            if let Some(r) = opt_s(o, "reclaimPolicy") {
                if r != "Delete" && r != "Retain" {
                    errs.push(not_supported("reclaimPolicy", r, &["Delete", "Retain"]));
                }
            }
            if let Some(m) = opt_s(o, "volumeBindingMode") {
                if m != "Immediate" && m != "WaitForFirstConsumer" {
                    errs.push(not_supported(
                        "volumeBindingMode",
                        m,
                        &["Immediate", "WaitForFirstConsumer"],
                    ));
                }
            }
        }
        _ => {}
    }
    errs
}

/// Extra update rules (immutable fields) per kind.
pub fn validate_update(group: &str, kind: &str, new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    match (group, kind) {
        ("scheduling.k8s.io", "PriorityClass") => {
            if new.get("value") != old.get("value") {
                errs.push(forbidden("value", "may not be changed in an update."));
            }
            immutable(
                "preemptionPolicy",
                new.get("preemptionPolicy"),
                old.get("preemptionPolicy"),
                &mut errs,
            );
        }
        ("storage.k8s.io", "StorageClass") => {
            for (f, msg) in [
                ("parameters", "updates to parameters are forbidden."),
                ("provisioner", "updates to provisioner are forbidden."),
                ("reclaimPolicy", "updates to reclaimPolicy are forbidden."),
            ] {
                if new.get(f) != old.get(f) {
                    errs.push(forbidden(f, msg));
                }
            }
            immutable(
                "volumeBindingMode",
                new.get("volumeBindingMode"),
                old.get("volumeBindingMode"),
                &mut errs,
            );
        }
        ("discovery.k8s.io", "EndpointSlice") => immutable(
            "addressType",
            new.get("addressType"),
            old.get("addressType"),
            &mut errs,
        ),
        ("networking.k8s.io", "IngressClass") => immutable(
            "spec.controller",
            new.pointer("/spec/controller"),
            old.pointer("/spec/controller"),
            &mut errs,
        ),
        _ => {}
    }
    errs
}

fn domain_prefixed_path(v: &str, path: &str, errs: &mut Vec<Cause>) {
    match v.split_once('/') {
        Some((host, rest)) if !host.is_empty() && !rest.is_empty() => {
            for m in names::dns1123_subdomain(host) {
                errs.push(invalid(path, host, &m));
            }
        }
        _ => errs.push(invalid(
            path,
            v,
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )),
    }
}

fn endpoint_slice(o: &Value, errs: &mut Vec<Cause>) {
    let at = s(o, "addressType");
    const TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
    if at.is_empty() {
        errs.push(required("addressType", ""));
    } else if !TYPES.contains(&at) {
        errs.push(not_supported("addressType", at, TYPES));
    }
    let eps = arr(o, "endpoints");
    if eps.len() > 1000 {
        errs.push(too_many("endpoints", eps.len(), 1000));
    }
    for (idx, ep) in eps.iter().enumerate() {
        let ap = format!("endpoints[{idx}].addresses");
        let addrs = arr(ep, "addresses");
        if addrs.is_empty() {
            errs.push(required(&ap, "must contain at least 1 address"));
        } else if addrs.len() > 100 {
            errs.push(too_many(&ap, addrs.len(), 100));
        }
        for (ai, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let p = format!("{ap}[{ai}]");
            let ok = match at {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => names::dns1123_subdomain(a).is_empty(),
            };
            if !ok {
                let msg = match at {
                    "IPv4" => "must be a valid IPv4 address",
                    "IPv6" => "must be a valid IPv6 address",
                    _ => "must be a valid FQDN",
                };
                errs.push(invalid(p, a, msg));
            }
        }
    }
    let ports = arr(o, "ports");
    for (idx, p) in ports.iter().enumerate() {
        let pp = format!("ports[{idx}]");
        let name = s(p, "name");
        if !name.is_empty() {
            for m in names::dns1123_label(name) {
                errs.push(invalid(format!("{pp}.name"), name, &m));
            }
        }
        if let Some(n) = i(p, "port") {
            for m in names::port_num(n) {
                errs.push(invalid(format!("{pp}.port"), n, &m));
            }
        }
        pod::validate_protocol(p, &pp, errs);
    }
}

fn backend(b: &Value, path: &str, errs: &mut Vec<Cause>) {
    let has_svc = present(b, "service");
    let has_res = present(b, "resource");
    if has_svc && has_res {
        errs.push(invalid(
            path,
            Raw(b.to_string()),
            "cannot set both resource and service backends",
        ));
    } else if has_svc {
        let svc = get(b, "service");
        let name = s(svc, "name");
        if name.is_empty() {
            errs.push(required(format!("{path}.service.name"), ""));
        } else {
            for m in names::dns1035_label(name) {
                errs.push(invalid(format!("{path}.service.name"), name, &m));
            }
        }
        let port = get(svc, "port");
        let pname = s(port, "name");
        let pnum = i(port, "number").unwrap_or(0);
        if !pname.is_empty() && pnum != 0 {
            errs.push(invalid(
                format!("{path}.service.port"),
                Raw(port.to_string()),
                "cannot set both port name & port number",
            ));
        } else if !pname.is_empty() {
            for m in names::port_name(pname) {
                errs.push(invalid(format!("{path}.service.port.name"), pname, &m));
            }
        } else if pnum != 0 {
            for m in names::port_num(pnum) {
                errs.push(invalid(format!("{path}.service.port.number"), pnum, &m));
            }
        } else {
            errs.push(required(
                format!("{path}.service.port"),
                "port name or number is required",
            ));
        }
    } else if !has_res {
        errs.push(invalid(
            path,
            Raw(b.to_string()),
            "resource or service backend is required",
        ));
    }
}

fn ingress(o: &Value, errs: &mut Vec<Cause>) {
    let spec = get(o, "spec");
    let rules = arr(spec, "rules");
    if rules.is_empty() && !present(spec, "defaultBackend") {
        errs.push(invalid(
            "spec.rules",
            Raw("[]networking.IngressRule(nil)".into()),
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if present(spec, "defaultBackend") {
        backend(get(spec, "defaultBackend"), "spec.defaultBackend", errs);
    }
    for (idx, r) in rules.iter().enumerate() {
        let rp = format!("spec.rules[{idx}]");
        let host = s(r, "host");
        if !host.is_empty() {
            if let Some(rest) = host.strip_prefix("*.") {
                if !names::dns1123_subdomain(rest).is_empty() {
                    errs.push(invalid(format!("{rp}.host"), host, "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"));
                }
            } else {
                for m in names::dns1123_subdomain(host) {
                    errs.push(invalid(format!("{rp}.host"), host, &m));
                }
            }
        }
        let Some(http) = r.get("http") else { continue };
        let paths = arr(http, "paths");
        if paths.is_empty() {
            errs.push(required(format!("{rp}.http.paths"), ""));
        }
        for (pi, p) in paths.iter().enumerate() {
            let pp = format!("{rp}.http.paths[{pi}]");
            let path = s(p, "path");
            match opt_s(p, "pathType") {
                None => errs.push(required(
                    format!("{pp}.pathType"),
                    "pathType must be specified",
                )),
                Some("Exact" | "Prefix") => {
                    if !path.starts_with('/') {
                        errs.push(invalid(
                            format!("{pp}.path"),
                            path,
                            "must be an absolute path",
                        ));
                    }
                }
                Some("ImplementationSpecific") => {
                    if !path.is_empty() && !path.starts_with('/') {
                        errs.push(invalid(
                            format!("{pp}.path"),
                            path,
                            "must be an absolute path",
                        ));
                    }
                }
                Some(t) => errs.push(not_supported(
                    format!("{pp}.pathType"),
                    t,
                    &["Exact", "ImplementationSpecific", "Prefix"],
                )),
            }
            backend(get(p, "backend"), &format!("{pp}.backend"), errs);
        }
    }
    if let Some(c) = opt_s(spec, "ingressClassName") {
        for m in names::dns1123_subdomain(c) {
            errs.push(invalid("spec.ingressClassName", c, &m));
        }
    }
}

fn network_policy(o: &Value, errs: &mut Vec<Cause>) {
    let spec = get(o, "spec");
    validate_label_selector(get(spec, "podSelector"), "spec.podSelector", errs);
    for dir in ["ingress", "egress"] {
        for (idx, rule) in arr(spec, dir).iter().enumerate() {
            for (pi, p) in arr(rule, "ports").iter().enumerate() {
                let pp = format!("spec.{dir}[{idx}].ports[{pi}]");
                if let Some(proto) = opt_s(p, "protocol") {
                    if !["TCP", "UDP", "SCTP"].contains(&proto) {
                        errs.push(not_supported(
                            format!("{pp}.protocol"),
                            proto,
                            &["SCTP", "TCP", "UDP"],
                        ));
                    }
                }
                if let Some(port) = p.get("port") {
                    pod::validate_port_num_or_name(port, &format!("{pp}.port"), errs);
                }
            }
        }
    }
    for (idx, t) in arr(spec, "policyTypes").iter().enumerate() {
        let t = t.as_str().unwrap_or("");
        if t != "Ingress" && t != "Egress" {
            errs.push(not_supported(
                format!("spec.policyTypes[{idx}]"),
                t,
                &["Ingress", "Egress"],
            ));
        }
    }
}

fn pdb(o: &Value, errs: &mut Vec<Cause>) {
    let spec = get(o, "spec");
    if present(spec, "minAvailable") && present(spec, "maxUnavailable") {
        errs.push(invalid(
            "spec",
            Raw(spec.to_string()),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for f in ["minAvailable", "maxUnavailable"] {
        match spec.get(f) {
            Some(Value::Number(n)) => non_negative(&format!("spec.{f}"), n.as_i64(), errs),
            Some(Value::String(st)) => {
                for m in names::percent(st) {
                    errs.push(invalid(format!("spec.{f}"), Raw(st.clone()), &m));
                }
                if st
                    .strip_suffix('%')
                    .and_then(|d| d.parse::<i64>().ok())
                    .is_some_and(|n| n > 100)
                {
                    errs.push(invalid(
                        format!("spec.{f}"),
                        Raw(st.clone()),
                        "must not be greater than 100%",
                    ));
                }
            }
            _ => {}
        }
    }
    if spec.get("selector").is_some_and(Value::is_object) {
        validate_label_selector(get(spec, "selector"), "spec.selector", errs);
    }
    if let Some(p) = opt_s(spec, "unhealthyPodEvictionPolicy") {
        if p != "IfHealthyBudget" && p != "AlwaysAllow" {
            errs.push(not_supported(
                "spec.unhealthyPodEvictionPolicy",
                p,
                &["AlwaysAllow", "IfHealthyBudget"],
            ));
        }
    }
}

fn hpa(o: &Value, errs: &mut Vec<Cause>) {
    let spec = get(o, "spec");
    let min = i(spec, "minReplicas");
    let max = i(spec, "maxReplicas").unwrap_or(0);
    if let Some(m) = min.filter(|m| *m < 1) {
        errs.push(invalid(
            "spec.minReplicas",
            m,
            "must be greater than or equal to 1",
        ));
    }
    if max < 1 {
        errs.push(invalid("spec.maxReplicas", max, "must be greater than 0"));
    }
    if min.is_some_and(|m| max < m) {
        errs.push(invalid(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    let r = get(spec, "scaleTargetRef");
    if s(r, "kind").is_empty() {
        errs.push(required("spec.scaleTargetRef.kind", ""));
    }
    let name = s(r, "name");
    if name.is_empty() {
        errs.push(required("spec.scaleTargetRef.name", ""));
    } else {
        for m in names::path_segment(name) {
            errs.push(invalid("spec.scaleTargetRef.name", name, &m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn misc_rules() {
        let e = validate(
            "policy",
            "PodDisruptionBudget",
            &json!({"spec": {"minAvailable": 1, "maxUnavailable": "10%"}}),
        );
        assert_eq!(
            e[0].message.rsplit(": ").next(),
            Some("minAvailable and maxUnavailable cannot be both set")
        );
        let e = validate(
            "autoscaling",
            "HorizontalPodAutoscaler",
            &json!({"spec": {"minReplicas": 3, "maxReplicas": 2, "scaleTargetRef": {"kind": "Deployment", "name": "d"}}}),
        );
        assert_eq!(
            e,
            vec![invalid(
                "spec.maxReplicas",
                2i64,
                "must be greater than or equal to `minReplicas`"
            )]
        );
        let e = validate("storage.k8s.io", "StorageClass", &json!({}));
        assert_eq!(e, vec![required("provisioner", "")]);
        let e = validate(
            "networking.k8s.io",
            "Ingress",
            &json!({"spec": {"rules": [{"host": "a.com", "http": {"paths": [{"path": "/", "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}}]}}),
        );
        assert_eq!(
            e,
            vec![required(
                "spec.rules[0].http.paths[0].pathType",
                "pathType must be specified"
            )]
        );
        let e = validate(
            "discovery.k8s.io",
            "EndpointSlice",
            &json!({"addressType": "IPv4", "endpoints": [{"addresses": ["x"]}]}),
        );
        assert_eq!(
            e,
            vec![invalid(
                "endpoints[0].addresses[0]",
                "x",
                "must be a valid IPv4 address"
            )]
        );
        let e = validate_update(
            "scheduling.k8s.io",
            "PriorityClass",
            &json!({"value": 2}),
            &json!({"value": 1}),
        );
        assert_eq!(
            e,
            vec![forbidden("value", "may not be changed in an update.")]
        );
        let e = validate(
            "coordination.k8s.io",
            "Lease",
            &json!({"spec": {"leaseDurationSeconds": 0}}),
        );
        assert_eq!(
            e,
            vec![invalid(
                "spec.leaseDurationSeconds",
                0i64,
                "must be greater than 0"
            )]
        );
    }
}
