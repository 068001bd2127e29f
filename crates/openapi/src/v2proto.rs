//! `/openapi/v2` as protobuf: the swagger 2.0 document re-encoded as gnostic's
//! `openapi.v2.Document` (github.com/google/gnostic-models, `openapiv2/OpenAPIv2.proto`).
//!
//! client-go's `OpenAPISchema()` asks for [`V2_PROTOBUF_MEDIA_TYPE`] and decodes the body only
//! as that message; kube-openapi's `proto.NewOpenAPIData` and kubectl's `openapi.Resources`
//! then read `definitions` and each schema's vendor extensions. Extension, `default`, `enum`
//! and `example` values travel in `Any.yaml`; they are written as JSON text, which every YAML
//! parser reads (JSON is a subset of YAML 1.2 flow style).
//!
//! The encoder walks the JSON document in key order and emits each field with its number from
//! the `.proto`; keys swagger 2.0 does not define are not representable there and are dropped,
//! as gnostic does.

use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use crate::docs::v2;

/// The media type client-go requests `/openapi/v2` with (upstream calls it deprecated but
/// still accepts it). Never send it back as `Content-Type`: Go's `mime` parser rejects the
/// `@`, and kubectl then fails with "mime: unexpected content after media subtype".
pub const V2_PROTOBUF_MEDIA_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The current protobuf media type of `/openapi/v2`: also accepted in `Accept`, and the
/// `Content-Type` upstream answers with for either protobuf form.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The `/openapi/v2` document as a serialized gnostic `openapi.v2.Document`. Encoded on first
/// use from [`v2`] and cached.
pub fn v2_protobuf() -> Arc<Vec<u8>> {
    static BYTES: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    BYTES
        .get_or_init(|| Arc::new(document(&v2().value).0))
        .clone()
}

/// A message under construction: protobuf wire format.
#[derive(Default)]
struct Msg(Vec<u8>);

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u64) {
        self.varint(u64::from(field) << 3 | wire);
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, LEN);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    /// A singular proto3 string: the empty string is the default and is not written.
    fn string(&mut self, field: u32, v: &Value) {
        if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
            self.bytes(field, s.as_bytes());
        }
    }

    /// A repeated string field: every element is written, empty ones included.
    fn strings(&mut self, field: u32, v: &Value) {
        let one = std::slice::from_ref(v);
        let items = v.as_array().map_or(one, Vec::as_slice);
        for s in items.iter().filter_map(Value::as_str) {
            self.bytes(field, s.as_bytes());
        }
    }

    /// An embedded message. Always written, even empty: presence is meaningful (an object
    /// schema with `properties: {}` is a kind, without it a map).
    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }

    fn bool(&mut self, field: u32, v: &Value) {
        if v.as_bool() == Some(true) {
            self.key(field, VARINT);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u32, v: &Value) {
        if let Some(n) = v.as_i64().filter(|n| *n != 0) {
            self.key(field, VARINT);
            // Two's complement, as protobuf encodes negative int64.
            self.varint(n as u64);
        }
    }

    fn double(&mut self, field: u32, v: &Value) {
        if let Some(n) = v.as_f64().filter(|n| *n != 0.0) {
            self.key(field, FIXED64);
            self.0.extend_from_slice(&n.to_le_bytes());
        }
    }

    /// A vendor extension (`x-…` key) as a `NamedAny`; returns whether `key` was one.
    fn extension(&mut self, field: u32, key: &str, v: &Value) -> bool {
        if !key.starts_with("x-") {
            return false;
        }
        self.message(field, named(key, any(v)));
        true
    }
}

/// `Any { yaml = 2 }`.
fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    let mut text = serde_json::to_string(v).expect("a JSON value serializes");
    text.push('\n');
    m.bytes(2, text.as_bytes());
    m
}

/// The `Named*` pair shape shared by every map message: `name = 1`, `value = 2`.
fn named(name: &str, value: Msg) -> Msg {
    let mut m = Msg::default();
    m.bytes(1, name.as_bytes());
    m.message(2, value);
    m
}

