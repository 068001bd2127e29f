//! What the merge logic needs to know of the API types: for each object type, each field's type
//! and how its lists merge. Strategic merge patch and server-side apply walk objects through this
//! interface; `skiff-openapi` implements it from the generated schemas plus [`PATCH_META`], and
//! tests implement it with small fakes.

/// How a strategic merge patch treats a list (upstream's `patchStrategy` tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchStrategy {
    /// No strategy: the patch's list replaces the whole list.
    Replace,
    /// Merge elements by the merge key (or, for lists of scalars, as a set).
    Merge,
    /// `retainKeys`: on the object, keep only the keys the patch names.
    RetainKeys,
    /// `merge,retainKeys`.
    MergeRetainKeys,
}

/// How server-side apply treats a list (upstream's `x-kubernetes-list-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    /// The list is one value, owned as a whole.
    Atomic,
    /// A list of unique scalars.
    Set,
    /// A list of objects identified by these key fields.
    Map(&'static [&'static str]),
}

/// Merge metadata of one list field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListMeta {
    /// Strategic merge patch strategy.
    pub strategy: PatchStrategy,
    /// Strategic merge patch merge key (`patchMergeKey`), for lists of objects.
    pub merge_key: Option<&'static str>,
    /// Server-side apply list type.
    pub list_type: ListType,
}

/// What a field holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldInfo {
    /// The object type (definition name, e.g. `io.k8s.api.core.v1.Container`) of the field's
    /// value, of its list elements, or of its map values; `None` for scalars and free-form JSON.
    pub type_name: Option<std::sync::Arc<str>>,
    /// Present when the field is a list.
    pub list: Option<ListMeta>,
    /// True when the field is a map with arbitrary keys (e.g. `labels`, `data`).
    pub is_map: bool,
}

/// Type information of the served kinds.
pub trait Schema: Send + Sync {
    /// The definition name of a kind's top-level object, e.g. `io.k8s.api.apps.v1.Deployment`.
    fn root(&self, api_version: &str, kind: &str) -> Option<String>;
    /// A field of an object type; `None` if the type has no such field or is unknown.
    fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo>;
}

/// Merge metadata of a list field that is not an atomic list of scalars: upstream's
/// `patchStrategy`/`patchMergeKey` struct tags and `listType`/`listMapKeys` markers, keyed by
/// (definition name, field name). Lists absent here are atomic and replaced whole.
pub struct PatchMetaEntry {
    /// Definition name of the type holding the field.
    pub type_name: &'static str,
    /// JSON field name.
    pub field: &'static str,
    /// Its merge metadata.
    pub meta: ListMeta,
}

/// Upstream's merge metadata for the served types (filled in by `patch`).
pub use crate::patch::PATCH_META;
