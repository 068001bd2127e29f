//! Upstream's ControllerRefManager: a controller claims the objects its selector matches,
//! adopting orphans and releasing owned objects that no longer match.

use std::sync::Arc;

use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::control::{controller_ref, get_controller_of, ApiError, Control};
use super::podutil::{self, LabelSelector};

/// Returns the objects `owner` controls after adopting matching orphans and releasing
/// non-matching owned ones. Objects of other controllers are never touched; an owner being
/// deleted neither adopts nor releases. `adoptable` filters orphans (e.g. active pods).
pub async fn claim<O, C>(
    control: &dyn Control,
    owner: &O,
    selector: &LabelSelector,
    objs: Vec<Arc<C>>,
    adoptable: impl Fn(&C) -> bool,
) -> Result<Vec<Arc<C>>, ApiError>
where
    O: Resource<DynamicType = ()>,
    C: Resource<DynamicType = ()> + Clone + DeserializeOwned,
{
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let mut claimed = Vec::new();
    let mut first_err = None;
    for obj in objs {
        let matches = podutil::matches(selector, obj.meta().labels.as_ref());
        match get_controller_of(obj.meta()) {
            Some(r) if r.uid != uid => {}
            Some(_) => {
                if matches || deleting {
                    claimed.push(obj);
                } else if let Err(e) = release(control, obj.as_ref(), &uid).await {
                    if !e.is_not_found() {
                        first_err.get_or_insert(e);
                    }
                }
            }
            None => {
                if deleting
                    || !matches
                    || obj.meta().deletion_timestamp.is_some()
                    || !adoptable(&obj)
                {
                    continue;
                }
                match adopt(control, owner, obj.as_ref()).await {
                    Ok(o) => claimed.push(Arc::new(o)),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(claimed),
    }
}

/// Adds `owner` as controller of `obj` (with a UID precondition); returns `obj` as adopted.
async fn adopt<O, C>(control: &dyn Control, owner: &O, obj: &C) -> Result<C, ApiError>
where
    O: Resource<DynamicType = ()>,
    C: Resource<DynamicType = ()> + Clone + DeserializeOwned,
{
    let mut refs = obj.meta().owner_references.clone().unwrap_or_default();
    refs.push(controller_ref(owner));
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": obj.meta().uid}});
    let ns = obj.namespace().unwrap_or_default();
    control.patch_obj::<C>(&ns, &obj.name_any(), patch).await?;
    let mut adopted = obj.clone();
    adopted.meta_mut().owner_references = Some(refs);
    Ok(adopted)
}

/// Removes the ownerReference with `owner_uid` from `obj`.
async fn release<C>(control: &dyn Control, obj: &C, owner_uid: &str) -> Result<(), ApiError>
where
    C: Resource<DynamicType = ()> + DeserializeOwned,
{
    let refs: Vec<_> = obj
        .meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .cloned()
        .collect();
    let refs = if refs.is_empty() {
        Value::Null
    } else {
        json!(refs)
    };
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": obj.meta().uid}});
    let ns = obj.namespace().unwrap_or_default();
    control
        .patch_obj::<C>(&ns, &obj.name_any(), patch)
        .await
        .map(|_| ())
}
