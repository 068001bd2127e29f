//! Protobuf message → JSON, following the rules of Go's `encoding/json` over the decoded
//! struct: every field on the wire shows, except zero scalars of non-pointer `omitempty` fields.

use base64::Engine;
use serde_json::{Map, Number, Value};

use crate::convert;
use crate::table::{table, Field, Kind, Shape, Special};
use crate::wire::{Reader, FIXED64, LEN, VARINT};
use crate::Error;

/// Decodes one message into the properties of a JSON object (appended to `out`).
pub(crate) fn message(
    index: usize,
    bytes: &[u8],
    out: &mut Map<String, Value>,
) -> Result<(), Error> {
    let msg = &table().messages[index];
    // Values collected per field, emitted afterwards in JSON order.
    let mut values: Vec<Option<Value>> = vec![None; msg.fields.len()];
    let mut inline: Vec<Option<Map<String, Value>>> = vec![None; msg.fields.len()];
    let mut r = Reader::new(bytes);
    while !r.done() {
        let (tag, wire) = r.key()?;
        let Some(i) = msg.field(tag) else {
            r.skip(wire)?;
            continue;
        };
        let field = &msg.fields[i];
        let ctx = |e: Error| e.within(&msg.name, field);
        match field.shape {
            Shape::One if field.json.is_none() => {
                let Kind::Message(sub) = field.kind else {
                    unreachable!("only messages are inlined")
                };
                expect_wire(wire, LEN).map_err(ctx)?;
                let bytes = r.bytes()?;
                message(sub, bytes, inline[i].get_or_insert_with(Map::new))?;
            }
            Shape::One => {
                let v = value(field.kind, wire, &mut r).map_err(ctx)?;
                values[i] = Some(v);
            }
            Shape::List => {
                let list = values[i].get_or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(list) = list else {
                    unreachable!()
                };
                let packable = matches!(
                    field.kind,
                    Kind::Int32 | Kind::Int64 | Kind::Bool | Kind::Double
                );
                if packable && wire == LEN {
                    let mut packed = Reader::new(r.bytes()?);
                    let element_wire = if field.kind == Kind::Double {
                        FIXED64
                    } else {
                        VARINT
                    };
                    while !packed.done() {
                        list.push(value(field.kind, element_wire, &mut packed).map_err(ctx)?);
                    }
                } else {
                    list.push(value(field.kind, wire, &mut r).map_err(ctx)?);
                }
            }
            Shape::Map => {
                expect_wire(wire, LEN).map_err(ctx)?;
                let entry = r.bytes()?;
                let (k, v) = map_entry(field.kind, entry).map_err(ctx)?;
                let map = values[i].get_or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(k, v);
                }
            }
        }
    }
    for (i, field) in msg.fields.iter().enumerate() {
        match &field.json {
            None => {
                if let Some(sub) = inline[i].take() {
                    out.extend(sub);
                }
            }
            Some(name) => {
                let Some(v) = values[i].take() else { continue };
                if field.shape == Shape::One && !field.keep_zero && is_zero(field.kind, &v) {
                    continue;
                }
                out.insert(name.clone(), v);
            }
        }
    }
    Ok(())
}

/// Zero values of the scalars Go's `omitempty` drops.
fn is_zero(kind: Kind, v: &Value) -> bool {
    match (kind, v) {
        (Kind::String | Kind::Bytes, Value::String(s)) => s.is_empty(),
        (Kind::Int32 | Kind::Int64, Value::Number(n)) => n.as_i64() == Some(0),
        (Kind::Double, Value::Number(n)) => n.as_f64() == Some(0.0),
        (Kind::Bool, Value::Bool(b)) => !b,
        _ => false,
    }
}

fn expect_wire(found: u8, expected: u8) -> Result<(), Error> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::WireType {
            field: String::new(),
            expected,
            found,
        })
    }
}

fn text(bytes: &[u8]) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::Malformed("string is not valid utf-8".into()))
}

/// One value of a field (one element, for lists).
fn value(kind: Kind, wire: u8, r: &mut Reader<'_>) -> Result<Value, Error> {
    Ok(match kind {
        Kind::String => {
            expect_wire(wire, LEN)?;
            Value::String(text(r.bytes()?)?)
        }
        Kind::Bytes => {
            expect_wire(wire, LEN)?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(r.bytes()?))
        }
        Kind::Int32 => {
            expect_wire(wire, VARINT)?;
            Value::from(r.varint()? as i64 as i32)
        }
        Kind::Int64 => {
            expect_wire(wire, VARINT)?;
            Value::from(r.varint()? as i64)
        }
        Kind::Bool => {
            expect_wire(wire, VARINT)?;
            Value::Bool(r.varint()? != 0)
        }
        Kind::Double => {
            expect_wire(wire, FIXED64)?;
            let f = f64::from_bits(r.fixed64()?);
            Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| Error::Malformed(format!("{f} is not a JSON number")))?
        }
        Kind::Message(index) => {
            expect_wire(wire, LEN)?;
            let mut obj = Map::new();
            message(index, r.bytes()?, &mut obj)?;
            Value::Object(obj)
        }
        Kind::Special(special) => {
            expect_wire(wire, LEN)?;
            special_value(special, r.bytes()?)?
        }
    })
}

