use serde_json::{json, Value};
use skiff_api::registry::RESOURCES;
use skiff_api::schema::{ListType, PatchStrategy, Schema, PATCH_META};

use crate::*;

fn doc(group: &str, version: &str) -> std::sync::Arc<Document> {
    v3_group_version(group, version).expect("served group/version")
}

fn component<'a>(d: &'a Document, name: &str) -> &'a Value {
    &d.value["components"]["schemas"][name]
}

/// What kubectl's QueryParamVerifierV3 and apply's gvkSupportsPatchOpenAPIV3 look for: a PATCH
/// operation tagged with the GVK that declares `fieldValidation` in the query and accepts
/// strategic merge patches.
fn patch_op_supports_field_validation(d: &Document, g: &str, v: &str, k: &str) -> bool {
    let want = json!({"group": g, "kind": k, "version": v});
    d.value["paths"].as_object().unwrap().values().any(|p| {
        let op = &p["patch"];
        op["x-kubernetes-group-version-kind"] == want
            && op["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_some()
            && op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
    })
}

#[test]
fn apps_v1_document_has_deployment_gvk_and_container_merge_key() {
    let d = doc("apps", "v1");
    assert_eq!(d.value["openapi"], "3.0.0");
    assert_eq!(
        component(&d, "io.k8s.api.apps.v1.Deployment")["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    let containers = &component(&d, "io.k8s.api.core.v1.PodSpec")["properties"]["containers"];
    assert_eq!(containers["type"], "array");
    assert_eq!(
        containers["items"]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.Container"
    );
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    // A described reference is wrapped in allOf, as upstream publishes it.
    let template = &component(&d, "io.k8s.api.apps.v1.DeploymentSpec")["properties"]["template"];
    assert_eq!(
        template["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.PodTemplateSpec"
    );
    assert!(template["description"].as_str().unwrap().contains("pods"));
}

#[test]
fn every_patch_meta_entry_is_published() {
    for e in PATCH_META {
        let Some((_, d)) = RESOURCES
            .iter()
            .map(|r| (r, doc(r.group, r.version)))
            .find(|(_, d)| !component(d, e.type_name).is_null())
        else {
            continue;
        };
        let prop = &component(&d, e.type_name)["properties"][e.field];
        assert!(!prop.is_null(), "{}.{} not in schema", e.type_name, e.field);
        if let Some(k) = e.meta.merge_key {
            assert_eq!(
                prop["x-kubernetes-patch-merge-key"], k,
                "{}.{}",
                e.type_name, e.field
            );
        }
    }
}

#[test]
fn pod_spec_containers_field_info() {
    let info = schema()
        .field("io.k8s.api.core.v1.PodSpec", "containers")
        .expect("field");
    assert_eq!(
        info.type_name.as_deref(),
        Some("io.k8s.api.core.v1.Container")
    );
    assert!(!info.is_map);
    let list = info.list.expect("a list");
    assert_eq!(list.merge_key, Some("name"));
    assert_eq!(list.strategy, PatchStrategy::Merge);
    assert_eq!(list.list_type, ListType::Map(&["name"]));
}

#[test]
fn field_info_for_maps_scalars_and_atomic_lists() {
    let s = schema();
    let labels = s
        .field("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "labels")
        .unwrap();
    assert!(labels.is_map);
    assert_eq!(labels.type_name, None);
    assert_eq!(labels.list, None);
    let image = s.field("io.k8s.api.core.v1.Container", "image").unwrap();
    assert_eq!(
        image,
        skiff_api::schema::FieldInfo {
            type_name: None,
            list: None,
            is_map: false
        }
    );
    // Quantities and times are scalars, not object types.
    let limits = s
        .field("io.k8s.api.core.v1.ResourceRequirements", "limits")
        .unwrap();
    assert!(limits.is_map);
    assert_eq!(limits.type_name, None);
    let args = s.field("io.k8s.api.core.v1.Container", "args").unwrap();
    assert_eq!(args.list.unwrap().list_type, ListType::Atomic);
    let spec = s.field("io.k8s.api.apps.v1.Deployment", "spec").unwrap();
    assert_eq!(
        spec.type_name.as_deref(),
        Some("io.k8s.api.apps.v1.DeploymentSpec")
    );
    assert_eq!(s.field("io.k8s.api.core.v1.Container", "imagex"), None);
    assert_eq!(s.field("io.k8s.api.core.v1.Nope", "image"), None);
}

#[test]
fn unknown_fields_reports_upstream_paths() {
    let obj = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"anything": "goes"}, "annotations": {"a": "b"}},
        "spec": {
            "replicaz": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "nginx"},
                        {"name": "b", "imagex": "nginx", "resources": {"limits": {"cpu": "1"}}},
                    ],
                },
            },
        },
    });
    assert_eq!(
        unknown_fields("apps/v1", "Deployment", &obj),
        vec!["spec.replicaz", "spec.template.spec.containers[1].imagex"]
    );
    let clean = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
                       "data": {"k": "v"}});
    assert!(unknown_fields("v1", "ConfigMap", &clean).is_empty());
    // RawExtension content is free-form.
    let rev = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "revision": 1,
                     "data": {"spec": {"whatever": true}}, "bogus": 1});
    assert_eq!(
        unknown_fields("apps/v1", "ControllerRevision", &rev),
        vec!["bogus"]
    );
    assert!(unknown_fields("example.com/v1", "Widget", &obj).is_empty());
}

