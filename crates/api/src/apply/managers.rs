//! `metadata.managedFields`: decoding into per-manager field sets, encoding back in upstream's
//! order, and the manager identifiers upstream keys them by.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::fieldpath::{FieldSet, Path};

/// Apply or Update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write (create, update, patch).
    Update,
}

impl Operation {
    /// The name used in `managedFields[].operation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who manages a set of fields: manager name, operation, version and subresource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerId {
    /// The field manager name, e.g. `kubectl-client-side-apply`.
    pub manager: String,
    /// Apply or Update.
    pub operation: Operation,
    /// The API version the fields were written through.
    pub api_version: String,
    /// The subresource written through (`status`, `scale`), empty for the main resource.
    pub subresource: String,
}

impl ManagerId {
    /// Upstream's identifier: the entry without time and fields as JSON, and without the
    /// version for appliers so that an applier keeps one entry across versions.
    pub(crate) fn key(&self) -> String {
        let mut m = Map::new();
        if !self.manager.is_empty() {
            m.insert("manager".into(), json!(self.manager));
        }
        m.insert("operation".into(), json!(self.operation.as_str()));
        if self.operation == Operation::Update && !self.api_version.is_empty() {
            m.insert("apiVersion".into(), json!(self.api_version));
        }
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m).to_string()
    }

    /// How conflict messages name the manager, e.g. `"kubectl-edit" using v1`.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == Operation::Update {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }
}

/// One manager's fields.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub id: ManagerId,
    pub set: FieldSet,
    pub time: Option<String>,
}

/// All managers' fields, keyed by identifier.
#[derive(Clone, Debug, Default)]
pub(crate) struct Managed(pub BTreeMap<String, Entry>);

