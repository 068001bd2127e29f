use serde_json::{json, Value};

use super::*;
use crate::schema::{FieldInfo, ListMeta, ListType, PatchStrategy, Schema};

/// A Deployment-shaped schema: enough types to exercise maps, list-maps, sets and atomics.
struct Fake;

fn list(list_type: ListType, type_name: Option<&str>) -> Option<FieldInfo> {
    Some(FieldInfo {
        type_name: type_name.map(Into::into),
        list: Some(ListMeta {
            strategy: PatchStrategy::Merge,
            merge_key: None,
            list_type,
        }),
        is_map: false,
    })
}

fn obj(t: &str) -> Option<FieldInfo> {
    Some(FieldInfo {
        type_name: Some(t.into()),
        list: None,
        is_map: false,
    })
}

fn scalar() -> Option<FieldInfo> {
    Some(FieldInfo {
        type_name: None,
        list: None,
        is_map: false,
    })
}

fn string_map() -> Option<FieldInfo> {
    Some(FieldInfo {
        type_name: None,
        list: None,
        is_map: true,
    })
}

impl Schema for Fake {
    fn root(&self, api_version: &str, kind: &str) -> Option<String> {
        (api_version == "apps/v1" && kind == "Deployment").then(|| "Deployment".to_string())
    }

    fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo> {
        match (type_name, field) {
            ("Deployment", "apiVersion" | "kind") => scalar(),
            ("Deployment", "metadata") => obj("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            ("Deployment", "spec") => obj("DeploymentSpec"),
            ("Deployment", "status") => obj("DeploymentStatus"),
            ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "labels" | "annotations") => {
                string_map()
            }
            ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers") => {
                list(ListType::Set, None)
            }
            ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", _) => scalar(),
            ("DeploymentSpec", "replicas" | "paused") => scalar(),
            ("DeploymentSpec", "selector") => {
                obj("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector")
            }
            ("DeploymentSpec", "template") => obj("PodTemplateSpec"),
            ("DeploymentStatus", _) => scalar(),
            ("PodTemplateSpec", "metadata") => {
                obj("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
            }
            ("PodTemplateSpec", "spec") => obj("PodSpec"),
            ("PodSpec", "containers") => list(ListType::Map(&["name"]), Some("Container")),
            ("PodSpec", "nodeName") => scalar(),
            ("Container", "name" | "image") => scalar(),
            ("Container", "args") => list(ListType::Atomic, None),
            ("Container", "ports") => list(
                ListType::Map(&["containerPort", "protocol"]),
                Some("ContainerPort"),
            ),
            ("ContainerPort", _) => scalar(),
            _ => None,
        }
    }
}

const T1: &str = "2024-01-01T00:00:00Z";
const T2: &str = "2024-01-01T00:01:00Z";

fn deploy(spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn nginx(image: &str) -> Value {
    json!({"template": {"spec": {"containers": [{"name": "nginx", "image": image}]}}})
}

fn entries(obj: &Value) -> Vec<Value> {
    obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn fields_of(obj: &Value, manager: &str) -> Value {
    entries(obj)
        .into_iter()
        .find(|e| e["manager"] == manager)
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn apply_create_records_fields_v1() {
    let mut cfg = deploy(json!({"replicas": 2}));
    cfg["metadata"]["labels"] = json!({"app": "web"});
    cfg["spec"]["template"] = nginx("nginx:1")["template"].clone();
    let out = apply(None, &cfg, "kubectl", false, "apps/v1", &Fake, T1).unwrap();
    assert_eq!(out["spec"]["replicas"], 2);
    let e = &entries(&out)[0];
    assert_eq!(e["manager"], "kubectl");
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["time"], T1);
    assert_eq!(e["fieldsType"], "FieldsV1");
    let expected = json!({
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}
    });
    assert_eq!(e["fieldsV1"], expected);
    // Key order is part of the wire format.
    assert_eq!(e["fieldsV1"].to_string(), expected.to_string());
}

#[test]
fn reapply_without_a_field_removes_it() {
    let mut cfg = deploy(json!({"replicas": 2, "paused": true}));
    cfg["metadata"]["labels"] = json!({"app": "web", "tier": "fe"});
    let live = apply(None, &cfg, "mgr", false, "apps/v1", &Fake, T1).unwrap();
    let mut cfg2 = deploy(json!({"replicas": 2}));
    cfg2["metadata"]["labels"] = json!({"app": "web"});
    let out = apply(Some(&live), &cfg2, "mgr", false, "apps/v1", &Fake, T2).unwrap();
    assert_eq!(out["spec"], json!({"replicas": 2}));
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(out["metadata"]["name"], "web");
    assert_eq!(
        fields_of(&out, "mgr"),
        json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {}}})
    );
}

