//! Container environment: `env` (value, configMapKeyRef, secretKeyRef, fieldRef,
//! resourceFieldRef) and `envFrom`, with upstream's `$(VAR)` expansion, also used for `command`
//! and `args`.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

use crate::node::Resources;

/// The objects and node facts environment resolution reads.
#[derive(Default)]
pub struct Sources {
    pub config_maps: HashMap<String, ConfigMap>,
    pub secrets: HashMap<String, Secret>,
    pub host_ip: String,
    pub pod_ips: Vec<String>,
    pub allocatable: Option<Resources>,
    /// Variables for services in the pod's namespace (`enableServiceLinks`) and the
    /// `kubernetes` service; expanded into but overridden by the container's own env.
    pub service_env: Vec<(String, String)>,
}

/// The names of ConfigMaps and Secrets a container's env refers to: (config maps, secrets).
pub fn referenced_objects(c: &Container) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for e in c.env_from.iter().flatten() {
        if let Some(r) = &e.config_map_ref {
            cms.push(r.name.clone());
        }
        if let Some(r) = &e.secret_ref {
            secrets.push(r.name.clone());
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(vf) = &e.value_from {
            if let Some(r) = &vf.config_map_key_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &vf.secret_key_ref {
                secrets.push(r.name.clone());
            }
        }
    }
    (cms, secrets)
}

/// Upstream's `$(VAR)` expansion: defined variables are replaced, `$$` escapes a `$`, anything
/// else stays as written.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push_str(&input[last..i]);
                    out.push('$');
                    i += 2;
                    last = i;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        if let Some(v) = lookup(name) {
                            out.push_str(&input[last..i]);
                            out.push_str(&v);
                            i = i + 2 + end + 1;
                            last = i;
                            continue;
                        }
                        i = i + 2 + end + 1;
                        continue;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    out.push_str(&input[last..]);
    out
}

fn secret_value(s: &Secret, key: &str) -> Option<String> {
    if let Some(v) = s.data.as_ref().and_then(|d| d.get(key)) {
        return Some(String::from_utf8_lossy(&v.0).into_owned());
    }
    s.string_data.as_ref().and_then(|d| d.get(key).cloned())
}

fn config_map_value(cm: &ConfigMap, key: &str) -> Option<String> {
    if let Some(v) = cm.data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.clone());
    }
    cm.binary_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// Upstream's `fieldRef` paths.
pub fn field_value(pod: &Pod, path: &str, src: &Sources) -> Result<String, String> {
    let meta = &pod.metadata;
    let sub = |m: &Option<BTreeMap<String, String>>, p: &str, prefix: &str| -> Option<String> {
        let key = p.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(
            m.as_ref()
                .and_then(|m| m.get(key).cloned())
                .unwrap_or_default(),
        )
    };
    if let Some(v) = sub(&meta.labels, path, "metadata.labels['") {
        return Ok(v);
    }
    if let Some(v) = sub(&meta.annotations, path, "metadata.annotations['") {
        return Ok(v);
    }
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => src.host_ip.clone(),
        "status.hostIPs" => src.host_ip.clone(),
        "status.podIP" => src.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => src.pod_ips.join(","),
        "metadata.labels" | "metadata.annotations" => {
            let m = if path == "metadata.labels" {
                &meta.labels
            } else {
                &meta.annotations
            };
            m.iter()
                .flatten()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join("\n")
        }
        other => return Err(format!("unsupported fieldPath: {other}")),
    })
}

fn quantity_f64(q: &str) -> Option<f64> {
    skiff_api::validation::parse_quantity(q)
        .ok()
        .map(|q| q.nanos as f64 / 1e9)
}

/// A container's resource value for `resourceFieldRef` (falling back to node allocatable for
/// unset limits, as upstream does), divided by `divisor` and rounded up.
pub fn resource_value(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
    alloc: Option<&Resources>,
) -> Result<String, String> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {resource}"))?;
    let res = c.resources.as_ref();
    let map = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported container resource : {resource}")),
    };
    let mut value = map
        .and_then(|m| m.get(name))
        .and_then(|q| quantity_f64(&q.0));
    if value.is_none() && kind == "limits" {
        value = alloc.map(|a| match name {
            "cpu" => a.cpu_millis as f64 / 1000.0,
            "memory" => a.memory_bytes as f64,
            "ephemeral-storage" => a.ephemeral_storage_bytes as f64,
            _ => 0.0,
        });
    }
    let value = value.unwrap_or(0.0);
    let divisor = divisor
        .and_then(quantity_f64)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(format!(
        "{}",
        (value / divisor - 1e-9).ceil().max(0.0) as i64
    ))
}

