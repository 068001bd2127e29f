//! JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch, with the
//! errors and HTTP statuses upstream's API server gives for each.

mod go;
mod meta;
mod strategic;

pub use meta::{list_meta, PATCH_META, REPLACE_OBJECT_FIELDS};
pub use strategic::apply_strategic_merge_patch;

use serde_json::Value;

/// Why a patch could not be applied, classed by the status upstream answers with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch is malformed (400 BadRequest): undecodable JSON patch, a non-object strategic
    /// merge patch, or a badly formed `$retainKeys`/`$setElementOrder`/
    /// `$deleteFromPrimitiveList` directive.
    #[error("{0}")]
    BadRequest(String),
    /// The patch is well formed but cannot apply (422 Invalid): a JSON patch operation failed,
    /// or a strategic merge patch holds lists of lists.
    #[error("{0}")]
    Invalid(String),
    /// Any other strategic merge failure, such as a list element without its merge key or an
    /// unknown `$patch` value. Upstream passes these on as plain errors, which the API server
    /// answers with 500 and no reason.
    #[error("{0}")]
    Internal(String),
}

impl PatchError {
    /// The HTTP status code of the `Status` upstream answers with.
    pub fn code(&self) -> u16 {
        match self {
            PatchError::BadRequest(_) => 400,
            PatchError::Invalid(_) => 422,
            PatchError::Internal(_) => 500,
        }
    }

    /// The `Status` reason (`""` for the 500 case, as upstream leaves it unset).
    pub fn reason(&self) -> &'static str {
        match self {
            PatchError::BadRequest(_) => "BadRequest",
            PatchError::Invalid(_) => "Invalid",
            PatchError::Internal(_) => "",
        }
    }

    /// The `Status` message. Upstream builds 422 patch errors with `NewGenericServerResponse`,
    /// which replaces the detail with a fixed text (kubectl shows "The request is invalid: the
    /// server rejected our request due to an error in our request"); the detail stays in
    /// `Display`.
    pub fn status_message(&self) -> String {
        match self {
            PatchError::Invalid(_) => {
                "the server rejected our request due to an error in our request".to_string()
            }
            PatchError::BadRequest(m) | PatchError::Internal(m) => m.clone(),
        }
    }
}

/// Applies an RFC 6902 JSON patch. The operations apply all or none.
pub fn apply_json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_array() {
        let kind = match patch {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Object(_) => "object",
            Value::Array(_) => "array",
        };
        return Err(PatchError::BadRequest(format!(
            "json: cannot unmarshal {kind} into Go value of type jsonpatch.Patch"
        )));
    }
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| PatchError::BadRequest(e.to_string()))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| PatchError::Invalid(e.to_string()))?;
    Ok(out)
}

/// Applies an RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything
/// else replaces. A `null` patch is rejected as upstream's library rejects it.
pub fn apply_merge_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    if patch.is_null() {
        return Err(PatchError::BadRequest("Invalid JSON Patch".to_string()));
    }
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

#[cfg(test)]
mod tests;
