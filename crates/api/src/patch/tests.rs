use serde_json::{json, Value};

use super::*;
use crate::schema::{FieldInfo, ListMeta, ListType, PatchStrategy, Schema};

const P: &str = "io.k8s.api.core.v1.";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// A fake schema over a handful of core types; list metadata comes from [`PATCH_META`].
struct Fake;

enum Kind {
    Object,
    Map,
    List,
}

impl Schema for Fake {
    fn root(&self, _api_version: &str, kind: &str) -> Option<String> {
        matches!(kind, "Pod" | "Node" | "PodDisruptionBudget").then(|| format!("{P}{kind}"))
    }

    fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo> {
        let short = type_name.rsplit('.').next().unwrap_or(type_name);
        let (ty, kind): (Option<&str>, Kind) = match (short, field) {
            ("Pod" | "Node", "metadata") => (Some(META), Kind::Object),
            ("Pod", "spec") => (Some("PodSpec"), Kind::Object),
            ("Pod", "status") => (Some("PodStatus"), Kind::Object),
            ("Node", "spec") => (Some("NodeSpec"), Kind::Object),
            ("ObjectMeta", "labels" | "annotations") => (None, Kind::Map),
            ("ObjectMeta", "finalizers") => (None, Kind::List),
            ("ObjectMeta", "ownerReferences") => (Some("OwnerReference"), Kind::List),
            ("PodSpec", "containers" | "initContainers") => (Some("Container"), Kind::List),
            ("PodSpec", "volumes") => (Some("Volume"), Kind::List),
            ("PodSpec", "tolerations") => (Some("Toleration"), Kind::List),
            ("PodSpec", "nodeSelector") => (None, Kind::Map),
            ("Container", "env") => (Some("EnvVar"), Kind::List),
            ("Container", "ports") => (Some("ContainerPort"), Kind::List),
            ("Container", "args" | "command") => (None, Kind::List),
            ("Container", "volumeMounts") => (Some("VolumeMount"), Kind::List),
            ("Container", "resources") => (Some("ResourceRequirements"), Kind::Object),
            ("ResourceRequirements", "limits" | "requests") => (None, Kind::Map),
            ("Volume", "configMap") => (Some("ConfigMapVolumeSource"), Kind::Object),
            ("Volume", "emptyDir") => (Some("EmptyDirVolumeSource"), Kind::Object),
            ("PodStatus", "conditions") => (Some("PodCondition"), Kind::List),
            ("NodeSpec", "podCIDRs") => (None, Kind::List),
            ("NodeSpec", "taints") => (Some("Taint"), Kind::List),
            _ => return None,
        };
        let type_name_out = ty.map(|t| -> std::sync::Arc<str> {
            if t.contains('.') {
                t.into()
            } else {
                format!("{P}{t}").into()
            }
        });
        Some(match kind {
            Kind::Object => FieldInfo {
                type_name: type_name_out,
                list: None,
                is_map: false,
            },
            Kind::Map => FieldInfo {
                type_name: type_name_out,
                list: None,
                is_map: true,
            },
            Kind::List => FieldInfo {
                type_name: type_name_out,
                list: Some(list_meta(type_name, field).unwrap_or(ListMeta {
                    strategy: PatchStrategy::Replace,
                    merge_key: None,
                    list_type: ListType::Atomic,
                })),
                is_map: false,
            },
        })
    }
}

fn smp(doc: Value, patch: Value) -> Value {
    apply_strategic_merge_patch(&doc, &patch, &Fake, &format!("{P}Pod"))
        .unwrap_or_else(|e| panic!("patch failed: {e}"))
}

fn smp_err(doc: Value, patch: Value) -> PatchError {
    apply_strategic_merge_patch(&doc, &patch, &Fake, &format!("{P}Pod")).unwrap_err()
}

fn pod(containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

#[test]
fn containers_merge_by_name() {
    let doc = pod(json!([
        {"name": "a", "image": "a:1"},
        {"name": "b", "image": "b:1", "args": ["x"]}
    ]));
    let out = smp(
        doc,
        json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}}),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2", "args": ["x"]}])
    );
    assert_eq!(out["metadata"]["name"], "p");
}

