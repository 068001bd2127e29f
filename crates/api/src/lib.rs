//! Kubernetes API rules without I/O, over objects held as `serde_json::Value`.
//!
//! Layout:
//! - `registry`: every served resource (group, version, kind, names, scope, verbs, subresources,
//!   storage prefix);
//! - `schema`: the type information merge logic needs (implemented by `skiff-openapi`);
//! - `selector`: label and field selectors (parse, match) and the selectable fields of each kind;
//! - `patch`: JSON patch, JSON merge patch and strategic merge patch;
//! - `defaults`: upstream defaulting per kind;
//! - `validation`: upstream validation per kind, as a list of field causes;
//! - `table`: server-side table columns and rows per kind;
//! - `convert`: conversion between the versions and groups that share storage.
//!
//! Objects are plain JSON so that the API server can store, patch and serve every kind through
//! one path; typed knowledge lives in the per-kind functions here.

pub mod apply;
pub mod convert;
pub mod defaults;
pub mod patch;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod table;
pub mod validation;

pub use registry::{ResourceInfo, RESOURCES};

/// One field-level validation failure, as carried in a `Status`'s `details.causes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// Upstream's cause type, e.g. `FieldValueRequired`, `FieldValueInvalid`,
    /// `FieldValueNotSupported`, `FieldValueDuplicate`, `FieldValueForbidden`, `FieldValueTooLong`.
    pub reason: &'static str,
    /// The field path, e.g. `spec.containers[0].image` or `metadata.name`.
    pub field: String,
    /// The message as upstream formats it, e.g. `Required value` or
    /// `Invalid value: "Foo": a lowercase RFC 1123 label must consist of ...`.
    pub message: String,
}
