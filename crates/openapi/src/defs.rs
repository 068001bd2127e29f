//! The schema definitions of every served kind, generated once from k8s-openapi's schemars
//! implementations and rewritten into the shape the upstream API server publishes in
//! `/openapi/v3`: `#/components/schemas/<name>` references, `allOf` around references that
//! carry a description, `x-kubernetes-group-version-kind` on the kinds, and the list merge
//! extensions from [`PATCH_META`].

use std::collections::HashMap;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use skiff_api::registry;
use skiff_api::schema::{ListType, PatchStrategy, PATCH_META};

use crate::kinds::{self, KIND_TYPES, META_TYPES};

/// Prefix of a reference to a definition in an OpenAPI v3 document.
pub(crate) const V3_REF: &str = "#/components/schemas/";

/// Name of the intstr definition, which upstream publishes as "integer or string".
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// Every definition, v3-shaped, plus the definition name of each kind.
pub(crate) struct Defs {
    /// Definition name → schema.
    pub schemas: Map<String, Value>,
    /// (group, version, kind) → definition name, for kinds and their lists.
    pub roots: HashMap<(String, String, String), String>,
}

/// The definitions, generated on first use.
pub(crate) fn defs() -> &'static Defs {
    static DEFS: OnceLock<Defs> = OnceLock::new();
    DEFS.get_or_init(generate)
}

fn generate() -> Defs {
    let mut gen = SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let mut roots = HashMap::new();
    let mut kind_names = Vec::new();
    for k in KIND_TYPES {
        let name = (k.register)(&mut gen);
        roots.insert(key(k.group, k.version, k.kind), name.clone());
        kind_names.push((k, name));
    }
    for register in META_TYPES {
        register(&mut gen);
    }
    // The openapi3 settings already point references at `#/components/schemas/` and wrap
    // described references in `allOf`, as upstream does.
    let mut schemas = gen.take_definitions(true);

    for (k, name) in &kind_names {
        set_gvk(&mut schemas, name, &[(k.group, k.version, k.kind)]);
        // Lists only exist for the persisted resources.
        if registry::find_kind(&api_version(k.group, k.version), k.kind).is_none() {
            continue;
        }
        let list_kind = format!("{}List", k.kind);
        let list_name = format!("{name}List");
        schemas.insert(list_name.clone(), list_schema(k.kind, name));
        set_gvk(
            &mut schemas,
            &list_name,
            &[(k.group, k.version, &list_kind)],
        );
        roots.insert(key(k.group, k.version, &list_kind), list_name);
    }

    let gvs: Vec<(&str, &str)> = registry::groups()
        .into_iter()
        .flat_map(|(g, vs)| vs.into_iter().map(move |v| (g, v)))
        .collect();
    for meta in [kinds::DELETE_OPTIONS, kinds::WATCH_EVENT] {
        let kind = meta.rsplit('.').next().unwrap_or(meta);
        let gvks: Vec<_> = gvs.iter().map(|(g, v)| (*g, *v, kind)).collect();
        set_gvk(&mut schemas, meta, &gvks);
    }
    set_gvk(&mut schemas, kinds::STATUS, &[("", "v1", "Status")]);

    if let Some(s) = schemas.get_mut(INT_OR_STRING) {
        let description = s.get("description").cloned().unwrap_or(Value::Null);
        *s = json!({
            "description": description,
            "format": "int-or-string",
            "oneOf": [{"type": "integer"}, {"type": "string"}],
        });
    }
    if let Some(s) = schemas.get_mut(QUANTITY) {
        let description = s.get("description").cloned().unwrap_or(Value::Null);
        *s = json!({
            "description": description,
            "oneOf": [{"type": "string"}, {"type": "number"}],
        });
    }

    apply_patch_meta(&mut schemas);
    schemas.sort_keys();
    Defs { schemas, roots }
}

fn key(group: &str, version: &str, kind: &str) -> (String, String, String) {
    (group.to_string(), version.to_string(), kind.to_string())
}

pub(crate) fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn set_gvk(schemas: &mut Map<String, Value>, name: &str, gvks: &[(&str, &str, &str)]) {
    let Some(Value::Object(s)) = schemas.get_mut(name) else {
        return;
    };
    let list: Vec<Value> = gvks
        .iter()
        .map(|(g, v, k)| json!({"group": g, "kind": k, "version": v}))
        .collect();
    s.insert("x-kubernetes-group-version-kind".into(), Value::Array(list));
}

fn list_schema(kind: &str, item: &str) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("The {kind} objects of the list."),
                "type": "array",
                "items": {"$ref": format!("{V3_REF}{item}")},
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "allOf": [{"$ref": format!("{V3_REF}{}", kinds::LIST_META)}],
            },
        },
    })
}

/// Upstream's `x-kubernetes-patch-strategy` value of a strategy.
pub(crate) fn strategy_name(s: PatchStrategy) -> Option<&'static str> {
    match s {
        PatchStrategy::Replace => None,
        PatchStrategy::Merge => Some("merge"),
        PatchStrategy::RetainKeys => Some("retainKeys"),
        PatchStrategy::MergeRetainKeys => Some("merge,retainKeys"),
    }
}

fn apply_patch_meta(schemas: &mut Map<String, Value>) {
    for e in PATCH_META {
        let Some(prop) = schemas
            .get_mut(e.type_name)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(e.field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if let Some(k) = e.meta.merge_key {
            prop.insert("x-kubernetes-patch-merge-key".into(), k.into());
        }
        if let Some(s) = strategy_name(e.meta.strategy) {
            prop.insert("x-kubernetes-patch-strategy".into(), s.into());
        }
        if prop.get("type").and_then(Value::as_str) != Some("array") {
            continue;
        }
        match e.meta.list_type {
            ListType::Atomic => {
                prop.insert("x-kubernetes-list-type".into(), "atomic".into());
            }
            ListType::Set => {
                prop.insert("x-kubernetes-list-type".into(), "set".into());
            }
            ListType::Map(keys) => {
                prop.insert(
                    "x-kubernetes-list-map-keys".into(),
                    keys.iter().map(|k| Value::from(*k)).collect(),
                );
                prop.insert("x-kubernetes-list-type".into(), "map".into());
            }
        }
    }
}

/// The name of the definition a schema refers to, directly or through a one-element `allOf`.
pub(crate) fn ref_name(schema: &Value) -> Option<&str> {
    let r = schema.get("$ref").or_else(|| {
        schema
            .get("allOf")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 1)
            .and_then(|a| a[0].get("$ref"))
    })?;
    r.as_str()?.strip_prefix(V3_REF)
}

/// Every definition reachable from `roots`, sorted by name.
pub(crate) fn closure(roots: &[&str]) -> Map<String, Value> {
    let all = &defs().schemas;
    let mut seen: Vec<&str> = Vec::new();
    let mut stack: Vec<&str> = roots.to_vec();
    while let Some(name) = stack.pop() {
        if seen.contains(&name) {
            continue;
        }
        let Some((k, schema)) = all.get_key_value(name) else {
            continue;
        };
        seen.push(k.as_str());
        collect_refs(schema, &mut stack);
    }
    seen.sort_unstable();
    seen.into_iter()
        .map(|n| (n.to_string(), all[n].clone()))
        .collect()
}

fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "$ref" {
                    if let Some(name) = child.as_str().and_then(|s| s.strip_prefix(V3_REF)) {
                        out.push(name);
                    }
                } else {
                    collect_refs(child, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}
