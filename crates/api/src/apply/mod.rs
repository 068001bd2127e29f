//! Server-side apply and `metadata.managedFields`, as upstream's field manager
//! (k8s.io/apiserver `fieldmanager` over sigs.k8s.io/structured-merge-diff v4).
//!
//! Layout:
//! - `fieldpath`: paths, field sets, the FieldsV1 encoding;
//! - `typed`: schema-aware field sets, merge, comparison and removal;
//! - `managers`: decoding, capping and encoding `managedFields`;
//! - this module: [`apply`], [`update_managed_fields`], conflicts and request checks.
//!
//! All API versions of a kind are treated as one shape: entries written through another
//! version are compared without conversion.

pub mod fieldpath;
mod managers;
mod typed;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

pub use fieldpath::{FieldSet, Path, PathElement};
pub use managers::{ManagerId, Operation};
pub use typed::{ATOMIC_MAP_FIELDS, ATOMIC_TYPES};

use crate::schema::Schema;
use crate::Cause;
use managers::{strip_set, Entry, Managed};
use typed::{Comparison, Ty, Typed};

/// kubectl's client-side apply annotation.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Longest accepted `fieldManager`.
pub const FIELD_MANAGER_MAX_LENGTH: usize = 128;
/// Update managers kept before the oldest are merged into `ancient-changes`.
pub const MAX_UPDATE_MANAGERS: usize = 10;
/// The manager whose server-side applies take over kubectl's client-side apply fields.
const KUBECTL_SSA_MANAGER: &str = "kubectl";
/// Upstream's limit on the total size of an object's annotations.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// A field the applied configuration sets to a value another manager owns differently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The manager owning the field.
    pub manager: ManagerId,
    /// The field, e.g. `.spec.replicas`.
    pub path: Path,
}

impl Conflict {
    /// The field as upstream prints it, e.g. `.spec.containers[name="nginx"].image`.
    pub fn field(&self) -> String {
        self.path.to_string()
    }
}

/// Why an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change (HTTP 409, reason `Conflict`).
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
    /// A malformed request (HTTP 400, reason `BadRequest`).
    #[error("{0}")]
    BadRequest(String),
    /// An object that does not fit the schema (HTTP 500 with no reason, as upstream).
    #[error("{0}")]
    Internal(String),
}

impl ApplyError {
    /// The HTTP status code upstream answers with.
    pub fn code(&self) -> u16 {
        match self {
            ApplyError::Conflicts(_) => 409,
            ApplyError::BadRequest(_) => 400,
            ApplyError::Internal(_) => 500,
        }
    }