#[test]
fn new_elements_go_first_without_set_element_order() {
    let doc = pod(json!([{"name": "a"}, {"name": "b"}]));
    let out = smp(
        doc.clone(),
        json!({"spec": {"containers": [{"name": "c"}]}}),
    );
    assert_eq!(names(&out["spec"]["containers"]), ["c", "a", "b"]);

    let out = smp(
        doc,
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
            "containers": [{"name": "c", "image": "c:1"}]
        }}),
    );
    assert_eq!(names(&out["spec"]["containers"]), ["a", "b", "c"]);
    assert_eq!(out["spec"]["containers"][2]["image"], "c:1");
    assert!(out["spec"].get("$setElementOrder/containers").is_none());
}

#[test]
fn set_element_order_reorders_without_changes() {
    let doc = pod(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
    let out = smp(
        doc,
        json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}),
    );
    assert_eq!(names(&out["spec"]["containers"]), ["c", "a", "b"]);
}

#[test]
fn set_element_order_mismatch_is_rejected() {
    let doc = pod(json!([{"name": "a"}, {"name": "b"}]));
    let err = smp_err(
        doc,
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}],
            "containers": [{"name": "b", "image": "x"}]
        }}),
    );
    assert_eq!(err.code(), 500);
    assert!(
        err.to_string().starts_with("The order in patch list:"),
        "{err}"
    );
}

#[test]
fn delete_directive_removes_list_element() {
    let doc = pod(json!([{"name": "a"}, {"name": "b"}]));
    let out = smp(
        doc,
        json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
    );
    assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
}

#[test]
fn replace_directive_in_list_replaces_it() {
    let doc = pod(json!([{"name": "a", "image": "a"}, {"name": "b"}]));
    let out = smp(
        doc,
        json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "x", "image": "x"}]}}),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "x", "image": "x"}])
    );
}

#[test]
fn map_directives() {
    let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"nodeSelector": {"zone": "a", "disk": "ssd"}}});
    let out = smp(
        doc.clone(),
        json!({"spec": {"nodeSelector": {"$patch": "replace", "zone": "b"}}}),
    );
    assert_eq!(out["spec"]["nodeSelector"], json!({"zone": "b"}));
    let out = smp(doc, json!({"metadata": {"labels": {"$patch": "delete"}}}));
    assert_eq!(out["metadata"]["labels"], json!({}));
}

#[test]
fn null_removes_a_label() {
    let doc = json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}});
    let out = smp(
        doc,
        json!({"metadata": {"labels": {"a": null, "c": "3", "gone": null}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
}

#[test]
fn retain_keys_on_volumes() {
    let doc = json!({"spec": {"volumes": [
        {"name": "v", "configMap": {"name": "cm"}},
        {"name": "w", "emptyDir": {}}
    ]}});
    let out = smp(
        doc.clone(),
        json!({"spec": {"volumes": [{"name": "v", "emptyDir": {"medium": "Memory"}, "$retainKeys": ["emptyDir", "name"]}]}}),
    );
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "v", "emptyDir": {"medium": "Memory"}}, {"name": "w", "emptyDir": {}}])
    );

    let err = smp_err(
        doc.clone(),
        json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}, "$retainKeys": ["name"]}]}}),
    );
    assert_eq!(
        err,
        PatchError::BadRequest("invalid patch format of retainKeys".into())
    );
    assert_eq!((err.code(), err.reason()), (400, "BadRequest"));

    let err = smp_err(
        doc,
        json!({"spec": {"volumes": [{"name": "v", "$retainKeys": "name"}]}}),
    );
    assert_eq!(err.code(), 400);
}

#[test]
fn elements_recurse_with_their_type() {
    let doc = pod(json!([{
        "name": "a",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "ports": [{"containerPort": 80, "name": "http"}],
        "args": ["x", "y"]
    }]));
    let out = smp(
        doc,
        json!({"spec": {"containers": [{
            "name": "a",
            "env": [{"name": "B", "value": "3"}],
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "args": ["z"]
        }]}}),
    );
    let c = &out["spec"]["containers"][0];
    assert_eq!(
        c["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}])
    );
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
    );
    // A list without a patch strategy is replaced whole.
    assert_eq!(c["args"], json!(["z"]));
}