#[test]
fn disjoint_managers_coexist_and_shared_fields_are_kept() {
    let live = apply(
        None,
        &deploy(json!({"replicas": 2})),
        "a",
        false,
        "apps/v1",
        &Fake,
        T1,
    )
    .unwrap();
    let out = apply(
        Some(&live),
        &deploy(json!({"paused": true})),
        "b",
        false,
        "apps/v1",
        &Fake,
        T2,
    )
    .unwrap();
    assert_eq!(out["spec"], json!({"replicas": 2, "paused": true}));
    assert_eq!(entries(&out).len(), 2);
    assert_eq!(fields_of(&out, "a"), json!({"f:spec": {"f:replicas": {}}}));
    assert_eq!(fields_of(&out, "b"), json!({"f:spec": {"f:paused": {}}}));
    // b also applies replicas with the same value: shared ownership, no conflict; when a
    // stops applying it, b still owns it and the field stays.
    let out = apply(
        Some(&out),
        &deploy(json!({"paused": true, "replicas": 2})),
        "b",
        false,
        "apps/v1",
        &Fake,
        T2,
    )
    .unwrap();
    let mut bare = deploy(json!({}));
    bare.as_object_mut().unwrap().remove("spec");
    let out = apply(Some(&out), &bare, "a", false, "apps/v1", &Fake, T2).unwrap();
    assert_eq!(out["spec"]["replicas"], 2);
    assert_eq!(fields_of(&out, "a"), Value::Null);
}

#[test]
fn conflict_then_force_takes_ownership() {
    let live = apply(
        None,
        &deploy(json!({"replicas": 2})),
        "a",
        false,
        "apps/v1",
        &Fake,
        T1,
    )
    .unwrap();
    let err = apply(
        Some(&live),
        &deploy(json!({"replicas": 3})),
        "b",
        false,
        "apps/v1",
        &Fake,
        T2,
    )
    .unwrap_err();
    assert_eq!(err.code(), 409);
    assert_eq!(err.reason(), "Conflict");
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
    );
    let causes = err.causes();
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".spec.replicas");
    assert_eq!(causes[0].message, "conflict with \"a\"");

    let out = apply(
        Some(&live),
        &deploy(json!({"replicas": 3})),
        "b",
        true,
        "apps/v1",
        &Fake,
        T2,
    )
    .unwrap();
    assert_eq!(out["spec"]["replicas"], 3);
    assert_eq!(fields_of(&out, "a"), Value::Null);
    assert_eq!(fields_of(&out, "b"), json!({"f:spec": {"f:replicas": {}}}));
}

#[test]
fn update_by_edit_then_apply_conflicts() {
    let live = apply(
        None,
        &deploy(json!({"replicas": 2})),
        "kubectl",
        false,
        "apps/v1",
        &Fake,
        T1,
    )
    .unwrap();
    let mut edited = live.clone();
    edited["spec"]["replicas"] = json!(5);
    update_managed_fields(
        Some(&live),
        &mut edited,
        "kubectl-edit",
        true,
        "apps/v1",
        None,
        &Fake,
        T2,
    );
    assert_eq!(fields_of(&edited, "kubectl"), Value::Null);
    let e = entries(&edited);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["manager"], "kubectl-edit");
    assert_eq!(e[0]["operation"], "Update");
    assert_eq!(e[0]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    let err = apply(
        Some(&edited),
        &deploy(json!({"replicas": 2})),
        "kubectl",
        false,
        "apps/v1",
        &Fake,
        T2,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas"
    );
    assert_eq!(
        err.causes()[0].message,
        "conflict with \"kubectl-edit\" using apps/v1"
    );
}

