//! The wire layout of the transcoded types, loaded once from the generated `table.txt`.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Where a field's value sits in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    One,
    List,
    Map,
}

/// Message types whose JSON form is not an object of their proto fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    Time,
    MicroTime,
    Duration,
    FieldsV1,
    Quantity,
    IntOrString,
    RawExtension,
    /// A message wrapping `repeated string items = 1`, JSON as an array (`ExtraValue`).
    StringList,
}

/// The protobuf kind of a field (of a map's values, for maps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Int32,
    Int64,
    Bool,
    Double,
    Bytes,
    Message(usize),
    Special(Special),
}

#[derive(Debug)]
pub(crate) struct Field {
    pub tag: u32,
    /// `None` for a message embedded inline: its fields are the parent's JSON properties.
    pub json: Option<String>,
    pub shape: Shape,
    pub kind: Kind,
    /// Whether a zero value on the wire still shows in JSON (a Go pointer, or a field without
    /// `omitempty`).
    pub keep_zero: bool,
}

#[derive(Debug)]
pub(crate) struct Message {
    pub name: String,
    /// In JSON (Go declaration) order.
    pub fields: Vec<Field>,
    /// Indices into `fields`, ascending by tag: the order fields are written in.
    pub by_tag: Vec<usize>,
}

impl Message {
    /// The index (into `fields`) of the field with this number.
    pub fn field(&self, tag: u32) -> Option<usize> {
        self.by_tag
            .binary_search_by_key(&tag, |&i| self.fields[i].tag)
            .ok()
            .map(|i| self.by_tag[i])
    }
}

#[derive(Debug)]
pub(crate) struct Table {
    pub messages: Vec<Message>,
    kinds: HashMap<(String, String), usize>,
    /// Kinds every group version carries (`DeleteOptions`, `Status`, `WatchEvent`).
    meta_kinds: HashMap<String, usize>,
}

impl Table {
    /// The message of an envelope's `apiVersion` and `kind`.
    pub fn kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        self.kinds
            .get(&(api_version.to_string(), kind.to_string()))
            .or_else(|| self.meta_kinds.get(kind))
            .copied()
    }

    #[cfg(test)]
    /// Every (apiVersion, kind) with its own message (`*` for the meta kinds).
    pub fn kinds(&self) -> impl Iterator<Item = (&str, &str)> {
        self.kinds
            .keys()
            .map(|(av, k)| (av.as_str(), k.as_str()))
            .chain(self.meta_kinds.keys().map(|k| ("*", k.as_str())))
    }
}

const SOURCE: &str = include_str!("table.txt");

pub(crate) fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| parse(SOURCE))
}

fn special(name: &str) -> Option<Special> {
    Some(match name {
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time" => Special::Time,
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => Special::MicroTime,
        "io.k8s.apimachinery.pkg.apis.meta.v1.Duration" => Special::Duration,
        "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1" => Special::FieldsV1,
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => Special::Quantity,
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => Special::IntOrString,
        "io.k8s.apimachinery.pkg.runtime.RawExtension" => Special::RawExtension,
        "io.k8s.api.authentication.v1.ExtraValue" | "io.k8s.api.authorization.v1.ExtraValue" => {
            Special::StringList
        }
        _ => return None,
    })
}

/// Parses the generated table; it is part of the build, so a malformed one is a bug.
fn parse(src: &str) -> Table {
    let mut by_name = HashMap::new();
    for line in src.lines() {
        if let Some(name) = line.strip_prefix("message ") {
            let next = by_name.len();
            by_name.insert(name.to_string(), next);
        }
    }
    let resolve = |name: &str| -> Kind {
        special(name)
            .map(Kind::Special)
            .or_else(|| by_name.get(name).map(|&i| Kind::Message(i)))
            .unwrap_or_else(|| panic!("table.txt: unknown message {name}"))
    };
    let mut messages: Vec<Message> = Vec::new();
    let mut kinds = HashMap::new();
    let mut meta_kinds = HashMap::new();
    for line in src.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("kind ") {
            let t: Vec<&str> = rest.split(' ').collect();
            let msg = by_name[t[2]];
            if t[0] == "*" {
                meta_kinds.insert(t[1].to_string(), msg);
            } else {
                kinds.insert((t[0].to_string(), t[1].to_string()), msg);
            }
        } else if let Some(name) = line.strip_prefix("message ") {
            messages.push(Message {
                name: name.to_string(),
                fields: Vec::new(),
                by_tag: Vec::new(),
            });
        } else {
            let t: Vec<&str> = line.split_whitespace().collect();
            let kind = match t[3] {
                "string" => Kind::String,
                "int32" => Kind::Int32,
                "int64" => Kind::Int64,
                "bool" => Kind::Bool,
                "double" => Kind::Double,
                "bytes" => Kind::Bytes,
                "message" => resolve(t[4]),
                other => panic!("table.txt: unknown kind {other}"),
            };
            let field = Field {
                tag: t[0].parse().expect("table.txt: tag"),
                json: (t[1] != "-").then(|| t[1].to_string()),
                shape: match t[2] {
                    "one" => Shape::One,
                    "list" => Shape::List,
                    "map" => Shape::Map,
                    other => panic!("table.txt: unknown shape {other}"),
                },
                kind,
                keep_zero: t.last() == Some(&"z"),
            };
            messages
                .last_mut()
                .expect("table.txt: field before message")
                .fields
                .push(field);
        }
    }
    for m in &mut messages {
        let mut order: Vec<usize> = (0..m.fields.len()).collect();
        order.sort_by_key(|&i| m.fields[i].tag);
        m.by_tag = order;
    }
    Table {
        messages,
        kinds,
        meta_kinds,
    }
}
