//! Walking objects through the schema: field sets, merge, comparison and removal
//! (structured-merge-diff's `typed` package).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use serde_json::{Map, Value};

use super::fieldpath::{FieldSet, PathElement};
use crate::schema::{FieldInfo, ListType, Schema};

/// Definition names of structs that upstream marks `x-kubernetes-map-type: atomic`
/// (`+structType=atomic`): owned and replaced as a whole.
pub static ATOMIC_TYPES: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.ScopeSelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.SecretReference",
    "io.k8s.api.core.v1.TopologySelectorTerm",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
    "io.k8s.api.core.v1.TypedObjectReference",
];

/// Map fields that upstream marks `+mapType=atomic`, as (definition name, field).
pub static ATOMIC_MAP_FIELDS: &[(&str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "nodeSelector"),
    ("io.k8s.api.core.v1.ServiceSpec", "selector"),
    ("io.k8s.api.core.v1.ReplicationControllerSpec", "selector"),
];

/// Fields that Go types hold as non-pointer structs: a typed object always carries them (at
/// least empty), so writing into them never counts as adding the field itself.
static EMBEDDED_STRUCT_FIELDS: &[&str] = &[
    "metadata",
    "spec",
    "status",
    "template",
    "strategy",
    "updateStrategy",
    "jobTemplate",
    "resources",
    "loadBalancer",
    "daemonEndpoints",
    "nodeInfo",
    "scaleTargetRef",
    "roleRef",
    "source",
];

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
static OBJECT_META_TYPE: LazyLock<Arc<str>> = LazyLock::new(|| OBJECT_META.into());

/// The type of a value, as far as merging cares.
#[derive(Clone, Debug)]
pub(crate) enum Ty {
    /// A named object type with declared fields.
    Struct(Arc<str>),
    /// A map with arbitrary keys whose values have this type.
    Map(Box<Ty>),
    /// A list and the type of its elements.
    List(ListType, Box<Ty>),
    /// A value owned as a whole.
    Atomic,
    /// No type information: maps are granular, lists atomic (upstream's "deduced" type).
    Untyped,
    /// The top level of an object of unknown kind: untyped, but `metadata` is `ObjectMeta`.
    Root,
}

/// What a node is, given its type and value.
enum Kind<'t> {
    Leaf,
    Map,
    List(ListType, &'t Ty),
}

/// Added, modified and removed paths between two objects.
#[derive(Clone, Debug, Default)]
pub(crate) struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    /// Drops the ignored paths and everything under them.
    pub fn filter(self, ignored: &FieldSet) -> Comparison {
        Comparison {
            added: self.added.recursive_difference(ignored),
            modified: self.modified.recursive_difference(ignored),
            removed: self.removed.recursive_difference(ignored),
        }
    }
}

/// A list's items in order and by key, for the live and the applied side.
type Indexed<'v> = (
    (Vec<PathElement>, HashMap<String, &'v Value>),
    (Vec<PathElement>, HashMap<String, &'v Value>),
);

/// Type-aware operations over one schema.
pub(crate) struct Typed<'a> {
    pub schema: &'a dyn Schema,
}

fn fmt_path(path: &[PathElement]) -> String {
    path.iter().map(|pe| pe.to_string()).collect()
}