#[test]
fn create_update_tracks_set_fields_but_not_status_or_meta() {
    let mut new = deploy(json!({"replicas": 1}));
    new["metadata"]["uid"] = json!("u1");
    new["metadata"]["resourceVersion"] = json!("5");
    new["metadata"]["annotations"] = json!({"a": "b"});
    new["status"] = json!({"replicas": 0});
    update_managed_fields(
        None,
        &mut new,
        "kubectl-create",
        false,
        "apps/v1",
        None,
        &Fake,
        T1,
    );
    assert_eq!(
        fields_of(&new, "kubectl-create"),
        json!({"f:metadata": {"f:annotations": {".": {}, "f:a": {}}}, "f:spec": {"f:replicas": {}}})
    );
    // A no-op update records nothing and keeps the entry's time.
    let mut same = new.clone();
    update_managed_fields(
        Some(&new),
        &mut same,
        "other",
        true,
        "apps/v1",
        None,
        &Fake,
        T2,
    );
    assert_eq!(entries(&same), entries(&new));
}

/// The stored object carries its managedFields into the comparison; they are not fields.
#[test]
fn an_update_moves_only_the_changed_fields_to_its_manager() {
    let mut created = deploy(json!({"replicas": 1}));
    created["spec"]["template"] = nginx("nginx:1")["template"].clone();
    update_managed_fields(
        None,
        &mut created,
        "creator",
        false,
        "apps/v1",
        None,
        &Fake,
        T1,
    );
    let mut edited = created.clone();
    edited["metadata"]["labels"] = json!({"app": "web"});
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    update_managed_fields(
        Some(&created),
        &mut edited,
        "editor",
        true,
        "apps/v1",
        None,
        &Fake,
        T2,
    );
    assert_eq!(
        fields_of(&edited, "editor"),
        json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:template":
            {"f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {"f:image": {}}}}}}})
    );
    let creator = fields_of(&edited, "creator");
    let nginx =
        &creator["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"];
    assert_eq!(nginx, &json!({".": {}, "f:name": {}}), "{creator}");
    assert_eq!(creator["f:spec"]["f:replicas"], json!({}), "{creator}");
    assert!(creator.get("f:metadata").is_none(), "{creator}");
    assert_eq!(entries(&edited).len(), 2);
}

#[test]
fn list_map_merges_containers_by_name() {
    let cfg_a = deploy(nginx("nginx:1"));
    let live = apply(None, &cfg_a, "a", false, "apps/v1", &Fake, T1).unwrap();
    let cfg_b = deploy(json!({"template": {"spec": {"containers": [
        {"name": "sidecar", "image": "busybox", "args": ["sleep", "1"]}]}}}));
    let out = apply(Some(&live), &cfg_b, "b", false, "apps/v1", &Fake, T2).unwrap();
    let containers = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nginx", "sidecar"]);
    assert_eq!(
        fields_of(&out, "b")["f:spec"]["f:template"]["f:spec"]["f:containers"],
        json!({"k:{\"name\":\"sidecar\"}": {".": {}, "f:args": {}, "f:image": {}, "f:name": {}}})
    );
    // a changes its image; b's container is untouched.
    let out = apply(
        Some(&out),
        &deploy(nginx("nginx:2")),
        "a",
        false,
        "apps/v1",
        &Fake,
        T2,
    )
    .unwrap();
    let containers = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["image"], "nginx:2");
    // a drops its container: only b's remains.
    let out = apply(
        Some(&out),
        &deploy(json!({"replicas": 1})),
        "a",
        false,
        "apps/v1",
        &Fake,
        T2,
    )
    .unwrap();
    let containers = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], "sidecar");
}

