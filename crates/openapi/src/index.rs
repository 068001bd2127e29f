//! Field-level type information over the definitions: the [`Schema`] the merge logic walks,
//! and the unknown-field check of `fieldValidation`.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;
use skiff_api::registry::split_api_version;
use skiff_api::schema::{FieldInfo, ListMeta, ListType, PatchStrategy, Schema, PATCH_META};

use crate::defs::{defs, ref_name};

/// What the index knows of one object type.
#[derive(Debug, Default)]
struct TypeEntry {
    fields: HashMap<String, FieldInfo>,
    /// Arbitrary content is allowed (no declared properties, or preserve-unknown-fields).
    free_form: bool,
}

/// Type information of every definition, built once from the generated schemas.
#[derive(Debug)]
pub struct TypeIndex {
    types: HashMap<String, TypeEntry>,
}

const ATOMIC: ListMeta = ListMeta {
    strategy: PatchStrategy::Replace,
    merge_key: None,
    list_type: ListType::Atomic,
};

impl TypeIndex {
    fn build() -> TypeIndex {
        let schemas = &defs().schemas;
        let object_type = |name: &str| -> Option<String> {
            let s = schemas.get(name)?;
            is_object(s).then(|| name.to_string())
        };
        let mut types = HashMap::new();
        for (name, schema) in schemas {
            if !is_object(schema) {
                continue;
            }
            let mut entry = TypeEntry {
                free_form: is_free_form(schema),
                ..TypeEntry::default()
            };
            let props = schema.get("properties").and_then(Value::as_object);
            for (field, prop) in props.into_iter().flatten() {
                let meta = PATCH_META
                    .iter()
                    .find(|e| e.type_name == name && e.field == field)
                    .map(|e| e.meta);
                let ty = prop.get("type").and_then(Value::as_str);
                let info = if ty == Some("array") {
                    let items = prop.get("items").unwrap_or(&Value::Null);
                    FieldInfo {
                        type_name: ref_name(items).and_then(object_type).map(Into::into),
                        list: Some(meta.unwrap_or(ATOMIC)),
                        is_map: false,
                    }
                } else if let Some(values) =
                    prop.get("additionalProperties").filter(|a| a.is_object())
                {
                    FieldInfo {
                        type_name: ref_name(values).and_then(object_type).map(Into::into),
                        list: meta,
                        is_map: true,
                    }
                } else {
                    FieldInfo {
                        type_name: ref_name(prop).and_then(object_type).map(Into::into),
                        // Struct fields carry merge metadata only for `retainKeys`.
                        list: meta,
                        is_map: false,
                    }
                };
                entry.fields.insert(field.clone(), info);
            }
            types.insert(name.clone(), entry);
        }
        TypeIndex { types }
    }

    /// Paths of the fields of `obj` that its kind's schema does not declare, in document
    /// order, in upstream's notation (`spec.template.spec.containers[0].imagex`). Free-form
    /// parts (maps, raw extensions, preserve-unknown-fields) are not checked. Empty for kinds
    /// without a schema.
    pub fn unknown_fields(&self, api_version: &str, kind: &str, obj: &Value) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(root) = self.root(api_version, kind) {
            self.walk(&root, obj, "", &mut out);
        }
        out
    }

    fn walk(&self, type_name: &str, v: &Value, path: &str, out: &mut Vec<String>) {
        let (Some(entry), Value::Object(m)) = (self.types.get(type_name), v) else {
            return;
        };
        if entry.free_form {
            return;
        }
        for (k, child) in m {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            let Some(info) = entry.fields.get(k) else {
                out.push(p);
                continue;
            };
            let Some(t) = &info.type_name else {
                continue;
            };
            match child {
                Value::Array(items) if info.list.is_some() && !info.is_map => {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(t, item, &format!("{p}[{i}]"), out);
                    }
                }
                Value::Object(map) if info.is_map => {
                    for (key, item) in map {
                        self.walk(t, item, &format!("{p}[{key}]"), out);
                    }
                }
                Value::Object(_) => self.walk(t, child, &p, out),
                _ => {}
            }
        }
    }
}

fn is_object(s: &Value) -> bool {
    s.get("type").and_then(Value::as_str) == Some("object")
}

fn is_free_form(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || (s.get("properties").is_none() && s.get("additionalProperties").is_none())
}

impl Schema for TypeIndex {
    fn root(&self, api_version: &str, kind: &str) -> Option<String> {
        let (group, version) = split_api_version(api_version);
        defs()
            .roots
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .cloned()
    }

    fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo> {
        self.types.get(type_name)?.fields.get(field).cloned()
    }
}

/// The type index of the served kinds, built on first use.
pub fn schema() -> &'static TypeIndex {
    static INDEX: OnceLock<TypeIndex> = OnceLock::new();
    INDEX.get_or_init(TypeIndex::build)
}

/// Paths of the fields of `obj` not declared in the schema of its kind; see
/// [`TypeIndex::unknown_fields`].
pub fn unknown_fields(api_version: &str, kind: &str, obj: &Value) -> Vec<String> {
    schema().unknown_fields(api_version, kind, obj)
}
