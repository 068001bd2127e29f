//! The query and path parameters upstream declares on each operation.

use serde_json::{json, Value};

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": schema})
}

fn string() -> Value {
    json!({"type": "string", "uniqueItems": true})
}

fn boolean() -> Value {
    json!({"type": "boolean", "uniqueItems": true})
}

fn integer() -> Value {
    json!({"type": "integer", "uniqueItems": true})
}

/// A path parameter (`name`, `namespace`).
pub(crate) fn path(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "description": description, "required": true,
           "schema": string()})
}

pub(crate) fn name(kind: &str) -> Value {
    path("name", &format!("name of the {kind}"))
}

pub(crate) fn namespace() -> Value {
    path(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    )
}

pub(crate) fn pretty() -> Value {
    query(
        "pretty",
        "If 'true', the output is pretty printed.",
        string(),
    )
}

pub(crate) fn dry_run() -> Value {
    query(
        "dryRun",
        "When present, the request is processed but nothing is persisted. The only accepted value is All.",
        string(),
    )
}

pub(crate) fn field_manager() -> Value {
    query(
        "fieldManager",
        "The name of the actor making the change, recorded in managedFields. At most 128 printable characters.",
        string(),
    )
}

pub(crate) fn field_manager_apply() -> Value {
    query(
        "fieldManager",
        "The name of the actor making the change, recorded in managedFields. Required for apply patches (application/apply-patch); optional for the other patch types. At most 128 printable characters.",
        string(),
    )
}

pub(crate) fn field_validation() -> Value {
    query(
        "fieldValidation",
        "What the server does with unknown or duplicate fields in the body: Ignore drops them silently, Warn drops them and returns a warning for each, Strict rejects the request and names every such field.",
        string(),
    )
}

pub(crate) fn force() -> Value {
    query(
        "force",
        "Take ownership of conflicting fields from other managers. Only valid for apply patches; must be unset for other patch types.",
        boolean(),
    )
}

pub(crate) fn grace_period_seconds() -> Value {
    query(
        "gracePeriodSeconds",
        "Seconds to wait before the object is deleted; zero deletes immediately. Unset uses the default of the type.",
        integer(),
    )
}

pub(crate) fn orphan_dependents() -> Value {
    query(
        "orphanDependents",
        "Deprecated: use propagationPolicy. Whether dependents are orphaned (true) or garbage collected (false).",
        boolean(),
    )
}

pub(crate) fn propagation_policy() -> Value {
    query(
        "propagationPolicy",
        "How garbage collection treats dependents: Orphan, Background or Foreground.",
        string(),
    )
}

fn list_only() -> Vec<Value> {
    vec![
        query(
            "allowWatchBookmarks",
            "Ask for BOOKMARK watch events. Ignored outside watches.",
            boolean(),
        ),
        query(
            "continue",
            "The continue token of the previous page of a paged list.",
            string(),
        ),
        query(
            "fieldSelector",
            "Restrict the returned objects by their fields. Defaults to everything.",
            string(),
        ),
        query(
            "labelSelector",
            "Restrict the returned objects by their labels. Defaults to everything.",
            string(),
        ),
        query(
            "limit",
            "The most objects to return in one page; the list metadata then carries a continue token for the rest.",
            integer(),
        ),
        query(
            "resourceVersion",
            "The resource version the list or watch starts from; see resourceVersionMatch.",
            string(),
        ),
        query(
            "resourceVersionMatch",
            "How resourceVersion applies to a list: Exact or NotOlderThan.",
            string(),
        ),
        query(
            "sendInitialEvents",
            "With watch=true and resourceVersionMatch=NotOlderThan, start the watch with synthetic ADDED events for the current state.",
            boolean(),
        ),
        query(
            "timeoutSeconds",
            "Time limit of the list or watch call, regardless of activity.",
            integer(),
        ),
    ]
}

fn watch() -> Value {
    query(
        "watch",
        "Stream add, update and remove notifications for the described objects instead of listing them.",
        boolean(),
    )
}

/// Parameters of a list (or watch) operation, sorted by name as upstream does.
pub(crate) fn list() -> Vec<Value> {
    sorted(list_only().into_iter().chain([watch()]).collect())
}

/// Parameters of a deletecollection operation.
pub(crate) fn delete_collection() -> Vec<Value> {
    let mut v: Vec<Value> = list_only()
        .into_iter()
        .filter(|p| p["name"] != "allowWatchBookmarks")
        .collect();
    v.extend([
        dry_run(),
        grace_period_seconds(),
        orphan_dependents(),
        propagation_policy(),
    ]);
    sorted(v)
}

/// Parameters of a delete operation.
pub(crate) fn delete() -> Vec<Value> {
    vec![
        dry_run(),
        grace_period_seconds(),
        orphan_dependents(),
        propagation_policy(),
    ]
}

/// Parameters of create and replace operations.
pub(crate) fn write() -> Vec<Value> {
    vec![dry_run(), field_manager(), field_validation()]
}

/// Parameters of a patch operation.
pub(crate) fn patch() -> Vec<Value> {
    vec![
        dry_run(),
        field_manager_apply(),
        field_validation(),
        force(),
    ]
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    v
}