impl Managed {
    /// Decodes `metadata.managedFields` (upstream's `DecodeManagedFields`).
    pub fn decode(obj: Option<&Value>) -> Result<Managed, String> {
        let mut out = Managed::default();
        let Some(list) = obj.and_then(|o| o.pointer("/metadata/managedFields")) else {
            return Ok(out);
        };
        let Value::Array(entries) = list else {
            return Err("managedFields is not a list".into());
        };
        for (i, e) in entries.iter().enumerate() {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let operation = match s("operation").as_str() {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => return Err("operation must be `Apply` or `Update`".into()),
            };
            let api_version = s("apiVersion");
            if api_version.is_empty() {
                return Err("apiVersion must not be empty".into());
            }
            match s("fieldsType").as_str() {
                "FieldsV1" => {}
                "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
                t => {
                    return Err(format!(
                        "invalid fieldsType {t:?} in managed fields entry {i}"
                    ))
                }
            }
            let set = match e.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::new(),
                Some(v) => FieldSet::from_fields_v1(v)
                    .map_err(|err| format!("error decoding versioned set: {err}"))?,
            };
            let id = ManagerId {
                manager: s("manager"),
                operation,
                api_version,
                subresource: s("subresource"),
            };
            let time = e.get("time").and_then(Value::as_str).map(str::to_string);
            out.0.insert(id.key(), Entry { id, set, time });
        }
        Ok(out)
    }

    /// Whether a request's `managedFields` asks to clear them (`[]` or `[{}]`).
    pub fn is_reset(obj: &Value) -> bool {
        match obj.pointer("/metadata/managedFields") {
            Some(Value::Array(a)) if a.is_empty() => true,
            Some(Value::Array(a)) if a.len() == 1 => a[0].as_object().is_some_and(Map::is_empty),
            _ => false,
        }
    }

    /// Drops the paths in `strip` (exact paths) from every manager and forgets empty managers.
    pub fn strip(&mut self, strip: &FieldSet) {
        for e in self.0.values_mut() {
            e.set = e.set.difference(strip);
        }
        self.drop_empty();
    }

    pub fn drop_empty(&mut self) {
        self.0.retain(|_, e| !e.set.is_empty());
    }

    /// Keeps at most `max` Update managers by merging the oldest into one `ancient-changes`
    /// entry per version (upstream's `capManagersManager`).
    pub fn cap_updaters(&mut self, max: usize) {
        let mut updaters: Vec<String> = self
            .0
            .iter()
            .filter(|(_, e)| e.id.operation == Operation::Update)
            .map(|(k, _)| k.clone())
            .collect();
        if updaters.len() <= max {
            return;
        }
        updaters.sort_by(|a, b| {
            let (ea, eb) = (&self.0[a], &self.0[b]);
            unix_seconds(ea.time.as_deref())
                .cmp(&unix_seconds(eb.time.as_deref()))
                .then_with(|| a.cmp(b))
        });
        let mut first_of_version: BTreeMap<String, String> = BTreeMap::new();
        let mut length = updaters.len();
        for key in updaters {
            if length <= max {
                break;
            }
            let entry = self.0[&key].clone();
            let version = entry.id.api_version.clone();
            let bucket_id = ManagerId {
                manager: "ancient-changes".into(),
                operation: Operation::Update,
                api_version: version.clone(),
                subresource: String::new(),
            };
            let bucket = bucket_id.key();
            match first_of_version.get(&version) {
                Some(first) => {
                    if !self.0.contains_key(&bucket) {
                        let mut moved = self.0.remove(first).expect("first updater present");
                        moved.id = bucket_id.clone();
                        self.0.insert(bucket.clone(), moved);
                    }
                    let b = self.0.get_mut(&bucket).expect("bucket present");
                    b.set = entry.set.union(&b.set);
                    b.time = entry.time.clone();
                    self.0.remove(&key);
                    length -= 1;
                }
                None => {
                    first_of_version.insert(version, key);
                }
            }
        }
    }

    /// Writes the entries into `metadata.managedFields` in upstream's order (Apply before
    /// Update, then by time, manager, version, subresource), or removes it when empty.
    pub fn encode(&self, obj: &mut Value) {
        let mut entries: Vec<&Entry> = self.0.values().collect();
        entries.sort_by(|p, q| {
            p.id.operation
                .cmp(&q.id.operation)
                .then_with(|| unix_seconds(p.time.as_deref()).cmp(&unix_seconds(q.time.as_deref())))
                .then_with(|| p.id.manager.cmp(&q.id.manager))
                .then_with(|| p.id.api_version.cmp(&q.id.api_version))
                .then_with(|| p.id.subresource.cmp(&q.id.subresource))
        });
        let list: Vec<Value> = entries
            .into_iter()
            .map(|e| {
                let mut m = Map::new();
                if !e.id.manager.is_empty() {
                    m.insert("manager".into(), json!(e.id.manager));
                }
                m.insert("operation".into(), json!(e.id.operation.as_str()));
                m.insert("apiVersion".into(), json!(e.id.api_version));
                if let Some(t) = &e.time {
                    m.insert("time".into(), json!(t));
                }
                m.insert("fieldsType".into(), json!("FieldsV1"));
                m.insert("fieldsV1".into(), e.set.to_fields_v1());
                if !e.id.subresource.is_empty() {
                    m.insert("subresource".into(), json!(e.id.subresource));
                }
                Value::Object(m)
            })
            .collect();
        let Some(obj) = obj.as_object_mut() else {
            return;
        };
        if list.is_empty() {
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("managedFields");
            }
            return;
        }
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn unix_seconds(t: Option<&str>) -> i64 {
    t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp())
}

/// The paths upstream never records as managed (`stripMetaManager`).
pub(crate) fn strip_set() -> &'static FieldSet {
    static SET: std::sync::LazyLock<FieldSet> = std::sync::LazyLock::new(build_strip_set);
    &SET
}

fn build_strip_set() -> FieldSet {
    let mut paths = vec![
        Path::fields(&["apiVersion"]),
        Path::fields(&["kind"]),
        Path::fields(&["metadata"]),
    ];
    for f in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        paths.push(Path::fields(&["metadata", f]));
    }
    FieldSet::from_paths(paths)
}
