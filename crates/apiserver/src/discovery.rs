//! Discovery documents: legacy (`/api`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`) and aggregated
//! (`apidiscovery.k8s.io/v2`, which kubectl v1.32 asks for first).

use serde_json::{json, Value};
use skiff_api::registry::{self, ResourceInfo};

/// Content type of aggregated discovery responses.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn subresource_kind(r: &ResourceInfo, sub: &str) -> (String, String, String) {
    match sub {
        "scale" => ("autoscaling".into(), "v1".into(), "Scale".into()),
        "binding" => ("".into(), "v1".into(), "Binding".into()),
        "token" => (
            "authentication.k8s.io".into(),
            "v1".into(),
            "TokenRequest".into(),
        ),
        "exec" => ("".into(), "v1".into(), "PodExecOptions".into()),
        "attach" => ("".into(), "v1".into(), "PodAttachOptions".into()),
        "portforward" => ("".into(), "v1".into(), "PodPortForwardOptions".into()),
        "proxy" if r.plural == "nodes" => ("".into(), "v1".into(), "NodeProxyOptions".into()),
        _ => (r.group.into(), r.version.into(), r.kind.into()),
    }
}

fn subresource_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "binding" | "token" => vec!["create"],
        "finalize" => vec!["update"],
        "log" => vec!["get"],
        "exec" | "attach" | "portforward" => vec!["create", "get"],
        "proxy" => vec!["create", "delete", "get", "patch", "update"],
        _ => vec!["get", "patch", "update"],
    }
}

/// `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_doc(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": vs[0].clone(),
    })
}

/// `/apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = registry::groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(g, &vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, if served.
pub fn api_group(group: &str) -> Option<Value> {
    registry::groups()
        .into_iter()
        .find(|(g, _)| *g == group && !g.is_empty())
        .map(|(g, vs)| {
            let mut d = group_doc(g, &vs);
            d["kind"] = json!("APIGroup");
            d["apiVersion"] = json!("v1");
            d
        })
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in registry::resources_of(group, version) {
        let mut item = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            item["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            item["categories"] = json!(r.categories);
        }
        resources.push(item);
        for sub in r.subresources {
            let (g, v, k) = subresource_kind(r, sub);
            let mut item = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": k,
                "verbs": subresource_verbs(sub),
            });
            if g != r.group || v != r.version {
                item["group"] = json!(g);
                item["version"] = json!(v);
            }
            resources.push(item);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

fn aggregated_version(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = registry::resources_of(group, version)
        .map(|r| {
            let mut item = json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": r.verbs,
            });
            if !r.short_names.is_empty() {
                item["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                item["categories"] = json!(r.categories);
            }
            if !r.subresources.is_empty() {
                item["subresources"] = r
                    .subresources
                    .iter()
                    .map(|s| {
                        let (g, v, k) = subresource_kind(r, s);
                        json!({
                            "subresource": s,
                            "responseKind": {"group": g, "version": v, "kind": k},
                            "verbs": subresource_verbs(s),
                        })
                    })
                    .collect();
            }
            item
        })
        .collect();
    json!({"version": version, "resources": resources, "freshness": "Current"})
}

/// Aggregated discovery for `/api` (`core == true`) or `/apis`.
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = registry::groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| {
            let mut meta = json!({"creationTimestamp": null});
            if !g.is_empty() {
                meta["name"] = json!(g);
            }
            json!({
                "metadata": meta,
                "versions": vs.iter().map(|v| aggregated_version(g, v)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_resource_list_has_pods_and_subresources() {
        let l = api_resource_list("", "v1").unwrap();
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods"));
        assert!(names.contains(&"pods/status"));
        assert!(names.contains(&"pods/binding"));
        assert!(api_resource_list("", "v2").is_none());
    }

    #[test]
    fn scale_subresource_reports_autoscaling_scale() {
        let l = api_resource_list("apps", "v1").unwrap();
        let scale = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["group"], "autoscaling");
    }

    #[test]
    fn aggregated_splits_core_and_groups() {
        let core = aggregated(true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert!(core["items"][0]["metadata"].get("name").is_none());
        let apis = aggregated(false);
        assert!(apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["metadata"]["name"] == "apps"));
    }
}