fn object(v: &Value) -> &Map<String, Value> {
    static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
    v.as_object().unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// A map message (`repeated Named… additional_properties = 1`) with each value encoded by `f`.
fn map_of(v: &Value, f: impl Fn(&Value) -> Msg) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        m.message(1, named(k, f(x)));
    }
    m
}

fn document(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "swagger" => m.string(1, x),
            "info" => m.message(2, info(x)),
            "host" => m.string(3, x),
            "basePath" => m.string(4, x),
            "schemes" => m.strings(5, x),
            "consumes" => m.strings(6, x),
            "produces" => m.strings(7, x),
            "paths" => m.message(8, paths(x)),
            "definitions" => m.message(9, map_of(x, schema)),
            "parameters" => m.message(10, map_of(x, parameter)),
            "responses" => m.message(11, map_of(x, response)),
            "security" => array(x)
                .iter()
                .for_each(|r| m.message(12, security_requirement(r))),
            "securityDefinitions" => m.message(13, map_of(x, security_definition)),
            "tags" => array(x).iter().for_each(|t| m.message(14, tag(t))),
            "externalDocs" => m.message(15, external_docs(x)),
            _ => {
                m.extension(16, k, x);
            }
        }
    }
    m
}

fn info(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "title" => m.string(1, x),
            "version" => m.string(2, x),
            "description" => m.string(3, x),
            "termsOfService" => m.string(4, x),
            "contact" => m.message(5, contact(x)),
            "license" => m.message(6, license(x)),
            _ => {
                m.extension(7, k, x);
            }
        }
    }
    m
}

fn contact(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "name" => m.string(1, x),
            "url" => m.string(2, x),
            "email" => m.string(3, x),
            _ => {
                m.extension(4, k, x);
            }
        }
    }
    m
}

fn license(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "name" => m.string(1, x),
            "url" => m.string(2, x),
            _ => {
                m.extension(3, k, x);
            }
        }
    }
    m
}

fn external_docs(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "description" => m.string(1, x),
            "url" => m.string(2, x),
            _ => {
                m.extension(3, k, x);
            }
        }
    }
    m
}

fn tag(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "name" => m.string(1, x),
            "description" => m.string(2, x),
            "externalDocs" => m.message(3, external_docs(x)),
            _ => {
                m.extension(4, k, x);
            }
        }
    }
    m
}

/// `SecurityRequirement`: scheme name to the scopes it needs.
fn security_requirement(v: &Value) -> Msg {
    map_of(v, |scopes| {
        let mut m = Msg::default();
        m.strings(1, scopes);
        m
    })
}

/// `SecurityDefinitionsItem`: a oneof chosen by `type` (and `flow` for oauth2), each variant
/// with its own field numbering.
fn security_definition(v: &Value) -> Msg {
    let o = object(v);
    let flow = o.get("flow").and_then(Value::as_str).unwrap_or_default();
    // (variant, fields in order `type, flow, scopes, authorizationUrl, tokenUrl, description`
    // with 0 for absent, field of the extensions)
    let (variant, numbers, ext): (u32, [u32; 6], u32) =
        match o.get("type").and_then(Value::as_str).unwrap_or_default() {
            "basic" => (1, [1, 0, 0, 0, 0, 2], 3),
            "apiKey" => (2, [1, 0, 0, 0, 0, 4], 5),
            "oauth2" => match flow {
                "implicit" => (3, [1, 2, 3, 4, 0, 5], 6),
                "password" => (4, [1, 2, 3, 0, 4, 5], 6),
                "application" => (5, [1, 2, 3, 0, 4, 5], 6),
                _ => (6, [1, 2, 3, 4, 5, 6], 7),
            },
            _ => (2, [1, 0, 0, 0, 0, 4], 5),
        };
    let mut s = Msg::default();
    for (k, x) in o {
        let slot = match k.as_str() {
            "type" => numbers[0],
            "flow" => numbers[1],
            "scopes" => {
                if numbers[2] != 0 {
                    // `NamedString.value` is a plain string: its raw bytes are the payload.
                    let raw = |d: &Value| Msg(d.as_str().unwrap_or_default().as_bytes().to_vec());
                    s.message(numbers[2], map_of(x, raw));
                }
                continue;
            }
            "authorizationUrl" => numbers[3],
            "tokenUrl" => numbers[4],
            "description" => numbers[5],
            // Only the api-key scheme has `name` and `in`.
            "name" if variant == 2 => 2,
            "in" if variant == 2 => 3,
            _ => {
                s.extension(ext, k, x);
                continue;
            }
        };
        if slot != 0 {
            s.string(slot, x);
        }
    }
    let mut m = Msg::default();
    m.message(variant, s);
    m
}

