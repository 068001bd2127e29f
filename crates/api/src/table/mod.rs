//! Server-side tables (`meta.k8s.io/v1` `Table`), as `kubectl get` requests them with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! Columns and cells follow upstream v1.32's `pkg/printers/internalversion/printers.go`. Like the
//! upstream API server, rows always carry every cell including the `-o wide` ones (columns of
//! priority 1); kubectl hides those unless asked. Kinds without a printer get upstream's default
//! table (`Name`, `Created At`).

mod apps;
mod core;
mod format;
mod other;
mod pod;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

pub use format::human_duration;

/// The load-balancer ingress list as the server (always wide) prints it.
fn core_lb(ingress: &[Value]) -> String {
    core::load_balancer_ingress(ingress)
}

/// What each row's `object` holds: upstream's `includeObject` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object (`includeObject=None`): `object` is null.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the default).
    #[default]
    Metadata,
    /// The full object (`includeObject=Object`).
    Object,
}

impl IncludeObject {
    /// Parses the query parameter; an empty value is the default, `Metadata`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "None" => Ok(Self::None),
            "" | "Metadata" => Ok(Self::Metadata),
            "Object" => Ok(Self::Object),
            other => Err(format!("unrecognized includeObject value: {other:?}")),
        }
    }
}

/// One column as upstream declares it.
pub(crate) struct Col {
    pub name: &'static str,
    pub ty: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: u8,
}

/// A column shown by default.
pub(crate) const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Col {
    Col {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

/// A column shown only with `-o wide`.
pub(crate) const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Col {
    Col {
        name,
        ty,
        format: "",
        description,
        priority: 1,
    }
}

/// `metav1.ObjectMeta{}.SwaggerDoc()["name"]`.
pub(crate) const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// `metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]`.
pub(crate) const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The `Name` column every printer starts with.
pub(crate) const NAME: Col = Col {
    name: "Name",
    ty: "string",
    format: "name",
    description: NAME_DOC,
    priority: 0,
};

/// The `Age` column.
pub(crate) const AGE: Col = col("Age", "string", AGE_DOC);

/// `Containers`, `Images` (wide) as the workload printers declare them.
pub(crate) const CONTAINERS: Col = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
pub(crate) const IMAGES: Col = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);

/// A printer: its columns and its cells (always the wide set) plus optional row conditions.
pub(crate) struct Printer {
    pub columns: &'static [Col],
    pub cells: fn(&Value, DateTime<Utc>) -> Vec<Value>,
    pub conditions: Option<fn(&Value) -> Option<Value>>,
}

/// Upstream's `DefaultTableConvertor` for kinds without a printer.
const DEFAULT_COLUMNS: &[Col] = &[NAME, col("Created At", "date", AGE_DOC)];

fn default_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let created = format::time_at(obj, &["metadata", "creationTimestamp"])
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    vec![
        json!(format::str_at(obj, &["metadata", "name"])),
        json!(created),
    ]
}

const DEFAULT_PRINTER: Printer = Printer {
    columns: DEFAULT_COLUMNS,
    cells: default_cells,
    conditions: None,
};

/// The printer upstream registers for a group and kind (the internal type, so every served
/// version of a kind prints alike).
fn printer(group: &str, kind: &str) -> &'static Printer {
    let found = match group {
        "" => core::printer(kind),
        "apps" | "batch" | "autoscaling" => apps::printer(kind),
        // events.k8s.io shares the internal Event type, hence its printer.
        "events.k8s.io" if kind == "Event" => core::printer(kind),
        _ => other::printer(group, kind),
    };
    found.unwrap_or(&DEFAULT_PRINTER)
}

fn column_json(c: &Col) -> Value {
    json!({
        "name": c.name,
        "type": c.ty,
        "format": c.format,
        "description": c.description,
        "priority": c.priority,
    })
}

/// The column definitions of a kind's table, each `{name, type, format, description, priority}`;
/// priority 1 marks the columns kubectl shows only with `-o wide`.
pub fn column_definitions(group: &str, kind: &str) -> Vec<Value> {
    printer(group, kind)
        .columns
        .iter()
        .map(column_json)
        .collect()
}

/// The cells of one object's row, wide columns included, as of `now` (ages are relative).
///
/// Pass objects in their storage version, as upstream prints its internal type: an
/// `autoscaling/v1` or `events.k8s.io/v1` object is converted first, but a v1 autoscaler that went
/// through the round-trip annotations may list its metrics in another order than the stored one.
pub fn row_cells(group: &str, kind: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    (printer(group, kind).cells)(obj, now)
}

/// The row's `object` for the chosen `includeObject`.
fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => {
            let mut m = Map::new();
            m.insert("kind".into(), json!("PartialObjectMetadata"));
            m.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
            m.insert(
                "metadata".into(),
                obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            );
            Value::Object(m)
        }
    }
}

/// One `TableRow`: `{cells, conditions?, object}`.
pub fn row(
    group: &str,
    kind: &str,
    obj: &Value,
    include_object: IncludeObject,
    now: DateTime<Utc>,
) -> Value {
    let p = printer(group, kind);
    let mut m = Map::new();
    m.insert("cells".into(), Value::Array((p.cells)(obj, now)));
    if let Some(conditions) = p.conditions.and_then(|f| f(obj)) {
        m.insert("conditions".into(), conditions);
    }
    m.insert("object".into(), row_object(obj, include_object));
    Value::Object(m)
}

/// The whole `Table` for a list of objects. `metadata` starts empty: the server sets
/// `resourceVersion`, `continue` and `remainingItemCount` (see [`set_list_meta`]).
pub fn to_table(
    group: &str,
    kind: &str,
    objects: &[Value],
    include_object: IncludeObject,
    now: DateTime<Utc>,
) -> Value {
    let rows = objects
        .iter()
        .map(|o| row(group, kind, o, include_object, now))
        .collect();
    let mut m = Map::new();
    m.insert("kind".into(), json!("Table"));
    m.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
    m.insert("metadata".into(), json!({}));
    m.insert(
        "columnDefinitions".into(),
        Value::Array(column_definitions(group, kind)),
    );
    m.insert("rows".into(), Value::Array(rows));
    Value::Object(m)
}

/// The `Table` for one object (a GET of one object, or one watch event): one row, and the
/// object's `resourceVersion` in the table's metadata as upstream sets it. With `no_headers`
/// (upstream's `TableOptions.noHeaders`, used after a watch's first event) the column
/// definitions are left out.
pub fn object_to_table(
    group: &str,
    kind: &str,
    obj: &Value,
    include_object: IncludeObject,
    no_headers: bool,
    now: DateTime<Utc>,
) -> Value {
    let mut table = to_table(group, kind, std::slice::from_ref(obj), include_object, now);
    if let Some(rv) = format::opt_str(obj, &["metadata", "resourceVersion"]) {
        table["metadata"] = json!({ "resourceVersion": rv });
    }
    if no_headers {
        table["columnDefinitions"] = Value::Null;
    }
    table
}

/// Sets a list table's `metadata` as upstream copies it from the list: empty values are left out.
pub fn set_list_meta(
    table: &mut Value,
    resource_version: &str,
    continue_token: &str,
    remaining_item_count: Option<i64>,
) {
    let mut m = Map::new();
    if !resource_version.is_empty() {
        m.insert("resourceVersion".into(), json!(resource_version));
    }
    if !continue_token.is_empty() {
        m.insert("continue".into(), json!(continue_token));
    }
    if let Some(n) = remaining_item_count {
        m.insert("remainingItemCount".into(), json!(n));
    }
    table["metadata"] = Value::Object(m);
}

#[cfg(test)]
mod tests;