/// Resolves a container's environment in upstream's order: `envFrom` sources, then `env`
/// entries (each expanded against what came before and the service variables). An error is the
/// message of a `CreateContainerConfigError`.
pub fn resolve(pod: &Pod, c: &Container, src: &Sources) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = out.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for (k, v) in &src.service_env {
        set(&mut out, k.clone(), v.clone());
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match src.config_maps.get(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut out, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match src.secrets.get(&r.name) {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        set(
                            &mut out,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(vf) = &e.value_from {
            if let Some(r) = &vf.config_map_key_ref {
                let optional = r.optional == Some(true);
                match src.config_maps.get(&r.name) {
                    Some(cm) => match config_map_value(cm, &r.key) {
                        Some(v) => v,
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            ))
                        }
                    },
                    None if optional => continue,
                    None => return Err(format!("configmap \"{}\" not found", r.name)),
                }
            } else if let Some(r) = &vf.secret_key_ref {
                let optional = r.optional == Some(true);
                match src.secrets.get(&r.name) {
                    Some(s) => match secret_value(s, &r.key) {
                        Some(v) => v,
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            ))
                        }
                    },
                    None if optional => continue,
                    None => return Err(format!("secret \"{}\" not found", r.name)),
                }
            } else if let Some(r) = &vf.field_ref {
                field_value(pod, &r.field_path, src)?
            } else if let Some(r) = &vf.resource_field_ref {
                let target = match r.container_name.as_deref() {
                    Some(n) if !n.is_empty() => pod
                        .spec
                        .as_ref()
                        .and_then(|s| {
                            s.containers
                                .iter()
                                .chain(s.init_containers.iter().flatten())
                                .find(|c| c.name == n)
                        })
                        .unwrap_or(c),
                    _ => c,
                };
                resource_value(
                    target,
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                    src.allocatable.as_ref(),
                )?
            } else {
                String::new()
            }
        } else {
            let current = out.clone();
            expand(e.value.as_deref().unwrap_or(""), &|n| {
                current.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
            })
        };
        set(&mut out, e.name.clone(), value);
    }
    Ok(out)
}

/// Expands `$(VAR)` in a command or args list against the resolved environment.
pub fn expand_all(args: &[String], env: &[(String, String)]) -> Vec<String> {
    let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    args.iter().map(|a| expand(a, &lookup)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{
                "name": "c", "image": "busybox",
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
                "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
                "env": [
                    {"name": "A", "value": "a"},
                    {"name": "B", "value": "$(A)-$(MISSING)-$$(A)"},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                    {"name": "CPULIM", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
                ]
            }]}
        }))
        .unwrap()
    }

    fn sources() -> Sources {
        Sources {
            config_maps: HashMap::from([(
                "cm".into(),
                serde_json::from_value(
                    json!({"metadata": {"name": "cm"}, "data": {"k": "v", "x": "y"}}),
                )
                .unwrap(),
            )]),
            secrets: HashMap::from([(
                "s".into(),
                serde_json::from_value(
                    json!({"metadata": {"name": "s"}, "data": {"pw": "aHVudGVyMg=="}}),
                )
                .unwrap(),
            )]),
            host_ip: "192.0.2.1".into(),
            pod_ips: vec!["10.42.0.5".into()],
            allocatable: Some(Resources {
                cpu_millis: 2000,
                memory_bytes: 1 << 30,
                ephemeral_storage_bytes: 0,
                pods: 110,
            }),
            service_env: vec![],
        }
    }

    #[test]
    fn resolves_every_kind_of_env() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env: HashMap<_, _> = resolve(&p, c, &sources()).unwrap().into_iter().collect();
        assert_eq!(env["CM_k"], "v");
        assert_eq!(env["CM_x"], "y");
        assert_eq!(env["B"], "a-$(MISSING)-$(A)");
        assert_eq!(env["NODE"], "n1");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["IP"], "10.42.0.5");
        assert_eq!(env["KEY"], "v");
        assert_eq!(env["PW"], "hunter2");
        assert_eq!(env["MEM"], "64");
        assert_eq!(env["CPU"], "250");
        assert_eq!(env["CPULIM"], "2");
    }

    #[test]
    fn missing_references_are_config_errors() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mut s = sources();
        s.secrets.clear();
        assert_eq!(resolve(&p, c, &s).unwrap_err(), "secret \"s\" not found");
        let mut s = sources();
        s.config_maps.get_mut("cm").unwrap().data = Some(BTreeMap::new());
        assert_eq!(
            resolve(&p, c, &s).unwrap_err(),
            "couldn't find key k in ConfigMap ns/cm"
        );
    }

    #[test]
    fn expands_commands() {
        let env = vec![("X".to_string(), "1".to_string())];
        assert_eq!(
            expand_all(&["echo $(X) $(Y) $$(X) $".into()], &env),
            vec!["echo 1 $(Y) $(X) $".to_string()]
        );
    }
}
