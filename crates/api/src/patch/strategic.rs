//! Strategic merge patch, with the semantics of k8s.io/apimachinery/pkg/util/strategicpatch
//! as the API server applies it (`MergeParallelList` and `IgnoreUnmatchedNulls` on).
//!
//! Upstream walks Go structs; here the [`Schema`] gives each field's type and list metadata.
//! Upstream decodes the merged map back into its Go type, which drops any directive keys left
//! in the result; [`apply_strategic_merge_patch`] strips them for the same effect.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::go::{go_fmt, go_fmt_map, go_type};
use super::meta::{list_meta, REPLACE_OBJECT_FIELDS};
use super::PatchError;
use crate::schema::{ListMeta, PatchStrategy, Schema};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

const ERR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_LIST_OF_LISTS: &str = "lists of lists are not supported";

/// Applies a strategic merge patch to `doc`, an object of definition `type_name` (e.g.
/// `io.k8s.api.core.v1.Pod`).
///
/// Maps merge recursively and `null` deletes a key. Lists whose field has strategy `merge`
/// merge: objects by their merge key (matching elements merge recursively, with the element
/// type), scalars as a set; other lists are replaced. Directives: `$patch: replace|delete` on
/// maps, `$patch: delete|replace` as list elements, `$retainKeys`, `$setElementOrder/<field>`,
/// `$deleteFromPrimitiveList/<field>`. Without `$setElementOrder`, upstream's ordering puts
/// elements new to a list ahead of the existing ones.
///
/// Fields the schema does not know merge untyped (maps merge, lists are replaced) where
/// upstream would fail to find the Go field; typed objects never reach that case upstream.
pub fn apply_strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    schema: &dyn Schema,
    type_name: &str,
) -> Result<Value, PatchError> {
    let patch = match patch {
        Value::Object(m) => m.clone(),
        // Go leaves the map nil when unmarshalling `null`: nothing to merge.
        Value::Null => Map::new(),
        other => {
            return Err(PatchError::BadRequest(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                json_kind(other)
            )))
        }
    };
    let original = match doc {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => return Err(PatchError::BadRequest("invalid JSON document".into())),
    };
    let smp = Smp { schema };
    let merged = smp.merge_map(original, patch, &Ty::Struct(Some(type_name.to_string())))?;
    let mut out = Value::Object(merged);
    strip_directives(&mut out);
    Ok(out)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What a value is, as far as merging goes.
#[derive(Clone, Debug)]
enum Ty {
    /// An object of this definition (`None`: unknown, merged untyped).
    Struct(Option<String>),
    /// A map with arbitrary keys whose values have this definition.
    MapOf(Option<String>),
}

struct FieldMeta {
    /// The type of the field's value, or of its elements for a list.
    child: Option<String>,
    child_is_map: bool,
    list: Option<ListMeta>,
    replace_object: bool,
}

impl FieldMeta {
    fn child_ty(&self) -> Ty {
        if self.child_is_map {
            Ty::MapOf(self.child.clone())
        } else {
            Ty::Struct(self.child.clone())
        }
    }

    fn merges(&self) -> bool {
        matches!(
            self.list.map(|l| l.strategy),
            Some(PatchStrategy::Merge | PatchStrategy::MergeRetainKeys)
        )
    }

    fn merge_key(&self) -> Option<&'static str> {
        self.list.and_then(|l| l.merge_key)
    }
}

fn internal(msg: String) -> PatchError {
    PatchError::Internal(msg)
}

fn no_merge_key(m: &Map<String, Value>, key: &str) -> PatchError {
    internal(format!(
        "map: {} does not contain declared merge key: {key}",
        go_fmt_map(m)
    ))
}

fn bad_arg_type(expected: &str, actual: &Value) -> PatchError {
    internal(format!(
        "expected a {expected}, but received a {}",
        go_type(actual)
    ))
}

const MAP_TYPE: &str = "map[string]interface {}";
const SLICE_TYPE: &str = "[]interface {}";