fn paths(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        if !m.extension(1, k, x) {
            m.message(2, named(k, path_item(x)));
        }
    }
    m
}

fn path_item(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "$ref" => m.string(1, x),
            "get" => m.message(2, operation(x)),
            "put" => m.message(3, operation(x)),
            "post" => m.message(4, operation(x)),
            "delete" => m.message(5, operation(x)),
            "options" => m.message(6, operation(x)),
            "head" => m.message(7, operation(x)),
            "patch" => m.message(8, operation(x)),
            "parameters" => array(x)
                .iter()
                .for_each(|p| m.message(9, parameters_item(p))),
            _ => {
                m.extension(10, k, x);
            }
        }
    }
    m
}

fn operation(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "tags" => m.strings(1, x),
            "summary" => m.string(2, x),
            "description" => m.string(3, x),
            "externalDocs" => m.message(4, external_docs(x)),
            "operationId" => m.string(5, x),
            "produces" => m.strings(6, x),
            "consumes" => m.strings(7, x),
            "parameters" => array(x)
                .iter()
                .for_each(|p| m.message(8, parameters_item(p))),
            "responses" => m.message(9, responses(x)),
            "schemes" => m.strings(10, x),
            "deprecated" => m.bool(11, x),
            "security" => array(x)
                .iter()
                .for_each(|r| m.message(12, security_requirement(r))),
            _ => {
                m.extension(13, k, x);
            }
        }
    }
    m
}

/// `JsonReference { _ref = 1; description = 2 }`.
fn json_reference(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(1, &v["$ref"]);
    m.string(2, &v["description"]);
    m
}

/// `ParametersItem`: a reference or an inline `Parameter`.
fn parameters_item(v: &Value) -> Msg {
    let mut m = Msg::default();
    if v.get("$ref").is_some() {
        m.message(2, json_reference(v));
    } else {
        m.message(1, parameter(v));
    }
    m
}

/// `Parameter`: a body parameter, or a non-body one whose sub-schema depends on `in`.
fn parameter(v: &Value) -> Msg {
    let mut m = Msg::default();
    let location = v["in"].as_str().unwrap_or_default();
    if location == "body" {
        let mut b = Msg::default();
        for (k, x) in object(v) {
            match k.as_str() {
                "description" => b.string(1, x),
                "name" => b.string(2, x),
                "in" => b.string(3, x),
                "required" => b.bool(4, x),
                "schema" => b.message(5, schema(x)),
                _ => {
                    b.extension(6, k, x);
                }
            }
        }
        m.message(1, b);
        return m;
    }
    // Query and form-data sub-schemas have `allowEmptyValue = 5` and their type-and-validation
    // block from 6; header and path ones have it from 5.
    let (variant, first) = match location {
        "header" => (1, 5),
        "formData" => (2, 6),
        "path" => (4, 5),
        _ => (3, 6),
    };
    let mut s = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "required" => s.bool(1, x),
            "in" => s.string(2, x),
            "description" => s.string(3, x),
            "name" => s.string(4, x),
            "allowEmptyValue" if first == 6 => s.bool(5, x),
            _ => simple(&mut s, first, k, x),
        }
    }
    let mut n = Msg::default();
    n.message(variant, s);
    m.message(2, n);
    m
}

