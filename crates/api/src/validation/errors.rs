//! Cause constructors that format messages as apimachinery's `field.Error.ErrorBody` does.

use serde_json::Value;

use crate::Cause;

/// Upstream's `FieldImmutableErrorMsg`.
pub const FIELD_IMMUTABLE: &str = "field is immutable";
/// Upstream's `isNegativeErrorMsg`.
pub const IS_NEGATIVE: &str = "must be greater than or equal to 0";

/// A bad value as Go's `%v`/`%q` prints it in an `Invalid value: ...` message.
pub trait BadValue {
    /// The rendering after `Invalid value: `.
    fn render(&self) -> String;
}

impl BadValue for &str {
    fn render(&self) -> String {
        go_quote(self)
    }
}
impl BadValue for String {
    fn render(&self) -> String {
        go_quote(self)
    }
}
impl BadValue for i64 {
    fn render(&self) -> String {
        self.to_string()
    }
}
impl BadValue for bool {
    fn render(&self) -> String {
        self.to_string()
    }
}
impl BadValue for &Value {
    fn render(&self) -> String {
        match self {
            Value::String(s) => go_quote(s),
            Value::Null => "null".to_string(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => other.to_string(),
        }
    }
}
/// A value printed verbatim (Go's `%#v` of a struct or slice has no faithful JSON analogue).
pub struct Raw(pub String);
impl BadValue for Raw {
    fn render(&self) -> String {
        self.0.clone()
    }
}

/// Quotes like Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn with_detail(mut s: String, detail: &str) -> String {
    if !detail.is_empty() {
        s.push_str(": ");
        s.push_str(detail);
    }
    s
}

/// `field.Required`.
pub fn required(field: impl Into<String>, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: field.into(),
        message: with_detail("Required value".into(), detail),
    }
}

/// `field.Invalid`.
pub fn invalid(field: impl Into<String>, value: impl BadValue, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: with_detail(format!("Invalid value: {}", value.render()), detail),
    }
}

/// `field.NotSupported`.
pub fn not_supported(field: impl Into<String>, value: impl BadValue, valid: &[&str]) -> Cause {
    let detail = if valid.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
        format!("supported values: {}", quoted.join(", "))
    };
    Cause {
        reason: "FieldValueNotSupported",
        field: field.into(),
        message: with_detail(format!("Unsupported value: {}", value.render()), &detail),
    }
}

/// `field.Duplicate`.
pub fn duplicate(field: impl Into<String>, value: impl BadValue) -> Cause {
    Cause {
        reason: "FieldValueDuplicate",
        field: field.into(),
        message: format!("Duplicate value: {}", value.render()),
    }
}

/// `field.NotFound`.
pub fn not_found(field: impl Into<String>, value: impl BadValue) -> Cause {
    Cause {
        reason: "FieldValueNotFound",
        field: field.into(),
        message: format!("Not found: {}", value.render()),
    }
}

/// `field.Forbidden`.
pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden",
        field: field.into(),
        message: with_detail("Forbidden".into(), detail),
    }
}

/// `field.TooLong` (the value is never printed).
pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Cause {
    Cause {
        reason: "FieldValueTooLong",
        field: field.into(),
        message: format!("Too long: must have at most {max_bytes} bytes"),
    }
}

/// `field.TooMany`.
pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Cause {
    Cause {
        reason: "FieldValueTooMany",
        field: field.into(),
        message: format!("Too many: {actual}: must have at most {max} items"),
    }
}

/// `ValidateNonnegativeField`.
pub fn non_negative(field: &str, value: Option<i64>, errs: &mut Vec<Cause>) {
    if let Some(v) = value {
        if v < 0 {
            errs.push(invalid(field, v, IS_NEGATIVE));
        }
    }
}

/// `ValidateImmutableField` over JSON values (absent and null are equal).
pub fn immutable(field: &str, new: Option<&Value>, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let norm = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
    let (n, o) = (norm(new), norm(old));
    if n != o {
        errs.push(invalid(field, &n.unwrap_or(Value::Null), FIELD_IMMUTABLE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_error_body() {
        assert_eq!(required("a", "").message, "Required value");
        assert_eq!(required("a", "x").message, "Required value: x");
        assert_eq!(
            invalid("a", "Foo", "bad").message,
            "Invalid value: \"Foo\": bad"
        );
        assert_eq!(
            invalid("a", 0i64, IS_NEGATIVE).message,
            "Invalid value: 0: must be greater than or equal to 0"
        );
        assert_eq!(
            not_supported("a", "Foo", &["Always", "IfNotPresent", "Never"]).message,
            "Unsupported value: \"Foo\": supported values: \"Always\", \"IfNotPresent\", \"Never\""
        );
        assert_eq!(duplicate("a", "x").message, "Duplicate value: \"x\"");
        assert_eq!(forbidden("a", "no").message, "Forbidden: no");
        assert_eq!(
            too_long("a", 262144).message,
            "Too long: must have at most 262144 bytes"
        );
        assert_eq!(go_quote("a\"b\n"), "\"a\\\"b\\n\"");
    }
}