/// Equality of list elements and merge-key values. Numbers compare by value, as Go compares
/// the int64s/float64s the API server decodes them to.
fn values_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.is_f64() && y.is_f64() && x.as_f64() == y.as_f64(),
            },
        },
        _ => a == b,
    }
}

/// Whether two values have the same Go type after decoding (maps, slices, strings, numbers,
/// bools; `null` has none).
fn same_kind(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.is_f64() == y.is_f64(),
        (Value::Null, _) | (_, Value::Null) => false,
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

/// Drops `null` values from maps, recursively (upstream's `discardNullValuesFromPatch`).
fn discard_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(discard_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

/// Upstream's `removeDirectives`: maps carrying `$patch` vanish (from their parent map or
/// list); `None` means the value itself vanishes.
fn remove_directives(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.contains_key(DIRECTIVE) {
                return None;
            }
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                if let Some(v) = remove_directives(v) {
                    out.insert(k, v);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(a) => Some(Value::Array(
            a.into_iter().filter_map(remove_directives).collect(),
        )),
        v => Some(v),
    }
}

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(SET_ELEMENT_ORDER)
        || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// Removes directive keys left in a merged result, as decoding into a typed object does.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !is_directive_key(k));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Value for a key that has no (compatible) counterpart in the original.
fn cleaned(mut v: Value) -> Option<Value> {
    discard_nulls(&mut v);
    remove_directives(v)
}

fn take_array(v: &mut Value) -> Vec<Value> {
    match std::mem::take(v) {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

fn take_object(v: &mut Value) -> Map<String, Value> {
    match std::mem::take(v) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Whether the elements of lists are objects, and checks they are all of one kind.
fn elements_are_maps(lists: &[&[Value]]) -> Result<Option<bool>, PatchError> {
    let mut first: Option<&Value> = None;
    for v in lists.iter().flat_map(|l| l.iter()) {
        match first {
            None => {
                if v.is_array() {
                    return Err(PatchError::Invalid(ERR_LIST_OF_LISTS.into()));
                }
                first = Some(v);
            }
            Some(f) => {
                if !same_kind(f, v) {
                    let rendered: Vec<String> = lists
                        .iter()
                        .map(|l| go_fmt(&Value::Array(l.to_vec())))
                        .collect();
                    return Err(internal(format!(
                        "list element types are not identical: [{}]",
                        rendered.join(" ")
                    )));
                }
            }
        }
    }
    Ok(first.map(Value::is_object))
}

fn merge_key_value<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object().and_then(|m| m.get(key))
}

/// The position of an object with this merge-key value.
fn find_by_key(list: &[Value], key: &str, value: &Value) -> Result<Option<usize>, PatchError> {
    for (i, v) in list.iter().enumerate() {
        let Some(m) = v.as_object() else {
            return Err(internal(format!("value for key {i} is not a map.")));
        };
        if m.get(key).is_some_and(|x| values_eq(x, value)) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Where an element sits in `order`: by merge-key value for objects, by value for scalars.
fn index_in(order: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    match key {
        Some(k) => {
            let wanted = merge_key_value(item, k);
            order
                .iter()
                .position(|o| match (merge_key_value(o, k), wanted) {
                    (Some(a), Some(b)) => values_eq(a, b),
                    (None, None) => true,
                    _ => false,
                })
        }
        None => order.iter().position(|o| values_eq(o, item)),
    }
}

/// Splits `merged` into the elements present in `by` and the others.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut present = Vec::new();
    let mut others = Vec::new();
    for v in merged {
        let found = match key {
            None => by.iter().any(|b| values_eq(b, &v)),
            Some(k) => {
                let Some(m) = v.as_object() else {
                    return Err(bad_arg_type(MAP_TYPE, &v));
                };
                let Some(kv) = m.get(k) else {
                    return Err(no_merge_key(m, k));
                };
                find_by_key(by, k, kv)?.is_some()
            }
        };
        if found {
            present.push(v);
        } else {
            others.push(v);
        }
    }
    Ok((present, others))
}

/// Splits off the `$patch: delete` elements.
fn split_deletes(list: Vec<Value>) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut keep = Vec::new();
    let mut delete = Vec::new();
    for v in list {
        let Some(m) = v.as_object() else {
            return Err(bad_arg_type(MAP_TYPE, &v));
        };
        if m.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
            delete.push(v);
        } else {
            keep.push(v);
        }
    }
    Ok((keep, delete))
}

/// Sorts `to_sort` by the positions of its elements in `order` (stable; elements missing
/// from `order` go last).
fn sort_by_order(
    to_sort: Vec<Value>,
    order: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    let (mut to_sort, deletes) = match key {
        Some(k) => {
            for v in to_sort.iter().chain(order.iter()) {
                let Some(m) = v.as_object() else {
                    return Err(bad_arg_type(MAP_TYPE, v));
                };
                if !m.contains_key(k) {
                    return Err(no_merge_key(m, k));
                }
            }
            split_deletes(to_sort)?
        }
        None => (to_sort, Vec::new()),
    };
    to_sort.sort_by_key(|v| index_in(order, v, key).unwrap_or(usize::MAX));
    to_sort.extend(deletes);
    Ok(to_sort)
}

/// Upstream's `normalizeElementOrder`: patch elements in patch order, server-only elements in
/// their live order, interleaved by live order where both are known.
fn normalize_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    let right = sort_by_order(patch_items, patch_order, key)?;
    let left = sort_by_order(server_only, server_order, key)?;
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                match (
                    index_in(server_order, l, key),
                    index_in(server_order, r, key),
                ) {
                    (Some(li), Some(ri)) => li.cmp(&ri) == Ordering::Less,
                    _ => false,
                }
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}

struct Smp<'a> {
    schema: &'a dyn Schema,
}

impl Smp<'_> {
    fn lookup(&self, ty: &Ty, key: &str) -> FieldMeta {
        match ty {
            Ty::Struct(Some(t)) => {
                let replace_object = REPLACE_OBJECT_FIELDS
                    .iter()
                    .any(|(rt, rf)| rt == t && *rf == key);
                match self.schema.field(t, key) {
                    Some(info) => FieldMeta {
                        child: info.type_name.map(|t| t.to_string()),
                        child_is_map: info.is_map,
                        list: info.list.or_else(|| list_meta(t, key)),
                        replace_object,
                    },
                    None => FieldMeta {
                        child: None,
                        child_is_map: false,
                        list: list_meta(t, key),
                        replace_object,
                    },
                }
            }
            Ty::Struct(None) => FieldMeta {
                child: None,
                child_is_map: false,
                list: None,
                replace_object: false,
            },
            Ty::MapOf(values) => FieldMeta {
                child: values.clone(),
                child_is_map: false,
                list: None,
                replace_object: false,
            },
        }
    }

    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        ty: &Ty,
    ) -> Result<Map<String, Value>, PatchError> {
        if let Some(directive) = patch.get(DIRECTIVE) {
            return match directive.as_str() {
                Some("replace") => {
                    patch.shift_remove(DIRECTIVE);
                    Ok(patch)
                }
                Some("delete") => Ok(Map::new()),
                _ => Err(internal(format!(
                    "unknown patch type: {} in map: {}",
                    go_fmt(directive),
                    go_fmt_map(&patch)
                ))),
            };
        }
        apply_retain_keys(&mut original, &mut patch)?;
        self.merge_set_element_order(&mut original, &mut patch, ty)?;

        for (k, patch_v) in patch {
            let (key, is_delete_list) = match k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
                Some(rest) => (rest.to_string(), true),
                None => (k, false),
            };
            if patch_v.is_null() {
                original.shift_remove(&key);
                continue;
            }
            let Some(orig_v) = original.get_mut(&key) else {
                if !is_delete_list {
                    if let Some(v) = cleaned(patch_v) {
                        original.insert(key, v);
                    }
                }
                continue;
            };
            if !same_kind(orig_v, &patch_v) {
                if !is_delete_list {
                    match cleaned(patch_v) {
                        Some(v) => *orig_v = v,
                        None => {
                            original.shift_remove(&key);
                        }
                    }
                }
                continue;
            }
            match patch_v {
                Value::Object(pm) => {
                    let meta = self.lookup(ty, &key);
                    let om = take_object(orig_v);
                    *orig_v = Value::Object(if meta.replace_object {
                        pm
                    } else {
                        self.merge_map(om, pm, &meta.child_ty())?
                    });
                }
                Value::Array(pa) => {
                    let meta = self.lookup(ty, &key);
                    let oa = take_array(orig_v);
                    *orig_v = Value::Array(self.merge_list_field(oa, pa, &meta, is_delete_list)?);
                }
                scalar => *orig_v = scalar,
            }
        }
        Ok(original)
    }

    /// Upstream's `mergeSliceHandler`: merge when the field's strategy says so, else replace.
    fn merge_list_field(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        meta: &FieldMeta,
        is_delete_list: bool,
    ) -> Result<Vec<Value>, PatchError> {
        if !meta.merges() {
            return Ok(patch);
        }
        self.merge_list(
            original,
            patch,
            &meta.child,
            meta.merge_key(),
            is_delete_list,
        )
    }

    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        elem: &Option<String>,
        merge_key: Option<&str>,
        is_delete_list: bool,
    ) -> Result<Vec<Value>, PatchError> {
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        let maps = elements_are_maps(&[&original, &patch])?.unwrap_or(false);
        let (original, patch, merged, key) = if !maps {
            if is_delete_list {
                return Ok(original
                    .into_iter()
                    .filter(|v| !patch.iter().any(|d| values_eq(d, v)))
                    .collect());
            }
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(patch.iter()) {
                if !merged.iter().any(|m| values_eq(m, v)) {
                    merged.push(v.clone());
                }
            }
            (original, patch, merged, None)
        } else {
            let Some(key) = merge_key else {
                return Err(internal(
                    "cannot merge lists without merge key for struct".to_string(),
                ));
            };
            let (original, patch) = merge_special_elements(original, patch, key)?;
            let merged = self.merge_by_key(original.clone(), &patch, key, elem)?;
            (original, patch, merged, Some(key))
        };
        let (patch_items, server_only) = partition(merged, &patch, key)?;
        normalize_order(patch_items, server_only, &patch, &original, key)
    }

    /// Upstream's `mergeSliceWithoutSpecialElements`: objects matching by key merge, new ones
    /// are appended (ordering comes after).
    fn merge_by_key(
        &self,
        mut original: Vec<Value>,
        patch: &[Value],
        key: &str,
        elem: &Option<String>,
    ) -> Result<Vec<Value>, PatchError> {
        for v in patch {
            let Some(pm) = v.as_object() else {
                return Err(bad_arg_type(MAP_TYPE, v));
            };
            let Some(kv) = pm.get(key) else {
                return Err(no_merge_key(pm, key));
            };
            match find_by_key(&original, key, kv)? {
                Some(i) => {
                    let om = take_object(&mut original[i]);
                    original[i] =
                        Value::Object(self.merge_map(om, pm.clone(), &Ty::Struct(elem.clone()))?);
                }
                None => {
                    // The typed decode upstream turns nulls into absent fields.
                    let mut v = v.clone();
                    discard_nulls(&mut v);
                    original.push(v);
                }
            }
        }
        Ok(original)
    }

    /// Upstream's `mergePatchIntoOriginal`: merges each list named by a
    /// `$setElementOrder/<field>` directive and orders it by that list.
    fn merge_set_element_order(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        ty: &Ty,
    ) -> Result<(), PatchError> {
        let directives: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
            .cloned()
            .collect();
        for directive in directives {
            let order_v = patch.shift_remove(&directive).unwrap_or(Value::Null);
            let Value::Array(order) = order_v else {
                return Err(bad_arg_type(SLICE_TYPE, &order_v));
            };
            let field = directive[SET_ELEMENT_ORDER.len()..].to_string();
            let original_list = match original.get(&field) {
                None => None,
                Some(Value::Array(a)) => Some(a.clone()),
                Some(other) => return Err(bad_arg_type(SLICE_TYPE, other)),
            };
            let patch_list = match patch.get(&field) {
                None => None,
                Some(Value::Array(a)) => Some(a.clone()),
                Some(other) => return Err(bad_arg_type(SLICE_TYPE, other)),
            };
            let meta = self.lookup(ty, &field);
            let key = meta.merge_key();
            validate_order(patch_list.as_deref().unwrap_or(&[]), &order, key)?;

            let original_items = original_list.clone().unwrap_or_default();
            let patch_items = patch_list.clone().unwrap_or_default();
            let merged = match (original_list, patch_list) {
                (Some(o), None) => o,
                (None, Some(p)) => match remove_directives(Value::Array(p)) {
                    Some(Value::Array(a)) => a,
                    _ => continue,
                },
                (Some(o), Some(p)) => self.merge_list_field(o, p, &meta, false)?,
                (None, None) => continue,
            };
            let (in_order, server_only) = partition(merged, &order, key)?;
            let maps = elements_are_maps(&[&original_items, &patch_items])?;
            if maps.is_none() {
                return Err(internal("no elements in any of the given slices".into()));
            }
            let both = normalize_order(in_order, server_only, &order, &original_items, key)?;
            original.insert(field.clone(), Value::Array(both));
            patch.shift_remove(&field);
        }
        Ok(())
    }
}