/// The type-and-validation block swagger's non-body parameters, `items` and headers share,
/// numbered consecutively from `first` (`type`) to `first + 16` (`multipleOf`), extensions at
/// `first + 17`.
fn simple(m: &mut Msg, first: u32, k: &str, x: &Value) {
    let at = |i: u32| first + i;
    match k {
        "type" => m.string(at(0), x),
        "format" => m.string(at(1), x),
        "items" => m.message(at(2), primitives_items(x)),
        "collectionFormat" => m.string(at(3), x),
        "default" => m.message(at(4), any(x)),
        "maximum" => m.double(at(5), x),
        "exclusiveMaximum" => m.bool(at(6), x),
        "minimum" => m.double(at(7), x),
        "exclusiveMinimum" => m.bool(at(8), x),
        "maxLength" => m.int64(at(9), x),
        "minLength" => m.int64(at(10), x),
        "pattern" => m.string(at(11), x),
        "maxItems" => m.int64(at(12), x),
        "minItems" => m.int64(at(13), x),
        "uniqueItems" => m.bool(at(14), x),
        "enum" => array(x).iter().for_each(|e| m.message(at(15), any(e))),
        "multipleOf" => m.double(at(16), x),
        _ => {
            m.extension(at(17), k, x);
        }
    }
}

fn primitives_items(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        simple(&mut m, 1, k, x);
    }
    m
}

/// `Header`: the simple block from 1, then `description = 18`, extensions at 19.
fn header(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "description" => m.string(18, x),
            _ => simple(&mut m, 1, k, x),
        }
    }
    m
}

fn responses(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        if m.extension(2, k, x) {
            continue;
        }
        let mut value = Msg::default();
        if x.get("$ref").is_some() {
            value.message(2, json_reference(x));
        } else {
            value.message(1, response(x));
        }
        m.message(1, named(k, value));
    }
    m
}

fn response(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "description" => m.string(1, x),
            "schema" => {
                // `SchemaItem` oneof; a `file` response is a `FileSchema`, which shares the
                // fields kubectl could read with `Schema` but not their numbers.
                let mut item = Msg::default();
                if x["type"] == "file" {
                    item.message(2, file_schema(x));
                } else {
                    item.message(1, schema(x));
                }
                m.message(2, item);
            }
            "headers" => m.message(3, map_of(x, header)),
            "examples" => m.message(4, map_of(x, any)),
            _ => {
                m.extension(5, k, x);
            }
        }
    }
    m
}

fn file_schema(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "format" => m.string(1, x),
            "title" => m.string(2, x),
            "description" => m.string(3, x),
            "default" => m.message(4, any(x)),
            "required" => m.strings(5, x),
            "type" => m.string(6, x),
            "readOnly" => m.bool(7, x),
            "externalDocs" => m.message(8, external_docs(x)),
            "example" => m.message(9, any(x)),
            _ => {
                m.extension(10, k, x);
            }
        }
    }
    m
}