fn map_entry(kind: Kind, entry: &[u8]) -> Result<(String, Value), Error> {
    let mut r = Reader::new(entry);
    let mut key = String::new();
    let mut value_bytes = None;
    let mut scalar = None;
    while !r.done() {
        match r.key()? {
            (1, wire) => {
                expect_wire(wire, LEN)?;
                key = text(r.bytes()?)?;
            }
            (2, wire) => match kind {
                Kind::Message(_) | Kind::Special(_) => {
                    expect_wire(wire, LEN)?;
                    value_bytes = Some(r.bytes()?);
                }
                _ => scalar = Some(value(kind, wire, &mut r)?),
            },
            (_, wire) => r.skip(wire)?,
        }
    }
    let v = match (kind, scalar) {
        (_, Some(v)) => v,
        (Kind::Message(index), None) => {
            let mut obj = Map::new();
            message(index, value_bytes.unwrap_or_default(), &mut obj)?;
            Value::Object(obj)
        }
        (Kind::Special(s), None) => special_value(s, value_bytes.unwrap_or_default())?,
        (Kind::String | Kind::Bytes, None) => Value::String(String::new()),
        (Kind::Bool, None) => Value::Bool(false),
        (_, None) => Value::from(0),
    };
    Ok((key, v))
}

/// The fields of a small fixed message, by number: varints and byte strings.
struct Fields<'a> {
    ints: [Option<u64>; 4],
    bytes: [Option<&'a [u8]>; 4],
    strings: Vec<&'a [u8]>,
}

fn small_message(bytes: &[u8]) -> Result<Fields<'_>, Error> {
    let mut out = Fields {
        ints: [None; 4],
        bytes: [None; 4],
        strings: Vec::new(),
    };
    let mut r = Reader::new(bytes);
    while !r.done() {
        let (tag, wire) = r.key()?;
        let slot = tag as usize;
        match wire {
            VARINT if slot < 4 => out.ints[slot] = Some(r.varint()?),
            LEN if slot < 4 => {
                let b = r.bytes()?;
                out.bytes[slot] = Some(b);
                if slot == 1 {
                    out.strings.push(b);
                }
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

fn special_value(special: Special, bytes: &[u8]) -> Result<Value, Error> {
    let f = small_message(bytes)?;
    let int = |i: usize| f.ints[i].unwrap_or(0) as i64;
    Ok(match special {
        // Upstream reads an empty Time as the zero time, which marshals as null.
        Special::Time if bytes.is_empty() => Value::Null,
        Special::Time => Value::String(
            convert::format_time(int(1))
                .ok_or_else(|| Error::Malformed("time out of range".into()))?,
        ),
        Special::MicroTime if bytes.is_empty() => Value::Null,
        Special::MicroTime => Value::String(
            convert::format_micro_time(int(1), int(2) as i32)
                .ok_or_else(|| Error::Malformed("time out of range".into()))?,
        ),
        Special::Duration => Value::String(convert::format_duration(int(1))),
        Special::Quantity => match f.bytes[1] {
            Some(s) if !s.is_empty() => Value::String(text(s)?),
            _ => Value::String("0".into()),
        },
        Special::IntOrString => {
            if int(1) == 1 {
                Value::String(text(f.bytes[3].unwrap_or_default())?)
            } else {
                Value::from(int(2) as i32)
            }
        }
        Special::RawExtension | Special::FieldsV1 => match f.bytes[1] {
            None | Some([]) => Value::Null,
            Some(raw) if raw.starts_with(&crate::MAGIC) => crate::decode(raw)?,
            Some(raw) => serde_json::from_slice(raw)
                .map_err(|e| Error::Malformed(format!("embedded object is not JSON: {e}")))?,
        },
        Special::StringList => Value::Array(
            f.strings
                .iter()
                .map(|s| text(s).map(Value::String))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Context for errors: the message and field a failure happened in.
impl Error {
    fn within(self, message: &str, field: &Field) -> Error {
        match self {
            Error::WireType {
                field: f,
                expected,
                found,
            } if f.is_empty() => Error::WireType {
                field: format!("{message}.{}", field.json.as_deref().unwrap_or("(inline)")),
                expected,
                found,
            },
            other => other,
        }
    }
}