    /// The `Status.reason` upstream answers with (empty for an unknown reason).
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::Conflicts(_) => "Conflict",
            ApplyError::BadRequest(_) => "BadRequest",
            ApplyError::Internal(_) => "",
        }
    }

    /// The `Status.details.causes`: one `FieldManagerConflict` per conflict.
    pub fn causes(&self) -> Vec<Cause> {
        match self {
            ApplyError::Conflicts(cs) => cs
                .iter()
                .map(|c| Cause {
                    reason: "FieldManagerConflict",
                    field: c.field(),
                    message: format!("conflict with {}", c.manager.describe()),
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Upstream's conflict message: one line for one conflict, else grouped by manager.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager.describe(),
            c.path
        );
    }
    let mut by_manager: std::collections::BTreeMap<String, (&ManagerId, Vec<&Path>)> =
        Default::default();
    for c in conflicts {
        by_manager
            .entry(c.manager.key())
            .or_insert_with(|| (&c.manager, Vec::new()))
            .1
            .push(&c.path);
    }
    let mut lines = Vec::new();
    for (id, paths) in by_manager.values() {
        lines.push(format!("conflicts with {}:", id.describe()));
        lines.extend(paths.iter().map(|p| format!("- {p}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// The fields the write path resets and so never records as managed: `status` for the main
/// resource, `spec` for the `status` subresource.
pub fn reset_fields(subresource: Option<&str>) -> FieldSet {
    match subresource {
        None => FieldSet::from_paths([Path::fields(&["status"])]),
        Some("status") => FieldSet::from_paths([Path::fields(&["spec"])]),
        Some(_) => FieldSet::new(),
    }
}

/// Applies `applied` (a server-side apply patch) by `manager` onto `live` (`None` when the
/// object does not exist yet) and returns the new object with its `managedFields`.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    schema: &dyn Schema,
    now: &str,
) -> Result<Value, ApplyError> {
    apply_with_reset(
        live,
        applied,
        manager,
        force,
        api_version,
        schema,
        now,
        &reset_fields(None),
    )
}

/// [`apply`] with an explicit set of reset (untracked) fields.
#[allow(clippy::too_many_arguments)]
pub fn apply_with_reset(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    schema: &dyn Schema,
    now: &str,
    reset: &FieldSet,
) -> Result<Value, ApplyError> {
    let kind = live
        .and_then(|l| l.get("kind"))
        .or_else(|| applied.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("");
    validate_applied(applied, api_version, kind)?;
    let managed = Managed::decode(live)
        .map_err(|e| ApplyError::Internal(format!("failed to decode managed fields: {e}")))?;
    let t = Typed { schema };
    let live_obj = live.map_or_else(|| Value::Object(Map::new()), without_managed_fields);
    let ty = t.root(applied);
    t.to_field_set(&live_obj, &ty).map_err(|e| {
        ApplyError::Internal(format!(
            "failed to create typed live object ({}): {e}",
            gvk_nn(&live_obj)
        ))
    })?;
    t.to_field_set(applied, &ty).map_err(|e| {
        ApplyError::Internal(format!(
            "failed to create typed patch object ({}): {e}",
            gvk_nn(applied)
        ))
    })?;
    let id = ManagerId {
        manager: manager.to_string(),
        operation: Operation::Apply,
        api_version: api_version.to_string(),
        subresource: String::new(),
    };
    let run = |force: bool| {
        let mut core = Core {
            t: &t,
            ty: &ty,
            reset,
        };
        core.apply(&live_obj, applied, managed.clone(), &id, force, now)
    };
    let (mut obj, managed) = match run(force) {
        Err(ApplyError::Conflicts(cs)) if manager == KUBECTL_SSA_MANAGER => {
            match allowed_from_last_applied(&t, &ty, &live_obj, api_version) {
                Some(allowed) => {
                    let rest: Vec<Conflict> =
                        cs.into_iter().filter(|c| !allowed.has(&c.path.0)).collect();
                    if !rest.is_empty() {
                        return Err(ApplyError::Conflicts(rest));
                    }
                    run(true)?
                }
                None => return Err(ApplyError::Conflicts(cs)),
            }
        }
        other => other?,
    };
    if manager == KUBECTL_SSA_MANAGER && has_last_applied(&obj) {
        set_last_applied(&mut obj, build_last_applied(applied));
    }
    managed.encode(&mut obj);
    Ok(obj)
}

/// Records a non-apply write (create, update, patch) by `manager` in `new`'s `managedFields`:
/// fields it changed become its own and leave the other managers. `operation_is_update` is
/// false on create, where `old` is ignored.
#[allow(clippy::too_many_arguments)]
pub fn update_managed_fields(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation_is_update: bool,
    api_version: &str,
    subresource: Option<&str>,
    schema: &dyn Schema,
    now: &str,
) {
    update_managed_fields_with_reset(
        old,
        new,
        manager,
        operation_is_update,
        api_version,
        subresource,
        schema,
        now,
        &reset_fields(subresource),
    )
}

/// [`update_managed_fields`] with an explicit set of reset (untracked) fields.
#[allow(clippy::too_many_arguments)]
pub fn update_managed_fields_with_reset(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation_is_update: bool,
    api_version: &str,
    subresource: Option<&str>,
    schema: &dyn Schema,
    now: &str,
    reset: &FieldSet,
) {
    let old = old.filter(|_| operation_is_update);
    // Clients that do not know managedFields leave them out; only an explicit `[]` clears.
    let managed = if subresource.is_some() {
        Managed::decode(old).unwrap_or_default()
    } else if Managed::is_reset(new) {
        Managed::default()
    } else {
        match Managed::decode(Some(new)) {
            Ok(m) if !m.0.is_empty() => m,
            _ => Managed::decode(old).unwrap_or_default(),
        }
    };
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    // The comparison skips the old object's managedFields: no copy without them is needed.
    let empty = Value::Object(Map::new());
    let old_obj = old.unwrap_or(&empty);
    let t = Typed { schema };
    let ty = t.root(new);
    let id = ManagerId {
        manager: manager.to_string(),
        operation: Operation::Update,
        api_version: api_version.to_string(),
        subresource: subresource.unwrap_or("").to_string(),
    };
    let mut core = Core {
        t: &t,
        ty: &ty,
        reset,
    };
    // Upstream leaves managedFields out rather than write garbage when tracking fails.
    if let Ok(managed) = core.update_op(old_obj, new, managed, &id, now) {
        managed.encode(new);
    }
}

struct Core<'a> {
    t: &'a Typed<'a>,
    ty: &'a Ty,
    reset: &'a FieldSet,
}

impl Core<'_> {
    fn apply(
        &mut self,
        live: &Value,
        applied: &Value,
        mut managed: Managed,
        id: &ManagerId,
        force: bool,
        now: &str,
    ) -> Result<(Value, Managed), ApplyError> {
        let t = self.t;
        let internal = ApplyError::Internal;
        let merged = t
            .merge(Some(live), Some(applied), self.ty, &mut Vec::new())
            .map_err(internal)?
            .unwrap_or_else(|| Value::Object(Map::new()));
        let key = id.key();
        let last = managed.0.get(&key).map(|e| e.set.clone());
        let set = t
            .to_field_set(applied, self.ty)
            .map_err(internal)?
            .recursive_difference(self.reset);
        let time = managed.0.get(&key).and_then(|e| e.time.clone());
        managed.0.insert(
            key.clone(),
            Entry {
                id: id.clone(),
                set,
                time,
            },
        );
        let merged = self.prune(merged, &managed, last).map_err(internal)?;
        let merged = drop_nulls(merged);
        self.update(live, &merged, &mut managed, &key, force)?;
        managed.strip(strip_set());
        let changed = merged != *live;
        if changed {
            if let Some(e) = managed.0.get_mut(&key) {
                e.time = Some(now.to_string());
            }
        }
        managed.cap_updaters(MAX_UPDATE_MANAGERS);
        Ok((if changed { merged } else { live.clone() }, managed))
    }

    fn update_op(
        &mut self,
        old: &Value,
        new: &Value,
        mut managed: Managed,
        id: &ManagerId,
        now: &str,
    ) -> Result<Managed, ApplyError> {
        // Upstream tracks the write under a temporary manager and merges it into the
        // caller's entry afterwards, so the caller's earlier fields count as another's.
        const CURRENT: &str = "current-operation";
        let cmp = self.update(old, new, &mut managed, CURRENT, true)?;
        managed.strip(strip_set());
        let set = cmp
            .modified
            .union(&cmp.added)
            .recursive_difference(self.reset)
            .difference(strip_set());
        if !set.is_empty() {
            let key = id.key();
            let set = match managed.0.get(&key) {
                Some(prev) => set.union(&prev.set),
                None => set,
            };
            managed.0.insert(
                key,
                Entry {
                    id: id.clone(),
                    set,
                    time: Some(now.to_string()),
                },
            );
        }
        managed.cap_updaters(MAX_UPDATE_MANAGERS);
        Ok(managed)
    }

    /// Moves changed fields away from every manager but `workflow`, failing on conflicts
    /// unless forced (upstream's `Updater.update`).
    fn update(
        &mut self,
        old: &Value,
        new: &Value,
        managed: &mut Managed,
        workflow: &str,
        force: bool,
    ) -> Result<Comparison, ApplyError> {
        let cmp = self
            .t
            .compare(old, new, self.ty)
            .map_err(ApplyError::Internal)?
            .filter(self.reset);
        let changed = cmp.modified.union(&cmp.added);
        let mut conflicts = Vec::new();
        let mut taken = Vec::new();
        for (key, e) in &managed.0 {
            if key == workflow {
                continue;
            }
            let c = e.set.intersection(&changed);
            if !c.is_empty() {
                conflicts.extend(c.paths().into_iter().map(|path| Conflict {
                    manager: e.id.clone(),
                    path,
                }));
                taken.push((key.clone(), c));
            }
        }
        if !force && !conflicts.is_empty() {
            return Err(ApplyError::Conflicts(conflicts));
        }
        for (key, c) in taken {
            if let Some(e) = managed.0.get_mut(&key) {
                e.set = e.set.difference(&c);
            }
        }
        if !cmp.removed.is_empty() {
            for (key, e) in managed.0.iter_mut() {
                if key != workflow {
                    e.set = e.set.difference(&cmp.removed);
                }
            }
        }
        managed.drop_empty();
        Ok(cmp)
    }

    /// Removes what the applier owned last time, no longer applies, and nobody else owns
    /// (upstream's `prune`, `addBackOwnedItems` and `addBackDanglingItems`).
    fn prune(
        &self,
        merged: Value,
        managed: &Managed,
        last: Option<FieldSet>,
    ) -> Result<Value, String> {
        let Some(last) = last.filter(|s| !s.is_empty()) else {
            return Ok(merged);
        };
        let (t, ty) = (self.t, self.ty);
        let empty = || Value::Object(Map::new());
        let ensured = |v: &Value| -> Result<FieldSet, String> {
            Ok(t.ensure_named_fields(&t.to_field_set(v, ty)?, ty))
        };
        let last = t.ensure_named_fields(&last, ty);
        let pruned = t.remove_items(&merged, &last, ty).unwrap_or_else(empty);
        let owned = managed
            .0
            .values()
            .fold(FieldSet::new(), |acc, e| acc.union(&e.set));
        let owned = t.ensure_named_fields(&owned, ty);
        let merged_set = ensured(&merged)?;
        let keep = ensured(&pruned)?.union(&owned);
        let pruned = t
            .remove_items(&merged, &merged_set.difference(&keep), ty)
            .unwrap_or_else(empty);
        let gone = merged_set
            .difference(&ensured(&pruned)?)
            .intersection(&last);
        Ok(t.remove_items(&merged, &gone, ty).unwrap_or_else(empty))
    }
}

/// The fields of kubectl's last client-side apply that still hold in the live object: a
/// `kubectl` server-side apply may take them over without conflict.
fn allowed_from_last_applied(
    t: &Typed,
    ty: &Ty,
    live: &Value,
    api_version: &str,
) -> Option<FieldSet> {
    let text = live
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED_ANNOTATION)?
        .as_str()
        .filter(|s| !s.is_empty())?;
    let last: Value = serde_json::from_str(text).ok()?;
    if last.get("apiVersion").and_then(Value::as_str) != Some(api_version) {
        return None;
    }
    let set = t.to_field_set(&last, ty).ok()?;
    let cmp = t.compare(&last, live, ty).ok()?;
    Some(
        set.difference(&cmp.modified)
            .difference(&cmp.added)
            .difference(&cmp.removed),
    )
}

fn has_last_applied(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

/// The applied configuration as kubectl's annotation holds it: without the annotation
/// itself, keys sorted, as Go's encoder writes it.
fn build_last_applied(applied: &Value) -> String {
    let mut obj = applied.clone();
    if let Some(a) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(LAST_APPLIED_ANNOTATION);
    }
    format!("{}\n", fieldpath::go_json(&sorted(&obj)))
}

fn set_last_applied(obj: &mut Value, value: String) {
    let Some(a) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    a.insert(LAST_APPLIED_ANNOTATION.into(), Value::String(value));
    let size: usize = a
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if size > TOTAL_ANNOTATION_SIZE_LIMIT {
        a.remove(LAST_APPLIED_ANNOTATION);
    }
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        v => v.clone(),
    }
}

/// Typed Go objects drop fields set to null.
fn drop_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, drop_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(drop_nulls).collect()),
        v => v,
    }
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    v
}