/// Upstream's `mergeSliceWithSpecialElements`: applies `$patch: delete` elements to the
/// original, and `$patch: replace` makes the rest of the patch the whole list.
fn merge_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::new();
    let mut replace = false;
    for v in patch {
        let Some(m) = v.as_object() else {
            return Err(bad_arg_type(MAP_TYPE, &v));
        };
        let Some(directive) = m.get(DIRECTIVE) else {
            plain.push(v);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(kv) = m.get(key) else {
                    return Err(no_merge_key(m, key));
                };
                while let Some(i) = find_by_key(&original, key, kv)? {
                    original.remove(i);
                }
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(internal(
                    "merging lists cannot yet be specified in the patch".into(),
                ))
            }
            _ => {
                return Err(internal(format!(
                    "unknown patch type: {} in map: {}",
                    go_fmt(directive),
                    go_fmt_map(m)
                )))
            }
        }
    }
    if replace {
        Ok((plain, Vec::new()))
    } else {
        Ok((original, plain))
    }
}

/// Upstream's `applyRetainKeysDirective`: keeps only the listed keys of the original, after
/// checking that the patch sets no key outside the list.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::BadRequest(ERR_RETAIN_KEYS.into()));
    };
    let listed = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !listed(k) {
            return Err(PatchError::BadRequest(ERR_RETAIN_KEYS.into()));
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// Upstream's `validatePatchWithSetOrderList`: the patch list (less its deletions) must appear
/// in the order list in the same relative order.
fn validate_order(
    patch_list: &[Value],
    order: &[Value],
    key: Option<&str>,
) -> Result<(), PatchError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete = match key {
        Some(_) => split_deletes(patch_list.to_vec())?.0,
        None => patch_list.to_vec(),
    };
    let (mut pi, mut oi) = (0, 0);
    while pi < non_delete.len() && oi < order.len() {
        let item = &non_delete[pi];
        if item.as_object().is_some_and(|m| m.contains_key(DIRECTIVE)) {
            pi += 1;
            continue;
        }
        let equal = match key {
            None => values_eq(item, &order[oi]),
            Some(k) => {
                let (Some(l), Some(r)) = (item.as_object(), order[oi].as_object()) else {
                    let bad = if item.is_object() { &order[oi] } else { item };
                    return Err(bad_arg_type(MAP_TYPE, bad));
                };
                let Some(lv) = l.get(k) else {
                    return Err(no_merge_key(l, k));
                };
                let Some(rv) = r.get(k) else {
                    return Err(no_merge_key(r, k));
                };
                values_eq(lv, rv)
            }
        };
        if equal {
            pi += 1;
        }
        oi += 1;
    }
    if pi < non_delete.len() && oi >= order.len() {
        return Err(internal(format!(
            "The order in patch list:\n{}\n doesn't match $setElementOrder list:\n{}\n",
            go_fmt(&Value::Array(patch_list.to_vec())),
            go_fmt(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}
