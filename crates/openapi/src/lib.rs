//! OpenAPI documents of the served resources, and the type information derived from them.
//!
//! Layout:
//! - `kinds`: the k8s-openapi type behind each served kind;
//! - `defs`: every definition, generated once from k8s-openapi's schemars implementations and
//!   rewritten into upstream's v3 shape (names, `$ref`s, group-version-kind and merge
//!   extensions from `skiff_api::schema::PATCH_META`);
//! - `params`, `paths`: the operations of each resource with upstream's parameters;
//! - `docs`: the served documents (`/openapi/v3` index, per group/version v3 documents,
//!   `/openapi/v2`) with their hashes;
//! - `index`: the [`skiff_api::schema::Schema`] implementation and the unknown-field check.
//!
//! Everything is computed lazily on first use and cached for the life of the process.
//!
//! What kubectl v1.32 needs: `kubectl explain`, client-side `apply` (strategic merge patch
//! metadata) and the `fieldValidation` support check all read only `/openapi/v3` and
//! `/openapi/v3/<gv>?hash=…` (as `application/json`). `/openapi/v2` is fetched, as protobuf
//! only, when the v3 route fails or for `kind: List` manifests under strict validation.

mod defs;
mod docs;
mod index;
mod kinds;
mod params;
mod paths;
mod v2proto;

pub use docs::{
    check_hash, gv_path, hash_of, parse_gv_path, v2, v3_group_version, v3_index, Document,
    HashCheck,
};
pub use index::{schema, unknown_fields, TypeIndex};
pub use v2proto::{v2_protobuf, V2_PROTOBUF_CONTENT_TYPE, V2_PROTOBUF_MEDIA_TYPE};

#[cfg(test)]
mod tests;
