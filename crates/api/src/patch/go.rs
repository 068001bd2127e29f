//! Go's `%v` rendering of decoded JSON, which upstream's patch error messages embed.

use serde_json::{Map, Value};

/// Go's `%v` of a decoded JSON value: `map[k:v ...]` with sorted keys, `[a b]`, `<nil>`.
pub(crate) fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(go_fmt).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(m) => go_fmt_map(m),
    }
}

/// Go's `%v` of a `map[string]interface{}`.
pub(crate) fn go_fmt_map(m: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    let items: Vec<String> = keys
        .into_iter()
        .map(|k| format!("{k}:{}", go_fmt(&m[k])))
        .collect();
    format!("map[{}]", items.join(" "))
}

/// The Go type a decoded JSON value has in the API server, as `reflect.TypeOf` prints it.
pub(crate) fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_like_go() {
        assert_eq!(
            go_fmt(&json!({"name": "a", "image": "x", "ports": [1, 2], "n": null})),
            "map[image:x n:<nil> name:a ports:[1 2]]"
        );
        assert_eq!(go_type(&json!(1)), "int64");
        assert_eq!(go_type(&json!(1.5)), "float64");
        assert_eq!(go_type(&json!("s")), "string");
    }
}