impl Typed<'_> {
    /// The type of an object's top level.
    pub fn root(&self, obj: &Value) -> Ty {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        match self.schema.root(api_version, kind) {
            Some(t) => Ty::Struct(t.into()),
            None => Ty::Root,
        }
    }

    fn from_info(info: FieldInfo) -> Ty {
        let elem = match info.type_name {
            Some(t) if ATOMIC_TYPES.contains(&&*t) => Ty::Atomic,
            Some(t) => Ty::Struct(t),
            None => Ty::Untyped,
        };
        if let Some(list) = info.list {
            Ty::List(list.list_type, Box::new(elem))
        } else if info.is_map {
            Ty::Map(Box::new(elem))
        } else {
            elem
        }
    }

    /// The type of a map entry and whether it is a declared field of a struct.
    fn child(&self, ty: &Ty, key: &str) -> (Ty, bool) {
        match ty {
            Ty::Struct(t) => {
                if ATOMIC_MAP_FIELDS.contains(&(&**t, key)) {
                    return (Ty::Atomic, true);
                }
                match self.schema.field(t, key) {
                    Some(info) => (Self::from_info(info), true),
                    None => (Ty::Untyped, false),
                }
            }
            Ty::Map(elem) => ((**elem).clone(), false),
            Ty::Root if key == "metadata" => (Ty::Struct(OBJECT_META_TYPE.clone()), false),
            _ => (Ty::Untyped, false),
        }
    }

    fn kind<'t>(ty: &'t Ty, v: &Value) -> Kind<'t> {
        match (v, ty) {
            (Value::Object(_), Ty::Struct(_) | Ty::Map(_) | Ty::Untyped | Ty::Root) => Kind::Map,
            (Value::Array(_), Ty::List(lt, elem)) if *lt != ListType::Atomic => {
                Kind::List(*lt, elem)
            }
            _ => Kind::Leaf,
        }
    }

    /// The path element of a list item (upstream's `listItemToPathElement`).
    fn item_pe(lt: ListType, item: &Value) -> Result<PathElement, String> {
        match lt {
            ListType::Map(keys) => {
                let Value::Object(m) = item else {
                    return Err(if item.is_null() {
                        "associative list with keys may not have a null element".into()
                    } else {
                        "associative list with keys may not have non-map elements".into()
                    });
                };
                let mut fields = Vec::with_capacity(keys.len());
                for k in keys {
                    let v = match m.get(*k) {
                        Some(v) => v.clone(),
                        // The only defaulted list-map key among the built-in types.
                        None if *k == "protocol" => Value::String("TCP".into()),
                        None => {
                            return Err(format!(
                                "associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
                            ))
                        }
                    };
                    fields.push((k.to_string(), v));
                }
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(PathElement::Key(fields))
            }
            _ => match item {
                Value::Object(_) => {
                    Err("associative list without keys has an element that's a map type".into())
                }
                Value::Array(_) => {
                    Err("not supported: associative list with lists as elements".into())
                }
                Value::Null => Err(
                    "associative list without keys has an element that's an explicit null".into(),
                ),
                v => Ok(PathElement::Value(v.clone())),
            },
        }
    }

    /// Indexes a list's items by path element; repeated elements after the first are ignored.
    fn index<'v>(
        lt: ListType,
        items: &'v [Value],
        path: &[PathElement],
    ) -> Result<(Vec<PathElement>, HashMap<String, &'v Value>), String> {
        let mut order = Vec::with_capacity(items.len());
        let mut seen = HashMap::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let pe = Self::item_pe(lt, item)
                .map_err(|e| format!("{}: element {i}: {e}", fmt_path(path)))?;
            let key = pe.to_fields_key();
            if seen.contains_key(&key) {
                continue;
            }
            seen.insert(key, item);
            order.push(pe);
        }
        Ok((order, seen))
    }

    /// [`Self::index`] of both sides of a list merge or comparison (the applied side's
    /// errors first, as upstream reports them).
    fn index_both<'v>(
        lt: ListType,
        lhs: Option<&'v Value>,
        rhs: Option<&'v Value>,
        path: &[PathElement],
    ) -> Result<Indexed<'v>, String> {
        let items = |v: Option<&'v Value>| -> &'v [Value] {
            v.and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
        };
        let r = Self::index(lt, items(rhs), path)?;
        let l = Self::index(lt, items(lhs), path)?;
        Ok((l, r))
    }

    /// The set of fields an object sets (upstream's `ToFieldSet`).
    pub fn to_field_set(&self, v: &Value, ty: &Ty) -> Result<FieldSet, String> {
        let mut set = FieldSet::new();
        self.field_set_walk(v, ty, &mut Vec::new(), &mut set)?;
        Ok(set)
    }

    fn field_set_walk(
        &self,
        v: &Value,
        ty: &Ty,
        path: &mut Vec<PathElement>,
        set: &mut FieldSet,
    ) -> Result<(), String> {
        match Self::kind(ty, v) {
            Kind::Leaf => set.insert(path),
            Kind::Map => {
                for (k, cv) in v.as_object().into_iter().flatten() {
                    let (cty, declared) = self.child(ty, k);
                    path.push(PathElement::Field(k.clone()));
                    self.field_set_walk(cv, &cty, path, set)?;
                    let empty = cv.is_null() || cv.as_object().is_some_and(Map::is_empty);
                    if empty || !declared {
                        set.insert(path);
                    }
                    path.pop();
                }
            }
            Kind::List(lt, elem) => {
                let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
                for (i, item) in items.iter().enumerate() {
                    let pe = Self::item_pe(lt, item)
                        .map_err(|e| format!("{}: element {i}: {e}", fmt_path(path)))?;
                    path.push(pe);
                    self.field_set_walk(item, elem, path, set)?;
                    set.insert(path);
                    path.pop();
                }
            }
        }
        Ok(())
    }

    /// Merges `rhs` into `lhs` (rhs wins on leaves).
    pub fn merge(
        &self,
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        ty: &Ty,
        path: &mut Vec<PathElement>,
    ) -> Result<Option<Value>, String> {
        let kl = lhs.map(|v| Self::kind(ty, v));
        let kr = rhs.map(|v| Self::kind(ty, v));
        if Self::is_leaf(lhs, rhs, &kl, &kr) {
            return Ok(rhs.or(lhs).cloned());
        }
        let out = match kl.as_ref().or(kr.as_ref()) {
            Some(Kind::List(lt, elem)) => self.merge_list(lhs, rhs, *lt, elem, path)?,
            _ => self.merge_map(lhs, rhs, ty, path)?,
        };
        Ok(Some(out))
    }

    /// Whether two nodes merge (and compare) as one value rather than field by field.
    fn is_leaf(
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        kl: &Option<Kind>,
        kr: &Option<Kind>,
    ) -> bool {
        let is_empty = |v: Option<&Value>| match v {
            None => true,
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(_) => false,
        };
        match (kl, kr) {
            (Some(Kind::Leaf), _) | (_, Some(Kind::Leaf)) => true,
            (Some(Kind::Map), Some(Kind::List(..))) | (Some(Kind::List(..)), Some(Kind::Map)) => {
                true
            }
            _ => is_empty(lhs) && is_empty(rhs),
        }
    }

    fn merge_map(
        &self,
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        ty: &Ty,
        path: &mut Vec<PathElement>,
    ) -> Result<Value, String> {
        let empty = Map::new();
        let lm = lhs.and_then(Value::as_object).unwrap_or(&empty);
        let rm = rhs.and_then(Value::as_object).unwrap_or(&empty);
        let mut out = Map::new();
        let keys = lm.keys().chain(rm.keys().filter(|k| !lm.contains_key(*k)));
        for k in keys {
            let (cty, _) = self.child(ty, k);
            path.push(PathElement::Field(k.clone()));
            let merged = self.merge(lm.get(k), rm.get(k), &cty, path)?;
            path.pop();
            if let Some(v) = merged {
                out.insert(k.clone(), v);
            }
        }
        Ok(Value::Object(out))
    }

    fn merge_list(
        &self,
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        lt: ListType,
        elem: &Ty,
        path: &mut Vec<PathElement>,
    ) -> Result<Value, String> {
        let ((l_order, l_seen), (r_order, r_seen)) = Self::index_both(lt, lhs, rhs, path)?;
        let key = |pe: &PathElement| pe.to_fields_key();
        // Upstream keeps the applied order for shared items and slots the live-only items
        // in where they were.
        let mut shared: std::collections::VecDeque<&PathElement> = r_order
            .iter()
            .filter(|pe| l_seen.contains_key(&key(pe)))
            .collect();
        let mut next_shared = shared.pop_front();
        let mut out = Vec::with_capacity(l_order.len().max(r_order.len()));
        let (mut li, mut ri) = (0, 0);
        let item = |pe: &PathElement, path: &mut Vec<PathElement>| {
            let k = key(pe);
            path.push(pe.clone());
            let merged = self.merge(l_seen.get(&k).copied(), r_seen.get(&k).copied(), elem, path);
            path.pop();
            merged
        };
        while li < l_order.len() || ri < r_order.len() {
            if li < l_order.len() && ri < r_order.len() {
                let pe = &l_order[li];
                if *pe == r_order[ri] {
                    out.extend(item(pe, path)?);
                    li += 1;
                    ri += 1;
                    next_shared = shared.pop_front();
                    continue;
                }
                if r_seen.contains_key(&key(pe)) && next_shared.is_some_and(|n| n != pe) {
                    li += 1;
                    continue;
                }
            }
            if li < l_order.len() {
                let pe = &l_order[li];
                if !r_seen.contains_key(&key(pe)) {
                    out.extend(item(pe, path)?);
                    li += 1;
                    continue;
                }
            }
            if ri < r_order.len() {
                let pe = &r_order[ri];
                out.extend(item(pe, path)?);
                ri += 1;
                if next_shared == Some(pe) {
                    next_shared = shared.pop_front();
                }
            } else {
                // Every applied item is placed; shared live items were merged already.
                li += 1;
            }
        }
        Ok(Value::Array(out))
    }

    /// Differences between two objects (upstream's `Compare`). The root's
    /// `metadata.managedFields` are not part of either object's fields and are skipped, so
    /// callers need not copy objects to drop them.
    pub fn compare(&self, lhs: &Value, rhs: &Value, ty: &Ty) -> Result<Comparison, String> {
        let mut c = Comparison::default();
        self.diff(Some(lhs), Some(rhs), ty, false, &mut Vec::new(), &mut c)?;
        Ok(c)
    }

    /// `embedded`: the node is a non-pointer struct of a typed object, present even if absent
    /// from the JSON, so creating it is not adding it.
    fn diff(
        &self,
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        ty: &Ty,
        embedded: bool,
        path: &mut Vec<PathElement>,
        c: &mut Comparison,
    ) -> Result<(), String> {
        // Most of an update leaves most of the object as it was: equal subtrees hold no
        // differences, and comparing them is far cheaper than walking them.
        if let (Some(l), Some(r)) = (lhs, rhs) {
            if l == r {
                return Ok(());
            }
        }
        let kl = lhs.map(|v| Self::kind(ty, v));
        let kr = rhs.map(|v| Self::kind(ty, v));
        if Self::is_leaf(lhs, rhs, &kl, &kr) {
            match (lhs, rhs) {
                (None, _) => c.added.insert(path),
                (_, None) => c.removed.insert(path),
                (Some(l), Some(r)) if l != r => c.modified.insert(path),
                _ => {}
            }
            return Ok(());
        }
        match kl.as_ref().or(kr.as_ref()) {
            Some(Kind::List(lt, elem)) => self.diff_list(lhs, rhs, *lt, elem, path, c)?,
            _ => self.diff_map(lhs, rhs, ty, path, c)?,
        }
        if lhs.is_none() {
            if !embedded {
                c.added.insert(path);
            }
        } else if rhs.is_none() {
            c.removed.insert(path);
        }
        Ok(())
    }

    fn diff_map(
        &self,
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        ty: &Ty,
        path: &mut Vec<PathElement>,
        c: &mut Comparison,
    ) -> Result<(), String> {
        let empty = Map::new();
        let lm = lhs.and_then(Value::as_object).unwrap_or(&empty);
        let rm = rhs.and_then(Value::as_object).unwrap_or(&empty);
        let at_root_metadata =
            matches!(path.as_slice(), [PathElement::Field(f)] if f == "metadata");
        let keys = lm.keys().chain(rm.keys().filter(|k| !lm.contains_key(*k)));
        for k in keys {
            if at_root_metadata && k == "managedFields" {
                continue;
            }
            let (l, r) = (lm.get(k), rm.get(k));
            let (cty, declared) = self.child(ty, k);
            let embedded = declared
                && matches!(ty, Ty::Struct(_))
                && matches!(cty, Ty::Struct(_))
                && EMBEDDED_STRUCT_FIELDS.contains(&k.as_str());
            path.push(PathElement::Field(k.clone()));
            self.diff(l, r, &cty, embedded, path, c)?;
            path.pop();
        }
        Ok(())
    }

    fn diff_list(
        &self,
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        lt: ListType,
        elem: &Ty,
        path: &mut Vec<PathElement>,
        c: &mut Comparison,
    ) -> Result<(), String> {
        let ((l_order, l_seen), (r_order, r_seen)) = Self::index_both(lt, lhs, rhs, path)?;
        // Each item once, by its key: the applied side's, then those only the live side has.
        for pe in &r_order {
            let k = pe.to_fields_key();
            path.push(pe.clone());
            self.diff(
                l_seen.get(&k).copied(),
                r_seen.get(&k).copied(),
                elem,
                false,
                path,
                c,
            )?;
            path.pop();
        }
        for pe in &l_order {
            let k = pe.to_fields_key();
            if r_seen.contains_key(&k) {
                continue;
            }
            path.push(pe.clone());
            self.diff(l_seen.get(&k).copied(), None, elem, false, path, c)?;
            path.pop();
        }
        Ok(())
    }

    /// The object with the set's paths removed; `None` when nothing is left of a map or list.
    pub fn remove_items(&self, v: &Value, set: &FieldSet, ty: &Ty) -> Option<Value> {
        match Self::kind(ty, v) {
            Kind::Leaf => Some(v.clone()),
            Kind::Map => {
                let m = v.as_object()?;
                if m.is_empty() {
                    return Some(v.clone());
                }
                let mut out = Map::new();
                for (k, cv) in m {
                    let pe = PathElement::Field(k.clone());
                    if set.has(std::slice::from_ref(&pe)) {
                        continue;
                    }
                    match set.with_prefix(&pe).filter(|s| !s.is_empty()) {
                        Some(sub) => {
                            if let Some(nv) = self.remove_items(cv, sub, &self.child(ty, k).0) {
                                out.insert(k.clone(), nv);
                            }
                        }
                        None => {
                            out.insert(k.clone(), cv.clone());
                        }
                    }
                }
                (!out.is_empty()).then_some(Value::Object(out))
            }
            Kind::List(lt, elem) => {
                let items = v.as_array()?;
                if items.is_empty() {
                    return Some(v.clone());
                }
                let mut out = Vec::new();
                for item in items {
                    let Ok(pe) = Self::item_pe(lt, item) else {
                        out.push(item.clone());
                        continue;
                    };
                    if set.has(std::slice::from_ref(&pe)) {
                        continue;
                    }
                    match set.with_prefix(&pe).filter(|s| !s.is_empty()) {
                        Some(sub) => out.extend(self.remove_items(item, sub, elem)),
                        None => out.push(item.clone()),
                    }
                }
                (!out.is_empty()).then_some(Value::Array(out))
            }
        }
    }

    /// Makes every declared struct field with paths under it a member itself, so removing
    /// it removes the field (upstream's `EnsureNamedFieldsAreMembers`).
    pub fn ensure_named_fields(&self, set: &FieldSet, ty: &Ty) -> FieldSet {
        let mut out = FieldSet::new();
        for pe in set.members() {
            out.insert_member(pe.clone());
        }
        for (pe, child) in set.children() {
            let cty = match (pe, ty) {
                (PathElement::Field(name), _) => {
                    let (cty, declared) = self.child(ty, name);
                    if declared && matches!(ty, Ty::Struct(_)) {
                        out.insert_member(pe.clone());
                    }
                    cty
                }
                (_, Ty::List(_, elem)) => (**elem).clone(),
                _ => Ty::Untyped,
            };
            out.set_child(pe.clone(), self.ensure_named_fields(child, &cty));
        }
        out
    }
}
