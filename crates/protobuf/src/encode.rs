//! JSON → protobuf message, writing fields in ascending number as upstream's generated
//! marshallers do (map entries sorted by key).

use base64::Engine;
use serde_json::{Map, Value};

use crate::convert;
use crate::table::{table, Field, Kind, Shape, Special};
use crate::wire::{put_bytes, put_int, put_key, FIXED64};
use crate::Error;

/// Encodes the properties of `obj` that belong to message `index`; other properties (and
/// `apiVersion`/`kind` of the top level) are ignored.
pub(crate) fn message(
    index: usize,
    obj: &Map<String, Value>,
    path: &str,
) -> Result<Vec<u8>, Error> {
    let msg = &table().messages[index];
    let mut out = Vec::new();
    for &i in &msg.by_tag {
        let field = &msg.fields[i];
        let Some(name) = &field.json else {
            // An embedded struct: its properties are ours. Go always writes it.
            let Kind::Message(sub) = field.kind else {
                unreachable!("only messages are inlined")
            };
            put_bytes(&mut out, field.tag, &message(sub, obj, path)?);
            continue;
        };
        let Some(v) = obj.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        let path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        match field.shape {
            Shape::One => put_value(&mut out, field, field.kind, v, &path)?,
            Shape::List => {
                let Value::Array(items) = v else {
                    return Err(invalid(&path, "an array"));
                };
                for (n, item) in items.iter().enumerate() {
                    put_value(&mut out, field, field.kind, item, &format!("{path}[{n}]"))?;
                }
            }
            Shape::Map => {
                let Value::Object(map) = v else {
                    return Err(invalid(&path, "an object"));
                };
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for k in keys {
                    let mut entry = Vec::new();
                    put_bytes(&mut entry, 1, k.as_bytes());
                    let v = &map[k];
                    if !v.is_null() {
                        put_value(
                            &mut entry,
                            &VALUE_FIELD,
                            field.kind,
                            v,
                            &format!("{path}.{k}"),
                        )?;
                    }
                    put_bytes(&mut out, field.tag, &entry);
                }
            }
        }
    }
    Ok(out)
}

/// The value field (number 2) of a map entry.
const VALUE_FIELD: Field = Field {
    tag: 2,
    json: None,
    shape: Shape::One,
    kind: Kind::Bool,
    keep_zero: true,
};

fn invalid(path: &str, expected: &str) -> Error {
    Error::InvalidValue {
        path: path.to_string(),
        expected: expected.to_string(),
    }
}

fn int(v: &Value, path: &str) -> Result<i64, Error> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .ok_or_else(|| invalid(path, "an integer"))
}

fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str, Error> {
    v.as_str().ok_or_else(|| invalid(path, "a string"))
}

fn put_value(
    out: &mut Vec<u8>,
    field: &Field,
    kind: Kind,
    v: &Value,
    path: &str,
) -> Result<(), Error> {
    let tag = field.tag;
    match kind {
        Kind::String => put_bytes(out, tag, string(v, path)?.as_bytes()),
        Kind::Bytes => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(string(v, path)?)
                .map_err(|_| invalid(path, "base64 data"))?;
            put_bytes(out, tag, &raw);
        }
        Kind::Int32 => {
            let n = int(v, path)?;
            let n = i32::try_from(n).map_err(|_| invalid(path, "a 32-bit integer"))?;
            put_int(out, tag, i64::from(n));
        }
        Kind::Int64 => put_int(out, tag, int(v, path)?),
        Kind::Bool => {
            let b = v.as_bool().ok_or_else(|| invalid(path, "a boolean"))?;
            put_int(out, tag, i64::from(b));
        }
        Kind::Double => {
            let f = v.as_f64().ok_or_else(|| invalid(path, "a number"))?;
            put_key(out, tag, FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Kind::Message(index) => {
            let Value::Object(obj) = v else {
                return Err(invalid(path, "an object"));
            };
            put_bytes(out, tag, &message(index, obj, path)?);
        }
        Kind::Special(special) => put_bytes(out, tag, &special_message(special, v, path)?),
    }
    Ok(())
}

fn special_message(special: Special, v: &Value, path: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    match special {
        Special::Time => {
            let (seconds, _) = convert::parse_time(string(v, path)?)
                .ok_or_else(|| invalid(path, "an RFC 3339 time"))?;
            // Upstream's Timestamp writes both fields; Time carries whole seconds only.
            put_int(&mut out, 1, seconds);
            put_int(&mut out, 2, 0);
        }
        Special::MicroTime => {
            let (seconds, nanos) = convert::parse_time(string(v, path)?)
                .ok_or_else(|| invalid(path, "an RFC 3339 time"))?;
            put_int(&mut out, 1, seconds);
            put_int(&mut out, 2, i64::from(nanos - nanos % 1000));
        }
        Special::Duration => {
            let d = convert::parse_duration(string(v, path)?)
                .ok_or_else(|| invalid(path, "a duration"))?;
            put_int(&mut out, 1, d);
        }
        Special::Quantity => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(invalid(path, "a quantity")),
            };
            put_bytes(&mut out, 1, s.as_bytes());
        }
        Special::IntOrString => {
            // All three fields are written, as upstream's marshaller does.
            match v {
                Value::String(s) => {
                    put_int(&mut out, 1, 1);
                    put_int(&mut out, 2, 0);
                    put_bytes(&mut out, 3, s.as_bytes());
                }
                _ => {
                    let n = i32::try_from(int(v, path)?)
                        .map_err(|_| invalid(path, "a 32-bit integer or a string"))?;
                    put_int(&mut out, 1, 0);
                    put_int(&mut out, 2, i64::from(n));
                    put_bytes(&mut out, 3, b"");
                }
            }
        }
        Special::RawExtension | Special::FieldsV1 => {
            let raw = serde_json::to_vec(v).expect("a JSON value serializes");
            put_bytes(&mut out, 1, &raw);
        }
        Special::StringList => {
            let Value::Array(items) = v else {
                return Err(invalid(path, "an array of strings"));
            };
            for (n, item) in items.iter().enumerate() {
                put_bytes(
                    &mut out,
                    1,
                    string(item, &format!("{path}[{n}]"))?.as_bytes(),
                );
            }
        }
    }
    Ok(out)
}

/// Prefixes a frame with its 4-byte big-endian length: upstream's protobuf stream framing.
pub(crate) fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}