/// Upstream's `GroupVersionKind` string, e.g. `apps/v1, Kind=Deployment` or `/v1, Kind=Pod`.
fn gvk(obj: &Value) -> String {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    format!("{group}/{version}, Kind={kind}")
}

fn gvk_nn(obj: &Value) -> String {
    let meta = |k: &str| {
        obj.pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    format!("{}/{}; {}", meta("namespace"), meta("name"), gvk(obj))
}

/// Checks an apply patch against the endpoint's version and kind, and that it does not set
/// `managedFields`, with upstream's messages.
pub fn validate_applied(applied: &Value, api_version: &str, kind: &str) -> Result<(), ApplyError> {
    let got_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let got_kind = applied.get("kind").and_then(Value::as_str).unwrap_or("");
    if got_version != api_version || got_kind != kind {
        return Err(ApplyError::BadRequest(format!(
            "invalid object type: {}",
            gvk(applied)
        )));
    }
    if applied
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApplyError::BadRequest(
            "metadata.managedFields must be nil".into(),
        ));
    }
    Ok(())
}

/// Upstream's `ValidateFieldManager`: at most 128 bytes of printable characters.
pub fn validate_field_manager(field_manager: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if field_manager.len() > FIELD_MANAGER_MAX_LENGTH {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            field: "fieldManager".into(),
            message: format!("Too long: may not be more than {FIELD_MANAGER_MAX_LENGTH} bytes"),
        });
    }
    for (i, c) in field_manager.char_indices() {
        if !is_print(c) {
            causes.push(Cause {
                reason: "FieldValueInvalid",
                field: "fieldManager".into(),
                message: format!(
                    "Invalid value: {field_manager:?}: invalid character {} (at position {i})",
                    go_rune(c)
                ),
            });
        }
    }
    causes
}

