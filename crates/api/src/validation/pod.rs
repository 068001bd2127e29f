//! Pod, pod spec and pod template validation (`pkg/apis/core/validation`).

use std::collections::HashSet;

use serde_json::Value;

use super::errors::{
    duplicate, forbidden, invalid, non_negative, not_found, not_supported, required, IS_NEGATIVE,
};
use super::json::{arr, get, i, obj, opt_s, present, s};
use super::names;
use super::quantity::parse_quantity;
use crate::Cause;

const FILE_MODE_ERR: &str = "must be a number between 0 and 0777 (octal), both inclusive";
const MAX_INT32: i64 = i32::MAX as i64;

/// Volume source keys in the order upstream's `validateVolumeSource` checks them.
const VOLUME_TYPES: &[&str] = &[
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

/// `ValidatePodCreate` minus ObjectMeta.
pub fn validate_pod_create(pod: &Value) -> Vec<Cause> {
    let spec = get(pod, "spec");
    let mut errs = validate_pod_spec(spec, "spec");
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        ));
    }
    errs
}

/// `ValidatePodTemplate` (the PodTemplate kind) minus ObjectMeta.
pub fn validate_pod_template_object(obj_: &Value) -> Vec<Cause> {
    validate_pod_template_spec(get(obj_, "template"), "template")
}