#[test]
fn every_served_resource_resolves_and_supports_field_validation() {
    for r in RESOURCES {
        let api_version = r.api_version();
        let root = schema()
            .root(&api_version, r.kind)
            .unwrap_or_else(|| panic!("{api_version} {} has no root", r.kind));
        let d = doc(r.group, r.version);
        let gvk = json!([{"group": r.group, "kind": r.kind, "version": r.version}]);
        assert_eq!(
            component(&d, &root)["x-kubernetes-group-version-kind"],
            gvk,
            "{root}"
        );
        assert!(
            patch_op_supports_field_validation(&d, r.group, r.version, r.kind),
            "{api_version} {}",
            r.kind
        );
        let list = schema()
            .root(&api_version, &format!("{}List", r.kind))
            .unwrap();
        assert!(!component(&d, &list).is_null());
        assert!(schema()
            .field(&root, "metadata")
            .unwrap()
            .type_name
            .is_some());
    }
}

#[test]
fn explain_finds_the_kind_through_its_list_path() {
    // kubectl explain pods: the GVK of an operation on the collection path must equal, as a
    // whole object, one entry of a component's x-kubernetes-group-version-kind.
    let d = doc("", "v1");
    let op = &d.value["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
    let gvk = &op["x-kubernetes-group-version-kind"];
    assert_eq!(gvk, &json!({"group": "", "kind": "Pod", "version": "v1"}));
    let found = d.value["components"]["schemas"]
        .as_object()
        .unwrap()
        .values()
        .filter(|s| {
            s["x-kubernetes-group-version-kind"]
                .as_array()
                .is_some_and(|a| a.contains(gvk))
        })
        .count();
    assert_eq!(found, 1);
    let node = &d.value["paths"]["/api/v1/nodes"]["get"];
    assert_eq!(node["x-kubernetes-action"], "list");
    let scale = &doc("apps", "v1").value["paths"]
        ["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(
        scale["x-kubernetes-group-version-kind"],
        json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})
    );
    // Descriptions reach kubectl explain.
    let containers = &component(&d, "io.k8s.api.core.v1.PodSpec")["properties"]["containers"];
    assert!(!containers["description"].as_str().unwrap().is_empty());
}

fn assert_refs_resolve(v: &Value, prefix: &str, defs: &serde_json::Map<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                if k == "$ref" {
                    let name = c.as_str().unwrap().strip_prefix(prefix).expect(prefix);
                    assert!(defs.contains_key(name), "dangling {name}");
                } else {
                    assert_refs_resolve(c, prefix, defs);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| assert_refs_resolve(c, prefix, defs)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_within_its_document() {
    for (g, vs) in skiff_api::registry::groups() {
        for v in vs {
            let d = doc(g, v);
            let defs = d.value["components"]["schemas"].as_object().unwrap();
            assert_refs_resolve(&d.value, "#/components/schemas/", defs);
        }
    }
    let d = v2();
    assert_eq!(d.value["swagger"], "2.0");
    let defs = d.value["definitions"].as_object().unwrap();
    assert_refs_resolve(&d.value, "#/definitions/", defs);
    let spec = &defs["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["template"];
    assert_eq!(
        spec["$ref"],
        "#/definitions/io.k8s.api.core.v1.PodTemplateSpec"
    );
    assert_eq!(
        defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
        "int-or-string"
    );
    let patch =
        &d.value["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert!(patch["consumes"]
        .as_array()
        .unwrap()
        .contains(&json!("application/strategic-merge-patch+json")));
    assert!(patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "fieldValidation" && p["type"] == "string"));
}

#[test]
fn index_lists_every_group_version_with_its_hash() {
    let index = v3_index();
    let paths = index["paths"].as_object().unwrap();
    let d = doc("apps", "v1");
    assert_eq!(
        paths["apis/apps/v1"]["serverRelativeURL"],
        format!("/openapi/v3/apis/apps/v1?hash={}", d.hash)
    );
    assert!(paths.contains_key("api/v1"));
    assert!(paths.contains_key("apis/autoscaling/v1"));
    for key in paths.keys() {
        let (g, v) = parse_gv_path(key).unwrap();
        assert!(v3_group_version(g, v).is_some(), "{key}");
    }
    assert_eq!(parse_gv_path("api/v1"), Some(("", "v1")));
    assert_eq!(parse_gv_path("apis/apps/v1"), Some(("apps", "v1")));
    assert_eq!(parse_gv_path("apis/apps"), None);
    assert!(v3_group_version("apps", "v9").is_none());
}

#[test]
fn hash_is_stable_and_drives_caching() {
    let d = doc("batch", "v1");
    assert_eq!(d.hash, hash_of(&d.json));
    assert_eq!(hash_of(b"abc"), hash_of(b"abc"));
    assert_ne!(hash_of(b"abc"), hash_of(b"abd"));
    assert_eq!(d.etag(), format!("\"{}\"", d.hash));
    assert_eq!(check_hash("batch", "v1", &d, None), HashCheck::Plain);
    assert_eq!(
        check_hash("batch", "v1", &d, Some(&d.hash)),
        HashCheck::Immutable
    );
    assert_eq!(
        check_hash("batch", "v1", &d, Some("0")),
        HashCheck::Redirect(format!("/openapi/v3/apis/batch/v1?hash={}", d.hash))
    );
    assert_eq!(serde_json::from_slice::<Value>(&d.json).unwrap(), d.value);
}

#[test]
fn scalar_wrappers_take_upstream_shape() {
    let d = doc("", "v1");
    let ios = component(&d, "io.k8s.apimachinery.pkg.util.intstr.IntOrString");
    assert_eq!(ios["format"], "int-or-string");
    assert!(ios.get("type").is_none());
    let time = component(&d, "io.k8s.apimachinery.pkg.apis.meta.v1.Time");
    assert_eq!(time["type"], "string");
    assert_eq!(time["format"], "date-time");
    let q = component(&d, "io.k8s.apimachinery.pkg.api.resource.Quantity");
    assert!(q["oneOf"].is_array());
}
