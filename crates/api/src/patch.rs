//! JSON patch, JSON merge patch and strategic merge patch.

use crate::schema::PatchMetaEntry;

/// Upstream's merge metadata for list fields of the served types.
pub static PATCH_META: &[PatchMetaEntry] = &[];
