//! `events.k8s.io/v1` `Event` ⇄ core `v1` `Event`.

use serde_json::{Map, Value};

use super::with_type;

/// Field renames between the two shapes: (events.k8s.io/v1, core/v1). Fields with the same
/// name in both (`metadata`, `eventTime`, `series`, `reportingInstance`, `action`, `reason`,
/// `related`, `type`) pass through unchanged.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn rename(obj: Value, from_new: bool) -> Map<String, Value> {
    let Value::Object(m) = obj else {
        return Map::new();
    };
    m.into_iter()
        .filter_map(|(k, v)| {
            let mapped = RENAMES.iter().find_map(|(new, old)| {
                if from_new && k == *new {
                    Some(*old)
                } else if !from_new && k == *old {
                    Some(*new)
                } else {
                    None
                }
            });
            // A field of the other shape has no place here (upstream's typed decode drops it).
            let foreign = RENAMES
                .iter()
                .any(|(new, old)| if from_new { k == *old } else { k == *new });
            if foreign && mapped.is_none() {
                return None;
            }
            Some((mapped.map_or(k, str::to_string), v))
        })
        .collect()
}

/// An `events.k8s.io/v1` Event in the core `v1` shape.
pub(crate) fn events_to_core(obj: Value) -> Value {
    with_type(Value::Object(rename(obj, true)), "v1", "Event")
}

/// A core `v1` Event in the `events.k8s.io/v1` shape.
pub(crate) fn core_to_events(obj: Value) -> Value {
    with_type(
        Value::Object(rename(obj, false)),
        "events.k8s.io/v1",
        "Event",
    )
}