/// `ValidatePodTemplateSpec`: template labels, annotations and pod spec.
pub fn validate_pod_template_spec(tmpl: &Value, path: &str) -> Vec<Cause> {
    let mut errs = Vec::new();
    let meta = get(tmpl, "metadata");
    super::meta::validate_labels(get(meta, "labels"), &format!("{path}.labels"), &mut errs);
    if let Some(ann) = obj(meta, "annotations") {
        for k in ann.keys() {
            for m in names::qualified_name(&k.to_lowercase()) {
                errs.push(invalid(format!("{path}.annotations"), k.as_str(), &m));
            }
        }
    }
    let spec = get(tmpl, "spec");
    errs.extend(validate_pod_spec(spec, &format!("{path}.spec")));
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(forbidden(
            format!("{path}.spec.ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs
}

/// `ValidatePodSpec`.
pub fn validate_pod_spec(spec: &Value, path: &str) -> Vec<Cause> {
    let mut errs = Vec::new();
    let vols = validate_volumes(arr(spec, "volumes"), &format!("{path}.volumes"), &mut errs);
    validate_containers(spec, &vols, path, &mut errs);
    validate_init_containers(spec, &vols, path, &mut errs);
    validate_enum_required(
        spec,
        "restartPolicy",
        path,
        &["Always", "OnFailure", "Never"],
        &mut errs,
    );
    validate_enum_required(
        spec,
        "dnsPolicy",
        path,
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        &mut errs,
    );
    super::meta::validate_labels(
        get(spec, "nodeSelector"),
        &format!("{path}.nodeSelector"),
        &mut errs,
    );
    for (idx, ps) in arr(spec, "imagePullSecrets").iter().enumerate() {
        if s(ps, "name").is_empty() {
            errs.push(required(format!("{path}.imagePullSecrets[{idx}].name"), ""));
        }
    }
    if s(spec, "dnsPolicy") == "None" && !present(spec, "dnsConfig") {
        errs.push(required(
            format!("{path}.dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ));
    }
    for (field, v) in [
        ("serviceAccountName", s(spec, "serviceAccountName")),
        ("nodeName", s(spec, "nodeName")),
        ("priorityClassName", s(spec, "priorityClassName")),
    ] {
        if !v.is_empty() {
            for m in names::dns1123_subdomain(v) {
                errs.push(invalid(format!("{path}.{field}"), v, &m));
            }
        }
    }
    if let Some(ads) = i(spec, "activeDeadlineSeconds") {
        if !(1..=MAX_INT32).contains(&ads) {
            errs.push(invalid(
                format!("{path}.activeDeadlineSeconds"),
                ads,
                &names::inclusive_range_error(1, MAX_INT32),
            ));
        }
    }
    for field in ["hostname", "subdomain"] {
        let v = s(spec, field);
        if !v.is_empty() {
            for m in names::dns1123_label(v) {
                errs.push(invalid(format!("{path}.{field}"), v, &m));
            }
        }
    }
    validate_tolerations(
        arr(spec, "tolerations"),
        &format!("{path}.tolerations"),
        &mut errs,
    );
    if let Some(p) = opt_s(spec, "preemptionPolicy") {
        if p != "PreemptLowerPriority" && p != "Never" {
            errs.push(not_supported(
                format!("{path}.preemptionPolicy"),
                p,
                &["Never", "PreemptLowerPriority"],
            ));
        }
    }
    errs
}

fn validate_enum_required(
    spec: &Value,
    key: &str,
    path: &str,
    valid: &[&str],
    errs: &mut Vec<Cause>,
) {
    let v = s(spec, key);
    if v.is_empty() {
        errs.push(required(format!("{path}.{key}"), ""));
    } else if !valid.contains(&v) {
        errs.push(not_supported(format!("{path}.{key}"), v, valid));
    }
}

/// `ValidateVolumes`; returns the names of the valid volumes.
fn validate_volumes(vols: &[Value], path: &str, errs: &mut Vec<Cause>) -> HashSet<String> {
    let mut names_ok = HashSet::new();
    for (idx, vol) in vols.iter().enumerate() {
        let ip = format!("{path}[{idx}]");
        let name = s(vol, "name");
        let mut el = validate_volume_source(vol, &ip);
        if name.is_empty() {
            el.push(required(format!("{ip}.name"), ""));
        } else {
            for m in names::dns1123_label(name) {
                el.push(invalid(format!("{ip}.name"), name, &m));
            }
        }
        if names_ok.contains(name) {
            el.push(duplicate(format!("{ip}.name"), name));
        }
        if el.is_empty() {
            names_ok.insert(name.to_string());
        } else {
            errs.append(&mut el);
        }
    }
    names_ok
}

fn validate_volume_source(vol: &Value, path: &str) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut count = 0;
    for t in VOLUME_TYPES {
        if !present(vol, t) {
            continue;
        }
        count += 1;
        if count > 1 {
            errs.push(forbidden(
                format!("{path}.{t}"),
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        let src = get(vol, t);
        let sp = format!("{path}.{t}");
        match *t {
            "hostPath" => {
                if s(src, "path").is_empty() {
                    errs.push(required(format!("{sp}.path"), ""));
                }
                if let Some(ty) = opt_s(src, "type") {
                    const T: &[&str] = &[
                        "",
                        "BlockDevice",
                        "CharDevice",
                        "Directory",
                        "DirectoryOrCreate",
                        "File",
                        "FileOrCreate",
                        "Socket",
                    ];
                    if !T.contains(&ty) {
                        errs.push(not_supported(format!("{sp}.type"), ty, T));
                    }
                }
            }
            "secret" => {
                if s(src, "secretName").is_empty() {
                    errs.push(required(format!("{sp}.secretName"), ""));
                }
                validate_mode_and_items(src, &sp, &mut errs);
            }
            "configMap" => {
                if s(src, "name").is_empty() {
                    errs.push(required(format!("{sp}.name"), ""));
                }
                validate_mode_and_items(src, &sp, &mut errs);
            }
            "persistentVolumeClaim" if s(src, "claimName").is_empty() => {
                errs.push(required(format!("{sp}.claimName"), ""));
            }
            "emptyDir" => {
                if let Some(m) = opt_s(src, "medium") {
                    if !["", "Memory", "HugePages"].contains(&m) && !m.starts_with("HugePages-") {
                        errs.push(not_supported(
                            format!("{sp}.medium"),
                            m,
                            &["", "Memory", "HugePages"],
                        ));
                    }
                }
                if let Some(q) = src.get("sizeLimit").and_then(Value::as_str) {
                    match parse_quantity(q) {
                        Err(e) => errs.push(invalid(format!("{sp}.sizeLimit"), q, &e.to_string())),
                        Ok(v) if v.is_negative() => {
                            errs.push(invalid(format!("{sp}.sizeLimit"), q, IS_NEGATIVE))
                        }
                        _ => {}
                    }
                }
            }
            "nfs" => {
                if s(src, "server").is_empty() {
                    errs.push(required(format!("{sp}.server"), ""));
                }
                let p = s(src, "path");
                if p.is_empty() {
                    errs.push(required(format!("{sp}.path"), ""));
                } else if !p.starts_with('/') {
                    errs.push(invalid(format!("{sp}.path"), p, "must be an absolute path"));
                }
            }
            "downwardAPI" | "projected" => validate_mode_and_items(src, &sp, &mut errs),
            _ => {}
        }
    }
    if count == 0 {
        errs.push(required(path, "must specify a volume type"));
    }
    errs
}

fn validate_mode_and_items(src: &Value, path: &str, errs: &mut Vec<Cause>) {
    if let Some(m) = i(src, "defaultMode") {
        if !(0..=0o777).contains(&m) {
            errs.push(invalid(format!("{path}.defaultMode"), m, FILE_MODE_ERR));
        }
    }
    for (idx, item) in arr(src, "items").iter().enumerate() {
        let ip = format!("{path}.items[{idx}]");
        if present(item, "key") && s(item, "key").is_empty() {
            errs.push(required(format!("{ip}.key"), ""));
        }
        let p = s(item, "path");
        if p.is_empty() {
            errs.push(required(format!("{ip}.path"), ""));
        } else {
            validate_local_descending_path(p, &format!("{ip}.path"), errs);
        }
        if let Some(m) = i(item, "mode") {
            if !(0..=0o777).contains(&m) {
                errs.push(invalid(format!("{ip}.mode"), m, FILE_MODE_ERR));
            }
        }
    }
}

fn validate_local_descending_path(p: &str, path: &str, errs: &mut Vec<Cause>) {
    if p.starts_with('/') {
        errs.push(invalid(path, p, "must be a relative path"));
    }
    if p.split('/').any(|seg| seg == "..") {
        errs.push(invalid(path, p, "must not contain '..'"));
    }
}

fn validate_containers(spec: &Value, vols: &HashSet<String>, path: &str, errs: &mut Vec<Cause>) {
    let cpath = format!("{path}.containers");
    let ctrs = arr(spec, "containers");
    if ctrs.is_empty() {
        errs.push(required(cpath, ""));
        return;
    }
    let mut seen = HashSet::new();
    for (idx, c) in ctrs.iter().enumerate() {
        let p = format!("{cpath}[{idx}]");
        validate_container_common(c, vols, &p, errs);
        let name = s(c, "name");
        if !seen.insert(name) {
            errs.push(duplicate(format!("{p}.name"), name));
        }
        validate_probe(
            get(c, "livenessProbe"),
            &format!("{p}.livenessProbe"),
            true,
            errs,
        );
        validate_probe(
            get(c, "readinessProbe"),
            &format!("{p}.readinessProbe"),
            false,
            errs,
        );
        validate_probe(
            get(c, "startupProbe"),
            &format!("{p}.startupProbe"),
            true,
            errs,
        );
        if present(c, "restartPolicy") {
            errs.push(forbidden(
                format!("{p}.restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
}

fn validate_init_containers(
    spec: &Value,
    vols: &HashSet<String>,
    path: &str,
    errs: &mut Vec<Cause>,
) {
    let mut seen: HashSet<&str> = arr(spec, "containers")
        .iter()
        .map(|c| s(c, "name"))
        .collect();
    for (idx, c) in arr(spec, "initContainers").iter().enumerate() {
        let p = format!("{path}.initContainers[{idx}]");
        validate_container_common(c, vols, &p, errs);
        let name = s(c, "name");
        if !seen.insert(name) {
            errs.push(duplicate(format!("{p}.name"), name));
        }
        match opt_s(c, "restartPolicy") {
            Some("Always") => {
                validate_probe(
                    get(c, "livenessProbe"),
                    &format!("{p}.livenessProbe"),
                    true,
                    errs,
                );
                validate_probe(
                    get(c, "readinessProbe"),
                    &format!("{p}.readinessProbe"),
                    false,
                    errs,
                );
                validate_probe(
                    get(c, "startupProbe"),
                    &format!("{p}.startupProbe"),
                    true,
                    errs,
                );
            }
            Some(other) => errs.push(not_supported(
                format!("{p}.restartPolicy"),
                other,
                &["Always"],
            )),
            None => {
                for f in [
                    "lifecycle",
                    "livenessProbe",
                    "readinessProbe",
                    "startupProbe",
                ] {
                    if present(c, f) {
                        errs.push(forbidden(
                            format!("{p}.{f}"),
                            "may not be set for init containers without restartPolicy=Always",
                        ));
                    }
                }
            }
        }
    }
}

fn validate_container_common(c: &Value, vols: &HashSet<String>, p: &str, errs: &mut Vec<Cause>) {
    let name = s(c, "name");
    if name.is_empty() {
        errs.push(required(format!("{p}.name"), ""));
    } else {
        for m in names::dns1123_label(name) {
            errs.push(invalid(format!("{p}.name"), name, &m));
        }
    }
    if s(c, "image").is_empty() {
        errs.push(required(format!("{p}.image"), ""));
    }
    match s(c, "terminationMessagePolicy") {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(required(
            format!("{p}.terminationMessagePolicy"),
            "must be 'File' or 'FallbackToLogsOnError'",
        )),
        other => errs.push(not_supported(
            format!("{p}.terminationMessagePolicy"),
            other,
            &["File", "FallbackToLogsOnError"],
        )),
    }
    validate_container_ports(arr(c, "ports"), &format!("{p}.ports"), errs);
    validate_env(arr(c, "env"), &format!("{p}.env"), errs);
    validate_volume_mounts(
        arr(c, "volumeMounts"),
        vols,
        &format!("{p}.volumeMounts"),
        errs,
    );
    match s(c, "imagePullPolicy") {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.push(required(format!("{p}.imagePullPolicy"), "")),
        other => errs.push(not_supported(
            format!("{p}.imagePullPolicy"),
            other,
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    validate_resources(get(c, "resources"), &format!("{p}.resources"), errs);
}

fn validate_container_ports(ports: &[Value], path: &str, errs: &mut Vec<Cause>) {
    let mut seen = HashSet::new();
    for (idx, port) in ports.iter().enumerate() {
        let ip = format!("{path}[{idx}]");
        let name = s(port, "name");
        if !name.is_empty() {
            let msgs = names::port_name(name);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(invalid(format!("{ip}.name"), name, &m));
                }
            } else if !seen.insert(name) {
                errs.push(duplicate(format!("{ip}.name"), name));
            }
        }
        match i(port, "containerPort").unwrap_or(0) {
            0 => errs.push(required(format!("{ip}.containerPort"), "")),
            n => {
                for m in names::port_num(n) {
                    errs.push(invalid(format!("{ip}.containerPort"), n, &m));
                }
            }
        }
        if let Some(h) = i(port, "hostPort").filter(|h| *h != 0) {
            for m in names::port_num(h) {
                errs.push(invalid(format!("{ip}.hostPort"), h, &m));
            }
        }
        validate_protocol(port, &ip, errs);
    }
}

/// Port protocol: required, one of SCTP, TCP, UDP.
pub(crate) fn validate_protocol(port: &Value, ip: &str, errs: &mut Vec<Cause>) {
    match s(port, "protocol") {
        "" => errs.push(required(format!("{ip}.protocol"), "")),
        "TCP" | "UDP" | "SCTP" => {}
        other => errs.push(not_supported(
            format!("{ip}.protocol"),
            other,
            &["SCTP", "TCP", "UDP"],
        )),
    }
}

fn validate_env(env: &[Value], path: &str, errs: &mut Vec<Cause>) {
    for (idx, ev) in env.iter().enumerate() {
        let ip = format!("{path}[{idx}]");
        let name = s(ev, "name");
        if name.is_empty() {
            errs.push(required(format!("{ip}.name"), ""));
        }
        for m in names::env_var_name(name) {
            errs.push(invalid(format!("{ip}.name"), name, &m));
        }
        let Some(vf) = obj(ev, "valueFrom") else {
            continue;
        };
        let vp = format!("{ip}.valueFrom");
        let sources: Vec<&str> = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
        ]
        .into_iter()
        .filter(|k| vf.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
        for src in &sources {
            let sv = &vf[*src];
            let spath = format!("{vp}.{src}");
            match *src {
                "configMapKeyRef" | "secretKeyRef" => {
                    let key = s(sv, "key");
                    if s(sv, "name").is_empty() {
                        errs.push(required(format!("{spath}.name"), ""));
                    }
                    if key.is_empty() {
                        errs.push(required(format!("{spath}.key"), ""));
                    } else {
                        for m in names::config_map_key(key) {
                            errs.push(invalid(format!("{spath}.key"), key, &m));
                        }
                    }
                }
                "fieldRef" => {
                    if s(sv, "fieldPath").is_empty() {
                        errs.push(required(format!("{spath}.fieldPath"), ""));
                    }
                }
                _ => {
                    if s(sv, "resource").is_empty() {
                        errs.push(required(format!("{spath}.resource"), ""));
                    }
                }
            }
        }
        if sources.is_empty() {
            errs.push(invalid(&vp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));
        } else if !s(ev, "value").is_empty() {
            errs.push(invalid(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources.len() > 1 {
            errs.push(invalid(
                &vp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
}

fn validate_volume_mounts(
    mounts: &[Value],
    vols: &HashSet<String>,
    path: &str,
    errs: &mut Vec<Cause>,
) {
    let mut points = HashSet::new();
    for (idx, m) in mounts.iter().enumerate() {
        let ip = format!("{path}[{idx}]");
        let name = s(m, "name");
        if name.is_empty() {
            errs.push(required(format!("{ip}.name"), ""));
        }
        if !vols.contains(name) {
            errs.push(not_found(format!("{ip}.name"), name));
        }
        let mp = s(m, "mountPath");
        if mp.is_empty() {
            errs.push(required(format!("{ip}.mountPath"), ""));
        }
        if !points.insert(mp) {
            errs.push(invalid(format!("{ip}.mountPath"), mp, "must be unique"));
        }
        let sub = s(m, "subPath");
        if !sub.is_empty() {
            validate_local_descending_path(sub, &format!("{path}.subPath"), errs);
        }
        if let Some(mprop) = opt_s(m, "mountPropagation") {
            const P: &[&str] = &["Bidirectional", "HostToContainer", "None"];
            if !P.contains(&mprop) {
                errs.push(not_supported(format!("{ip}.mountPropagation"), mprop, P));
            }
        }
    }
}

fn is_standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

fn overcommit_allowed(name: &str) -> bool {
    (!name.contains('/') || name.contains("kubernetes.io/")) && !name.starts_with("hugepages-")
}

/// `ValidateResourceRequirements` for a container.
fn validate_resources(res: &Value, path: &str, errs: &mut Vec<Cause>) {
    let lim_path = format!("{path}.limits");
    let req_path = format!("{path}.requests");
    let check = |name: &str, q: &Value, fp: &str, errs: &mut Vec<Cause>| {
        for m in names::qualified_name(name) {
            errs.push(invalid(fp, name, &m));
        }
        if !name.contains('/') && !is_standard_container_resource(name) {
            errs.push(invalid(
                fp,
                name,
                "must be a standard resource for containers",
            ));
        }
        validate_quantity_value(name, q, fp, errs)
    };
    let limits = obj(res, "limits");
    if let Some(l) = limits {
        for (name, q) in l {
            check(name, q, &format!("{lim_path}[{name}]"), errs);
        }
    }
    if let Some(r) = obj(res, "requests") {
        for (name, q) in r {
            let qv = check(name, q, &format!("{req_path}[{name}]"), errs);
            let lim = limits.and_then(|l| l.get(name));
            match (qv, lim) {
                (Some(qv), Some(lv)) => {
                    let lq = quantity_str(lv);
                    if let Ok(l) = parse_quantity(&lq) {
                        if qv != l && !overcommit_allowed(name) {
                            errs.push(invalid(
                                &req_path,
                                quantity_str(q),
                                &format!("must be equal to {name} limit of {lq}"),
                            ));
                        } else if qv > l {
                            errs.push(invalid(
                                &req_path,
                                quantity_str(q),
                                &format!("must be less than or equal to {name} limit of {lq}"),
                            ));
                        }
                    }
                }
                (_, None) if !overcommit_allowed(name) => {
                    errs.push(required(
                        &lim_path,
                        "Limit must be set for non overcommitable resources",
                    ));
                }
                _ => {}
            }
        }
    }
}

/// A quantity as written (JSON numbers are accepted as upstream's decoder does).
pub(crate) fn quantity_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `ValidateResourceQuantityValue`: parses, non-negative, whole for integer resources.
pub(crate) fn validate_quantity_value(
    name: &str,
    q: &Value,
    fp: &str,
    errs: &mut Vec<Cause>,
) -> Option<super::Quantity> {
    let qs = quantity_str(q);
    match parse_quantity(&qs) {
        Err(e) => {
            errs.push(invalid(fp, qs.as_str(), &e.to_string()));
            None
        }
        Ok(v) => {
            if v.is_negative() {
                errs.push(invalid(fp, qs.as_str(), IS_NEGATIVE));
            }
            let integer = !matches!(name, "cpu" | "memory" | "storage" | "ephemeral-storage")
                && !name.starts_with("hugepages-")
                && !name.starts_with("requests.")
                && !name.starts_with("limits.");
            if integer && !v.is_integer() {
                errs.push(invalid(fp, qs.as_str(), "must be an integer"));
            }
            Some(v)
        }
    }
}

fn validate_probe(probe: &Value, path: &str, success_must_be_one: bool, errs: &mut Vec<Cause>) {
    if !probe.is_object() {
        return;
    }
    let handlers: Vec<&str> = ["exec", "httpGet", "tcpSocket", "grpc"]
        .into_iter()
        .filter(|h| present(probe, h))
        .collect();
    if handlers.is_empty() {
        errs.push(required(path, "must specify a handler type"));
    }
    for h in handlers.iter().skip(1) {
        errs.push(forbidden(
            format!("{path}.{h}"),
            "may not specify more than 1 handler type",
        ));
    }
    if let Some(h) = handlers.first() {
        let hv = get(probe, h);
        let hp = format!("{path}.{h}");
        match *h {
            "exec" => {}
            "grpc" => {
                let port = i(hv, "port").unwrap_or(0);
                for m in names::port_num(port) {
                    errs.push(invalid(format!("{hp}.port"), port, &m));
                }
            }
            _ => {
                if *h == "httpGet" {
                    if s(hv, "path").is_empty() {
                        errs.push(required(format!("{hp}.path"), ""));
                    }
                    let scheme = s(hv, "scheme");
                    if scheme != "HTTP" && scheme != "HTTPS" {
                        errs.push(not_supported(
                            format!("{hp}.scheme"),
                            scheme,
                            &["HTTP", "HTTPS"],
                        ));
                    }
                }
                validate_port_num_or_name(get(hv, "port"), &format!("{hp}.port"), errs);
            }
        }
    }
    for f in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        non_negative(&format!("{path}.{f}"), i(probe, f), errs);
    }
    if let Some(t) = i(probe, "terminationGracePeriodSeconds") {
        if !success_must_be_one {
            errs.push(invalid(
                format!("{path}.terminationGracePeriodSeconds"),
                t,
                "must not be set for readinessProbes",
            ));
        } else if t <= 0 {
            errs.push(invalid(
                format!("{path}.terminationGracePeriodSeconds"),
                t,
                "must be greater than 0",
            ));
        }
    }
    if success_must_be_one {
        if let Some(st) = i(probe, "successThreshold").filter(|v| *v != 1) {
            errs.push(invalid(format!("{path}.successThreshold"), st, "must be 1"));
        }
    }
}

/// An int-or-string port: a number in 1..65535 or an IANA port name.
pub(crate) fn validate_port_num_or_name(port: &Value, path: &str, errs: &mut Vec<Cause>) {
    match port {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(0);
            for m in names::port_num(n) {
                errs.push(invalid(path, n, &m));
            }
        }
        Value::String(name) => {
            for m in names::port_name(name) {
                errs.push(invalid(path, name.as_str(), &m));
            }
        }
        _ => errs.push(invalid(path, port, "must contain an int or string")),
    }
}

fn validate_tolerations(tols: &[Value], path: &str, errs: &mut Vec<Cause>) {
    for (idx, t) in tols.iter().enumerate() {
        let ip = format!("{path}[{idx}]");
        let key = s(t, "key");
        if !key.is_empty() {
            for m in names::qualified_name(key) {
                errs.push(invalid(format!("{ip}.key"), key, &m));
            }
        }
        let op = s(t, "operator");
        if key.is_empty() && op != "Exists" {
            errs.push(invalid(
                format!("{ip}.operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        let effect = s(t, "effect");
        if present(t, "tolerationSeconds") && effect != "NoExecute" {
            errs.push(invalid(
                format!("{ip}.effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        let value = s(t, "value");
        match op {
            "" | "Equal" => {
                for m in names::label_value(value) {
                    errs.push(invalid(format!("{ip}.operator"), value, &m));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(invalid(
                        format!("{ip}.operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(not_supported(
                format!("{ip}.operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
        {
            errs.push(not_supported(
                format!("{ip}.effect"),
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
    }
}

const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// `ValidatePodUpdate` minus ObjectMeta.
pub fn validate_pod_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let (ns, os) = (get(new, "spec"), get(old, "spec"));
    for key in ["containers", "initContainers"] {
        let (nc, oc) = (arr(ns, key), arr(os, key));
        if nc.len() != oc.len() {
            errs.push(forbidden(
                format!("spec.{key}"),
                "pod updates may not add or remove containers",
            ));
            return errs;
        }
        for (idx, c) in nc.iter().enumerate() {
            if s(c, "image").is_empty() {
                errs.push(required(format!("spec.{key}[{idx}].image"), ""));
            }
        }
    }
    match (
        i(ns, "activeDeadlineSeconds"),
        i(os, "activeDeadlineSeconds"),
    ) {
        (Some(n), _) if !(0..=MAX_INT32).contains(&n) => {
            errs.push(invalid(
                "spec.activeDeadlineSeconds",
                n,
                &names::inclusive_range_error(0, MAX_INT32),
            ));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(invalid(
                "spec.activeDeadlineSeconds",
                n,
                "must be less than or equal to previous value",
            ));
            return errs;
        }
        (None, Some(_)) => errs.push(invalid(
            "spec.activeDeadlineSeconds",
            &Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    let old_tols = arr(os, "tolerations");
    for (idx, ot) in old_tols.iter().enumerate() {
        let kept = arr(ns, "tolerations")
            .iter()
            .any(|nt| same_toleration(nt, ot));
        if !kept {
            errs.push(forbidden(
                format!("spec.tolerations[{idx}]"),
                "existing toleration can not be modified except its tolerationSeconds",
            ));
        }
    }
    if ns == os {
        return errs;
    }
    let mut munged = ns.clone();
    for key in ["containers", "initContainers"] {
        if let (Some(list), oc) = (
            munged.get_mut(key).and_then(Value::as_array_mut),
            arr(os, key),
        ) {
            for (c, o) in list.iter_mut().zip(oc) {
                if let Some(m) = c.as_object_mut() {
                    m.insert("image".into(), get(o, "image").clone());
                }
            }
        }
    }
    if let Some(m) = munged.as_object_mut() {
        for key in ["activeDeadlineSeconds", "tolerations"] {
            match os.get(key) {
                Some(v) => m.insert(key.into(), v.clone()),
                None => m.remove(key),
            };
        }
        if i(os, "terminationGracePeriodSeconds").is_some_and(|o| o < 0)
            && i(ns, "terminationGracePeriodSeconds") == Some(1)
        {
            m.insert(
                "terminationGracePeriodSeconds".into(),
                get(os, "terminationGracePeriodSeconds").clone(),
            );
        }
    }
    if &munged != os {
        errs.push(forbidden(
            "spec",
            &format!("{POD_UPDATE_FORBIDDEN}\n{}", spec_diff(os, &munged)),
        ));
    }
    errs
}

fn same_toleration(a: &Value, b: &Value) -> bool {
    ["key", "operator", "value", "effect"]
        .iter()
        .all(|k| s(a, k) == s(b, k))
}

/// A short diff of top-level spec fields in the spirit of upstream's `cmp.Diff` output.
fn spec_diff(old: &Value, new: &Value) -> String {
    let mut out = String::from("  core.PodSpec{\n");
    let mut keys: Vec<&String> = old.as_object().into_iter().flat_map(|m| m.keys()).collect();
    for k in new.as_object().into_iter().flat_map(|m| m.keys()) {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for k in keys {
        let (o, n) = (old.get(k), new.get(k));
        if o != n {
            if let Some(o) = o {
                out.push_str(&format!("- \t{k}: {o},\n"));
            }
            if let Some(n) = n {
                out.push_str(&format!("+ \t{k}: {n},\n"));
            }
        }
    }
    out.push_str("  }\n");
    out
}

/// `ValidatePodStatusUpdate` minus ObjectMeta: the node name may not change here, and the
/// nominated node name must be a valid node name.
pub fn validate_pod_status_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let nn = s(get(new, "status"), "nominatedNodeName");
    if !nn.is_empty() {
        for m in names::dns1123_subdomain(nn) {
            errs.push(invalid("status.nominatedNodeName", nn, &m));
        }
    }
    if get(new, "spec") != get(old, "spec") {
        errs.push(forbidden(
            "spec",
            "may not be changed through the status subresource",
        ));
    }
    if let Some(ps) = i(get(new, "status"), "observedGeneration") {
        non_negative("status.observedGeneration", Some(ps), &mut errs);
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d"}, "spec": spec});
        crate::defaults::apply("", "v1", "Pod", &mut p);
        p
    }

    fn ok_spec() -> Value {
        json!({"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"}],
            "volumeMounts": [{"name": "v", "mountPath": "/v"}],
            "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "livenessProbe": {"httpGet": {"port": 80}}, "env": [{"name": "A", "value": "b"}]}],
            "volumes": [{"name": "v", "emptyDir": {}}]})
    }

    #[test]
    fn valid_pod_passes() {
        assert_eq!(validate_pod_create(&pod(ok_spec())), vec![]);
    }

    #[test]
    fn containers_required() {
        assert_eq!(
            validate_pod_create(&pod(json!({}))),
            vec![required("spec.containers", "")]
        );
    }

    #[test]
    fn container_errors() {
        let e = validate_pod_create(&pod(
            json!({"containers": [{"name": "c"}, {"name": "c", "image": "x", "imagePullPolicy": "Foo"}]}),
        ));
        assert_eq!(
            e,
            vec![
                required("spec.containers[0].image", ""),
                not_supported(
                    "spec.containers[1].imagePullPolicy",
                    "Foo",
                    &["Always", "IfNotPresent", "Never"]
                ),
                duplicate("spec.containers[1].name", "c"),
            ]
        );
        let e = validate_pod_create(&pod(json!({"containers": [{"name": "C_1", "image": "x"}]})));
        assert_eq!(e[0].field, "spec.containers[0].name");
    }

    #[test]
    fn ports_env_mounts() {
        let e = validate_pod_create(&pod(json!({"containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 70000}, {"containerPort": 1, "protocol": "XX"}],
            "env": [{"name": ""}], "volumeMounts": [{"name": "nope", "mountPath": "/a"}]}]})));
        assert_eq!(
            e,
            vec![
                invalid(
                    "spec.containers[0].ports[0].containerPort",
                    70000i64,
                    "must be between 1 and 65535, inclusive"
                ),
                not_supported(
                    "spec.containers[0].ports[1].protocol",
                    "XX",
                    &["SCTP", "TCP", "UDP"]
                ),
                required("spec.containers[0].env[0].name", ""),
                invalid(
                    "spec.containers[0].env[0].name",
                    "",
                    "environment variable name must be non-empty"
                ),
                not_found("spec.containers[0].volumeMounts[0].name", "nope"),
            ]
        );
    }

    #[test]
    fn volumes_unique_and_typed() {
        let e = validate_pod_create(&pod(json!({"containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}, {"name": "w"}, {"name": "z", "emptyDir": {}, "hostPath": {"path": "/"}}]})));
        assert_eq!(
            e,
            vec![
                duplicate("spec.volumes[1].name", "v"),
                forbidden(
                    "spec.volumes[3].hostPath",
                    "may not specify more than 1 volume type"
                ),
            ]
        );
        let e = validate_pod_create(&pod(
            json!({"containers": [{"name": "c", "image": "x"}], "volumes": [{"name": "s", "secret": {"secretName": "s", "defaultMode": 1000}}]}),
        ));
        assert_eq!(
            e,
            vec![invalid(
                "spec.volumes[0].secret.defaultMode",
                1000i64,
                FILE_MODE_ERR
            )]
        );
    }

    #[test]
    fn volume_without_source_before_defaulting() {
        assert_eq!(
            validate_volume_source(&json!({"name": "w"}), "spec.volumes[0]"),
            vec![required("spec.volumes[0]", "must specify a volume type")]
        );
    }

    #[test]
    fn enums_and_resources() {
        let e = validate_pod_create(&pod(json!({"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": "2", "memory": "-1"}, "limits": {"cpu": "1"}}}], "restartPolicy": "Sometimes"})));
        assert_eq!(
            e,
            vec![
                invalid(
                    "spec.containers[0].resources.requests",
                    "2",
                    "must be less than or equal to cpu limit of 1"
                ),
                invalid(
                    "spec.containers[0].resources.requests[memory]",
                    "-1",
                    IS_NEGATIVE
                ),
                not_supported(
                    "spec.restartPolicy",
                    "Sometimes",
                    &["Always", "OnFailure", "Never"]
                ),
            ]
        );
        let e = validate_pod_create(&pod(
            json!({"containers": [{"name": "c", "image": "x", "resources": {"limits": {"foo": "1"}}}]}),
        ));
        // Requests default to limits, so the request is reported as well.
        assert_eq!(
            e,
            vec![
                invalid(
                    "spec.containers[0].resources.limits[foo]",
                    "foo",
                    "must be a standard resource for containers"
                ),
                invalid(
                    "spec.containers[0].resources.requests[foo]",
                    "foo",
                    "must be a standard resource for containers"
                ),
            ]
        );
    }

    #[test]
    fn probe_rules() {
        let e = validate_pod_create(&pod(json!({"containers": [{"name": "c", "image": "x",
            "livenessProbe": {"exec": {"command": ["a"]}, "successThreshold": 2, "periodSeconds": -1},
            "readinessProbe": {}}]})));
        assert_eq!(
            e,
            vec![
                invalid(
                    "spec.containers[0].livenessProbe.periodSeconds",
                    -1i64,
                    IS_NEGATIVE
                ),
                invalid(
                    "spec.containers[0].livenessProbe.successThreshold",
                    2i64,
                    "must be 1"
                ),
                required(
                    "spec.containers[0].readinessProbe",
                    "must specify a handler type"
                ),
            ]
        );
    }

    #[test]
    fn update_allows_image_only() {
        let old = pod(ok_spec());
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["activeDeadlineSeconds"] = json!(10);
        assert_eq!(validate_pod_update(&new, &old), vec![]);
        new["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(81);
        let e = validate_pod_update(&new, &old);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].reason, "FieldValueForbidden");
        assert!(e[0]
            .message
            .starts_with(&format!("Forbidden: {POD_UPDATE_FORBIDDEN}\n")));
        let mut new = old.clone();
        new["spec"]["containers"] = json!([]);
        assert_eq!(
            validate_pod_update(&new, &old),
            vec![forbidden(
                "spec.containers",
                "pod updates may not add or remove containers"
            )]
        );
    }

    #[test]
    fn update_tolerations_only_added() {
        let mut old = pod(ok_spec());
        old["spec"]["tolerations"] = json!([{"key": "a", "operator": "Exists"}]);
        let mut new = old.clone();
        new["spec"]["tolerations"] =
            json!([{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]);
        assert_eq!(validate_pod_update(&new, &old), vec![]);
        new["spec"]["tolerations"] = json!([]);
        assert_eq!(
            validate_pod_update(&new, &old)[0].field,
            "spec.tolerations[0]"
        );
    }
}