#[test]
fn list_map_keys_default_protocol_and_conflict_paths() {
    let cfg = deploy(json!({"template": {"spec": {"containers": [
        {"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}));
    let live = apply(None, &cfg, "a", false, "apps/v1", &Fake, T1).unwrap();
    let c = &fields_of(&live, "a")["f:spec"]["f:template"]["f:spec"]["f:containers"]
        ["k:{\"name\":\"nginx\"}"];
    assert_eq!(
        c["f:ports"],
        json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}})
    );
    let err = apply(
        Some(&live),
        &deploy(nginx("httpd")),
        "b",
        false,
        "apps/v1",
        &Fake,
        T2,
    )
    .unwrap_err();
    assert_eq!(
        err.causes()[0].field,
        ".spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn atomic_struct_and_list_are_owned_whole() {
    let cfg = deploy(json!({"selector": {"matchLabels": {"app": "web"}}}));
    let live = apply(None, &cfg, "a", false, "apps/v1", &Fake, T1).unwrap();
    assert_eq!(fields_of(&live, "a"), json!({"f:spec": {"f:selector": {}}}));
    let cfg = deploy(json!({"selector": {"matchLabels": {"app": "x"}}}));
    let out = apply(Some(&live), &cfg, "a", false, "apps/v1", &Fake, T1).unwrap();
    assert_eq!(
        out["spec"]["selector"],
        json!({"matchLabels": {"app": "x"}})
    );
}

#[test]
fn multiple_conflicts_message_groups_by_manager() {
    let live = apply(
        None,
        &deploy(json!({"replicas": 2, "paused": false})),
        "a",
        false,
        "apps/v1",
        &Fake,
        T1,
    )
    .unwrap();
    let err = apply(
        Some(&live),
        &deploy(json!({"replicas": 3, "paused": true})),
        "b",
        false,
        "apps/v1",
        &Fake,
        T2,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.paused\n- .spec.replicas"
    );
}

#[test]
fn kubectl_ssa_takes_over_client_side_apply_fields() {
    let mut created = deploy(json!({"replicas": 2}));
    let last = "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"replicas\":2}}\n";
    created["metadata"]["annotations"] = json!({ LAST_APPLIED_ANNOTATION: last });
    update_managed_fields(
        None,
        &mut created,
        "kubectl-client-side-apply",
        false,
        "apps/v1",
        None,
        &Fake,
        T1,
    );
    // Same value as last applied: no conflict with the client-side manager, annotation synced.
    let out = apply(
        Some(&created),
        &deploy(json!({"replicas": 3})),
        "kubectl",
        false,
        "apps/v1",
        &Fake,
        T2,
    )
    .unwrap();
    assert_eq!(out["spec"]["replicas"], 3);
    let ann = out["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
        .as_str()
        .unwrap();
    assert!(ann.contains("\"replicas\":3"), "{ann}");
    // Another manager gets no such pass.
    let err = apply(
        Some(&created),
        &deploy(json!({"replicas": 3})),
        "other",
        false,
        "apps/v1",
        &Fake,
        T2,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
}

#[test]
fn fields_v1_round_trips_keys_values_and_nesting() {
    let v = json!({
        "f:metadata": {"f:finalizers": {".": {}, "v:\"a\"": {}, "v:\"b\"": {}}, "f:labels": {".": {}, "f:x": {}}},
        "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}}, "f:x": {"i:0": {}}}
    });
    let set = FieldSet::from_fields_v1(&v).unwrap();
    assert_eq!(set.to_fields_v1().to_string(), v.to_string());
    assert!(set.has(&Path::fields(&["metadata", "labels", "x"]).0));
    assert!(set.has(&Path::fields(&["metadata", "labels"]).0));
    assert!(!set.has(&Path::fields(&["metadata"]).0));
    // Keys are sorted on parse.
    let unsorted = json!({"k:{\"protocol\":\"TCP\",\"port\":80}": {}});
    let set = FieldSet::from_fields_v1(&unsorted).unwrap();
    assert_eq!(
        set.to_fields_v1(),
        json!({"k:{\"port\":80,\"protocol\":\"TCP\"}": {}})
    );
    assert_eq!(set.paths()[0].to_string(), "[port=80,protocol=\"TCP\"]");
}

#[test]
fn set_operations() {
    let a = FieldSet::from_paths([
        Path::fields(&["a", "b"]),
        Path::fields(&["a", "c"]),
        Path::fields(&["d"]),
    ]);
    let b = FieldSet::from_paths([Path::fields(&["a", "c"]), Path::fields(&["a"])]);
    assert_eq!(a.union(&b).paths().len(), 4);
    assert_eq!(a.intersection(&b).paths(), vec![Path::fields(&["a", "c"])]);
    assert_eq!(
        a.difference(&b).paths(),
        vec![Path::fields(&["d"]), Path::fields(&["a", "b"])]
    );
    assert_eq!(
        a.recursive_difference(&b).paths(),
        vec![Path::fields(&["d"])]
    );
}

#[test]
fn request_checks_use_upstream_messages() {
    let causes = validate_patch_options("", None, true);
    assert_eq!(
        invalid_options_message("PatchOptions", &causes),
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    assert!(validate_patch_options("kubectl", None, true).is_empty());
    assert_eq!(
        validate_patch_options("x", Some(true), false)[0].field,
        "force"
    );
    let err = apply(
        None,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}),
        "m",
        false,
        "apps/v1",
        &Fake,
        T1,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "invalid object type: /v1, Kind=Pod");
    assert_eq!(err.code(), 400);
    let mut cfg = deploy(json!({}));
    cfg["metadata"]["managedFields"] = json!([]);
    let err = apply(None, &cfg, "m", false, "apps/v1", &Fake, T1).unwrap_err();
    assert_eq!(err.to_string(), "metadata.managedFields must be nil");
    let cfg = deploy(json!({"template": {"spec": {"containers": [{"image": "x"}]}}}));
    let err = apply(None, &cfg, "m", false, "apps/v1", &Fake, T1).unwrap_err();
    assert!(err.to_string().ends_with(
        ".spec.template.spec.containers: element 0: associative list with keys has an element that omits key field \"name\" (and doesn't have default value)"
    ), "{err}");
}

#[test]
fn default_manager_from_user_agent() {
    assert_eq!(
        default_manager("kubectl/v1.32.0 (linux/amd64) kubernetes/abc"),
        "kubectl"
    );
    assert_eq!(default_manager("Go-http-client/1.1"), "Go-http-client");
    assert_eq!(default_manager("a\tb"), "ab");
    assert_eq!(default_manager(&"x".repeat(200)).len(), 128);
}

#[test]
fn cap_merges_oldest_updaters() {
    let mut obj = deploy(json!({}));
    let mut old = obj.clone();
    for i in 0..12 {
        obj["metadata"]["labels"] = json!({ format!("l{i}"): "v" });
        let mut labels = old["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        labels.insert(format!("l{i}"), json!("v"));
        obj["metadata"]["labels"] = Value::Object(labels);
        let t = format!("2024-01-01T00:00:{i:02}Z");
        update_managed_fields(
            Some(&old),
            &mut obj,
            &format!("m{i:02}"),
            true,
            "apps/v1",
            None,
            &Fake,
            &t,
        );
        old = obj.clone();
    }
    let e = entries(&obj);
    assert_eq!(e.len(), 10);
    let ancient = e
        .iter()
        .find(|e| e["manager"] == "ancient-changes")
        .unwrap();
    assert_eq!(
        ancient["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:l0": {}, "f:l1": {}, "f:l2": {}}}})
    );
}

#[test]
fn set_lists_merge_as_sets() {
    let mut a = deploy(json!({}));
    a["metadata"]["finalizers"] = json!(["x/a"]);
    let live = apply(None, &a, "a", false, "apps/v1", &Fake, T1).unwrap();
    let mut b = deploy(json!({}));
    b["metadata"]["finalizers"] = json!(["x/b"]);
    let out = apply(Some(&live), &b, "b", false, "apps/v1", &Fake, T2).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["x/a", "x/b"]));
    assert_eq!(
        fields_of(&out, "b")["f:metadata"],
        json!({"f:finalizers": {"v:\"x/b\"": {}}})
    );
}

#[test]
fn update_removing_an_applied_field_drops_it_from_the_applier() {
    let mut cfg = deploy(json!({"replicas": 2}));
    cfg["metadata"]["labels"] = json!({"app": "web"});
    let live = apply(None, &cfg, "a", false, "apps/v1", &Fake, T1).unwrap();
    let mut new = live.clone();
    new["metadata"].as_object_mut().unwrap().remove("labels");
    update_managed_fields(
        Some(&live),
        &mut new,
        "kubectl-label",
        true,
        "apps/v1",
        None,
        &Fake,
        T2,
    );
    assert_eq!(fields_of(&new, "a"), json!({"f:spec": {"f:replicas": {}}}));
    // Removing a field gives the updater nothing to own.
    assert_eq!(fields_of(&new, "kubectl-label"), Value::Null);
}