/// `Schema`, the message every definition, property and item is.
fn schema(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "$ref" => m.string(1, x),
            "format" => m.string(2, x),
            "title" => m.string(3, x),
            "description" => m.string(4, x),
            "default" => m.message(5, any(x)),
            "multipleOf" => m.double(6, x),
            "maximum" => m.double(7, x),
            "exclusiveMaximum" => m.bool(8, x),
            "minimum" => m.double(9, x),
            "exclusiveMinimum" => m.bool(10, x),
            "maxLength" => m.int64(11, x),
            "minLength" => m.int64(12, x),
            "pattern" => m.string(13, x),
            "maxItems" => m.int64(14, x),
            "minItems" => m.int64(15, x),
            "uniqueItems" => m.bool(16, x),
            "maxProperties" => m.int64(17, x),
            "minProperties" => m.int64(18, x),
            "required" => m.strings(19, x),
            "enum" => array(x).iter().for_each(|e| m.message(20, any(e))),
            "additionalProperties" => {
                // A oneof: `false` must be written, unlike a plain proto3 bool.
                let mut a = Msg::default();
                match x {
                    Value::Bool(b) => {
                        a.key(2, VARINT);
                        a.varint(u64::from(*b));
                    }
                    _ => a.message(1, schema(x)),
                }
                m.message(21, a);
            }
            "type" => m.message(22, {
                let mut t = Msg::default();
                t.strings(1, x);
                t
            }),
            "items" => m.message(23, {
                let mut i = Msg::default();
                let one = std::slice::from_ref(x);
                for s in x.as_array().map_or(one, Vec::as_slice) {
                    i.message(1, schema(s));
                }
                i
            }),
            "allOf" => array(x).iter().for_each(|s| m.message(24, schema(s))),
            "properties" => m.message(25, map_of(x, schema)),
            "discriminator" => m.string(26, x),
            "readOnly" => m.bool(27, x),
            "xml" => m.message(28, xml(x)),
            "externalDocs" => m.message(29, external_docs(x)),
            "example" => m.message(30, any(x)),
            _ => {
                m.extension(31, k, x);
            }
        }
    }
    m
}