#[test]
fn lists_without_strategy_are_replaced() {
    let doc = json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}});
    let out = smp(doc, json!({"spec": {"tolerations": [{"key": "c"}]}}));
    assert_eq!(out["spec"]["tolerations"], json!([{"key": "c"}]));
}

#[test]
fn scalar_lists_with_merge_are_sets() {
    let doc = json!({"metadata": {"finalizers": ["a", "b"]}});
    let out = smp(doc.clone(), json!({"metadata": {"finalizers": ["c", "a"]}}));
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));

    let out = smp(
        doc.clone(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b"]));

    let out = smp(
        doc,
        json!({"metadata": {
            "$setElementOrder/finalizers": ["b", "a", "c"],
            "finalizers": ["c"]
        }}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b", "a", "c"]));

    let node = json!({"spec": {"podCIDRs": ["10.42.0.0/24"]}});
    let out = apply_strategic_merge_patch(
        &node,
        &json!({"spec": {"podCIDRs": ["10.42.0.0/24", "fd00::/64"]}}),
        &Fake,
        &format!("{P}Node"),
    )
    .unwrap();
    assert_eq!(
        out["spec"]["podCIDRs"],
        json!(["10.42.0.0/24", "fd00::/64"])
    );
}

#[test]
fn conditions_merge_by_type() {
    let doc = json!({"status": {"conditions": [
        {"type": "Ready", "status": "False"},
        {"type": "Initialized", "status": "True"}
    ]}});
    let out = smp(
        doc,
        json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}])
    );
}

#[test]
fn new_values_lose_nulls_and_directives() {
    let doc = json!({"metadata": {"name": "p"}});
    let out = smp(
        doc,
        json!({"spec": {
            "containers": [{"name": "a", "image": null}, {"name": "gone", "$patch": "delete"}],
            "volumes": [{"name": "v", "$retainKeys": ["name"]}]
        }}),
    );
    assert_eq!(out["spec"]["containers"], json!([{"name": "a"}]));
    assert_eq!(out["spec"]["volumes"], json!([{"name": "v"}]));
}

#[test]
fn untyped_fields_merge_as_maps() {
    let doc = json!({"spec": {"extra": {"a": 1, "list": [1]}}});
    let out = smp(doc, json!({"spec": {"extra": {"b": 2, "list": [2]}}}));
    assert_eq!(out["spec"]["extra"], json!({"a": 1, "b": 2, "list": [2]}));
}

#[test]
fn mismatched_types_are_replaced() {
    let doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}});
    let out = smp(
        doc,
        json!({"metadata": {"labels": "odd"}, "spec": {"x": "s"}}),
    );
    assert_eq!(out["metadata"]["labels"], "odd");
    assert_eq!(out["spec"]["x"], "s");
}

#[test]
fn replace_strategy_object_fields_are_replaced() {
    let doc = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "minAvailable": 1}});
    let out = apply_strategic_merge_patch(
        &doc,
        &json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}}),
        &Fake,
        "io.k8s.api.policy.v1.PodDisruptionBudget",
    )
    .unwrap();
    // Fake has no PodDisruptionBudget type, so only the spec.selector lookup matters: it goes
    // through REPLACE_OBJECT_FIELDS only for the PodDisruptionBudgetSpec definition.
    assert_eq!(
        out["spec"]["selector"],
        json!({"matchLabels": {"a": "1", "b": "2"}})
    );
    struct Pdb;
    impl Schema for Pdb {
        fn root(&self, _: &str, _: &str) -> Option<String> {
            None
        }
        fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo> {
            (type_name == "io.k8s.api.policy.v1.PodDisruptionBudget" && field == "spec").then(
                || FieldInfo {
                    type_name: Some("io.k8s.api.policy.v1.PodDisruptionBudgetSpec".into()),
                    list: None,
                    is_map: false,
                },
            )
        }
    }
    let out = apply_strategic_merge_patch(
        &doc,
        &json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}}),
        &Pdb,
        "io.k8s.api.policy.v1.PodDisruptionBudget",
    )
    .unwrap();
    assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"b": "2"}}));
    assert_eq!(out["spec"]["minAvailable"], 1);
}