/// Upstream's `ValidatePatchOptions` for the field manager and force: apply needs a field
/// manager; force is only for apply. An error renders as
/// [`invalid_options_message`]`("PatchOptions", ..)`.
pub fn validate_patch_options(
    field_manager: &str,
    force: Option<bool>,
    is_apply: bool,
) -> Vec<Cause> {
    let mut causes = Vec::new();
    if !is_apply && force.is_some() {
        causes.push(Cause {
            reason: "FieldValueForbidden",
            field: "force".into(),
            message: "Forbidden: may not be specified for non-apply patch".into(),
        });
    }
    if is_apply && field_manager.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired",
            field: "fieldManager".into(),
            message: "Required value: is required for apply patch".into(),
        });
    }
    causes.extend(validate_field_manager(field_manager));
    causes
}

/// The message of upstream's 422 for invalid options, e.g.
/// `PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch`.
pub fn invalid_options_message(kind: &str, causes: &[Cause]) -> String {
    let errs: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    let agg = if errs.len() == 1 {
        errs[0].clone()
    } else {
        format!("[{}]", errs.join(", "))
    };
    format!("{kind}.meta.k8s.io \"\" is invalid: {agg}")
}

/// The manager of a write without `fieldManager`: the User-Agent up to the first `/`,
/// without unprintable characters, cut to 128 bytes.
pub fn default_manager(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| is_print(*c)) {
        if out.len() + c.len_utf8() > FIELD_MANAGER_MAX_LENGTH {
            break;
        }
        out.push(c);
    }
    out
}

/// Go's `unicode.IsPrint` for the characters that matter here: controls and non-space
/// whitespace are not printable.
fn is_print(c: char) -> bool {
    c == ' ' || !(c.is_control() || c.is_whitespace() || ('\u{fff9}'..='\u{fffb}').contains(&c))
}

/// Go's `%#U` rendering of a rune, e.g. `U+0009`.
fn go_rune(c: char) -> String {
    if is_print(c) {
        format!("U+{:04X} '{c}'", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}