fn xml(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (k, x) in object(v) {
        match k.as_str() {
            "name" => m.string(1, x),
            "namespace" => m.string(2, x),
            "prefix" => m.string(3, x),
            "attribute" => m.bool(4, x),
            "wrapped" => m.bool(5, x),
            _ => {
                m.extension(6, k, x);
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    //! The encoding is checked by decoding it with a generic wire-format reader, against the
    //! field numbers of gnostic's `OpenAPIv2.proto`, and against the checks kube-openapi's
    //! `proto.NewOpenAPIData` applies before kubectl uses the document.

    use std::collections::BTreeMap;

    use serde_json::{json, Map, Value};

    use super::*;

    #[derive(Clone, Copy, Debug)]
    enum Field<'a> {
        Varint(u64),
        Fixed64(u64),
        Bytes(&'a [u8]),
    }

    fn read_varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().expect("truncated varint");
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
        }
        panic!("varint too long")
    }

    /// Every field of a message, in wire order.
    fn fields(mut b: &[u8]) -> Vec<(u32, Field<'_>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = read_varint(&mut b);
            let field = u32::try_from(key >> 3).unwrap();
            assert_ne!(field, 0, "field number 0");
            let value = match key & 7 {
                0 => Field::Varint(read_varint(&mut b)),
                1 => {
                    let (x, rest) = b.split_at(8);
                    b = rest;
                    Field::Fixed64(u64::from_le_bytes(x.try_into().unwrap()))
                }
                2 => {
                    let n = usize::try_from(read_varint(&mut b)).unwrap();
                    assert!(n <= b.len(), "length past the end");
                    let (x, rest) = b.split_at(n);
                    b = rest;
                    Field::Bytes(x)
                }
                w => panic!("unexpected wire type {w}"),
            };
            out.push((field, value));
        }
        out
    }

    fn all(b: &[u8], n: u32) -> Vec<&[u8]> {
        fields(b)
            .into_iter()
            .filter(|(f, _)| *f == n)
            .map(|(_, v)| match v {
                Field::Bytes(x) => x,
                other => panic!("field {n} is {other:?}, not length-delimited"),
            })
            .collect()
    }

    fn one(b: &[u8], n: u32) -> Option<&[u8]> {
        let v = all(b, n);
        assert!(v.len() <= 1, "field {n} repeated");
        v.first().copied()
    }

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).expect("strings are UTF-8")
    }

    fn string(b: &[u8], n: u32) -> &str {
        one(b, n).map(text).unwrap_or_default()
    }

    fn strings(b: &[u8], n: u32) -> Vec<&str> {
        all(b, n).into_iter().map(text).collect()
    }

    fn varint(b: &[u8], n: u32) -> Option<u64> {
        fields(b).into_iter().find_map(|(f, v)| match (f, v) {
            (f, Field::Varint(x)) if f == n => Some(x),
            _ => None,
        })
    }

    /// The entries of a map message: `repeated Named… = field`, each `name = 1, value = 2`.
    fn entries(b: &[u8], field: u32) -> Vec<(&str, &[u8])> {
        all(b, field)
            .into_iter()
            .map(|e| (string(e, 1), one(e, 2).expect("entry without value")))
            .collect()
    }

    /// Vendor extensions at `field`, their `Any.yaml` parsed as YAML.
    fn extensions(b: &[u8], field: u32) -> BTreeMap<String, serde_yaml::Value> {
        entries(b, field)
            .into_iter()
            .map(|(k, any)| {
                let yaml = string(any, 2);
                (
                    k.to_string(),
                    serde_yaml::from_str(yaml).expect("extension is YAML"),
                )
            })
            .collect()
    }

    fn definitions() -> BTreeMap<String, Vec<u8>> {
        let doc = v2_protobuf();
        let defs = one(&doc, 9).expect("definitions");
        entries(defs, 1)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    fn property<'a>(schema: &'a [u8], name: &str) -> &'a [u8] {
        let props = one(schema, 25).expect("properties");
        entries(props, 1)
            .into_iter()
            .find(|(k, _)| *k == name)
            .unwrap_or_else(|| panic!("no property {name}"))
            .1
    }

    fn types(schema: &[u8]) -> Vec<&str> {
        one(schema, 22).map(|t| strings(t, 1)).unwrap_or_default()
    }

    fn items(schema: &[u8]) -> Vec<&[u8]> {
        one(schema, 23).map(|i| all(i, 1)).unwrap_or_default()
    }

    /// Decodes a `Schema` back into swagger JSON, for the fields the document uses.
    fn schema_json(b: &[u8]) -> Value {
        let mut o = Map::new();
        for (f, v) in fields(b) {
            let bytes = || match v {
                Field::Bytes(x) => x,
                other => panic!("schema field {f} is {other:?}"),
            };
            let any = |x: &[u8]| -> Value { serde_yaml::from_str(string(x, 2)).unwrap() };
            match f {
                1 => o.insert("$ref".into(), text(bytes()).into()),
                2 => o.insert("format".into(), text(bytes()).into()),
                4 => o.insert("description".into(), text(bytes()).into()),
                5 => o.insert("default".into(), any(bytes())),
                19 => {
                    let r = o.entry("required").or_insert_with(|| json!([]));
                    r.as_array_mut().unwrap().push(text(bytes()).into());
                    continue;
                }
                20 => {
                    let e = o.entry("enum").or_insert_with(|| json!([]));
                    e.as_array_mut().unwrap().push(any(bytes()));
                    continue;
                }
                21 => {
                    let a = bytes();
                    let v = match (one(a, 1), varint(a, 2)) {
                        (Some(s), None) => schema_json(s),
                        (None, Some(x)) => Value::Bool(x != 0),
                        _ => panic!("additionalProperties sets neither or both"),
                    };
                    o.insert("additionalProperties".into(), v)
                }
                22 => {
                    let t = strings(bytes(), 1);
                    assert_eq!(t.len(), 1, "one type");
                    o.insert("type".into(), t[0].into())
                }
                23 => {
                    let i = all(bytes(), 1);
                    assert_eq!(i.len(), 1, "one items schema");
                    o.insert("items".into(), schema_json(i[0]))
                }
                24 => {
                    let a = o.entry("allOf").or_insert_with(|| json!([]));
                    a.as_array_mut().unwrap().push(schema_json(bytes()));
                    continue;
                }
                25 => {
                    let p: Map<String, Value> = entries(bytes(), 1)
                        .into_iter()
                        .map(|(k, s)| (k.to_string(), schema_json(s)))
                        .collect();
                    o.insert("properties".into(), Value::Object(p))
                }
                31 => {
                    let e = bytes();
                    o.insert(string(e, 1).into(), any(one(e, 2).unwrap()))
                }
                other => panic!("unexpected schema field {other}"),
            };
        }
        Value::Object(o)
    }

    #[test]
    fn varints_and_lengths_follow_the_wire_format() {
        let mut m = Msg::default();
        m.varint(300);
        assert_eq!(m.0, [0xac, 0x02]);
        let mut m = Msg::default();
        m.int64(1, &json!(-1));
        assert_eq!(m.0.len(), 1 + 10, "negative int64 takes ten bytes");
        let mut m = Msg::default();
        m.string(2, &json!("hi"));
        m.double(3, &json!(1.5));
        m.bool(4, &json!(false));
        assert_eq!(m.0[..4], [0x12, 2, b'h', b'i']);
        let f = fields(&m.0);
        assert_eq!(f.len(), 2, "false is the default and is not written");
        assert!(matches!(f[1], (3, Field::Fixed64(x)) if f64::from_bits(x) == 1.5));
    }

    #[test]
    fn document_header_and_security() {
        let doc = v2_protobuf();
        assert!(Arc::ptr_eq(&doc, &v2_protobuf()), "cached");
        assert_eq!(string(&doc, 1), "2.0");
        let info = one(&doc, 2).unwrap();
        assert_eq!(string(info, 1), "Kubernetes");
        assert!(string(info, 2).starts_with("v1."));
        let defs = entries(one(&doc, 13).unwrap(), 1);
        let (name, item) = defs[0];
        assert_eq!(name, "BearerToken");
        let api_key = one(item, 2).expect("api key security");
        assert_eq!(string(api_key, 1), "apiKey");
        assert_eq!(string(api_key, 2), "authorization");
        assert_eq!(string(api_key, 3), "header");
        let req = all(&doc, 12);
        assert_eq!(req.len(), 1);
        assert_eq!(entries(req[0], 1)[0].0, "BearerToken");
    }

    #[test]
    fn deployment_carries_its_group_version_kind() {
        let defs = definitions();
        let d = &defs["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(types(d), ["object"]);
        assert!(!string(d, 4).is_empty(), "description");
        let gvk = &extensions(d, 31)["x-kubernetes-group-version-kind"];
        let expected: serde_yaml::Value =
            serde_yaml::from_str("- {group: apps, kind: Deployment, version: v1}").unwrap();
        assert_eq!(gvk, &expected);
        assert_eq!(
            string(property(d, "spec"), 1),
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        let spec = &defs["io.k8s.api.apps.v1.DeploymentSpec"];
        assert_eq!(strings(spec, 19), ["selector", "template"]);
    }

    #[test]
    fn pod_spec_containers_keep_items_and_merge_metadata() {
        let defs = definitions();
        let spec = &defs["io.k8s.api.core.v1.PodSpec"];
        assert!(strings(spec, 19).contains(&"containers"));
        let containers = property(spec, "containers");
        assert_eq!(types(containers), ["array"]);
        let item = items(containers);
        assert_eq!(item.len(), 1);
        assert_eq!(
            string(item[0], 1),
            "#/definitions/io.k8s.api.core.v1.Container"
        );
        let ext = extensions(containers, 31);
        assert_eq!(ext["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(ext["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(strings(&defs["io.k8s.api.core.v1.Container"], 19), ["name"]);
        let labels = property(
            &defs["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"],
            "labels",
        );
        assert_eq!(types(labels), ["object"]);
        let values = one(one(labels, 21).unwrap(), 1).expect("additionalProperties schema");
        assert_eq!(types(values), ["string"]);
    }

    #[test]
    fn every_definition_decodes_back_to_its_json() {
        let json = v2();
        let defs = definitions();
        let expected = json.value["definitions"].as_object().unwrap();
        assert_eq!(defs.len(), expected.len());
        for (name, schema) in &defs {
            assert_eq!(&schema_json(schema), &expected[name], "{name}");
        }
    }

    /// The checks of kube-openapi's `proto.NewOpenAPIData` (non-permissive), which kubectl
    /// runs on the whole document before using any of it.
    fn check_like_kube_openapi(s: &[u8], defs: &BTreeMap<String, Vec<u8>>, path: &str) {
        let r = string(s, 1);
        let t = types(s);
        if !r.is_empty() {
            assert!(one(s, 25).is_none(), "{path}: embedded type definition");
            assert!(t.is_empty(), "{path}: reference with a type");
            let target = r.strip_prefix("#/definitions/").expect("definitions ref");
            assert!(defs.contains_key(target), "{path}: unknown model {target}");
            return;
        }
        match t.as_slice() {
            [] => {}
            ["object"] => {
                if let Some(props) = one(s, 25) {
                    for (k, p) in entries(props, 1) {
                        check_like_kube_openapi(p, defs, &format!("{path}.{k}"));
                    }
                } else if let Some(sub) = one(s, 21).and_then(|a| one(a, 1)) {
                    check_like_kube_openapi(sub, defs, path);
                }
            }
            ["array"] => {
                let i = items(s);
                assert_eq!(i.len(), 1, "{path}: array should have exactly one sub-item");
                check_like_kube_openapi(i[0], defs, path);
            }
            [p] => assert!(
                ["string", "number", "integer", "boolean", "null"].contains(p),
                "{path}: unknown primitive type {p}"
            ),
            _ => panic!("{path}: definitions with multiple types aren't supported"),
        }
    }

    #[test]
    fn definitions_pass_kube_openapi_checks_and_gvks_parse() {
        let defs = definitions();
        let mut kinds = 0;
        for (name, s) in &defs {
            check_like_kube_openapi(s, &defs, name);
            // kubectl's `openapi.Resources`: a list of maps with string group, version, kind.
            if let Some(gvks) = extensions(s, 31).get("x-kubernetes-group-version-kind") {
                for gvk in gvks.as_sequence().expect("gvk list") {
                    for key in ["group", "version", "kind"] {
                        assert!(gvk[key].is_string(), "{name}: {key}");
                    }
                    kinds += 1;
                }
            }
        }
        assert!(kinds > 20, "{kinds} kinds");
    }

    #[test]
    fn deployment_patch_operation_lists_parameters() {
        let doc = v2_protobuf();
        let paths = entries(one(&doc, 8).unwrap(), 2);
        let (_, item) = paths
            .iter()
            .find(|(k, _)| *k == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
            .unwrap();
        let patch = one(item, 8).expect("patch");
        assert!(strings(patch, 7).contains(&"application/strategic-merge-patch+json"));
        assert_eq!(string(patch, 5), "patchAppsV1NamespacedDeployment");
        let ext = extensions(patch, 13);
        assert_eq!(ext["x-kubernetes-action"], "patch");
        let params = all(patch, 8);
        let body = params
            .iter()
            .filter_map(|p| one(one(p, 1)?, 1))
            .next()
            .expect("body parameter");
        assert_eq!(string(body, 3), "body");
        assert_eq!(varint(body, 4), Some(1));
        let query: Vec<&[u8]> = params
            .iter()
            .filter_map(|p| one(one(one(p, 1)?, 2)?, 3))
            .collect();
        let fv = query
            .iter()
            .find(|q| string(q, 4) == "fieldValidation")
            .expect("fieldValidation");
        assert_eq!(string(fv, 2), "query");
        assert_eq!(string(fv, 6), "string");
        let path_params: Vec<&str> = all(item, 9)
            .into_iter()
            .filter_map(|p| one(one(one(p, 1)?, 2)?, 4))
            .map(|p| string(p, 4))
            .collect();
        assert!(path_params.contains(&"name") && path_params.contains(&"namespace"));
        let responses = entries(one(patch, 9).unwrap(), 1);
        let (_, ok) = responses.iter().find(|(c, _)| *c == "200").unwrap();
        let schema = one(one(one(ok, 1).unwrap(), 2).unwrap(), 1).unwrap();
        assert_eq!(
            string(schema, 1),
            "#/definitions/io.k8s.api.apps.v1.Deployment"
        );
    }
}