#[test]
fn errors_carry_upstream_messages_and_statuses() {
    let doc = pod(json!([{"name": "a"}]));
    let err = smp_err(
        doc.clone(),
        json!({"spec": {"containers": [{"image": "x"}]}}),
    );
    assert_eq!(
        err,
        PatchError::Internal("map: map[image:x] does not contain declared merge key: name".into())
    );
    assert_eq!((err.code(), err.reason()), (500, ""));

    let err = smp_err(
        doc.clone(),
        json!({"metadata": {"$patch": "foo", "a": "b"}}),
    );
    assert_eq!(
        err.to_string(),
        "unknown patch type: foo in map: map[$patch:foo a:b]"
    );

    let err = smp_err(
        doc.clone(),
        json!({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}),
    );
    assert_eq!(
        err.to_string(),
        "merging lists cannot yet be specified in the patch"
    );

    let err = smp_err(
        json!({"metadata": {"finalizers": [["a"]]}}),
        json!({"metadata": {"finalizers": [["b"]]}}),
    );
    assert_eq!(
        err,
        PatchError::Invalid("lists of lists are not supported".into())
    );
    assert_eq!((err.code(), err.reason()), (422, "Invalid"));

    let err = smp_err(doc.clone(), json!([1]));
    assert_eq!(err.code(), 400);
    assert_eq!(
        err.to_string(),
        "json: cannot unmarshal array into Go value of type map[string]interface {}"
    );

    // A null patch changes nothing.
    assert_eq!(smp(doc.clone(), Value::Null), doc);
}

#[test]
fn json_patch() {
    let doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
    let out = apply_json_patch(
        &doc,
        &json!([
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"}
        ]),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"metadata": {"labels": {"b": "2"}}, "spec": {"replicas": 3}})
    );

    let err = apply_json_patch(
        &doc,
        &json!([{"op": "test", "path": "/spec/replicas", "value": 2}]),
    )
    .unwrap_err();
    assert_eq!((err.code(), err.reason()), (422, "Invalid"));
    assert_eq!(
        err.status_message(),
        "the server rejected our request due to an error in our request"
    );

    let err = apply_json_patch(&doc, &json!([{"op": "remove", "path": "/nope"}])).unwrap_err();
    assert_eq!(err.code(), 422);

    let err = apply_json_patch(&doc, &json!({"op": "add"})).unwrap_err();
    assert_eq!(
        err,
        PatchError::BadRequest(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch".into()
        )
    );
    assert_eq!(
        apply_json_patch(&doc, &json!([{"op": "bogus", "path": "/a"}]))
            .unwrap_err()
            .code(),
        400
    );
}

#[test]
fn merge_patch() {
    // RFC 7386's example.
    let doc = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"], "content": "This will be unchanged"});
    let patch = json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": null}, "tags": ["example"]});
    let out = apply_merge_patch(&doc, &patch).unwrap();
    assert_eq!(
        out,
        json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"], "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"})
    );
    assert_eq!(
        apply_merge_patch(&doc, &Value::Null).unwrap_err().code(),
        400
    );
}

#[test]
fn set_element_order_with_deletion_and_owner_references() {
    let doc = pod(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
    let out = smp(
        doc,
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
            "containers": [{"name": "b", "$patch": "delete"}]
        }}),
    );
    assert_eq!(names(&out["spec"]["containers"]), ["c", "a"]);

    // Every element is in the patch, so the patch's order holds.
    let doc = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "rs1"}]}});
    let out = smp(
        doc,
        json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}, {"uid": "2", "name": "rs2"}]}}),
    );
    assert_eq!(
        out["metadata"]["ownerReferences"],
        json!([{"uid": "1", "name": "rs1", "controller": true}, {"uid": "2", "name": "rs2"}])
    );
}
